"""A loopback OpenAI-compatible chat-completions server for tests and benchmarks.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) and the OpenAI
`POST /v1/chat/completions` API for LiteLLM's `openai/<model>` provider (with `api_base`) to talk to
it like to any remote backend. Nothing is faked on the client side: requests go through LiteLLM's
real HTTP stack.

Behaviour, per request:
- latency: every reply waits `latency` seconds (asyncio.sleep: a remote model's think time);
- scripted actions: `script(match, *actions)` — the next request whose prompt contains `match`
  takes the next action; actions are `"ok"` (a valid answer), `{"status": 429}` / `{"status": 500}`
  (an OpenAI-shaped error), `{"sleep": 5}` (hold the reply: a client timeout), `{"content": "..."}`
  (this exact assistant text, e.g. garbage), `{"cached_tokens": n}` (a valid answer whose usage
  reports `n` cached tokens, even more than the prompt: a provider bug), `{"drop": True}` (close the connection),
  `{"flaw": "duplicate" | "missing" | "unknown" | "empty"}` (a listwise answer whose permutation
  repeats the best passage in place of the last / leaves the last out / adds an identifier outside
  the window / names no passage);
- default: `"ok"`: a valid answer for r2r-synth's DirectRelevance, Comparison or ListwiseRanking
  signature, in the format the prompt asked for (DSPy's ChatAdapter field markers, or a JSON object
  when the request has a `response_format`). Answers are deterministic functions of the prompt; a
  listwise answer ranks the passages by a hash of (query, passage text), so every window of a query
  agrees with one hidden total order (`listwise_score`).
- random faults (`faults={"429": 0.2, "500": 0.1, "timeout": 0.05}`, seeded by `fault_seed`): each
  request draws once; a "timeout" holds the reply `fault_sleep` seconds (past the client's timeout);
- `require_key="sk-..."`: a request without `Authorization: Bearer <that key>` gets a 401;
- `down = True`: every request gets a 503 until it is set back to False (a teacher outage);
- OpenAI's Files and Batch APIs (`tests/openai_batches.py`): `/v1/files`, `/v1/batches`; each batch
  item is answered by `answer(body)`, the same action and answer an online request gets (and logged
  like one), a batch turns `completed` `batch_delay` seconds after it is created, `batch_fail_rate` of
  its items fail (seeded by `batch_seed`), and `batch_create_hold` holds the reply to a create for that
  many seconds after the batch exists (a client killed in that moment never learns its id); every
  upload and batch is logged (`batches.log`, and `{"batch_event": ...}` lines in `log_path`);
- `GET /v1/models` lists one model, `loopback`, to anyone (as llama.cpp's server does); with
  `guard_models=True` it answers 401 without the required key and 503 while down (as OpenAI and
  vLLM do), which is what a preflight reads;
- prompt caching the way OpenAI reports it: a request whose leading messages repeat those of an
  earlier request, and whose repeated part is `cache_min_tokens` (1,024) tokens or more, reports
  those tokens as `usage.prompt_tokens_details.cached_tokens` (tokens are characters / 4, whole
  messages, as `prompt_tokens` counts them); `cache_min_tokens=None` reports no cache;
- request log: `requests` (in process) or one JSON line per request in `log_path` (flushed at once,
  so it survives a SIGKILLed client); `auth` records whether the request carried the required key;
  a reply's token usage is added to its entry (`usage`) and logged as `{"reply": n, "usage": ...}`.

In-process use (tests): `with OpenAIServer(latency=0.01) as srv: ... srv.url ...` (a thread runs
its event loop). Separate-process use (benchmarks, so the server's CPU does not count against the
client): `with spawn_server(latency=0.1, log_path=...) as url: ...`, or
`python tests/openai_server.py --latency 0.1 --log requests.jsonl` (prints `PORT <n>` on stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import openai_batches

Action = str | dict[str, Any]

_FIELD = re.compile(r"\[\[ ## (\w+) ## \]\]")


def _fields_in_prompt(text: str) -> set[str]:
    return set(_FIELD.findall(text))


def _user_text(body: dict[str, Any]) -> str:
    msgs = body.get("messages") or []
    for m in reversed(msgs):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else json.dumps(c)
    return ""


def _all_text(body: dict[str, Any]) -> str:
    parts = []
    for m in body.get("messages") or []:
        c = m.get("content")
        parts.append(c if isinstance(c, str) else json.dumps(c))
    return "\n".join(parts)


def listwise_window(user: str) -> tuple[str, list[dict[str, Any]]] | None:
    """The query and passages (`[{"identifier", "text"}]`) of a ListwiseRanking prompt's user
    message, or None when it is not one."""
    marker = "[[ ## passages ## ]]"
    if marker not in user or "[[ ## query ## ]]" not in user:
        return None
    query = user.split("[[ ## query ## ]]", 1)[1].split("[[ ## ", 1)[0].strip()
    passages, _ = json.JSONDecoder().raw_decode(user.split(marker, 1)[1].lstrip())
    return query, passages


def listwise_score(query: str, text: str) -> int:
    """The loopback teacher's hidden relevance of a passage to a query (higher ranks first)."""
    return int(hashlib.sha256(f"{query}\x00{text}".encode()).hexdigest()[:8], 16)


