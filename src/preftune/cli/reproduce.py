"""``preftune reproduce PAPER scale=small|full out=DIR``: run a paper's studies and write a report.

Known papers: ``P1`` (Tuan & Wang 2024; :mod:`preftune.reproduce.p1`), ``P2`` (Grinsztajn et al. 2024;
:mod:`preftune.reproduce.p2`), ``P3`` (Tajwar et al. 2024;
:mod:`preftune.reproduce.p3`) and ``P4`` (Chen et al. 2024; :mod:`preftune.reproduce.p4`); ``all`` runs each
into ``OUT/<paper>`` and writes a closing note,
``OUT/verdicts.md``, listing every claim with its verdict. The report (``report.md``),
its PNGs and ``results.json`` go to ``--out``; each of the paper's claims gets what the paper reports,
what we measured with 95% intervals, and a verdict computed from the numbers.
"""

from __future__ import annotations

import argparse

from preftune.cli.keys import Setting, Settings, add_settings
from preftune.errors import PreftuneError

KNOWN_PAPERS = ("P1", "P2", "P3", "P4")
ALL = "all"
SCALE_CHOICES = ("small", "full")


SETTINGS = Settings(
    "reproduce",
    (
        Setting("scale", "small", "--scale"),
        Setting("workers", "auto"),
        Setting("out", flag="--out", required=True, help="output folder (created; its report files are replaced)"),
    ),
)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``preftune reproduce`` to the command parser."""
    parser = commands.add_parser(
        "reproduce",
        help="reproduce a paper's claims and write a Markdown report with plots",
        description=(
            "Runs a paper's studies at the chosen scale and writes report.md, its PNGs and results.json to out: for "
            "each claim, what the paper reports, what we measured (95% intervals) and whether it holds here. "
            f"Known papers: {', '.join(KNOWN_PAPERS)}, or {ALL} (each into out/PAPER, and out/verdicts.md). "
            "Each paper's small scale fits two CPU cores in about 30 minutes; full wants one GPU."
        ),
        epilog="example: preftune reproduce P3 scale=small out=docs/reproductions/P3",
    )
    parser.add_argument("paper", metavar="PAPER", help=f"the paper: {', '.join(KNOWN_PAPERS)} or {ALL}")
    add_settings(parser, SETTINGS)
    parser.set_defaults(run=run_reproduce_command)


def paper_name(name: str) -> str:
    """``name`` as a known paper or ``all`` (case-insensitive), or a one-line error listing the known ones."""
    for known in (*KNOWN_PAPERS, ALL):
        if name.casefold() == known.casefold():
            return known
    raise PreftuneError(f"unknown paper '{name}'; known papers: {', '.join(KNOWN_PAPERS)} (or {ALL})")


def run_reproduce_command(args: argparse.Namespace) -> int:
    """Check the paper and the output folder, run the reproduction, print each claim's verdict."""
    from preftune.reproduce.workers import parallel_runs, parse_workers

    paper = paper_name(args.paper)
    if args.out.exists() and not args.out.is_dir():
        raise PreftuneError(f"out={args.out} exists and is not a folder")
    with parallel_runs(parse_workers(args.workers)):
        return _run(paper, args)


def _run(paper: str, args: argparse.Namespace) -> int:
    """The reproduction (one paper, or all of them and their closing note), each verdict printed."""
    if paper != ALL:
        results = run_paper(paper, args.scale, args.out)
        for key, claim in results["claims"].items():
            print(f"{key}: {claim['verdict'] or 'n/a (lemma)'}")
        return 0
    from preftune.files import write_atomic
    from preftune.reproduce.closing import closing_note

    everything = {paper: run_paper(paper, args.scale, args.out / paper) for paper in KNOWN_PAPERS}
    note = closing_note(everything)
    write_atomic(args.out / "verdicts.md", note.encode("utf-8"))
    print(note)
    return 0


def run_paper(paper: str, scale: str, out) -> dict:
    """One paper's reproduction at ``scale`` into ``out``; what its ``results.json`` holds."""
    from preftune.reproduce import PAPERS
    from preftune.reproduce.p3_length import length_study

    if paper == "P3":
        return PAPERS[paper](scale, out, say=print, length=length_study)
    return PAPERS[paper](scale, out, say=print)
