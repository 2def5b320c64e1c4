"""Loading causal LMs and their tokenizers by name or path.

A model is named in one of four ways:

- ``smollm2-135m-instruct``: the embedded default (:mod:`preftune.modeling.embedded`), offline;
- ``tiny-random``: the tiny random Llama for tests (:mod:`preftune.modeling.tiny`);
- a local folder holding a transformers checkpoint (or a PEFT adapter, whose base is loaded too);
- a Hugging Face hub name (``org/name``): the local hub cache is tried first, then the hub itself.

Every failure to find the model is one :class:`~preftune.errors.PreftuneError` line: a path that
does not exist, or a hub name when the hub cannot be reached, never a retry loop or a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from preftune.errors import PreftuneError
from preftune.modeling.embedded import EMBEDDED_NAME, ensure_embedded_model
from preftune.modeling.tiny import TINY_NAME, tiny_model_path

DType = Literal["auto", "float32", "bfloat16", "float16"]
DTYPES: tuple[str, ...] = get_args(DType)  # the names ``load_model(dtype=)`` takes, for config checks
HUB_TIMEOUT_S = 10.0


def resolve_model(name_or_path: str | os.PathLike[str]) -> str:
    """The local folder or hub name that transformers should load for ``name_or_path``.

    Built-in names are built into the cache on first use; an existing folder is returned as is; a
    string that looks like a path (``./x``, ``/x``, ``~/x``, ``x/y/z``) but does not exist is an
    error; anything else is taken for a hub name and returned unchanged.
    """
    text = os.fspath(name_or_path)
    if text == EMBEDDED_NAME:
        return str(ensure_embedded_model())
    if text == TINY_NAME:
        return str(tiny_model_path())
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise PreftuneError(f"model path '{text}' is a file, not a checkpoint folder")
    if _looks_like_path(text):
        raise PreftuneError(f"model path '{text}' does not exist")
    return text


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: DType = "auto",
    device: torch.device | str | None = None,
):
    """A causal LM (``AutoModelForCausalLM``) in eval mode, with SDPA attention where supported.

    Args:
        name_or_path: a built-in name, a local folder or a hub name (see the module docstring).
        dtype: ``"auto"`` keeps the checkpoint's dtype; otherwise the weights are cast.
        device: where to put the model (default: CPU, as transformers loads it).
    """
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype if dtype == "auto" else _torch_dtype(dtype)}  # a bad name fails before any loading
    source = resolve_model(name_or_path)
    model = from_local_or_hub(
        AutoModelForCausalLM, source, name_or_path, "config.json", attn_implementation="sdpa", **kwargs
    )
    if device is not None:
        model = model.to(device)
    return model.eval()


def load_tokenizer(name_or_path: str | os.PathLike[str]):
    """The tokenizer of a model, right-padded and with a pad token.

    A tokenizer without a pad token gets its eos token as pad (SmolLM2 has no dedicated pad
    token and already uses ``<|im_end|>``); one with neither is refused, since adding a token
    would change the model's vocabulary.
    """
    from transformers import AutoTokenizer

    source = resolve_model(name_or_path)
    tokenizer = from_local_or_hub(AutoTokenizer, source, name_or_path, "tokenizer_config.json")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise PreftuneError(f"the tokenizer of '{name_or_path}' has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def from_local_or_hub(auto_class: Any, source: str, name: object, marker: str, **kwargs: Any) -> Any:
    """``auto_class.from_pretrained(source)``: a folder directly; a hub name from its snapshot in the
    local hub cache when there is one (``marker`` is a file that snapshot must hold), else from the
    hub after a quick reachability probe (transformers alone retries for about 30 s offline)."""
    if Path(source).is_dir():
        return _with_sdpa_fallback(auto_class, source, **kwargs)
    snapshot = _cached_snapshot(source, marker)
    if snapshot is not None:
        try:
            return _with_sdpa_fallback(auto_class, snapshot, **kwargs)
        except OSError:
            pass  # an incomplete snapshot: let the hub complete it
    _probe_hub(source, name)
    try:
        return _with_sdpa_fallback(auto_class, source, **kwargs)
    except OSError as error:
        raise PreftuneError(f"model '{name}' could not be loaded from the hub: {str(error).splitlines()[0]}") from error


def _cached_snapshot(repo_id: str, marker: str) -> str | None:
    """The folder of ``repo_id``'s snapshot in the local hub cache, if it holds ``marker``."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        found = try_to_load_from_cache(repo_id, marker)
    except HFValidationError:
        return None
    return str(Path(found).parent) if isinstance(found, str) else None


def _with_sdpa_fallback(auto_class, source: str, **kwargs):
    """Load with ``attn_implementation="sdpa"``; retry with the model's default where it lacks SDPA."""
    try:
        return auto_class.from_pretrained(source, **kwargs)
    except ValueError as error:
        if kwargs.get("attn_implementation") != "sdpa" or "sdpa" not in str(error).lower():
            raise
        kwargs.pop("attn_implementation")
        return auto_class.from_pretrained(source, **kwargs)


def _probe_hub(repo_id: str, name: object) -> None:
    """Raise one clear line unless ``repo_id`` is a model the hub can serve right now."""
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    unreachable = f"model '{name}' not found: not a local folder and the hub cannot be reached"
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise PreftuneError(unreachable + " (HF_HUB_OFFLINE is set)")
    try:
        model_info(repo_id, timeout=HUB_TIMEOUT_S)
    except GatedRepoError as error:
        raise PreftuneError(f"model '{name}' is gated on the hub: log in and accept its terms first") from error
    except RepositoryNotFoundError as error:
        raise PreftuneError(f"model '{name}' not found: not a local folder nor a model on the hub") from error
    except HFValidationError as error:
        raise PreftuneError(f"model '{name}' not found: not a local folder nor a valid hub name") from error
    except Exception as error:  # network errors come from several libraries (httpx, requests, ssl)
        raise PreftuneError(unreachable) from error


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith((".", "~", os.sep, "/"))
        or (os.altsep is not None and os.altsep in text)
        or text.count("/") > 1
        or Path(text).is_absolute()
    )


def _torch_dtype(name: str) -> torch.dtype:
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise PreftuneError(f"dtype '{name}' is not one of {', '.join(DTYPES)}")
    return dtypes[name]
