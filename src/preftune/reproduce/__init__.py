"""Reproductions of papers' claims: run the studies, compare with what the paper reports, write a report.

- :mod:`preftune.reproduce.p3`: P3 (Tajwar et al. 2024): the bandit, the KL toy, the length study
  (when given) and Lemma 6.2's gradient cosine, with a verdict per claim.
- :mod:`preftune.reproduce.p1`: P1 (Tuan & Wang 2024): the gradient analysis, and every objective trained on
  the same pairs and seeds, judged by the gold evaluator (:mod:`preftune.reproduce.gold`).
- :mod:`preftune.reproduce.p2`: P2 (Grinsztajn et al. 2024): summed vs averaged ``dpo`` and ``ipo`` over a grid
  of β, mean answer length against gold score.
- :mod:`preftune.reproduce.p4`: P4 (Chen et al. 2024): IPR against a round robin and against a scoring
  reward model on the OpenAssistant trees' human ranks; (c) BCR against DPO over a grid of budgets on P1's
  pairs and seeds (:mod:`preftune.reproduce.p4_bcr`); (d) the whole pipeline (generate, rank by IPR, train
  ``dpo+bcr``) against the original pairs (:mod:`preftune.reproduce.p4_pipeline`).
- :mod:`preftune.reproduce.rules`: the verdict rules of P1, P2 and P4 (P4 (c) and (d): holds / does not hold
  here / inconclusive).
- :mod:`preftune.reproduce.verdicts`: intervals and the rules that turn them into verdicts.
- :mod:`preftune.reproduce.report`: claim sections and the Markdown report.
- :mod:`preftune.reproduce.plots`: the report's own figures.

Imports :mod:`preftune.lab` (the didactic studies), :mod:`preftune.training` (the Lemma 6.2 runs),
:mod:`preftune.data` (their data settings) and the leaves.
"""

from preftune.reproduce.p1 import reproduce_p1
from preftune.reproduce.p2 import reproduce_p2
from preftune.reproduce.p3 import SCALES, LengthStudy, reproduce_p3
from preftune.reproduce.p4 import reproduce_p4
from preftune.reproduce.report import ClaimSection, not_run_section

PAPERS = {"P1": reproduce_p1, "P2": reproduce_p2, "P3": reproduce_p3, "P4": reproduce_p4}
"""Paper name -> its reproduction, ``(scale, out, say=print) -> results``."""

__all__ = [
    "PAPERS",
    "SCALES",
    "ClaimSection",
    "LengthStudy",
    "not_run_section",
    "reproduce_p1",
    "reproduce_p3",
    "reproduce_p4",
]
