"""A judge from a local causal LM: one forward pass per ordered pair, the verdict read from the
log-probabilities of the answers "1" and "2" (docs/methods.md §5). No sampling, so it is deterministic.

    >>> judge = LocalJudge("smollm2-135m-instruct")
    >>> judge.judge(["What is 2+2?"], [("4", "5")])
    [0]

The prompt is a template (:mod:`preftune.judging.prompting`: a shipped name or a file, each
response enclosed in tags it cannot close), filled as one user message and rendered through the
model's chat template with the generation prompt.

The answer "1" or "2" (or the two answers the template declares) is the token the tokenizer gives
each alone (``add_special_tokens=False``), which is what follows the generation prompt; each must
be a single token, or the judge refuses to be built. The verdict compares log p("1") with
log p("2") at the last prompt position: FIRST when "1" is likelier, SECOND when "2" is, FIRST on an
exact tie (asked in both orders, a tie), FAILED when either is NaN or both are −inf. The tokenizer
is loaded at construction (to check the answer tokens); the model on the first
:meth:`LocalJudge.judge` call, in eval mode.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from preftune.errors import PreftuneError
from preftune.judging.base import FAILED, FIRST, SECOND, PairwiseJudge
from preftune.judging.prompting import DEFAULT_ANSWERS, fill_template, load_template

ANSWERS = DEFAULT_ANSWERS

logger = logging.getLogger(__name__)


def answer_token_ids(tokenizer: Any, answers: Sequence[str] = ANSWERS) -> tuple[int, int]:
    """The ids of the two answers as the tokenizer encodes each alone; each one token, the two distinct."""
    ids = []
    for answer in answers:
        encoded = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
        if len(encoded) != 1:
            raise PreftuneError(
                f"the judge's tokenizer encodes the answer {answer!r} as {len(encoded)} tokens {encoded}, not one"
            )
        ids.append(int(encoded[0]))
    if ids[0] == ids[1]:
        raise PreftuneError(f"the judge's tokenizer encodes {answers[0]!r} and {answers[1]!r} as one token {ids[0]}")
    return ids[0], ids[1]


def verdict(logprob_1: float, logprob_2: float) -> int:
    """FIRST or SECOND from the answers' log-probs; FAILED when either is NaN or both are −inf."""
    if math.isnan(logprob_1) or math.isnan(logprob_2) or (logprob_1 == logprob_2 == -math.inf):
        return FAILED
    return SECOND if logprob_2 > logprob_1 else FIRST


