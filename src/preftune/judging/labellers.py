"""Labellers: each prompt's C sampled responses -> C rewards (P3's Algorithm 1, docs/methods.md §4).

A labeller is the "label" step of an on-policy round: ``rewards(prompts, responses)`` gives
``rewards[i][k]`` for response k of prompt i, higher is better, NaN where it could not label.
Three kinds, by spec (:func:`make_labeller`)::

    length | neg_length | length_target:N | function:MODULE:FUNCTION   a reward function per response
    rm:PATH                                                             a reward model's scores
    judge:JUDGE | judge-rr:JUDGE                                        a pairwise judge + ranking, −place

``JUDGE`` is any judge spec :func:`preftune.judging.specs.make_judge` takes (``longer``,
``local:smollm2-135m-instruct``, ``api:...``). A judge labeller ranks each prompt's responses by
iterative pairwise ranking (``judge-rr``: round robin) and gives reward −place: 0 to the best,
−(C−1) to the worst (docs/methods.md §5). :func:`apply_missing_eos_penalty` lowers the reward of a
response cut by the length limit, as TRL's ``missing_eos_penalty`` does.

``diagnostics()`` says what the last ``rewards`` call showed about the labelling, as named numbers
that an on-policy round logs beside its rewards without knowing the labeller: empty for a function
or a reward model; for a judge, the fraction of its comparisons decided (``judge_decided``: both
orders agreeing, not a tie), the fraction failed (``judge_failed``), and the mean over prompts of
Kendall's τ between its ranking and the responses' lengths (``judge_length_tau``, :func:`length_tau`:
+1 when it ranks every longer response above every shorter one, as ``longer`` does).

Prompts are strings or message lists. Functions and judges read a message list as text (each
turn ``role: content``, as ``preftune rank`` shows it); a reward model renders it through its chat
template. Nothing heavy is imported or loaded until a labeller that needs it is built.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from preftune.errors import PreftuneError
from preftune.judging.base import BothOrders, PairwiseJudge, Verdict
from preftune.judging.functions import _function_name, load_function
from preftune.judging.ranking import Ranking, ipr_rank, round_robin_rank

if TYPE_CHECKING:
    from preftune.judging.store import VerdictStore
    from preftune.reward.scorer import RewardModel

logger = logging.getLogger(__name__)

__all__ = [
    "LABELLERS",
    "FunctionLabeller",
    "JudgeLabeller",
    "Labeller",
    "RewardModelLabeller",
    "apply_missing_eos_penalty",
    "length",
    "length_tau",
    "make_labeller",
    "neg_length",
    "prompt_text",
]

LABELLERS = (
    "length | neg_length | length_target:N | function:MODULE:FUNCTION | rm:PATH | judge:JUDGE | judge-rr:JUDGE"
    " (JUDGE: longer | shorter | random[:SEED] | local:MODEL | api:... | any judge=)"
)

Prompt = str | list[dict]
RewardFunction = Callable[[str, str], float]


class Labeller(ABC):
    """Turns each prompt's sampled responses into rewards (higher is better)."""

    def identity(self) -> str:
        """Names the labeller and every setting that changes its rewards (never a secret)."""
        return type(self).__name__

    @abstractmethod
    def rewards(self, prompts: Sequence[Prompt], responses: Sequence[Sequence[str]]) -> list[list[float]]:
        """One reward per response: rewards[i][k] for response k of prompt i (higher is better).

        NaN = could not label.
        """

    def diagnostics(self) -> dict[str, float]:
        """What the last :meth:`rewards` call showed about the labelling (name -> number); none here."""
        return {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.identity()}>"


def prompt_text(prompt: Prompt) -> str:
    """A prompt as a judge or a function reads it: a string as is, messages as ``preftune rank`` shows them."""
    if isinstance(prompt, str):
        return prompt
    from preftune.judging.rank_file import Candidates  # imports the data package (torch): only for messages

    return Candidates(prompt, [], None).prompt_text  # type: ignore[arg-type]


def _check_shapes(prompts: Sequence[Prompt], responses: Sequence[Sequence[str]]) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} lists of responses")
    for i, group in enumerate(responses):
        if isinstance(group, str):
            raise TypeError(f"responses[{i}] is a string; give a list of responses per prompt")


# --- reward functions ------------------------------------------------------------------------------


def length(prompt: str, response: str) -> float:
    """The response's length in characters (longer is better)."""
    return float(len(response))


def neg_length(prompt: str, response: str) -> float:
    """Minus the response's length in characters (shorter is better)."""
    return -float(len(response))


class _LengthTarget:
    """−|len(response) − target|, lengths in characters."""

    def __init__(self, target: int):
        self.target = target

    def __call__(self, prompt: str, response: str) -> float:
        return -float(abs(len(response) - self.target))