def listwise_answer(query: str, passages: list[dict[str, Any]], flaw: str | None = None) -> list[dict[str, Any]]:
    """`ranked_passages` for a window: passages by `listwise_score`, best first, or flawed as asked."""
    scored = sorted(passages, key=lambda p: listwise_score(query, p["text"]), reverse=True)
    ids = [p["identifier"] for p in scored]
    if flaw == "duplicate":
        ids = ids[:-1] + ids[:1]
    elif flaw == "missing":
        ids = ids[:-1]
    elif flaw == "unknown":
        ids = ids + [len(ids) + 7]
    elif flaw == "empty":
        ids = []
    elif flaw is not None:
        raise ValueError(f"unknown listwise flaw {flaw!r}")
    score = {p["identifier"]: listwise_score(query, p["text"]) for p in passages}
    return [{"identifier": i, "relevance": score.get(i, 0) % 4,
             "direct_reason": f"Passage {i} names the fact the query asks about.",
             "listwise_reason": f"Passage {i} is more specific than the passages ranked below it.",
             "direct_answer_sentence": f"The answer is in passage {i}."} for i in ids]


def document_sentences(user: str, count: int | None = None) -> list[str]:
    """The loopback teacher's queries for a DocumentQueries prompt: `count` (the prompt's own, by
    default) sentences of the document, starting at one chosen by a hash of the document."""
    def field(name: str) -> str:
        return user.split(f"[[ ## {name} ## ]]", 1)[1].split("[[ ## ", 1)[0].strip()

    doc = field("document")
    n = count if count is not None else int(field("count").split()[0])
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", doc) if len(s.strip()) > 3] or [doc]
    start = int(hashlib.sha256(doc.encode()).hexdigest()[:8], 16) % len(sentences)
    return [sentences[(start + i) % len(sentences)] for i in range(min(n, len(sentences)))]


def auto_answer(body: dict[str, Any], flaw: str | None = None) -> str:
    """A valid, deterministic answer to a DirectRelevance, Comparison, ListwiseRanking or
    DocumentQueries prompt (`flaw`: a flawed listwise permutation, see `listwise_answer`); queries
    are sentences of the document (`document_sentences`)."""
    user = _user_text(body)
    h = int(hashlib.sha256(user.encode()).hexdigest()[:8], 16)
    fields = _fields_in_prompt(user)
    if "count" in fields and "document" in fields:
        queries = document_sentences(user)
        if body.get("response_format"):
            return json.dumps({"queries": queries})
        return f"[[ ## queries ## ]]\n{json.dumps(queries)}\n\n[[ ## completed ## ]]"
    window = listwise_window(user) if "passages" in fields else None
    if window is not None:
        ranked = listwise_answer(*window, flaw=flaw)
        if body.get("response_format"):
            return json.dumps({"ranked_passages": ranked})
        return f"[[ ## ranked_passages ## ]]\n{json.dumps(ranked)}\n\n[[ ## completed ## ]]"
    if "document_a" in fields:
        out: dict[str, Any] = {
            "reasoning": "Passage A states the answer directly; Passage B is only on the topic.",
            "preferred": "A" if h % 2 == 0 else "B",
            "confidence": round(0.5 + (h % 50) / 100, 2),
        }
    else:
        rel = h % 4
        out = {
            "reasoning": "The passage is about the query's subject and names the fact the searcher wants.",
            "relevance": rel,
            "score": round(min(1.0, rel / 3 * 0.9 + 0.05), 2),
        }
    if body.get("response_format"):
        return json.dumps(out)
    return "".join(f"[[ ## {k} ## ]]\n{v}\n\n" for k, v in out.items()) + "[[ ## completed ## ]]"


