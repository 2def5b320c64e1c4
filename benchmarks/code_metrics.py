"""Code metrics of a preftune checkout, printed as Markdown tables (or JSON with ``--json``).

Usage: ``python3 benchmarks/code_metrics.py [--root PATH] [--list] [--json]``. ``--root`` is a repository checkout (by
default the one this file is in); ``--list`` adds the places behind each count. Standard library only; it reads the
tree and runs ``git rev-parse`` and ``duplicates``, and writes nothing.

What each metric means:

1. Lines per package: for each direct subpackage of ``src/preftune`` (everything below it, recursively), the total
   physical lines (newline characters, plus one for a last line without one) of its ``.py`` files; the ``.py`` files
   directly in ``src/preftune`` form the row "preftune (top-level modules)". A total row sums them.
2. Functions over 60 lines: every ``def`` and ``async def`` in ``src/`` (methods and nested functions included) whose
   span ``end_lineno - lineno + 1`` exceeds 60. ``lineno`` is the ``def`` line, so decorators are not counted; the
   docstring, comments and blank lines inside the body are.
3. Constructors over 8 arguments: ``__init__`` methods defined directly in a class body in ``src/`` with more than 8
   parameters besides the first one (``self``): positional-only, positional and keyword-only parameters count one
   each, and so do ``*args`` and ``**kwargs``. Classes decorated with ``@dataclass`` (bare, called, or as
   ``dataclasses.dataclass``) are left out: their ``__init__`` is generated, not written.
4. Formatter skips: lines of ``.py`` files that contain the exact text ``fmt: skip`` preceded by ``# `` (the comment
   that tells the formatter to leave a statement alone), counted in ``src/`` and separately in ``tests/``,
   ``benchmarks/`` and ``examples/``. Spelling variants (other spacing) are reported apart when there are any.
5. Import circles inside packages: a directed graph between the modules of ``src/preftune`` (a package is its
   ``__init__`` module), with an edge for every import of a preftune module anywhere in a file: module level, inside
   functions and classes, and under ``if TYPE_CHECKING:``. ``import preftune.a.b`` points at ``preftune.a.b`` (the
   parent packages it also loads are not edges). ``from preftune.a import X`` (and its relative forms) points at
   ``preftune.a`` itself, not at the module that defines ``X``, unless ``preftune.a.X`` is a module, in which case it
   points at that module. Two graphs are built: "all imports", and "runtime imports", which leaves out the imports
   inside the body of an ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``) block. For each, the strongly connected
   components (iterative Tarjan) of more than one module are found; a circle counts as inside a package when all its
   modules belong to the same package, a module belonging to its parent package and a package's ``__init__`` to the
   package itself. Circles that span packages are counted apart.
6. Duplicate pairs: ``duplicates --repo <root>/src/preftune --most 200`` (an external command on PATH). Its first line
   says how many pairs of places share six or more identical or same-shape lines (``N pairs of places (F files
   read) ...``, or ``no duplicates ...``); that ``N`` is the count reported. It is checked against the rows listed
   (``D1 ...``) plus the ``(+N more pairs)`` line. "n/a" when the command is missing, fails or prints neither form.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LONG_FUNCTION_LINES = 60
WIDE_CONSTRUCTOR_ARGS = 8
# Built in two halves so that this file does not count itself.
FMT_SKIP = "# fmt" + ": skip"
FMT_SKIP_LOOSE = re.compile(r"#\s*fmt\s*:\s*skip\b")
TOP_LEVEL_ROW = "preftune (top-level modules)"
OTHER_TREES = ("tests", "benchmarks", "examples")
DUPLICATES_MOST = 200
DUPLICATES_SECONDS = 120


@dataclass
class LongFunction:
    path: str
    line: int
    name: str
    lines: int


@dataclass
class WideConstructor:
    path: str
    line: int
    cls: str
    parameters: int


@dataclass
class ImportCircles:
    inside_package: list[list[str]] = field(default_factory=list)
    across_packages: list[list[str]] = field(default_factory=list)


@dataclass
class Duplicates:
    pairs: int | None
    detail: str
    rows_listed: int = 0
    more_pairs: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class Metrics:
    root: str
    revision: str
    lines_per_package: dict[str, int]
    files_per_package: dict[str, int]
    long_functions: list[LongFunction]
    wide_constructors: list[WideConstructor]
    fmt_skip: dict[str, int]
    fmt_skip_variants: dict[str, int]
    circles_all: ImportCircles
    circles_runtime: ImportCircles
    duplicates: Duplicates
    notes: list[str]


def python_files(directory: Path) -> list[Path]:
    """The ``.py`` files below ``directory``, sorted, skipping ``__pycache__`` and hidden folders."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.rglob("*.py"):
        relative = path.relative_to(directory).parts
        if any(part == "__pycache__" or part.startswith(".") for part in relative[:-1]) or not path.is_file():
            continue
        found.append(path)
    return sorted(found)


