"""Judges against people on several labelled sets: one ``preftune judge eval`` per judge and set.

Runs ``preftune judge eval judge=J data.eval=F out=REPORT`` for every judge J and labelled file F
(PandaLM's test set, LLMBar's Natural and Adversarial sets, read as they are), keeps each report
as JSON in ``--out-dir`` (an existing report is reused, so a killed run goes on where it stopped;
``--store`` keeps the judges' verdicts too), and prints two markdown tables: agreement ± s.e. per
judge and set, and every number of each run (n, failed, ties, first-position rate). ``judge
eval``'s own baseline (longer-is-better on the same pairs) is a row of its own on every set.

    .venv/bin/python benchmarks/judge_table.py --out-dir /work/llmbar/reports \\
        --data Natural=/work/llmbar/Natural.json GPTInst=/work/llmbar/GPTInst.json \\
        --judge random longer shorter

``--limit K`` judges only the first K pairs of each set (the table says so in its n column);
``--no-run`` tabulates the reports already there, each judge and set on all its pairs where such a
report exists, else on the most pairs any ``--limit`` run judged.
A judge whose run fails leaves no report and a line on stderr; the others go on.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHEAP = ("random", "longer", "shorter")


def report_path(out_dir: Path, judge: str, name: str, limit: int | None) -> Path:
    """Where one (judge, set) report lives: a file name made safe from the judge spec."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in judge)
    suffix = f"-first{limit}" if limit is not None else ""
    return out_dir / f"{safe}--{name}{suffix}.json"


def any_report(out_dir: Path, judge: str, name: str) -> Path | None:
    """The report of (judge, set) on all its pairs, else the one on the most pairs (``--limit`` runs)."""
    full = report_path(out_dir, judge, name, None)
    if full.is_file():
        return full
    prefix = report_path(out_dir, judge, name, None).stem + "-first"
    limited = [(int(p.stem.removeprefix(prefix)), p) for p in out_dir.glob(f"{prefix}*.json")]
    return max(limited)[1] if limited else None


def _setting(key: str, value: str | Path) -> str:
    """``key=value``: a judge spec or a path is read as written (no quoting needed)."""
    return f"{key}={value}"


def run_one(judge: str, data: Path, out: Path, *, limit: int | None, store: Path | None) -> dict[str, Any] | None:
    """One ``judge eval`` run; its JSON report, or None (with the error on stderr) when it wrote none."""
    command = [
        sys.executable,
        "-m",
        "preftune.cli.main",
        "judge",
        "eval",
        _setting("judge", judge),
        _setting("data.eval", data),
        "data.skip_invalid=true",
        _setting("out", out),
    ]
    if limit is not None:
        command += [f"limit={limit}"]
    if store is not None:
        command += [_setting("store", store)]
    began = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - began
    if not out.is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        print(f"{judge} on {data.name}: exit {result.returncode}: {tail[0]}", file=sys.stderr)
        return None
    report = json.loads(out.read_text(encoding="utf-8"))
    report["seconds"] = round(seconds, 1)
    report["exit_code"] = result.returncode
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"{judge} on {data.name}: {seconds:.0f} s, exit {result.returncode}", file=sys.stderr)
    return report


def _cell(score: dict[str, Any]) -> str:
    mean, stderr = score.get("agreement"), score.get("stderr")
    if mean is None:
        return "n/a"
    return f"{mean:.3f} ± {stderr:.3f}" if stderr is not None and math.isfinite(stderr) else f"{mean:.3f}"


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def wide_table(judges: list[str], names: list[str], reports: dict[tuple[str, str], dict[str, Any]]) -> str:
    """Agreement ± s.e. (n) per judge (rows) and set (columns); the longer baseline's row from any report."""
    lines = ["| judge | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for judge in judges:
        cells = []
        for name in names:
            report = reports.get((judge, name))
            cells.append("—" if report is None else f"{_cell(report['judge'])} (n {report['judge']['scored']})")
        lines.append(f"| `{judge}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def long_table(judges: list[str], names: list[str], reports: dict[tuple[str, str], dict[str, Any]]) -> str:
    """Every number of each run: one row per judge and set, the longer baseline's on the same pairs beside it."""
    lines = [
        "| judge | set | n | failed | agreement ± s.e. | ties | first position | longer on the same pairs | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for judge in judges:
        for name in names:
            report = reports.get((judge, name))
            if report is None:
                continue
            score, baseline = report["judge"], report["baseline"]
            lines.append(
                f"| `{judge}` | {name} | {score['scored']} | {score['failed']} | {_cell(score)} | "
                f"{_rate(score['tie_rate'])} | {_rate(score['first_rate'])} | {_cell(baseline)} | "
                f"{report.get('seconds', 'n/a')} |"
            )
    return "\n".join(lines)


def parse_data(items: list[str]) -> list[tuple[str, Path]]:
    """``NAME=PATH`` items (a bare path is named by its file name without suffix)."""
    found = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).stem, item
        found.append((name, Path(path)))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", nargs="+", default=list(CHEAP), help="judge specs (default: random longer shorter)")
    parser.add_argument("--data", nargs="+", required=True, help="labelled files as NAME=PATH")
    parser.add_argument("--out-dir", type=Path, required=True, help="one JSON report per judge and set (reused)")
    parser.add_argument("--limit", type=int, default=None, help="only the first K pairs of each set")
    parser.add_argument("--store", type=Path, default=None, help="verdict store (SQLite) shared by the runs")
    parser.add_argument(
        "--no-run", action="store_true", help="only tabulate the reports there (all pairs, else the most pairs)"
    )
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    sets = parse_data(args.data)
    names = [name for name, _ in sets]
    reports: dict[tuple[str, str], dict[str, Any]] = {}
    for judge in args.judge:
        for name, path in sets:
            out = report_path(args.out_dir, judge, name, args.limit)
            found = any_report(args.out_dir, judge, name) if args.no_run else out if out.is_file() else None
            if found is not None:
                reports[(judge, name)] = json.loads(found.read_text(encoding="utf-8"))
            elif not args.no_run:
                found = run_one(judge, path, out, limit=args.limit, store=args.store)
                if found is not None:
                    reports[(judge, name)] = found
    print(wide_table(args.judge, names, reports))
    print()
    print(long_table(args.judge, names, reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
