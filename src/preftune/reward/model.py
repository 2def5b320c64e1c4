"""The reward model: a sequence-classification head (one number) on a decoder, LoRA, scores, saving.

The reward of a row is the head's output at its last token that is not the pad token (transformers'
own pooling, so a saved model scores alike wherever ``from_pretrained`` loads it). SmolLM2 pads with
``<|im_end|>``, which closes every response, so the reward is read at the response's last content token.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from preftune.errors import PreftuneError
from preftune.modeling.cache import atomic_directory
from preftune.modeling.chat_template import apply_chat_template_setting, check_chat_template
from preftune.modeling.loading import from_local_or_hub, load_tokenizer, resolve_model
from preftune.modeling.lora_targets import resolve_target_modules
from preftune.progress import QUIET_S, StepProgress
from preftune.reward.data import pad_rows

HEAD = "score"  # the name of the reward head in transformers' *ForSequenceClassification decoders


def load_reward_tokenizer(name_or_path: str, chat_template: str | None = None) -> Any:
    """The model's tokenizer (right-padded, with a pad token), with a chat template (refused without one)."""
    tokenizer = load_tokenizer(name_or_path)
    apply_chat_template_setting(tokenizer, chat_template)
    check_chat_template(tokenizer, str(name_or_path))
    return tokenizer


def load_reward_model(name_or_path: str, tokenizer: Any, *, require_head: bool = False) -> nn.Module:
    """``AutoModelForSequenceClassification`` with ``num_labels=1`` in float32, in eval mode.

    A causal LM's folder gets a new head, initialised from torch's global RNG (seed it first).
    ``require_head``: refuse a folder without a trained head (scoring with a random head is meaningless).
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    source = resolve_model(name_or_path)
    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the "newly initialized: score.weight" report is expected here
    hf_logging.disable_progress_bar()
    try:
        model, info = from_local_or_hub(
            AutoModelForSequenceClassification,
            source,
            name_or_path,
            "config.json",
            num_labels=1,
            dtype=torch.float32,
            output_loading_info=True,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()
    missing = [key for key in info.get("missing_keys", ()) if key.split(".")[0] == HEAD]
    if require_head and missing:
        raise PreftuneError(
            f"'{name_or_path}' has no reward head ({missing[0]} missing): train one with preftune train-rm"
        )
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def apply_reward_lora(
    model: nn.Module, rank: int, alpha: float, target_modules: str = "all-linear", last_layers: int | None = None
) -> nn.Module:
    """Wrap ``model`` in peft LoRA (task SEQ_CLS): adapters on the decoder, the head trained in full.

    ``last_layers``: adapt only the last N decoder layers (the backward pass then stops at the lowest).

    Raises:
        PreftuneError: targets that match no module (checked by :mod:`preftune.modeling.lora_targets`).
    """
    from peft import LoraConfig, get_peft_model

    layers = None
    if last_layers is not None:
        total = int(model.config.num_hidden_layers)
        if not 1 <= last_layers <= total:
            raise PreftuneError(f"lora_last_layers must be between 1 and {total}, not {last_layers}")
        layers = list(range(total - last_layers, total))
    targets = resolve_target_modules(model, target_modules, {HEAD}, layers)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=targets,
        exclude_modules=[HEAD],
        modules_to_save=[HEAD],
        task_type="SEQ_CLS",
        layers_to_transform=layers,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            return get_peft_model(model, config)
        except ValueError as error:
            raise PreftuneError(f"LoRA could not be applied: {str(error).splitlines()[0]}") from error


def rewards(model: nn.Module, rows: list[list[int]], pad_id: int) -> Tensor:
    """Rewards ``[N]`` of token rows (one right-padded ``[N, L]`` forward), with the graph if grad is on."""
    device = next(model.parameters()).device
    ids, mask = pad_rows(rows, pad_id)
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # [N, 1]
    return logits[:, 0].float()


@torch.no_grad()
def score_rows(
    model: nn.Module, rows: list[list[int]], pad_id: int, batch_size: int, progress: str | None = None
) -> list[float]:
    """Rewards of token rows in batches of similar lengths (less padding), in the rows' order.

    ``progress``: the name of a bar with ETA over the batches (stderr), or None for none.
    """
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = [0.0] * len(rows)
    starts = range(0, len(order), batch_size)
    bar = StepProgress(
        len(starts), enabled=progress is not None, description=progress or "", unit="batch", quiet_s=QUIET_S
    )
    with bar:
        for start in starts:
            chunk = order[start : start + batch_size]
            for i, value in zip(chunk, rewards(model, [rows[i] for i in chunk], pad_id).tolist(), strict=True):
                out[i] = float(value)
            bar.advance({})
    return out


def plain_model(model: nn.Module) -> nn.Module:
    """The model without peft wrappers: LoRA merged into a copy (so ``model`` is left as it is)."""
    from peft import PeftModel

    return copy.deepcopy(model).merge_and_unload() if isinstance(model, PeftModel) else model


def save_reward_model(model: nn.Module, tokenizer: Any, dest: str | os.PathLike[str], extra: dict[str, str]) -> Path:
    """Save weights, tokenizer and ``extra`` files (name -> text) into ``dest`` as one atomic folder.

    ``AutoModelForSequenceClassification.from_pretrained(dest)`` and ``AutoTokenizer.from_pretrained(dest)``
    load it; ``dest`` must not exist or be empty (it is replaced by the complete folder in one rename).
    """
    dest = Path(dest).expanduser()
    if dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()
    plain = plain_model(model)
    with atomic_directory(dest) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name, text in extra.items():
            (tmp / name).write_text(text, encoding="utf-8")
    if not (dest / "config.json").is_file():
        raise PreftuneError(f"the reward model could not be saved to '{dest}'")
    return dest