def physical_lines(path: Path) -> int:
    data = path.read_bytes()
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def parse(path: Path, notes: list[str]) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError) as error:
        notes.append(f"{path}: not parsed ({error.__class__.__name__}: {error})")
        return None


def lines_per_package(package_dir: Path) -> tuple[dict[str, int], dict[str, int]]:
    lines: dict[str, int] = defaultdict(int)
    files: dict[str, int] = defaultdict(int)
    for path in python_files(package_dir):
        parts = path.relative_to(package_dir).parts
        row = f"preftune.{parts[0]}" if len(parts) > 1 else TOP_LEVEL_ROW
        lines[row] += physical_lines(path)
        files[row] += 1
    order = sorted(lines, key=lambda row: (row == TOP_LEVEL_ROW, row))
    return {row: lines[row] for row in order}, {row: files[row] for row in order}


class _DefinitionVisitor(ast.NodeVisitor):
    """Collects long functions and wide constructors, with dotted qualified names."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.scope: list[str] = []
        self.long_functions: list[LongFunction] = []
        self.wide_constructors: list[WideConstructor] = []

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        qualname = ".".join([*self.scope, node.name])
        if not any(_is_dataclass_decorator(decorator) for decorator in node.decorator_list):
            for statement in node.body:
                if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef) and statement.name == "__init__":
                    count = _parameter_count(statement.args)
                    if count > WIDE_CONSTRUCTOR_ARGS:
                        self.wide_constructors.append(WideConstructor(self.path, statement.lineno, qualname, count))
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        span = (node.end_lineno or node.lineno) - node.lineno + 1
        if span > LONG_FUNCTION_LINES:
            qualname = ".".join([*self.scope, node.name])
            self.long_functions.append(LongFunction(self.path, node.lineno, qualname, span))
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._visit_function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._visit_function(node)


def _is_dataclass_decorator(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    if isinstance(target, ast.Name):
        return target.id == "dataclass"
    return isinstance(target, ast.Attribute) and target.attr == "dataclass"


def _parameter_count(arguments: ast.arguments) -> int:
    positional = len(arguments.posonlyargs) + len(arguments.args)
    starred = (arguments.vararg is not None) + (arguments.kwarg is not None)
    return max(positional - 1, 0) + len(arguments.kwonlyargs) + starred


def definitions(src: Path, root: Path, notes: list[str]) -> tuple[list[LongFunction], list[WideConstructor]]:
    long_functions: list[LongFunction] = []
    wide_constructors: list[WideConstructor] = []
    for path in python_files(src):
        tree = parse(path, notes)
        if tree is None:
            continue
        visitor = _DefinitionVisitor(path.relative_to(root).as_posix())
        visitor.visit(tree)
        long_functions.extend(visitor.long_functions)
        wide_constructors.extend(visitor.wide_constructors)
    long_functions.sort(key=lambda item: (-item.lines, item.path, item.line))
    wide_constructors.sort(key=lambda item: (-item.parameters, item.path, item.line))
    return long_functions, wide_constructors


def fmt_skips(root: Path) -> tuple[dict[str, int], dict[str, int]]:
    exact: dict[str, int] = {}
    variants: dict[str, int] = {}
    for tree in ("src", *OTHER_TREES):
        exact_count = variant_count = 0
        for path in python_files(root / tree):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if FMT_SKIP in line:
                    exact_count += 1
                elif FMT_SKIP_LOOSE.search(line):
                    variant_count += 1
        exact[f"{tree}/"] = exact_count
        if variant_count:
            variants[f"{tree}/"] = variant_count
    return exact, variants


class _ImportCollector(ast.NodeVisitor):
    """Every ``import`` and ``from ... import`` in a module, each with whether it sits under ``if TYPE_CHECKING:``."""

    def __init__(self) -> None:
        self.imports: list[tuple[ast.Import | ast.ImportFrom, bool]] = []
        self._type_checking_depth = 0

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._type_checking_depth += 1
        for statement in node.body:
            self.visit(statement)
        self._type_checking_depth -= 1
        for statement in node.orelse:
            self.visit(statement)

    def visit_Import(self, node: ast.Import) -> None:
        self.imports.append((node, self._type_checking_depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.imports.append((node, self._type_checking_depth > 0))


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def module_names(package_dir: Path) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, whether it is a package's ``__init__``) for every ``.py`` file of the package."""
    modules: dict[str, tuple[Path, bool]] = {}
    for path in python_files(package_dir):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules[".".join(parts)] = (path, is_package)
    return modules


