"""``preftune serve``: a local OpenAI-compatible server for a GGUF model (llama.cpp, via xllamacpp)."""

from __future__ import annotations

import argparse
import json
import shlex

from preftune.cli.keys import Setting, Settings, add_settings
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

SETTINGS = Settings(
    "serve",
    (
        Setting(
            "model.name",
            "smollm2-135m-instruct",
            "--model",
            dest="model",
            help="a .gguf file, or smollm2-135m-instruct (the embedded model)",
        ),
        Setting("host", DEFAULT_HOST, "--host"),
        Setting("port", DEFAULT_PORT, "--port"),
        Setting("threads", flag="--threads"),
        Setting("ctx_size", DEFAULT_CTX_SIZE, "--ctx-size"),
        Setting("parallel", DEFAULT_PARALLEL, "--parallel"),
        Setting("alias", flag="--alias"),
    ),
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="serve a GGUF model over an OpenAI-compatible HTTP API (llama.cpp), until Ctrl-C",
        description=(
            "Runs llama.cpp's server (the xllamacpp wheel: pip install 'preftune[serve]') on a GGUF file, "
            "by default the embedded SmolLM2-135M-Instruct, with the OpenAI endpoints /v1/models, "
            "/v1/chat/completions (logprobs, top_logprobs, n) and /v1/completions, plus /health."
        ),
        epilog="example: preftune serve port=8080 threads=2, then POST http://127.0.0.1:8080/v1/chat/completions",
    )
    add_settings(parser, SETTINGS)
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
