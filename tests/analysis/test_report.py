"""write_gradient_report: every file, valid PNGs, numbers that match token_weights, nothing on a bad spec."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import pytest
import torch

from preftune.analysis import GradientReport, shared_token_weight, token_weights, write_gradient_report
from preftune.analysis.synthetic import margin_pairs, shared_prefix_pairs, uniform_pairs
from preftune.errors import SpecError
from preftune.objectives import parse

SPECS = ["mle", "ul", "exmate", "dpo", " dpo+exmate "]
ANALYSES = ["weight_vs_probability", "dpo_weight_vs_margin", "logit_space", "literal_similarity"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[GradientReport, Path]:
    out = tmp_path_factory.mktemp("gradients") / "nested" / "out"
    return write_gradient_report(SPECS, out), out


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def _curve(rows: list[dict[str, str]], objective: str, series: str) -> tuple[list[float], list[float]]:
    picked = [r for r in rows if r["objective"] == objective and r["series"] == series]
    return [float(r["x"]) for r in picked], [float(r["value"]) for r in picked]


def test_report_writes_every_file_and_nothing_else(report: tuple[GradientReport, Path]) -> None:
    result, out = report
    expected = {f"{name}.{ext}" for name in ANALYSES for ext in ("png", "csv")} | {"gradient_analysis.json"}
    assert {p.name for p in result.files} == expected
    assert {p.name for p in out.iterdir()} == expected  # no temporary files left behind
    assert all(p.parent == out and p.stat().st_size > 0 for p in result.files)


def test_pngs_are_valid_images_of_non_trivial_size(report: tuple[GradientReport, Path]) -> None:
    _, out = report
    for name in ANALYSES:
        data = (out / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 1000 and height >= 500, (name, width, height)
        assert len(data) > 40_000, name  # a blank canvas compresses to a few kB


def test_csv_numbers_match_token_weights(report: tuple[GradientReport, Path]) -> None:
    _, out = report
    rows = _csv(out / "weight_vs_probability.csv")
    assert set(rows[0]) == {"objective", "x", "series", "value"}
    assert {r["objective"] for r in rows} == {s.strip() for s in SPECS}
    for spec in ("ul", "exmate", "dpo+exmate"):
        ps, bad = _curve(rows, spec, "w_bad")
        weights = token_weights(spec, uniform_pairs(torch.tensor(ps, dtype=torch.float64), n=10))
        assert weights.bad is not None
        assert bad == pytest.approx(weights.bad[:, 0].tolist(), rel=1e-12)

    margins = _csv(out / "dpo_weight_vs_margin.csv")
    hs, good = _curve(margins, "dpo(beta=0.5)", "w_good")
    weights = token_weights("dpo(beta=0.5)", margin_pairs(torch.tensor(hs, dtype=torch.float64), n=10))
    assert good == pytest.approx(weights.good[:, 0].tolist(), rel=1e-12)

    similar = _csv(out / "literal_similarity.csv")
    record, shared = shared_prefix_pairs(10)
    for spec in ("dpo", "exmate"):
        _, total = _curve(similar, spec, "net_total")
        net = shared_token_weight(token_weights(spec, record), shared)
        assert total == pytest.approx(net.sum(-1).tolist(), abs=1e-15)
    assert all(v == 0.0 for v in _curve(similar, "dpo", "net_per_token")[1])


def test_json_holds_descriptions_headline_and_the_csv_numbers(report: tuple[GradientReport, Path]) -> None:
    result, out = report
    document = json.loads((out / "gradient_analysis.json").read_text())
    assert [o["describe"] for o in document["objectives"]] == [parse(s).describe() for s in SPECS]
    assert document["headline"] == result.headline
    assert set(document["analyses"]) == set(ANALYSES)
    for name in ANALYSES:
        rows = _csv(out / f"{name}.csv")
        stored = document["analyses"][name]["rows"]
        assert len(stored) == len(rows) > 0
        for row, saved in zip(rows, stored, strict=True):
            assert (row["objective"], row["series"]) == (saved["objective"], saved["series"])
            assert (float(row["x"]), float(row["value"])) == (saved["x"], saved["value"])


def test_headline_reads_the_numbers(report: tuple[GradientReport, Path]) -> None:
    result, _ = report
    text = "\n".join(result.headline)
    assert "ul: good-token weight 0.1 at p=0.5; bad-token weight 9.9 at p=0.99, 99.9 at p=0.999: unbounded" in text
    assert (
        "exmate: good-token weight 0.1 at p=0.5; bad-token weight 0.00495 at p=0.99, 0.005 at p=0.999: bounded" in text
    )
    assert "dpo: net weight on shared tokens is 0 at every s" in text
    assert "ul: net weight per shared token -0.05" in text


def test_a_bad_spec_fails_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "report"
    with pytest.raises(SpecError, match="dpoo"):
        write_gradient_report(["mle", "dpo", "dpoo"], out)
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("untouched")
    for bad in (["mle", "reinforce"], [], ["dpo + -exmate"]):
        with pytest.raises(SpecError):
            write_gradient_report(bad, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