def _longest_known(name: str, known: dict[str, tuple[Path, bool]]) -> str | None:
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def _import_targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: dict[str, tuple[Path, bool]]
) -> set[str]:
    targets: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == "preftune":
                target = _longest_known(alias.name, known)
                if target is not None:
                    targets.add(target)
        return targets
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        if node.level > 1:
            parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join([*parts, *([node.module] if node.module else [])])
    else:
        base = node.module or ""
    if base.split(".")[0] != "preftune":
        return targets
    names_the_package = False
    for alias in node.names:
        if alias.name != "*" and f"{base}.{alias.name}" in known:
            targets.add(f"{base}.{alias.name}")
        else:
            names_the_package = True
    if names_the_package:
        target = _longest_known(base, known)
        if target is not None:
            targets.add(target)
    return targets


def import_graphs(package_dir: Path, notes: list[str]) -> tuple[dict[str, set[str]], dict[str, set[str]], set[str]]:
    """(all-imports graph, runtime-imports graph, the package modules) over the modules of ``package_dir``."""
    known = module_names(package_dir)
    every: dict[str, set[str]] = {name: set() for name in known}
    runtime: dict[str, set[str]] = {name: set() for name in known}
    for module, (path, is_package) in known.items():
        tree = parse(path, notes)
        if tree is None:
            continue
        collector = _ImportCollector()
        collector.visit(tree)
        for node, type_only in collector.imports:
            for target in _import_targets(node, module, is_package, known):
                if target == module:
                    continue
                every[module].add(target)
                if not type_only:
                    runtime[module].add(target)
    packages = {name for name, (_, is_package) in known.items() if is_package}
    return every, runtime, packages


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iterative; each component sorted, components in discovery order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(sorted(graph[root])))]
        while work:
            node, children = work[-1]
            descended = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    descended = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if descended:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def import_circles(graph: dict[str, set[str]], packages: set[str]) -> ImportCircles:
    def package_of(module: str) -> str:
        return module if module in packages else module.rpartition(".")[0]

    circles = ImportCircles()
    for component in strongly_connected(graph):
        if len(component) < 2:
            continue
        if len({package_of(module) for module in component}) == 1:
            circles.inside_package.append(component)
        else:
            circles.across_packages.append(component)
    circles.inside_package.sort()
    circles.across_packages.sort()
    return circles


_DUPLICATES_HEADER = re.compile(r"^(\d+) pairs? of places\b")
_DUPLICATES_NONE = re.compile(r"^no duplicates\b")
_DUPLICATES_ROW = re.compile(r"^D\d+ ")
_DUPLICATES_MORE = re.compile(r"^\(\+(\d+) more pairs?\)")


def duplicate_pairs(package_dir: Path) -> Duplicates:
    executable = shutil.which("duplicates")
    if executable is None:
        return Duplicates(None, "`duplicates` is not on PATH")
    command = [
        executable,
        "--repo",
        str(package_dir),
        "--most",
        str(DUPLICATES_MOST),
        "--seconds",
        str(DUPLICATES_SECONDS),
    ]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=DUPLICATES_SECONDS + 60, check=False
        )
    except (OSError, subprocess.SubprocessError) as error:
        return Duplicates(None, f"`duplicates` failed: {error}")
    lines = completed.stdout.splitlines()
    result = Duplicates(None, "")
    for line in lines:
        if _DUPLICATES_ROW.match(line):
            result.rows_listed += 1
        elif more := _DUPLICATES_MORE.match(line):
            result.more_pairs += int(more.group(1))
        elif line.startswith(("incomplete:", "left out:")):
            result.notes.append(line)
    header = lines[0] if lines else ""
    if match := _DUPLICATES_HEADER.match(header):
        result.pairs = int(match.group(1))
    elif _DUPLICATES_NONE.match(header):
        result.pairs = 0
    else:
        result.detail = f"unrecognised output (exit {completed.returncode}): {header or completed.stderr.strip()!r}"
        return result
    result.detail = header
    if result.rows_listed + result.more_pairs != result.pairs:
        result.notes.append(
            f"rows listed ({result.rows_listed}) + more pairs ({result.more_pairs}) != header count ({result.pairs})"
        )
    if any(note.startswith("incomplete:") for note in result.notes):
        result.notes.append("the count covers only what `duplicates` read")
    return result


def revision(root: Path) -> str:
    try:
        completed = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return completed.stdout.strip() or "unknown"


