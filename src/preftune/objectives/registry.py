"""Names of terms, and objectives parsed from strings such as ``"dpo + 0.5*exmate(lam=0.1)"``.

The grammar is a sum of products, read with Python's own :mod:`ast` and nothing evaluated:
``term``, ``weight*term``, ``term*weight``, ``term/number`` and ``term(key=value, ...)`` with
literal values, each by name. Weights are finite and positive and every value is checked by the
term itself, exactly as for an objective built in Python; anything else (``*args``, ``**kwargs``,
subtraction, calls of calls...) is refused with a message that says what was expected and, for a
misspelt name, the closest valid one.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import warnings

from preftune.errors import SpecError
from preftune.objectives.base import Objective, Term
from preftune.objectives.kto import KTO
from preftune.objectives.likelihood import MATE, MLE, ExMATE, Unlikelihood
from preftune.objectives.margin import DPO, IPO, Hinge
from preftune.objectives.policy_gradient import RWR, BestOfN, BestOfNNegative, Reinforce
from preftune.objectives.ratio_losses import (
    AOT,
    AOTUnpaired,
    APODown,
    APOZero,
    BCOPair,
    DiscoPOP,
    EXOPair,
    NCAPair,
    Robust,
    SigmoidNorm,
    SPPOHard,
)
from preftune.objectives.reference_free import CPO, ORPO, SimPO
from preftune.objectives.regularisers import BCR, DPOP

TERMS: dict[str, type[Term]] = {
    cls.name: cls
    for cls in (MLE, Unlikelihood, MATE, ExMATE, DPO, IPO, Hinge, BCR, DPOP, Reinforce, RWR, BestOfN, BestOfNNegative)
}
# TRL's other preference losses (docs/methods.md §2.6, §2.7)
TERMS.update(
    (cls.name, cls)
    for cls in (SimPO, CPO, ORPO, SigmoidNorm, Robust, EXOPair, DiscoPOP, NCAPair, BCOPair, SPPOHard, APOZero)
)
TERMS.update((cls.name, cls) for cls in (APODown, AOT, AOTUnpaired))
TERMS[KTO.name] = KTO  # issue 24: unpaired good and bad examples against a KL reference point
# Other names of a registered term: parsed to that term, which keeps its own name (describe, logs, labels).
ALIASES: dict[str, str] = {"aot_pair": AOTUnpaired.name}  # TRL's name for aot_unpaired before 0.20


def register(cls: type[Term]) -> type[Term]:
    """Add a user-defined term (a frozen dataclass subclass of :class:`Term`) to the registry."""
    if not (isinstance(cls, type) and issubclass(cls, Term) and dataclasses.is_dataclass(cls)):
        raise SpecError(f"{cls!r} is not a Term dataclass")
    TERMS[cls.name] = cls
    return cls


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; choose from {', '.join(sorted(choices))}"


def make_term(name: str, **params: object) -> Term:
    """Build one term by registry name (or an alias of one, :data:`ALIASES`) with keyword hyper-parameters;
    the term checks their values."""
    key = name.lower()
    if key not in TERMS:
        key = ALIASES.get(key, key)
    if key not in TERMS:
        raise SpecError(f"unknown objective term '{name}'{_suggest(key, [*TERMS, *ALIASES])}")
    cls = TERMS[key]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for param in params:
        if param not in fields:
            raise SpecError(f"{key} has no parameter '{param}'{_suggest(param, list(fields))}")
    for f in fields.values():
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if no_default and f.name not in params:
            raise SpecError(f"{key} needs parameter '{f.name}', e.g. {key}({f.name}=...)")
    return cls(**params)  # type: ignore[arg-type]


def _number(node: ast.expr) -> float | None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = _number(node.operand)
        return None if inner is None else (-inner if isinstance(node.op, ast.USub) else inner)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    return None


def _literal(node: ast.expr, where: str) -> object:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise SpecError(f"{where}: values must be literals (numbers, True/False, strings)") from None


def _call(node: ast.Call, text: str) -> Objective:
    """``term(key=value, ...)``: every argument by name, with a literal value; nothing else."""
    name = node.func.id  # type: ignore[attr-defined]
    if any(isinstance(arg, ast.Starred) for arg in node.args):
        raise SpecError(f"objective '{text}': *args is not allowed; give parameters by name, e.g. {name}(beta=0.1)")
    if node.args:
        raise SpecError(f"objective '{text}': give parameters by name, e.g. {name}(beta=0.1)")
    if any(kw.arg is None for kw in node.keywords):
        raise SpecError(f"objective '{text}': **kwargs is not allowed; give parameters by name, e.g. {name}(beta=0.1)")
    names = [kw.arg for kw in node.keywords]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SpecError(f"objective '{text}': {name} is given {', '.join(map(str, twice))} more than once")
    params = {kw.arg: _literal(kw.value, f"objective '{text}'") for kw in node.keywords}
    return Objective.of(make_term(name, **params))  # type: ignore[arg-type]


def _parse_node(node: ast.expr, text: str) -> Objective:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _parse_node(node.left, text) + _parse_node(node.right, text)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        for weight_node, term_node in ((node.left, node.right), (node.right, node.left)):
            weight = _number(weight_node)
            if weight is not None:
                return _parse_node(term_node, text) * weight  # the objective checks the weight (> 0, finite)
        raise SpecError(f"objective '{text}': a product must be a number times a term")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        divisor = _number(node.right)
        if divisor is None:
            raise SpecError(f"objective '{text}': a term can be divided by a number only, e.g. 'dpo/2'")
        return _parse_node(node.left, text) / divisor
    if isinstance(node, ast.Name):
        return Objective.of(make_term(node.id))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return _call(node, text)
    if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub)) or isinstance(node, ast.UnaryOp):
        raise SpecError(f"objective '{text}': terms are added with positive weights; subtraction is not allowed")
    raise SpecError(f"objective '{text}': expected terms like 'dpo + 0.5*exmate(lam=0.1)'")


def parse(text: str) -> Objective:
    """Parse an objective expression, e.g. ``"dpo(beta=0.1, average=True) + 0.5*exmate"``."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("the objective is empty; e.g. 'dpo' or 'dpo + 0.5*exmate'")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise SpecError(f"cannot parse objective '{text}': {err.msg}; e.g. 'dpo + 0.5*exmate'") from None
    except ValueError as err:  # e.g. null bytes
        raise SpecError(f"cannot parse objective {text[:80]!r}: {err}") from None
    except (MemoryError, RecursionError):
        raise SpecError(f"cannot parse objective '{text[:80]}...': too long or too deeply nested") from None
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        try:
            return _parse_node(tree.body, text)
        except RecursionError:
            raise SpecError(f"objective '{text[:80]}...': too many terms nested in one expression") from None


def build(spec: str | Term | Objective) -> Objective:
    """An :class:`Objective` from a string, a term, or an objective (returned as is)."""
    if isinstance(spec, Objective):
        return spec
    if isinstance(spec, Term):
        return Objective.of(spec)
    return parse(spec)
