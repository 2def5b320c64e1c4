"""Tokenisation: preference examples -> token ids with exact response boundaries.

Conversational examples go through the model's chat template (``tokenizer.apply_chat_template``):
the prompt is rendered with the generation prompt, then the prompt followed by each response;
the prompt tokens must be a prefix of the full tokens (a template that breaks this is refused,
where TRL would warn and cut at the common prefix). The response is the rest, up to and
including the last end-of-turn token: for ChatML (SmolLM2) the content tokens and
``<|im_end|>``, not the newline the template writes after it (TRL keeps that newline).

Text examples (TRL's standard format) are plain concatenations: the prompt tokenized with the
tokenizer's special tokens (a BOS if it adds one), each response tokenized without them and
followed by EOS (as TRL appends ``eos_token`` to plain-text responses).

Truncation to ``max_length`` (prompt + longer response): the prompt is first cut from the left
to ``max_prompt_length`` (when given), then responses are cut from the right to what remains.
A pair with no room left for a response is dropped and counted; if every pair is, that is an
error (``max_length 8 is shorter than every prompt (shortest: 23 tokens)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from preftune.data.examples import Origin, PreferenceExample, Text
from preftune.data.summary import DataSummary, pair_lengths
from preftune.data.validation import Tally, one_line
from preftune.errors import PreftuneError

# Added tokens that close a turn in common chat templates (the tokenizer's EOS always counts).
END_OF_TURN_TOKENS = (
    "<|im_end|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "<|end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "</s>",
)
NO_ROOM = "prompt leaves no room for a response within max_length"


@dataclass(frozen=True)
class TokenizedPair:
    """Token ids of one preference pair (plain lists; :func:`preftune.data.collate` makes tensors).

    Attributes:
        prompt_ids: ``[P]`` the prompt, chat template and generation prompt included.
        chosen_ids: ``[Rc]`` the chosen response, its closing end-of-turn/EOS token included.
        rejected_ids: ``[Rr]`` the rejected response, likewise.
        origin: the file and row of the example.
        rejected_prompt_ids: ``[P']`` the rejected response's own prompt (unpaired data only).
        prompt_truncated: whether a prompt of the pair was cut (from the left).
        responses_truncated: how many of its two responses were cut (from the right).
    """

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    origin: Origin
    rejected_prompt_ids: list[int] | None = None
    prompt_truncated: bool = False
    responses_truncated: int = 0

    @property
    def length(self) -> int:
        """Tokens of the longer row (prompt + response)."""
        rejected_prompt = self.prompt_ids if self.rejected_prompt_ids is None else self.rejected_prompt_ids
        return max(len(self.prompt_ids) + len(self.chosen_ids), len(rejected_prompt) + len(self.rejected_ids))

    num_responses = 2
    rewards = None

    def branch(self, k: int) -> tuple[list[int], list[int]]:
        """``(prompt ids, response ids)`` of response 0 (chosen) or 1 (rejected, after its own prompt if it has one)."""
        if k == 0:
            return self.prompt_ids, self.chosen_ids
        if k == 1:
            own = self.rejected_prompt_ids
            return (self.prompt_ids if own is None else own), self.rejected_ids
        raise IndexError(f"a pair has responses 0 and 1, not {k}")


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """Ids that close an assistant turn: EOS and the known end-of-turn tokens the tokenizer has added."""
    added = tokenizer.get_added_vocab()
    ids = {added[token] for token in END_OF_TURN_TOKENS if token in added}
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def _chat_ids(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=generation_prompt, return_dict=True
    )
    return list(out["input_ids"])


class _Encoder:
    """Turns prompts and responses of one tokenizer into ids (see the module docstring)."""

    def __init__(self, tokenizer: Any, conversational: bool) -> None:
        self.tokenizer = tokenizer
        if conversational and not getattr(tokenizer, "chat_template", None):
            raise PreftuneError("the tokenizer has no chat template, which conversational data needs")
        if not conversational and tokenizer.eos_token_id is None:
            raise PreftuneError("the tokenizer has no EOS token, which ends every plain-text response")
        self.end_of_turn = end_of_turn_ids(tokenizer)

    def prompt(self, prompt: Text) -> list[int]:
        if isinstance(prompt, list):
            return _chat_ids(self.tokenizer, prompt, generation_prompt=True)
        return list(self.tokenizer(prompt)["input_ids"])

    def response(self, prompt: Text, prompt_ids: list[int], response: Text, origin: Origin, which: str) -> list[int]:
        tok = self.tokenizer
        if not isinstance(response, list):
            ids = list(tok(response, add_special_tokens=False)["input_ids"])
            return ids if ids and ids[-1] == tok.eos_token_id else [*ids, int(tok.eos_token_id)]
        assert isinstance(prompt, list)
        full = _chat_ids(tok, prompt + response, generation_prompt=False)
        if full[: len(prompt_ids)] != prompt_ids:
            k = next((i for i, (a, b) in enumerate(zip(prompt_ids, full, strict=False)) if a != b), len(full))
            raise PreftuneError(
                one_line(
                    f"{origin}: the chat template does not render the prompt (with its generation prompt) as a "
                    f"prefix of the prompt followed by the {which} response: they differ at token {k} "
                    f"({tok.decode(prompt_ids[k : k + 4])!r} vs {tok.decode(full[k : k + 4])!r}); "
                    "use a template that renders the prompt the same way in both"
                )
            )
        rest = full[len(prompt_ids) :]
        ends = [i for i, token in enumerate(rest) if token in self.end_of_turn]
        return rest[: ends[-1] + 1] if ends else rest

    def pair(self, example: PreferenceExample) -> tuple[tuple[list[int], list[int]], tuple[list[int], list[int]]]:
        """((prompt, chosen), (rejected's prompt, rejected)) ids, before truncation."""
        prompt = self.prompt(example.prompt)
        chosen = self.response(example.prompt, prompt, example.chosen, example.origin, "chosen")
        rejected_text = example.prompt if example.rejected_prompt is None else example.rejected_prompt
        rejected_prompt = prompt if example.rejected_prompt is None else self.prompt(rejected_text)
        rejected = self.response(rejected_text, rejected_prompt, example.rejected, example.origin, "rejected")
        return (prompt, chosen), (rejected_prompt, rejected)


def _truncate(
    prompt: list[int], response: list[int], max_length: int | None, max_prompt_length: int | None, min_response: int
) -> tuple[list[int], list[int]] | str:
    """(prompt cut from the left, response cut from the right), or why the row cannot fit."""
    if max_prompt_length is not None and len(prompt) > max_prompt_length:
        prompt = prompt[len(prompt) - max_prompt_length :]
    if max_length is None or len(prompt) + len(response) <= max_length:
        return prompt, response
    room = max_length - len(prompt)
    if room <= 0:
        return NO_ROOM
    if room < min_response:
        return f"response would be cut below min_response_tokens ({min_response})"
    return prompt, response[:room]


def _check_lengths(max_length: int | None, max_prompt_length: int | None, min_response: int) -> None:
    if max_length is not None and max_length < 2:
        raise PreftuneError(f"max_length must be at least 2, not {max_length}")
    if min_response < 1:
        raise PreftuneError(f"min_response_tokens must be at least 1, not {min_response}")
    if max_prompt_length is not None:
        if max_prompt_length < 1:
            raise PreftuneError(f"max_prompt_length must be at least 1, not {max_prompt_length}")
        if max_length is not None and max_prompt_length >= max_length:
            raise PreftuneError(
                f"max_prompt_length {max_prompt_length} leaves no room for responses within max_length {max_length}"
            )


def _no_pair_fits(max_length: int | None, shortest_prompt: int, tally: Tally) -> PreftuneError:
    if max_length is not None and shortest_prompt > max_length:
        return PreftuneError(
            f"max_length {max_length} is shorter than every prompt (shortest: {shortest_prompt} tokens)"
        )
    if set(tally.counts) == {NO_ROOM}:
        return PreftuneError(
            f"max_length {max_length} leaves no room for a response after any prompt (shortest: {shortest_prompt})"
        )
    reasons = "; ".join(f"{reason} x{n}" for reason, n in tally.as_dict().items())
    return PreftuneError(f"no pair fits within max_length {max_length} ({reasons})")


def _summary(examples: list[PreferenceExample], pairs: list[TokenizedPair], tally: Tally) -> DataSummary:
    """What tokenising ``examples`` into ``pairs`` did (drops, truncations, lengths)."""
    source = examples[0].origin.source if len({e.origin.source for e in examples}) == 1 else "examples"
    truncated_prompts = sum(p.prompt_truncated for p in pairs)
    truncated_responses = sum(p.responses_truncated for p in pairs)
    return DataSummary(
        source, "tokenized", len(examples), len(pairs), tally.as_dict(), truncated_prompts, truncated_responses,
        pair_lengths(pairs),
    )  # fmt: skip


def tokenize_examples(
    examples: list[PreferenceExample],
    tokenizer: Any,
    max_length: int | None,
    max_prompt_length: int | None = None,
    *,
    min_response_tokens: int = 1,
    summary: DataSummary | None = None,
) -> tuple[list[TokenizedPair], DataSummary]:
    """Tokenize and truncate examples (see the module docstring).

    Args:
        examples: validated examples, all text or all conversational.
        tokenizer: a Hugging Face tokenizer (with a chat template for conversational data).
        max_length: the most tokens of prompt + longer response; None for no limit.
        max_prompt_length: the most prompt tokens (cut from the left); None for no separate limit.
        min_response_tokens: a pair whose response truncation would leave fewer tokens is dropped
            (1: only responses cut to nothing; a response already that short is kept).
        summary: the loading summary to continue (rows read, drops), if any.

    Returns:
        The pairs, in example order (dropped ones left out), and a :class:`DataSummary`.
    """
    _check_lengths(max_length, max_prompt_length, min_response_tokens)
    if not examples:
        raise PreftuneError("no examples to tokenize")
    kinds = {example.is_conversational for example in examples}
    if len(kinds) > 1:
        raise PreftuneError("the examples mix text and conversational data; tokenize one kind at a time")
    encoder = _Encoder(tokenizer, kinds.pop())
    pairs: list[TokenizedPair] = []
    tally, shortest_prompt = Tally(), None
    for example in examples:
        (prompt, chosen), (rejected_prompt, rejected) = encoder.pair(example)
        shortest = min(len(prompt), len(rejected_prompt))
        shortest_prompt = shortest if shortest_prompt is None else min(shortest_prompt, shortest)
        rows = [
            _truncate(p, r, max_length, max_prompt_length, min_response_tokens)
            for p, r in ((prompt, chosen), (rejected_prompt, rejected))
        ]
        reason = next((row for row in rows if isinstance(row, str)), None)
        if reason is not None:
            tally.add(reason)
            continue
        (p, c), (rp, r) = rows
        own_prompt = None if example.rejected_prompt is None else rp
        cut_prompt = len(p) < len(prompt) or len(rp) < len(rejected_prompt)
        cut_responses = (len(c) < len(chosen)) + (len(r) < len(rejected))
        pairs.append(TokenizedPair(p, c, r, example.origin, own_prompt, cut_prompt, cut_responses))
    if not pairs:
        raise _no_pair_fits(max_length, shortest_prompt or 0, tally)
    result = _summary(examples, pairs, tally)
    return pairs, (summary.followed_by(result) if summary is not None else result)
