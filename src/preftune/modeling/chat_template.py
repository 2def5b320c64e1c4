"""Chat templates for tokenizers that have none (base models), and the check that one is there.

``model.chat_template`` is None (the tokenizer's own), the name of a built-in template, a path
to a Jinja file, or Jinja source itself (anything with ``{{`` or ``{%``). Built-ins:

- ``chatml``: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, generation prompt
  ``<|im_start|>assistant\\n``. A turn is closed by ``<|im_end|>`` when the tokenizer has it as
  a token of its own, else by the tokenizer's EOS token (a base model's vocabulary is never
  extended here, as that would change the model), so the end of each response is a single
  end-of-turn token either way;
- ``zephyr``: ``<|{role}|>\\n{content}{eos}\\n`` per message, generation prompt ``<|assistant|>\\n``.

Both are what :mod:`preftune.data.tokenize` needs to find a response: rendering the prompt with
the generation prompt gives a prefix of the prompt followed by the response, and the response
ends with an end-of-turn token it recognises (EOS, or ``<|im_end|>`` when it is an added token),
with only the newline after it. The assistant's content and closing token sit inside
``{% generation %}`` markers, so ``return_assistant_tokens_mask=True`` marks the same tokens.
No BOS token is written; these templates start each conversation with the first turn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from preftune.errors import PreftuneError

KEY = "model.chat_template"
CHATML_END = "<|im_end|>"
TEMPLATE_SUFFIXES = (".jinja", ".jinja2", ".j2", ".tmpl", ".txt")

_CHATML = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{ message['content'] + '@END@' }}{% endgeneration %}{{ '\\n' }}"
    "{%- else -%}"
    "{{ message['content'] + '@END@' + '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
_ZEPHYR = (
    "{%- for message in messages -%}"
    "{{ '<|' + message['role'] + '|>\\n' }}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ '\\n' }}"
    "{%- else -%}"
    "{{ message['content'] + eos_token + '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\\n' }}{%- endif -%}"
)
CHAT_TEMPLATES = ("chatml", "zephyr")


def apply_chat_template_setting(tokenizer: Any, setting: str | None) -> Any:
    """Give ``tokenizer`` the chat template ``setting`` names (in place); None keeps its own.

    Args:
        tokenizer: a Hugging Face tokenizer.
        setting: None, a built-in name (:data:`CHAT_TEMPLATES`), a path to a Jinja file, or Jinja source.
    Returns:
        ``tokenizer``.
    Raises:
        PreftuneError: an unknown name, a missing or empty file, or a template that does not render.
    """
    if setting is None:
        return tokenizer
    text = str(setting).strip()
    if "{{" in text or "{%" in text:
        template, origin = text, "the inline template"
    elif text in CHAT_TEMPLATES:
        template, origin = built_in_template(tokenizer, text), f"the built-in template {text!r}"
    elif _looks_like_path(text):
        template, origin = _read_template(Path(text).expanduser()), f"the template in '{text}'"
    else:
        raise PreftuneError(
            f"{KEY}: unknown template {text!r}; built-in: {', '.join(CHAT_TEMPLATES)} (or a path to a .jinja file)"
        )
    before, tokenizer.chat_template = tokenizer.chat_template, template
    try:
        _check_renders(tokenizer, origin)
    except PreftuneError:
        tokenizer.chat_template = before  # a refused template leaves the tokenizer as it was
        raise
    return tokenizer


def built_in_template(tokenizer: Any, name: str) -> str:
    """The Jinja source of the built-in template ``name`` for ``tokenizer`` (see the module docstring)."""
    if name == "chatml":
        if CHATML_END in tokenizer.get_added_vocab():
            end = CHATML_END
        elif tokenizer.eos_token is not None:
            end = tokenizer.eos_token
        else:
            raise PreftuneError(f"{KEY}=chatml needs a token to end turns: the tokenizer has no {CHATML_END} nor EOS")
        return _CHATML.replace("@END@", end.replace("\\", "\\\\").replace("'", "\\'"))
    if name == "zephyr":
        if tokenizer.eos_token is None:
            raise PreftuneError(f"{KEY}=zephyr ends each turn with EOS, which the tokenizer does not have")
        return _ZEPHYR
    raise PreftuneError(f"{KEY}: unknown template {name!r}; built-in: {', '.join(CHAT_TEMPLATES)}")


def check_chat_template(tokenizer: Any, model_name: str) -> None:
    """Refuse, in one line, a tokenizer without a chat template (conversational data needs one)."""
    if not getattr(tokenizer, "chat_template", None):
        raise PreftuneError(f"model {model_name}'s tokenizer has no chat template: set {KEY}=chatml (or a .jinja file)")


def _looks_like_path(text: str) -> bool:
    path = Path(text).expanduser()
    return "/" in text or "\\" in text or text.lower().endswith(TEMPLATE_SUFFIXES) or path.exists()


def _read_template(path: Path) -> str:
    if not path.is_file():
        raise PreftuneError(f"{KEY}: template file '{path}' {'is a folder' if path.is_dir() else 'does not exist'}")
    try:
        template = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PreftuneError(f"{KEY}: template file '{path}' cannot be read ({error})") from error
    if not template.strip():
        raise PreftuneError(f"{KEY}: template file '{path}' is empty")
    return template


def _check_renders(tokenizer: Any, origin: str) -> None:
    """Render a short conversation now, so a broken template fails here and not mid-tokenisation."""
    conversation = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}]
    try:
        tokenizer.apply_chat_template(conversation, tokenize=False)
        tokenizer.apply_chat_template(conversation[:1], tokenize=False, add_generation_prompt=True)
    except Exception as error:  # jinja2 raises several types (syntax, undefined, TypeError on bad data)
        message = " ".join(str(error).split()) or type(error).__name__
        raise PreftuneError(f"{KEY}: {origin} does not render: {message}") from error
