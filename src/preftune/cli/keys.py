"""One command-line convention for every command (docs/cli.md).

A setting is a dotted key, given as ``key=value`` or in a YAML file, spelled as ``preftune train``
spells it wherever train has the setting (``model.name``, ``optim.lr``, ``data.max_length``,
``sampling.temperature``, ``eval.judges``); what only one command reads is a plain word (``judge``,
``input``, ``out``, ``limit``). ``--flags`` are left to what is a convention (``--help``, ``--resume``,
``--generate``). Each key means one thing, written once in :data:`VOCABULARY`; a command picks the
keys it reads with :class:`Setting` (its default, whether required, the ``--flag`` it had before).

The old ``--flags`` are read for one more release: each prints one ``note:`` line naming the key.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preftune.errors import PreftuneError

#: The release from which the old ``--flags`` are no longer read.
FLAGS_READ_UNTIL = "0.3"

#: Flags that stay flags: they switch a mode or ask for help rather than set a value.
CONVENTION_FLAGS = frozenset(
    {"-h", "--help", "--version", "--debug", "--resume", "--print-config", "--trl", "--generate"}
)


@dataclass(frozen=True)
class Key:
    """One setting: its dotted name, what it means, and the kind of value it takes.

    ``kind``: ``str``, ``int``, ``float``, ``bool``, ``path`` or ``list`` (of strings)."""

    name: str
    help: str
    kind: str = "str"
    choices: tuple[str, ...] = ()


_KEYS = (
    # what `preftune train` has too (run/config.py): the same name, the same meaning
    Key("model.name", "the model: a folder, an adapter folder, a hub name or an embedded name"),
    Key("model.chat_template", "for a tokenizer without one: chatml, zephyr or a .jinja file"),
    Key("lora.enabled", "train a LoRA adapter (false: every weight)", "bool"),
    Key("lora.rank", "LoRA rank", "int"),
    Key("lora.last_layers", "adapt only the last N decoder layers (cheaper)", "int"),
    Key("data.train", "training preference data: a file, folder, hub name or bundled:NAME"),
    Key("data.eval", "held-out preference data: a file, folder, hub name or bundled:NAME"),
    Key("data.eval_size", "pairs held out of data.train, whole prompts at a time", "int"),
    Key("data.train_size", "use only the first N training pairs", "int"),
    Key("data.max_length", "prompt + response tokens per sequence", "int"),
    Key("data.format", "the data's format (auto, standard, labelled, ...; docs/guide-data.md)"),
    Key("data.skip_invalid", "drop invalid rows (counted) instead of stopping at the first", "bool"),
    Key("data.pairing", "ranked completions -> pairs", choices=("best_vs_worst", "all")),
    Key("optim.lr", "AdamW learning rate", "float"),
    Key("optim.epochs", "passes over the training pairs", "float"),
    Key("optim.batch_size", "pairs per optimizer step", "int"),
    Key("optim.seed", "initialisation and data order", "int"),
    Key(
        "optim.mixed_precision",
        "autocast: auto = bf16 where the CPU/GPU multiplies bf16 natively",
        choices=("auto", "bf16", "no"),
    ),
    Key("eval.batch_size", "items per evaluation batch (pairs per forward pass, or judge calls at once)", "int"),
    Key(
        "eval.judges", "pairwise judges of the win rate: [longer, local:MODEL, ...] (docs/guide-evaluation.md)", "list"
    ),
    Key("eval.baseline", "what the answers are compared with: chosen | model:NAME_OR_PATH | file:PATH"),
    Key("eval.max_new_tokens", "longest greedy answer", "int"),
    Key("sampling.n", "completions per prompt", "int"),
    Key("sampling.temperature", "0 is greedy", "float"),
    Key("sampling.top_p", "nucleus mass in (0, 1]", "float"),
    Key("sampling.top_k", "0 keeps every token", "int"),
    Key("sampling.max_new_tokens", "longest completion", "int"),
    Key(
        "sampling.backend",
        "who samples: vllm (installed, CUDA GPU), hf (transformers), auto: vllm when it can run",
        choices=("auto", "hf", "vllm"),
    ),
    # what train does not have: the same name and meaning in every command that reads it
    Key("model.reference", "reference model (default: the adapter's base, or the model itself)"),
    Key("model.device", "cuda, cpu, ... (default: cuda when available)"),
    Key("sampling.batch_size", "sequences per generate call", "int"),
    Key("eval.bootstrap", "win-rate bootstrap resamples", "int"),
    Key("eval.lc_bootstrap", "length-controlled bootstrap resamples, each a refit", "int"),
    Key(
        "judge",
        "the pairwise judge: longer | shorter | random[:SEED] | function:MODULE:FN | local:MODEL | api:... | rm:PATH",
    ),
    Key("store", "verdict store (SQLite): a rerun asks no judge call twice", "path"),
    Key("seed", "the seed of this command's randomness", "int"),
    Key("limit", "only the first N items", "int"),
    Key("out", "where the output is written", "path"),
    Key("output_dir", "output folder (must not exist, or be empty)", "path"),
    Key("input", "jsonl rows with 'prompt' and 'completions' (what preftune generate writes)", "path"),
    Key(
        "prompts", "prompts: a file, folder, hub name or bundled:NAME (prompt, MT-Bench turns, AlpacaEval instruction)"
    ),
    Key("run", "a preftune train output folder: its model, reference and held-out pairs", "path"),
    Key(
        "method",
        "ranking method: ipr, round_robin, or score (a reward model's scores, score_model)",
        choices=("ipr", "round_robin", "score"),
    ),
    Key("score_model", "method=score: the reward model folder (preftune train-rm)"),
    Key("pairs", "also write preference pairs (prompt, chosen, rejected) here", "path"),
    Key("compare", "another ranking of the same rows: Kendall tau and top-1 agreement with it", "path"),
    Key("outputs", "the model's rows: prompt, completion(s)", "path"),
    Key("baseline", "the baseline's rows: prompt, completion(s)", "path"),
    Key("host", "address to listen on"),
    Key("port", "0 for any free port", "int"),
    Key("threads", "CPU threads (default: usable cores less the load average)", "int"),
    Key("ctx_size", "context shared by the slots, 0: the model's", "int"),
    Key("parallel", "sequences decoded at once; the largest n", "int"),
    Key("alias", "model name reported by /v1/models (default: the model's name)"),
    # the studies' own knobs (preftune analyze, lab, reproduce)
    Key("optim.max_steps", "gradient steps", "int"),
    Key("eval.every", "steps between evaluations", "int"),
    Key("objectives", "comma-separated objective expressions; terms and defaults: 'preftune objectives'"),
    Key("methods", "the methods compared, a list such as [dpo, bon] (or dpo,bon)", "list"),
    Key("regimes", "training regimes, a list: offline, on_policy", "list"),
    Key("peak", "where the reward peaks", choices=("far", "near")),
    Key("seeds", "seeds per method and regime", "int"),
    Key("threshold", "the reward to reach", "float"),
    Key("length", "L, tokens per response", "int"),
    Key("task", "the length task", choices=("min", "mode", "skew")),
    Key("scale", "small (CPU) or full (GPU)", choices=("small", "full")),
    Key("workers", "training runs side by side, in that many processes: a number, or auto (2 on a CPU, 1 on a GPU)"),
)

#: Every key any command reads besides ``preftune train``'s own schema, each defined once.
VOCABULARY: dict[str, Key] = {key.name: key for key in _KEYS}


@dataclass(frozen=True)
class Setting:
    """A key as one command reads it: its default there, whether it must be given, the old flag.

    ``dest``: the attribute the command's code reads (default: the old flag's, else the key's last part)."""

    key: str
    default: Any = None
    flag: str | None = None
    required: bool = False
    dest: str | None = None
    help: str | None = None  # what the key holds in this command, where the vocabulary's line is too general
    flag_nargs: str | None = None  # "+": the old flag took several values (``--methods dpo bon``)

    @property
    def attribute(self) -> str:
        if self.dest:
            return self.dest
        if self.flag:
            return self.flag.lstrip("-").replace("-", "_")
        return self.key.replace(".", "_")


