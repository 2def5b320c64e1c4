"""A real HTTP server speaking OpenAI's chat-completions protocol, for testing the API judge.

Run as a process: ``python tests/judging/openai_server.py [--faults slow,429,...] [--style S]``; it
prints ``PORT <n>`` on its first line. Its "model" judges by length: the longer of the two responses
the judge prompt encloses wins. ``--style`` is how it answers:

- ``short`` (default): "1"/"2", or "a"/"b" for templates tagging ``output_a``/``output_b``; equal
  lengths answer the first;
- ``mt_bench``, ``arena_hard``, ``json``: as a judge model asked for those formats writes: an
  explanation naming both responses and quoting a verdict marker it then rejects, then the verdict
  (``[[A]]``/``[[B]]``/``[[C]]``; ``[[A>>B]]`` when one is at least twice as long, ``[[A>B]]``,
  ``[[A=B]]``, ...; ``{"winner": "A"|"B"|"tie"}`` in a fenced block). Equal lengths are a tie.

Faults, injected on the first attempt (``--fault-attempts``) of the i-th distinct request body, i
cycling over the list:
``slow`` (answers after ``--slow-s``, beyond the client's timeout), ``429`` (with ``Retry-After``),
``500``, ``malformed`` (a 200 whose body is not JSON), ``neither`` (an answer naming neither
response), ``none`` (no fault). Later attempts of that body are answered. ``--hang-after K``:
the request after K answered ones hangs (once), so a test can kill its client mid-call.

``GET /stats``: requests received, faults injected, answers delivered per body hash, requests with
the expected key (``--key-env NAME``: the key is that variable's value; without it, the header
must be absent), and whether the hang has begun.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"requests": 0, "faults": 0, "answered": {}, "authorized": 0, "unauthorized": 0, "hanging": False}
LOCK = threading.Lock()
ATTEMPTS: dict[str, int] = {}
ORDER: dict[str, int] = {}


def enclosed(text: str, tag: str) -> str | None:
    match = re.search(rf"<{tag}>\n?(.*?)\n?</{tag}>", text, flags=re.S)
    return None if match is None else match.group(1)


TAGS = (("response_1", "response_2", "12"), ("output_a", "output_b", "ab"), ("response_a", "response_b", "AB"))


def verdict_of(content: str, style: str = "short") -> str:
    """The longer enclosed response wins; the answer is written in ``style``, with the template's labels."""
    for first_tag, second_tag, labels in TAGS:
        first, second = enclosed(content, first_tag), enclosed(content, second_tag)
        if first is not None and second is not None:
            if style == "short":
                return labels[0] if len(first) >= len(second) else labels[1]
            return explained(len(first), len(second), style)
    return "?"


def explained(first: int, second: int, style: str) -> str:
    """A reasoning judge's answer: both responses named, a marker weighed and dropped, the verdict last."""
    winner = "C" if first == second else "A" if first > second else "B"
    other = {"A": "B", "B": "A", "C": "A"}[winner]
    reasoning = (
        f"Assistant A wrote {first} characters and Assistant B wrote {second}. Response A is clear; "
        f'response B is clear too. One could argue for [[{other}]] or {{"winner": "{other}"}} or '
        f"[[{other}>{winner if winner != 'C' else 'B'}]], but length decides here.\n\n"
    )
    if style == "mt_bench":
        return reasoning + f"Final verdict: [[{winner}]]"
    if style == "arena_hard":
        strong = max(first, second) >= 2 * min(first, second)
        label = "A=B" if winner == "C" else f"{winner}{'>>' if strong else '>'}{other}"
        return reasoning + f"My final verdict is: [[{label}]]"
    if style == "json":
        value = "tie" if winner == "C" else winner
        return reasoning + "```json\n" + json.dumps({"reason": "the longer one says more", "winner": value}) + "\n```"
    raise ValueError(style)


class Handler(BaseHTTPRequestHandler):
    options: argparse.Namespace

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/stats":
            with LOCK:
                self.send(200, json.dumps(STATE).encode())
        elif self.path.rstrip("/") in ("/v1/models", "/health"):
            self.send(200, json.dumps({"data": [{"id": "length-judge"}]}).encode())
        else:
            self.send(404, b"{}")

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.rstrip("/") != "/v1/chat/completions":
            self.send(404, b"{}")
            return
        if not self.check_key():
            self.send(401, b'{"error": {"message": "bad key"}}')
            return
        body_hash = hashlib.sha256(raw).hexdigest()
        fault = self.next_fault(body_hash)
        if fault == "hang":
            time.sleep(3600)
            return
        if fault != "none":
            self.inject(fault)
            return
        request = json.loads(raw)
        answer = verdict_of(request["messages"][-1]["content"], self.options.style)
        self.answer(request, answer)
        with LOCK:
            STATE["answered"][body_hash] = STATE["answered"].get(body_hash, 0) + 1

    def check_key(self) -> bool:
        name = self.options.key_env
        expected = f"Bearer {os.environ[name]}" if name else None
        ok = self.headers.get("Authorization") == expected
        with LOCK:
            STATE["authorized" if ok else "unauthorized"] += 1
        return ok

    def next_fault(self, body_hash: str) -> str:
        with LOCK:
            STATE["requests"] += 1
            attempt = ATTEMPTS.get(body_hash, 0)
            ATTEMPTS[body_hash] = attempt + 1
            index = ORDER.setdefault(body_hash, len(ORDER))
            answered = sum(STATE["answered"].values())
            if self.options.hang_after is not None and answered >= self.options.hang_after and not STATE["hanging"]:
                STATE["hanging"] = True
                return "hang"
            faults = self.options.faults
            fault = faults[index % len(faults)] if faults and attempt < self.options.fault_attempts else "none"
            if fault != "none":
                STATE["faults"] += 1
            return fault

    def inject(self, fault: str) -> None:
        if fault == "slow":
            time.sleep(self.options.slow_s)
            self.send(200, b"{}")
        elif fault == "429":
            self.send(429, b'{"error": "rate limited"}', {"Retry-After": str(self.options.retry_after)})
        elif fault == "500":
            self.send(500, b'{"error": "boom"}')
        elif fault == "malformed":
            self.send(200, b'{"choices": [ {"message": ')
        elif fault == "neither":
            self.answer({}, "Both responses have merit.")
        else:
            raise ValueError(fault)

    def answer(self, request: dict, content: str) -> None:
        choice: dict = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        if request.get("logprobs"):
            other = {"1": "2", "2": "1", "a": "b", "b": "a"}.get(content, "x")
            top = [{"token": content, "logprob": -0.1}, {"token": other, "logprob": -2.4}]
            choice["logprobs"] = {"content": [{"token": content, "logprob": -0.1, "top_logprobs": top}]}
        self.send(200, json.dumps({"object": "chat.completion", "choices": [choice]}).encode())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--faults", default="", type=lambda s: [f for f in s.split(",") if f])
    parser.add_argument("--slow-s", type=float, default=3.0)
    parser.add_argument("--retry-after", default="1")
    parser.add_argument("--fault-attempts", type=int, default=1, help="attempts of a body that get its fault")
    parser.add_argument("--hang-after", type=int)
    parser.add_argument("--key-env")
    parser.add_argument("--style", default="short", choices=("short", "mt_bench", "arena_hard", "json"))
    options = parser.parse_args()
    Handler.options = options
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
