"""One command-line convention (docs/cli.md): every command's settings are dotted keys, one spelling
per setting across commands, listed the same way in ``--help``; the old ``--flags`` still read, with
one note each; a YAML file of settings means what the same ``key=value`` items mean."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from preftune.cli.config import schema_defaults
from preftune.cli.keys import CONVENTION_FLAGS, VOCABULARY, Settings, resolve
from preftune.cli.main import _parse, build_parser, main
from preftune.errors import PreftuneError
from preftune.run.trl_names import SAME_VALUE, trl_meaning


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser by its name (``judge eval``, ``lab bandit``...), walked from ``preftune``."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs and name:
            found[name] = parser
        for sub in subs:
            for child, child_parser in sub.choices.items():
                walk(child_parser, f"{name} {child}".strip())

    walk(build_parser(), "")
    return found


COMMANDS = _commands()
SETTINGS = {name: p._defaults["command_settings"] for name, p in COMMANDS.items() if "command_settings" in p._defaults}
TRAIN_KEYS = schema_defaults()
#: keys whose name is also TRL's for another setting, on purpose: a command's own randomness (presentation
#: order, bootstrap, sampling) is `seed`, training's is optim.seed; TRL's `judge` labels on-policy samples,
#: which train spells online.labeller=judge:SPEC, the SPEC written as `judge=` takes it
OWN_MEANING = {"seed", "judge"}


def test_every_command_but_train_and_objectives_reads_settings() -> None:
    """train has its own CONFIG + key=value (the same keys); objectives takes one expression."""
    assert set(COMMANDS) - set(SETTINGS) == {"train", "objectives"}
    assert len(SETTINGS) >= 12, sorted(SETTINGS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_flags_shown_in_help_are_only_the_conventional_ones(name: str) -> None:
    shown = {
        flag for action in COMMANDS[name]._actions if action.help != argparse.SUPPRESS for flag in action.option_strings
    }
    assert shown <= CONVENTION_FLAGS, f"preftune {name} shows setting flags {sorted(shown - CONVENTION_FLAGS)}"


def _kind_of(default: object) -> str | None:
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("list", list), ("str", str)):
        if isinstance(default, types):
            return kind
    return None


def test_one_spelling_per_setting() -> None:
    """Each key is defined once (VOCABULARY); a key train has means there what it means in train (the
    same kind of value); no key is another tool's name for a setting we spell otherwise (TRL's)."""
    for name, settings in SETTINGS.items():
        keys = [s.key for s in settings.settings]
        assert len(keys) == len(set(keys)), f"{name} lists a key twice"
        attributes = [s.attribute for s in settings.settings]
        assert len(attributes) == len(set(attributes)), f"{name}: two keys fill one attribute"
        for key in keys:
            assert key in VOCABULARY, f"{name}: {key} is not in the vocabulary"
    for key, spec in VOCABULARY.items():
        if key in TRAIN_KEYS:
            train_kind = _kind_of(TRAIN_KEYS[key][0])
            if train_kind is not None:  # None default: any kind
                assert spec.kind in (train_kind, "path") or (train_kind, spec.kind) == ("float", "int"), key
        elif key not in OWN_MEANING:  # a key train lacks must not be TRL's name for one train spells otherwise
            meaning = trl_meaning(key.split(".")[-1])
            assert meaning is None or key in SAME_VALUE.values() or meaning.startswith(key), (key, meaning)
    # one spelling of a judge, of an output, of the sampling settings across commands
    judges = {s.key for st in SETTINGS.values() for s in st.settings if s.flag == "--judge"}
    assert judges == {"judge", "eval.judges"}  # one judge, or train's list of evaluation judges
    sampling = {s.key for st in SETTINGS.values() for s in st.settings if s.flag in ("--temperature", "--top-p")}
    assert sampling == {"sampling.temperature", "sampling.top_p"}
    assert "sampling.temperature" in TRAIN_KEYS and "sampling.n" in TRAIN_KEYS  # train spells them the same


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_lists_every_key_in_one_form(name: str) -> None:
    """``--help`` ends with a ``settings (...)`` block: one ``key=DEFAULT`` line per key."""
    text = COMMANDS[name].format_help()
    if name == "objectives":
        return
    block = text[text.index("\nsettings (") :]
    listed = re.findall(r"^  (\S+?)=", block, flags=re.M)
    expected = list(TRAIN_KEYS) if name == "train" else [s.key for s in SETTINGS[name].settings]
    assert listed[: len(expected)] == expected


def _value_for(kind: str, choices: tuple[str, ...]) -> tuple[list[str], str]:
    """(old-flag argv values, key=value text) for a value of ``kind``."""
    if choices:
        return [choices[-1]], choices[-1]
    return {
        "int": (["3"], "3"),
        "float": (["0.25"], "0.25"),
        "str": (["x:y"], "x:y"),
        "path": (["some/file.jsonl"], "some/file.jsonl"),
        "list": (["a"], "[a]"),
        "bool": ([], "true"),
    }[kind]


def _resolved(argv: list[str]) -> argparse.Namespace:
    args = _parse(build_parser(), argv)
    resolve(args)
    return args


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_old_flags_read_as_their_keys_with_one_note_each(name: str, capsys: pytest.CaptureFixture) -> None:
    settings: Settings = SETTINGS[name]
    words = name.split() + (["P3"] if name == "reproduce" else [])
    old, new = list(words), list(words)
    for s in settings.settings:
        if s.flag is None:
            continue
        spec = VOCABULARY[s.key]
        flag_values, text = _value_for(spec.kind, spec.choices)
        old += [s.flag, *flag_values]
        new.append(f"{s.key}={text}")
    flags = sum(1 for s in settings.settings if s.flag)
    capsys.readouterr()
    by_flags = _resolved(old)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    by_keys = _resolved(new)
    assert capsys.readouterr().err == ""
    assert len(notes) == flags
    assert all("is spelled" in note and "read until preftune" in note for note in notes)
    for s in settings.settings:
        assert getattr(by_flags, s.attribute) == getattr(by_keys, s.attribute), s.key


def test_switch_flags_and_bool_keys() -> None:
    assert _resolved(["train-rm", "output_dir=o", "--full"]).lora is False
    assert _resolved(["train-rm", "output_dir=o", "lora.enabled=false"]).lora is False
    assert _resolved(["train-rm", "output_dir=o"]).lora is True


def test_a_yaml_file_means_what_its_key_value_items_mean(tmp_path: Path) -> None:
    settings = tmp_path / "generate.yaml"
    settings.write_text(
        "prompts: bundled:hh-harmless\nout: g.jsonl\nsampling:\n  n: 3\n  temperature: 0.5\nmodel:\n  name: tiny\n"
    )
    from_file = _resolved(["generate", str(settings), "sampling.n=5"])  # the command line wins
    items = ["prompts=bundled:hh-harmless", "out=g.jsonl", "sampling.n=5", "sampling.temperature=0.5"]
    from_items = _resolved(["generate", *items, "model.name=tiny"])
    for s in SETTINGS["generate"].settings:
        assert getattr(from_file, s.attribute) == getattr(from_items, s.attribute), s.key
    assert from_file.n == 5 and from_file.temperature == 0.5 and from_file.model == "tiny"


def test_a_word_or_a_path_is_taken_as_written() -> None:
    """YAML would read ``local:`` as a mapping, `` #...`` as a comment and ``null`` as nothing."""
    args = _resolved(["rank", "input=null", "out=o #5.jsonl", "judge=local:"])
    assert (args.input, args.out, args.judge) == (Path("null"), Path("o #5.jsonl"), "local:")
    assert (
        _resolved(["rank", "input=a", "out=b", "judge=api:http://h:1/v1,model=m"]).judge == "api:http://h:1/v1,model=m"
    )


