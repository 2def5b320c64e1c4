"""A training run, ``preftune train``'s: config -> checks -> data -> stages -> outputs.

The application around the engine (:mod:`preftune.training`): the typed config
(:mod:`.config`) and its checks (:mod:`.checks`), what ``--resume`` may continue (:mod:`.resume`),
the data rows and held-out split (:mod:`.inputs`), each stage's reference (:mod:`.references`),
the one stage builder (:mod:`.stage`, with the on-policy feed in :mod:`.online`), and what a run
leaves on disk (:mod:`.outputs`, :mod:`.summary`, :mod:`.report`). :func:`run_training` reads top
to bottom (:mod:`.train`).
"""

from typing import Any

from preftune.run.config import RunConfig, StageConfig

__all__ = ["RunConfig", "StageConfig", "run_training"]


def __getattr__(name: str) -> Any:
    # run_training pulls in torch and the models: imported when asked for, so that reading a config
    # (the CLI's checks) stays quick
    if name == "run_training":
        from preftune.run.train import run_training

        return run_training
    raise AttributeError(f"module 'preftune.run' has no attribute {name!r}")
