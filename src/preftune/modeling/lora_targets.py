"""Which modules get LoRA adapters: ``lora.target_modules`` read, checked against the model, and
spelled out the way ``peft`` takes it.

Accepted forms (as ``peft`` accepts them, plus the comma-separated string a command line gives):

- ``"all-linear"``: every linear layer of the model except the output layer;
- module names: one (``"q_proj"``), several in one string (``"q_proj,v_proj"``), or a list/tuple
  (an OmegaConf ``ListConfig`` too). A name matches a module whose full name equals it or ends
  with ``"." + name`` (``"q_proj"``, ``"self_attn.q_proj"``), which is peft's rule for lists;
- a regular expression: a string with a regex character other than ``.`` (``*+?[](){}|^$\\``),
  matched in full against each module's full name (``r".*\\.(q|v)_proj"``), which is peft's rule
  for a string. Dots alone do not make a regex, so a dotted suffix reads as a name.

peft treats any string other than ``"all-linear"`` as a regex, so ``"q_proj"`` would match
nothing there; here a plain name is a name. A regex is expanded into the full names of the
modules it matches (peft cannot combine a regex with ``layers_to_transform``), so it composes
with ``lora.last_layers``. Every name and pattern must match a module before peft is called
(within the adapted layers when ``lora.last_layers`` is set), and reach layers, not blocks: a name
that matches only blocks such as ``self_attn`` is refused, a pattern's blocks are left out. The
errors list the model's linear layers. The output layer is never a target.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

from preftune.errors import PreftuneError

ALL_LINEAR = "all-linear"
REGEX_CHARS = frozenset("*+?[](){}|^$\\")
KEY = "lora.target_modules"
# peft's rule for the layer index in a module name: the first number after a dotted segment.
_LAYER_INDEX = re.compile(r".*?\.[^.]*\.(?P<idx>\d+)\.")


def parse_target_modules(value: object) -> str | list[str]:
    """``"all-linear"``, a regex string, or a list of names, from any accepted form (see the module docstring)."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == ALL_LINEAR:  # peft's spelling rule
            return ALL_LINEAR
        if REGEX_CHARS & set(text):
            return text
        names = [part.strip() for part in text.split(",")]
    elif isinstance(value, Iterable):
        names = list(value)  # a list, tuple or OmegaConf ListConfig
        bad = [name for name in names if not isinstance(name, str)]
        if bad:
            raise PreftuneError(f"{KEY}: module names must be strings, not {bad[0]!r}")
        names = [name.strip() for name in names]
        if [name.lower() for name in names] == [ALL_LINEAR]:
            return ALL_LINEAR
    else:
        raise PreftuneError(f"{KEY} must be 'all-linear', module names or a regex, not {value!r}")
    names = [name for name in dict.fromkeys(names) if name]  # drop duplicates and empties, keep the order
    if not names:
        raise PreftuneError(f"{KEY} names no module; use 'all-linear' or names such as q_proj,v_proj")
    return names


def resolve_target_modules(
    model: nn.Module, value: object, output_names: set[str], layers: list[int] | None
) -> str | list[str]:
    """What to hand ``peft`` as ``target_modules`` for ``model``: ``"all-linear"`` or a list of names.

    Args:
        model: the causal LM (not yet wrapped by peft).
        value: ``lora.target_modules`` in any accepted form.
        output_names: the leaf names of the output layer, which never gets an adapter.
        layers: the decoder layers to adapt (``lora.last_layers``), or None for all.
    Raises:
        PreftuneError: a name or pattern matches no module, or only the output layer.
    """
    targets = parse_target_modules(value)
    linear = linear_layer_names(model, output_names)
    if targets == ALL_LINEAR:
        # peft takes layers_to_transform only with named targets: name every linear layer then.
        return ALL_LINEAR if layers is None else linear
    if isinstance(targets, str):
        return _expand_pattern(model, targets, output_names, layers, linear)
    named_output = [name for name in targets if name in output_names]
    if named_output:
        raise PreftuneError(f"{KEY} names the output layer {named_output}: it never gets an adapter")
    _check_names(model, targets, layers, linear)
    return targets


def _check_names(model: nn.Module, names: list[str], layers: list[int] | None, linear: list[str]) -> None:
    """Refuse a name that matches no module (inside ``layers`` when given) or only containers such as
    ``self_attn``, which peft refuses with a traceback-sized message."""
    modules = [(name, module) for name, module in model.named_modules() if name]
    if layers is not None:
        modules = [(name, module) for name, module in modules if _layer_index(name) in layers]
    where = "in the model" if layers is None else f"in the adapted layers {layers} (lora.last_layers)"
    matches = {t: [m for n, m in modules if n == t or n.endswith("." + t)] for t in names}
    missing = [name for name, found in matches.items() if not found]
    if missing:
        listed = ", ".join(map(repr, missing))
        which = f"module named {listed}" if len(missing) == 1 else f"modules named {listed}"
        raise PreftuneError(f"{KEY}: no {which} {where}; linear modules: {', '.join(linear)}")
    for name, found in matches.items():
        if all(_is_container(module) for module in found):
            raise PreftuneError(
                f"{KEY}: {name!r} names {type(found[0]).__name__} blocks, not layers LoRA adapts; "
                f"linear modules: {', '.join(linear)}"
            )


def linear_layer_names(model: nn.Module, exclude: set[str]) -> list[str]:
    """The sorted leaf names of the model's linear layers (``q_proj``, ``up_proj``, ...) minus ``exclude``:
    what peft's ``"all-linear"`` targets (``nn.Linear`` and GPT-2's ``Conv1D``), spelled out."""
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if _is_linear(module)}
    return sorted(names - exclude)


def _expand_pattern(
    model: nn.Module, pattern: str, output_names: set[str], layers: list[int] | None, linear: list[str]
) -> list[str]:
    """The full names of the layers ``pattern`` matches in full: blocks (``self_attn``) and the output layer
    left out and, when ``layers`` is given, only those inside those decoder layers."""
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise PreftuneError(f"{KEY}: {pattern!r} is not a valid regular expression ({error})") from error
    matched = [name for name, _ in model.named_modules() if name and regex.fullmatch(name)]
    layers_only = [name for name in matched if not _is_container(model.get_submodule(name))]
    kept = [name for name in layers_only if name.rsplit(".", 1)[-1] not in output_names]
    if not kept:
        what = "only the output layer, which never gets an adapter" if layers_only else "no layer of the model"
        raise PreftuneError(f"{KEY}: the pattern {pattern!r} matches {what}; linear modules: {', '.join(linear)}")
    if layers is not None:
        kept = [name for name in kept if _layer_index(name) in layers]
        if not kept:
            raise PreftuneError(f"{KEY}: the pattern {pattern!r} matches no module in the adapted layers {layers}")
    return kept


def _layer_index(name: str) -> int | None:
    match = _LAYER_INDEX.match(name + ".")  # the module itself may be the numbered layer
    return int(match["idx"]) if match else None


def _is_container(module: nn.Module) -> bool:
    """A block of layers (attention, MLP, decoder layer): peft adapts layers, not blocks (bar multi-head attention)."""
    return any(True for _ in module.children()) and not isinstance(module, nn.MultiheadAttention)


def _is_linear(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    return isinstance(module, Conv1D)
