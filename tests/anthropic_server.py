"""A loopback Anthropic Messages API (`POST .../v1/messages`) for tests and benchmarks, reached
through LiteLLM's `anthropic/<model>` route with `api_base`.

It answers r2r-synth's signatures like `openai_server` does (the same deterministic `auto_answer`)
and caches prompts the way Anthropic does: only up to a block marked with `cache_control`. The
prefix up to the last marked block (the system blocks, then the messages, in order; tokens are
characters / 4) is written to the cache the first time (`cache_creation_input_tokens`) and read
from it afterwards (`cache_read_input_tokens`), when it is `cache_min_tokens` (1,024) tokens or
more; `input_tokens` counts the rest. Every request body is kept in `requests` (the tests read the
`cache_control` marks from it).

    with AnthropicServer() as srv:  # srv.url is the api_base for LiteLLM
        litellm.completion(model="anthropic/claude-sonnet-4-5", api_base=srv.url, api_key="k", ...)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
from typing import Any

from openai_server import auto_answer


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or [] if isinstance(b, dict))


def _blocks(body: dict[str, Any]) -> list[tuple[str, bool]]:
    """(text, marked) of every block in the order Anthropic caches: system blocks, then messages."""
    out: list[tuple[str, bool]] = []
    system = body.get("system")
    for part in ([{"text": system}] if isinstance(system, str) else system or []):
        out.append((part.get("text", ""), "cache_control" in part))
    for m in body.get("messages") or []:
        c = m.get("content")
        if isinstance(c, str):
            out.append((c, False))
        else:
            out += [(b.get("text", ""), "cache_control" in b) for b in c or [] if isinstance(b, dict)]
    return out


class AnthropicServer:
    """The server in a background thread (see the module docstring). Use as a context manager."""

    def __init__(self, *, cache_min_tokens: int = 1024, host: str = "127.0.0.1"):
        self.cache_min_tokens = cache_min_tokens
        self.host = host
        self.port: int | None = None
        self.requests: list[dict[str, Any]] = []
        self.usages: list[dict[str, int]] = []
        self._cache: set[str] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def marked(self, n: int) -> list[str]:
        """Where request `n` carried `cache_control`: ``system`` and/or ``message <i> (<role>)``."""
        body = self.requests[n]
        where = []
        system = body.get("system")
        if isinstance(system, list) and any("cache_control" in b for b in system):
            where.append("system")
        for i, m in enumerate(body.get("messages") or []):
            if isinstance(m.get("content"), list) and any("cache_control" in b for b in m["content"]):
                where.append(f"message {i} ({m.get('role')})")
        return where

    def _usage(self, body: dict[str, Any], completion: str) -> dict[str, int]:
        blocks = _blocks(body)
        total = sum(len(t) for t, _ in blocks) // 4
        last = max((i for i, (_, marked) in enumerate(blocks) if marked), default=-1)
        cached = written = 0
        if last >= 0:
            prefix = blocks[: last + 1]
            tokens = sum(len(t) for t, _ in prefix) // 4
            key = hashlib.sha256(json.dumps(prefix).encode()).hexdigest()
            if tokens >= self.cache_min_tokens:
                with self._lock:
                    if key in self._cache:
                        cached = tokens
                    else:
                        written = tokens
                        self._cache.add(key)
        return {"input_tokens": max(1, total - cached - written), "output_tokens": max(1, len(completion) // 4),
                "cache_read_input_tokens": cached, "cache_creation_input_tokens": written}

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        # The answer is the one openai_server gives the same prompt (the user turn is what it reads).
        msgs = [{"role": m.get("role"), "content": _text(m.get("content"))} for m in body.get("messages") or []]
        text = auto_answer({"messages": msgs})
        usage = self._usage(body, text)
        with self._lock:
            self.requests.append(body)
            self.usages.append(usage)
        return {"id": f"msg_{len(self.requests)}", "type": "message", "role": "assistant", "model": body.get("model"),
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": usage}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path = (lines[0].split(" ") + ["", ""])[:2]
                headers = {k.strip().lower(): v.strip() for k, v in
                           (line.split(":", 1) for line in lines[1:] if ":" in line)}
                raw = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                if method == "POST" and path.split("?")[0].rstrip("/").endswith("/messages"):
                    status, payload = 200, self._answer(json.loads(raw or b"{}"))
                else:
                    status, payload = 404, {"type": "error", "error": {"type": "not_found_error",
                                                                       "message": f"no route {method} {path}"}}
                data = json.dumps(payload).encode()
                writer.write((f"HTTP/1.1 {status} {'OK' if status == 200 else 'Not Found'}\r\n"
                              f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                              "Connection: keep-alive\r\n\r\n").encode() + data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError, asyncio.IncompleteReadError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, self.host, 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()
        self._loop.close()

    def __enter__(self) -> AnthropicServer:  # noqa: PYI034
        self._thread = threading.Thread(target=self._run, name="anthropic-loopback", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("loopback Anthropic server did not start within 10 s")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop and self._server:
            async def close() -> None:
                self._server.close()
                for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                    task.cancel()

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(5)
