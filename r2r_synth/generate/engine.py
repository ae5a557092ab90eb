"""The engine: asks the teacher for every pending job, concurrently and politely, and writes each
answer the moment it is complete.

- **One call policy.** Each LM call goes through the teacher's `CallPolicy` (retries with backoff
  and full jitter on 429/5xx/timeouts; `CallFailed` with its cause when they run out). On top the
  engine paces starts (`rpm`/`tpm`), keeps `concurrency` calls in flight, and trips a circuit
  breaker when request after request fails on transport (the teacher is down): the run stops and
  what was in flight is rejected as ``aborted``, which the next run asks again.
- **Journaled.** Every attempt is written to the run's journal before it goes out and when it comes
  back, so spend survives a SIGKILL. The answered half of a comparison is kept there too: if the
  other half fails, the next run reuses it instead of paying for it again.
- **Validated.** Every reply is parsed by the program's DSPy adapter against the signature and
  validated into its pydantic record; a reply that fails (after `parse_retries` more asks) is a
  reject whose cause is ``reply`` (the teacher's answer), with the reason and the raw text.
- **Budgeted.** With `max_cost`, no request starts that the spend so far (all sessions, from the
  journal) plus the requests in flight would push over the cap.
- **Queries from the corpus** (`r2r_synth.generate.doc_queries`): one request per document, the
  queries it answers (`r2r-synth queries`).
- **Listwise windows** (`r2r_synth.generate.windows`): each query's windows are asked one after the
  other (`run_chain`), queries concurrently under the same concurrency, pacing, policy and budget;
  a finished query's final ranking goes to `rankings.jsonl`.
- **Batches** (`r2r_synth.generate.batch`): with a broker, a call is answered from a collected batch
  result (kept in the journal like any paid reply), fails as its batch item failed, or is deferred
  to a batch; a deferred request writes nothing, and a listwise chain stops at its deferred window.

Why the engine calls `Teacher.acomplete` instead of `module.acall`: DSPy's per-call machinery
(thread hop to prepare the request, response cache, history, callbacks, usage tracker) costs more
CPU per request than the request itself on a loopback server, and the engine has its own cache (the
request key). The prompt and the parse are still DSPy's: the program's adapter formats the
signature, instructions and demos (`Adapter.format`) and parses the reply (`Adapter.parse`), so a
record is exactly what `module(...)` would have returned for that reply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from r2r_synth import __version__
from r2r_synth.config import GenerateConfig
from r2r_synth.errors import ProviderUsageError, R2RError, TeacherError
from r2r_synth.generate.batch import Broker, Deferred
from r2r_synth.generate.doc_queries import (
    EMBEDDED_TOKENS_PER_QUERY,
    TOKENS_PER_QUERY,
    InvalidQueries,
    QueryJob,
    queries_response_format,
)
from r2r_synth.generate.jobs import Job
from r2r_synth.generate.prompts import PromptPlan
from r2r_synth.generate.windows import (
    FINAL_CAUSES,
    Chain,
    InvalidReply,
    WindowJob,
    window_record,
    window_response_format,
)
from r2r_synth.io.jsonl import describe_validation
from r2r_synth.pairs import gold_grades
from r2r_synth.rundir import Journal, RunDir
from r2r_synth.schemas import (
    ComparisonAnswer,
    ComparisonRecord,
    DirectRecord,
    ListwiseRecord,
    Provenance,
    QueriesRecord,
    Reject,
    Usage,
    stable_hash,
)
from r2r_synth.teacher.policy import CallFailed

logger = logging.getLogger(__name__)

EMBEDDED_CONCURRENCY = 2  # llama.cpp's server decodes one request at a time: one queued keeps it busy
DEFAULT_CONCURRENCY = 16
#: The embedded teacher's reply cap per passage of a listwise window (three reasons of at most 160
#: characters each, plus the label and JSON syntax), when --max-tokens is not given.
EMBEDDED_LISTWISE_TOKENS_PER_PASSAGE = 260
#: Reply tokens a listwise window is assumed to take per passage before its usage is known (pacing).
LISTWISE_TOKENS_PER_PASSAGE = 120


def resolved_concurrency(config: GenerateConfig, teacher: Any) -> int:
    """`--concurrency`, or its default: 16 for a remote teacher, 2 for the embedded one."""
    if config.concurrency:
        return config.concurrency
    return EMBEDDED_CONCURRENCY if getattr(teacher, "embedded", False) else DEFAULT_CONCURRENCY


@dataclass
class Progress:
    """What the CLI's progress bar shows; passed to `on_progress` after every finished request."""

    total: int
    skipped: int = 0
    done: int = 0
    rejected: int = 0
    deferred: int = 0  # requests waiting for a batch (`generate --batch`, --export-batch)
    in_flight: int = 0
    calls: int = 0
    retries: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: float | None = None
    saved: float = 0.0  # USD the provider's prompt cache saved this session
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        return self.done + self.rejected

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        """Finished requests per second in this session."""
        return self.finished / self.elapsed if self.elapsed > 0 else 0.0