def _as_reward(value: object) -> float:
    """A function's answer as a float; anything not a real number (or not finite) is NaN."""
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else math.nan
    return math.nan


class FunctionLabeller(Labeller):
    """``fn(prompt, response) -> float`` for every response; ``fn`` a callable or ``"module:function"``.

    The prompt is given as text (:func:`prompt_text`). A call that raises, or answers anything but a
    finite real number, gives NaN for that response (logged). ``name`` sets the identity (give one
    for a lambda, or for a function whose answers depend on settings).
    """

    def __init__(self, fn: RewardFunction | str, name: str | None = None):
        if isinstance(fn, str):
            self.fn = load_function(fn, "reward function")
            default = _function_name(self.fn, fallback=fn)
        else:
            if not callable(fn):
                raise PreftuneError(f"a reward function must be callable or 'module:function', not {type(fn).__name__}")
            self.fn = fn
            default = _function_name(fn)
        self.name = name or default

    def identity(self) -> str:
        return f"function:{self.name}"

    def rewards(self, prompts: Sequence[Prompt], responses: Sequence[Sequence[str]]) -> list[list[float]]:
        _check_shapes(prompts, responses)
        out = []
        failures = 0
        for prompt, group in zip(prompts, responses, strict=True):
            text = prompt_text(prompt)
            row = []
            for response in group:
                try:
                    value = self.fn(text, response)
                except Exception as error:  # one response's failure is a NaN, not a crash
                    if failures == 0:
                        logger.warning("reward function %s failed: %s: %s", self.name, type(error).__name__, error)
                    failures += 1
                    row.append(math.nan)
                    continue
                reward = _as_reward(value)
                if math.isnan(reward):
                    if failures == 0:
                        logger.warning("reward function %s answered %r (not a finite number): NaN", self.name, value)
                    failures += 1
                row.append(reward)
            out.append(row)
        if failures > 1:
            logger.warning("reward function %s: %d responses could not be labelled (NaN)", self.name, failures)
        return out


# --- a reward model ------------------------------------------------------------------------------------


class RewardModelLabeller(Labeller):
    """The scores of a reward model (a folder saved by ``preftune train-rm``), one batched call per round.

    ``model``: the folder (or a built-in or hub name), loaded now, or a loaded
    :class:`~preftune.reward.RewardModel`. ``batch_size`` and ``max_length`` go to ``RewardModel``.
    Prompts are passed as given (a message list is rendered by the model's chat template).
    """

    def __init__(
        self, model: str | os.PathLike[str] | RewardModel, batch_size: int = 16, max_length: int | None = None
    ) -> None:
        if isinstance(model, str | os.PathLike):
            from preftune.modeling.loading import resolve_model  # a missing folder: one line, before torch loads it
            from preftune.reward.scorer import RewardModel

            resolve_model(model)
            model = RewardModel(model, batch_size=batch_size, max_length=max_length)
        self.scorer = model

    def identity(self) -> str:
        folder = getattr(self.scorer, "folder", None)
        where = str(folder.resolve()) if folder is not None and folder.is_dir() else getattr(self.scorer, "name", "?")
        return f"rm:{where}:max_length={getattr(self.scorer, 'max_length', '?')}"

    def rewards(self, prompts: Sequence[Prompt], responses: Sequence[Sequence[str]]) -> list[list[float]]:
        _check_shapes(prompts, responses)
        flat_prompts = [prompt for prompt, group in zip(prompts, responses, strict=True) for _ in group]
        flat = [response for group in responses for response in group]
        scores = self.scorer.score(flat_prompts, flat) if flat else []
        if len(scores) != len(flat):
            raise RuntimeError(f"the reward model gave {len(scores)} scores for {len(flat)} responses")
        out, start = [], 0
        for group in responses:
            out.append([float(s) for s in scores[start : start + len(group)]])
            start += len(group)
        return out


# --- a judge with a ranking ----------------------------------------------------------------------------

RANKINGS: dict[str, Callable[[int, Callable[[int, int], Any]], Ranking]] = {
    "ipr": ipr_rank,
    "round_robin": round_robin_rank,
}


def _rewards_from_ranking(texts: Sequence[str], unique: Sequence[str], order: Sequence[int]) -> list[float]:
    """−place for each response: identical responses share the place of the first of them, and a place
    counts every response ranked above (with its copies): 0 the best, −(C−1) the worst when it is unique."""
    copies = {text: 0 for text in unique}
    for text in texts:
        copies[text] += 1
    place, above = {}, 0
    for index in order:
        place[unique[index]] = above
        above += copies[unique[index]]
    return [-float(place[text]) for text in texts]


