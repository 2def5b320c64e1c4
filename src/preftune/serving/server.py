"""llama.cpp's OpenAI-compatible server for a GGUF model, through the ``xllamacpp`` wheel.

:func:`run_server` runs it in the current process until interrupted; :class:`LocalServer` runs it in
a child process (``python -m preftune.serving``), so a crash or kill of the server never takes its
caller down, and waits until it answers ``GET /health``.

    >>> with LocalServer(threads=1) as server:  # the embedded SmolLM2-135M-Instruct
    ...     httpx.post(f"{server.base_url}/chat/completions", json={"model": server.model, ...})

The child prints one line, ``listening on http://HOST:PORT``, once the model is loaded and the
socket bound; with ``port=0`` the operating system picks the port, so no free port is guessed.
The child also stops when its stdin closes, so it does not outlive a parent that dies without
leaving the context (killed, ``os._exit``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from preftune.cores import free_cores
from preftune.errors import PreftuneError

EMBEDDED_NAME = "smollm2-135m-instruct"  # preftune.modeling.embedded.EMBEDDED_NAME, without importing torch
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_CTX_SIZE = 8192
DEFAULT_PARALLEL = 4  # llama.cpp refuses a request's n above the slots
INSTALL_HINT = "pip install 'preftune[serve]'"
READY_PREFIX = "listening on "


def default_threads() -> int:
    """llama.cpp's threads when none are asked for: :func:`preftune.cores.free_cores`."""
    return free_cores()


def is_embedded(model: str | os.PathLike[str] | None) -> bool:
    return model is None or str(model) == EMBEDDED_NAME


def resolve_model_path(model: str | os.PathLike[str] | None) -> Path:
    """A ``.gguf`` file, or the embedded model's GGUF for ``None``/``"smollm2-135m-instruct"``."""
    if is_embedded(model):
        from preftune.modeling.embedded import embedded_gguf_path

        return embedded_gguf_path()
    path = Path(model).expanduser()
    if not path.exists():
        raise PreftuneError(f"model file {path} does not exist (a .gguf file, or '{EMBEDDED_NAME}')")
    if not path.is_file():
        raise PreftuneError(f"model {path} is not a file: preftune serve needs one .gguf file")
    with path.open("rb") as file:
        if file.read(4) != b"GGUF":
            raise PreftuneError(f"model {path} is not a GGUF file (it does not start with 'GGUF')")
    return path.resolve()


def require_xllamacpp() -> None:
    """Refuse in one line when the ``xllamacpp`` wheel is missing."""
    import importlib.util

    if importlib.util.find_spec("xllamacpp") is None:
        raise PreftuneError(f"serving a model needs the xllamacpp wheel, which is not installed: run `{INSTALL_HINT}`")


@dataclass(frozen=True)
class ServerSettings:
    """What the server runs with, checked when built. ``port=0`` lets the system pick a free port;
    ``ctx_size`` is the context shared by the ``parallel`` slots (each gets ``ctx_size // parallel``;
    llama.cpp answers a request whose ``n`` exceeds ``parallel`` with HTTP 400);
    ``alias`` is the model name ``/v1/models`` reports and requests may name."""

    model_path: Path
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    threads: int = 1
    ctx_size: int = DEFAULT_CTX_SIZE
    parallel: int = DEFAULT_PARALLEL
    alias: str = EMBEDDED_NAME

    def __post_init__(self) -> None:
        check_settings(port=self.port, threads=self.threads, ctx_size=self.ctx_size, parallel=self.parallel)
        if not self.host:
            raise PreftuneError("the host must not be empty")
        if not self.alias:
            raise PreftuneError("the model alias must not be empty")

    def arguments(self) -> list[str]:
        """The ``python -m preftune.serving`` arguments that run these settings."""
        return [
            "--model",
            str(self.model_path),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--threads",
            str(self.threads),
            "--ctx-size",
            str(self.ctx_size),
            "--parallel",
            str(self.parallel),
            "--alias",
            self.alias,
        ]


def check_settings(*, port: int, threads: int, ctx_size: int, parallel: int) -> None:
    if not 0 <= port <= 65535:
        raise PreftuneError(f"port must be in 0..65535 (0: any free port), not {port}")
    if threads < 1:
        raise PreftuneError(f"threads must be at least 1, not {threads}")
    if parallel < 1:
        raise PreftuneError(f"parallel slots must be at least 1, not {parallel}")
    if ctx_size < 0:
        raise PreftuneError(f"context size must be ≥ 0 (0: the model's own), not {ctx_size}")
    if 0 < ctx_size < 16 * parallel:
        raise PreftuneError(
            f"context size {ctx_size} is too small for {parallel} slot(s) (each gets ctx_size // parallel)"
        )


