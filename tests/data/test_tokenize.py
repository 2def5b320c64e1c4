"""Tokenisation against hand-built token lists, truncation, and the real SmolLM2 tokenizer."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from preftune.data import (
    DataSummary,
    Origin,
    PreferenceExample,
    bundled_path,
    load_preference_data,
    tokenize_examples,
)
from preftune.errors import PreftuneError

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def chat(prompt: list, chosen: list, rejected: list, row: int = 1) -> PreferenceExample:
    return PreferenceExample(prompt, chosen, rejected, Origin("t.jsonl", row))


class Pieces:
    """Expected ids built by tokenizing the template's pieces one at a time."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        self.start = tok.convert_tokens_to_ids("<|im_start|>")
        self.end = tok.convert_tokens_to_ids("<|im_end|>")
        self.nl = self.ids("\n")

    def ids(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def turn(self, role: str, content: str) -> list[int]:
        return [self.start, *self.ids(f"{role}\n{content}"), self.end, *self.nl]

    def generation_prompt(self) -> list[int]:
        return [self.start, *self.ids("assistant\n")]


def check_chatml(tok: Any) -> None:
    p = Pieces(tok)
    example = chat([user("What color is the sky?")], [assistant("It is blue.")], [assistant("It is green.")])
    (pair,), summary = tokenize_examples([example], tok, max_length=None)
    expected_prompt = p.turn("system", SYSTEM) + p.turn("user", "What color is the sky?") + p.generation_prompt()
    assert pair.prompt_ids == expected_prompt
    # the response: content tokens and <|im_end|>, not the newline the template writes after it
    assert pair.chosen_ids == [*p.ids("It is blue."), p.end]
    assert pair.rejected_ids == [*p.ids("It is green."), p.end]
    assert tok.decode(pair.chosen_ids) == "It is blue.<|im_end|>"
    full = list(tok.apply_chat_template(example.prompt + example.chosen, tokenize=True, return_dict=True)["input_ids"])
    assert full == pair.prompt_ids + pair.chosen_ids + p.nl  # what TRL calls the completion keeps that "\n"
    assert summary.kept == 1 and summary.lengths["chosen"].max == len(pair.chosen_ids)


def test_chatml_response_mask_covers_content_and_im_end(chatml_tokenizer: Any) -> None:
    check_chatml(chatml_tokenizer)


def test_real_smollm2_tokenizer(smollm2_tokenizer: Any) -> None:
    tok = smollm2_tokenizer
    assert (tok.convert_tokens_to_ids("<|im_start|>"), tok.convert_tokens_to_ids("<|im_end|>")) == (1, 2)
    check_chatml(tok)
    example = chat([user("Hi there")], [assistant("Hello!")], [assistant("Go away.")])
    (pair,), _ = tokenize_examples([example], tok, max_length=None)
    assert pair.chosen_ids == [19556, 17, 2]  # "Hello", "!", "<|im_end|>"
    assert pair.prompt_ids[-4:] == [1, 520, 9531, 198]  # "<|im_start|>", "ass", "istant", "\n"


def test_real_smollm2_on_bundled_hh(smollm2_tokenizer: Any) -> None:
    tok = smollm2_tokenizer
    examples, summary = load_preference_data(bundled_path("hh-harmless"))
    pairs, summary = tokenize_examples(examples[:150], tok, max_length=2048, summary=summary)
    assert summary.rows_read == 1200 and summary.kept == 150 and summary.truncated_responses == 0
    p = Pieces(tok)
    for example, pair in zip(examples[:150], pairs, strict=True):
        assert pair.chosen_ids == [*p.ids(example.chosen[0]["content"]), p.end]
        assert pair.rejected_ids == [*p.ids(example.rejected[0]["content"]), p.end]
        assert pair.prompt_ids[: len(p.turn("system", SYSTEM))] == p.turn("system", SYSTEM)
        assert pair.prompt_ids[-3:] == p.generation_prompt()[-3:]


def test_system_prompt_and_multi_turn_response(chatml_tokenizer: Any) -> None:
    p = Pieces(chatml_tokenizer)
    prompt = [{"role": "system", "content": "Be brief."}, user("Hi")]
    chosen = [assistant("Hello!"), user("Sky?"), assistant("Blue.")]
    (pair,), _ = tokenize_examples([chat(prompt, chosen, [assistant("No.")])], chatml_tokenizer, max_length=None)
    assert pair.prompt_ids == p.turn("system", "Be brief.") + p.turn("user", "Hi") + p.generation_prompt()
    assert pair.chosen_ids == [
        *p.ids("Hello!"),
        p.end,
        *p.nl,
        *p.turn("user", "Sky?"),
        p.start,
        *p.ids("assistant\nBlue."),
        p.end,
    ]


def test_text_examples_are_concatenated_with_eos(chatml_tokenizer: Any) -> None:
    p = Pieces(chatml_tokenizer)
    examples = [
        PreferenceExample("The sky is", " blue.", " green.", Origin("t", 1)),
        PreferenceExample("Say hi:", " Hello!<|im_end|>", " No.", Origin("t", 2)),  # EOS already there: not doubled
    ]
    pairs, _ = tokenize_examples(examples, chatml_tokenizer, max_length=None)
    assert pairs[0].prompt_ids == p.ids("The sky is")
    assert pairs[0].chosen_ids == [*p.ids(" blue."), p.end]
    assert pairs[0].rejected_ids == [*p.ids(" green."), p.end]
    assert pairs[1].chosen_ids == [*p.ids(" Hello!"), p.end]


def text_example(prompt_words: int, response_words: int, row: int = 1) -> PreferenceExample:
    prompt = " ".join(f"p{i}" for i in range(prompt_words))
    return PreferenceExample(
        prompt, " " + " ".join(["yes"] * response_words), " " + " ".join(["no"] * response_words), Origin("t", row)
    )


def test_truncation_cuts_the_prompt_from_the_left_then_responses_from_the_right(chatml_tokenizer: Any) -> None:
    example = text_example(10, 6)
    (full,), _ = tokenize_examples([example], chatml_tokenizer, max_length=None)
    n_prompt, n_resp = len(full.prompt_ids), len(full.chosen_ids)
    assert n_prompt > 8 and n_resp > 5
    (pair,), summary = tokenize_examples([example], chatml_tokenizer, max_length=8 + 3, max_prompt_length=8)
    assert pair.prompt_ids == full.prompt_ids[-8:]  # the end of the prompt is kept
    assert pair.chosen_ids == full.chosen_ids[:3] and pair.rejected_ids == full.rejected_ids[:3]
    assert (summary.truncated_prompts, summary.truncated_responses) == (1, 2)
    # without max_prompt_length the prompt is kept whole and only responses are cut
    (pair,), summary = tokenize_examples([example], chatml_tokenizer, max_length=n_prompt + 2)
    assert pair.prompt_ids == full.prompt_ids and pair.chosen_ids == full.chosen_ids[:2]
    assert (summary.truncated_prompts, summary.truncated_responses) == (0, 2)
    # a pair that fits is untouched
    (pair,), summary = tokenize_examples([example], chatml_tokenizer, max_length=n_prompt + n_resp)
    assert pair == full and summary.truncated_responses == 0


def test_a_pair_whose_response_would_be_empty_is_dropped(chatml_tokenizer: Any) -> None:
    short, long = text_example(2, 3, row=1), text_example(20, 3, row=2)
    (s,), _ = tokenize_examples([short], chatml_tokenizer, max_length=None)
    (l_,), _ = tokenize_examples([long], chatml_tokenizer, max_length=None)
    limit = len(l_.prompt_ids)  # no room left after the long prompt
    pairs, summary = tokenize_examples([short, long], chatml_tokenizer, max_length=limit)
    assert [p.origin.row for p in pairs] == [1] and summary.kept == 1
    assert summary.dropped == {"prompt leaves no room for a response within max_length": 1}
    # min_response_tokens: a response cut to fewer tokens than asked drops the pair too
    pairs, summary = tokenize_examples([short, long], chatml_tokenizer, max_length=limit + 1, min_response_tokens=2)
    assert [p.origin.row for p in pairs] == [1]
    assert summary.dropped == {"response would be cut below min_response_tokens (2)": 1}
    assert len(s.prompt_ids) + len(s.chosen_ids) <= limit


def test_max_length_shorter_than_every_prompt(chatml_tokenizer: Any) -> None:
    examples = [text_example(30, 2, row=1), text_example(40, 2, row=2)]
    (first, _), _ = tokenize_examples(examples, chatml_tokenizer, max_length=None)
    shortest = len(first.prompt_ids)
    with pytest.raises(PreftuneError) as excinfo:
        tokenize_examples(examples, chatml_tokenizer, max_length=8)
    assert str(excinfo.value) == f"max_length 8 is shorter than every prompt (shortest: {shortest} tokens)"
    with pytest.raises(PreftuneError, match="leaves no room for a response after any prompt"):
        tokenize_examples(examples, chatml_tokenizer, max_length=shortest)
    with pytest.raises(PreftuneError, match="max_prompt_length 8 leaves no room for responses within max_length 8"):
        tokenize_examples(examples, chatml_tokenizer, max_length=8, max_prompt_length=8)


def test_a_template_that_renders_the_prompt_differently_is_refused(chatml_tokenizer: Any) -> None:
    tok = copy.deepcopy(chatml_tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\nthink\\n' }}{% endif %}"
    )
    example = chat([user("Hi")], [assistant("Hello!")], [assistant("No.")], row=4)
    with pytest.raises(PreftuneError) as excinfo:
        tokenize_examples([example], tok, max_length=None)
    message = str(excinfo.value)
    assert message.startswith(
        "t.jsonl row 4: the chat template does not render the prompt (with its generation prompt) as a prefix of "
        "the prompt followed by the chosen response"
    )
    assert "\n" not in message


def test_conversational_data_needs_a_chat_template(chatml_tokenizer: Any) -> None:
    tok = copy.deepcopy(chatml_tokenizer)
    tok.chat_template = None
    with pytest.raises(PreftuneError, match="no chat template"):
        tokenize_examples([chat([user("Hi")], [assistant("a")], [assistant("b")])], tok, max_length=None)
    mixed = [chat([user("Hi")], [assistant("a")], [assistant("b")]), text_example(2, 2)]
    with pytest.raises(PreftuneError, match="mix text and conversational"):
        tokenize_examples(mixed, chatml_tokenizer, max_length=None)


def test_summary_prints_and_saves(chatml_tokenizer: Any, tmp_path) -> None:
    examples = [text_example(10, 6, row=1), text_example(3, 2, row=2), text_example(40, 2, row=3)]
    full, _ = tokenize_examples(examples, chatml_tokenizer, max_length=None)
    assert [len(p.prompt_ids) > 20 for p in full] == [True, False, True]
    loaded = DataSummary("t", "standard", rows_read=4, kept=3, dropped={"chosen: empty string": 1})
    pairs, summary = tokenize_examples(examples, chatml_tokenizer, max_length=30, max_prompt_length=20, summary=loaded)
    assert (summary.rows_read, summary.kept, summary.source, summary.format) == (4, 3, "t", "standard")
    assert summary.dropped == {"chosen: empty string": 1}
    assert summary.truncated_prompts == 2
    assert summary.lengths["pair"].max == max(p.length for p in pairs) <= 30
    text = str(summary)
    assert text.splitlines()[0] == "t (standard): 4 rows read, 3 pairs kept, 1 dropped"
    assert "truncated: 2 prompts (from the left)" in text and "tokens min/mean/median/max: prompt" in text
    summary.save(tmp_path / "s.json")
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["lengths"]["prompt"]["max"] == 20 and saved["kept"] == 3 and saved == summary.to_dict()
