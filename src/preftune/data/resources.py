"""Data shipped with preftune: a subset of Anthropic HH-RLHF (harmless-base, test split).

See ``bundled/README.md`` for the source, the licence (MIT, in ``bundled/LICENSE-hh-rlhf.txt``)
and how the subset was chosen (``bundled/make_subset.py``).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from preftune.errors import PreftuneError

BUNDLED = {"hh-harmless": "hh-rlhf-harmless-base-subset.jsonl.gz"}


def bundled_path(name: str) -> Path:
    """The path of a bundled data file, e.g. ``bundled_path("hh-harmless")`` (HH-RLHF transcripts)."""
    if name not in BUNDLED:
        raise PreftuneError(f"no bundled data named '{name}' (available: {', '.join(sorted(BUNDLED))})")
    path = Path(str(files("preftune.data").joinpath("bundled", BUNDLED[name])))
    if not path.is_file():
        raise PreftuneError(f"bundled data '{name}' is missing from the installation ({path})")
    return path
