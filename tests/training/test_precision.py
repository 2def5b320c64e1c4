"""mixed_precision=auto: bf16 exactly where the hardware multiplies bf16 natively, and then it takes effect."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from preftune.modeling import precision
from preftune.modeling.precision import (
    NATIVE_BF16_FLAGS,
    auto_mixed_precision,
    cpu_flags,
    cpu_has_native_bf16,
    cpu_model,
)
from tests.training.common import checkpoint_weights, lora_overrides, model_weights, train, trainer_state

SAPPHIRE_RAPIDS = "fpu sse2 avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8"
EPYC_ROME = "fpu sse2 avx avx2 fma sha_ni"  # Zen 2: AVX2, no bf16 instructions


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    return path


def test_cpu_flags_reads_the_flags_line(tmp_path: Path) -> None:
    flags = cpu_flags(_cpuinfo(tmp_path, SAPPHIRE_RAPIDS))
    assert flags == set(SAPPHIRE_RAPIDS.split())
    assert cpu_flags(tmp_path / "missing") == set()


def test_cpu_model_reads_the_model_name_line(tmp_path: Path) -> None:
    assert cpu_model(_cpuinfo(tmp_path, EPYC_ROME)) == "test"
    assert cpu_model(tmp_path / "missing")  # the platform's guess, never empty


@pytest.mark.parametrize(("flags", "native"), [(SAPPHIRE_RAPIDS, True), ("avx2 avx512_bf16", True), (EPYC_ROME, False)])
def test_without_torch_probes_the_flags_decide(tmp_path: Path, monkeypatch, flags: str, native: bool) -> None:
    monkeypatch.setattr(precision, "_torch_probes", lambda: [])
    assert cpu_has_native_bf16(_cpuinfo(tmp_path, flags)) is native


def test_torch_probe_answers_first(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(precision, "_torch_probes", lambda: [lambda: False, lambda: True])
    assert cpu_has_native_bf16(_cpuinfo(tmp_path, EPYC_ROME)) is True
    monkeypatch.setattr(precision, "_torch_probes", lambda: [lambda: False])
    assert cpu_has_native_bf16(_cpuinfo(tmp_path, SAPPHIRE_RAPIDS)) is False


@pytest.mark.skipif(not cpu_flags(), reason="no /proc/cpuinfo flags to compare with")
def test_torch_and_proc_cpuinfo_agree_on_this_cpu() -> None:
    # torch's probe and the kernel's flags describe the same CPU: a disagreement means one of them
    # is read wrongly here (a renamed flag, a probe that lies), and auto would choose by accident.
    assert cpu_has_native_bf16() == bool(cpu_flags() & set(NATIVE_BF16_FLAGS))


@pytest.mark.parametrize(
    ("cuda", "cuda_bf16", "cpu_bf16", "expected"),
    [
        (True, True, False, "bf16"),
        (True, False, True, "no"),
        (False, False, True, "bf16"),
        (False, False, False, "no"),
    ],
)
def test_auto_mixed_precision(monkeypatch, cuda: bool, cuda_bf16: bool, cpu_bf16: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda *a, **k: cpu_bf16)
    assert auto_mixed_precision() == expected


def test_the_chosen_precision_changes_the_matmul_dtype_under_accelerate() -> None:
    """What auto selects reaches the products: a Linear under the run's autocast computes in bf16
    on a CPU with native bf16 (and stays float32 elsewhere)."""
    from preftune.training import forget_accelerator_state, make_accelerator

    if torch.cuda.is_available():
        pytest.skip("checks the CPU path")
    chosen = auto_mixed_precision()
    try:
        accelerator = make_accelerator(chosen, cpu=True)
        layer = torch.nn.Linear(64, 64)
        with accelerator.autocast():
            out = layer(torch.randn(8, 64))
    finally:
        forget_accelerator_state()
    assert layer.weight.dtype == torch.float32  # master weights stay float32; only the product is bf16
    assert out.dtype == (torch.bfloat16 if chosen == "bf16" else torch.float32)
    assert chosen == ("bf16" if cpu_has_native_bf16() else "no")


# --- examples/demo_size.py: `make demo` sized from the measured speed ---------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_size():
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_size", ROOT / "examples" / "demo_size.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_holds_out_more_on_a_faster_cpu_and_fits_the_budget(demo_size) -> None:
    budget = 480.0
    chosen = [demo_size.choose_held_out(rate, "no", budget) for rate in (100, 200, 300, 600, 5000)]
    assert chosen == sorted(chosen) and chosen[0] == demo_size.MIN_HELD_OUT and chosen[-1] == demo_size.MAX_HELD_OUT
    for rate, held_out in zip((100, 200, 300, 600, 5000), chosen, strict=True):
        assert held_out % demo_size.STEP == 0
        if held_out > demo_size.MIN_HELD_OUT:  # a chosen size fits; one more step would not
            assert demo_size.run_seconds(held_out, rate, "no") <= budget
        if held_out < demo_size.MAX_HELD_OUT:
            assert demo_size.run_seconds(held_out + demo_size.STEP, rate, "no") > budget


def test_demo_size_prints_overrides_that_the_demo_config_accepts(demo_size, monkeypatch, capsys) -> None:
    from preftune.cli.config import load_config

    monkeypatch.setattr(demo_size, "measure_tokens_per_s", lambda precision: 250.0)
    monkeypatch.setattr(precision, "auto_mixed_precision", lambda: "no")
    assert demo_size.main(["--budget", "600"]) == 0
    out, err = capsys.readouterr()
    config = load_config(ROOT / "examples" / "demo.yaml", out.split())
    expected = demo_size.choose_held_out(250.0, "no", 600)  # the mocked calibration takes no time
    assert config.data.eval_size == expected and config.data.train_size == demo_size.TRAIN_PAIRS
    assert config.optim.mixed_precision == "no"
    assert f"holding out {expected}" in err and "250 tokens/s in a float32 forward pass" in err


# --- a real run: bf16 autocast against float32 ------------------------------------------------------------------------

STEPS = 4
LOSS_TOLERANCE = 0.02  # |bf16 loss - float32 loss| at every step, for DPO's loss of ~0.69 (see the test)
VOCAB = 49152
LOGPS_TOLERANCE = 1e-2  # relative, for a sequence's summed log-probability (about -12 nats here)


@dataclass(frozen=True)
class PrecisionRun:
    out: Path
    history: list[dict]
    linear_dtypes: set[torch.dtype]  # what the decoder's Linear layers returned in the training steps' forward passes
    head_dtypes: set[torch.dtype]  # what the LM head returned there (float32: it runs outside autocast)
    logps_dtypes: set[torch.dtype]  # the policy's summed log-probs there, which the loss is computed from
    auto_was_bf16: bool  # auto chose bf16 by itself (no substitute answer)


def _precision_run(data_files, folder: Path, setting: str) -> PrecisionRun:
    """``setting`` is ``auto`` (made to mean bf16 where this machine's answer is float32) or ``no``."""
    from preftune.run import train as run_module
    from preftune.training.loop import PolicyLogProbs

    auto_was_bf16 = run_module._mixed_precision("auto") == "bf16"
    dtypes: set[torch.dtype] = set()
    head_dtypes: set[torch.dtype] = set()
    logps_dtypes: set[torch.dtype] = set()

    def record(module: torch.nn.Module, args: object, output: object) -> None:
        if not torch.is_grad_enabled():
            return
        if isinstance(module, torch.nn.Linear) and isinstance(output, torch.Tensor):
            # the head is the one Linear onto the vocabulary (49,152 in tiny-random as in SmolLM2)
            (head_dtypes if module.out_features == VOCAB else dtypes).add(output.dtype)
        elif isinstance(module, PolicyLogProbs):
            logps_dtypes.add(output.sum.dtype)

    overrides = lora_overrides(
        data_files,
        folder / setting,
        objective="dpo",
        save_every=STEPS,
        merge_lora="false",
        **{"optim.max_steps": STEPS, "optim.warmup_ratio": 0.0, "eval.samples": 0, "optim.mixed_precision": setting},
    )
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        with pytest.MonkeyPatch.context() as patch:
            if setting == "auto" and not auto_was_bf16:  # bf16 autocast runs on any CPU, only slower
                patch.setattr(precision, "auto_mixed_precision", lambda: "bf16")
            train(overrides)
    finally:
        handle.remove()
    history = trainer_state(folder / setting, STEPS)["history"]
    return PrecisionRun(folder / setting, history, dtypes, head_dtypes, logps_dtypes, auto_was_bf16)


@pytest.fixture(scope="module")
def precision_runs(data_files, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, PrecisionRun]]:
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        pytest.skip("a CUDA GPU without bf16: accelerate would refuse bf16 there")
    from preftune.training import forget_accelerator_state

    folder = tmp_path_factory.mktemp("precision")
    try:
        yield {setting: _precision_run(data_files, folder, setting) for setting in ("auto", "no")}
    finally:
        forget_accelerator_state()  # leave no bf16 state to whatever runs next in this process


