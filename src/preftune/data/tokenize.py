"""Tokenisation: preference pairs and groups -> :class:`~preftune.data.groups.TokenizedGroup`\\ s.

One path for both: a pair is a group of two responses, (chosen, rejected); a group of ranked
completions (:class:`~preftune.data.groups.GroupExample`) has C, with their rewards.

Conversational examples go through the model's chat template (``tokenizer.apply_chat_template``):
the prompt is rendered with the generation prompt, then the prompt followed by each response;
the prompt tokens must be a prefix of the full tokens (a template that breaks this is refused,
where TRL would warn and cut at the common prefix). The response is the rest, up to and
including the last end-of-turn token: for ChatML (SmolLM2) the content tokens and
``<|im_end|>``, not the newline the template writes after it (TRL keeps that newline).

Text examples (TRL's standard format) are plain concatenations: the prompt tokenized with the
tokenizer's special tokens (a BOS if it adds one), each response tokenized without them and
followed by EOS (as TRL appends ``eos_token`` to plain-text responses).

Truncation to ``max_length`` (prompt + longest response): the prompt is first cut from the left
to ``max_prompt_length`` (when given), then responses are cut from the right to what remains.
A pair (or group) with no room left for a response is dropped whole and counted; if every one
is, that is an error (``max_length 8 is shorter than every prompt (shortest: 23 tokens)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from preftune.data.examples import Origin, PreferenceExample, Text
from preftune.data.groups import TokenizedGroup
from preftune.data.groups import TokenizedPair as TokenizedPair  # re-exported: the pair constructor's old home
from preftune.data.summary import DataSummary, group_lengths, pair_lengths, sizes_note
from preftune.data.validation import Tally, one_line
from preftune.errors import PreftuneError

if TYPE_CHECKING:
    from preftune.data.groups import GroupExample

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


Branch = tuple[Text | None, Text, str]
"""A response to tokenise: (its own prompt, or None: the example's; the response; its name in errors)."""


def _branches(example: PreferenceExample | GroupExample) -> tuple[list[Branch], tuple[float, ...] | None]:
    """The responses of a pair (chosen, then rejected after its own prompt if it has one) or of a
    group (its completions), and the group's rewards (a pair has none)."""
    if isinstance(example, PreferenceExample):
        return [(None, example.chosen, "chosen"), (example.rejected_prompt, example.rejected, "rejected")], None
    return [(None, completion, f"#{k}") for k, completion in enumerate(example.completions)], example.rewards


def _cut_prompt(prompt: list[int], max_prompt_length: int | None) -> list[int]:
    """The prompt cut from the left to ``max_prompt_length``."""
    if max_prompt_length is not None and len(prompt) > max_prompt_length:
        return prompt[len(prompt) - max_prompt_length :]
    return prompt


def _cut_response(prompt: list[int], response: list[int], max_length: int | None, min_response: int) -> list[int] | str:
    """The response cut from the right to what ``max_length`` leaves after ``prompt``, or why it cannot fit."""
    if max_length is None or len(prompt) + len(response) <= max_length:
        return response
    room = max_length - len(prompt)
    if room <= 0:
        return NO_ROOM
    if room < min_response:
        return f"response would be cut below min_response_tokens ({min_response})"
    return response[:room]


def _tokenize_one(
    encoder: _Encoder,
    example: PreferenceExample | GroupExample,
    max_length: int | None,
    max_prompt_length: int | None,
    min_response: int,
) -> tuple[TokenizedGroup | str, int]:
    """(the example's ids, or why it cannot fit; its shortest prompt before truncation)."""
    branches, rewards = _branches(example)
    prompt = encoder.prompt(example.prompt)
    rows: list[tuple[list[int] | None, list[int]]] = []  # (the response's own prompt or None, the response)
    for own_text, text, which in branches:
        own = None if own_text is None else encoder.prompt(own_text)
        row_text, row_prompt = (example.prompt, prompt) if own is None else (own_text, own)
        rows.append((own, encoder.response(row_text, row_prompt, text, example.origin, which)))  # type: ignore[arg-type]
    shortest = min(len(ids) for ids in [prompt, *(own for own, _ in rows if own is not None)])
    cut = _cut_prompt(prompt, max_prompt_length)
    own_cut = [None if own is None else _cut_prompt(own, max_prompt_length) for own, _ in rows]
    responses: list[list[int]] = []
    for row_prompt, (_, response) in zip(own_cut, rows, strict=True):
        kept = _cut_response(cut if row_prompt is None else row_prompt, response, max_length, min_response)
        if isinstance(kept, str):
            return kept, shortest
        responses.append(kept)
    prompts = [(cut, prompt)] + [(c, own) for c, (own, _) in zip(own_cut, rows, strict=True) if own is not None]
    cut_prompt = any(len(c) < len(whole) for c, whole in prompts)  # type: ignore[arg-type]
    cut_responses = sum(len(r) < len(whole) for r, (_, whole) in zip(responses, rows, strict=True))
    own_prompts = tuple(own_cut) if any(c is not None for c in own_cut) else None
    item = TokenizedGroup(cut, tuple(responses), rewards, example.origin, None, cut_prompt, cut_responses, own_prompts)
    return item, shortest


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


def _summary(
    examples: Sequence[PreferenceExample | GroupExample], items: list[TokenizedGroup], tally: Tally, noun: str
) -> DataSummary:
    """What tokenising ``examples`` into ``items`` did (drops, truncations, lengths: by part for pairs,
    :func:`~preftune.data.summary.group_lengths` and the sizes for groups)."""
    source = examples[0].origin.source if len({e.origin.source for e in examples}) == 1 else noun
    pairs = isinstance(examples[0], PreferenceExample)
    lengths = pair_lengths(items) if pairs else group_lengths(items)
    notes = () if pairs else (sizes_note("tokenized", [g.num_responses for g in items]),)
    return DataSummary(
        source,
        "tokenized",
        len(examples),
        len(items),
        tally.as_dict(),
        sum(g.prompt_truncated for g in items),
        sum(g.responses_truncated for g in items),
        lengths,
        notes=notes,
    )


def _tokenize(
    examples: Sequence[PreferenceExample | GroupExample],
    tokenizer: Any,
    max_length: int | None,
    max_prompt_length: int | None,
    min_response_tokens: int,
    summary: DataSummary | None,
    noun: str,
) -> tuple[list[TokenizedGroup], DataSummary]:
    """The one tokenise path of :func:`tokenize_examples` and :func:`tokenize_groups` (``noun`` names
    the examples in errors)."""
    _check_lengths(max_length, max_prompt_length, min_response_tokens)
    if not examples:
        raise PreftuneError(f"no {noun} to tokenize")
    kinds = {example.is_conversational for example in examples}
    if len(kinds) > 1:
        raise PreftuneError(f"the {noun} mix text and conversational data; tokenize one kind at a time")
    encoder = _Encoder(tokenizer, kinds.pop())
    items: list[TokenizedGroup] = []
    tally, shortest_prompt = Tally(), None
    for example in examples:
        item, shortest = _tokenize_one(encoder, example, max_length, max_prompt_length, min_response_tokens)
        shortest_prompt = shortest if shortest_prompt is None else min(shortest_prompt, shortest)
        if isinstance(item, str):
            tally.add(item)
        else:
            items.append(item)
    if not items:
        raise _no_pair_fits(max_length, shortest_prompt or 0, tally)
    result = _summary(examples, items, tally, noun)
    return items, (summary.followed_by(result) if summary is not None else result)


def tokenize_examples(
    examples: Sequence[PreferenceExample],
    tokenizer: Any,
    max_length: int | None,
    max_prompt_length: int | None = None,
    *,
    min_response_tokens: int = 1,
    summary: DataSummary | None = None,
) -> tuple[list[TokenizedGroup], DataSummary]:
    """Tokenize and truncate preference pairs (see the module docstring).

    Args:
        examples: validated examples, all text or all conversational.
        tokenizer: a Hugging Face tokenizer (with a chat template for conversational data).
        max_length: the most tokens of prompt + longer response; None for no limit.
        max_prompt_length: the most prompt tokens (cut from the left); None for no separate limit.
        min_response_tokens: a pair whose response truncation would leave fewer tokens is dropped
            (1: only responses cut to nothing; a response already that short is kept).
        summary: the loading summary to continue (rows read, drops), if any.

    Returns:
        The pairs, groups of two (chosen, rejected) without rewards, in example order (dropped
        ones left out), and a :class:`DataSummary` (lengths of ``prompt``, ``chosen``,
        ``rejected`` and ``pair``).
    """
    return _tokenize(examples, tokenizer, max_length, max_prompt_length, min_response_tokens, summary, "examples")


def tokenize_groups(
    groups: Sequence[GroupExample],
    tokenizer: Any,
    max_length: int | None,
    max_prompt_length: int | None = None,
    *,
    min_response_tokens: int = 1,
    summary: DataSummary | None = None,
) -> tuple[list[TokenizedGroup], DataSummary]:
    """Tokenize and truncate groups of ranked completions: :func:`tokenize_examples`' path, C responses
    each with their rewards (a response named ``#k`` in errors).

    A group with a response that has no room (or would be cut below ``min_response_tokens``) is
    dropped whole and counted.

    Returns:
        The groups, in order (dropped ones left out), and a :class:`DataSummary` (continuing
        ``summary``) whose ``kept`` counts groups, ``truncated_responses`` responses, whose lengths
        are :func:`~preftune.data.summary.group_lengths` and whose last note gives the sizes.
    """
    return _tokenize(groups, tokenizer, max_length, max_prompt_length, min_response_tokens, summary, "groups")
