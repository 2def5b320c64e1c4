"""The policy's current weights as a GGUF file that llama.cpp loads (Llama-architecture models only).

    >>> vocab = gguf_vocab(tokenizer)                          # once: the tokenizer block
    >>> write_gguf(path, base.config, merged_weights(policy), vocab, "bf16")

What llama.cpp's ``convert_hf_to_gguf.py`` writes for a ``LlamaForCausalLM``, restricted to what
preftune's llama.cpp sampler needs (:mod:`preftune.generation.llamacpp_sampler`):

* metadata ``llama.*`` from the HF config: context, embedding and feed-forward lengths, block
  count, head counts, head size (rope dimension count), rope theta, RMS-norm epsilon, vocabulary size;
* tensors under GGUF names (``blk.{i}.attn_q.weight``, ...); ``q_proj`` and ``k_proj`` rows are
  permuted as the converter does (:func:`permute_qk`): HF's rotary embedding rotates the two halves
  of each head (``rotate_half``), llama.cpp's ``LLAMA_ROPE_TYPE_NORM`` rotates adjacent pairs, so
  the rows of each head are interleaved. Tied embeddings write no ``output.weight`` (llama.cpp then
  reads ``token_embd.weight``). 1-D tensors (the norms) stay float32, as the converter keeps them;
* a byte-level BPE tokenizer block (tokens, types, merges, special ids), read from the HF
  tokenizer. The sampler sends token ids and reads token ids back, so the vocabulary matters only
  for loading and for which tokens end a generation (llama.cpp's end-of-generation set is built
  from the special ids and the tokens' text); the pre-tokenizer is written as ``default``.

Anything else is refused in one line (:func:`gguf_unsupported`): other architectures, biases,
rope scaling, a tokenizer that is not byte-level BPE.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from preftune.errors import PreftuneError

#: ``name -> (GGUF file type, weight tensor type)``; 1-D tensors are float32 in every case.
GGUF_DTYPES = ("f32", "f16", "bf16")

_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def _rope_theta(config: Any) -> float:
    """The rotary base: ``rope_parameters["rope_theta"]`` (transformers 5) or ``rope_theta`` (before)."""
    parameters = getattr(config, "rope_parameters", None) or {}
    return float(parameters.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def gguf_unsupported(config: Any) -> str | None:
    """Why the model of HF ``config`` cannot be written as a llama.cpp GGUF here, or None when it can."""
    model_type = getattr(config, "model_type", None)
    if model_type != "llama":
        return f"llama.cpp sampling writes Llama-architecture models only, not model_type {model_type!r}"
    parameters = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = parameters.get("rope_type", parameters.get("type", "default"))
    if rope_type != "default":
        return f"llama.cpp sampling does not write rope scaling {rope_type!r}"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "llama.cpp sampling does not write attention or MLP biases"
    return None


def gguf_name(name: str) -> str:
    """The GGUF name of an HF Llama parameter (``model.layers.3.mlp.up_proj.weight`` -> ``blk.3.ffn_up.weight``)."""
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    parts = name.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in _LAYER_NAMES:
        return f"blk.{parts[2]}.{_LAYER_NAMES[parts[3]]}"
    raise PreftuneError(f"no GGUF name for the Llama parameter {name!r}")


def permute_qk(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """``convert_hf_to_gguf.LlamaModel.permute``: each head's rows from HF's half-split rotary layout
    (``[x0..x_{d/2-1}, y0..]``) to llama.cpp's interleaved one (``[x0, y0, x1, y1, ...]``).

    ``heads`` is the number of heads the rows hold (the key/value heads for ``k_proj``)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


@dataclass(frozen=True)
class GgufVocab:
    """A byte-level BPE tokenizer as GGUF's ``tokenizer.ggml.*`` keys hold it (built once per run)."""

    tokens: list[str]
    types: list[int]
    merges: list[str]
    special_ids: dict[str, int]