class JudgeLabeller(Labeller):
    """A pairwise judge asked in both orders, each prompt's responses ranked, reward = −place.

    ``judge``: a :class:`~preftune.judging.base.PairwiseJudge` or a judge spec (``longer``,
    ``local:MODEL``, ``api:...``). ``method``: ``ipr`` (binary insertion, docs/methods.md §5) or
    ``round_robin``. ``store``: a :class:`~preftune.judging.store.VerdictStore`; verdicts are read
    from it first and written as they come, so a repeated or resumed labelling asks nothing twice.

    Identical responses are ranked once and share a reward (the place of the first of them); the
    reward of the others counts the copies above them, so 0 is the best and −(C−1) the worst
    unique response. A comparison that failed counts as "not better" (as ``preftune rank`` does);
    when every comparison of a prompt failed its rewards are NaN. Prompts are ranked
    ``judge.concurrency`` at a time. ``calls`` (ordered judge calls, store hits not counted),
    ``comparisons`` and ``failed`` add up over the labeller's life.
    """

    def __init__(self, judge: PairwiseJudge | str, method: str = "ipr", store: VerdictStore | None = None):
        if method not in RANKINGS:
            raise PreftuneError(f"unknown ranking method '{method}' (expected one of {', '.join(RANKINGS)})")
        if isinstance(judge, str):
            from preftune.judging.specs import make_judge

            judge = make_judge(judge)
        if not isinstance(judge, PairwiseJudge):
            raise PreftuneError(f"a judge labeller needs a PairwiseJudge or a judge spec, not {type(judge).__name__}")
        self.judge = judge
        self.method = method
        self.store = store
        # one ordered call at a time per prompt, each verdict stored as it comes (as preftune rank does)
        self.both = BothOrders(judge, store, batch_size=1)
        self.comparisons = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._last: list[_PromptCounts] | None = None  # the last rewards call's prompts, for diagnostics()

    @property
    def calls(self) -> int:
        """Ordered calls that reached the judge so far (the store answered the rest)."""
        return self.both.calls

    def identity(self) -> str:
        return f"judge:{self.method}:{self.both.identity}"

    def _rank_one(self, prompt: Prompt, group: Sequence[str]) -> tuple[list[float], _PromptCounts]:
        texts = list(group)
        unique = list(dict.fromkeys(texts))
        if len(unique) < 2:
            return [0.0] * len(texts), _PromptCounts()
        text = prompt_text(prompt)
        decided = 0

        def compare(i: int, j: int) -> Verdict:
            nonlocal decided
            verdict = self.both.compare(text, unique[i], unique[j])
            decided += verdict in (Verdict.A, Verdict.B)
            return verdict

        ranking = RANKINGS[self.method](len(unique), compare)
        with self._lock:
            self.comparisons += ranking.comparisons
            self.failed += ranking.failed
        counts = _PromptCounts(ranking.comparisons, decided, ranking.failed)
        if ranking.comparisons and ranking.failed == ranking.comparisons:
            logger.warning("judge %s failed every comparison of one prompt: its rewards are NaN", self.both.identity)
            return [math.nan] * len(texts), counts
        counts.length_tau = length_tau(ranking.order, [len(u) for u in unique])
        return _rewards_from_ranking(texts, unique, ranking.order), counts

    def rewards(self, prompts: Sequence[Prompt], responses: Sequence[Sequence[str]]) -> list[list[float]]:
        _check_shapes(prompts, responses)
        items = list(zip(prompts, responses, strict=True))
        workers = max(1, min(int(getattr(self.judge, "concurrency", 1)), len(items)))
        if workers == 1:
            ranked = [self._rank_one(prompt, group) for prompt, group in items]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                ranked = list(pool.map(lambda item: self._rank_one(*item), items))
        self._last = [counts for _, counts in ranked]
        return [rewards for rewards, _ in ranked]

    def diagnostics(self) -> dict[str, float]:
        """The last :meth:`rewards` call's ``judge_decided`` and ``judge_failed`` (fractions of its
        comparisons, each asked in both orders: decided = both orders name the same response) and
        ``judge_length_tau`` (:func:`length_tau`, the mean over prompts where it is defined); NaN
        where nothing was compared. Empty before the first call."""
        if self._last is None:
            return {}
        comparisons = sum(c.comparisons for c in self._last)
        taus = [c.length_tau for c in self._last if not math.isnan(c.length_tau)]
        share = (lambda k: k / comparisons) if comparisons else (lambda k: math.nan)
        return {
            "judge_decided": share(sum(c.decided for c in self._last)),
            "judge_failed": share(sum(c.failed for c in self._last)),
            "judge_length_tau": sum(taus) / len(taus) if taus else math.nan,
        }


