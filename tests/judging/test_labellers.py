"""Labellers: reward functions, a judge with a ranking (−place), a reward model, the missing-EOS penalty."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from preftune.errors import PreftuneError
from preftune.judging import FunctionJudge, VerdictStore, longer_is_better
from preftune.judging.labellers import (
    FunctionLabeller,
    JudgeLabeller,
    Labeller,
    RewardModelLabeller,
    apply_missing_eos_penalty,
    length_tau,
    make_labeller,
    prompt_text,
)
from preftune.judging.ranking import kendall_tau
from tests.reward.conftest import marker_pairs, trained  # noqa: F401  (session fixtures: one tiny reward model)


def word_count(prompt: str, response: str) -> float:
    """A reward function for ``function:tests.judging.test_labellers:word_count``."""
    return float(len(response.split()))


def prompt_echo(prompt: str, response: str) -> float:
    """1 when the prompt text reached the function as ``preftune rank`` shows it."""
    return 1.0 if prompt == "user: Hi there" else 0.0


def flaky(prompt: str, response: str):
    if response == "boom":
        raise RuntimeError("boom")
    return "not a number" if response == "junk" else 1


PROMPTS = ["Q1", "Q2"]
RESPONSES = [["abc", "abcdefghi", "abcde"], ["a b", ""]]


def test_function_labellers_by_hand() -> None:
    assert make_labeller("length").rewards(PROMPTS, RESPONSES) == [[3.0, 9.0, 5.0], [3.0, 0.0]]
    assert make_labeller("neg_length").rewards(PROMPTS, RESPONSES) == [[-3.0, -9.0, -5.0], [-3.0, -0.0]]
    assert make_labeller("length_target:5").rewards(PROMPTS, RESPONSES) == [[-2.0, -4.0, 0.0], [-2.0, -5.0]]
    labeller = make_labeller("function:tests.judging.test_labellers:word_count")
    assert labeller.rewards(PROMPTS, RESPONSES) == [[1.0, 1.0, 1.0], [2.0, 0.0]]
    assert labeller.identity() == "function:tests.judging.test_labellers:word_count"
    assert make_labeller("length_target:5").identity() == "function:length_target:5"
    assert isinstance(labeller, Labeller)
    assert FunctionLabeller(lambda p, r: 2, name="two").rewards(["x"], [["y"]]) == [[2.0]]
    assert make_labeller("length").rewards([], []) == []


def test_function_labeller_reads_messages_as_text_and_fails_per_response() -> None:
    messages = [{"role": "user", "content": "Hi there"}]
    assert prompt_text(messages) == "user: Hi there" and prompt_text("plain") == "plain"
    assert FunctionLabeller(prompt_echo).rewards([messages, "user: Hi there"], [["a"], ["b"]]) == [[1.0], [1.0]]
    values = FunctionLabeller(flaky).rewards(["p"], [["ok", "boom", "junk"]])[0]
    assert values[0] == 1.0 and math.isnan(values[1]) and math.isnan(values[2])
    with pytest.raises(ValueError, match="2 prompts but 1"):
        make_labeller("length").rewards(["a", "b"], [["x"]])


def test_judge_labeller_gives_minus_place() -> None:
    labeller = make_labeller("judge:longer")
    assert isinstance(labeller, JudgeLabeller) and labeller.method == "ipr"
    assert labeller.rewards(PROMPTS, RESPONSES) == [[-2.0, 0.0, -1.0], [0.0, -1.0]]
    assert labeller.identity() == "judge:ipr:function:preftune.judging.functions:longer_is_better"
    rr = make_labeller("judge-rr:shorter")
    assert rr.method == "round_robin" and rr.rewards(PROMPTS, RESPONSES) == [[0.0, -2.0, -1.0], [-1.0, 0.0]]
    # a single response, or only copies of one, is the best
    assert labeller.rewards(["p", "q"], [["only"], ["same", "same"]]) == [[0.0], [0.0, 0.0]]


def test_identical_responses_share_a_reward_and_are_judged_once() -> None:
    labeller = JudgeLabeller(FunctionJudge(longer_is_better))
    # "bb" twice: the place of the first, and the copies count above the worst
    assert labeller.rewards(["p"], [["bb", "a", "bb", "cccc"]]) == [[-1.0, -3.0, -1.0, 0.0]]
    # three unique texts: IPR of 3 makes at most 3 comparisons, each two ordered calls
    assert labeller.calls <= 6 and labeller.comparisons <= 3


def test_store_answers_a_second_labelling(tmp_path: Path) -> None:
    store = VerdictStore(tmp_path / "verdicts.sqlite")
    first = make_labeller("judge:longer", store=store)
    expected = first.rewards(PROMPTS, RESPONSES)
    assert first.calls > 0 and len(store) == first.calls
    second = make_labeller("judge:longer", store=store)
    assert second.rewards(PROMPTS, RESPONSES) == expected and second.calls == 0
    assert len(store) == first.calls


def test_judge_failing_every_comparison_gives_nan() -> None:
    labeller = JudgeLabeller(FunctionJudge(lambda p, a, b: -1, name="broken"))
    rewards = labeller.rewards(["p", "q"], [["a", "bb"], ["x"]])
    assert all(math.isnan(r) for r in rewards[0]) and rewards[1] == [0.0]
    assert labeller.failed == 1


def test_length_tau_is_kendalls_tau_with_length_over_pairs_of_different_length() -> None:
    lengths = [3, 9, 5, 1]
    by_length = [1, 2, 0, 3]  # longest first
    assert length_tau(by_length, lengths) == 1.0 and length_tau(by_length[::-1], lengths) == -1.0
    for order in ([0, 1, 2, 3], [2, 0, 3, 1], [1, 3, 0, 2]):  # distinct lengths: Kendall's τ of the two orders
        assert length_tau(order, lengths) == pytest.approx(kendall_tau(order, by_length))
    # 0 and 2 have the same length: that pair is left out, whichever of them a ranking puts first
    assert length_tau([0, 2, 1], [4, 1, 4]) == 1.0 and length_tau([2, 0, 1], [4, 1, 4]) == 1.0
    assert length_tau([1, 0, 2], [4, 1, 4]) == -1.0
    assert math.isnan(length_tau([1, 0], [2, 2])) and math.isnan(length_tau([0], [5]))
    with pytest.raises(ValueError, match="not a ranking"):
        length_tau([0, 0, 1], [1, 2, 3])


def test_judge_labeller_diagnostics_by_hand() -> None:
    """``longer`` decides every comparison of different lengths and ranks by length (τ +1), ``shorter`` τ −1;
    equal lengths are ties; a function labeller reports nothing; the numbers are the last call's."""
    assert make_labeller("length").diagnostics() == {}
    longer = make_labeller("judge:longer")
    assert longer.diagnostics() == {}  # nothing labelled yet
    longer.rewards(PROMPTS, RESPONSES)  # lengths 3, 9, 5 and 3, 0: all different
    assert longer.diagnostics() == {"judge_decided": 1.0, "judge_failed": 0.0, "judge_length_tau": 1.0}
    shorter = make_labeller("judge-rr:shorter")
    shorter.rewards(PROMPTS, RESPONSES)
    assert shorter.diagnostics() == {"judge_decided": 1.0, "judge_failed": 0.0, "judge_length_tau": -1.0}
    # "aa" and "bb" tie for `longer` (both orders say FIRST); round robin compares all three pairs
    rr = make_labeller("judge-rr:longer")
    rr.rewards(["p"], [["aa", "bb", "c"]])
    assert rr.diagnostics()["judge_decided"] == pytest.approx(2 / 3) and rr.diagnostics()["judge_length_tau"] == 1.0
    rr.rewards(["p"], [["aa", "bb"]])  # the last call only: one tie, τ undefined (equal lengths)
    last = rr.diagnostics()
    assert last["judge_decided"] == 0.0 and math.isnan(last["judge_length_tau"])
    broken = JudgeLabeller(FunctionJudge(lambda p, a, b: -1, name="broken"))
    broken.rewards(["p"], [["a", "bb"]])
    report = broken.diagnostics()
    assert report["judge_decided"] == 0.0 and report["judge_failed"] == 1.0 and math.isnan(report["judge_length_tau"])


