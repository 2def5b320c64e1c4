"""mixed_precision=auto: bf16 exactly where the hardware multiplies bf16 natively, and then it takes effect."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from preftune.training import precision
from preftune.training.precision import NATIVE_BF16_FLAGS, auto_mixed_precision, cpu_flags, cpu_has_native_bf16

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


@pytest.mark.parametrize(("cuda", "cuda_bf16", "cpu_bf16", "expected"), [
    (True, True, False, "bf16"), (True, False, True, "no"), (False, False, True, "bf16"), (False, False, False, "no"),
])  # fmt: skip
def test_auto_mixed_precision(monkeypatch, cuda: bool, cuda_bf16: bool, cpu_bf16: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda *a, **k: cpu_bf16)
    assert auto_mixed_precision() == expected


def test_the_chosen_precision_changes_the_matmul_dtype_under_accelerate() -> None:
    """What auto selects reaches the products: a Linear under the run's autocast computes in bf16
    on a CPU with native bf16 (and stays float32 elsewhere)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if torch.cuda.is_available():
        pytest.skip("checks the CPU path")
    chosen = auto_mixed_precision()
    AcceleratorState._reset_state()
    try:
        accelerator = Accelerator(cpu=True, mixed_precision=chosen)
        layer = torch.nn.Linear(64, 64)
        with accelerator.autocast():
            out = layer(torch.randn(8, 64))
    finally:
        AcceleratorState._reset_state()
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
