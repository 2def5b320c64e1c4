"""A pairwise judge over any OpenAI-compatible chat-completions endpoint (P4, docs/methods.md §5).

OpenAI, vLLM, SGLang, llama.cpp (``preftune serve``) and ``transformers serve`` all speak
``POST {base_url}/chat/completions``. Each ordered call sends the filled template
(:mod:`preftune.judging.prompting`) as one user message and reads the verdict either from the
answer text in the template's format (``scoring="text"``; :mod:`preftune.judging.verdicts`: a short
answer "1", "Response 1", "Output (a)", or reasoning ending in MT-Bench's ``[[A]]``/``[[B]]``/``[[C]]``,
Arena-Hard's ``[[A>>B]]`` ... ``[[B>>A]]``, a JSON ``{"winner": ...}``; a tie is a verdict, an answer
with no readable verdict is not) or, for the short format, from the log-probabilities of the two
answer tokens at the first position (``scoring="logprobs"``: the server must return
``top_logprobs``; what a small model is sure of, rather than what it happens to write first).
``max_tokens`` defaults to 8 for a short answer and 1024 for a format that reasons first.

Robustness, all in :meth:`ApiJudge._ask`: a timeout per request; retries with exponential backoff
and jitter on 408/409/425/429/5xx, connection errors, timeouts and malformed bodies, honouring a
``Retry-After`` header; an answer naming neither response asked again once, at once; at most
``concurrency`` requests in flight (one semaphore for every thread that shares the judge); at
most ``max_requests`` requests in all (retries count), after which calls fail (FAILED, never
stored, so a rerun asks them). A call that still fails after its retries is FAILED; a
401/403/404 is a configuration error and stops the run with one line. So do
``UNREACHABLE_CALLS`` calls in a row whose retries all ended without reaching the server
(connection refused, name not resolved, no connection in time): an
:class:`~preftune.errors.IncompleteRun`, rather than trying every comparison against a dead endpoint.
Once a judge has stopped, every call on it raises the same error at once.

The key is read from the environment variable *named* by ``api_key_env`` when a request is sent;
it is never an attribute, never in :meth:`identity` (which keys the verdict store) and never
logged.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import httpx

from preftune.errors import IncompleteRun, PreftuneError
from preftune.judging.base import FAILED, FIRST, SECOND, PairwiseJudge
from preftune.judging.prompting import JudgeTemplate, load_template
from preftune.judging.verdicts import REASONING_FORMATS, UNREADABLE, Reading, read_verdict
from preftune.judging.verdicts import parse_verdict as parse_verdict  # read here before the formats had a module

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429})  # and every 5xx
FATAL_STATUS = {
    401: "the endpoint refused the key",
    403: "the key may not use this model",
    404: "no such endpoint or model",
}
SCORINGS = ("text", "logprobs")
UNREADABLE_RETRIES = 1  # an answer naming neither response is asked again once, then the call fails
UNREACHABLE_CALLS = 3  # calls in a row that never reached the server: the endpoint is down or misnamed; stop
SHORT_MAX_TOKENS, REASONING_MAX_TOKENS = 8, 1024  # max_tokens by default: a short answer, or reasoning first


@dataclass(frozen=True)
class ApiJudgeConfig:
    """Where and how to ask. ``api_key_env`` is the *name* of the variable holding the key (None: no key)."""

    base_url: str
    model: str
    api_key_env: str | None = None
    template: str = "pairwise"
    scoring: str = "text"
    max_tokens: int | None = None  # None: 8 for a short answer, 1024 for a format that reasons first
    temperature: float = 0.0
    timeout_s: float = 60.0
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    concurrency: int = 4
    max_requests: int | None = None

    def __post_init__(self) -> None:
        if not re.match(r"https?://[^/\s]+", self.base_url):
            raise PreftuneError(f"api judge: base_url must be an http(s) URL, not {self.base_url!r}")
        if not self.model:
            raise PreftuneError("api judge: name the model (model=...)")
        if self.scoring not in SCORINGS:
            raise PreftuneError(f"api judge: scoring must be one of {', '.join(SCORINGS)}, not {self.scoring!r}")
        if self.api_key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env):
            raise PreftuneError("api judge: api_key_env is the NAME of an environment variable (e.g. OPENAI_API_KEY)")
        for name in ("max_tokens", "concurrency"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise PreftuneError(f"api judge: {name} must be at least 1, not {getattr(self, name)}")
        for name in ("timeout_s", "backoff_s", "max_backoff_s", "temperature", "max_retries"):
            if not getattr(self, name) >= 0:
                raise PreftuneError(f"api judge: {name} must be >= 0, not {getattr(self, name)}")
        if self.max_requests is not None and self.max_requests < 1:
            raise PreftuneError(f"api judge: max_requests must be at least 1, not {self.max_requests}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str) -> ApiJudgeConfig:
        """From a mapping (a YAML file, ``key=value`` pairs); an unknown key or a key *value* is refused."""
        if any(k.lower() in ("api_key", "key", "token", "authorization") for k in values):
            raise PreftuneError(f"{where}: API keys come from environment variables only: set api_key_env=NAME")
        types = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(types))
        if unknown:
            known = ", ".join(types)
            raise PreftuneError(f"{where}: unknown api judge setting(s) {', '.join(unknown)} (known: {known})")
        if not values.get("base_url"):
            raise PreftuneError(f"{where}: name the endpoint (base_url: http://HOST:PORT/v1)")
        if not values.get("model"):  # checked here, or the dataclass would raise a TypeError
            raise PreftuneError(f"{where}: name the model the endpoint serves (model=NAME)")
        return cls(**{key: _convert(key, value, types[key], where) for key, value in values.items()})


def _convert(key: str, value: Any, annotation: Any, where: str) -> Any:
    """A setting from text (``key=value``) or YAML, to the field's type."""
    kind = str(annotation)
    if value is None or not isinstance(value, str):
        return value
    try:
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("float"):
            return float(value)
    except ValueError:
        raise PreftuneError(f"{where}: {key} must be a number, not {value!r}") from None
    return None if value.lower() in ("none", "null") and "None" in kind else value


