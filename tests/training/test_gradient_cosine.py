"""P3's Lemma 6.2 on real batches (docs/methods.md §3): the cosine between ∇θ log π(y_w) and ∇θ log π(y_l).

:func:`preftune.modeling.gradient_cosine.gradient_cosines` against a hand-checkable case (identical
responses: cosine 1) and against a brute-force reference (two ``backward()`` calls per pair, the
``.grad`` fields flattened), for full and LoRA models, padded and packed batches; the model is left
as it was found. Then the trainer's hook (``eval.gradient_cosine_every``) through a real run, its
records in the checkpoints and the stage record, and its config checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from preftune.modeling import apply_lora, load_model, load_tokenizer, sequence_logprobs
from preftune.modeling.gradient_cosine import gradient_cosines
from tests.modeling.batches import pipeline_batch
from tests.training.common import DataFiles, full_overrides, online_overrides, train, trainer_state

EXAMPLES = [
    ("Name a colour.", "Blue.", "I will not."),
    ("What is 2+2?", "4", "Five, obviously, and I am sure."),
    ("Say hello to my friend Ada.", "Hello, Ada!", "No."),
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-random")


def _lora(model: nn.Module, dropout: float = 0.0) -> nn.Module:
    """LoRA on ``model`` with both factors random (at init B = 0 and A's gradient vanishes)."""
    model = apply_lora(model, rank=4, alpha=8, dropout=dropout)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    return model


def _model(kind: str) -> nn.Module:
    model = load_model("tiny-random", dtype="float32")
    return _lora(model) if kind == "lora" else model


def _flat_grad(model: nn.Module, value: torch.Tensor) -> torch.Tensor:
    """``value``'s gradient over the trainable parameters by ``backward()``, as one float64 vector."""
    model.zero_grad(set_to_none=True)
    value.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten().double() for p in params])


def _brute_force(model: nn.Module, batch) -> torch.Tensor:
    """Per pair, a fresh forward pass and ``backward()`` for each side; the flattened gradients' cosine."""
    model.eval()
    out = []
    for i in range(batch.num_examples):
        g_w = _flat_grad(model, sequence_logprobs(model, batch, with_tokens=False)[0].sum[i])
        g_l = _flat_grad(model, sequence_logprobs(model, batch, with_tokens=False)[1].sum[i])
        out.append(torch.nn.functional.cosine_similarity(g_w, g_l, dim=0))
    model.zero_grad(set_to_none=True)
    return torch.stack(out)


@pytest.mark.parametrize("layout", ["padded", "shared"])
@pytest.mark.parametrize("kind", ["full", "lora"])
def test_identical_responses_have_cosine_one(tokenizer, kind: str, layout: str) -> None:
    """y_w = y_l gives the same gradient twice: cosine 1 exactly (to rounding); a real pair does not."""
    examples = [EXAMPLES[0], ("Name a colour.", "Blue.", "Blue."), EXAMPLES[1]]
    cosines = gradient_cosines(_model(kind), pipeline_batch(tokenizer, examples, layout))
    assert cosines.shape == (3,) and cosines.dtype == torch.float64
    assert cosines[1].item() == pytest.approx(1.0, abs=1e-5)
    assert (cosines[[0, 2]] < 0.99).all(), cosines


@pytest.mark.parametrize("layout", ["padded", "shared"])
@pytest.mark.parametrize("kind", ["full", "lora"])
def test_cosines_match_two_backward_passes_per_pair(tokenizer, kind: str, layout: str) -> None:
    model = _model(kind)
    batch = pipeline_batch(tokenizer, EXAMPLES, layout)
    cosines = gradient_cosines(model, batch)
    expected = _brute_force(model, batch)
    torch.testing.assert_close(cosines, expected, atol=1e-5, rtol=0)
    assert cosines.std() > 0.01, "the pairs differ: a mix-up of pairs would show"


def test_the_model_is_left_as_it_was(tokenizer) -> None:
    """No ``.grad`` written (absent ones stay absent, present ones unchanged), weights and every module's
    train/eval flag as before; eval mode inside (LoRA dropout 0.5 would make two calls differ); works
    under ``torch.no_grad()``."""
    model = _lora(load_model("tiny-random", dtype="float32"), dropout=0.5)
    model.train()
    frozen = next(m for name, m in model.named_modules() if name.endswith("layers.0.mlp"))
    frozen.eval()
    modes = {name: m.training for name, m in model.named_modules()}
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    lora = [p for name, p in model.named_parameters() if "lora_A" in name]
    lora[0].grad = torch.full_like(lora[0], 3.0)
    batch = pipeline_batch(tokenizer, EXAMPLES, "shared")

    first = gradient_cosines(model, batch)
    with torch.no_grad():
        second = gradient_cosines(model, batch)

    torch.testing.assert_close(first, second, atol=1e-12, rtol=0)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert torch.equal(lora[0].grad, torch.full_like(lora[0], 3.0))
    assert all(p.grad is None for p in model.parameters() if p is not lora[0])
    assert all(torch.equal(p, weights[name]) for name, p in model.named_parameters())


