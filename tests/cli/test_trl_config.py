"""TRL's config names: a DPOConfig-style YAML trains as the same run written in preftune's keys
(--trl), and a TRL name or a misspelt key in a preftune config is refused with the key it means,
every bad key at once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from preftune.cli.config import load_config
from preftune.cli.main import main
from preftune.errors import PreftuneError
from preftune.objectives import build

TRL_YAML = """\
model_name_or_path: tiny-random
dataset_name: bundled:hh-harmless
output_dir: {out}
learning_rate: 5.0e-5
num_train_epochs: 2
per_device_train_batch_size: 4
gradient_accumulation_steps: 2
lr_scheduler_type: cosine
warmup_ratio: 0.05
beta: 0.2
loss_type: sigmoid
label_smoothing: 0.1
max_length: 256
use_peft: true
lora_r: 8
lora_alpha: 16
logging_steps: 10
bf16: false
report_to: none
"""

SAME_IN_PREFTUNE_KEYS = """\
model: {{name: tiny-random, gradient_checkpointing: true}}
data: {{train: "bundled:hh-harmless", max_length: 256}}
output_dir: {out}
optim: {{lr: 5.0e-5, epochs: 2, batch_size: 8, grad_accumulation: 2, schedule: cosine, warmup_ratio: 0.05,
        mixed_precision: "no"}}