class LocalJudge(PairwiseJudge):
    """Judges with a local causal LM by the log-probs of the answers "1" and "2" (see the module docstring).

    Args:
        model_name: anything :func:`preftune.modeling.load_model` takes (a built-in name, a folder,
            a hub name).
        template: a shipped template name or the path of a template file.
        batch_size: ordered pairs per forward pass (the items are sorted by length first, so
            little padding is computed).
        device: where the model runs (default: CUDA when available, else CPU).
        debias: answer an ordered call (a, b) by the margin m = log p("1") − log p("2") of both
            orders: "1" when m(a, b) > m(b, a). A small model that says "1" whatever it reads still
            says it more or less firmly, and the difference of the two margins cancels the position
            bias; the answers for (a, b) and (b, a) are then always consistent, so a tie needs equal
            margins. Each ordered call then costs two forwards (each remembered for the other order).
    """

    def __init__(
        self,
        model_name: str,
        template: str | Path = "pairwise",
        batch_size: int = 8,
        device: torch.device | str | None = None,
        debias: bool = False,
    ):
        if batch_size < 1:
            raise PreftuneError(f"the judge's batch_size must be at least 1, not {batch_size}")
        from preftune.modeling import load_tokenizer

        self.model_name = str(model_name)
        loaded = load_template(template)
        if loaded.format != "short":  # this judge reads the first token's log-probs: nothing to reason in
            raise PreftuneError(
                f"a local judge reads the answer token's log-probabilities, so its template must ask "
                f"for a short answer; '{template}' asks for the {loaded.format} format"
            )
        self.template_text = loaded.text
        self.template_sha256 = hashlib.sha256(self.template_text.encode("utf-8")).hexdigest()
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else _default_device()
        self.tokenizer = load_tokenizer(self.model_name)
        if not getattr(self.tokenizer, "chat_template", None):
            raise PreftuneError(f"the judge model '{model_name}' has no chat template (an instruct model is needed)")
        self.answer_ids = answer_token_ids(self.tokenizer, loaded.answers)
        self.debias = debias
        self._model: Any = None
        self._margins: dict[tuple[str, str, str], float] = {}  # (prompt, first, second) -> m, for debias

    def identity(self) -> str:
        return f"local:{self.model_name}:{self.template_sha256[:12]}" + (":debiased" if self.debias else "")

    @property
    def model(self) -> Any:
        """The judge model, loaded on first use, in eval mode."""
        if self._model is None:
            from preftune.modeling import load_model

            self._model = load_model(self.model_name, device=self.device).eval()
        return self._model

    def render(self, prompt: str, first: str, second: str) -> str:
        """The user message asking for ``(prompt, first, second)``: the filled template."""
        return fill_template(self.template_text, prompt, first, second)

    def input_ids(self, prompt: str, first: str, second: str) -> list[int]:
        """The ids the model reads: the user message through the chat template, with the generation prompt."""
        messages = [{"role": "user", "content": self.render(prompt, first, second)}]
        out = self.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)
        return list(out["input_ids"])

    def answer_logprobs(self, prompts: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[tuple[float, float]]:
        """``(log p("1"), log p("2"))`` at the end of each rendered item; NaN for one that failed to render."""
        if len(prompts) != len(pairs):
            raise ValueError(f"{len(prompts)} prompts but {len(pairs)} pairs")
        encoded: list[list[int] | None] = []
        for prompt, (first, second) in zip(prompts, pairs, strict=True):
            try:
                encoded.append(self.input_ids(prompt, first, second))
            except Exception as error:  # one bad item (a non-string, a template error) fails alone
                logger.warning("local judge could not render an item: %s", error)
                encoded.append(None)
        results = [(math.nan, math.nan)] * len(encoded)
        order = sorted((i for i, ids in enumerate(encoded) if ids), key=lambda i: len(encoded[i] or ()))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            scores = self._score([encoded[i] or [] for i in chunk])
            for i, score in zip(chunk, scores, strict=True):
                results[i] = score
        return results

    def judge(self, prompts: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[int]:
        if not self.debias:
            return [verdict(lp1, lp2) for lp1, lp2 in self.answer_logprobs(prompts, pairs)]
        return self._debiased(prompts, pairs)

    def _debiased(self, prompts: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[int]:
        """FIRST when m(a, b) > m(b, a) (ties answer FIRST, so both orders make them a TIE)."""
        wanted = [(p, a, b) for p, (a, b) in zip(prompts, pairs, strict=True)]
        wanted += [(p, b, a) for p, a, b in wanted]
        todo = list(dict.fromkeys(k for k in wanted if k not in self._margins))
        if len(self._margins) > 4096:  # remembered only for the other order of recent calls
            self._margins.clear()
        scored = self.answer_logprobs([k[0] for k in todo], [(k[1], k[2]) for k in todo]) if todo else []
        for key, (lp1, lp2) in zip(todo, scored, strict=True):
            self._margins[key] = lp1 - lp2
        out = []
        for p, (a, b) in zip(prompts, pairs, strict=True):
            forward, backward = self._margins[(p, a, b)], self._margins[(p, b, a)]
            difference = forward - backward
            out.append(FAILED if difference != difference else (SECOND if difference < 0 else FIRST))
        return out

    @torch.no_grad()
    def _score(self, rows: list[list[int]]) -> list[tuple[float, float]]:
        """One right-padded forward; the answers' log-probs at each row's last real position."""
        model = self.model
        device = next(model.parameters()).device
        lengths = torch.tensor([len(row) for row in rows], device=device)
        width = int(lengths.max())
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), width), int(pad), dtype=torch.long, device=device)
        for r, row in enumerate(rows):
            input_ids[r, : len(row)] = torch.tensor(row, dtype=torch.long, device=device)
        attention_mask = (torch.arange(width, device=device)[None, :] < lengths[:, None]).long()
        positions = lengths - 1
        keep = torch.unique(positions)  # sorted; only these positions go through the LM head
        try:
            logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep).logits
            columns = torch.searchsorted(keep, positions)
        except TypeError:  # a model whose forward has no logits_to_keep: all positions
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
            columns = positions
        last = logits[torch.arange(len(rows), device=device), columns].float()
        logprobs = torch.log_softmax(last, dim=-1)[:, list(self.answer_ids)].cpu().tolist()
        return [(float(a), float(b)) for a, b in logprobs]


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
