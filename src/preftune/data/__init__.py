"""Reading, validating, pairing and tokenising preference data (rows -> examples -> token batches).

    >>> from preftune.data import load_preference_data, tokenize_examples, collate, bundled_path
    >>> examples, summary = load_preference_data(bundled_path("hh-harmless"))
    >>> pairs, summary = tokenize_examples(examples, tokenizer, max_length=512, summary=summary)  # groups of 2
    >>> batch = collate(pairs[:8], range(8), pad_id=tokenizer.pad_token_id)
    >>> print(summary)

Imports nothing of preftune beyond :mod:`preftune.errors`: data never sees a model.
"""

from preftune.data.batch import Batch, PackedBatch, TokenBatch
from preftune.data.batcher import LAYOUTS, Batcher, build_batch
from preftune.data.collate import collate
from preftune.data.examples import Message, Origin, PreferenceExample
from preftune.data.formats import FORMATS, detect_format
from preftune.data.groups import TokenizedGroup, TokenizedPair
from preftune.data.labelled import LabelSpec
from preftune.data.load import load_preference_data
from preftune.data.packing import pack
from preftune.data.ranked import PAIRINGS, rank_pairs
from preftune.data.resources import bundled_path
from preftune.data.sampling import length_grouped_batches
from preftune.data.sources import RawRows, load_rows
from preftune.data.split import SplitSummary, hold_out
from preftune.data.summary import DataSummary, LengthStats
from preftune.data.tokenize import end_of_turn_ids, tokenize_examples
from preftune.data.unpaired import load_unpaired

__all__ = [
    "FORMATS",
    "LAYOUTS",
    "PAIRINGS",
    "Batch",
    "Batcher",
    "DataSummary",
    "LabelSpec",
    "LengthStats",
    "Message",
    "Origin",
    "PackedBatch",
    "PreferenceExample",
    "RawRows",
    "SplitSummary",
    "TokenBatch",
    "TokenizedGroup",
    "TokenizedPair",
    "build_batch",
    "bundled_path",
    "collate",
    "detect_format",
    "end_of_turn_ids",
    "hold_out",
    "length_grouped_batches",
    "load_preference_data",
    "load_rows",
    "load_unpaired",
    "pack",
    "rank_pairs",
    "tokenize_examples",
]
