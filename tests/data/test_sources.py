"""Loading rows from every kind of source, and the one-line errors for sources that cannot be read."""

from __future__ import annotations

import csv
import gzip
import json
import time
from pathlib import Path

import datasets
import pytest

from preftune.data import load_preference_data, load_rows
from preftune.errors import PreftuneError
from tests.data.files import write_jsonl

ROWS = [
    {"prompt": "What color is the sky?", "chosen": "Blue.", "rejected": "Green."},
    {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."},
    {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
]


def one_line_error(excinfo: pytest.ExceptionInfo[PreftuneError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message
    return message


def test_reads_jsonl_json_gz_parquet_csv(tmp_path: Path) -> None:
    jsonl = write_jsonl(tmp_path / "d.jsonl", ROWS)
    array = tmp_path / "d.json"
    array.write_text(json.dumps(ROWS), encoding="utf-8")
    gz = tmp_path / "d.jsonl.gz"
    gz.write_bytes(gzip.compress(jsonl.read_bytes()))
    parquet = tmp_path / "d.parquet"
    datasets.Dataset.from_list(ROWS).to_parquet(str(parquet))
    table = tmp_path / "d.csv"
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(ROWS[0]))
        writer.writeheader()
        writer.writerows(ROWS)
    for path in (jsonl, array, gz, parquet, table):
        raw = load_rows(path)
        assert raw.rows == ROWS, path.name
        assert raw.name == path.name
        assert raw.columns == ["prompt", "chosen", "rejected"]


def test_reads_save_to_disk_folders_and_picks_the_split(tmp_path: Path) -> None:
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "one"))
    assert load_rows(tmp_path / "one").rows == ROWS
    both = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:1])}
    )
    both.save_to_disk(str(tmp_path / "both"))
    assert len(load_rows(tmp_path / "both").rows) == 3  # 'train' by default
    assert load_rows(tmp_path / "both", split="test").rows == ROWS[:1]
    with pytest.raises(PreftuneError) as excinfo:
        load_rows(tmp_path / "both", split="validation")
    assert "no split 'validation'" in one_line_error(excinfo)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(tmp_path / "nowhere.jsonl")
    assert one_line_error(excinfo) == f"no such file: {tmp_path / 'nowhere.jsonl'}"
    with pytest.raises(PreftuneError, match=r"^no such file: data/train\.jsonl$"):
        load_rows("data/train.jsonl")  # a str that looks like a path is not sent to the Hub


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"latin1{suffix}"
    if suffix == ".jsonl":
        good = json.dumps(ROWS[0]).encode()
        path.write_bytes(
            good + b"\n" + good + b"\n" + '{"prompt": "caf\u00e9", "chosen": "a", "rejected": "b"}\n'.encode("latin-1")
        )
    else:
        path.write_bytes(b"prompt,chosen,rejected\na,b,c\nd,e,f\ncaf\xe9,x,y\n")
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(path)
    message = one_line_error(excinfo)
    # JSON Lines: row N is line N; CSV: row 3 is the third record, on line 4 below the header.
    where = "line 3" if suffix == ".jsonl" else "line 4 (row 3)"
    assert message.startswith(f"latin1{suffix} {where}: bytes that are not UTF-8"), message


