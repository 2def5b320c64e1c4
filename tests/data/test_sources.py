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
    expected_line = 3 if suffix == ".jsonl" else 4
    assert message.startswith(f"latin1{suffix} line {expected_line}: bytes that are not UTF-8"), message


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


def test_one_json_object_is_read_as_one_row(tmp_path: Path) -> None:
    path = tmp_path / "nested.json"
    path.write_text(json.dumps({"data": ROWS, "version": 1}, indent=2), encoding="utf-8")
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(path)
    assert one_line_error(excinfo) == "nested.json: no 'chosen' column; found ['data', 'version']"
