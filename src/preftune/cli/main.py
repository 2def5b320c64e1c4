"""``preftune``: the command-line tool.

Every command validates its input before working. A problem with what the user asked for
(:class:`~preftune.errors.PreftuneError`, or a usage mistake) prints one ``error:`` line and
exits with 2; ``--debug`` shows the traceback instead. A run that did its work but had some of it
fail (:class:`~preftune.errors.IncompleteRun`: judge calls with no verdict, an unreachable endpoint)
prints one ``incomplete:`` line and exits with 3, so that a script can tell it from success.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from preftune import __version__
from preftune.cli import analyze, generate, judge, lab, objectives, rank, reproduce, serve, train, train_rm, winrate
from preftune.cli.keys import resolve, stray_flag_hint
from preftune.errors import EXIT_INCOMPLETE, EXIT_USAGE, IncompleteRun, PreftuneError

EXIT_INTERRUPTED = 130


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line, with where to find help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise PreftuneError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="preftune",
        description="Preference fine-tuning of language models: objectives, gradient analysis, training.",
        epilog="Run 'preftune COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"preftune {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    train.register(commands)
    analyze.register(commands)
    objectives.register(commands)
    rank.register(commands)
    generate.register(commands)
    judge.register(commands)
    train_rm.register(commands)
    serve.register(commands)
    winrate.register(commands)
    lab.register(commands)
    reproduce.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    try:
        args = _parse(parser, argv)
        if hasattr(args, "command_settings"):
            resolve(args)
        if not getattr(args, "run", None):
            parser.print_help()
            return EXIT_USAGE if args.command is None else 0
        return int(args.run(args) or 0)
    except IncompleteRun as err:  # not a mistake of the user's: the line says what a rerun does
        print(f"incomplete: {err}", file=sys.stderr)
        return EXIT_INCOMPLETE
    except PreftuneError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parse_args``, except that ``key=value`` overrides may also follow an option
    (``preftune train cfg.yaml --resume optim.lr=1e-4``): argparse takes positionals in one run."""
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra if item.startswith("-") or "=" not in item or not hasattr(args, "overrides")]
    if stray:
        hint = stray_flag_hint(args, stray, argv)
        if hint:
            raise PreftuneError(hint)
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


if __name__ == "__main__":
    sys.exit(main())
