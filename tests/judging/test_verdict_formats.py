"""Verdict formats (short, mt_bench, arena_hard, json): read from text, named by templates, and
asked of a real OpenAI-protocol server process on 127.0.0.1 in both orders; a tie is a stored verdict."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from preftune.errors import PreftuneError
from preftune.judging.api import ApiJudge, parse_spec
from preftune.judging.base import FAILED, FIRST, SECOND, TIE, BothOrders, Verdict
from preftune.judging.prompting import load_template
from preftune.judging.store import VerdictStore
from preftune.judging.verdicts import STRONG_WEIGHT, read_verdict
from tests.judging.servers import config, openai_server

EXPLAINED = "Assistant A is thorough; Assistant B is terse. Some would say [[B]], yet A answers the question.\n"


@pytest.mark.parametrize(
    ("form", "text", "answer", "weight"),
    [
        ("mt_bench", EXPLAINED + "[[A]]", FIRST, 1.0),
        ("mt_bench", "Response A and response B both try. [[A]] at first sight... no: [[B]]", SECOND, 1.0),
        ("mt_bench", EXPLAINED + "Neither is better. [[C]]", TIE, 1.0),
        ("mt_bench", "[[ b ]]", SECOND, 1.0),
        ("arena_hard", EXPLAINED + "My final verdict is: [[A>>B]]", FIRST, STRONG_WEIGHT),
        ("arena_hard", EXPLAINED + "[[A>B]]", FIRST, 1.0),
        ("arena_hard", EXPLAINED + "[[A=B]]", TIE, 1.0),
        ("arena_hard", "[[A>B]] was my first thought; final: [[B>A]]", SECOND, 1.0),
        ("arena_hard", EXPLAINED + "[[B>>A]]", SECOND, STRONG_WEIGHT),
        ("arena_hard", "[[A<<B]]", SECOND, STRONG_WEIGHT),
        ("json", '{"winner": "A"}', FIRST, 1.0),
        ("json", EXPLAINED + '```json\n{"reason": "B is {short}", "winner": "B"}\n```', SECOND, 1.0),
        ("json", 'First {"winner": "A"}, then on reflection {"winner": "tie"}', TIE, 1.0),
        ("json", '{"verdict": {"winner": "b"}}', SECOND, 1.0),
        ("short", "Response 2", SECOND, 1.0),
        ("short", "Response 1 is good but response 2 is better. [[2]]", SECOND, 1.0),
    ],
)
def test_each_format_reads_the_last_verdict_marker(form: str, text: str, answer: int, weight: float) -> None:
    reading = read_verdict(text, form)
    assert (reading.answer, reading.weight) == (answer, weight)


def test_a_short_template_asking_for_bracketed_answers_reads_the_last_one() -> None:
    # the case: '#! answers: A B', a judge that explains itself naming both, then [[B]]
    text = "Assistant A is concise. Assistant B covers the edge case A misses. [[B]]"
    assert read_verdict(text, "short", ("A", "B")).answer == SECOND
    assert read_verdict("Assistant A and Assistant B differ.", "short", ("A", "B")).answer == FAILED


@pytest.mark.parametrize(
    ("form", "text"),
    [
        ("mt_bench", "Assistant A is better than Assistant B."),  # no marker: unreadable, not a tie
        ("mt_bench", "[[D]]"),
        ("arena_hard", "[[A>A]]"),
        ("arena_hard", "A>B"),
        ("json", '{"winner": "maybe"}'),
        ("json", '{"winner": "A"'),  # cut off
        ("json", '{"winner": "A"} and later {"winner": null}'),  # the last marker decides, and says nothing
        ("short", "Response 1 is better than response 2"),
    ],
)
def test_an_unreadable_answer_fails_and_is_no_tie(form: str, text: str) -> None:
    assert read_verdict(text, form).answer == FAILED


def _template(tmp_path: Path, header: str, tags: tuple[str, str] = ("response_a", "response_b")) -> Path:
    path = tmp_path / "judge.txt"
    first, second = tags
    path.write_text(
        f"{header}Q: {{instruction}}\n<{first}>\n{{output_1}}\n</{first}>\n<{second}>\n{{output_2}}\n"
        f"</{second}>\nExplain, then answer.\n"
    )
    return path


def test_templates_name_their_format_and_the_answers_header_still_works(tmp_path: Path) -> None:
    assert [load_template(n).format for n in ("pairwise", "alpaca_eval", "mt_bench", "arena_hard", "json")] == [
        "short",
        "short",
        "mt_bench",
        "arena_hard",
        "json",
    ]
    both = load_template(_template(tmp_path, "#! format: mt_bench\n\n"))
    assert both.format == "mt_bench" and both.text.startswith("Q: ")  # header and blank line removed
    old = load_template(_template(tmp_path, "#! answers: A B\n"))
    assert (old.format, old.answers) == ("short", ("A", "B")) and not old.text.startswith("#!")


@pytest.mark.parametrize(
    ("header", "says"),
    [
        ("#! format: fastchat\n", "must be one of short, mt_bench, arena_hard, json"),
        ("#! verdict: A\n", "unknown header"),
        ("#! format: mt_bench\n#! answers: A B\n", "belongs to the short format"),
        ("#! answers: A A\n", "two different answers"),
        ("#! format: json\n#! format: json\n", "given twice"),
    ],
)
def test_a_bad_header_is_one_clear_error(tmp_path: Path, header: str, says: str) -> None:
    with pytest.raises(PreftuneError, match=says):
        load_template(_template(tmp_path, header))


def test_a_reasoning_format_gets_room_to_reason_and_no_logprob_scoring() -> None:
    url = "http://127.0.0.1:1/v1"
    assert ApiJudge(config(url)).payload("Q", "a", "b")["max_tokens"] == 8  # short answers: as before
    reasoning = ApiJudge(config(url, template="mt_bench"))
    assert reasoning.payload("Q", "a", "b")["max_tokens"] == 1024
    assert reasoning.identity() != ApiJudge(config(url, template="json")).identity()
    assert ApiJudge(config(url, template="mt_bench", max_tokens=300)).payload("Q", "a", "b")["max_tokens"] == 300
    with pytest.raises(PreftuneError, match="scoring=logprobs"):
        ApiJudge(config(url, template="arena_hard", scoring="logprobs"))
    with pytest.raises(PreftuneError, match="model=NAME"):
        parse_spec("api:http://127.0.0.1:1/v1,template=mt_bench")


def test_a_local_judge_refuses_a_reasoning_template_before_loading_anything() -> None:
    from preftune.judging.local import LocalJudge

    with pytest.raises(PreftuneError, match="short answer"):
        LocalJudge("no-such-model-is-loaded", template="mt_bench")


# --- against the server process, both orders ---

LONG, SHORT, SAME_A, SAME_B = "a much longer answer", "short", "twelve chars", "twelve-chars"
ITEMS = [("Q1", LONG, SHORT), ("Q2", SHORT, LONG), ("Q3", SAME_A, SAME_B)]


def _stored(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return sorted(row[0] for row in db.execute("SELECT verdict FROM verdicts"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("style", "template"),
    [
        ("short", "pairwise"),
        ("short", "alpaca_eval"),
        ("mt_bench", "mt_bench"),
        ("arena_hard", "arena_hard"),
        ("json", "json"),
    ],
)
def test_each_format_against_a_server_in_both_orders(tmp_path: Path, style: str, template: str) -> None:
    store_path = tmp_path / "verdicts.sqlite"
    with openai_server("--style", style) as (url, stats):
        judge = ApiJudge(config(url, template=template))
        verdicts = BothOrders(judge, VerdictStore(store_path)).compare_many(ITEMS)
        asked = stats()["requests"]
        again = BothOrders(ApiJudge(config(url, template=template)), VerdictStore(store_path)).compare_many(ITEMS)
        assert stats()["requests"] == asked  # every verdict, ties included, came from the store
    # the short format has no tie: equal lengths answer "the first" in both orders, a tie by disagreement
    assert verdicts == again == [Verdict.A, Verdict.B, Verdict.TIE]
    assert asked == 2 * len(ITEMS)  # every answer read at the first attempt, explanations and all
    ties = [TIE, TIE] if style != "short" else []
    assert _stored(store_path) == sorted([FIRST, SECOND, SECOND, FIRST, *ties, *([FIRST, FIRST] if not ties else [])])


@pytest.mark.slow
def test_arena_hard_keeps_the_strength_as_a_weight() -> None:
    with openai_server("--style", "arena_hard") as (url, _):
        judge = ApiJudge(config(url, template="arena_hard"))
        readings = judge.grade(
            ["Q"] * 4, [("x" * 30, "y" * 10), ("x" * 12, "y" * 10), ("x" * 10, "y" * 10), ("x" * 4, "y" * 10)]
        )
    assert [(r.answer, r.weight) for r in readings] == [
        (FIRST, STRONG_WEIGHT),
        (FIRST, 1.0),
        (TIE, 1.0),
        (SECOND, STRONG_WEIGHT),
    ]


def _rank_rows(path: Path) -> Path:
    rows = [
        {"prompt": f"Say something {i}", "completions": ["x" * 9, "y" * (20 + i), "z" * 9, "w" * 3]} for i in range(3)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _rank(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "preftune.cli.main", "rank", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "comparisons"), [("round_robin", 18), ("ipr", 12)])
def test_rank_with_an_mt_bench_template_decides_every_comparison_and_stores_ties(
    tmp_path: Path, method: str, comparisons: int
) -> None:
    rows = _rank_rows(tmp_path / "rows.jsonl")
    template = _template(tmp_path, "#! format: mt_bench\n")  # a user's template file naming the format
    out, store = tmp_path / "ranked.jsonl", tmp_path / "ranked.verdicts.sqlite"
    with openai_server("--style", "mt_bench") as (url, stats):
        args = [
            f"input={rows}",
            f"judge=api:{url},model=length-judge,template={template}",
            f"method={method}",
            f"out={out}",
            f"pairs={tmp_path / 'pairs.jsonl'}",
        ]
        first = _rank(*args)
        asked = stats()["requests"]
        second = _rank(*args)
        assert stats()["requests"] == asked  # a rerun asks nothing: ties are verdicts, not failures
    assert first.returncode == 0, first.stderr
    assert f"{comparisons} comparisons" in first.stderr and " 0 failed" in first.stderr, first.stderr
    assert asked == len(_stored(store))  # every ordered call read at its first attempt, and stored
    assert second.returncode == 0, second.stderr
    assert _stored(store).count(TIE) == 3 * 2  # per prompt, x*9 against z*9 in both orders
    for row in map(json.loads, out.read_text().splitlines()):
        assert row["ranks"] == [1, 0, 2, 3]  # longest first; the tie keeps the order given
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 3 and all(len(p["chosen"]) > 19 and p["rejected"] == "w" * 3 for p in pairs)
