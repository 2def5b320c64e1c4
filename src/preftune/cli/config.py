"""Reading a run's configuration: a YAML file, then ``key=value`` overrides, into :class:`RunConfig`.

OmegaConf does the merging and the type conversion against the dataclass schema; this module
turns its failures into one line that names the key and, for a misspelt one, the closest valid key.
A renamed key (:data:`~preftune.run.config.RENAMED_KEYS`: the sampling settings, once ``online.*``,
now ``sampling.*``) is still read under its old name, with a note, until preftune 0.3.

Values are read as YAML 1.2 reads them: only ``true``/``false`` are booleans, so a documented
setting such as ``optim.mixed_precision=no`` stays the string ``"no"`` (YAML 1.1, PyYAML's
default, would read ``no``, ``off`` and ``yes`` as booleans).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from preftune.errors import PreftuneError
from preftune.run.config import (
    RENAMED_KEYS,
    RENAMED_UNTIL,
    RunConfig,
    StageConfig,
    both_spellings_error,
    rename_old_keys,
    resolve_defaults,
)
from preftune.run.trl_names import COMPUTED, SAME_VALUE, translate, trl_meaning


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans: ``true``/``false`` only."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "tTfF":
    Yaml12Loader.yaml_implicit_resolvers.setdefault(_first, []).insert(
        0, ("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"))
    )


def parse_value(text: str):
    """A command-line value as YAML 1.2 reads it (``5`` an int, ``[a, b]`` a list, ``no`` a string)."""
    try:
        return yaml.load(text, Loader=Yaml12Loader) if text.strip() else ""
    except yaml.YAMLError:
        return text


def schema_keys() -> list[str]:
    """Every dotted key of the schema (``optim.lr``, ``stages.objective``...)."""
    return list(schema_defaults())


@functools.cache
def schema_defaults(cls: type = RunConfig, prefix: str = "") -> dict[str, tuple[Any, str]]:
    """Every dotted key of the schema with its default and the comment beside its field (its meaning);
    computed once (the comments are read from the source), so callers must not change the result."""
    out: dict[str, tuple[Any, str]] = {}
    comments = _field_comments(cls)
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out.update(schema_defaults(type(default), f"{name}."))
        elif f.name == "stages":
            out.update(schema_defaults(StageConfig, f"{name}."))
        else:
            out[name] = (default, comments.get(f.name, ""))
    return out


def _field_comments(cls: type) -> dict[str, str]:
    """``field: type = default  # comment`` lines of a dataclass's source: the comment by field name."""
    import inspect

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    found = (re.match(r"^    (\w+): [^#]*#\s*(.+)$", line) for line in source.splitlines())
    return {m.group(1): m.group(2).strip() for m in found if m}


def _key_problem(key: str) -> str | None:
    """Why ``key`` is not a config key, with the key it most likely means; None for a valid key.

    TRL's names first (``learning_rate`` is ``optim.lr``), then spelling: the whole dotted key, then
    its last part against the keys' last parts and TRL's names (``optim.learnig_rate``)."""
    known = schema_keys()
    generic = ".".join(part for part in key.split(".") if not part.isdigit())
    top = generic.split(".")[0]
    if generic in known or (top in {"data"} and generic.startswith("data.columns.")):
        return None
    if any(k.startswith(generic + ".") for k in known):
        return None  # a section given as a whole
    leaf = generic.split(".")[-1]
    meaning = trl_meaning(leaf)
    if meaning is not None:
        return f"'{key}' (TRL's name; here {meaning})"
    trl_close = difflib.get_close_matches(leaf, [*SAME_VALUE, *COMPUTED], n=1, cutoff=0.8)
    close = difflib.get_close_matches(generic, known, n=1, cutoff=0.75)
    leaf_close = difflib.get_close_matches(leaf, [k.split(".")[-1] for k in known], n=1, cutoff=0.75)
    if trl_close:
        return f"'{key}' (TRL's '{trl_close[0]}'? here {trl_meaning(trl_close[0])})"
    if close:
        return f"'{key}' (did you mean '{close[0]}'?)"
    if leaf_close:
        same = " or ".join(f"'{k}'" for k in known if k.split(".")[-1] == leaf_close[0])
        return f"'{key}' (did you mean {same}?)"
    return f"'{key}'"


def _check_keys(keys: list[str], where: str) -> None:
    """Every key of ``keys`` valid, or one error naming each invalid one with its likely meaning."""
    problems = [p for p in (_key_problem(k) for k in keys) if p is not None]
    if problems:
        plural = "s do" if len(problems) > 1 else " does"
        trl_names = sum(trl_meaning(k.split(".")[-1]) is not None for k in keys)
        if where != "command line" and trl_names * 2 >= len(problems):
            where += f" reads as a TRL config ('preftune train --trl {where}' reads it as it is)"
        raise PreftuneError(
            f"{where}: config key{plural} not exist: {'; '.join(problems)}; 'preftune train --help' lists the keys"
        )


