"""Objectives: loss terms as pure functions of log-prob records (docs/methods.md §2).

    >>> from preftune.objectives import parse, dpo, exmate
    >>> objective = parse("dpo + 0.5*exmate")          # from a string
    >>> same = dpo() + 0.5 * exmate()                   # from Python
    >>> out = objective(record)                         # record: a PairRecord
    >>> out.loss.mean().backward()

Imports nothing of preftune beyond :mod:`preftune.errors`: objectives never see a model.
"""

from preftune.objectives.base import Objective, ObjectiveOutput, Term
from preftune.objectives.kto import KTO
from preftune.objectives.likelihood import MATE, MLE, ExMATE, Unlikelihood, log1m_exp
from preftune.objectives.margin import DPO, IPO, Hinge, margin
from preftune.objectives.metrics import group_metrics, pair_metrics
from preftune.objectives.params import param
from preftune.objectives.policy_gradient import RWR, BestOfN, BestOfNNegative, Reinforce
from preftune.objectives.ratio_losses import (
    AOT,
    AOTUnpaired,
    APODown,
    APOZero,
    BCOPair,
    DiscoPOP,
    EXOPair,
    NCAPair,
    Robust,
    SigmoidNorm,
    SPPOHard,
)
from preftune.objectives.records import GroupRecord, PairRecord, Record, SequenceLogProbs, record_for
from preftune.objectives.reference_free import CPO, ORPO, SimPO
from preftune.objectives.registry import ALIASES, TERMS, build, make_term, parse, register
from preftune.objectives.regularisers import BCR, DPOP
from preftune.objectives.within_groups import WithinGroups, pairs_within

# Lower-case constructors, so that Python composition reads like the string form.
mle, ul, mate, exmate = MLE, Unlikelihood, MATE, ExMATE
dpo, ipo, hinge, bcr, dpop = DPO, IPO, Hinge, BCR, DPOP
reinforce, rwr, bon, bon_neg = Reinforce, RWR, BestOfN, BestOfNNegative
simpo, cpo, orpo, sigmoid_norm, robust, exo_pair = SimPO, CPO, ORPO, SigmoidNorm, Robust, EXOPair
discopop, nca_pair, bco_pair, sppo_hard = DiscoPOP, NCAPair, BCOPair, SPPOHard
apo_zero, apo_down, aot, aot_unpaired = APOZero, APODown, AOT, AOTUnpaired
aot_pair = AOTUnpaired  # TRL's older name (ALIASES)
kto = KTO

__all__ = [
    "ALIASES",
    "AOT",
    "BCR",
    "CPO",
    "DPO",
    "DPOP",
    "IPO",
    "KTO",
    "MATE",
    "MLE",
    "ORPO",
    "RWR",
    "TERMS",
    "AOTUnpaired",
    "APODown",
    "APOZero",
    "BCOPair",
    "BestOfN",
    "BestOfNNegative",
    "DiscoPOP",
    "EXOPair",
    "ExMATE",
    "GroupRecord",
    "Hinge",
    "NCAPair",
    "Objective",
    "ObjectiveOutput",
    "PairRecord",
    "Record",
    "Reinforce",
    "Robust",
    "SPPOHard",
    "SequenceLogProbs",
    "SigmoidNorm",
    "SimPO",
    "Term",
    "Unlikelihood",
    "WithinGroups",
    "aot",
    "aot_pair",
    "aot_unpaired",
    "apo_down",
    "apo_zero",
    "bco_pair",
    "bcr",
    "bon",
    "bon_neg",
    "build",
    "cpo",
    "discopop",
    "dpo",
    "dpop",
    "exmate",
    "exo_pair",
    "group_metrics",
    "hinge",
    "ipo",
    "kto",
    "log1m_exp",
    "make_term",
    "margin",
    "mate",
    "mle",
    "nca_pair",
    "orpo",
    "pair_metrics",
    "pairs_within",
    "param",
    "parse",
    "record_for",
    "register",
    "reinforce",
    "robust",
    "rwr",
    "sigmoid_norm",
    "simpo",
    "sppo_hard",
    "ul",
]
