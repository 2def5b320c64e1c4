"""TR-DPO's reference refresh (``ref_refresh``): the update is TRL's ``SyncRefModelCallback``'s, run from TRL's own
code; a run moves its reference copy at every τ-th step by α·θ + (1 - α)·θ_ref, checkpoints it and resumes it
exactly; and it is refused in one line where there is no copy to move."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from preftune.errors import PreftuneError
from preftune.modeling import FrozenCopyReference, apply_lora, load_model
from tests.training.common import (
    DataFiles,
    assert_same_history,
    assert_same_tensors,
    checkpoint_weights,
    error_lines,
    full_overrides,
    model_weights,
    run_cli,
    train,
    trainer_state,
)

callbacks = pytest.importorskip("trl.trainer.callbacks")


def _moved(model: torch.nn.Module, seed: int) -> None:
    """Every trainable parameter moved by noise, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("alpha", [0.6, 0.1, 1.0])
def test_refresh_is_trls_sync_ref_model_callback(alpha: float) -> None:
    """Two refreshes of a full fine-tuning copy against TRL's ``_sync_target_model`` on a copy of the same
    reference, each after the policy moved: the same parameters to float32 rounding."""
    policy = load_model("tiny-random")
    ours = FrozenCopyReference(policy)
    theirs = copy.deepcopy(ours.model)
    for seed in (1, 2):
        _moved(policy, seed)
        ours.refresh(policy, alpha)
        callbacks.SyncRefModelCallback._sync_target_model(policy, theirs, alpha)
    for (name, a), (_, b) in zip(ours.model.named_parameters(), theirs.named_parameters(), strict=True):
        # the same update as TRL's, to float32 rounding (another CPU's kernels may fuse the multiply-add)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
    assert not torch.equal(next(ours.model.parameters()), next(load_model("tiny-random").parameters()))


def test_hard_refresh_under_lora_copies_the_adapters_only() -> None:
    policy = apply_lora(load_model("tiny-random"), rank=4, alpha=8)
    reference = FrozenCopyReference(policy)
    frozen = {n: p.clone() for n, p in reference.model.named_parameters() if n not in reference.trainable}
    _moved(policy, 3)
    reference.refresh(policy, 1.0)
    for name, param in policy.named_parameters():
        if param.requires_grad:
            assert torch.equal(dict(reference.model.named_parameters())[name], param), name
    assert all(torch.equal(dict(reference.model.named_parameters())[n], v) for n, v in frozen.items())
    assert set(reference.state_dict()) == reference.trainable and all("lora_" in n for n in reference.trainable)


def _refresh_overrides(data: DataFiles, out: Path, **extra: object) -> list[str]:
    """Full fine-tuning dpo, 4 steps, a soft refresh with α = 0.6 every 2 steps, a checkpoint every 2 steps."""
    settings = {"objective": "dpo", "ref_refresh.mode": "soft", "ref_refresh.every": 2, "keep_checkpoints": 2}
    return full_overrides(data, out, **{**settings, **extra})


def test_a_run_refreshes_its_reference_every_tau_steps(tmp_path: Path, data_files: DataFiles) -> None:
    """Hand-derived from the run's own checkpoints: θ_ref(2) = 0.6·θ(2) + 0.4·θ(0) and
    θ_ref(4) = 0.6·θ(4) + 0.4·θ_ref(2), θ(0) the tiny model as loaded."""
    out = tmp_path / "run"
    train(_refresh_overrides(data_files, out))
    start = dict(load_model("tiny-random").named_parameters())
    ref_2 = load_file(str(out / "checkpoints" / "step-000002" / "reference.safetensors"))
    ref_4 = load_file(str(out / "checkpoints" / "step-000004" / "reference.safetensors"))
    # a checkpoint names the policy's weights inside the trainer's wrapper: "model." + the model's own names
    theta_2, theta_4 = ({n.removeprefix("model."): w for n, w in checkpoint_weights(out, k).items()} for k in (2, 4))
    assert set(ref_2) == set(theta_2)
    for name in ref_2:
        expected_2 = start[name].detach().mul(0.4).add(theta_2[name], alpha=0.6)
        torch.testing.assert_close(ref_2[name], expected_2, rtol=1e-6, atol=1e-7)
        expected_4 = ref_2[name].mul(0.4).add(theta_4[name], alpha=0.6)
        torch.testing.assert_close(ref_4[name], expected_4, rtol=1e-6, atol=1e-7)
    assert any(not torch.equal(ref_2[n], start[n].detach()) for n in ref_2)
    # the reference moved between the steps: step 3's margin is measured against θ_ref(2), not θ(0)
    history = trainer_state(out, 4)["history"]
    assert history[2]["rewards/chosen"] != 0.0