def default_alias(model: str | os.PathLike[str] | None) -> str:
    """The name ``/v1/models`` reports: the embedded model's name, or the file's name without ``.gguf``."""
    return EMBEDDED_NAME if is_embedded(model) else Path(model).stem  # type: ignore[arg-type]


def run_server(
    settings: ServerSettings,
    *,
    on_ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run the server in this process until SIGINT/SIGTERM or ``stop`` is set (blocking).

    ``on_ready`` receives the listening address (``http://HOST:PORT``) once the model is loaded and
    the socket bound; by default it is printed as ``listening on ADDRESS``. The signal handlers
    are installed only when called from the main thread.
    """
    require_xllamacpp()
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(settings.model_path)
    params.model_alias = {settings.alias}
    params.hostnames = [settings.host]
    params.port = settings.port
    params.n_ctx = settings.ctx_size
    params.n_parallel = settings.parallel
    params.cpuparams.n_threads = settings.threads
    params.cpuparams_batch.n_threads = settings.threads
    params.ui = False
    try:
        server = xllamacpp.Server(params)
    except RuntimeError as err:  # the reason (bind failure, bad model) is on stderr, in llama.cpp's log
        raise PreftuneError(
            f"llama.cpp could not start serving {settings.model_path} on {settings.host}:{settings.port}: {err} "
            "(see its log above: a port in use, an unreadable model, ...)"
        ) from err
    if stop is None:
        stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        address = server.listening_address
        (on_ready or (lambda a: print(f"{READY_PREFIX}{a}", flush=True)))(address)
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        del server  # joins llama.cpp's loop and HTTP threads


class LocalServer:
    """The server in a child process, as a context manager.

    ``model`` is a ``.gguf`` path or ``"smollm2-135m-instruct"``/``None`` (the embedded GGUF);
    ``port=0`` (the default) takes any free port. Entering starts the child and waits up to
    ``startup_timeout`` seconds until ``GET /health`` answers 200; leaving sends SIGTERM, then
    SIGKILL after ``grace`` seconds. ``base_url`` is the OpenAI base URL (``http://HOST:PORT/v1``),
    ``model`` the name ``/v1/models`` reports.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        threads: int | None = None,
        ctx_size: int = DEFAULT_CTX_SIZE,
        parallel: int = DEFAULT_PARALLEL,
        alias: str | None = None,
        startup_timeout: float = 120.0,
        grace: float = 10.0,
    ) -> None:
        require_xllamacpp()
        path = resolve_model_path(model)
        self.settings = ServerSettings(
            model_path=path,
            host=host,
            port=port,
            threads=default_threads() if threads is None else threads,
            ctx_size=ctx_size,
            parallel=parallel,
            alias=alias or default_alias(model),
        )
        self.startup_timeout = startup_timeout
        self.grace = grace
        self.process: subprocess.Popen[bytes] | None = None
        self.address: str | None = None
        self._stdout = self._stderr = None

    @property
    def model(self) -> str:
        return self.settings.alias

    @property
    def base_url(self) -> str:
        if self.address is None:
            raise RuntimeError("the server is not running (use LocalServer as a context manager, or start())")
        return f"{self.address}/v1"

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("this LocalServer was already started")
        self._stdout = tempfile.TemporaryFile()
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "preftune.serving", *self.settings.arguments(), "--exit-with-parent"],
            stdin=subprocess.PIPE,
            stdout=self._stdout,
            stderr=self._stderr,
        )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self) -> None:
        import httpx

        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise PreftuneError(f"the model server exited with code {code} while starting:\n{self.stderr_tail()}")
            if self.address is None:
                self.address = self._announced_address()
            if self.address is not None:
                try:
                    if httpx.get(f"{self.address}/health", timeout=5.0).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass  # still loading
            time.sleep(0.1)
        raise PreftuneError(
            f"the model server did not answer /health within {self.startup_timeout:g} s "
            f"(model {self.settings.model_path}):\n{self.stderr_tail()}"
        )

    def _announced_address(self) -> str | None:
        text = _read_all(self._stdout)
        for line in text.splitlines():
            if line.startswith(READY_PREFIX):
                return line[len(READY_PREFIX) :].strip()
        return None

    def stderr_tail(self, lines: int = 20) -> str:
        """The last lines the server wrote to stderr (llama.cpp's log)."""
        tail = _read_all(self._stderr).splitlines()[-lines:]
        return "\n".join(tail) if tail else "(the server wrote nothing to stderr)"

    def stop(self) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after the grace period); idempotent."""
        process, self.process = self.process, None
        self.address = None
        if process is not None and process.stdin is not None:
            try:
                process.stdin.close()
            except OSError:
                pass
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for file in (self._stdout, self._stderr):
            if file is not None:
                file.close()
        self._stdout = self._stderr = None


def _read_all(file: object) -> str:
    if file is None:
        return ""
    fd = file.fileno()  # type: ignore[attr-defined]
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0).decode("utf-8", errors="replace")
