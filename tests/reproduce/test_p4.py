"""P4's ranking study (Chen et al. 2024) on the OpenAssistant trees: the study's numbers, its verdicts, the
report wired end to end on the tiny models (with (c)'s runs: tests/reproduce/test_p4_bcr.py), and the CLI."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from preftune.cli.main import main
from preftune.judging.ranking import comparisons_bound
from preftune.reproduce.gold import GoldEvaluator
from preftune.reproduce.p4 import SCALES, reproduce_p4
from preftune.reproduce.p4_ranking import DEFAULT_TREES, SCORE, read_groups, run_ranking_study, tree_pairs
from preftune.reproduce.p4_report import calls_section, ranking_section
from preftune.reproduce.verdicts import HOLDS, INCONCLUSIVE, NOT_RUN, UNTESTABLE, VERDICTS, Interval
from tests.reproduce.conftest import bundled_rows

pytestmark = pytest.mark.skipif(not DEFAULT_TREES.is_file(), reason="the shared OpenAssistant trees are not here")


def _gold(low: float = 0.6) -> GoldEvaluator:
    return GoldEvaluator(Path("gold"), Interval(0.7, low, 0.8), 0.5, 100, 400, 0, "hh", 1.0, True)


def test_read_groups_orders_replies_by_human_rank() -> None:
    groups = read_groups(DEFAULT_TREES, trees=3, turns="all")
    rows = [json.loads(line) for line in DEFAULT_TREES.read_text(encoding="utf-8").splitlines()[:1]]
    first = rows[0]["prompt"]
    ranked = sorted((r["rank"], r["text"]) for r in first["replies"] if r.get("rank") is not None and not r["deleted"])
    assert groups[0].prompt[0]["content"] == first["text"]
    assert [groups[0].replies[i] for i in groups[0].truth] == [text for _, text in ranked]
    assert all(len(g.replies) >= 2 and sorted(g.truth) == list(range(len(g.replies))) for g in groups)
    assert len(read_groups(DEFAULT_TREES, trees=3, turns="first")) == 3 < len(groups)
    assert len(tree_pairs(DEFAULT_TREES, trees=3)) > len(groups)
    in_file_order = read_groups(DEFAULT_TREES, trees=40, seed=None)
    assert all(g.truth == tuple(range(len(g.replies))) for g in in_file_order)  # the file lists replies by rank
    shuffled = read_groups(DEFAULT_TREES, trees=40)
    assert any(g.truth != tuple(range(len(g.replies))) for g in shuffled)  # so they are shuffled before ranking
    assert [sorted(g.replies) for g in shuffled] == [sorted(g.replies) for g in in_file_order]


def _oracle(groups):
    """A scorer that knows the human ranks: −(the reply's place in the human order)."""
    place = {(g.prompt_text, g.replies[i]): -k for g in groups for k, i in enumerate(g.truth)}
    return lambda prompts, replies: [
        place["\n\n".join(f"{m['role']}: {m['content']}" for m in p), r] for p, r in zip(prompts, replies, strict=True)
    ]


def test_ranking_study_counts_calls_and_agreement() -> None:
    groups = read_groups(DEFAULT_TREES, trees=12, turns="first")
    study = run_ranking_study(groups, _oracle(groups))
    assert study.records[SCORE].taus == [1.0] * len(groups)  # the oracle scorer ranks exactly as people did
    assert all(study.records[SCORE].top1)
    for judge in study.judges:
        ipr, robin = study.records[f"ipr:{judge}"], study.records[f"round_robin:{judge}"]
        for n, calls, rr in zip(study.sizes, ipr.calls, robin.calls, strict=True):
            assert calls <= 2 * comparisons_bound(n) and rr == n * (n - 1)  # each comparison: two ordered calls
        assert all(-1.0 <= t <= 1.0 for t in ipr.taus)
    longer = study.records["ipr:longer"].taus
    shorter = study.records["ipr:shorter"].taus
    assert [math.copysign(1, a) for a, b in zip(longer, shorter, strict=True) if a] == [
        -math.copysign(1, b) for a, b in zip(longer, shorter, strict=True) if a
    ]  # opposite judges rank in opposite orders (lengths differ in these replies)


def test_verdicts_follow_the_numbers() -> None:
    groups = read_groups(DEFAULT_TREES, trees=40, turns="all")
    study = run_ranking_study(groups, _oracle(groups))
    calls = calls_section(study, ())
    assert calls.verdict == HOLDS, calls.reason  # N ≥ 3 appears, where insertion saves calls
    ranking = ranking_section(study, _gold(), ())
    assert ranking.verdict == "does not hold here", ranking.reason  # nothing beats an oracle's scores
    flat = run_ranking_study(groups, lambda prompts, replies: [0.0] * len(replies))
    flat.records = {k: v for k, v in flat.records.items() if k in {"ipr:random", SCORE} or k.startswith("round")}
    flat.records["ipr:longer"] = flat.records["ipr:shorter"] = flat.records["ipr:random"]
    assert ranking_section(flat, _gold(), ()).verdict in {UNTESTABLE, "does not hold here"}


@pytest.mark.slow
def test_p4_report_end_to_end(tmp_path: Path, gold_files: tuple[Path, Path]) -> None:
    """The test scale with the tiny models: every section, computed verdicts, (c)'s runs and curves, (d) the
    pipeline. (c)'s and (d)'s runs train on bundled rows 40..120, the gold model on rows 0..40 (as P1's test:
    disjoint prompts)."""
    source, cache = gold_files
    (tmp_path / "train.jsonl").write_text(bundled_rows(40, 120), encoding="utf-8")
    training = copy.deepcopy(SCALES["test"].bcr.training)
    training["data"]["train"] = str(tmp_path / "train.jsonl")
    pipeline = SCALES["test"].pipeline
    pipeline_training = copy.deepcopy(pipeline.training)
    pipeline_training["data"]["train"] = str(tmp_path / "train.jsonl")
    scale = replace(
        SCALES["test"],
        bcr=replace(SCALES["test"].bcr, training=training),
        pipeline=replace(pipeline, training=pipeline_training),
    )
    results = reproduce_p4(scale, tmp_path / "out", say=lambda _: None, gold_source=source, cache=cache)
    assert list(results["claims"]) == ["calls", "ranking", "bcr", "pipeline"]
    assert results["claims"]["calls"]["verdict"] in VERDICTS and results["claims"]["calls"]["data"]["checks"]
    assert results["claims"]["ranking"]["verdict"] in VERDICTS and results["claims"]["ranking"]["data"]["checks"]
    bcr = results["claims"]["bcr"]
    assert bcr["verdict"] == INCONCLUSIVE and len(bcr["data"]["checks"]) == 1  # one seed: no interval, by design
    assert bcr["figures"] == ["p4_bcr_curves.png"]
    runs = results["bcr"]["runs"]
    assert list(runs) == ["dpo", "dpo + bcr(delta=0.05)", "dpo + dpop"]
    prompts = len(results["bcr"]["start"]["answers"])
    for variant, run in runs.items():
        [seed] = run["per_seed"]
        assert [p["step"] for p in seed["curve"]] == [0, 1, 2], variant
        assert len(seed["gold_scores"]) == len(seed["answers"]) == prompts == SCALES["test"].bcr.prompts
        assert [s for s, _ in bcr["data"]["curves"][variant]["chosen_drift"]] == [0, 1, 2]
        assert set(bcr["data"]["win_rates_vs_start"][variant]) == {"gold", "longer"}
    assert results["seconds"]["bcr"] > 0
    out = tmp_path / "out"
    for name in ("p4_ranking.png", "p4_bcr_curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "**The gold evaluator.**" in text and "_Not run:" not in text and "![p4_ranking.png]" in text
    assert "![p4_bcr_curves.png]" in text and "**The rule** (in full" in text and "- **(c)** For each budget δ" in text
    assert "**Verdict: inconclusive.**" in text
    assert json.loads((out / "results.json").read_text(encoding="utf-8")) == json.loads(json.dumps(results))
    assert len(results["ranking"]["sizes"]) == SCALES["test"].trees
    _check_pipeline(results, text, scale.pipeline)


def _check_pipeline(results: dict, text: str, settings: Any) -> None:
    """(d) ran: completions generated and ranked into pairs, both runs trained at every seed and scored by gold."""
    claim = results["claims"]["pipeline"]
    assert claim["verdict"] in VERDICTS and claim["verdict"] != NOT_RUN
    assert [c["name"] for c in claim["data"]["checks"]] == ["gold: pipeline beats original head to head"]
    study = claim["data"]["study"]
    assert study["generation"]["prompts"] == settings.training["data"]["train_size"]
    assert study["generation"]["completions"] == settings.n * study["generation"]["prompts"]
    assert 0 < study["ranking"]["pairs"] <= study["generation"]["prompts"]
    assert study["original_pairs"]["pairs"] == settings.training["data"]["train_size"]
    prompts = len(study["start"]["answers"])
    assert prompts == settings.prompts
    for name in ("pipeline", "original"):
        assert [r["seed"] for r in study["runs"][name]] == list(settings.seeds)
        assert all("accuracy" in r["metrics"] and len(r["answers"]) == prompts for r in study["runs"][name])
        assert [len(s) for s in study["gold_scores"][name]] == [prompts] * len(settings.seeds)
    assert claim["data"]["head_to_head"]["gold"]["prompts"] == prompts
    assert claim["data"]["judge_tau"] is not None  # (b) ranked with the same judge
    assert "## (d) The whole pipeline beats training on the original pairs" in text
    assert "GPT-4" in text and "pays for length" in text and "- **(d)** one check" in text
    assert results["seconds"]["pipeline"] > 0


def test_cli_knows_p4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "P9", f"out={tmp_path / 'out'}"]) == 2
    assert "P4" in capsys.readouterr().err
    assert main(["reproduce", "p4", "scale=test", f"out={tmp_path}"]) == 2  # test is for the suite only
