"""Models for preference fine-tuning: loading, LoRA, response log-probs and reference policies.

    >>> from preftune.modeling import load_model, load_tokenizer, apply_lora, sequence_logprobs
    >>> model = apply_lora(load_model("smollm2-135m-instruct"))
    >>> enable_gradient_checkpointing(model)  # optional: less memory, about a third more compute
    >>> chosen, rejected = sequence_logprobs(model, batch, with_tokens=False)

Imports only ``preftune.errors``, ``preftune.objectives`` (records) and ``preftune.data.batch``.
"""

from preftune.modeling.cache import atomic_directory, cache_root, chmod_as_created
from preftune.modeling.chat_template import CHAT_TEMPLATES, apply_chat_template_setting, check_chat_template
from preftune.modeling.checkpointing import enable_gradient_checkpointing, gradient_checkpointing_enabled
from preftune.modeling.embedded import (
    EMBEDDED_NAME,
    convert_embedded_model,
    embedded_gguf_path,
    ensure_embedded_model,
    verify_embedded_model,
)
from preftune.modeling.fingerprint import batches_fingerprint, model_fingerprint
from preftune.modeling.loading import DTYPES, load_model, load_tokenizer, resolve_model
from preftune.modeling.logprobs import (
    as_pair,
    causal_lm_parts,
    check_batch,
    response_logprobs,
    response_token_logprobs,
    sequence_logprobs,
)
from preftune.modeling.lora import apply_lora, check_lora_targets, save_lora
from preftune.modeling.reference import (
    AdapterDisabledReference,
    FrozenCopyReference,
    ModelReference,
    PrecomputedReference,
    ReferenceLogProbs,
)
from preftune.modeling.tiny import TINY_NAME, build_tiny_model, tiny_model_path

__all__ = [
    "CHAT_TEMPLATES",
    "DTYPES",
    "EMBEDDED_NAME",
    "TINY_NAME",
    "AdapterDisabledReference",
    "FrozenCopyReference",
    "ModelReference",
    "PrecomputedReference",
    "ReferenceLogProbs",
    "apply_chat_template_setting",
    "apply_lora",
    "as_pair",
    "atomic_directory",
    "batches_fingerprint",
    "build_tiny_model",
    "cache_root",
    "causal_lm_parts",
    "check_batch",
    "check_chat_template",
    "check_lora_targets",
    "chmod_as_created",
    "convert_embedded_model",
    "embedded_gguf_path",
    "enable_gradient_checkpointing",
    "ensure_embedded_model",
    "gradient_checkpointing_enabled",
    "load_model",
    "load_tokenizer",
    "model_fingerprint",
    "resolve_model",
    "response_logprobs",
    "response_token_logprobs",
    "save_lora",
    "sequence_logprobs",
    "tiny_model_path",
    "verify_embedded_model",
]
