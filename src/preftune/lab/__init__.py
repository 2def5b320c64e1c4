"""Didactic studies of P3 (Tajwar et al. 2024, docs/methods.md §7), run with preftune's own objectives.

- :mod:`preftune.lab.bandit`: the 100-action contextual bandit, offline vs on-policy, with and
  without a negative gradient, scored by the exact true reward.
- :mod:`preftune.lab.sequence_bandit`: the bandit's sequence variant, a tiny causal transformer emitting
  L tokens with a per-token reward, scored by the exact true reward over all V^L responses.
- :mod:`preftune.lab.kl_toy`: gradient steps on forward KL(q‖p) vs reverse KL(p‖q) over four
  categories (mode covering vs mode seeking).
- :mod:`preftune.lab.length`: the synthetic length tasks (min, mode, skew length) on a small
  language model, offline vs on-policy, through preftune's own trainer and on-policy loop.
- :mod:`preftune.lab.plots`: their figures (matplotlib, Agg, PNG written atomically).

The bandits and the KL toy import :mod:`preftune.objectives` (the losses) and the leaves only; the
length study also trains a model (``training``, ``modeling``, ``generation``, ``data``). It is
exported lazily (module ``__getattr__``), so importing this package stays light.
"""

from preftune.lab.bandit import BanditConfig, BanditResult, run_bandit
from preftune.lab.kl_toy import KLToyConfig, KLToyResult, run_kl_toy
from preftune.lab.sequence_bandit import SequenceBanditConfig, SequenceBanditResult, run_sequence_bandit

__all__ = [
    "BanditConfig",
    "BanditResult",
    "KLToyConfig",
    "KLToyResult",
    "LengthConfig",
    "LengthResult",
    "SequenceBanditConfig",
    "SequenceBanditResult",
    "run_bandit",
    "run_kl_toy",
    "run_length_study",
    "run_sequence_bandit",
]

_LENGTH = ("LengthConfig", "LengthResult", "run_length_study")


def __getattr__(name: str) -> object:
    """The length study's names, imported on first use (it pulls in the trainer and transformers)."""
    if name in _LENGTH:
        from preftune.lab import length

        return getattr(length, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