def parse_spec(spec: str) -> ApiJudgeConfig:
    """``api:BASE_URL,model=M[,key=value...]`` or ``api:FILE.yaml``, as ``judge=`` takes them."""
    body = spec.removeprefix("api:")
    if body.endswith((".yaml", ".yml")):
        import yaml

        path = Path(body).expanduser()
        if not path.is_file():
            raise PreftuneError(f"judge={spec}: no such file: {path}")
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(values, dict):
            raise PreftuneError(f"{path}: an api judge file is a mapping of settings")
        return ApiJudgeConfig.from_mapping(values, str(path))
    url, *options = body.split(",")
    values: dict[str, Any] = {"base_url": url}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            raise PreftuneError(f"judge={spec}: '{option}' is not key=value")
        values[key.strip()] = value.strip()
    return ApiJudgeConfig.from_mapping(values, f"judge={spec}")


def logprob_verdict(top_logprobs: Sequence[Mapping[str, Any]], answers: Sequence[str] = ("1", "2")) -> int:
    """FIRST/SECOND from the first answer position's ``top_logprobs`` (OpenAI's shape: token, logprob).

    The likelier of the two answers (spaces and case aside); one answer absent counts as −inf;
    FAILED when neither is among them.
    """
    best = [-math.inf, -math.inf]
    for entry in top_logprobs:
        token, logprob = str(entry.get("token", "")).strip().lower(), entry.get("logprob")
        for k, answer in enumerate(answers):
            if token == answer.lower() and isinstance(logprob, int | float) and logprob > best[k]:
                best[k] = float(logprob)
    if best[0] == best[1] == -math.inf:
        return FAILED
    return SECOND if best[1] > best[0] else FIRST


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date), or None."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(when - (time.time() if now is None else now), 0.0)


