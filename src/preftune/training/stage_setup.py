"""What every stage does around its ``fit``, offline and on-policy alike: a tracker run of its own,
and on Ctrl-C the line that says where ``--resume`` continues."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from preftune.training.checkpoint import latest_checkpoint
from preftune.training.config import RunConfig, StageConfig
from preftune.training.summary import flat_config


def start_trackers(accelerator: Accelerator, config: RunConfig, stage: StageConfig) -> None:
    """A tracker run per stage (main process): the earlier stage's is closed, or it would get this
    stage's logs too."""
    if not accelerator.is_main_process:
        return
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers = []
    accelerator.init_trackers(stage.name, config=flat_config(config, stage))


@contextmanager
def resume_hint(stage_dir: Path, what: str, say: Callable[..., Any]) -> Iterator[None]:
    """On Ctrl-C inside the block, say which checkpoint ``--resume`` continues from (or that there
    is none yet), then let the interrupt go on."""
    try:
        yield
    except KeyboardInterrupt:
        saved = latest_checkpoint(stage_dir)
        where = f"--resume continues from {saved}" if saved else "no checkpoint was written yet: --resume has none"
        say(f"\ninterrupted in {what}; {where}", highlight=False)
        raise
