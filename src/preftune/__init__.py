"""preftune: preference fine-tuning of language models.

The objectives (:mod:`preftune.objectives`) are pure functions of log-probabilities; the
gradient analysis (:mod:`preftune.analysis`) explains what each one does to a model.
"""

__version__ = "0.1.0"
