"""A local OpenAI-compatible server for a GGUF model (llama.cpp's own, through ``xllamacpp``).

    >>> from preftune.serving import LocalServer
    >>> with LocalServer("smollm2-135m-instruct", threads=1) as server:
    ...     print(server.base_url, server.model)  # http://127.0.0.1:PORT/v1 smollm2-135m-instruct

Imports ``preftune.modeling`` (the embedded GGUF's location) and the leaves; ``xllamacpp`` only
when a server starts (``pip install 'preftune[serve]'``).
"""

from preftune.serving.server import (
    DEFAULT_CTX_SIZE,
    DEFAULT_HOST,
    DEFAULT_PARALLEL,
    DEFAULT_PORT,
    LocalServer,
    ServerSettings,
    default_alias,
    default_threads,
    require_xllamacpp,
    resolve_model_path,
    run_server,
)

__all__ = [
    "DEFAULT_CTX_SIZE",
    "DEFAULT_HOST",
    "DEFAULT_PARALLEL",
    "DEFAULT_PORT",
    "LocalServer",
    "ServerSettings",
    "default_alias",
    "default_threads",
    "require_xllamacpp",
    "resolve_model_path",
    "run_server",
]