@dataclass(frozen=True)
class Settings:
    """What one command reads: its settings, old flags that set a fixed value, and data.* passthrough.

    ``switches``: old flag -> (key, value), for flags such as ``--full`` (``lora.enabled=false``).
    ``data_keys``: prefixes of ``preftune train``'s ``data.*`` keys handed on as ``args.overrides``."""

    command: str
    settings: tuple[Setting, ...]
    switches: dict[str, tuple[str, Any]] = field(default_factory=dict)
    data_keys: tuple[str, ...] = ()

    def by_key(self) -> dict[str, Setting]:
        return {s.key: s for s in self.settings}


def add_settings(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """Give ``parser`` the convention: a ``key=value`` positional (or a YAML file), the settings listed
    in ``--help``, the old flags read but hidden. :func:`resolve` fills ``args`` after parsing."""
    parser.formatter_class = SettingsHelpFormatter
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="settings, or a YAML file of them")
    for setting in settings.settings:
        if setting.flag is not None:
            _old_flag(parser, setting.flag, setting.key, **_flag_action(setting))
    for flag, (key, value) in settings.switches.items():
        _old_flag(parser, flag, key, action="store_const", const=value)
    parser.epilog = "\n\n".join(filter(None, [settings_help(settings), parser.epilog]))
    parser.set_defaults(command_settings=settings)