def test_mixed_precision_setting_follows_auto_mixed_precision(monkeypatch) -> None:
    from preftune.run.train import _mixed_precision

    for answer in ("bf16", "no"):
        monkeypatch.setattr(precision, "auto_mixed_precision", lambda answer=answer: answer)
        assert _mixed_precision("auto") == answer
    assert [_mixed_precision(s) for s in ("no", "bf16", "fp16")] == ["no", "bf16", "fp16"]  # given, kept


@pytest.mark.skipif(
    torch.cuda.is_available() or not cpu_has_native_bf16(),
    reason="this CPU has no native bf16 (AMX or AVX-512 BF16): auto keeps float32 here, and the bf16 "
    "tolerance tests below run with auto's answer made bf16",
)
def test_auto_trains_in_bf16_by_itself_on_a_cpu_with_native_bf16(precision_runs) -> None:
    run = precision_runs["auto"]
    assert run.auto_was_bf16
    assert run.linear_dtypes == {torch.bfloat16}


def test_bf16_run_ran_under_autocast(precision_runs) -> None:
    """run_config.json keeps ``auto`` as written, so the signal is the computation itself: in the bf16
    run every Linear of the decoder returned bf16 (float32 in the other run) and the LM head float32
    (it runs outside autocast, so bf16 logits cannot drown a margin: issue 19), and the
    step-1 log-probabilities are not bit-equal to float32's. (The step-1 loss is: DPO starts at
    ln 2 in any precision, the LoRA policy being its own reference.)"""
    bf16, fp32 = precision_runs["auto"], precision_runs["no"]
    assert bf16.linear_dtypes == {torch.bfloat16} and fp32.linear_dtypes == {torch.float32}
    assert bf16.head_dtypes == fp32.head_dtypes == {torch.float32}
    assert json.loads((bf16.out / "run_config.json").read_text(encoding="utf-8"))["optim"]["mixed_precision"] == "auto"
    first_bf16, first_fp32 = bf16.history[0]["logps/chosen"], fp32.history[0]["logps/chosen"]
    assert first_bf16 != first_fp32
    assert first_bf16 == pytest.approx(first_fp32, rel=LOGPS_TOLERANCE)


