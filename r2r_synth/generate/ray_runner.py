"""`generate --ray`: the job's requests as a Ray Data dataset, asked by Ray Data LLM
(`ray.data.llm`), with this process (the driver) as the run directory's one writer.

**The same engine, a different door** (as `generate.batch`): the engine formats every call with the
program's DSPy adapter and defers it to `RayBroker`; the broker turns the deferred calls — exactly
the bodies `--export-batch` writes — into a dataset and hands it to a Ray Data LLM processor:

- an endpoint (`--api-base`, one or several, comma-separated; any OpenAI-compatible server, or
  OpenAI itself): `HttpRequestProcessorConfig`, one processor per endpoint over its share of the rows;
- a model hosted in the cluster (`--teacher vllm/<Hugging Face id>`): `vLLMEngineProcessorConfig`,
  `--replicas` engines of `--tensor-parallel` GPUs each.

Rows carry the request body and the processors' own stages do the rest (an endpoint's workers get
one piece of r2r-synth, `ray_http.EagerSession`, pickled by value), so a cluster needs Ray, and vLLM
where it hosts the teacher, but not this package.

Every call is journaled as sent before the dataset runs (a SIGKILL leaves it as in flight, counted
at the dearest call against `--max-cost`), and each reply is journaled with its text the moment its
row streams back. Then the engine runs again over the same requests and finds those replies in the
journal, exactly as it finds a collected batch result: one parser, one writer, one record format.
A reply the engine cannot use is asked again in the next round (`--parse-retries`), a listwise
query's next window too (one round of windows per pass, as with `--batch`); a session ends when a
round asks nothing. A rerun asks only what has neither a record nor a journaled reply.

A row whose block fails for good (Ray retries a task whose worker died; `HttpRequestProcessorConfig`
retries 429/5xx and dropped connections `--max-retries` times) comes back as no row: its request is
rejected as ``transport`` and the next run asks it again. `--max-cost` is counted here, at the
driver: a round takes only the calls that fit under the cap at their estimate (the prompt and the
full reply allowance at the teacher's prices), on top of what the journal says is spent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from r2r_synth.config import GenerateConfig
from r2r_synth.generate.batch import Broker, Call, Outcome
from r2r_synth.generate.ray_cluster import (
    RaySession,
    _address,
    block_size,
    endpoints,
    hosted_model,
    replicas,
)
from r2r_synth.rundir import Journal
from r2r_synth.rundir.batches import new_id
from r2r_synth.teacher.policy import CallFailed


def within_budget(calls: list[Call], *, cap: float | None, spent: float,
                  estimate: Callable[[Call], float]) -> list[Call]:
    """The calls (in order, a request's calls together) that fit under `cap` on top of `spent`, each
    at its estimate; all of them without a cap."""
    if cap is None:
        return calls
    groups: dict[str, list[Call]] = {}
    for c in calls:
        groups.setdefault(c.key, []).append(c)
    out: list[Call] = []
    committed = spent
    for group in groups.values():
        est = sum(estimate(c) for c in group)
        if committed + est > cap:
            break
        committed += est
        out += group
    return out


class RayBroker(Broker):
    """The broker of `generate --ray` (see the module docstring)."""

    mode = "ray"

    def __init__(self, *, session: RaySession, **kw: Any):
        super().__init__(**kw)
        from r2r_synth.teacher.pricing import per_token_prices

        # Online prices: Ray asks the endpoint request by request (a hosted model has none).
        self.prices = None if session.model is not None else per_token_prices(self.teacher.model)
        self.session = session
        self.journal: Journal | None = None
        self.asked: set[str] = set()  # request keys whose calls the last round asked
        self.replies: dict[str, dict[str, Any]] = {}  # this session's replies by call id, for the engine
        self.rounds: list[dict[str, Any]] = []
        self.not_submitted = 0

    def collect(self, journal: Journal, *, batch_items: set[tuple[str, str]], done: set[str]) -> None:
        # Replies of earlier sessions are in the journal already; this session needs its writer.
        self.journal = journal

    def finish(self, *, spent: float) -> None:
        import time

        assert self.journal is not None
        pending = list(self.new.values())
        calls = within_budget(pending, cap=self.config.max_cost, spent=spent + self.cost,
                              estimate=lambda c: self.estimate(c, count=True))
        self.not_submitted = len(pending) - len(calls)
        self.asked = {c.key for c in calls}
        if not calls:
            return
        rid = new_id()
        sent = {c.cid: (self.journal.send(key=c.key, call=c.cid, batch=rid), c.key) for c in calls}
        blocks = math.ceil(len(calls) / block_size(self.config, n=len(calls), replicas=self.session.replicas))
        self.say(f"round {len(self.rounds) + 1}: {len(calls)} requests in {blocks} blocks to {self.session.replicas} "
                 f"replica(s) on {self.session.where}")
        t0, ok, failed = time.monotonic(), 0, 0
        for out in self.session.ask(calls):
            entry = sent.pop(out.cid, None)
            if entry is None:
                continue  # not a row of this round (a retried task's duplicate)
            self._journal(entry[0], out)
            ok, failed = (ok + 1, failed) if out.failure is None else (ok, failed + 1)
        for cid, (n, _key) in sent.items():  # its block failed for good
            self.journal.fail(n)
            self.failed[cid] = CallFailed("no reply came back from Ray: its block failed after the retries (see "
                                          "Ray's logs)", cause="transport", attempts=1)
        lost = len(sent)
        for c in calls:
            self.new.pop(c.cid, None)
        wall = time.monotonic() - t0
        self.rounds.append({"requests": len(calls), "blocks": blocks, "replies": ok, "failed": failed + lost,
                            "wall_s": round(wall, 3)})
        self.say(f"round {len(self.rounds)}: {ok} replies, {failed + lost} failed, {wall:.1f} s "
                 f"({len(calls) / wall if wall > 0 else 0:.1f} req/s)")

    def _journal(self, n: int, out: Outcome) -> None:
        assert self.journal is not None
        if out.failure is not None:
            self.journal.fail(n)
            self.failed[out.cid] = out.failure
            return
        cost = (None if self.prices is None
                else out.prompt_tokens * self.prices[0] + out.completion_tokens * self.prices[1])
        self.journal.reply(n, prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens, cost=cost,
                           text=out.text or "")
        self.replies[out.cid] = {"text": out.text or "", "prompt_tokens": out.prompt_tokens,
                                 "completion_tokens": out.completion_tokens, "cost": cost}
        self.cost += cost or 0.0
        self.usage = (self.usage[0] + out.prompt_tokens, self.usage[1] + out.completion_tokens)

    def summary(self) -> dict[str, Any]:
        """What the manifest records of the Ray side (no key, no headers)."""
        s = self.session
        return {"address": s.address or "local", "cpus": s.cpus, "gpus": s.gpus, "replicas": s.replicas,
                "endpoints": len(s.urls), "hosted_model": s.model, "rounds": self.rounds}

    def close(self) -> None:
        self.session.close()


def ray_rounds(engine: Any, broker: RayBroker, todo: list[Any], *, spent: float,
               on_progress: Callable[[Any], None] | None) -> None:
    """After the engine's first pass deferred every call: ask them on Ray (a round), hand the
    replies to the engine and let it run again over the requests they belong to, which parses them
    (and defers a re-ask, or a listwise query's next window, to the next round); until a round asks
    nothing, the budget leaves no room, or the run stops."""
    import asyncio

    from r2r_synth.generate.windows import Chain
    from r2r_synth.schemas import Usage

    while engine.fatal is None and broker.new:
        usage, cost = broker.usage, broker.cost
        broker.finish(spent=spent)
        if not broker.asked:
            return  # nothing fits under --max-cost: the session stops at the budget
        # Every reply of the session, not only this round's: a comparison whose other half is asked
        # again finds its answered half once more (the engine takes a reply as it parses it).
        engine.replies.update(broker.replies)
        p = engine.progress
        du = (broker.usage[0] - usage[0], broker.usage[1] - usage[1])
        p.usage = p.usage + Usage(prompt_tokens=du[0], completion_tokens=du[1], total_tokens=sum(du))
        if broker.prices is not None:
            p.cost = (p.cost or 0.0) + broker.cost - cost
        p.deferred = 0
        p.calls += broker.rounds[-1]["requests"]
        again = [j for j in todo if not (isinstance(j, Chain) and j.finished)
                 and (j.job().key if isinstance(j, Chain) else j.key) in broker.asked]
        if on_progress is not None:
            on_progress(p)
        asyncio.run(engine.run(again))


def ray_plan(config: GenerateConfig, *, calls: int, rounds: int, cost: float | None) -> dict[str, Any]:
    """`--dry-run --ray`: the first round's requests, the blocks and replicas they go to, the rounds
    listwise windows take, and the cost (nothing is started: Ray's resources are not looked at)."""
    reps = replicas(config, n_urls=len(endpoints(config.api_base)) or 1)
    block = block_size(config, n=calls, replicas=reps)
    return {"mode": "ray", "address": _address(config) or "local", "calls": calls,
            "blocks": math.ceil(calls / block) if calls else 0, "block_size": block, "replicas": reps,
            "tensor_parallel": config.tensor_parallel if hosted_model(config.teacher) else None,
            "hosted_model": hosted_model(config.teacher), "endpoints": len(endpoints(config.api_base)),
            "rounds": rounds if calls else 0, "cost": cost}