def _flag_action(setting: Setting) -> dict[str, Any]:
    """How the old flag of ``setting`` read its value: a switch, several values, a repeat, or one value."""
    kind = VOCABULARY[setting.key].kind
    if kind == "bool":
        return {"action": "store_const", "const": True}
    if kind == "list":
        return {"nargs": setting.flag_nargs} if setting.flag_nargs else {"action": "append"}
    return {}


def _old_flag(parser: argparse.ArgumentParser, flag: str, key: str, **how: Any) -> None:
    """An old ``--flag`` of ``key``: read (into its own attribute, :func:`_read_flags`) but not shown."""
    parser.add_argument(flag, dest=_legacy(key, flag), default=argparse.SUPPRESS, help=argparse.SUPPRESS, **how)


def settings_help(settings: Settings) -> str:
    """The ``--help`` block: one line per key, ``key=DEFAULT`` then what it means."""
    lines = ["settings (key=value, or a YAML file of them; docs/cli.md):"]
    for s in settings.settings:
        default = "REQUIRED" if s.required else shown(s.default)
        lines.append(help_line(f"{s.key}={default}", s.help or VOCABULARY[s.key].help))
    if settings.data_keys:
        lines.append(help_line(" ".join(f"{p}*" for p in settings.data_keys), "as 'preftune train' reads data"))
    return "\n".join(lines)


def help_line(left: str, right: str, width: int = 100) -> str:
    """``  key=DEFAULT   what it means``, the meaning wrapped in its column."""
    pad = 2 + 30 + 1
    wrapped = textwrap.wrap(right, width - pad) or [""]
    first = f"  {left:<30} " if len(left) <= 30 else f"  {left}\n{'':<{pad}}"
    return first + ("\n" + " " * pad).join(wrapped)


