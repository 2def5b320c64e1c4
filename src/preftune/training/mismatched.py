"""KTO's KL estimate, reduced over the processes of a run (Ethayarajh et al. 2024, §4.1).

Each process scores its micro-batch's mismatched pairs (:mod:`preftune.data.mismatched`) under the
policy and the reference; the estimate is the mean over processes of each process's mean log-ratio,
as TRL's ``KTOTrainer`` computes it (``gather_for_metrics(kl).mean()``), so every process's
objective reads the same number. ``kto`` clamps it at 0 (:mod:`preftune.objectives.kto`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from preftune.objectives import SequenceLogProbs

Gather = Callable[[Tensor], Tensor]  # [1] on each process -> [W], every process's value (Accelerator.gather)


def mismatched_log_ratio(policy: SequenceLogProbs, reference: SequenceLogProbs, gather: Gather) -> Tensor:
    """``[]`` the mean over processes of mean_i (S(y'_i | x_i) - S_ref(y'_i | x_i)), detached.

    Args:
        policy: ``[B, C]`` policy log-probs of this process's mismatched rows.
        reference: ``[B, C]`` reference log-probs of the same rows.
        gather: every process's ``[1]`` value, concatenated (``accelerator.gather``); every process
            must call it at the same micro-step, as the trainer's micro-batches guarantee.
    """
    with torch.no_grad():
        ratio = policy.sum.detach() - reference.sum.detach().to(policy.sum.dtype)
        return gather(ratio.mean().reshape(1)).mean()