def test_bf16_losses_stay_within_tolerance_of_float32(precision_runs) -> None:
    """Same seed, same data, same steps: each step's loss within ``LOSS_TOLERANCE`` (0.02) of float32's.

    Why 0.02: bf16 keeps 8 significant bits, so each rounding of an operand errs by up to 2^-8 ≈
    3.9e-3 relative; the products accumulate in float32 (oneDNN, AMX), so a layer's output carries
    about that relative error, not one growing with the width. A sequence's summed log-probability
    (about -12 nats over ~17 tokens) then moves by ~0.01-0.05 nats. DPO's loss -log σ(β·m) moves by at
    most β = 0.1 per nat of the margin m, and m combines four such sums (policy and reference, chosen
    and rejected, the latter two under the same autocast so their errors largely cancel): ≤ 0.1 × 0.2
    = 0.02 at worst, per step. Four steps of AdamW at lr 1e-2 let the trajectories drift apart only by
    updates of the same relative size. Measured on a Xeon with AMX: at most 2.4e-3 (step 2)."""
    bf16, fp32 = precision_runs["auto"], precision_runs["no"]
    assert [h["step"] for h in bf16.history] == [h["step"] for h in fp32.history] == list(range(1, STEPS + 1))
    gaps = [abs(a["loss"] - b["loss"]) for a, b in zip(bf16.history, fp32.history, strict=True)]
    assert max(gaps) <= LOSS_TOLERANCE, gaps
    assert bf16.history[-1]["loss"] < 0.6  # and it trained: the loss left ln 2 (0.693)