def shown(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


class SettingsHelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that text with line breaks (the settings block) keeps them."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line + "\n" for line in text.splitlines()).rstrip("\n")
        return super()._fill_text(text, width, indent)


def _legacy(key: str, flag: str) -> str:
    return f"legacy:{key}:{flag}"


def resolve(args: argparse.Namespace) -> None:
    """Fill ``args`` from the YAML files, ``key=value`` items and old flags: each setting's attribute
    gets its value (or default), unknown keys and bad values are one error, old flags one note each."""
    settings: Settings = args.command_settings
    given, passthrough = _read_items(args.overrides, settings)
    given.update(_read_flags(args, given))
    known = settings.by_key()
    missing = [s for s in known.values() if s.required and s.key not in given]
    if missing:
        needed = " ".join(f"{s.key}=..." for s in missing)
        raise PreftuneError(
            f"{settings.command} needs {needed} ('preftune {settings.command} --help' lists the settings)"
        )
    for key, setting in known.items():
        value = _convert(key, given[key]) if key in given else setting.default
        setattr(args, setting.attribute, value)
    args.overrides = passthrough
    args.given = set(given)


def _read_items(items: Sequence[str], settings: Settings) -> tuple[dict[str, Any], list[str]]:
    """``key=value`` items and YAML files into (this command's keys -> value, data.* passthrough).

    A word or a path is taken as written (``judge=local:``, ``out=my #2.jsonl``: YAML would read a
    mapping and a comment there); numbers, booleans and lists are read as YAML 1.2 reads them."""
    pairs: list[tuple[str, Any, str | None]] = []
    for item in items:
        if "=" in item:
            key, text = (part.strip() for part in item.split("=", 1))
            if not text:
                raise PreftuneError(f"{key}= has no value (leave the key out for its default)")
            pairs.append((key, _from_text(key, text), item))
        elif item.endswith((".yaml", ".yml")):
            pairs.extend((key, value, None) for key, value in _yaml_items(Path(item)))
        else:
            raise PreftuneError(f"'{item}' is neither key=value nor a YAML file (e.g. limit=10)")
    known = settings.by_key()
    given: dict[str, Any] = {}
    passthrough: list[str] = []
    problems = []
    for key, value, item in pairs:
        if key in known:
            given[key] = value
        elif settings.data_keys and key.startswith(settings.data_keys):
            passthrough.append(item or f"{key}={value if isinstance(value, str) else json.dumps(value)}")
        else:
            problems.append(_unknown(key, settings))
    if problems:
        plural = "s do" if len(problems) > 1 else " does"
        raise PreftuneError(
            f"{settings.command}: setting{plural} not exist: {'; '.join(problems)}; "
            f"'preftune {settings.command} --help' lists the settings"
        )
    return given, passthrough


def _from_text(key: str, text: str) -> Any:
    from preftune.cli.config import parse_value

    kind = VOCABULARY[key].kind if key in VOCABULARY else None
    return text if kind in ("str", "path") else parse_value(text)


def _yaml_items(path: Path) -> list[tuple[str, Any]]:
    from preftune.cli.config import _read_yaml

    def flat(node: Any, prefix: str) -> list[tuple[str, Any]]:
        if isinstance(node, dict) and not prefix.endswith(("columns.", "labels.")):
            return [item for k, v in node.items() for item in flat(v, f"{prefix}{k}.")]
        return [(prefix[:-1], node)]

    return flat(_read_yaml(path), "")


def _unknown(key: str, settings: Settings) -> str:
    """Why ``key`` is not one of this command's settings, with the one it most likely means."""
    names = list(settings.by_key())
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.7)
    if close:
        return f"'{key}' (did you mean '{close[0]}'?)"
    leaf = key.split(".")[-1]
    same_leaf = [n for n in names if n.split(".")[-1] == leaf]
    if same_leaf:
        return f"'{key}' (here {same_leaf[0]})"
    flag = "--" + key.replace("_", "-")
    old = [s.key for s in settings.settings if s.flag == flag]
    if old:
        return f"'{key}' (here {old[0]})"
    return f"'{key}' (a 'preftune train' setting)" if _is_train_key(key) else f"'{key}'"


def _is_train_key(key: str) -> bool:
    from preftune.cli.config import schema_keys

    return key in schema_keys()