def backoff_s(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: uniform in [d/2, d], d = min(cap, base·2^attempt)."""
    delay = min(cap, base * 2**attempt)
    return delay / 2 + rng.uniform(0, delay / 2)


class RequestBudget:
    """A thread-safe count of requests left (None: unlimited)."""

    def __init__(self, limit: int | None):
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.limit is not None and self.used >= self.limit:
                return False
            self.used += 1
            return True


class _Retry(Exception):
    """One attempt failed in a way worth retrying; ``wait`` overrides the backoff (Retry-After).

    ``unreadable``: the server answered, but with no verdict that could be read. Asked once more at
    once (an endpoint's "temperature 0" is not always deterministic), not with backoff: nothing is
    overloaded. ``unreachable``: the request never reached a server (connection refused, name not
    resolved, no connection in time).
    """

    def __init__(self, reason: str, wait: float | None = None, unreadable: bool = False, unreachable: bool = False):
        super().__init__(reason)
        self.wait = 0.0 if unreadable else wait
        self.unreadable = unreadable
        self.unreachable = unreachable


class ApiJudge(PairwiseJudge):
    """Judges through an OpenAI-compatible chat-completions endpoint (see the module docstring)."""

    def __init__(self, config: ApiJudgeConfig, sleep: Callable[[float], None] = time.sleep):
        if config.api_key_env is not None and not os.environ.get(config.api_key_env):
            raise PreftuneError(f"api judge: the environment variable {config.api_key_env} (the API key) is not set")
        self.config = config
        self.concurrency = config.concurrency
        self.template: JudgeTemplate = load_template(config.template)
        reasoning = self.template.format in REASONING_FORMATS
        if reasoning and config.scoring == "logprobs":
            raise PreftuneError(
                f"api judge: scoring=logprobs reads the first answer token, but the template "
                f"'{config.template}' asks for reasoning first ({self.template.format}): "
                "use scoring=text"
            )
        default = REASONING_MAX_TOKENS if reasoning else SHORT_MAX_TOKENS
        self.max_tokens = config.max_tokens if config.max_tokens is not None else default
        self.budget = RequestBudget(config.max_requests)
        self.requests = 0  # HTTP requests sent, retries included
        self._sleep = sleep
        self._rng = random.Random()
        self._slots = threading.BoundedSemaphore(config.concurrency)
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=config.timeout_s)
        self._warned_budget = False
        self._unreachable = 0  # calls in a row that never reached the server
        self._stopped: PreftuneError | None = None  # once set, every call raises it

    def identity(self) -> str:
        c, t = self.config, self.template
        # the short format's key is what it was before formats existed, so older stores still answer
        shown = repr(t.answers) + t.text if t.format == "short" else f"{t.format}:{t.text}"
        template = hashlib.sha256(shown.encode()).hexdigest()[:12]
        return f"api:{c.base_url.rstrip('/')}:{c.model}:{template}:{c.scoring}:t{c.temperature}:m{self.max_tokens}"

    def judge(self, prompts: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[int]:
        return [reading.answer for reading in self.grade(prompts, pairs)]

    def grade(self, prompts: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[Reading]:
        """Like :meth:`judge`, with each verdict's weight (arena_hard: 2 for ``>>``; FAILED: 0)."""
        items = list(zip(prompts, pairs, strict=True))
        if len(items) <= 1:
            return [self._ask(p, a, b) for p, (a, b) in items]
        with ThreadPoolExecutor(max_workers=min(self.config.concurrency, len(items))) as pool:
            return list(pool.map(lambda item: self._ask(item[0], *item[1]), items))

    def close(self) -> None:
        self._client.close()

    def payload(self, prompt: str, first: str, second: str) -> dict[str, Any]:
        """The request body of one ordered call."""
        c = self.config
        body: dict[str, Any] = {
            "model": c.model,
            "messages": [{"role": "user", "content": self.template.fill(prompt, first, second)}],
            "temperature": c.temperature,
            "max_tokens": self.max_tokens,
        }
        if c.scoring == "logprobs":
            body.update(logprobs=True, top_logprobs=10, max_tokens=1)
        return body

    def _ask(self, prompt: str, first: str, second: str) -> Reading:
        """One ordered call, with retries; FAILED when they run out or the budget does."""
        body = self.payload(prompt, first, second)
        unreadable = 0
        for attempt in range(self.config.max_retries + 1):
            if self._stopped is not None:  # another call found the endpoint unusable: fail as fast
                raise self._stopped
            if not self.budget.take():
                self._budget_spent()
                return UNREADABLE
            try:
                return self._attempt(body)
            except _Failed:
                return UNREADABLE
            except _Retry as problem:
                unreadable += problem.unreadable
                if attempt == self.config.max_retries or unreadable > UNREADABLE_RETRIES:
                    logger.warning("api judge: giving up on a call after %d attempts (%s)", attempt + 1, problem)
                    self._count_unreachable(problem)
                    break
                self._wait(attempt, problem)
        return UNREADABLE

    def _count_unreachable(self, problem: _Retry) -> None:
        """Stop the judge when ``UNREACHABLE_CALLS`` calls in a row never reached the server."""
        if not problem.unreachable:
            return
        with self._lock:
            self._unreachable += 1
            if self._unreachable < UNREACHABLE_CALLS or self._stopped is not None:
                return
            url = self.config.base_url.rstrip("/") + "/chat/completions"
            self._stopped = IncompleteRun(
                f"api judge: {url} could not be reached ({problem}) in {self._unreachable} calls in a row, "
                "each retried: stopped early. Verdicts already answered are kept in the verdict store; "
                "once the endpoint is up, a rerun asks only the calls still missing"
            )
        raise self._stopped

    def _stop(self, error: PreftuneError) -> PreftuneError:
        with self._lock:
            self._stopped = self._stopped or error
            return self._stopped

    def _wait(self, attempt: int, problem: _Retry) -> None:
        wait = problem.wait
        if wait is None:
            with self._lock:
                wait = backoff_s(attempt, self.config.backoff_s, self.config.max_backoff_s, self._rng)
        logger.info("api judge: %s; retrying in %.2f s", problem, wait)
        if wait > 0:
            self._sleep(wait)

    def _attempt(self, body: dict[str, Any]) -> Reading:
        """One HTTP request: the verdict, or :class:`_Retry`, or a fatal :class:`PreftuneError`."""
        url = self.config.base_url.rstrip("/") + "/chat/completions"
        with self._slots:
            with self._lock:
                self.requests += 1
            try:
                response = self._client.post(url, json=body, headers=self._headers())
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:  # refused, name not resolved
                raise _Retry(f"{type(error).__name__}: {_first_line(error)}", unreachable=True) from None
            except httpx.TransportError as error:  # connection reset, read timeouts: a server was there
                raise _Retry(f"{type(error).__name__}") from None
        with self._lock:
            self._unreachable = 0  # a server answered
        status = response.status_code
        if status in FATAL_STATUS:
            raise self._stop(PreftuneError(f"api judge: {url} answered {status}: {FATAL_STATUS[status]}"))
        if status in RETRY_STATUS or status >= 500:
            raise _Retry(f"HTTP {status}", retry_after_s(response.headers))
        if status != 200:  # e.g. 400: this request itself is wrong (too long for the context)
            logger.warning("api judge: HTTP %d for one call; it fails", status)
            raise _Failed()
        return self._read(response.text)

    def _read(self, text: str) -> Reading:
        """The verdict in a 200 body; a malformed body or an answer with no readable verdict is retried."""
        try:
            choice = json.loads(text)["choices"][0]
            content = choice.get("message", {}).get("content") or ""
            top = ((choice.get("logprobs") or {}).get("content") or [{}])[0].get("top_logprobs") or []
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise _Retry("a malformed response body") from None
        template = self.template
        reading = UNREADABLE
        if self.config.scoring == "logprobs":
            reading = Reading(logprob_verdict(top, template.answers))
        if reading.answer == FAILED:
            reading = read_verdict(str(content), template.format, template.answers)
        if reading.answer == FAILED:
            shown = str(content)[-60:] if template.format in REASONING_FORMATS else str(content)[:40]
            raise _Retry(f"an answer with no {template.format} verdict ({shown!r})", unreadable=True)
        return reading

    def _headers(self) -> dict[str, str]:
        name = self.config.api_key_env
        return {"Authorization": f"Bearer {os.environ.get(name, '')}"} if name else {}

    def _budget_spent(self) -> None:
        with self._lock:
            if self._warned_budget:
                return
            self._warned_budget = True
        logger.warning(
            "api judge: the request budget (%d) is spent; the remaining calls fail and are asked again on a rerun",
            self.config.max_requests,
        )


def _first_line(error: Exception) -> str:
    """An exception's message, first line, short (httpx wraps the OS's "[Errno 111] Connection refused")."""
    return (str(error).splitlines() or [""])[0][:120]


class _Failed(Exception):
    """A call that fails without a retry (e.g. HTTP 400: the request itself is wrong)."""
