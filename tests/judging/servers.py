"""The OpenAI-protocol test server (``openai_server.py``) as a process, for the API judge's tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from preftune.judging.api import ApiJudgeConfig

SERVER = Path(__file__).with_name("openai_server.py")


@contextlib.contextmanager
def openai_server(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, object]]:
    """The fault-injecting server as a process; yields (base_url, stats())."""
    process = subprocess.Popen(
        [sys.executable, str(SERVER), *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("PORT "), line
        root = f"http://127.0.0.1:{int(line.split()[1])}"

        def stats() -> dict:
            return httpx.get(f"{root}/stats", timeout=10).json()

        yield f"{root}/v1", stats
    finally:
        process.kill()
        process.wait(timeout=10)


def config(url: str, **overrides) -> ApiJudgeConfig:
    """An API judge's settings for a test: short timeouts and backoffs."""
    settings = {
        "model": "length-judge",
        "timeout_s": 1.0,
        "backoff_s": 0.01,
        "max_backoff_s": 0.05,
        "max_retries": 3,
        "concurrency": 4,
    } | overrides
    return ApiJudgeConfig(base_url=url, **settings)


def dead_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (a port just bound and released): connection refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