def _flat_keys(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        if prefix.endswith("columns."):
            return []
        out = []
        for k, v in node.items():
            out.extend(_flat_keys(v, f"{prefix}{k}.") or [f"{prefix}{k}"])
        return out
    if isinstance(node, list) and prefix == "stages.":
        return [k for i, item in enumerate(node) for k in _flat_keys(item, f"stages.{i}.")]
    return []


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise PreftuneError(f"config file {path} does not exist")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=Yaml12Loader) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise PreftuneError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise PreftuneError(f"{path}: expected a mapping of config keys at the top level")
    return raw


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"optim.lr": 1e-6}`` -> ``{"optim": {"lr": 1e-6}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *sections, leaf = key.split(".")
        node = out
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    return out


def renamed_note(old: str) -> str:
    """The note for a config that spells a setting by its old name ``old`` (a key of RENAMED_KEYS)."""
    return f"{old} is now {RENAMED_KEYS[old]} (the old name is read until preftune {RENAMED_UNTIL})"


def _rename_overrides(overrides: list[str], used: list[str]) -> list[str]:
    """``key=value`` overrides with each old key of RENAMED_KEYS spelt by its new name;
    ``used`` receives each old key found. An old and a new spelling of one setting with different
    values are refused (one spelling given twice: the last wins, as for any key)."""
    out, values = [], {}
    for item in overrides:
        key, value = item.split("=", 1)
        key = key.strip()
        if key in RENAMED_KEYS:
            used.append(key)
            values[key] = parse_value(value)
            item = f"{RENAMED_KEYS[key]}={value}"
        elif key in RENAMED_KEYS.values():
            values[key] = parse_value(value)
        out.append(item)
    for old, new in RENAMED_KEYS.items():
        if old in values and new in values and values[old] != values[new]:
            raise both_spellings_error(old, values[old], values[new], "command line")
    return out


def load_config(
    path: str | Path | None, overrides: list[str], trl: bool = False, notes: list[str] | None = None
) -> RunConfig:
    """Schema defaults, then the YAML file, then ``key=value`` overrides, checked at each layer.

    ``trl``: the file is a TRL config (``DPOConfig``'s names, :mod:`preftune.run.trl_names`), translated
    into preftune's keys with TRL's defaults. ``notes`` receives a sentence for each TRL key ignored
    (with why) and each old key used (in the file or an override: :func:`renamed_note`). An old and
    a new spelling of one setting with different values are refused in the file and on the command
    line; an override still overrides the file, whichever spelling each uses."""
    used: list[str] = []
    base = OmegaConf.structured(RunConfig)
    OmegaConf.set_readonly(base.data.labels, False)  # a frozen section still takes the file and overrides
    layers = []
    if path is not None:
        path = Path(path)
        raw = _read_yaml(path)
        if trl:
            flat, ignored = translate(raw, str(path))
            raw = _nested(flat)
            if notes is not None:
                notes.extend(f"TRL's {item}: ignored" for item in ignored)
        else:
            used.extend(rename_old_keys(raw, str(path)))
        _check_keys(_flat_keys(raw), str(path))
        layers.append(OmegaConf.create(raw))
    for item in overrides:
        if "=" not in item:
            raise PreftuneError(f"override '{item}' is not key=value (e.g. optim.lr=1e-4)")
    overrides = _rename_overrides(overrides, used)
    if notes is not None:
        notes.extend(renamed_note(old) for old in dict.fromkeys(used))
    _check_keys([item.split("=", 1)[0].strip() for item in overrides], "command line")
    try:
        merged = OmegaConf.merge(base, *layers)
        OmegaConf.set_readonly(merged.data.labels, False)
        # key by key onto the merged config, so that `stages.1.max_steps=5` indexes the YAML's list
        # (merging a dotlist config would try to merge a mapping {"1": ...} into it, a TypeError)
        for item in overrides:
            key, value = item.split("=", 1)
            OmegaConf.update(merged, key.strip(), parse_value(value), merge=True)
        config = OmegaConf.to_object(merged)
    except (OmegaConfBaseException, TypeError) as err:
        key = getattr(err, "full_key", None)
        message = str(err).splitlines()[0]
        raise PreftuneError(f"config key '{key}': {message}" if key else f"config: {message}") from None
    assert isinstance(config, RunConfig)
    return resolve_defaults(config)


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML, defaults filled in (``optim.lr`` included), ready to save and reuse."""
    return OmegaConf.to_yaml(OmegaConf.structured(resolve_defaults(config)))
