"""``preftune serve`` and :class:`LocalServer`: a real llama.cpp server on the embedded GGUF.

xllamacpp is a test dependency: if the server cannot start here, these tests fail, never skip.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from preftune.cli.main import main
from preftune.errors import PreftuneError
from preftune.serving import LocalServer, ServerSettings, resolve_model_path
from preftune.serving import server as server_module
from tests.data.files import PANDALM_FILE

TIMEOUT = 120.0  # the CPU is shared with other work
MESSAGES = [{"role": "user", "content": "Which number is larger, 1 or 2? Answer with one digit."}]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer("smollm2-135m-instruct", threads=1, ctx_size=2048, parallel=2, startup_timeout=TIMEOUT) as s:
        yield s


def chat(server: LocalServer, **body: object) -> dict:
    response = httpx.post(
        f"{server.base_url}/chat/completions",
        json={"model": server.model, "messages": MESSAGES, **body},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    return response.json()


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


@pytest.mark.slow
def test_base_url_and_models_list_the_embedded_model(server: LocalServer) -> None:
    assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
    assert server.model == "smollm2-135m-instruct"
    models = httpx.get(f"{server.base_url}/models", timeout=TIMEOUT).json()
    assert [m["id"] for m in models["data"]] == ["smollm2-135m-instruct"]


@pytest.mark.slow
def test_chat_completion_returns_text(server: LocalServer) -> None:
    answer = chat(server, max_tokens=4, temperature=0.0)
    assert len(answer["choices"]) == 1
    assert answer["choices"][0]["message"]["content"].strip()


@pytest.mark.slow
def test_one_token_with_top_logprobs(server: LocalServer) -> None:
    answer = chat(server, max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=5)
    content = answer["choices"][0]["logprobs"]["content"]
    assert len(content) == 1
    top = content[0]["top_logprobs"]
    assert len(top) == 5
    logprobs = [entry["logprob"] for entry in top]
    assert all(lp <= 0 for lp in logprobs)
    assert logprobs == sorted(logprobs, reverse=True)
    assert {"token", "logprob", "id", "bytes"} <= set(top[0])
    assert content[0]["token"] == answer["choices"][0]["message"]["content"]


@pytest.mark.slow
def test_the_judge_digits_are_single_tokens(server: LocalServer) -> None:
    # a judge reads the log-probs of the answers "1" and "2": each must be one token of its own
    root = server.base_url.removesuffix("/v1")
    for digit in ("1", "2"):
        tokens = httpx.post(f"{root}/tokenize", json={"content": digit, "with_pieces": True}, timeout=TIMEOUT).json()
        assert [t["piece"] for t in tokens["tokens"]] == [digit]


@pytest.mark.slow
def test_n_returns_that_many_choices(server: LocalServer) -> None:
    answer = chat(server, max_tokens=2, temperature=1.0, n=2)
    assert [choice["index"] for choice in answer["choices"]] == [0, 1]
    assert all("content" in choice["message"] for choice in answer["choices"])


@pytest.mark.slow
def test_n_above_the_slots_is_refused(server: LocalServer) -> None:
    # llama.cpp's limit, not preftune's: n may not exceed the server's parallel slots (2 here)
    response = httpx.post(
        f"{server.base_url}/chat/completions", json={"messages": MESSAGES, "max_tokens": 1, "n": 3}, timeout=TIMEOUT
    )
    assert response.status_code == 400 and "'n'" in response.text


@pytest.mark.slow
def test_exit_stops_the_process_and_closes_the_port() -> None:
    with LocalServer(threads=1, ctx_size=256, startup_timeout=TIMEOUT) as s:
        process, port = s.process, int(s.base_url.rsplit(":", 1)[1].split("/")[0])
        assert process is not None and port_open("127.0.0.1", port)
    assert process.poll() is not None
    assert not port_open("127.0.0.1", port)
    with pytest.raises(RuntimeError, match="not running"):
        s.base_url  # noqa: B018


@pytest.mark.slow
def test_a_killed_server_does_not_take_the_caller_down() -> None:
    with LocalServer(threads=1, ctx_size=256, startup_timeout=TIMEOUT) as s:
        assert s.process is not None
        s.process.send_signal(signal.SIGKILL)
        s.process.wait(TIMEOUT)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{s.base_url}/models", timeout=5.0)
    assert s.process is None


@pytest.mark.slow
def test_the_server_does_not_outlive_a_parent_that_dies() -> None:
    script = (
        "import os, sys\n"
        "from preftune.serving import LocalServer\n"
        f"s = LocalServer({str(resolve_model_path(None))!r}, threads=1, ctx_size=256, startup_timeout={TIMEOUT})\n"
        "s.start()\n"
        "print(s.process.pid, flush=True)\n"
        "os._exit(0)\n"  # no context exit, no cleanup
    )
    parent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT)
    assert parent.returncode == 0, parent.stderr
    pid = int(parent.stdout.split()[-1])
    deadline = time.monotonic() + 30
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # an exited child of a dead parent is reaped by init; a zombie counts as gone
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.slow
def test_a_server_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(PreftuneError, match=r"exited with code 2 while starting:\n(.|\n)*broken\.gguf"):
        with LocalServer(broken, threads=1, startup_timeout=TIMEOUT):
            pass


@pytest.mark.slow
def test_a_startup_timeout_is_reported_and_the_child_ended() -> None:
    server = LocalServer(threads=1, ctx_size=256, startup_timeout=0.05)
    with pytest.raises(PreftuneError, match=r"did not answer /health within 0\.05 s"):
        server.start()
    assert server.process is None


def test_models_are_checked_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(PreftuneError, match="does not exist"):
        LocalServer(tmp_path / "missing.gguf")
    text = tmp_path / "model.gguf"
    text.write_text("not a model")
    with pytest.raises(PreftuneError, match="not a GGUF file"):
        resolve_model_path(text)
    with pytest.raises(PreftuneError, match="not a file"):
        resolve_model_path(tmp_path)
    assert resolve_model_path(None).name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_missing_xllamacpp_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xllamacpp" else real(name, *a))
    with pytest.raises(PreftuneError, match=r"pip install 'preftune\[serve\]'"):
        server_module.require_xllamacpp()
    with pytest.raises(PreftuneError, match=r"preftune\[serve\]"):
        LocalServer()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"port": 65536}, "port"),
        ({"port": -1}, "port"),
        ({"threads": 0}, "threads"),
        ({"parallel": 0}, "parallel"),
        ({"ctx_size": -1}, "context size"),
        ({"ctx_size": 8, "parallel": 1}, "too small"),
    ],
)
def test_settings_are_checked(settings: dict, message: str) -> None:
    with pytest.raises(PreftuneError, match=message):
        ServerSettings(model_path=Path("m.gguf"), **settings)


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "port=99999"],
        ["serve", "threads=0"],
        ["serve", "parallel=0"],
        ["serve", "model.name=/no/such/model.gguf"],
        ["serve", "port=eighty"],
    ],
)
def test_cli_refuses_bad_input(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.parametrize("scoring", ["text", "logprobs"])
def test_the_api_judge_end_to_end_against_the_embedded_model(server: LocalServer, scoring: str, tmp_path) -> None:
    """`preftune judge eval judge=api:...` on real PandaLM pairs, judged by SmolLM2 through llama.cpp."""
    import json

    spec = f"api:{server.base_url},model={server.model},scoring={scoring},timeout_s={TIMEOUT},concurrency=2"
    report = tmp_path / "report.json"
    args = ["judge", "eval", f"judge={spec}", f"data.eval={PANDALM_FILE}", "data.skip_invalid=true", "limit=2"]
    assert main([*args, f"out={report}", f"store={tmp_path / 'v.sqlite'}"]) == 0
    judged = json.loads(report.read_text())
    # every ordered call answered (the model's "The answer is 2." is read; a missing "2" logprob is −inf)
    assert judged["pairs"] == 2 and judged["judge"]["failed"] == 0, judged