def collect(root: Path) -> Metrics:
    notes: list[str] = []
    package_dir = root / "src" / "preftune"
    if not package_dir.is_dir():
        raise SystemExit(f"{package_dir} is not a folder: is --root a preftune checkout?")
    lines, files = lines_per_package(package_dir)
    long_functions, wide_constructors = definitions(root / "src", root, notes)
    fmt_skip, fmt_skip_variants = fmt_skips(root)
    every, runtime, packages = import_graphs(package_dir, notes)
    return Metrics(
        root=str(root),
        revision=revision(root),
        lines_per_package=lines,
        files_per_package=files,
        long_functions=long_functions,
        wide_constructors=wide_constructors,
        fmt_skip=fmt_skip,
        fmt_skip_variants=fmt_skip_variants,
        circles_all=import_circles(every, packages),
        circles_runtime=import_circles(runtime, packages),
        duplicates=duplicate_pairs(package_dir),
        notes=notes,
    )


def _circle_cell(circles: ImportCircles) -> str:
    inside = circles.inside_package
    modules = sum(len(component) for component in inside)
    return f"{len(inside)} ({modules} modules); {len(circles.across_packages)} more span packages"


def markdown(metrics: Metrics, listing: bool) -> str:
    out = [f"# Code metrics: `{metrics.root}` at {metrics.revision}", ""]
    out += ["## Lines per package", "", "| package | .py files | lines |", "| --- | ---: | ---: |"]
    for row, count in metrics.lines_per_package.items():
        out.append(f"| {row} | {metrics.files_per_package[row]} | {count} |")
    total_files = sum(metrics.files_per_package.values())
    out += [f"| **total** | {total_files} | {sum(metrics.lines_per_package.values())} |", ""]

    duplicates = metrics.duplicates
    out += ["## Metrics", "", "| metric | value |", "| --- | ---: |"]
    out.append(f"| functions over {LONG_FUNCTION_LINES} lines (src/) | {len(metrics.long_functions)} |")
    wide = len(metrics.wide_constructors)
    out.append(f"| `__init__` over {WIDE_CONSTRUCTOR_ARGS} parameters (src/, no dataclasses) | {wide} |")
    for tree, count in metrics.fmt_skip.items():
        out.append(f"| `{FMT_SKIP}` lines in {tree} | {count} |")
    out.append(f"| import circles inside packages, all imports | {_circle_cell(metrics.circles_all)} |")
    out.append(f"| import circles inside packages, runtime imports | {_circle_cell(metrics.circles_runtime)} |")
    out.append(f"| `duplicates` pairs (src/preftune) | {'n/a' if duplicates.pairs is None else duplicates.pairs} |")
    out.append("")

    out += ["## Notes", ""]
    out.append(f"- duplicates: {duplicates.detail}")
    out += [f"- duplicates: {note}" for note in duplicates.notes]
    for tree, count in metrics.fmt_skip_variants.items():
        out.append(f"- {tree}: {count} more lines with a differently spaced fmt-skip comment (not counted)")
    out += [f"- {note}" for note in metrics.notes]
    out.append("")

    if not listing:
        return "\n".join(out)
    out += [f"## Functions over {LONG_FUNCTION_LINES} lines", ""]
    out += ["| lines | function | where |", "| ---: | --- | --- |"]
    out += [f"| {item.lines} | `{item.name}` | {item.path}:{item.line} |" for item in metrics.long_functions]
    out += ["", f"## `__init__` over {WIDE_CONSTRUCTOR_ARGS} parameters", ""]
    out += ["| parameters | class | where |", "| ---: | --- | --- |"]
    out += [f"| {item.parameters} | `{item.cls}` | {item.path}:{item.line} |" for item in metrics.wide_constructors]
    for title, circles in (("all imports", metrics.circles_all), ("runtime imports", metrics.circles_runtime)):
        out += ["", f"## Import circles, {title}", "", "Inside one package:", ""]
        out += [f"- {', '.join(component)}" for component in circles.inside_package] or ["- none"]
        out += ["", "Spanning packages:", ""]
        out += [f"- {', '.join(component)}" for component in circles.across_packages] or ["- none"]
    out.append("")
    return "\n".join(out)


def as_json(metrics: Metrics, listing: bool) -> dict[str, Any]:
    data = asdict(metrics)
    data["lines_total"] = sum(metrics.lines_per_package.values())
    data["long_function_count"] = len(metrics.long_functions)
    data["wide_constructor_count"] = len(metrics.wide_constructors)
    if not listing:
        for key in ("long_functions", "wide_constructors"):
            del data[key]
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="repository checkout")
    parser.add_argument("--list", action="store_true", help="list the places behind each count")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args()
    metrics = collect(args.root.resolve())
    if args.json:
        print(json.dumps(as_json(metrics, args.list), indent=2))
    else:
        print(markdown(metrics, args.list))


if __name__ == "__main__":
    main()