COSINES = {"eval.gradient_cosine_every": 2, "eval.gradient_cosine_pairs": 3}


def _start_values(overrides: list[str]) -> list[float]:
    """The cosines of the untrained model on the run's first 3 held-out pairs, one pair per batch as the hook
    measures them (the run's own data pipeline and batch layout)."""
    from preftune.cli.config import load_config
    from preftune.data import Batcher
    from preftune.modeling.attention import attention_length
    from preftune.run.inputs import data_kind, load_examples, tokenize_inputs

    config = load_config(None, overrides)
    model, tokenizer = load_model("tiny-random", dtype="float32"), load_tokenizer("tiny-random")
    inputs = tokenize_inputs(load_examples(config.data, data_kind(config)), tokenizer, config.data)
    batcher = Batcher(tokenizer.pad_token_id, config.data.layout, attention_length(model))
    return [gradient_cosines(model, batcher([pair], [i])).item() for i, pair in enumerate(inputs.held_out[:3])]


def test_the_hook_logs_at_the_start_every_k_steps_and_at_the_end(
    data_files: DataFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Full fine-tuning, 4 steps, every 2: records at steps 0, 2 and 4 over 3 held-out pairs; the first equals
    the untrained model's cosines; the checkpoint of step 2 holds the records so far (what a resumed run
    reads back); the stage record (``outcome.json``) holds them all."""
    out = tmp_path / "run"
    overrides = full_overrides(data_files, out, **COSINES)
    outcome = train(overrides)
    records = outcome["stages"][0]["gradient_cosines"]
    assert [r["step"] for r in records] == [0, 2, 4]
    for record in records:
        values = record["values"]
        assert record["count"] == len(values) == 3
        assert all(-1.0 <= v <= 1.0 for v in values)
        assert record["mean"] == pytest.approx(sum(values) / 3)
        assert record["stderr"] == pytest.approx(float(torch.tensor(values).std() / 3**0.5))
        assert record["nonpositive"] == sum(v <= 0 for v in values)
    assert records[0]["values"] == pytest.approx(_start_values(overrides), abs=1e-5)
    assert records[-1]["values"] != pytest.approx(records[0]["values"], abs=1e-4), "training moves the cosines"
    assert [r["step"] for r in trainer_state(out, 2)["hooks"]["gradient_cosines"]["records"]] == [0, 2]
    saved = json.loads((out / "outcome.json").read_text(encoding="utf-8"))
    assert saved["stages"][0]["gradient_cosines"] == records
    summary = (out / "summary.md").read_text(encoding="utf-8")
    last = records[-1]
    assert f"| 4 | {last['mean']:.4f} ± {last['stderr']:.4f} | {last['nonpositive']} of 3 |" in summary
    err = capsys.readouterr().err
    assert "gradient cosine at step 0/4" in err and "gradient cosine at step 4/4" in err


def test_a_resumed_run_keeps_the_earlier_records(data_files: DataFiles, tmp_path: Path) -> None:
    """Crashed after step 3 and resumed from step 2's checkpoint: steps 0 and 2 read back, step 4 measured."""
    from tests.training.test_resume import Crash, crash_after

    cut = full_overrides(data_files, tmp_path / "cut", **COSINES)
    with pytest.raises(Crash):
        train(cut, callbacks=[crash_after(3)])
    before = trainer_state(tmp_path / "cut", 2)["hooks"]["gradient_cosines"]["records"]
    again = train([*cut, "resume=true"])
    records = again["stages"][0]["gradient_cosines"]
    assert [r["step"] for r in records] == [0, 2, 4]
    assert records[:2] == before


def test_off_by_default(data_files: DataFiles, tmp_path: Path) -> None:
    outcome = train(full_overrides(data_files, tmp_path / "run", **{"optim.max_steps": 1}))
    assert "gradient_cosines" not in outcome["stages"][0]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("eval.gradient_cosine_every=-1", "eval.gradient_cosine_every must be >= 0, got -1"),
        ("eval.gradient_cosine_pairs=0", "eval.gradient_cosine_pairs must be >= 1, got 0"),
    ],
)
def test_bad_settings_are_refused(
    data_files: DataFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, message: str
) -> None:
    from preftune.cli.main import main

    out = tmp_path / "run"
    assert main(["train", *full_overrides(data_files, out), setting]) == 2
    assert f"error: {message}" in capsys.readouterr().err
    assert not out.exists()


def test_an_on_policy_run_logs_the_cosine_across_rounds(tmp_path: Path) -> None:
    """2 rounds of 4 groups, 2 per step: every step is measured once, step 2 (the end of a round that is not
    the last) included, and the records reach the stage's record."""
    out = tmp_path / "run"
    outcome = train(
        online_overrides(
            out,
            {"online.labeller": "length", "eval.gradient_cosine_every": 1, "eval.gradient_cosine_pairs": 2},
        )
    )
    records = outcome["stages"][0]["gradient_cosines"]
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    assert all(r["count"] == 2 and all(-1.0 <= v <= 1.0 for v in r["values"]) for r in records)
    saved = json.loads((out / "outcome.json").read_text(encoding="utf-8"))
    assert saved["stages"][0]["gradient_cosines"] == records