def gguf_vocab(tokenizer: Any, rows: int | None = None) -> GgufVocab:
    """The GGUF tokenizer block of a fast HF tokenizer with a byte-level BPE model (SmolLM2, Llama 3).

    Tokens in id order (``len(tokenizer)`` of them: added tokens included); added special tokens are
    CONTROL (3), other added tokens USER_DEFINED (4), the rest NORMAL (1). An embedding of ``rows``
    > ``len(tokenizer)`` (a padded vocabulary) gets UNUSED (5) ``[PAD{i}]`` tokens up to its size,
    as the converter writes them: llama.cpp wants one token per embedding row."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model = json.loads(backend.to_str())["model"] if backend is not None else {}
    if model.get("type") != "BPE":
        raise PreftuneError("llama.cpp sampling needs a fast tokenizer with a BPE model (tokenizer.json)")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    size = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    if any(token is None for token in tokens):
        raise PreftuneError("the tokenizer's ids are not contiguous; llama.cpp needs a token for every id")
    added = {int(i): t for i, t in tokenizer.added_tokens_decoder.items()}
    types = [(3 if added[i].special else 4) if i in added else 1 for i in range(size)]
    pads = range(size, rows or size)
    tokens, types = [*tokens, *(f"[PAD{i}]" for i in pads)], [*types, *(5 for _ in pads)]
    special = {
        key: int(value)
        for key in ("bos", "eos", "unk", "pad")
        if (value := getattr(tokenizer, f"{key}_token_id", None)) is not None
    }
    return GgufVocab(tokens, types, merges, special)


def _add_metadata(writer: Any, config: Any, vocab: GgufVocab, dtype: str) -> None:
    """The ``general.*``, ``llama.*`` and ``tokenizer.ggml.*`` keys (see the module docstring)."""
    import gguf

    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}
    writer.add_type("model")
    writer.add_name("preftune policy")
    writer.add_file_type(file_type.get(dtype, gguf.LlamaFileType.MOSTLY_BF16))
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(len(vocab.tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    for key, value in vocab.special_ids.items():
        getattr(writer, f"add_{key}_token_id")(value)
    writer.add_add_bos_token(False)


def _as_array(tensor: torch.Tensor, dtype: str) -> tuple[Any, Any]:
    """``(numpy array, raw GGML type or None)`` of a tensor in the file's dtype (1-D ones float32)."""
    import gguf

    tensor = tensor.detach().to("cpu")
    if tensor.dim() == 1 or dtype == "f32":
        return tensor.float().contiguous().numpy(), None
    if dtype == "f16":
        return tensor.half().contiguous().numpy(), None
    return tensor.bfloat16().contiguous().view(torch.int16).numpy(), gguf.GGMLQuantizationType.BF16


def write_gguf(
    path: str | Path, config: Any, weights: Iterable[tuple[str, torch.Tensor]], vocab: GgufVocab, dtype: str = "bf16"
) -> Path:
    """Write a Llama model's ``(HF name, tensor)`` weights (:func:`~preftune.modeling.merged.merged_weights`)
    with ``config``'s metadata and ``vocab`` as a GGUF file of ``dtype`` (one of :data:`GGUF_DTYPES`).

    Raises:
        PreftuneError: the model is not supported (:func:`gguf_unsupported`), a weight has no GGUF
            name, or the vocabulary does not match ``config.vocab_size``'s embedding rows.
    """
    import gguf

    reason = gguf_unsupported(config)
    if reason is not None:
        raise PreftuneError(reason)
    if dtype not in GGUF_DTYPES:
        raise PreftuneError(f"GGUF dtype must be one of {', '.join(GGUF_DTYPES)}, not {dtype!r}")
    heads = config.num_attention_heads
    kv_heads = config.num_key_value_heads or heads
    tied = bool(getattr(config, "tie_word_embeddings", False))
    writer = gguf.GGUFWriter(str(path), "llama")
    _add_metadata(writer, config, vocab, dtype)
    for name, tensor in weights:
        if tied and name == "lm_head.weight":
            continue
        if name.endswith("self_attn.q_proj.weight"):
            tensor = permute_qk(tensor, heads)
        elif name.endswith("self_attn.k_proj.weight"):
            tensor = permute_qk(tensor, kv_heads)
        elif name == "model.embed_tokens.weight" and tensor.shape[0] != len(vocab.tokens):
            raise PreftuneError(
                f"the embedding has {tensor.shape[0]} rows and the tokenizer {len(vocab.tokens)} tokens"
            )
        array, raw = _as_array(tensor, dtype)
        writer.add_tensor(gguf_name(name), array, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
