"""``preftune serve``: a local OpenAI-compatible server for a GGUF model (llama.cpp, via xllamacpp)."""

from __future__ import annotations

import argparse
import json
import shlex

from preftune.serving import (
    DEFAULT_CTX_SIZE,
    DEFAULT_HOST,
    DEFAULT_PARALLEL,
    DEFAULT_PORT,
    ServerSettings,
    default_alias,
    default_threads,
    require_xllamacpp,
    resolve_model_path,
    run_server,
)
from preftune.serving.server import check_settings


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="serve a GGUF model over an OpenAI-compatible HTTP API (llama.cpp), until Ctrl-C",
        description=(
            "Runs llama.cpp's server (the xllamacpp wheel: pip install 'preftune[serve]') on a GGUF file, "
            "by default the embedded SmolLM2-135M-Instruct, with the OpenAI endpoints /v1/models, "
            "/v1/chat/completions (logprobs, top_logprobs, n) and /v1/completions, plus /health."
        ),
        epilog="example: preftune serve --port 8080 --threads 2, then POST http://127.0.0.1:8080/v1/chat/completions",
    )
    parser.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="a .gguf file, or smollm2-135m-instruct (default: the embedded model)",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default: {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"0 for any free port (default: {DEFAULT_PORT})")
    parser.add_argument("--threads", type=int, help="CPU threads (default: usable cores less the load average)")
    parser.add_argument(
        "--ctx-size",
        type=int,
        default=DEFAULT_CTX_SIZE,
        help=f"context shared by the slots, 0: the model's (default: {DEFAULT_CTX_SIZE})",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=DEFAULT_PARALLEL,
        help=f"sequences decoded at once; the largest n (default: {DEFAULT_PARALLEL})",
    )
    parser.add_argument("--alias", help="model name reported by /v1/models (default: the model's name)")
    parser.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    # everything checked before the model loads
    threads = default_threads() if args.threads is None else args.threads
    check_settings(port=args.port, threads=threads, ctx_size=args.ctx_size, parallel=args.parallel)
    settings = ServerSettings(
        model_path=resolve_model_path(args.model),
        host=args.host,
        port=args.port,
        threads=threads,
        ctx_size=args.ctx_size,
        parallel=args.parallel,
        alias=args.alias or default_alias(args.model),
    )
    require_xllamacpp()
    print(f"loading {settings.model_path} ({settings.threads} thread(s), {settings.parallel} slot(s))", flush=True)

    def ready(address: str) -> None:
        body = json.dumps(
            {"model": settings.alias, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 32}
        )
        print(f"serving '{settings.alias}' at {address}/v1 (OpenAI-compatible); Ctrl-C stops it", flush=True)
        print("example:", flush=True)
        print(
            f"  curl {address}/v1/chat/completions -H 'Content-Type: application/json' -d {shlex.quote(body)}",
            flush=True,
        )

    run_server(settings, on_ready=ready)
    print("stopped", flush=True)
    return 0
