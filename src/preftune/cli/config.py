"""Reading a run's configuration: a YAML file, then ``key=value`` overrides, into :class:`RunConfig`.

OmegaConf does the merging and the type conversion against the dataclass schema; this module
turns its failures into one line that names the key and, for a misspelt one, the closest valid key.

Values are read as YAML 1.2 reads them: only ``true``/``false`` are booleans, so a documented
setting such as ``optim.mixed_precision=no`` stays the string ``"no"`` (YAML 1.1, PyYAML's
default, would read ``no``, ``off`` and ``yes`` as booleans).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from preftune.errors import PreftuneError
from preftune.run.config import RunConfig, StageConfig, resolve_defaults


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


def schema_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the schema (``optim.lr``, ``stages.objective``...)."""
    keys = []
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            keys.extend(schema_keys(type(default), f"{name}."))
        elif f.name == "stages":
            keys.extend(schema_keys(StageConfig, f"{name}."))
        else:
            keys.append(name)
    return keys


def _check_key(key: str, where: str) -> None:
    known = schema_keys()
    generic = ".".join(part for part in key.split(".") if not part.isdigit())
    top = generic.split(".")[0]
    if generic in known or (top in {"data"} and generic.startswith("data.columns.")):
        return
    if any(k.startswith(generic + ".") for k in known):
        return  # a section given as a whole
    close = difflib.get_close_matches(generic, known, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else "; run 'preftune train --help' to see the keys"
    raise PreftuneError(f"{where}: config key '{key}' does not exist{hint}")


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


def load_config(path: str | Path | None, overrides: list[str]) -> RunConfig:
    """Schema defaults, then the YAML file, then ``key=value`` overrides, checked at each layer."""
    base = OmegaConf.structured(RunConfig)
    OmegaConf.set_readonly(base.data.labels, False)  # a frozen section still takes the file and overrides
    layers = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise PreftuneError(f"config file {path} does not exist")
        try:
            raw = yaml.load(path.read_text(encoding="utf-8"), Loader=Yaml12Loader) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise PreftuneError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise PreftuneError(f"{path}: expected a mapping of config keys at the top level")
        for key in _flat_keys(raw):
            _check_key(key, str(path))
        layers.append(OmegaConf.create(raw))
    for item in overrides:
        if "=" not in item:
            raise PreftuneError(f"override '{item}' is not key=value (e.g. optim.lr=1e-4)")
        _check_key(item.split("=", 1)[0].strip(), "command line")
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
