"""Groups of ranked completions: loading (rows and trees), fitting a group size, tokenising, holding out."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from preftune.data import load_preference_data, tokenize_examples
from preftune.data.examples import Origin
from preftune.data.grouped import NO_GROUP, fit_group_size, load_groups
from preftune.data.groups import GroupExample, TokenizedGroup, pad_groups
from preftune.data.ranked import parse_ranked, parse_tree, rank_pairs
from preftune.data.split import canonical, hold_out, hold_out_groups
from preftune.data.tokenize import NO_ROOM, tokenize_groups
from preftune.errors import PreftuneError
from tests.data.files import OASST_FILE, write_jsonl

IM_END = 2  # SmolLM2's <|im_end|>


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def node(text: str, role: str, rank: int | None = None, replies: tuple = (), deleted: bool = False) -> dict:
    """One OpenAssistant tree message."""
    return {"text": text, "role": role, "rank": rank, "deleted": deleted, "replies": list(replies)}


def group(prompt: Any, completions: list, rewards: list[float], row: int = 1, source: str = "g.jsonl") -> GroupExample:
    return GroupExample(prompt, tuple(completions), tuple(rewards), Origin(source, row))


# -- loading flat rows ------------------------------------------------------------------------------


def test_rewards_are_scores_and_nulls_are_left_out(tmp_path: Path) -> None:
    rows = [
        {"prompt": "Q1?", "completions": ["a", "b", "c"], "scores": [0.5, None, 2.0]},
        {"prompt": "Q2?", "completions": ["d", "", "f"], "scores": [1, None, -3]},  # an unranked "" is not read
    ]
    groups, summary = load_groups(write_jsonl(tmp_path / "s.jsonl", rows))
    assert [(g.prompt, g.completions, g.rewards) for g in groups] == [
        ("Q1?", ("a", "c"), (0.5, 2.0)),
        ("Q2?", ("d", "f"), (1.0, -3.0)),
    ]
    assert [g.origin for g in groups] == [Origin("s.jsonl", 1), Origin("s.jsonl", 2)]
    assert (summary.format, summary.rows_read, summary.kept, summary.dropped) == ("ranked", 2, 2, {})
    assert summary.notes == ("loaded: 2 groups, 4 completions (sizes: 2 x2)",)
    assert not groups[0].is_conversational


def test_rewards_from_ranks_are_minus_rank(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": [user("Q?")],
            "completions": [[assistant("second")], [assistant("best")], [assistant("unranked")], assistant("third")],
            "ranks": [1, 0, None, 2],
        }
    ]
    (g,), _ = load_groups(write_jsonl(tmp_path / "r.jsonl", rows))
    assert g.is_conversational and g.prompt == [user("Q?")]
    assert g.completions == ([assistant("second")], [assistant("best")], [assistant("third")])
    assert g.rewards == (-1.0, 0.0, -2.0)
    assert math.copysign(1.0, g.rewards[1]) == 1.0  # the best is 0.0, not -0.0
    best_vs_worst = g.best_vs_worst()
    assert best_vs_worst is not None
    assert (best_vs_worst.chosen, best_vs_worst.rejected) == ([assistant("best")], [assistant("third")])
    assert best_vs_worst.origin == Origin("r.jsonl", 1, "completions 1 vs 2")


def test_groups_of_fewer_than_two_are_dropped_and_counted(tmp_path: Path) -> None:
    rows = [
        {"prompt": "one ranked", "completions": ["a", "b"], "ranks": [0, None]},
        {"prompt": "none ranked", "completions": ["a", "b"], "ranks": [None, None]},
        {"prompt": "tied", "completions": ["a", "b"], "scores": [1.0, 1.0]},  # kept: two ranked completions
        {"prompt": "fine", "completions": ["a", "b", "c"], "scores": [1.0, 3.0, 3.0]},
    ]
    groups, summary = load_groups(write_jsonl(tmp_path / "few.jsonl", rows))
    assert [g.prompt for g in groups] == ["tied", "fine"]
    assert summary.dropped == {NO_GROUP: 2} and summary.kept == 2
    assert groups[0].best_vs_worst() is None  # all rewards equal
    fine = groups[1].best_vs_worst()
    assert fine is not None and (fine.chosen, fine.rejected) == ("b", "a")  # the first of the tied bests


def test_pairs_are_refused_in_one_line_and_columns_can_be_mapped(tmp_path: Path) -> None:
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q", "chosen": "A", "rejected": "B"}])
    need = "group objectives need ranked completions ('completions' with 'scores' or 'ranks', or OpenAssistant"
    with pytest.raises(PreftuneError) as excinfo:
        load_groups(pairs)
    assert str(excinfo.value) == f"p.jsonl: {need} message trees); this is standard pair data"
    with pytest.raises(PreftuneError, match="this is standard pair data"):
        load_groups(pairs, format="standard")
    other = write_jsonl(tmp_path / "o.jsonl", [{"prompt": "Q", "responses": ["A", "B"], "scores": [1, 2]}])
    with pytest.raises(PreftuneError) as excinfo:
        load_groups(other)
    assert str(excinfo.value) == (
        f"o.jsonl: {need} message trees); found columns ['prompt', 'responses', 'scores'] "
        "(data.columns.completions, .scores, .ranks map other names)"
    )
    (g,), _ = load_groups(other, columns={"completions": "responses"})
    assert g.completions == ("A", "B") and g.rewards == (1.0, 2.0)
    near = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "Q", "model_completions": ["A", "B"], "ranks": [1, 0]}])
    with pytest.raises(PreftuneError, match=r"did you mean 'model_completions'\? \(set data.columns.completions="):
        load_groups(near)
    no_values = write_jsonl(tmp_path / "n.jsonl", [{"prompt": "Q", "completions": ["A", "B"]}])
    with pytest.raises(PreftuneError, match=r"^n.jsonl: no 'ranks' column \(nor 'scores'\)"):
        load_groups(no_values)


BAD_ROWS = [
    {"prompt": "ok", "completions": ["a", "b"], "scores": [1, 2]},
    {"prompt": "bad value", "completions": ["a", "b"], "scores": ["high", 2]},
    {"prompt": "empty", "completions": ["a", "b", ""], "scores": [1, None, 2]},
    {"prompt": "nan", "completions": ["a", "b"], "scores": [1, float("nan")]},
    {"prompt": "ok too", "completions": ["a", "b"], "ranks": [1, 0]},
]


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        (0, "bad.jsonl row 2: field 'scores[0]': expected a number, got str"),
        (1, "bad.jsonl row 3: field 'completions[2]': empty string"),  # the file's index, not the group's
        (2, "bad.jsonl row 4: field 'scores[1]': expected a finite number (got nan)"),
    ],
)
def test_bad_rows_are_named_by_file_row_and_field(tmp_path: Path, drop: int, message: str) -> None:
    # the first `drop` bad rows made good, so that the next one is the first bad row (and is reported)
    rows = [BAD_ROWS[0] if 1 <= i <= drop else row for i, row in enumerate(BAD_ROWS)]
    with pytest.raises(PreftuneError) as excinfo:
        load_groups(write_jsonl(tmp_path / "bad.jsonl", rows))
    assert str(excinfo.value) == message


def test_skip_invalid_counts_drops_by_reason(tmp_path: Path) -> None:
    groups, summary = load_groups(write_jsonl(tmp_path / "bad.jsonl", BAD_ROWS), skip_invalid=True)
    assert [g.prompt for g in groups] == ["ok", "ok too"]
    assert groups[1].rewards == (-1.0, 0.0)
    assert summary.dropped == {
        "scores: expected a number, got str": 1,
        "completions: empty string": 1,
        "scores: expected a finite number": 1,
    }
    assert summary.rows_read == 5 and summary.kept == 2


# -- message trees ----------------------------------------------------------------------------------

TREE = node(
    "Q",
    "prompter",
    replies=(
        node("gone", "assistant", rank=0, deleted=True),
        node(
            "A",
            "assistant",
            rank=1,
            replies=(node("F", "prompter", replies=(node("H", "assistant", rank=1), node("G", "assistant", rank=0))),),
        ),
        node("unranked", "assistant"),
        node("B", "assistant", rank=0, replies=(node("F2", "prompter", replies=(node("lone", "assistant", rank=0),)),)),
    ),
)


def test_tree_gives_a_group_per_ranked_turn(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "tree.jsonl", [{"prompt": TREE}])
    groups, summary = load_groups(path)
    assert summary.format == "oasst"
    assert [(g.prompt, g.completions, g.rewards) for g in groups] == [
        ([user("Q")], ([assistant("A")], [assistant("B")]), (-1.0, 0.0)),
        ([user("Q"), assistant("A"), user("F")], ([assistant("H")], [assistant("G")]), (-1.0, 0.0)),
    ]
    # field paths count the deleted reply, as the file does
    assert [g.origin.part for g in groups] == [
        "turn 2, replies to prompt",
        "turn 4, replies to prompt.replies[1].replies[0]",
    ]
    assert summary.dropped == {NO_GROUP: 1}  # F2's single ranked reply
    first, _ = load_groups(path, tree_turns="first")
    assert [g.rewards for g in first] == [(-1.0, 0.0)]
    with pytest.raises(PreftuneError, match="unknown tree_turns 'last'"):
        load_groups(path, tree_turns="last")


def test_tree_errors_name_the_reply_as_the_file_numbers_it(tmp_path: Path) -> None:
    tree = node("Q", "prompter", replies=(node("gone", "assistant", 0, deleted=True), node("", "assistant", 1)))
    tree["replies"].append(node("fine", "assistant", 0))
    with pytest.raises(PreftuneError) as excinfo:
        load_groups(write_jsonl(tmp_path / "t.jsonl", [{"prompt": tree}]))
    assert str(excinfo.value).startswith("t.jsonl row 1 (turn 2, replies to prompt): field 'prompt.replies[1]")


@pytest.mark.parametrize(("tree_turns", "kept", "dropped"), [("all", 212, 42), ("first", 99, 1)])
def test_real_oasst_groups_agree_with_its_pairs(tree_turns: str, kept: int, dropped: int) -> None:
    groups, summary = load_groups(OASST_FILE, tree_turns=tree_turns)
    assert (summary.rows_read, summary.kept, summary.dropped) == (100, kept, {NO_GROUP: dropped})
    assert f"100 rows read, {kept} groups kept, {dropped} dropped" in str(summary)
    # every pair the pair loader makes is a pair of distinct rewards within one of these groups
    all_pairs, _ = load_preference_data(OASST_FILE, pairing="all", tree_turns=tree_turns)
    best_worst, _ = load_preference_data(OASST_FILE, pairing="best_vs_worst", tree_turns=tree_turns)
    assert sum(a > b for g in groups for a in g.rewards for b in g.rewards) == len(all_pairs)
    # GroupExample.pairs("all") gives those very pairs, in the pair loader's order
    within = [(p.prompt, p.chosen, p.rejected) for g in groups for p in g.pairs("all")]
    assert within == [(e.prompt, e.chosen, e.rejected) for e in all_pairs]
    gapped, _ = load_preference_data(OASST_FILE, pairing="all", tree_turns=tree_turns, score_gap=1)
    assert sum(len(g.pairs("all", 1)) for g in groups) == len(gapped) < len(all_pairs)
    ends = [g.best_vs_worst() for g in groups]
    assert [(e.prompt, e.chosen, e.rejected) for e in ends if e] == [
        (e.prompt, e.chosen, e.rejected) for e in best_worst
    ]
    root = json.loads(OASST_FILE.read_text(encoding="utf-8").splitlines()[0])["prompt"]
    assert groups[0].prompt == [user(root["text"])]
    ranks = {r["text"]: r["rank"] for r in root["replies"]}
    assert [-ranks[c[0]["content"]] for c in groups[0].completions] == list(groups[0].rewards)


# -- fitting a group size -------------------------------------------------------------------------


def sized(sizes: list[int]) -> list[GroupExample]:
    """Groups whose completion ``c{i}`` has reward ``i``, so alignment can be checked."""
    return [
        group(f"P{row}", [f"c{i}" for i in range(n)], [float(i) for i in range(n)], row) for row, n in enumerate(sizes)
    ]


def test_fit_group_size_refuses_mixed_sizes_without_a_size() -> None:
    with pytest.raises(PreftuneError) as excinfo:
        fit_group_size(sized([2, 3, 3, 5]), None)
    assert str(excinfo.value) == (
        "the groups have different numbers of completions (1 groups of 2, 2 of 3, 1 of 5) but a batch needs one: "
        "set data.group_size=C (groups with fewer are dropped, larger ones keep C completions chosen at random)"
    )
    same = sized([3, 3])
    assert fit_group_size(same, None) == (same, 0)


def test_fit_group_size_drops_smaller_and_subsamples_larger() -> None:
    groups = sized([2, 3, 5, 6])
    fitted, dropped = fit_group_size(groups, 3)
    assert dropped == 1 and [g.prompt for g in fitted] == ["P1", "P2", "P3"]
    assert fitted[0] == groups[1]  # already the size: unchanged
    for g in fitted:
        assert len(g.completions) == 3
        indices = [int(c[1:]) for c in g.completions]
        assert indices == sorted(indices)  # the original order
        assert list(g.rewards) == [float(i) for i in indices]  # each reward stays with its completion
    with pytest.raises(PreftuneError, match=r"^data.group_size=7 drops every group \(the largest has 6 completions\)$"):
        fit_group_size(groups, 7)
    with pytest.raises(PreftuneError, match="at least 2"):
        fit_group_size(groups, 1)


def test_fit_group_size_is_seeded_per_group_not_by_order() -> None:
    groups = sized([8] * 20)
    fitted, _ = fit_group_size(groups, 3, seed=0)
    again, _ = fit_group_size(list(reversed(groups)), 3, seed=0)
    alone, _ = fit_group_size(groups[7:8], 3, seed=0)
    assert list(reversed(again)) == fitted and alone == [fitted[7]]
    assert len({g.completions for g in fitted}) > 1  # each group draws its own subset
    other, _ = fit_group_size(groups, 3, seed=1)
    assert other != fitted


# -- tokenising -----------------------------------------------------------------------------------


def test_tokenize_groups_like_pairs_on_the_real_tokenizer(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    tok = smollm2_tokenizer
    rows = [
        {
            "prompt": [user("What color is the sky?")],
            "completions": [[assistant("Blue.")], [assistant("Green, mostly.")], [assistant("Hello!")]],
            "scores": [2, 0, 1],
        }
    ]
    groups, loaded = load_groups(write_jsonl(tmp_path / "c.jsonl", rows))
    (tg,), summary = tokenize_groups(groups, tok, max_length=None, summary=loaded)
    assert tg.rewards == (2.0, 0.0, 1.0) and tg.origin == groups[0].origin
    assert all(r[-1] == IM_END for r in tg.responses)
    assert tg.responses[2] == [19556, 17, IM_END]  # "Hello", "!", "<|im_end|>"
    assert tok.decode(tg.responses[1]) == "Green, mostly.<|im_end|>"
    pair = groups[0].best_vs_worst()
    assert pair is not None
    (tp,), _ = tokenize_examples([pair], tok, max_length=None)
    assert (tg.prompt_ids, tg.responses[0], tg.responses[1]) == (tp.prompt_ids, tp.chosen_ids, tp.rejected_ids)
    assert summary.rows_read == 1 and summary.kept == 1 and summary.format == "ranked"
    assert summary.lengths["response"].max == len(tg.responses[1]) and summary.lengths["group"].max == tg.length
    assert summary.notes[-1] == "tokenized: 1 groups, 3 completions (sizes: 3 x1)"


def test_tokenize_groups_truncates_and_drops(smollm2_tokenizer: Any) -> None:
    tok = smollm2_tokenizer
    long = group([user("Q")], [[assistant("one two three four five six seven")], [assistant("ok")]], [1, 0], 1)
    text = group("Say hi:", [" hi", " hello there friend"], [1, 0], 2)
    (full,), _ = tokenize_groups([long], tok, max_length=None)
    prompt = len(full.prompt_ids)
    (cut,), summary = tokenize_groups([long], tok, max_length=prompt + 3)
    assert cut.responses[0] == full.responses[0][:3] and cut.responses[1] == full.responses[1]
    assert (cut.responses_truncated, cut.prompt_truncated) == (1, False)
    assert (summary.truncated_responses, summary.truncated_prompts) == (1, 0)
    (left,), summary = tokenize_groups([long], tok, max_length=prompt + 3, max_prompt_length=prompt - 2)
    assert left.prompt_ids == full.prompt_ids[2:] and left.prompt_truncated and summary.truncated_prompts == 1
    wide = group([user("Q " * 40)], [[assistant("a")], [assistant("b")]], [1, 0], 3)
    kept, summary = tokenize_groups([long, wide], tok, max_length=prompt + 3)
    assert [g.origin.row for g in kept] == [1] and summary.dropped == {NO_ROOM: 1}
    (plain,), _ = tokenize_groups([text], tok, max_length=None)
    assert all(r[-1] == tok.eos_token_id for r in plain.responses)
    with pytest.raises(PreftuneError, match="mix text and conversational"):
        tokenize_groups([long, text], tok, max_length=None)


# -- holding out ----------------------------------------------------------------------------------


def test_hold_out_groups_keeps_each_prompt_on_one_side() -> None:
    groups = [group(f"P{i % 5}", [f"a{i}", f"b{i}"], [1, 0], i) for i in range(20)]
    for seed in range(5):
        train, held, summary = hold_out_groups(groups, 6, seed=seed)
        assert not {canonical(g.prompt) for g in held} & {canonical(g.prompt) for g in train}
        assert len(held) == 8 and summary.held_out_prompts == 2 and len(train) == 12  # whole prompts of 4
        assert sorted(g.origin.row for g in held) == [g.origin.row for g in held]
        # the same prompts as hold_out would hold out of the groups' best-vs-worst pairs
        pairs = [g.best_vs_worst() for g in groups]
        _, held_pairs, _ = hold_out([p for p in pairs if p], 6, seed=seed)
        assert {p.prompt for p in held_pairs} == {g.prompt for g in held}
    assert (summary.groups, summary.prompts, summary.shared_prompts, summary.largest_prompt) == (20, 5, 5, 4)
    assert str(summary).startswith("held out 8 of 20 groups (asked 6) with 2 whole prompts (seed 4)")
    with pytest.raises(PreftuneError, match="leaves no training groups"):
        hold_out_groups(groups, 20)
    with pytest.raises(PreftuneError, match="leaves no training groups: the 4 groups have only 1 prompts"):
        hold_out_groups([group("same", [f"a{i}", "b"], [1, 0], i) for i in range(4)], 2)


# -- pairs with a minimum gap ---------------------------------------------------------------------


def test_rank_pairs_min_gap() -> None:
    scores = [0.125, 0.5, 0.625, 1.0]
    assert rank_pairs(scores, lower_is_better=False, pairing="all", min_gap=0.25) == [
        (1, 0),
        (2, 0),
        (3, 0),
        (3, 1),
        (3, 2),
    ]
    assert rank_pairs(scores, lower_is_better=False, pairing="all", min_gap=0.5) == [
        (3, 0)
    ]  # gaps of exactly 0.5 are not > 0.5
    assert rank_pairs([0, 1, 2, 3], lower_is_better=True, pairing="all", min_gap=1) == [(0, 2), (0, 3), (1, 3)]
    assert rank_pairs([1, 3], lower_is_better=False, pairing="best_vs_worst", min_gap=1.5) == [(1, 0)]
    assert rank_pairs([1, 3], lower_is_better=False, pairing="best_vs_worst", min_gap=2) == []
    assert rank_pairs([1, 3], lower_is_better=False, pairing="all") == [(1, 0)]  # default: any strict difference
    with pytest.raises(PreftuneError, match=">= 0"):
        rank_pairs([1, 3], lower_is_better=False, pairing="all", min_gap=-1)
    row = {"prompt": "Q", "completions": ["a", "b", "c"], "scores": [0.0, 0.5, 2.0]}
    pairs = parse_ranked(row, Origin("r.jsonl", 1), pairing="all", min_gap=1.0)
    assert [(p.chosen, p.rejected) for p in pairs] == [("c", "a"), ("c", "b")]
    tree_pairs = parse_tree({"prompt": TREE}, Origin("t.jsonl", 1), pairing="all", min_gap=1)
    assert tree_pairs == []  # every ranked turn's ranks differ by exactly 1
    assert len(parse_tree({"prompt": TREE}, Origin("t.jsonl", 1), pairing="all")) == 2


def test_pad_groups_fills_to_the_widest_with_one_token_nan_rewarded_responses() -> None:
    three = TokenizedGroup([1, 2], ([3], [4, 5], [6]), (0.0, -1.0, -2.0), Origin("f", 1), finished=(True,) * 3)
    two = TokenizedGroup([7], ([8, 9], [10]), (1.0, 0.0), Origin("f", 2), finished=(False, True))
    padded = pad_groups([three, two], filler=99)
    assert padded[0] is three  # already the widest: as it was
    assert padded[1].responses == ([8, 9], [10], [99])
    assert padded[1].rewards[:2] == (1.0, 0.0) and math.isnan(padded[1].rewards[2])
    assert padded[1].finished == (False, True, True) and padded[1].prompt_ids == [7]
    assert pad_groups([two, two], filler=99) == [two, two]  # one size: nothing added
    with pytest.raises(PreftuneError, match="without rewards"):
        pad_groups([three, TokenizedGroup([1], ([2], [3]), None, Origin("f", 3))], filler=99)