class Crash(Exception):
    pass


def _crash_after(k: int):
    def callback(done: int, stats: dict[str, float]) -> None:
        if done == k:
            raise Crash

    return callback


def test_resume_restores_the_refreshed_reference(tmp_path: Path, data_files: DataFiles) -> None:
    reference = tmp_path / "uninterrupted"
    train(_refresh_overrides(data_files, reference))
    out = tmp_path / "crashed"
    overrides = _refresh_overrides(data_files, out)
    with pytest.raises(Crash):
        train(overrides, callbacks=[_crash_after(3)])  # after step 2's refresh and checkpoint
    train([*overrides, "resume=true"])
    assert_same_tensors(model_weights(out / "model"), model_weights(reference / "model"))
    assert_same_history(trainer_state(out, 4)["history"], trainer_state(reference, 4)["history"])

    # a checkpoint without the reference cannot be resumed: the copy taken now would be another reference
    (out / "checkpoints" / "step-000004" / "reference.safetensors").unlink()
    (out / "model").rename(out / "model-done")
    for done in out.glob("**/stage_done.json"):
        done.unlink()
    with pytest.raises(PreftuneError, match="holds no refreshed reference"):
        train([*overrides, "resume=true", "optim.max_steps=4"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"reference": "precomputed"}, "reference 'precomputed' .* fixed log-probs, which cannot be refreshed"),
        ({"lora.enabled": "true", "ref_refresh.mode": "hard", "reference": "adapter"}, "adapters off"),
        ({"lora.enabled": "true"}, "ref_refresh.mode=soft under LoRA"),
        ({"objective": "mle"}, "reads no reference"),
        ({"ref_refresh.alpha": 0.0}, "ref_refresh.alpha must be > 0"),
        ({"ref_refresh.mode": "sometimes"}, "ref_refresh.mode must be one of none, soft, hard"),
        ({"online.rounds": 1}, "train offline"),
    ],
)
def test_refresh_is_refused_where_it_cannot_run(tmp_path: Path, data_files: DataFiles, extra, message) -> None:
    with pytest.raises(PreftuneError, match=message):
        train(_refresh_overrides(data_files, tmp_path / "run", **extra))
    assert not (tmp_path / "run").exists()


def test_refresh_refusal_is_one_line_with_exit_2(tmp_path: Path, data_files: DataFiles) -> None:
    result = run_cli("train", *_refresh_overrides(data_files, tmp_path / "run", reference="precomputed"))
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "cannot be refreshed" in line


def test_trls_sync_keys_read_as_the_refresh() -> None:
    from preftune.run.trl_names import translate

    values = {"sync_ref_model": True, "ref_model_mixup_alpha": 0.5, "ref_model_sync_steps": 64}
    out, _ = translate(values, "trl.yaml")
    assert (out["ref_refresh.mode"], out["ref_refresh.alpha"], out["ref_refresh.every"]) == ("soft", 0.5, 64)
    assert translate({"sync_ref_model": False}, "trl.yaml")[0]["ref_refresh.mode"] == "none"
