"""The direct OpenAI-compatible transport: one pooled httpx client per event loop.

Why it exists: for an OpenAI-compatible server LiteLLM only resolves the provider and forwards
the request, but its per-call logging, cost and redaction machinery costs ~15 ms of CPU per call
on a small machine: at 32 requests in flight that, not the server, bounds the run. LiteLLM still
resolves the provider, wire model name and endpoint (`litellm.get_llm_provider`) and prices the
tokens from its cost map (`r2r_synth.teacher.lm.make_teacher`); this module only sends the same
JSON body. `--transport litellm` turns it off.
"""

from __future__ import annotations

import json
from typing import Any


class HTTPStatusError(Exception):
    """A non-2xx reply on the direct HTTP transport (LiteLLM's own exceptions carry `status_code` too)."""

    def __init__(self, status_code: int, message: str):
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code


# LiteLLM providers that speak the OpenAI chat-completions wire format unchanged.
OPENAI_COMPATIBLE = frozenset({"openai", "hosted_vllm", "openai_like", "custom_openai", "llamafile", "lm_studio"})
TRANSPORTS = ("auto", "litellm", "http")


class HTTPTransport:
    """Direct OpenAI-compatible transport for a self-hosted endpoint (`--api-base`); see the module
    docstring for why it exists."""

    def __init__(self, *, url: str, wire_model: str, api_key: str | None, timeout: float | None):
        self.url = url
        self.wire_model = wire_model
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout
        self.pool_size = 64  # the engine sets it to its concurrency
        self._clients: dict[Any, Any] = {}

    def _client(self) -> Any:
        import asyncio

        import httpx

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for old in [lp for lp in self._clients if lp.is_closed()]:
                self._clients.pop(old)
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout) if self.timeout else httpx.Timeout(600.0),
                # A bounded pool the size of the concurrency: httpcore scans its whole pool for every
                # request, so an unbounded pool of idle connections costs CPU on each call.
                limits=httpx.Limits(max_connections=self.pool_size, max_keepalive_connections=self.pool_size),
            )
            self._clients[loop] = client
        return client

    async def acomplete(self, messages: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        body = {"model": self.wire_model, "messages": messages,
                **{k: v for k, v in kwargs.items() if v is not None}}
        resp = await self._client().post(self.url, content=_dumps(body), headers=self.headers)
        if resp.status_code >= 400:
            try:
                err = _loads(resp.content).get("error") or {}
                msg = err.get("message") if isinstance(err, dict) else str(err)
            except ValueError:
                msg = resp.text[:300]
            raise HTTPStatusError(resp.status_code, str(msg or resp.reason_phrase))
        try:
            return _loads(resp.content)
        except ValueError:
            raise HTTPStatusError(502, f"the server sent a non-JSON body: {resp.text[:200]!r}") from None

    async def aclose(self) -> None:
        import asyncio

        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


def _dumps(obj: Any) -> bytes:
    try:
        import orjson

        return orjson.dumps(obj)
    except ImportError:
        return json.dumps(obj).encode()


def _loads(data: bytes) -> Any:
    try:
        import orjson

        return orjson.loads(data)
    except ImportError:
        return json.loads(data)
