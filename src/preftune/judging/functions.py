"""Judges from plain Python functions, two built-in heuristics, and a seeded random judge.

A judge function is ``fn(prompt, first, second) -> FIRST | SECOND | TIE | FAILED``. Give
:class:`FunctionJudge` the function or a ``"module:function"`` string::

    FunctionJudge("preftune.judging.functions:longer_is_better")

The built-ins answer FIRST when the two lengths are equal: asked in both orders that is FIRST
twice, which :class:`~preftune.judging.base.BothOrders` turns into a tie — the right verdict for
equal lengths (answering FAILED would instead mark the comparison as failed and retry it).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from preftune.errors import PreftuneError
from preftune.judging.base import ANSWERED, FAILED, FIRST, SECOND, PairwiseJudge

logger = logging.getLogger(__name__)

JudgeFunction = Callable[[str, str, str], int]


def longer_is_better(prompt: str, first: str, second: str) -> int:
    """The longer completion wins; equal lengths answer FIRST (a tie once both orders are asked)."""
    return FIRST if len(first) >= len(second) else SECOND


def shorter_is_better(prompt: str, first: str, second: str) -> int:
    """The shorter completion wins; equal lengths answer FIRST (a tie once both orders are asked)."""
    return FIRST if len(first) <= len(second) else SECOND


def load_function(spec: str, what: str = "judge function") -> Callable[..., object]:
    """The callable named by ``"module:function"`` (the function part may be dotted, ``Class.method``).

    The module is looked up on ``sys.path`` and then in the working directory (``preftune`` is a
    console script, so the directory a user runs it from is not on its path by default: a
    ``my_rewards.py`` beside the data is found). ``what`` names the callable in errors (a judge
    function, a reward function)."""
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise PreftuneError(f"{what} {spec!r} must be 'module:function'")
    module = _import_module(module_name, spec, what)
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PreftuneError(f"{what} {spec!r}: module {module_name!r} has no {attr!r}") from None
    if not callable(obj):
        raise PreftuneError(f"{what} {spec!r} is not callable (a {type(obj).__name__})")
    return obj


def _import_module(name: str, spec: str, what: str) -> Any:
    """``name`` imported from ``sys.path``, else from the working directory."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        missing = error
        if error.name == name.split(".")[0] and os.getcwd() not in sys.path:
            sys.path.append(os.getcwd())  # appended: a local file never shadows an installed module
            try:
                return importlib.import_module(name)
            except ModuleNotFoundError as again:
                missing = again
    except ImportError as error:  # the module exists but fails to import: its own error
        raise PreftuneError(f"{what} {spec!r}: cannot import module {name!r} ({error})") from None
    raise PreftuneError(
        f"{what} {spec!r}: cannot import module {name!r} ({missing}); it is looked up on PYTHONPATH and in the "
        f"working directory {os.getcwd()}"
    ) from None


def _function_name(fn: Callable[..., object], fallback: str | None = None) -> str:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if module and qualname:
        return f"{module}:{qualname}"
    return fallback or repr(fn)


class FunctionJudge(PairwiseJudge):
    """A judge that calls ``fn(prompt, first, second)`` per ordered pair.

    ``fn`` is a callable or a ``"module:function"`` string. Its identity is
    ``"function:<module>:<qualname>"`` of the resolved function (``name`` overrides it — give one
    for a lambda or a function whose answers depend on settings). An item whose call raises, or
    returns anything but FIRST/SECOND/TIE, answers FAILED (logged).
    """

    def __init__(self, fn: JudgeFunction | str, name: str | None = None):
        if isinstance(fn, str):
            self.fn = load_function(fn)
            default = _function_name(self.fn, fallback=fn)
        else:
            if not callable(fn):
                raise PreftuneError(f"judge function must be callable or 'module:function', not {type(fn).__name__}")
            self.fn = fn
            default = _function_name(fn)
        self.name = name or default

    def identity(self) -> str:
        return f"function:{self.name}"

    def judge(self, prompts: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[int]:
        answers = []
        for prompt, (first, second) in zip(prompts, pairs, strict=True):
            try:
                answer = self.fn(prompt, first, second)
                valid = answer in ANSWERED
            except Exception as error:  # one item's failure is a FAILED verdict, not a crash
                logger.warning("judge %s failed on one pair: %s: %s", self.name, type(error).__name__, error)
                answers.append(FAILED)
                continue
            if valid:
                answers.append(int(answer))
            else:
                logger.warning("judge %s answered %r (not FIRST=0, SECOND=1, TIE=2): counted FAILED", self.name, answer)
                answers.append(FAILED)
        return answers


class RandomJudge(PairwiseJudge):
    """A coin flip per ordered call, reproducible: a sha256 of (seed, prompt, first, second).

    A baseline: asked both orders it gives A, B or a tie with chances ¼, ¼, ½.
    """

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def identity(self) -> str:
        return f"random:seed={self.seed}"

    def answer(self, prompt: str, first: str, second: str) -> int:
        digest = hashlib.sha256()
        for part in (str(self.seed), prompt, first, second):
            data = part.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
        return FIRST if digest.digest()[0] & 1 == 0 else SECOND

    def judge(self, prompts: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[int]:
        return [self.answer(prompt, first, second) for prompt, (first, second) in zip(prompts, pairs, strict=True)]
