"""P3's unified loop (docs/methods.md §4) on the tiny model: B, C, M, T and the mixing ratio do what they say."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from preftune.data import Batcher, bundled_path, load_preference_data, tokenize_examples
from preftune.errors import PreftuneError
from preftune.generation.prompts import encode_prompt
from preftune.generation.sampling import SamplingConfig
from preftune.judging.labellers import JudgeLabeller, prompt_text
from preftune.modeling import AdapterDisabledReference, apply_lora, load_model, load_tokenizer, tiny_model_path
from preftune.objectives import build
from preftune.run.config import OptimConfig
from preftune.training import make_accelerator
from preftune.training.loop import Trainer
from preftune.training.online import (
    OnlineSettings,
    OnPolicySource,
    RoundStats,
    offline_count,
    pairs_from_groups,
    round_prompts,
    train_rounds,
)
from tests.training.common import online_overrides

PROMPTS = [f"Say something about topic {i}." for i in range(12)]


class LengthLabeller:
    """The reward is the response's length in characters (P3's length tasks)."""

    def identity(self) -> str:
        return "length"

    def rewards(self, prompts, responses):
        return [[float(len(r)) for r in row] for row in responses]


class RecordingBatcher(Batcher):
    """Remembers every item index it batched and the rewards it put in the batches."""

    def __init__(self, pad_id: int) -> None:
        super().__init__(pad_id)
        self.seen: list[tuple[int, int]] = []  # (id of the items list, index)
        self.rewards: list[torch.Tensor] = []

    def __call__(self, items, indices, *, group_size=None, **options):
        batch = super().__call__(items, indices, group_size=group_size, **options)
        self.seen += [(id(items), int(i)) for i in indices]
        self.rewards.append(batch.rewards)
        return batch


def make_loop(
    objective, settings: OnlineSettings, offline=(), kl=False, labeller=None
) -> tuple[OnPolicySource, RecordingBatcher]:
    tokenizer = load_tokenizer(tiny_model_path())
    torch.manual_seed(0)
    model = apply_lora(load_model(tiny_model_path(), dtype="float32"), rank=4)
    built = build(objective) if isinstance(objective, str) else objective
    trainer = Trainer(
        accelerator=make_accelerator("no", cpu=True),
        model=model,
        objective=built,
        optim=OptimConfig(lr=1e-3, batch_size=settings.batch_size, warmup_ratio=0.0),
        total_steps=OnPolicySource.total_steps(settings, built),
        reference=AdapterDisabledReference(model) if built.needs_reference else None,
    )
    batcher = RecordingBatcher(tokenizer.pad_token_id)
    ids = [encode_prompt(tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS]
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=12, batch_size=16)
    loop = OnPolicySource(
        trainer,
        tokenizer,
        PROMPTS,
        ids,
        labeller or LengthLabeller(),
        settings,
        sampling,
        batcher,
        offline,
        reference=AdapterDisabledReference(model) if kl else None,
    )
    return loop, batcher


def test_sampling_shards_are_blocks_of_whole_batches_seeded_by_their_number():
    from preftune.training.online import sampling_shard

    # 8 prompts x C = 2 in batches of 6 rows (3 prompts): batches [0-2], [3-5], [6-7]
    assert [sampling_shard(8, 2, 6, 2, r) for r in (0, 1)] == [(0, 3, 0), (3, 8, 1)]
    assert [sampling_shard(8, 2, 6, 3, r) for r in (0, 1, 2)] == [(0, 3, 0), (3, 6, 1), (6, 8, 2)]
    assert sampling_shard(8, 2, 6, 1, 0) == (0, 8, 0)
    assert [sampling_shard(2, 2, 16, 2, r) for r in (0, 1)] == [(0, 0, 0), (0, 2, 0)]  # one batch: one process
    # C = 3 does not divide 16 rows: blocks of prompts, seeded by their first row
    assert [sampling_shard(8, 3, 16, 2, r) for r in (0, 1)] == [(0, 4, 0), (4, 8, 12)]
    for world in (1, 2, 3, 5):  # every prompt in exactly one shard, in order
        shards = [sampling_shard(11, 4, 8, world, r) for r in range(world)]
        assert [i for lo, hi, _ in shards for i in range(lo, hi)] == list(range(11))


def test_round_prompts_walk_seeded_epochs_without_repeats():
    rounds = [round_prompts(12, 4, r, seed=3) for r in range(3)]
    assert sorted(i for r in rounds for i in r) == list(range(12))  # one epoch: every prompt once
    assert round_prompts(12, 4, 0, seed=3) != round_prompts(12, 4, 0, seed=4)
    assert len(round_prompts(5, 4, 1, seed=0)) == 4  # crosses into the next epoch


def test_pairs_from_rewards_best_vs_worst_and_all_above_a_gap():
    from preftune.data.examples import Origin
    from preftune.data.groups import TokenizedGroup

    group = TokenizedGroup([1], ([10], [11], [12]), (0.5, 2.0, 1.0), Origin("r", 1))
    (best,) = pairs_from_groups([group], "best_vs_worst", 0.0)
    assert best.responses == ([11], [10]) and best.rewards == (2.0, 0.5)
    every = pairs_from_groups([group], "all", 0.6)  # 1.0 vs 0.5 is only 0.5 apart: no pair
    assert [p.rewards for p in every] == [(2.0, 1.0), (2.0, 0.5)]
    tied = TokenizedGroup([1], ([10], [11]), (1.0, 1.0), Origin("r", 2))
    assert pairs_from_groups([tied], "best_vs_worst", 0.0) == []


@pytest.mark.parametrize("passes", [1, 2])
def test_each_sample_is_read_passes_times_with_its_labelled_reward(passes):
    settings = OnlineSettings(rounds=1, prompts_per_round=4, samples_per_prompt=3, passes=passes, batch_size=2)
    loop, batcher = make_loop("reinforce", settings)
    (stats,) = train_rounds(loop)[1]
    assert stats.prompts == 4 and stats.samples == 12 and stats.items == 4
    assert stats.steps == passes * math.ceil(4 / 2)
    counts = Counter(index for _, index in batcher.seen)
    assert sorted(counts) == [0, 1, 2, 3] and set(counts.values()) == {passes}  # T = 2 reads each twice
    rewards = torch.cat(batcher.rewards)
    assert rewards.shape == (4 * passes, 3) and bool((rewards >= 0).all())  # lengths in characters
    assert math.isfinite(stats.loss) and stats.reward_mean == pytest.approx(float(rewards.mean()))


def test_pairwise_rounds_train_on_best_vs_worst_and_mix_half_offline_pairs():
    tokenizer = load_tokenizer(tiny_model_path())
    examples, _ = load_preference_data(bundled_path("hh-harmless"))
    offline, _ = tokenize_examples(examples[:20], tokenizer, max_length=96, max_prompt_length=64)
    settings = OnlineSettings(rounds=2, prompts_per_round=4, samples_per_prompt=2, batch_size=4, mix=0.5)
    loop, batcher = make_loop("dpo", settings, offline, kl=True)
    history = train_rounds(loop)[1]
    assert [h.round for h in history] == [0, 1]
    for stats in history:
        assert stats.offline_items == stats.items == offline_count(stats.items, 0.5)  # half of the round
        total = 2 * stats.items  # on-policy pairs plus as many offline ones; steps of M = 4, the remainder dropped
        assert stats.steps == (total // 4 if total >= 4 else int(total > 0))
    assert loop.trainer.global_step == sum(h.steps for h in history)
    # round 0 samples the untrained policy: LoRA's B is zero, so it is its reference, KL 0; round 1 not
    assert history[0].kl == pytest.approx(0.0, abs=1e-5) and abs(history[1].kl) > 1e-6
    trained = [r for r in batcher.rewards if r.shape[1] == 2]  # the KL passes batch C = 2 samples too
    offline_rewards = [r for r in torch.cat(trained).tolist() if r == [1.0, 0.0]]
    dropped = sum(2 * h.items - 4 * h.steps for h in history)  # the remainder beyond a multiple of M
    assert len(offline_rewards) >= sum(h.offline_items for h in history) - dropped > 0


def test_a_round_with_fewer_items_than_a_batch_trains_one_step_on_them():
    """Best vs worst of 2 prompts gives at most 2 pairs, fewer than M = 4: one step on all of them
    (a tie would leave a prompt without a pair; no pair at all: no step), not a crash mid-run."""
    settings = OnlineSettings(rounds=1, prompts_per_round=2, samples_per_prompt=2, batch_size=4)
    loop, batcher = make_loop("dpo", settings)
    (stats,) = train_rounds(loop)[1]
    assert stats.items <= 2 and stats.steps == (1 if stats.items else 0)
    assert sorted(index for _, index in batcher.seen) == list(range(stats.items))
    assert loop.round_batch_size(3) == 3 and loop.round_batch_size(9) == 4 and loop.round_batch_size(0) == 0


def test_settings_and_combinations_are_refused_in_one_line():
    with pytest.raises(PreftuneError, match="samples_per_prompt"):
        OnlineSettings(rounds=1, prompts_per_round=2, samples_per_prompt=1)
    with pytest.raises(PreftuneError, match="mix"):
        OnlineSettings(rounds=1, prompts_per_round=2, mix=1.0)
    with pytest.raises(PreftuneError, match="pairwise objective"):
        make_loop("reinforce", OnlineSettings(rounds=1, prompts_per_round=2, mix=0.5))


def test_preftune_train_online_rounds_end_to_end(tmp_path, capsys):
    """`preftune train online.rounds=2 ...`: rounds logged (console, rounds.jsonl and the default
    TensorBoard tracker, which an on-policy run never started before), the missing-EOS penalty
    applied (8 new tokens: no response finishes), the model saved."""
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from preftune.cli.main import main

    out = tmp_path / "run"
    changes = {"online.missing_eos_penalty": 100, "online.labeller": "length", "optim.batch_size": 4}
    argv = ["train", *online_overrides(out, {**changes, "trackers": "[tensorboard]"})]
    assert main(argv) == 0
    events = EventAccumulator(str(out / "train"))  # the tracker's run is named after the stage
    events.Reload()
    rewards = events.Scalars("online/reward_mean")
    rounds_logged = [json.loads(line)["reward_mean"] for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [e.value for e in rewards] == pytest.approx(rounds_logged, rel=1e-6)
    assert events.Scalars("train/loss") and events.Scalars("eval/accuracy")
    err = capsys.readouterr().err
    assert "round 0: reward" in err and "round 1: reward" in err
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [0.0, 1.0] and all(r["finished"] == 0.0 for r in rounds)
    assert all(r["reward_mean"] < 0 for r in rounds)  # ~40 characters, less the penalty of 100
    assert (out / "model" / "adapter_config.json").exists()
    # the run's report: a few samples of each round, best and worst by reward, and a table of rounds
    shown = [json.loads(line) for line in (out / "round_samples.jsonl").read_text().splitlines()]
    assert [s["round"] for s in shown] == [0, 0, 1, 1]
    for s in shown:  # length labeller: characters, less the penalty (nothing finished)
        assert s["best_reward"] == len(s["best"]) - 100 and s["worst_reward"] == len(s["worst"]) - 100
        assert s["best_reward"] >= s["worst_reward"]
    summary = (out / "summary.md").read_text()
    assert "| round | reward |" in summary and "Round 1, prompt" in summary
    assert main(["train", *online_overrides(tmp_path / "r2", {**changes, "online.mix": 0.5})]) == 2
    assert "needs a pairwise objective" in capsys.readouterr().err


def test_ctrl_c_in_an_online_run_says_where_resume_continues(tmp_path):
    """As offline: an interrupted on-policy run names the checkpoint ``--resume`` continues from
    (it printed only "interrupted" before)."""
    from io import StringIO

    from rich.console import Console

    from preftune.cli.config import load_config
    from preftune.run.train import run_training

    def interrupt(step: int, stats: dict) -> None:
        if step == 2:  # round 1, after its checkpoint (the checkpoint hook runs before callbacks)
            raise KeyboardInterrupt

    text = StringIO()
    out = tmp_path / "run"
    changes = {"sampling.n": 2, "online.labeller": "length", "optim.batch_size": 4, "save_every": 1}
    overrides = online_overrides(out, changes)
    with pytest.raises(KeyboardInterrupt):
        run_training(
            load_config(None, overrides), callbacks=[interrupt], console=Console(file=text, width=300, soft_wrap=True)
        )
    assert f"interrupted in stage 'train'; --resume continues from {out / 'checkpoints' / 'step-000002'}" in (
        text.getvalue()
    )


def test_an_online_run_checkpoints_each_round_whatever_save_every(tmp_path):
    """With the default save_every (50 steps), Ctrl-C in round 2 of 3 leaves round 1's end to resume
    from, and the resumed run ends as the uninterrupted one."""
    from io import StringIO

    from rich.console import Console

    from preftune.cli.config import load_config
    from preftune.run.train import run_training
    from tests.training.common import assert_same_tensors, model_weights, train

    def overrides(out):
        return online_overrides(out, {"online.rounds": 3})

    def interrupt(step: int, stats: dict) -> None:
        if step == 3:  # round 1 (2 steps a round), after round 0's checkpoint at step 2
            raise KeyboardInterrupt

    text = StringIO()
    with pytest.raises(KeyboardInterrupt):
        run_training(
            load_config(None, overrides(tmp_path / "cut")),
            callbacks=[interrupt],
            console=Console(file=text, width=300, soft_wrap=True),
        )
    saved = tmp_path / "cut" / "checkpoints" / "step-000002"
    assert f"--resume continues from {saved}" in text.getvalue()
    assert sorted(p.name for p in saved.parent.iterdir()) == ["step-000002"]
    whole = train(overrides(tmp_path / "whole"))
    again = train([*overrides(tmp_path / "cut"), "resume=true"])
    assert again["stages"][0]["steps"] == whole["stages"][0]["steps"] == 6
    assert_same_tensors(model_weights(tmp_path / "cut" / "model"), model_weights(tmp_path / "whole" / "model"))


def test_an_online_run_stopped_mid_round_resumes_exactly(tmp_path):
    """Stopped after step 3 (the middle of round 1, checkpoint every step) and resumed: the same
    weights and round statistics as the run that was never stopped."""
    import json

    from tests.training.common import assert_same_tensors, model_weights, train

    def overrides(out):
        return online_overrides(out, {"save_every": 1})

    class Stop(Exception):
        pass

    def stop_after_3(done, stats):
        if done == 3:
            raise Stop

    whole = train(overrides(tmp_path / "whole"))
    with pytest.raises(Stop):
        train(overrides(tmp_path / "cut"), callbacks=[stop_after_3])
    again = train([*overrides(tmp_path / "cut"), "resume=true"])
    assert whole["stages"][0]["steps"] == again["stages"][0]["steps"] == 4
    assert_same_tensors(model_weights(tmp_path / "cut" / "model"), model_weights(tmp_path / "whole" / "model"))
    # Every round's statistics survive the stop, the interrupted round's sampling side included
    # (its length, finished share and KL come from the checkpointed source, not recomputed as NaN).
    timings = {"generate_s", "label_s", "train_s"}
    for before, after in zip(whole["stages"][0]["rounds"], again["stages"][0]["rounds"], strict=True):
        assert before.keys() == after.keys()
        for key in before.keys() - timings:
            assert after[key] == pytest.approx(before[key], rel=1e-5, abs=1e-6, nan_ok=False), key
    assert [r["round"] for r in again["stages"][0]["rounds"]] == [0, 1]
    lines = [json.loads(line) for line in (tmp_path / "cut" / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in lines] == [0, 1] and all(math.isfinite(r["mean_length"]) for r in lines)


@pytest.mark.slow
def test_an_online_run_killed_mid_round_resumes_as_if_never_killed(tmp_path):
    """SIGKILL (no clean-up) after step 3, the middle of round 1 (save_every=1), then --resume: the
    same weights, and every round's statistics (rounds.jsonl) those of the run never killed."""
    import json
    import signal
    import subprocess
    import sys

    from tests.training.common import TIMEOUT, assert_same_tensors, model_weights, subprocess_env, train

    settings = online_overrides(changes={"save_every": 1})
    worker = str(Path(__file__).with_name("online_kill_worker.py"))
    killed = subprocess.run(
        [sys.executable, worker, str(tmp_path / "cut"), "3", *settings],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=subprocess_env(1),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    train([*settings, f"output_dir={tmp_path / 'whole'}"])
    train([*settings, f"output_dir={tmp_path / 'cut'}", "resume=true"])
    assert_same_tensors(model_weights(tmp_path / "cut" / "model"), model_weights(tmp_path / "whole" / "model"))
    timings = {"generate_s", "label_s", "train_s"}
    rounds = [
        [json.loads(line) for line in (tmp_path / name / "rounds.jsonl").read_text().splitlines()]
        for name in ("whole", "cut")
    ]
    assert [r["round"] for r in rounds[1]] == [0.0, 1.0]
    for whole, cut in zip(*rounds, strict=True):
        for key in whole.keys() - timings:
            assert cut[key] == pytest.approx(whole[key], rel=1e-5, abs=1e-6), key


class RecordingJudgeLabeller(JudgeLabeller):
    """The real judge labeller, remembering each round's prompts and responses."""

    def __init__(self, judge) -> None:
        super().__init__(judge, method="round_robin")
        self.seen: list[tuple[list[str], list[list[str]]]] = []

    def rewards(self, prompts, responses):
        self.seen.append(([prompt_text(p) for p in prompts], [list(r) for r in responses]))
        return super().rewards(prompts, responses)


def _by_hand(judge, prompts: list[str], responses: list[list[str]]) -> tuple[float, float]:
    """A round robin's decided fraction (pairs whose two ordered answers name the same response) and the mean
    over prompts of its length τ, from the judge's own ordered answers: a win is 1, a tie ½ to each, the
    order by score then index (``round_robin_rank``), τ over the pairs of different lengths."""
    decided, pairs, taus = 0, 0, []
    for prompt, group in zip(prompts, responses, strict=True):
        unique = list(dict.fromkeys(group))
        score = [0.0] * len(unique)
        for i, a in enumerate(unique):
            for j in range(i + 1, len(unique)):
                b = unique[j]
                forward, backward = judge.judge([prompt, prompt], [(a, b), (b, a)])
                pairs += 1
                if forward != backward:  # FIRST then SECOND: a; SECOND then FIRST: b
                    decided += 1
                    score[i if forward == 0 else j] += 1.0
                else:
                    score[i] += 0.5
                    score[j] += 0.5
        place = {k: r for r, k in enumerate(sorted(range(len(unique)), key=lambda k: (-score[k], k)))}
        signs = [
            1 if (place[i] < place[j]) == (len(unique[i]) > len(unique[j])) else -1
            for i in range(len(unique))
            for j in range(i + 1, len(unique))
            if len(unique[i]) != len(unique[j])
        ]
        if signs:
            taus.append(sum(signs) / len(signs))
    return decided / pairs, sum(taus) / len(taus)


@pytest.mark.parametrize("spec", ["longer", "random:5"])
def test_each_round_reports_what_its_judge_decided(spec):
    """A judge labeller's round: the fraction of comparisons decided and Kendall's τ of its ranking with the
    responses' lengths are in the round's statistics, equal to the ones counted from the judge's own answers
    on the responses it labelled; ``longer`` ranks by length (τ = 1), a coin does not."""
    import json

    from preftune.judging.specs import make_judge

    labeller = RecordingJudgeLabeller(make_judge(spec))
    settings = OnlineSettings(rounds=2, prompts_per_round=4, samples_per_prompt=4, batch_size=4)
    loop, _ = make_loop("dpo", settings, labeller=labeller)
    history = train_rounds(loop)[1]
    for stats, (prompts, responses) in zip(history, labeller.seen, strict=True):
        decided, tau = _by_hand(labeller.judge, prompts, responses)
        assert stats.labelling["judge_decided"] == pytest.approx(decided)
        assert stats.labelling["judge_length_tau"] == pytest.approx(tau)
        assert stats.labelling["judge_failed"] == 0.0 and stats.to_dict()["judge_decided"] == pytest.approx(decided)
        assert f"judge decided {decided:.2f}" in str(stats)
        line = json.dumps(stats.to_dict())  # a line of rounds.jsonl reads back with the judge's numbers
        assert json.dumps(RoundStats.from_dict(json.loads(line)).to_dict()) == line
        if spec == "longer":
            assert tau == 1.0
    if spec != "longer":
        assert any(s.labelling["judge_length_tau"] < 1.0 for s in history)
        assert all(s.labelling["judge_decided"] < 0.9 for s in history)


def test_judge_rounds_end_to_end_in_rounds_jsonl_console_and_summary(tmp_path, capsys):
    """`preftune train online.labeller=judge:longer` and `judge:random` (C = 4): each round's line, rounds.jsonl
    and summary.md carry the judge's decided fraction and its τ with length: 1 for longer, lower for a coin."""
    import json

    from preftune.cli.main import main

    found = {}
    for spec in ("longer", "random"):
        out = tmp_path / spec
        changes = {"sampling.n": 4, "online.labeller": f"judge:{spec}", "optim.batch_size": 4}
        argv = ["train", *online_overrides(out, {**changes, "objective": "dpo"})]
        assert main(argv) == 0
        err = capsys.readouterr().err
        assert "round 0: reward" in err and "judge decided" in err and "judge length tau" in err
        found[spec] = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
        assert [r["round"] for r in found[spec]] == [0.0, 1.0]
        assert all(r["judge_failed"] == 0.0 and 0.0 <= r["judge_decided"] <= 1.0 for r in found[spec])
        assert "judge decided | judge failed | judge length tau |" in (out / "summary.md").read_text()
    # longer leaves a pair undecided only when both responses have one length (here capped at 8 tokens): most are
    # decided, how many depends on the samples (0.89-1.0 seen); the exact fraction is checked by hand above
    assert all(r["judge_length_tau"] == 1.0 and r["judge_decided"] > 0.75 for r in found["longer"])
    assert all(r["judge_length_tau"] < 1.0 for r in found["random"])
    assert sum(r["judge_decided"] for r in found["random"]) < sum(r["judge_decided"] for r in found["longer"])


@pytest.fixture(scope="module")
def online_one_process(tmp_path_factory):
    """The single-process on-policy run that two processes must equal, and its overrides."""
    from tests.training.common import train

    def overrides(out):
        return online_overrides(out, {"optim.batch_size": 4, "eval.batch_size": 6})

    single = tmp_path_factory.mktemp("online-one") / "run"
    train(overrides(single))
    return single, overrides


@pytest.mark.slow
@pytest.mark.parametrize("launch", ["torchrun", "fsdp"])
def test_two_processes_train_online_as_one(online_one_process, launch, tmp_path):
    """`torchrun --nproc_per_node 2` (gloo; DDP), or `accelerate launch` with an FSDP config (the policy
    sharded with FSDP2; each round sampled and its reference scored with the whole parameters): each
    process samples and labels half of the round (a block of the sampler's batches, 2 prompts × 3
    samples each, seeded by their numbers in the round), the halves are gathered, and each trains on
    its half of the buffer; the weights equal one process's."""
    import json
    import subprocess
    from pathlib import Path

    from tests.training.common import (
        TIMEOUT,
        TORCHRUN,
        assert_same_tensors,
        fsdp_launch,
        model_weights,
        subprocess_env,
    )

    single, overrides = online_one_process
    double = tmp_path / "double"
    worker = Path(__file__).with_name("ddp_worker.py")
    if launch == "fsdp":
        result = fsdp_launch(tmp_path, str(worker), *overrides(double))
    else:
        command = [TORCHRUN, "--standalone", "--nproc_per_node", "2", str(worker), *overrides(double)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=subprocess_env(1))
    assert result.returncode == 0, result.stderr[-5000:]
    assert result.stderr.count("round 1: reward") == 1  # one run of two processes (the main one speaks)
    assert result.stderr.count("FSDP: the policy sharded") == (launch == "fsdp")
    assert (double / "rounds.jsonl").read_text().count('"reward_mean"') == 2
    single_rounds = (single / "rounds.jsonl").read_text().splitlines()
    double_rounds = (double / "rounds.jsonl").read_text().splitlines()
    for one, two in zip(single_rounds, double_rounds, strict=True):  # the same samples: rewards and lengths
        a, b = json.loads(one), json.loads(two)
        assert (a["reward_mean"], a["reward_std"], a["mean_length"]) == (
            b["reward_mean"],
            b["reward_std"],
            b["mean_length"],
        )
    # Two processes forward half a batch each (other padding, another summation order): the losses agree
    # to ~1e-6 relative, and Adam, which scales each entry's step by its own gradient's size, turns that
    # into up to ~1.5e-5 on a weight after 2 steps of lr 5e-4 (3% of one step): 1/10 of a step allowed.
    assert_same_tensors(model_weights(double / "model"), model_weights(single / "model"), atol=5e-5)


@pytest.mark.parametrize(
    "objective", ["ipo", "dpo + bcr", "dpo + 0.5*exmate", "rwr", "bon", "bon_neg", "reinforce(kl_coef=0.1)"]
)
def test_each_objective_family_trains_through_the_loop(objective):
    settings = OnlineSettings(rounds=1, prompts_per_round=4, samples_per_prompt=3, batch_size=4)
    loop, batcher = make_loop(objective, settings)
    before = {n: p.detach().clone() for n, p in loop.trainer.model.named_parameters() if p.requires_grad}
    (stats,) = train_rounds(loop)[1]
    assert stats.steps == 1 and math.isfinite(stats.loss)
    group = loop.group_objective
    assert stats.items == (4 if group else sum(1 for r in batcher.rewards for _ in r))  # groups, or pairs made
    changed = [n for n, p in loop.trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed, "the step changed no weight"


def test_a_bad_labeller_is_refused_in_one_line(tmp_path, capsys):
    from preftune.cli.main import main

    argv = [
        "train",
        "model.name=tiny-random",
        "data.train=bundled:hh-harmless",
        "data.train_size=8",
        "online.rounds=1",
        "online.labeller=rm:/no/such/reward-model",
        f"output_dir={tmp_path / 'r'}",
        "trackers=[]",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "/no/such/reward-model" in err


def test_prompts_too_long_for_any_round_are_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """No prompt leaves room for sampling.max_new_tokens: one line, and no model was loaded."""
    import preftune.run.train
    from preftune.cli.main import main

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(preftune.run.train, "load_model", no_loading)
    changes = {"data.max_length": 40, "sampling.max_new_tokens": 39}
    assert main(["train", *online_overrides(tmp_path / "r", changes)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no prompt of data.train fits") and err.count("\n") == 1