def test_bf16_run_keeps_float32_master_weights_and_losses(precision_runs) -> None:
    """Autocast computes the products in bf16 but the trainable weights, their optimiser updates and
    what is saved stay float32: the adapter and the checkpoint hold float32 tensors only. The log-probs
    the loss is computed from are float32 too (the LM head's logits are cast up before the logsumexp)."""
    run = precision_runs["auto"]
    assert run.logps_dtypes == {torch.float32}
    adapter = model_weights(run.out / "model")
    checkpoint = checkpoint_weights(run.out, STEPS)
    assert adapter and {t.dtype for t in adapter.values()} == {torch.float32}
    assert checkpoint and {t.dtype for t in checkpoint.values()} == {torch.float32}


# --- a young LoRA update under bf16: the run's metrics see it (issue 19) ------------------------------------------

YOUNG_LR = 5e-6  # TRL's DPO learning rate: a few steps move LoRA's B far less than bf16's resolution


def _young_run(data_files, folder: Path, setting: str) -> dict:
    overrides = lora_overrides(
        data_files,
        folder / setting,
        objective="dpo",
        merge_lora="false",
        save_every=STEPS,
        **{
            "optim.lr": YOUNG_LR,
            "optim.max_steps": STEPS,
            "optim.warmup_ratio": 0.0,
            "eval.samples": 0,
            "optim.mixed_precision": setting,
        },
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precision, "auto_mixed_precision", lambda: "bf16")  # bf16 autocast runs on any CPU
        return train(overrides)


@pytest.fixture(scope="module")
def young_runs(data_files, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Path, dict]]]:
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        pytest.skip("a CUDA GPU without bf16: accelerate would refuse bf16 there")
    from preftune.training import forget_accelerator_state

    folder = tmp_path_factory.mktemp("young")
    try:
        yield {s: (folder / s, _young_run(data_files, folder, s)) for s in ("bf16", "no")}
    finally:
        forget_accelerator_state()


def test_held_out_metrics_under_bf16_see_a_young_lora_update(young_runs) -> None:
    """Four steps at lr 5e-6 under bf16 autocast: the run's own held-out margin matches the float32
    run's (same seed, same data), where scoring under autocast rounded the update away (issue 19:
    margin −0.01 under bf16 against 1.12 in float32 on SmolLM2)."""
    (_, bf16), (_, fp32) = young_runs["bf16"], young_runs["no"]
    after_bf16, after_fp32 = bf16["stages"][-1]["eval_after"], fp32["stages"][-1]["eval_after"]
    assert bf16["mixed_precision"] == "bf16" and fp32["mixed_precision"] == "no"
    margin_bf16, margin_fp32 = after_bf16["margin"]["mean"], after_fp32["margin"]["mean"]
    assert abs(margin_fp32) > 3 * after_fp32["margin"]["stderr"] > 0  # the update moved the margins
    assert margin_bf16 == pytest.approx(margin_fp32, rel=0.25)


def test_a_bf16_runs_printed_metrics_are_what_evaluate_run_computes(young_runs) -> None:
    """The held-out metrics a bf16 run records are computed in float32, as ``preftune evaluate --run``
    computes them: equal to float32's rounding of a sequence's log-probability (1e-6 of it)."""
    from preftune.evaluation.command import evaluate_run

    out, outcome = young_runs["bf16"]
    recorded = outcome["stages"][-1]["eval_after"]
    scored = evaluate_run(out)
    scale = abs(recorded["logps/chosen"]["mean"])  # the size of what every metric is a difference of
    for name in ("margin", "accuracy", "chosen_drift", "logps/chosen", "logps/rejected"):
        assert scored[name].mean == pytest.approx(recorded[name]["mean"], rel=1e-6, abs=1e-6 * scale), name
