"""``kto`` trains end to end on the tiny model (unpaired good/bad sets and pairs), composes with ``exmate`` and
``bcr``, and is refused in one line where its mismatched pairs cannot be scored; its KL estimate is the mean over
processes of each process's mean log-ratio (unit-tested here, and over two real processes when ``slow`` runs)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from preftune.errors import PreftuneError
from preftune.objectives import SequenceLogProbs
from preftune.training.mismatched import mismatched_log_ratio
from tests.training.common import (
    TIMEOUT,
    TORCHRUN,
    DataFiles,
    error_lines,
    model_weights,
    run_cli,
    subprocess_env,
    train,
    trainer_state,
    write_jsonl,
)

STEPS = 3


def _unpaired(folder: Path) -> tuple[Path, Path]:
    good = write_jsonl(folder / "good.jsonl", [{"prompt": f"Say {i}.", "completion": f"{i} it is."} for i in range(24)])
    bad = write_jsonl(folder / "bad.jsonl", [{"prompt": f"Name {i}.", "completion": f"No {i}!"} for i in range(30)])
    return good, bad


def _overrides(out: Path, objective: str, *data: str, **extra: object) -> list[str]:
    settings = {
        "model.name": "tiny-random",
        "objective": objective,
        "data.eval_size": 4,
        "optim.batch_size": 4,
        "optim.max_steps": STEPS,
        "optim.lr": 1e-2,
        "lora.rank": 4,
        "save_every": STEPS,
        "trackers": "[]",
        "output_dir": str(out),
        **extra,
    }
    return [*data, *(f"{k}={v}" for k, v in settings.items())]


@pytest.mark.parametrize("objective", ["kto", "kto + 0.5*exmate", "kto + bcr"])
def test_kto_trains_on_unpaired_good_and_bad_sets(tmp_path: Path, objective: str) -> None:
    good, bad = _unpaired(tmp_path)
    out = tmp_path / "run"
    outcome = train(_overrides(out, objective, f"data.train={good}", f"data.bad={bad}"))
    assert outcome["stages"][0]["steps"] == STEPS
    history = trainer_state(out, STEPS)["history"]
    # step 1: the policy is its reference (LoRA's B starts at zero), so r = 0, the estimate is 0 and the loss
    # is ½(λ_D·σ(0) + λ_U·σ(0)) = 0.5 exactly
    assert history[0]["kl"] == 0.0
    assert history[0]["loss/kto"] == pytest.approx(0.5, abs=1e-7)
    # later steps score mismatched pairs of a policy that moved: the estimate is read, not left at 0
    assert any(h["kl"] != 0.0 for h in history[1:])
    assert history[-1]["loss/kto"] < 0.5
    assert any(float(w.abs().max()) > 0 for n, w in model_weights(out / "model").items() if "lora_B" in n)


def test_kto_trains_on_pairs_with_full_fine_tuning(tmp_path: Path, data_files: DataFiles) -> None:
    """Pairs are unpaired as TRL unpairs them (the chosen desirable, the rejected undesirable); without LoRA the
    live reference is a frozen copy (``auto`` becomes ``copy``), not a precomputed table."""
    out = tmp_path / "run"
    full = {"lora.enabled": "false", "optim.lr": 1e-3}
    outcome = train(_overrides(out, "kto(beta=0.5)", f"data.train={data_files.train}", **full))
    history = trainer_state(out, STEPS)["history"]
    assert history[0]["loss/kto"] == pytest.approx(0.5, abs=1e-7)
    assert history[-1]["loss/kto"] < 0.5
    assert outcome["stages"][0]["steps"] == STEPS


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"reference": "precomputed"}, "a precomputed reference does not hold"),
        ({"optim.batch_size": 2, "optim.grad_accumulation": 2}, "a micro-batch needs 2 examples or more"),
        ({"online.rounds": 1}, "train it offline"),
        ({"objective": "dpo + kto"}, "data.bad gives unpaired examples"),
    ],
)
def test_kto_is_refused_in_one_line_where_it_cannot_run(tmp_path: Path, extra: dict, message: str) -> None:
    good, bad = _unpaired(tmp_path)
    data = [f"data.train={good}"] + ([] if "online.rounds" in extra else [f"data.bad={bad}"])
    args = _overrides(tmp_path / "run", extra.pop("objective", "kto"), *data, **extra)
    with pytest.raises(PreftuneError, match=message):
        train(args)
    assert not (tmp_path / "run").exists()


def test_kto_refusal_is_one_line_with_exit_2(tmp_path: Path) -> None:
    good, _ = _unpaired(tmp_path)
    result = run_cli("train", *_overrides(tmp_path / "run", "kto", f"data.train={good}", reference="precomputed"))
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "precomputed reference" in line


# --- the estimate over processes ------------------------------------------------------------------


def _records(values: list[float], ref: list[float]) -> tuple[SequenceLogProbs, SequenceLogProbs]:
    count = torch.ones(len(values) // 2, 2)
    return (
        SequenceLogProbs(sum=torch.tensor(values).view(-1, 2), count=count),
        SequenceLogProbs(sum=torch.tensor(ref).view(-1, 2), count=count),
    )


def test_estimate_is_the_mean_over_processes_of_each_process_mean() -> None:
    """TRL's ``gather_for_metrics(kl).mean()``: the other process's mean comes through the gather, and a process
    with more rows weighs no more (a mean of means, not of rows)."""
    policy, reference = _records([-1.0, -2.0, -3.0, -4.0], [-1.5, -2.5, -2.0, -5.0])  # log-ratios .5 .5 -1 1: mean .25
    other = torch.tensor([1.25])  # another process's mean
    estimate = mismatched_log_ratio(policy, reference, gather=lambda mine: torch.cat([mine, other]))
    assert estimate.shape == ()
    assert float(estimate) == pytest.approx((0.25 + 1.25) / 2)
    alone = mismatched_log_ratio(policy, reference, gather=lambda mine: mine)
    assert float(alone) == pytest.approx(0.25)


def test_estimate_carries_no_gradient() -> None:
    policy, reference = _records([-1.0, -2.0], [-1.5, -2.5])
    leaf = policy.sum.clone().requires_grad_(True)
    estimate = mismatched_log_ratio(SequenceLogProbs(leaf, policy.count), reference, gather=lambda mine: mine)
    assert not estimate.requires_grad


WORKER = """
import json, sys, torch
from accelerate import Accelerator
from preftune.objectives import SequenceLogProbs
from preftune.training.mismatched import mismatched_log_ratio
acc = Accelerator(cpu=True)
r = acc.process_index
rows = 2 * (r + 1)  # process 0 holds 2 rows, process 1 holds 4
policy = SequenceLogProbs(sum=torch.full((rows // 2, 2), -1.0), count=torch.ones(rows // 2, 2))
ref = SequenceLogProbs(sum=torch.full((rows // 2, 2), -1.0 - (r + 1)), count=torch.ones(rows // 2, 2))
value = mismatched_log_ratio(policy, ref, acc.gather)
with open(sys.argv[1] + f".{r}", "w") as f:
    json.dump({"value": float(value), "world": acc.num_processes}, f)
# leave the group together: a process exiting while the other's gloo threads still run can abort it
acc.wait_for_everyone()
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_estimate_over_two_real_processes(tmp_path: Path) -> None:
    """``torchrun --nproc_per_node 2`` (gloo, CPU): process r's log-ratios are all r + 1, so both read (1 + 2)/2."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "value"
    command = [TORCHRUN, "--standalone", "--nproc_per_node", "2", str(script), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=subprocess_env(1))
    assert result.returncode == 0, result.stderr[-3000:]
    values = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(2)]
    assert [v["world"] for v in values] == [2, 2]
    assert [v["value"] for v in values] == [1.5, 1.5]
