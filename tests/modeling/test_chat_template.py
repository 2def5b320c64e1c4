"""Chat templates for tokenizers without one: built-ins, Jinja files, one-line errors, and response masks
that cover exactly the response and its end-of-turn token when tokenised for training."""

from __future__ import annotations

from pathlib import Path

import pytest

from preftune.data import tokenize_examples
from preftune.errors import PreftuneError
from preftune.modeling import CHAT_TEMPLATES, apply_chat_template_setting, check_chat_template, load_tokenizer
from preftune.modeling.chat_template import built_in_template

from .batches import chat_examples

CHATML_PROMPT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
EXAMPLES = [
    ("Name a colour.", "Blue.", "I will not."),
    ("What is 2+2?", "It is 4, of course.", "Five!"),
]


@pytest.fixture
def bare_tokenizer(tiny_path: Path):
    """The tiny model's (SmolLM2's) tokenizer with its chat template removed, as a base model's would be."""
    tokenizer = load_tokenizer(tiny_path)
    tokenizer.chat_template = None
    return tokenizer


def _assert_masks_cover_responses(tokenizer, end: str, prompt_format: str) -> None:
    pairs, _ = tokenize_examples(chat_examples(EXAMPLES), tokenizer, max_length=None)
    for pair, (prompt, chosen, rejected) in zip(pairs, EXAMPLES, strict=True):
        assert tokenizer.decode(pair.prompt_ids) == prompt_format.format(prompt)
        assert tokenizer.decode(pair.chosen_ids) == chosen + end  # the response and its end of turn, no more
        assert tokenizer.decode(pair.rejected_ids) == rejected + end
        assert pair.chosen_ids[-1] == tokenizer.convert_tokens_to_ids(end)  # one end-of-turn token


def test_tokenizer_without_a_template_is_refused_in_one_line(bare_tokenizer) -> None:
    with pytest.raises(
        PreftuneError,
        match=r"^model base-x's tokenizer has no chat template: set model.chat_template=chatml \(or a .jinja file\)$",
    ):
        check_chat_template(bare_tokenizer, "base-x")
    check_chat_template(apply_chat_template_setting(bare_tokenizer, "chatml"), "base-x")  # has one now


def test_chatml_gives_masks_of_exactly_response_and_end_of_turn(bare_tokenizer) -> None:
    apply_chat_template_setting(bare_tokenizer, "chatml")
    _assert_masks_cover_responses(bare_tokenizer, "<|im_end|>", CHATML_PROMPT)


def test_zephyr_gives_masks_of_exactly_response_and_eos(bare_tokenizer) -> None:
    apply_chat_template_setting(bare_tokenizer, "zephyr")
    eos = bare_tokenizer.eos_token
    _assert_masks_cover_responses(bare_tokenizer, eos, "<|user|>\n{}" + eos + "\n<|assistant|>\n")


@pytest.mark.parametrize("name", CHAT_TEMPLATES)
def test_generation_markers_agree_with_the_training_response_mask(bare_tokenizer, name: str) -> None:
    apply_chat_template_setting(bare_tokenizer, name)
    (prompt, chosen, _), *_ = EXAMPLES
    conversation = [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}]
    out = bare_tokenizer.apply_chat_template(
        conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    marked = [token for token, flag in zip(out["input_ids"], out["assistant_masks"], strict=True) if flag]
    pairs, _ = tokenize_examples(chat_examples(EXAMPLES[:1]), bare_tokenizer, max_length=None)
    assert marked == pairs[0].chosen_ids  # what TRL-style assistant masks mark is what preftune trains on


def test_chatml_ends_turns_with_eos_when_the_vocabulary_lacks_im_end() -> None:
    """A base model's tokenizer without ``<|im_end|>`` (a small real BPE here): turns end with its EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["</s>"], initial_alphabet=alphabet)
    bpe.train_from_iterator([p + c + r for p, c, r in EXAMPLES] + ["<|im_start|>user assistant"], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="</s>", pad_token="</s>")
    assert "<|im_end|>" not in tokenizer.get_added_vocab()
    apply_chat_template_setting(tokenizer, "chatml")
    _assert_masks_cover_responses(tokenizer, "</s>", "<|im_start|>user\n{}</s>\n<|im_start|>assistant\n")


def test_jinja_file_and_inline_source(bare_tokenizer, tmp_path: Path) -> None:
    source = built_in_template(bare_tokenizer, "chatml")
    path = tmp_path / "my_template.jinja"
    path.write_text(source, encoding="utf-8")
    assert apply_chat_template_setting(bare_tokenizer, str(path)).chat_template == source
    _assert_masks_cover_responses(bare_tokenizer, "<|im_end|>", CHATML_PROMPT)
    bare_tokenizer.chat_template = None
    assert apply_chat_template_setting(bare_tokenizer, source).chat_template == source
    before = bare_tokenizer.chat_template
    assert apply_chat_template_setting(bare_tokenizer, None).chat_template == before  # None keeps the tokenizer's own


def test_bad_settings_are_one_line(bare_tokenizer, tmp_path: Path) -> None:
    with pytest.raises(PreftuneError, match=r"^model.chat_template: unknown template 'chatlm'; built-in: chatml, zeph"):
        apply_chat_template_setting(bare_tokenizer, "chatlm")
    with pytest.raises(PreftuneError, match=r"^model.chat_template: template file '.*nope.jinja' does not exist$"):
        apply_chat_template_setting(bare_tokenizer, str(tmp_path / "nope.jinja"))
    empty = tmp_path / "empty.jinja"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(PreftuneError, match=r"is empty$"):
        apply_chat_template_setting(bare_tokenizer, str(empty))
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for message in messages %}{{ message['content'] }}", encoding="utf-8")  # no endfor
    with pytest.raises(PreftuneError, match=r"^model.chat_template: the template in '.*broken.jinja' does no") as info:
        apply_chat_template_setting(bare_tokenizer, str(broken))
    assert "\n" not in str(info.value)
    assert bare_tokenizer.chat_template is None  # left as it was