def test_a_random_judges_decided_fraction_is_its_agreeing_orders() -> None:
    """Round robin compares every pair once, so the decided fraction is the share of pairs whose two
    ordered answers name the same response: counted here from the judge's own answers."""
    from preftune.judging.functions import RandomJudge

    judge = RandomJudge(seed=3)
    groups = [[f"answer {k} " + "x" * ((k * 7 + j * 5) % 13) for j in range(5)] for k in range(6)]
    labeller = JudgeLabeller(judge, method="round_robin")
    labeller.rewards([f"q{k}" for k in range(6)], groups)
    agree = [
        judge.answer(f"q{k}", a, b) != judge.answer(f"q{k}", b, a)
        for k, group in enumerate(groups)
        for i, a in enumerate(group)
        for b in group[i + 1 :]
    ]
    report = labeller.diagnostics()
    assert report["judge_decided"] == pytest.approx(sum(agree) / len(agree)) and 0.2 < report["judge_decided"] < 0.8
    assert -1.0 < report["judge_length_tau"] < 1.0


def test_missing_eos_penalty_by_hand() -> None:
    rewards = [[1.0, -2.0, 0.5], [3.0, float("nan")]]
    finished = [[True, False, False], [True, False]]
    out = apply_missing_eos_penalty(rewards, finished, 1.5)
    assert out[0] == [1.0, -3.5, -1.0] and out[1][0] == 3.0 and math.isnan(out[1][1])
    assert rewards[0] == [1.0, -2.0, 0.5]  # not changed in place
    assert apply_missing_eos_penalty(rewards, finished, None)[0] == rewards[0]
    assert apply_missing_eos_penalty(rewards, finished, 0)[0] == rewards[0]
    for bad in (-1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(PreftuneError, match="missing_eos_penalty"):
            apply_missing_eos_penalty(rewards, finished, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="differ in shape"):
        apply_missing_eos_penalty(rewards, [[True, True, True], [True]], 1.0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "non-empty"),
        ("nonsense", "unknown labeller 'nonsense'"),
        ("length_target:abc", "target length"),
        ("length_target", "target length"),
        ("function:no_such_module_xyz:f", "cannot import module"),
        ("function:nocolon", "module:function"),
        ("rm:", "name the reward model"),
        ("rm:/no/such/folder/rm", "does not exist"),
        ("judge:", "name the judge"),
        ("judge:nonsense", "unknown judge"),
        ("judge-rr:", "name the judge"),
    ],
)
def test_bad_specs_are_one_error(spec: str, message: str) -> None:
    with pytest.raises(PreftuneError, match=message) as error:
        make_labeller(spec)
    assert "\n" not in str(error.value)