def test_malformed_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    lines = [json.dumps(r) for r in ROWS]
    lines.insert(2, '{"prompt": "x", "chosen": "y" "rejected": "z"}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(path)
    assert one_line_error(excinfo).startswith("broken.jsonl line 3: malformed JSON (Expecting ',' delimiter")


def test_malformed_json_array_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[\n{"prompt": "a", "chosen": "b", "rejected": "c"},\n{"prompt": "a",, }\n]\n', encoding="utf-8")
    with pytest.raises(PreftuneError) as excinfo:
        load_rows(path)
    assert one_line_error(excinfo).startswith("broken.json line 3: malformed JSON")


def test_a_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(PreftuneError, match=r"^list.jsonl line 2: expected a JSON object \(one row\), got list$"):
        load_rows(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [("empty.jsonl", b""), ("blank.jsonl", b"\n\n"), ("header.csv", b"prompt,chosen,rejected\n"), ("e.json", b"[]")],
)
def test_empty_dataset(tmp_path: Path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(tmp_path / name)
    assert one_line_error(excinfo).startswith(f"{name}: empty dataset")


def test_rows_of_mixed_types_still_load_so_validation_names_the_row(tmp_path: Path) -> None:
    rows = [ROWS[0], {"prompt": "a", "chosen": ["not", "a", "string"], "rejected": "c"}]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    assert load_rows(path).rows == rows  # pyarrow cannot type this column; json reads it
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(path)
    assert one_line_error(excinfo) == "mixed.jsonl row 2: field 'chosen': expected a string, got list"


def test_unknown_file_type(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("hello\n", encoding="utf-8")
    with pytest.raises(PreftuneError, match=r"^data.txt: unknown file type '.txt'"):
        load_rows(tmp_path / "data.txt")


def test_hub_name_without_network_fails_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data("no-such-user/no-such-preference-dataset")
    message = one_line_error(excinfo)
    assert message.startswith(
        "'no-such-user/no-such-preference-dataset' is not a local file or folder, and it could not be loaded "
        "from the Hugging Face Hub ("
    ), message
    assert time.perf_counter() - start < 10


def test_csv_cells_are_text(tmp_path: Path) -> None:
    path = tmp_path / "numbers.csv"
    path.write_text('prompt,chosen,rejected\n2+2?,4,5\n"NA?",NA,\n', encoding="utf-8")
    assert load_rows(path).rows == [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": "NA?", "chosen": "NA", "rejected": ""},
    ]
    with pytest.raises(PreftuneError, match=r"^numbers.csv row 2: field 'rejected': empty string$"):
        load_preference_data(path)


def test_a_json_object_holding_one_list_of_rows_gives_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "nested.json"
    path.write_text(json.dumps({"data": ROWS, "version": 1}, indent=2), encoding="utf-8")
    examples, summary = load_preference_data(path)
    assert [e.chosen for e in examples] == [r["chosen"] for r in ROWS] and summary.rows_read == 3


def test_a_plain_json_object_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text(json.dumps(ROWS[0], indent=2), encoding="utf-8")
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(path)
    assert one_line_error(excinfo) == (
        "one.json: one JSON object (keys 'prompt', 'chosen', 'rejected'), not a list of rows; "
        "write a list [{...}, {...}] or one object per line (JSON Lines)"
    )
    (tmp_path / "two.json").write_text(json.dumps({"train": ROWS, "test": ROWS}), encoding="utf-8")
    with pytest.raises(PreftuneError, match=r"^two.json: one JSON object holding several lists of rows"):
        load_rows(tmp_path / "two.json")


def test_a_json_file_of_lines_is_read_as_json_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "lines.json", ROWS)  # JSON Lines under a .json name, as often found
    assert load_rows(path).rows == ROWS


def truncated_file(tmp_path: Path) -> Path:
    """Seven rows whose last line was cut mid-object (as a copy interrupted half way)."""
    path = tmp_path / "cut.jsonl"
    text = "".join(json.dumps({**ROWS[0], "prompt": f"q{i}"}) + "\n" for i in range(7))
    path.write_text(text[:-15], encoding="utf-8")
    return path


def test_a_truncated_last_line_is_one_line_naming_it(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(truncated_file(tmp_path))
    assert one_line_error(excinfo) == (
        "cut.jsonl line 7: malformed JSON (Unterminated string starting at column 37); "
        "it is the last line and ends mid-object: the file looks truncated"
    )
    captured = capfd.readouterr()
    assert "row 6" not in captured.out + captured.err and "Failed" not in captured.err  # no second message


def test_a_line_cut_in_the_middle_of_the_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "pretty.jsonl"
    path.write_text(json.dumps(ROWS[0], indent=1) + "\n", encoding="utf-8")  # pretty-printed: not JSON Lines
    with pytest.raises(PreftuneError) as excinfo:
        load_rows(path)
    assert one_line_error(excinfo).startswith("pretty.jsonl line 1: malformed JSON (Expecting property name")
    assert one_line_error(excinfo).endswith("the line ends mid-object (JSON Lines holds one object per line)")


def test_skip_invalid_drops_unreadable_lines_and_keeps_line_numbers(tmp_path: Path) -> None:
    good = [json.dumps({**ROWS[0], "prompt": f"q{i}"}).encode() for i in range(5)]
    latin1 = '{"prompt": "caf\u00e9", "chosen": "a", "rejected": "b"}'.encode("latin-1")
    lines = [good[0], latin1, good[1], b'{"prompt": "x",, }', good[2], b"", good[3], b"[1]", good[4][:-9]]
    path = tmp_path / "messy.jsonl"
    path.write_bytes(b"\n".join(lines))
    examples, summary = load_preference_data(path, skip_invalid=True)
    assert [e.prompt for e in examples] == ["q0", "q1", "q2", "q3"]
    assert [e.origin.row for e in examples] == [1, 3, 5, 7]  # row N is line N, whatever was dropped before it
    assert summary.dropped == {
        "line: bytes that are not UTF-8": 1,
        "line: malformed JSON": 1,
        "line: not a JSON object": 1,
        "line: cut short (the last line ends mid-object)": 1,
    }
    assert summary.rows_read == 8 and summary.kept == 4  # blank line 6 is no row
    lines[4] = json.dumps({**ROWS[0], "chosen": ""}).encode()
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(PreftuneError, match=r"^messy.jsonl line 2: bytes that are not UTF-8"):
        load_preference_data(path)
    lines[1] = lines[3] = lines[7] = good[0]
    path.write_bytes(b"\n".join(lines[:-1]))
    with pytest.raises(PreftuneError) as excinfo:  # a row error names the row as its line number
        load_preference_data(path)
    assert one_line_error(excinfo) == "messy.jsonl row 5: field 'chosen': empty string"


@pytest.mark.parametrize(("name", "delimiter"), [("semi.csv", ";"), ("tabs.csv", "\t"), ("tabs.tsv", "\t")])
def test_csv_delimiter_is_read_from_the_header(tmp_path: Path, name: str, delimiter: str) -> None:
    path = tmp_path / name
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(ROWS[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows([*ROWS, {"prompt": "a, b; c", "chosen": "x,y", "rejected": "z"}])
    raw = load_rows(path)
    assert raw.columns == ["prompt", "chosen", "rejected"]
    assert raw.rows == [*ROWS, {"prompt": "a, b; c", "chosen": "x,y", "rejected": "z"}]


def test_csv_record_of_the_wrong_width(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text("prompt,chosen,rejected\na,b,c\nd,e,f,g\n\ufeffh,i,j\n", encoding="utf-8")
    with pytest.raises(PreftuneError) as excinfo:
        load_rows(path)
    assert one_line_error(excinfo) == "wide.csv line 3 (row 2): 4 cells, the header has 3 (delimiter ',')"
    raw = load_rows(path, skip_invalid=True)
    assert [r["prompt"] for r in raw.rows] == ["a", "\ufeffh"] and raw.dropped == {"row: wrong number of cells": 1}
    assert [raw.origin(i).row for i in range(2)] == [1, 3]


def test_csv_with_a_byte_order_mark_and_multiline_cells(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes('\ufeffprompt,chosen,rejected\r\n"two\r\nlines",b,c\r\nd,"e",f\r\n'.encode())
    raw = load_rows(path)
    assert raw.columns == ["prompt", "chosen", "rejected"]
    assert raw.rows[0]["prompt"] == "two\r\nlines" and raw.origin(1).row == 2


def test_folder_of_unrelated_files_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "README.md").write_text("# notes\n", encoding="utf-8")
    (folder / "train.py").write_text("print('hi')\n", encoding="utf-8")
    for i in range(3):
        (folder / f"img{i}.png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(folder)
    assert one_line_error(excinfo) == (
        "repo: a folder with no data files (it holds 3 .png files, README.md, train.py); expected .jsonl, .json, "
        ".csv, .tsv or .parquet files, or a folder written by save_to_disk"
    )


def test_folder_reads_its_data_files_and_ignores_the_rest(tmp_path: Path) -> None:
    folder = tmp_path / "pairs"
    folder.mkdir()
    write_jsonl(folder / "data.jsonl", ROWS)
    for i in range(3):  # more images than data files: `datasets` alone would read this as an image folder
        (folder / f"img{i}.png").write_bytes(b"\x89PNG\r\n")
    raw = load_rows(folder)
    assert raw.rows == ROWS and raw.name == "pairs/data.jsonl"


def test_folder_splits_by_file_name(tmp_path: Path) -> None:
    folder = tmp_path / "splits"
    (folder / "data").mkdir(parents=True)
    write_jsonl(folder / "data" / "train-00000-of-00002.jsonl", ROWS[:2])
    write_jsonl(folder / "data" / "train-00001-of-00002.jsonl", [ROWS[2], {**ROWS[0], "chosen": ""}])
    write_jsonl(folder / "data" / "test.jsonl", ROWS[:1])
    raw = load_rows(folder)
    assert raw.rows[:3] == ROWS and raw.name == "splits"
    assert str(raw.origin(3)) == "splits/data/train-00001-of-00002.jsonl row 2"  # rows keep their own file
    with pytest.raises(PreftuneError, match=r"^splits/data/train-00001-of-00002.jsonl row 2: field 'chosen'"):
        load_preference_data(folder)
    assert load_rows(folder, split="test").rows == ROWS[:1]
    with pytest.raises(PreftuneError) as excinfo:
        load_rows(folder, split="dev")
    assert one_line_error(excinfo) == ("splits: no split 'dev' (it has train, test); set data.split to one of them")


def test_dataset_dict_without_train_names_its_splits_and_the_setting(tmp_path: Path) -> None:
    both = datasets.DatasetDict(
        {"test": datasets.Dataset.from_list(ROWS), "validation": datasets.Dataset.from_list(ROWS[:1])}
    )
    both.save_to_disk(str(tmp_path / "judged"))
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(tmp_path / "judged")
    assert one_line_error(excinfo) == (
        "judged: no 'train' split (it has test, validation); pick one with data.split=NAME, "
        "or name its folder (data.train=judged/test)"
    )
    examples, _ = load_preference_data(tmp_path / "judged", split="validation")
    assert len(examples) == 1
    examples, _ = load_preference_data(tmp_path / "judged" / "test")  # the split's own folder
    assert len(examples) == 3
    with pytest.raises(PreftuneError, match=r"^d.jsonl: a single file has no splits; data.split=test applies"):
        load_rows(write_jsonl(tmp_path / "d.jsonl", ROWS), split="test")