@dataclass
class _PromptCounts:
    """One prompt's ranking: comparisons made, decided and failed, and :func:`length_tau` (NaN: undefined)."""

    comparisons: int = 0
    decided: int = 0
    failed: int = 0
    length_tau: float = math.nan


def length_tau(order: Sequence[int], lengths: Sequence[int]) -> float:
    """Kendall's τ between a ranking (``order``: item indices, best first) and the items' ``lengths``
    (longer first), over the pairs of different lengths: (concordant − discordant) / (concordant +
    discordant). +1: every longer item is ranked above every shorter one; −1: below; NaN when every
    length is the same.

    Where all lengths differ it is Kendall's τ-a of the two orders (:func:`~preftune.judging.ranking.kendall_tau`,
    Kendall, 1938); pairs of equal length are left out rather than counted against the ranking,
    since a ranking must order them somehow (Goodman & Kruskal's γ, 1954, for a ranking without ties).
    """
    place = {item: k for k, item in enumerate(order)}
    if sorted(place) != list(range(len(lengths))):
        raise ValueError(f"order {list(order)} is not a ranking of {len(lengths)} items")
    score = pairs = 0
    for i in range(len(lengths)):
        for j in range(i + 1, len(lengths)):
            if lengths[i] != lengths[j]:
                above = place[i] < place[j]  # i ranked above j
                score += 1 if above == (lengths[i] > lengths[j]) else -1
                pairs += 1
    return score / pairs if pairs else math.nan


# --- the missing-EOS penalty ---------------------------------------------------------------------------


def apply_missing_eos_penalty(
    rewards: list[list[float]], finished: Sequence[Sequence[bool]], penalty: float | None
) -> list[list[float]]:
    """Rewards with ``penalty`` subtracted from every response that did not finish (cut by the length limit).

    As TRL's ``missing_eos_penalty``. ``None``: the rewards unchanged. A new list; NaN stays NaN.
    """
    if penalty is None:
        return [list(row) for row in rewards]
    if isinstance(penalty, bool) or not isinstance(penalty, numbers.Real) or not math.isfinite(penalty) or penalty < 0:
        raise PreftuneError(f"missing_eos_penalty must be a finite number >= 0 (or None), not {penalty!r}")
    if len(rewards) != len(finished) or any(len(r) != len(f) for r, f in zip(rewards, finished, strict=False)):
        shape_r = [len(r) for r in rewards]
        shape_f = [len(f) for f in finished]
        raise ValueError(f"rewards {shape_r} and finished flags {shape_f} differ in shape")
    return [
        [float(r) if done else float(r) - float(penalty) for r, done in zip(row, flags, strict=True)]
        for row, flags in zip(rewards, finished, strict=True)
    ]


# --- by name -------------------------------------------------------------------------------------------


def make_labeller(spec: str, *, store: VerdictStore | None = None, **options: Any) -> Labeller:
    """A labeller from its name (see ``LABELLERS``); an unknown name is one :class:`PreftuneError`.

    ``store`` goes to a judge labeller (its verdict cache); ``options`` to the labeller's constructor
    (``batch_size``/``max_length`` for ``rm:``, ``name`` for a function).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise PreftuneError(f"labeller spec must be a non-empty string (expected {LABELLERS})")
    spec = spec.strip()
    if spec == "length":
        return FunctionLabeller(length, name="length", **options)
    if spec == "neg_length":
        return FunctionLabeller(neg_length, name="neg_length", **options)
    if spec.startswith("length_target:") or spec == "length_target":
        value = spec.partition(":")[2].strip()
        if not value.isdigit():
            raise PreftuneError(f"labeller '{spec}': give the target length in characters, e.g. length_target:200")
        target = int(value)
        return FunctionLabeller(_LengthTarget(target), name=f"length_target:{target}", **options)
    if spec.startswith("function:"):
        return FunctionLabeller(spec.removeprefix("function:"), **options)
    if spec.startswith("rm:"):
        path = spec.removeprefix("rm:")
        if not path:
            raise PreftuneError(f"labeller '{spec}': name the reward model's folder, e.g. rm:out/rm")
        return RewardModelLabeller(path, **options)
    for prefix, method in (("judge:", "ipr"), ("judge-rr:", "round_robin")):
        if spec.startswith(prefix):
            judge = spec.removeprefix(prefix)
            if not judge:
                raise PreftuneError(f"labeller '{spec}': name the judge, e.g. {prefix}longer")
            return JudgeLabeller(judge, method=method, store=store, **options)
    raise PreftuneError(f"unknown labeller '{spec}' (expected {LABELLERS})")