def test_data_settings_pass_through_to_the_data_reader() -> None:
    args = _resolved(["judge", "eval", "judge=longer", "data.eval=x.jsonl", "data.columns.chosen=good"])
    assert args.data == "x.jsonl" and args.overrides == ["data.columns.chosen=good"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["rank", "input=a.jsonl", "judg=longer", "ot=b.jsonl", "optim.lr=1"],
            "rank: settings do not exist: 'judg' (did you mean 'judge'?); 'ot' (did you mean 'out'?); "
            "'optim.lr' (a 'preftune train' setting)",
        ),
        (["rank", "input=a.jsonl"], "rank needs out=..."),
        (["generate", "prompts=p", "out=o", "sampling.n=many"], "sampling.n=many: expected a whole number"),
        (["rank", "input=a", "out=b", "method=best"], "method=best: expected one of ipr, round_robin, score"),
        (["rank", "input=a", "out=b", "--judge", "shorter", "judge=longer"], "judge is given twice"),
        (["rank", "input=a", "out=b", "notakey"], "'notakey' is neither key=value nor a YAML file"),
        (["rank", "input=a", "out="], "out= has no value (leave the key out for its default)"),
        (["evaluate", "--generate", "eval.judges=[local:]"], "eval.judges=a mapping (quote a value that ends in ':')"),
        (
            ["train", "--lr", "1e-4"],
            "--lr is not an option of preftune train: settings are key=value, here optim.lr=1e-4",
        ),
        (
            ["generate", "prompts=p", "out=o", "--temprature", "0.5"],
            "--temprature is not an option of preftune generate: settings are key=value, here sampling.temperature=0.5",
        ),
    ],
)
def test_mistakes_are_one_line_naming_the_key(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err
    with pytest.raises(PreftuneError):
        _resolved(argv) if "--lr" not in argv and "--temprature" not in argv else _parse(build_parser(), argv)


def test_docs_cli_md_lists_every_command_s_keys_as_the_cli_reads_them() -> None:
    """docs/cli.md's tables: each command's keys in order, with the default and the old flag."""
    text = (Path(__file__).parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^### `(.+?)`\n(.*?)(?=^### |\Z)", text, flags=re.M | re.S))
    assert set(sections) == set(SETTINGS)
    for name, settings in SETTINGS.items():
        rows = re.findall(r"^\| `([^`]+)` \| ([^|]*) \| `?([^|`]*)`? \|$", sections[name], flags=re.M)
        documented = [(key, flag) for key, _, flag in rows if "=" not in key]
        assert documented == [(s.key, s.flag or "") for s in settings.settings], name