class Behaviour:
    """What the server does: latency, scripted actions by prompt substring, a request log."""

    def __init__(self, *, latency: float = 0.0, log_path: str | None = None, faults: dict[str, float] | None = None,
                 fault_seed: int = 0, fault_sleep: float = 30.0, require_key: str | None = None,
                 guard_models: bool = False, batch_delay: float = 0.0, batch_fail_rate: float = 0.0,
                 batch_seed: int = 0, batch_create_hold: float = 0.0, cache_min_tokens: int | None = 1024):
        import random

        self.cache_min_tokens = cache_min_tokens
        self._prefixes: set[str] = set()  # hashes of every leading run of messages seen (the cache)
        self.latency = latency
        self.faults = dict(faults or {})
        self.fault_sleep = fault_sleep
        self.require_key = require_key
        self.guard_models = guard_models
        self.down = False
        self._rng = random.Random(fault_seed)
        self.rules: list[tuple[str, deque[Action]]] = []
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._log = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115 - lives as long as the server
        self._n = 0
        self.model_requests = 0  # GET /v1/models (not in `requests`: those are chat completions)
        self.batches = openai_batches.BatchStore(batch_delay=batch_delay, fail_rate=batch_fail_rate, seed=batch_seed,
                                                 create_hold=batch_create_hold, on_event=self._log_batch_event)

    def _log_batch_event(self, event: dict[str, Any]) -> None:
        if self._log:
            with self._lock:
                self._log.write(json.dumps({"batch_event": event}) + "\n")
                self._log.flush()

    def answer(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        """One batch item: the action and answer an online request with this body would get, logged
        like one; returns (status, payload). A held or dropped reply (a timeout) is a 500 item."""
        action = self.next_action(body, headers)
        n = self.record(body, action, headers)
        if isinstance(action, dict) and ("sleep" in action or action.get("drop")):
            action = {"status": 500, "message": "the item timed out"}
        return self.reply_to(body, action, n)

    def reply_to(self, body: dict[str, Any], action: Action, n: int) -> tuple[int, dict[str, Any]]:
        """(status, payload) of request `n` under `action`: an OpenAI-shaped error for a status
        action, else a completion (its usage logged with `replied`)."""
        if isinstance(action, dict) and "status" in action:
            status = int(action["status"])
            err_type = {429: "rate_limit_error", 401: "invalid_request_error"}.get(status, "server_error")
            return status, {"error": {"message": action.get("message", f"scripted {status}"), "type": err_type,
                                      "code": status}}
        if isinstance(action, dict) and "content" in action:
            content = action["content"]
        else:
            content = auto_answer(body, flaw=action.get("flaw") if isinstance(action, dict) else None)
        if isinstance(action, dict) and "cached_tokens" in action:  # a scripted usage, even an impossible one
            payload = _completion(body, content, cached=int(action["cached_tokens"]), clamp=False)
        else:
            payload = _completion(body, content, cached=self.cached_tokens(n))
        self.replied(n, payload["usage"])
        return 200, payload

    def remember(self, body: dict[str, Any]) -> int:
        """Tokens of the longest leading run of whole messages an earlier request sent (0 below
        `cache_min_tokens`); then this request's prefixes are cached too. Called as a request arrives."""
        msgs = body.get("messages") or []
        texts = [m.get("content") if isinstance(m.get("content"), str) else json.dumps(m.get("content"))
                 for m in msgs]
        digest, chars, hit = hashlib.sha256(), 0, 0
        with self._lock:
            for i, (m, t) in enumerate(zip(msgs, texts, strict=True)):
                digest.update(f"{m.get('role')}\x00{t}\x01".encode())
                chars += len(t) + (1 if i else 0)  # `_all_text` joins the messages with newlines
                key = digest.hexdigest()
                if key in self._prefixes:
                    hit = chars
                self._prefixes.add(key)
        tokens = hit // 4
        return tokens if self.cache_min_tokens is not None and tokens >= self.cache_min_tokens else 0

    def cached_tokens(self, n: int) -> int:
        with self._lock:
            return int(self.requests[n].get("cached_tokens") or 0) if 0 <= n < len(self.requests) else 0

    def script(self, match: str, *actions: Action) -> None:
        with self._lock:
            self.rules.append((match, deque(actions)))

    def next_action(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> Action:
        text = _all_text(body)
        with self._lock:
            if self.require_key is not None and (headers or {}).get("authorization") != f"Bearer {self.require_key}":
                return {"status": 401, "message": "Incorrect API key provided."}
            if self.down:
                return {"status": 503, "message": "the teacher is down"}
            for match, actions in self.rules:
                if actions and match in text:
                    return actions.popleft()
            if self.faults:
                u, acc = self._rng.random(), 0.0
                for kind, p in self.faults.items():
                    acc += p
                    if u < acc:
                        return {"sleep": self.fault_sleep} if kind == "timeout" else {"status": int(kind)}
        return "ok"

    def models(self, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The reply to `GET /v1/models` (see the module docstring)."""
        with self._lock:
            self.model_requests += 1
            if self.guard_models and self.require_key is not None and \
                    headers.get("authorization") != f"Bearer {self.require_key}":
                return 401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error"}}
            if self.guard_models and self.down:
                return 503, {"error": {"message": "the teacher is down", "type": "server_error"}}
        return 200, {"object": "list", "data": [{"id": "loopback", "object": "model"}]}

    def record(self, body: dict[str, Any], action: Action, headers: dict[str, str] | None = None) -> int:
        entry = {
            "n": self._n,
            "t": time.time(),
            "model": body.get("model"),
            "user": _user_text(body),
            "response_format": body.get("response_format"),
            "temperature": body.get("temperature"),
            "seed": body.get("seed"),
            "action": action if isinstance(action, str) else {k: v for k, v in action.items() if k != "content"},
            "authorization": None,  # never logged: tests assert that keys do not leak elsewhere
            "auth": None if self.require_key is None else
            (headers or {}).get("authorization") == f"Bearer {self.require_key}",
            "cached_tokens": self.remember(body),
        }
        with self._lock:
            self._n += 1
            self.requests.append(entry)
            if self._log:
                self._log.write(json.dumps(entry) + "\n")
                self._log.flush()
        return entry["n"]

    def replied(self, n: int, usage: dict[str, int]) -> None:
        """Log the usage of the reply to request `n` (what a provider bills, whether or not the
        client is still there to read it)."""
        with self._lock:
            self.requests[n]["usage"] = usage
            if self._log:
                self._log.write(json.dumps({"reply": n, "usage": usage}) + "\n")
                self._log.flush()


def _completion(body: dict[str, Any], content: str, *, cached: int = 0, clamp: bool = True) -> dict[str, Any]:
    prompt_chars = len(_all_text(body))
    p, c = max(1, prompt_chars // 4), max(1, len(content) // 4)
    usage: dict[str, Any] = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": min(cached, p) if clamp else cached}
    return {
        "id": "chatcmpl-" + hashlib.sha1(content.encode()).hexdigest()[:12],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or "loopback",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": usage,
    }


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}


async def _write(writer: asyncio.StreamWriter, status: int, payload: dict[str, Any]) -> None:
    await _write_raw(writer, status, json.dumps(payload).encode(), "application/json")


async def _write_raw(writer: asyncio.StreamWriter, status: int, data: bytes, content_type: str) -> None:
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(data)}\r\nConnection: keep-alive\r\n\r\n").encode()
    writer.write(head + data)
    await writer.drain()


async def _handle(behaviour: Behaviour, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = (lines[0].split(" ") + ["", "", ""])[:3]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            n = int(headers.get("content-length", "0") or 0)
            try:
                raw = await reader.readexactly(n) if n else b""
            except asyncio.IncompleteReadError:  # the client died mid-request (e.g. SIGKILL)
                return
            if method == "GET" and path.rstrip("/").endswith("/models"):
                status, payload = behaviour.models(headers)
                await _write(writer, status, payload)
                continue
            if openai_batches.is_route(path) and behaviour.require_key is not None and \
                    headers.get("authorization") != f"Bearer {behaviour.require_key}":
                await _write(writer, 401, {"error": {"message": "Incorrect API key provided.",
                                                     "type": "invalid_request_error"}})
                continue
            routed = openai_batches.route(behaviour.batches, method, path, headers, raw,
                                          lambda b, h=headers: behaviour.answer(b, h))
            if routed is not None:
                status, data, content_type, hold = routed
                if hold:
                    await asyncio.sleep(hold)
                await _write_raw(writer, status, data, content_type)
                continue
            if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
                await _write(writer, 404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}})
                continue
            body = json.loads(raw or b"{}")
            action = behaviour.next_action(body, headers)
            n = behaviour.record(body, action, headers)
            if behaviour.latency:
                await asyncio.sleep(behaviour.latency)
            if isinstance(action, dict) and action.get("drop"):
                writer.close()
                return
            if isinstance(action, dict) and "sleep" in action:
                await asyncio.sleep(float(action["sleep"]))
            await _write(writer, *behaviour.reply_to(body, action, n))
    except (ConnectionError, asyncio.CancelledError):
        return
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class OpenAIServer:
    """The server in a background thread of this process (for tests). Use as a context manager."""

    def __init__(self, *, latency: float = 0.0, log_path: str | None = None, host: str = "127.0.0.1",
                 port: int = 0, **behaviour: Any):
        self.behaviour = Behaviour(latency=latency, log_path=log_path, **behaviour)
        self.host = host
        self.port: int | None = port or None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        """The `api_base` to give LiteLLM (`openai/<model>` provider)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.behaviour.requests

    def script(self, match: str, *actions: Action) -> None:
        """The next requests whose prompt contains `match` take `actions`, in order."""
        self.behaviour.script(match, *actions)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(
                lambda r, w: _handle(self.behaviour, r, w), self.host, self.port or 0, backlog=1024)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()
        self._loop.close()

    def start(self) -> OpenAIServer:
        self._thread = threading.Thread(target=self._run, name="openai-loopback", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("loopback OpenAI server did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._loop and self._server:
            async def close() -> None:
                self._server.close()
                for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                    task.cancel()

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(5)

    def __enter__(self) -> OpenAIServer:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def spawn_server(*, latency: float = 0.0, log_path: str | None = None,
                 script: list[tuple[str, list[Action]]] | None = None, port: int = 0,
                 faults: dict[str, float] | None = None, fault_seed: int = 0, fault_sleep: float = 30.0,
                 require_key: str | None = None, batch_delay: float = 0.0, batch_fail_rate: float = 0.0,
                 batch_seed: int = 0, batch_create_hold: float = 0.0) -> Iterator[str]:
    """Run the server in a separate process (its CPU is not the client's); yields its api_base.
    A fixed `port` lets a test stop the server and start it again where the client expects it."""
    cmd = [sys.executable, os.path.abspath(__file__), "--latency", str(latency), "--port", str(port),
           "--fault-seed", str(fault_seed), "--fault-sleep", str(fault_sleep), "--batch-delay", str(batch_delay),
           "--batch-fail-rate", str(batch_fail_rate), "--batch-seed", str(batch_seed),
           "--batch-create-hold", str(batch_create_hold)]
    if log_path:
        cmd += ["--log", log_path]
    if script:
        cmd += ["--script", json.dumps(script)]
    if faults:
        cmd += ["--faults", json.dumps(faults)]
    if require_key:
        cmd += ["--require-key", require_key]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("PORT "):
            raise RuntimeError(f"loopback server failed to start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def _main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--log", default=None)
    ap.add_argument("--script", default=None, help='JSON list of [match, [actions...]]')
    ap.add_argument("--faults", default=None, help='JSON object, e.g. {"429": 0.2, "500": 0.1, "timeout": 0.05}')
    ap.add_argument("--fault-seed", type=int, default=0)
    ap.add_argument("--fault-sleep", type=float, default=30.0)
    ap.add_argument("--require-key", default=None)
    ap.add_argument("--batch-delay", type=float, default=0.0, help="seconds until a batch is completed")
    ap.add_argument("--batch-fail-rate", type=float, default=0.0, help="share of batch items that fail")
    ap.add_argument("--batch-seed", type=int, default=0)
    ap.add_argument("--batch-create-hold", type=float, default=0.0,
                    help="seconds the reply to a batch create is held after the batch exists")
    args = ap.parse_args()
    behaviour = Behaviour(latency=args.latency, log_path=args.log, faults=json.loads(args.faults or "{}"),
                          fault_seed=args.fault_seed, fault_sleep=args.fault_sleep, require_key=args.require_key,
                          batch_delay=args.batch_delay, batch_fail_rate=args.batch_fail_rate,
                          batch_seed=args.batch_seed, batch_create_hold=args.batch_create_hold)
    for match, actions in json.loads(args.script or "[]"):
        behaviour.script(match, *actions)

    async def serve() -> None:
        server = await asyncio.start_server(lambda r, w: _handle(behaviour, r, w), "127.0.0.1", args.port,
                                            backlog=1024)
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    _main()
