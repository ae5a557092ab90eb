"""The aiohttp session Ray Data LLM's HTTP stage asks an endpoint with, under `generate --ray`.

`HttpRequestProcessorConfig`'s stage creates a batch's `session.post(...)` calls and then awaits
them one after the other: with aiohttp's own session a batch's requests go out one at a time, so
a batch of 64 rows at 100 ms latency takes 6.4 s. `EagerSession` is the stage's documented
`session_factory` hook: its `post` starts the request at once (an asyncio task) and hands the stage
the task, which it awaits as it would aiohttp's request; so a batch's requests are in flight
together, at most `limit` at a time in one worker process (a semaphore shared by the sessions of
the worker's event loop), and the stage's retries, status handling and row order stay Ray's.

This module imports nothing from r2r-synth: the driver registers it to be pickled by value
(`ray.cloudpickle.register_pickle_by_value`), so a cluster's workers run it without r2r-synth
installed, as they run the rest of Ray Data LLM.
"""

from __future__ import annotations

import asyncio
from typing import Any, Self

import aiohttp


class EagerSession:
    """An `aiohttp.ClientSession` whose `post` starts the request at once (see the module docstring).

    `timeout`: seconds per request (the teacher's), None for aiohttp's default; `limit`: requests in
    flight at once in this worker process."""

    _gate: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def __init__(self, timeout: float | None = None, limit: int = 16):
        self._timeout = timeout
        self._limit = max(1, int(limit))
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    def _semaphore(self) -> asyncio.Semaphore:
        """The worker's gate, one per event loop (Ray Data may run a task's batches in a new loop)."""
        loop = asyncio.get_running_loop()
        gate = EagerSession._gate
        if gate is None or gate[0] is not loop:
            gate = EagerSession._gate = (loop, asyncio.Semaphore(self._limit))
        return gate[1]

    async def __aenter__(self) -> Self:
        kw = {"timeout": aiohttp.ClientTimeout(total=self._timeout)} if self._timeout else {}
        self._session = aiohttp.ClientSession(**kw)
        self._semaphore()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self._tasks:  # the stage gave up on a batch (an error): nothing left running
            if not t.done():
                t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        assert self._session is not None
        await self._session.close()

    async def _send(self, url: str, kw: dict[str, Any]) -> aiohttp.ClientResponse:
        assert self._session is not None
        async with self._semaphore():
            resp = await self._session.post(url, **kw)
            await resp.read()  # the body is buffered: the stage reads it after the gate is free
            return resp

    def post(self, url: str, **kw: Any) -> asyncio.Task[aiohttp.ClientResponse]:
        """Start the request now; the stage awaits the task for the response (an async context
        manager, as aiohttp's own)."""
        task = asyncio.ensure_future(self._send(url, kw))
        self._tasks.append(task)
        return task