objective: dpo(beta=0.2, label_smoothing=0.1)
lora: {{enabled: true, rank: 8, alpha: 16, dropout: 0.05}}
trackers: []
"""


def _write(path: Path, text: str, out: Path) -> Path:
    path.write_text(text.format(out=out), encoding="utf-8")
    return path


def test_a_trl_config_resolves_to_the_same_run_as_preftune_keys(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = tmp_path / "run"
    notes: list[str] = []
    trl = load_config(_write(tmp_path / "trl.yaml", TRL_YAML, out), [], trl=True, notes=notes)
    ours = load_config(_write(tmp_path / "ours.yaml", SAME_IN_PREFTUNE_KEYS, out), [])
    assert dataclasses.asdict(trl) == dataclasses.asdict(ours)
    assert notes == ["TRL's logging_steps (preftune logs every step): ignored"]
    # preftune keys on the command line still override a TRL file
    assert load_config(tmp_path / "trl.yaml", ["optim.max_steps=3"], trl=True).optim.max_steps == 3


def test_trl_defaults_apply_where_the_file_is_silent(tmp_path, monkeypatch):
    """A DPOConfig with only a model: TRL trains it fully (no use_peft) at 1e-6 with checkpointing on."""
    monkeypatch.setenv("WORLD_SIZE", "2")  # per-device batches are per process: preftune's batch is global
    path = tmp_path / "trl.yaml"
    path.write_text("model_name_or_path: tiny-random\nper_device_train_batch_size: 3\n", encoding="utf-8")
    config = load_config(path, [], trl=True)
    assert (config.lora.enabled, config.optim.lr, config.model.gradient_checkpointing) == (False, 1e-6, True)
    assert config.optim.batch_size == 6 and config.objective == "dpo"  # no loss keys: preftune's default


@pytest.mark.parametrize(
    ("loss", "expected"),
    [("ipo", "ipo(beta=0.3, average=True)"), ("hinge", "hinge(beta=0.3)"), ("sigmoid", "dpo(beta=0.3)")],
)
def test_loss_types_become_objectives_that_build(tmp_path, loss, expected):
    path = tmp_path / "trl.yaml"
    path.write_text(f"beta: 0.3\nloss_type: [{loss}]\n", encoding="utf-8")
    config = load_config(path, [], trl=True)
    assert config.objective == expected
    build(config.objective)  # a valid objective string


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ("loss_type: sigmoid_norm", "sigmoid_norm(beta=0.3)"),
        ("loss_type: robust", "robust(beta=0.3, label_smoothing=0.0)"),  # TRL's ε default, not our 0.1
        ("loss_type: robust\nlabel_smoothing: 0.2", "robust(beta=0.3, label_smoothing=0.2)"),
        ("loss_type: exo_pair\nlabel_smoothing: 1.0e-3", "exo_pair(beta=0.3, label_smoothing=0.001)"),
        ("loss_type: discopop\ndiscopop_tau: 0.1", "discopop(beta=0.3, tau=0.1)"),
        ("loss_type: nca_pair", "nca_pair(beta=0.3)"),
        ("loss_type: bco_pair", "bco_pair(beta=0.3)"),
        ("loss_type: sppo_hard", "sppo_hard(beta=0.3)"),
        ("loss_type: apo_zero", "apo_zero(beta=0.3)"),
        ("loss_type: apo_down", "apo_down(beta=0.3)"),
        ("loss_type: aot\nlabel_smoothing: 0.1", "aot(beta=0.3, label_smoothing=0.1)"),
        ("loss_type: aot_unpaired", "aot_unpaired(beta=0.3)"),
        ("loss_type: aot_pair", "aot_unpaired(beta=0.3)"),  # TRL's older name
        ("loss_type: sft", "mle"),
        ("ld_alpha: 0.5", "dpo(beta=0.3, ld_alpha=0.5)"),
        ("ld_alpha: 1.0\nloss_type: bco_pair", "bco_pair(beta=0.3)"),  # 1 is off
        ("use_weighting: true\nloss_type: [ipo]", "ipo(beta=0.3, average=True, wpo=True)"),
        ("f_divergence_type: js_divergence\nloss_type: hinge", "hinge(beta=0.3, divergence='js')"),
        ("f_divergence_type: forward_kl", "dpo(beta=0.3, divergence='forward_kl')"),
        (
            "f_divergence_type: alpha_divergence\nf_alpha_divergence_coef: 0.3",
            "dpo(beta=0.3, divergence='alpha', divergence_alpha=0.3)",
        ),
        ("loss_type: [sigmoid, sft]\nloss_weights: [0.8, 0.2]", "0.8*dpo(beta=0.3) + 0.2*mle"),
        (  # MPO's mix, as TRL's docs write it, with LD-DPO on every ratio loss
            "loss_type: [sigmoid, bco_pair, sft]\nloss_weights: [0.8, 0.2, 1.0]\nld_alpha: 0.5",
            "0.8*dpo(beta=0.3, ld_alpha=0.5) + 0.2*bco_pair(beta=0.3, ld_alpha=0.5) + mle",
        ),
    ],
)
def test_every_trl_loss_type_and_setting_maps_to_a_term(tmp_path, settings: str, expected: str) -> None:
    path = tmp_path / "trl.yaml"
    path.write_text(f"beta: 0.3\n{settings}\n", encoding="utf-8")
    config = load_config(path, [], trl=True)
    assert config.objective == expected
    build(config.objective)  # a valid objective string, every value accepted by its term


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("loss_type: [sigmoid, sft]\nloss_weights: [1.0]", "differ in length"),
        ("loss_type: nca_pair\nf_divergence_type: js_divergence", "f_divergence_type applies to"),
        ("f_divergence_type: chi2", "preftune reads reverse_kl"),
        ("f_alpha_divergence_coef: 0.3", "read only with f_divergence_type: alpha_divergence"),
        ("loss_type: hinge\nlabel_smoothing: 0.1", "label_smoothing applies to"),
        ("discopop_tau: 0.2", "discopop_tau applies to loss_type discopop only"),
        ("loss_type: aot\nuse_weighting: true", "use_weighting"),
        ("loss_type: [sigmoid, sft]\nuse_weighting: true", "use_weighting"),
        ("loss_type: exo_pair", "exo_pair needs label_smoothing > 0"),
    ],
)
def test_trl_loss_settings_without_a_counterpart_are_refused_in_one_line(tmp_path, settings, message) -> None:
    path = tmp_path / "trl.yaml"
    path.write_text(f"{settings}\n", encoding="utf-8")
    with pytest.raises(PreftuneError, match=message) as caught:
        load_config(path, [], trl=True)
    assert "\n" not in str(caught.value)


def test_every_key_trl_does_not_map_is_named_at_once(tmp_path):
    path = tmp_path / "trl.yaml"
    path.write_text("learning_rate: 1e-5\nuse_liger_kernel: true\npadding_free: true\n", encoding="utf-8")
    with pytest.raises(PreftuneError, match="use_liger_kernel, padding_free"):
        load_config(path, [], trl=True)
    path.write_text("max_new_tokens: 64\nnum_generations: 4\n", encoding="utf-8")
    with pytest.raises(PreftuneError, match=r"on-policy TRL keys \(max_new_tokens, num_generations\)"):
        load_config(path, [], trl=True)
    path.write_text("loss_type: [sigmoid, rso]\n", encoding="utf-8")
    with pytest.raises(PreftuneError, match="loss_type"):
        load_config(path, [], trl=True)


def test_trl_names_and_misspellings_in_a_preftune_config_name_the_key_they_mean(tmp_path):
    overrides = [
        "optim.learnig_rate=3e-4",
        "per_device_train_batch_size=4",
        "lora.rnk=8",
        "num_train_epochs=2",
        "optim.lr=1e-4",
    ]
    with pytest.raises(PreftuneError) as caught:
        load_config(None, overrides)
    message = str(caught.value)
    assert "\n" not in message
    assert "'optim.learnig_rate' (TRL's 'learning_rate'? here optim.lr)" in message
    assert "'per_device_train_batch_size' (TRL's name; here optim.batch_size" in message
    assert "'lora.rnk' (did you mean 'lora.rank'?)" in message
    assert "'num_train_epochs' (TRL's name; here optim.epochs)" in message
    assert "optim.lr'" not in message.replace("here optim.lr", "")  # the valid key is not named
    # a whole TRL file given as a preftune config: the error says to read it with --trl
    path = _write(tmp_path / "trl.yaml", TRL_YAML, tmp_path / "run")
    with pytest.raises(PreftuneError, match=r"reads as a TRL config \('preftune train --trl"):
        load_config(path, [])


def test_train_trl_on_the_command_line(tmp_path, capsys):
    path = _write(tmp_path / "trl.yaml", TRL_YAML, tmp_path / "run")
    assert main(["train", "--trl", str(path), "--print-config"]) == 0
    captured = capsys.readouterr()
    assert "note: TRL's logging_steps (preftune logs every step): ignored" in captured.err
    assert "objective: dpo(beta=0.2, label_smoothing=0.1)" in captured.out
    assert main(["train", str(path), "--trl", str(path)]) == 2
    assert "not both" in capsys.readouterr().err


def test_a_trl_config_trains_as_it_is(tmp_path, capsys):
    """`preftune train --trl` end to end on the tiny model: TRL's names, a few steps, a saved model."""
    out = tmp_path / "run"
    path = tmp_path / "dpo.yaml"
    path.write_text(
        "model_name_or_path: tiny-random\n"
        "dataset_name: bundled:hh-harmless\n"
        f"output_dir: {out}\n"
        "max_steps: 2\n"
        "per_device_train_batch_size: 2\n"
        "learning_rate: 1.0e-4\n"
        "beta: 0.1\n"
        "max_length: 128\n"
        "use_peft: true\n"
        "lora_r: 4\n"
        "bf16: false\n"
        "gradient_checkpointing: false\n"
        "report_to: none\n"
        "logging_steps: 1\n",
        encoding="utf-8",
    )
    assert main(["train", "--trl", str(path), "data.train_size=16", "data.eval_size=4"]) == 0
    assert (out / "model" / "adapter_config.json").is_file()
    err = capsys.readouterr().err
    assert "note: TRL's logging_steps (preftune logs every step): ignored" in err and "step 2/2" in err