class RateLimiter:
    """Requests-per-minute and tokens-per-minute pacing (a leaky bucket: starts are spaced so that
    no minute exceeds either limit; token estimates are corrected once the usage is known)."""

    def __init__(self, *, rpm: int | None, tpm: int | None):
        self.rpm, self.tpm = rpm, tpm
        self._next = 0.0

    async def acquire(self, tokens: int) -> None:
        if not (self.rpm or self.tpm):
            return
        now = time.monotonic()
        start = max(now, self._next)
        step = max(60.0 / self.rpm if self.rpm else 0.0, tokens * 60.0 / self.tpm if self.tpm else 0.0)
        self._next = start + step  # single-threaded event loop: no lock needed between await points
        if start > now:
            await asyncio.sleep(start - now)

    def correct(self, estimated: int, actual: int) -> None:
        if self.tpm and actual != estimated:
            self._next += (actual - estimated) * 60.0 / self.tpm


class _Rejected(Exception):
    """A request that ends as a reject: `cause` is the Reject's (see `r2r_synth.schemas.Reject`)."""

    def __init__(self, reason: str, *, cause: str, raw: str | None = None, attempts: int = 1):
        super().__init__(reason)
        self.reason, self.cause, self.raw, self.attempts = reason, cause, raw, attempts


@dataclass
class _Spend:
    """What one request's calls used and cost, and how long they took."""

    usage: Usage = field(default_factory=Usage)
    cost: float | None = 0.0
    saved: float | None = 0.0
    latency: float = 0.0
    attempts: int = 0

    def add(self, *, prompt: int, completion: int, cost: float | None, latency: float, cached: int = 0,
            cache_write: int = 0, saved: float | None = None) -> None:
        self.usage = self.usage + Usage(prompt_tokens=prompt, completion_tokens=completion,
                                        total_tokens=prompt + completion, cached_tokens=cached,
                                        cache_write_tokens=cache_write)
        self.cost = None if self.cost is None or cost is None else self.cost + cost
        if cached or cache_write:
            self.saved = None if self.saved is None or saved is None else self.saved + saved
        self.latency += latency


