"""``python -m preftune.serving --model FILE.gguf ...``: the child process :class:`LocalServer` starts.

Runs one server in the foreground until SIGTERM or SIGINT; prints ``listening on http://HOST:PORT``
once ready. A problem with the arguments prints one ``error:`` line and exits with 2. Users run
``preftune serve`` instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from preftune.errors import PreftuneError
from preftune.serving.server import (
    DEFAULT_CTX_SIZE,
    DEFAULT_HOST,
    DEFAULT_PARALLEL,
    DEFAULT_PORT,
    ServerSettings,
    run_server,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m preftune.serving")
    parser.add_argument("--model", type=Path, required=True, help="a .gguf file")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx-size", type=int, default=DEFAULT_CTX_SIZE)
    parser.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL)
    parser.add_argument("--alias", required=True)
    parser.add_argument("--exit-with-parent", action="store_true", help="stop when stdin closes (the parent is gone)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    if args.exit_with_parent:
        threading.Thread(target=_stop_at_eof, args=(stop,), daemon=True).start()
    try:
        settings = ServerSettings(
            model_path=args.model,
            host=args.host,
            port=args.port,
            threads=args.threads,
            ctx_size=args.ctx_size,
            parallel=args.parallel,
            alias=args.alias,
        )
        run_server(settings, stop=stop)
    except PreftuneError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    return 0


def _stop_at_eof(stop: threading.Event) -> None:
    """Set ``stop`` once stdin reaches its end: the parent closed it, or died."""
    try:  # os.read, not sys.stdin: a daemon thread blocked in a buffered read aborts interpreter exit
        while os.read(sys.stdin.fileno(), 4096):
            pass
    except OSError:
        pass
    finally:
        stop.set()


if __name__ == "__main__":
    sys.exit(main())