def _read_flags(args: argparse.Namespace, given: dict[str, Any]) -> dict[str, Any]:
    """The old ``--flags`` that were used, by key, each announced in one ``note:`` line."""
    out: dict[str, Any] = {}
    for name, value in vars(args).items():
        if not name.startswith("legacy:"):
            continue
        _, key, flag = name.split(":", 2)
        if key in given or key in out:
            raise PreftuneError(f"{key} is given twice ({flag} is its old spelling): give {key}= once")
        print(
            f"note: {flag} is spelled {key}={shown(value)} now; the flag is read until preftune {FLAGS_READ_UNTIL}",
            file=sys.stderr,
        )
        out[key] = value
    return out


def _convert(key: str, value: Any) -> Any:
    """``value`` (a YAML scalar, a flag's text, a list) as the kind of value ``key`` takes."""
    spec = VOCABULARY[key]
    try:
        converted = _as_kind(spec.kind, value)
    except (TypeError, ValueError):
        written = shown(value) if not _holds_mapping(value) else "a mapping (quote a value that ends in ':')"
        raise PreftuneError(f"{key}={written}: expected {_KIND_NAMES[spec.kind]}") from None
    if spec.choices and converted not in spec.choices:
        raise PreftuneError(f"{key}={converted}: expected one of {', '.join(spec.choices)}")
    return converted


def _holds_mapping(value: Any) -> bool:
    return isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict) for v in value))


_KIND_NAMES = {
    "str": "a word or a path",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "path": "a path",
    "list": "a list such as [a, b]",
}


def _as_kind(kind: str, value: Any) -> Any:
    if kind == "list":
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in items):
            raise TypeError
        return [str(v) for v in items]
    if isinstance(value, (list, dict)):
        raise TypeError
    if kind == "bool":
        if isinstance(value, str) and value.lower() in {"true", "false"}:
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise TypeError
        return value
    if isinstance(value, bool):
        raise TypeError
    if kind == "int":
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value) if not isinstance(value, str) else int(value.strip())
    if kind == "float":
        return float(value)
    text = str(value)
    return Path(text) if kind == "path" else text


def stray_flag_hint(args: argparse.Namespace, stray: Sequence[str], argv: Sequence[str] = ()) -> str | None:
    """For a ``--flag`` a command does not have (``preftune train --lr 1e-4``), the one line that says
    how the setting is given here (``optim.lr=1e-4``); None when the stray items hold no flag."""
    flags = [i for i, item in enumerate(stray) if item.startswith("--")]
    if not flags:
        return None
    flag, _, inline = stray[flags[0]].partition("=")
    position = list(argv).index(stray[flags[0]]) if stray[flags[0]] in argv else -1
    after = argv[position + 1] if 0 <= position < len(argv) - 1 else ""
    value = inline or (after if after and not after.startswith("-") and "=" not in after else "VALUE")
    settings: Settings | None = getattr(args, "command_settings", None)
    command = settings.command if settings else getattr(args, "command", None)
    if command is None:
        return None
    key = _key_for_flag(flag.lstrip("-").replace("-", "_"), settings)
    where = f"here {key}={value}" if key else f"'preftune {command} --help' lists them"
    return f"{flag} is not an option of preftune {command}: settings are key=value, {where}"


def _key_for_flag(name: str, settings: Settings | None) -> str | None:
    """The key an unknown ``--name`` most likely means: the same name or last part, TRL's name, a near spelling."""
    if settings is not None:
        keys = list(settings.by_key())
    else:
        from preftune.cli.config import schema_keys
        from preftune.run.trl_names import SAME_VALUE

        keys = schema_keys()
        if name in SAME_VALUE:
            return SAME_VALUE[name]
    leaves = {key.split(".")[-1]: key for key in reversed(keys)}
    if settings is not None:  # the old flags' names too (--precision: optim.mixed_precision)
        leaves.update({s.flag.lstrip("-").replace("-", "_"): s.key for s in settings.settings if s.flag})
    if name in keys or name in leaves:
        return name if name in keys else leaves[name]
    close = difflib.get_close_matches(name, list(leaves), n=1, cutoff=0.75)
    return leaves[close[0]] if close else None