class Engine:
    """Runs the jobs of one session (see the module docstring)."""

    def __init__(self, *, config: GenerateConfig, teacher: Any, programs: dict[str, Any], run: RunDir,
                 journal: Journal, progress: Progress, on_progress: Callable[[Progress], None] | None,
                 spent_before: float, replies: dict[str, dict[str, Any]], est_call_cost: float,
                 broker: Broker | None = None):
        self.config = config
        self.teacher = teacher
        self.policy = teacher.policy
        self.programs = programs
        self.progress = progress
        self.on_progress = on_progress
        self.journal = journal
        self.replies = replies
        self.plan = PromptPlan(teacher=teacher, programs=programs)
        self.limiter = RateLimiter(rpm=config.rpm, tpm=config.tpm)
        self.concurrency = resolved_concurrency(config, teacher)
        self.slots = asyncio.Semaphore(self.concurrency)
        if hasattr(teacher, "set_pool_size"):
            teacher.set_pool_size(self.concurrency)
        self.spent_before = spent_before
        self.est_call_cost = est_call_cost
        self.broker = broker
        self.stop: str | None = None
        self.fatal: R2RError | None = None
        self.consecutive_failures = 0
        self.breaker = max(16, 2 * self.concurrency)
        self.costs_known = True
        self.unanswered = 0  # requests rejected this session without an answer (retryable)
        self.files = {k: run.appender(k) for k in programs}
        self.rejects = run.appender("reject")
        self.rankings = run.appender("ranking") if "listwise" in programs else None

    # -- one LM call under the policy; returns the parsed, validated answer
    async def ask(self, job: Job | WindowJob | QueryJob, inputs: dict[str, Any], validate: Callable[[dict[str, Any]], Any],
                  spend: _Spend, *, reply_tokens: int = 256, call_kwargs: dict[str, Any] | None = None) -> Any:
        from dspy.utils.exceptions import AdapterParseError

        kind = job.kind
        messages = self.plan.messages(kind, inputs)
        # What goes on the wire: the static prefix marked for the provider's cache where it needs
        # marking (the call's id below stays that of the unmarked prompt, whatever the flag).
        wire = (self.teacher.wire_messages(messages, prefix=self.plan.prefix_len(kind))
                if hasattr(self.teacher, "wire_messages") else messages)
        call_kwargs = dict(self.plan.extra[kind] if call_kwargs is None else call_kwargs)
        if self.config.temperature > 0:
            # Samples differ by rollout and are reproducible where the provider honours `seed`
            # (LiteLLM drops it for providers that do not take it).
            call_kwargs["seed"] = self.config.seed * 1_000_003 + job.rollout
        keep_text = kind == "comparison"  # a half answered is kept for a rerun (see the module doc)
        # The call's id in the journal: a kept reply is found again by the exact prompt it answered (a
        # comparison's two orders share one key); a request asks one prompt, so its key names it.
        call = (stable_hash({"teacher": self.teacher.name, "messages": messages, "kwargs": call_kwargs}, n=24)
                if keep_text else job.key)
        est = sum(len(m["content"]) for m in messages) // 4 + (self.config.max_tokens or reply_tokens)
        bad = 0
        while True:
            # A re-ask in a batch is a request of its own (its own custom_id): the reply it re-asks is
            # kept too, so a later run that collects the re-ask finds both.
            cid = f"{call}~{bad}" if bad and self.broker is not None else call
            if self.broker is not None and cid in self.broker.waiting:
                raise Deferred  # asked again in a batch still running: not its older reply
            saved = self.replies.pop(cid, None) if bad == 0 or self.broker is not None else None
            if saved is not None:
                text = saved["text"]
                spend.add(prompt=saved["prompt_tokens"], completion=saved["completion_tokens"], cost=saved["cost"],
                          latency=0.0, cached=saved.get("cached_tokens") or 0,
                          cache_write=saved.get("cache_write_tokens") or 0, saved=saved.get("saved"))
            elif self.broker is not None:
                try:
                    self.broker.route(key=job.key, call=cid, messages=wire, call_kwargs=call_kwargs,
                                      reply_tokens=self.config.max_tokens or reply_tokens)
                except CallFailed as e:
                    if e.cause in ("auth", "config"):  # a failed item is no outage: no circuit breaker
                        self._failed(e)
                    raise _Rejected(f"{e.cause}: {e.message}", cause=e.cause, attempts=max(1, spend.attempts)) from None
            else:
                text = await self._call(job, wire, call_kwargs, call, est, spend, keep_text)
            try:
                if not text:
                    raise AdapterParseError(adapter_name=type(self.plan.adapter).__name__,
                                            signature=self.plan.signature[kind], lm_response=str(text),
                                            message="The LM returned an empty reply.")
                return validate(self.plan.adapter.parse(self.plan.signature[kind], text))
            except (AdapterParseError, ValidationError, ValueError, TypeError) as e:
                bad += 1
                if bad > self.config.parse_retries:
                    what = ("invalid reply" if isinstance(e, (ValidationError, InvalidReply, InvalidQueries))
                            else "unparseable reply")
                    raise _Rejected(f"{what}: {_short(e)}", cause="reply", raw=text,
                                    attempts=spend.attempts) from None

    async def _call(self, job: Job | WindowJob | QueryJob, messages: list[dict[str, Any]], call_kwargs: dict[str, Any], call: str,
                    est: int, spend: _Spend, keep_text: bool) -> str | None:
        async def attempt() -> Any:
            if self.fatal is not None:
                raise CallFailed("the run stopped before this request was answered", cause="aborted",
                                 attempts=spend.attempts)
            await self.limiter.acquire(est)
            spend.attempts += 1
            n = self.journal.send(key=job.key, call=call)
            t0 = time.monotonic()
            try:
                async with self.slots:
                    self.progress.calls += 1
                    resp = await self.teacher.acomplete(messages, **call_kwargs)
            except asyncio.CancelledError:
                raise  # cut off in flight (Ctrl-C): it may be billed, so the journal leaves it open
            except ProviderUsageError as e:
                # A usage that cannot be true: nothing of the reply is kept, and the run stops with the
                # provider's bug named (exit 2), rather than pricing every later call from such counts.
                self.journal.fail(n)
                if self.fatal is None:
                    self.fatal = e
                raise CallFailed(e.message, cause="aborted", attempts=spend.attempts) from None
            except Exception:
                self.journal.fail(n)
                raise
            self.journal.reply(n, prompt_tokens=resp.prompt_tokens, completion_tokens=resp.completion_tokens,
                               cost=resp.cost, text=resp.text if keep_text else None,
                               cached_tokens=getattr(resp, "cached_tokens", 0),
                               cache_write_tokens=getattr(resp, "cache_write_tokens", 0),
                               saved=getattr(resp, "saved", None))
            return resp, time.monotonic() - t0

        def on_retry(_retry: int, _msg: str) -> None:
            self.progress.retries += 1

        try:
            resp, latency = await self.policy.acall(attempt, on_retry=on_retry)
        except CallFailed as e:
            self._failed(e)
            raise _Rejected(f"{e.cause}: {e.message}", cause=e.cause, attempts=spend.attempts) from None
        self.consecutive_failures = 0
        cached, written = getattr(resp, "cached_tokens", 0), getattr(resp, "cache_write_tokens", 0)
        saved = getattr(resp, "saved", None)
        spend.add(prompt=resp.prompt_tokens, completion=resp.completion_tokens, cost=resp.cost, latency=latency,
                  cached=cached, cache_write=written, saved=saved)
        self.limiter.correct(est, resp.prompt_tokens + resp.completion_tokens)
        self.progress.usage = self.progress.usage + Usage(
            prompt_tokens=resp.prompt_tokens, completion_tokens=resp.completion_tokens,
            total_tokens=resp.prompt_tokens + resp.completion_tokens, cached_tokens=cached,
            cache_write_tokens=written)
        if saved is not None:
            self.progress.saved += saved
        if resp.cost is None:
            self.costs_known = False
        else:
            self.progress.cost = (self.progress.cost or 0.0) + resp.cost
        return resp.text

    def _failed(self, e: CallFailed) -> None:
        """Stop the run on a failure no other request can get past (a bad key, an unknown model) or
        when the breaker trips (the teacher is down)."""
        if self.fatal is not None or e.cause == "aborted":
            return
        if e.cause in ("auth", "config"):
            self.fatal = TeacherError(f"the teacher {self.teacher.name!r} refused the request: {e.message}",
                                      hint=e.hint)
        elif e.cause == "transport":
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.breaker:
                self.fatal = TeacherError(
                    f"{self.consecutive_failures} requests in a row failed after {self.policy.max_retries} "
                    f"retries each; last error: {e.message}",
                    hint="the teacher looks down or overloaded: check it, lower --concurrency or set "
                         "--rpm/--tpm, then rerun the same command to resume (failed requests are asked again)",
                )

    # -- requests
    async def run_job(self, job: Job | WindowJob | QueryJob) -> Any:
        """Ask one request and write its record or reject; returns which."""
        spend = _Spend()
        self.progress.in_flight += 1
        out: Any
        try:
            handler = {"direct": self._direct, "comparison": self._comparison, "listwise": self._listwise,
                       "queries": self._queries}[job.kind]
            out = await handler(job, spend)
        except Deferred:
            out = DEFERRED
            self.progress.deferred += 1
        except _Rejected as r:
            out = Reject(
                kind=job.kind, key=job.key, reason=r.reason, cause=r.cause, attempts=max(1, r.attempts),
                inputs=job.reject_inputs(), raw=r.raw, teacher=self.teacher.name,
                program_hash=self.programs[job.kind].program_hash)
            self.rejects.write(out)
            self.progress.rejected += 1
            if r.cause not in FINAL_CAUSES:
                self.unanswered += 1
        else:
            self.files[job.kind].write(out)
            self.progress.done += 1
        finally:
            self.progress.in_flight -= 1
        if self.on_progress is not None:
            self.on_progress(self.progress)
        return out

    async def run_chain(self, chain: Chain) -> None:
        """One query's windows, one after the other (each sees the winners of the one below); its
        final ranking goes to rankings.jsonl when the last is done. A window that got no answer
        (a retryable reject) or a stop leaves the query where it is, for the next run."""
        while not chain.finished:
            if self.fatal is not None or self.stop:
                return
            if self.over_budget():
                self.stop = "stopped_budget"
                return
            job = chain.job()
            out = await self.run_job(job)
            if out is DEFERRED or (isinstance(out, Reject) and out.cause not in FINAL_CAUSES):
                return  # the next window depends on this one: one round of windows per batch
            chain.advance(job, out if isinstance(out, ListwiseRecord) else None)
        if not chain.written and self.rankings is not None:
            prog = self.programs["listwise"]
            self.rankings.write(chain.ranking_record(program=prog.name, prompt_hash=prog.prompt_hash))
            chain.written = True

    def _provenance(self, job: Job | WindowJob | QueryJob, spend: _Spend) -> Provenance:
        prog = self.programs[job.kind]
        return Provenance(
            teacher=self.teacher.name, program=prog.name, program_hash=prog.program_hash,
            prompt_hash=prog.prompt_hash, rollout_id=job.rollout, usage=spend.usage,
            cost=spend.cost if self.costs_known else None,
            cache_saved=(round(spend.saved, 10) if spend.saved is not None and self.costs_known
                         and (spend.usage.cached_tokens or spend.usage.cache_write_tokens) else None),
            latency_s=round(spend.latency, 4),
            r2r_synth_version=__version__)

    async def _direct(self, job: Job, spend: _Spend) -> DirectRecord:
        q = job.cand.query

        def validate(f: dict[str, Any]) -> DirectRecord:
            return DirectRecord(
                key=job.key, query=q, document=job.doc, reasoning=f["reasoning"], relevance=f["relevance"],
                score=f["score"], first_stage_rank=job.rank, gold=job.cand.qrels.get(job.doc.docid),
                provenance=_PLACEHOLDER)

        rec = await self.ask(job, {"query": q.text, "document": job.doc.full_text()}, validate, spend)
        return rec.model_copy(update={"provenance": self._provenance(job, spend)})

    async def _listwise(self, job: WindowJob, spend: _Spend) -> ListwiseRecord:
        n = len(job.docs)
        kwargs = window_response_format(self.plan.extra["listwise"], n)
        if self.config.max_tokens is None and getattr(self.teacher, "embedded", False):
            kwargs = {**kwargs, "max_tokens": EMBEDDED_LISTWISE_TOKENS_PER_PASSAGE * n}

        def validate(f: dict[str, Any]) -> ListwiseRecord:
            return window_record(job, f["ranked_passages"], repair=self.config.repair, provenance=_PLACEHOLDER)

        rec = await self.ask(job, job.signature_inputs(), validate, spend,
                             reply_tokens=LISTWISE_TOKENS_PER_PASSAGE * n, call_kwargs=kwargs)
        return rec.model_copy(update={"provenance": self._provenance(job, spend)})

    async def _queries(self, job: QueryJob, spend: _Spend) -> QueriesRecord:
        kwargs = queries_response_format(self.plan.extra["queries"], job.count)
        if self.config.max_tokens is None and getattr(self.teacher, "embedded", False):
            kwargs = {**kwargs, "max_tokens": EMBEDDED_TOKENS_PER_QUERY * job.count}

        def validate(f: dict[str, Any]) -> QueriesRecord:
            return job.record(f["queries"], provenance=_PLACEHOLDER)

        rec = await self.ask(job, job.signature_inputs(), validate, spend, reply_tokens=TOKENS_PER_QUERY * job.count,
                             call_kwargs=kwargs)
        return rec.model_copy(update={"provenance": self._provenance(job, spend)})

    async def _comparison(self, job: Job, spend: _Spend) -> ComparisonRecord:
        q, a, b = job.cand.query, job.doc, job.doc_b
        assert b is not None

        def answer(f: dict[str, Any]) -> ComparisonAnswer:
            return ComparisonAnswer(reasoning=f["reasoning"], preferred=f["preferred"], confidence=f["confidence"])

        # Both orders at once: the two calls are in flight together and the key is written only
        # when both are back; a half that came back is kept in the journal for the next run.
        ab, ba = await asyncio.gather(
            self.ask(job, {"query": q.text, "document_a": a.full_text(), "document_b": b.full_text()}, answer, spend),
            self.ask(job, {"query": q.text, "document_a": b.full_text(), "document_b": a.full_text()}, answer, spend),
            return_exceptions=True,
        )
        failures = [r for r in (ab, ba) if isinstance(r, BaseException)]
        if failures:
            # A failure that is not the teacher's answer wins: the pair is asked again next run; then a
            # half still waiting for its batch (the pair is decided when both are in).
            retryable = [f for f in failures if isinstance(f, _Rejected) and f.cause != "reply"]
            waiting = [f for f in failures if isinstance(f, Deferred)]
            raise (retryable or waiting or failures)[0]
        swapped = ba.model_copy(update={"preferred": "B" if ba.preferred == "A" else "A"})
        # A gold pair carries the grades it was chosen on (an unjudged candidate of positive-only qrels: 0).
        gold_a, gold_b = (gold_grades(job.cand, [a, b]) if job.strategy == "gold"
                          else (job.cand.qrels.get(a.docid), job.cand.qrels.get(b.docid)))
        try:
            return ComparisonRecord(
                key=job.key, query=q, doc_a=a, doc_b=b, reasoning=ab.reasoning, preferred=ab.preferred,
                confidence=ab.confidence, swapped=swapped, gold_a=gold_a, gold_b=gold_b, pair_strategy=job.strategy,
                provenance=self._provenance(job, spend))
        except ValidationError as e:
            raise _Rejected(f"invalid record: {_short(e)}", cause="reply") from None

    # -- the session
    def over_budget(self) -> bool:
        cap = self.config.max_cost
        if cap is None or self.broker is not None:
            return False  # a batch's spend is decided when it is submitted (see generate.batch_api)
        spent = self.spent_before + (self.progress.cost or 0.0)
        n = self.progress.finished
        per_request = (self.progress.cost or 0.0) / n if n else 2 * self.est_call_cost
        # Do not start what the requests in flight (at the cost per request so far) would push over the cap.
        return spent + per_request * (self.progress.in_flight + 1) > cap

    async def run(self, jobs: list[Job | Chain]) -> None:
        """Ask every job (a request, or a query's listwise windows: a `Chain`) with `concurrency`
        workers, until done, a stop, the budget or a fatal failure."""
        if getattr(self.teacher, "cache_marking", False) and self.broker is None and not self.over_budget():
            try:
                jobs = await self._warm_cache(jobs)
            except BaseException:
                await self.teacher.aclose()
                raise
        it: Iterator[Job | Chain] = iter(jobs)

        async def worker() -> None:
            for job in it:
                if self.fatal is not None or self.stop:
                    return
                if self.over_budget():
                    self.stop = "stopped_budget"
                    return
                await (self.run_chain(job) if isinstance(job, Chain) else self.run_job(job))

        n_workers = min(self.concurrency, max(1, len(jobs)))
        try:
            await asyncio.gather(*(worker() for _ in range(n_workers)))
        finally:
            await self.teacher.aclose()

    async def _warm_cache(self, jobs: list[Job | Chain]) -> list[Job | Chain]:
        """Ask the first request of each kind before the rest, where the provider caches what is
        marked (Anthropic): its reply writes the static prefix to the cache once, and every request
        after it reads that prefix, instead of the first `concurrency` requests each writing it (a
        write is billed above the input rate). Jobs are in query order, so a query's requests then
        go out together while the cache lives. Listwise chains are not held back (a chain is a whole
        query's windows)."""
        first: dict[str, Job] = {}
        for job in jobs:
            if isinstance(job, Job) and job.kind not in first:
                first[job.kind] = job
        if not first or len(jobs) <= len(first):
            return jobs
        await asyncio.gather(*(self.run_job(j) for j in first.values()))
        held = {id(j) for j in first.values()}
        return [j for j in jobs if id(j) not in held]

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.rejects.close()
        if self.rankings is not None:
            self.rankings.close()


#: What `run_job` returns for a request that waits for a batch (nothing was written).
DEFERRED = object()

_PLACEHOLDER = Provenance(teacher="-", program="-", program_hash="-", prompt_hash="-")


def _short(e: BaseException) -> str:
    if isinstance(e, ValidationError):
        return describe_validation(e)
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]