def test_unknown_spec_lists_the_forms() -> None:
    with pytest.raises(PreftuneError) as error:
        make_labeller("judge_longer")
    for form in ("length", "neg_length", "length_target:N", "function:MODULE:FUNCTION", "rm:PATH", "judge:JUDGE"):
        assert form in str(error.value)
    with pytest.raises(PreftuneError, match="ranking method"):
        JudgeLabeller("longer", method="bubble")


def test_reward_model_labeller_matches_the_scorer(trained) -> None:  # noqa: F811
    from preftune.reward import RewardModel

    folder = trained[1].output_dir
    labeller = make_labeller(f"rm:{folder}")
    assert isinstance(labeller, RewardModelLabeller)
    assert labeller.identity().startswith(f"rm:{Path(folder).resolve()}")
    prompts = ["Tell me about tea, item 1.", [{"role": "user", "content": "Tell me about cats."}]]
    responses = [["A note on tea. yes", "A note on tea. no", "A note on tea maps. yes"], ["A note on cats. no"]]
    rewards = labeller.rewards(prompts, responses)
    flat_prompts = [prompts[0]] * 3 + [prompts[1]]
    expected = RewardModel(folder).score(flat_prompts, [r for group in responses for r in group])
    assert [len(r) for r in rewards] == [3, 1]
    assert rewards[0] + rewards[1] == pytest.approx(expected, abs=1e-5)
    assert rewards[0][0] > rewards[0][1]  # the marker task: "yes" above "no"
    assert RewardModelLabeller(labeller.scorer).rewards(prompts, responses) == rewards  # a loaded model


def test_prompts_ranked_concurrently_keep_their_order() -> None:
    judge = FunctionJudge(longer_is_better)
    judge.concurrency = 3
    groups = [["x" * (k % 4 + 1), "y" * ((k + 2) % 4 + 1), "z" * 5] for k in range(8)]
    expected = JudgeLabeller(FunctionJudge(longer_is_better)).rewards([f"p{k}" for k in range(8)], groups)
    assert JudgeLabeller(judge).rewards([f"p{k}" for k in range(8)], groups) == expected


@pytest.mark.slow
def test_importing_the_labellers_loads_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, preftune.judging.labellers; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )
