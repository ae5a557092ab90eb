"""The engine: candidates -> a run directory of validated teacher reasoning.

`generate(config)` reads the candidates (`io.candidates.load_candidates`: every input line is
validated before anything is written), chooses what to ask (`pairs`), and asks the teacher
asynchronously:

- **Content-addressed, resumable.** Each request has a key (`schemas.request_key`: inputs + program
  hash + teacher + rollout). Keys already in `direct.jsonl` / `comparison.jsonl` / `rejects.jsonl`
  are skipped, so a rerun of the same command resumes a killed run and never bills a finished
  request twice. A rejected key counts as done unless `retry_rejects`; a request that failed only
  on transport (429/5xx/timeouts after all retries) is retried by the next run automatically.
- **Crash-safe.** Records are appended one flushed line at a time as they complete.
- **Validated.** Every reply is parsed by the program's DSPy adapter against the signature and
  validated into its pydantic record; a reply that fails (after `parse_retries` more asks) goes to
  `rejects.jsonl` with the reason and the raw text. Nothing is dropped.
- **Polite.** `concurrency` requests in flight, `rpm`/`tpm` pacing, exponential backoff with full
  jitter on 429/5xx/timeouts, a circuit breaker when the teacher is down, `max_cost` (stop cleanly:
  status `stopped_budget`, then `BudgetExceeded`, exit code 3; rerun with a larger budget to go on).
- **Accounted.** `manifest.json` (a `schemas.Manifest`) holds the resolved config (no secrets),
  counts per kind equal to the files' line counts, token usage, cost (None when the teacher is not
  in LiteLLM's cost map), versions, timing and status; usage and cost add up over resumed sessions.

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
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from r2r_synth import __version__
from r2r_synth.config import GenerateConfig, scrub
from r2r_synth.errors import BudgetExceeded, ConfigError, InputError, TeacherError
from r2r_synth.io.jsonl import (
    JsonlAppender,
    describe_validation,
    iter_json_lines,
    truncate_torn_tail,
    write_jsonl_atomic,
)
from r2r_synth.pairs import (
    PairStrategy,
    check_pairs_possible,
    in_shard,
    parse_shard,
    select_documents,
    select_pairs,
)
from r2r_synth.schemas import (
    MANIFEST_FILE,
    RECORD_FILES,
    REJECTS_FILE,
    Candidates,
    ComparisonAnswer,
    ComparisonRecord,
    Counts,
    DirectRecord,
    Document,
    Manifest,
    Provenance,
    Reject,
    Usage,
    package_versions,
    request_key,
    utcnow,
)

logger = logging.getLogger(__name__)

KINDS = ("direct", "comparison")
CONFIG_FILE = "config.json"
TRANSIENT = "transient: "  # reason prefix of rejects a later run retries by itself


# --------------------------------------------------------------------------- jobs


@dataclass
class Job:
    """One request key: a direct judgment, or a comparison (asked in both orders)."""

    kind: str
    key: str
    rollout: int
    cand: Candidates
    doc: Document
    rank: int | None = None
    doc_b: Document | None = None
    strategy: str | None = None

    def inputs(self) -> dict[str, Any]:
        """What identifies the request (goes into the key and into a reject)."""
        if self.kind == "direct":
            return {"qid": self.cand.query.qid, "query": self.cand.query.text,
                    "docid": self.doc.docid, "document": self.doc.full_text()}
        assert self.doc_b is not None
        return {"qid": self.cand.query.qid, "query": self.cand.query.text,
                "docid_a": self.doc.docid, "document_a": self.doc.full_text(),
                "docid_b": self.doc_b.docid, "document_b": self.doc_b.full_text()}

    def reject_inputs(self) -> dict[str, Any]:
        if self.kind == "direct":
            return {"qid": self.cand.query.qid, "docid": self.doc.docid, "rollout": self.rollout}
        return {"qid": self.cand.query.qid, "docid_a": self.doc.docid,
                "docid_b": self.doc_b.docid if self.doc_b else None, "rollout": self.rollout}


def build_jobs(candidates: list[Candidates], *, config: GenerateConfig, program_hashes: dict[str, str],
               teacher: str) -> list[Job]:
    """Every request of the run, in a deterministic order (query by query)."""
    jobs: list[Job] = []
    for cand in candidates:
        qid, qtext = cand.query.qid, cand.query.text
        for r in range(config.rollouts):
            if config.direct:
                for rank, doc in select_documents(cand, depth=config.depth):
                    inputs = {"qid": qid, "query": qtext, "docid": doc.docid, "document": doc.full_text()}
                    key = request_key(kind="direct", inputs=inputs, program_hash=program_hashes["direct"],
                                      teacher=teacher, rollout_id=r)
                    jobs.append(Job("direct", key, r, cand, doc, rank=rank))
            for a, b in select_pairs(cand, strategy=config.pairs, depth=config.depth,
                                     max_pairs=config.max_pairs_per_query):
                inputs = {"qid": qid, "query": qtext, "docid_a": a.docid, "document_a": a.full_text(),
                          "docid_b": b.docid, "document_b": b.full_text()}
                key = request_key(kind="comparison", inputs=inputs, program_hash=program_hashes["comparison"],
                                  teacher=teacher, rollout_id=r)
                jobs.append(Job("comparison", key, r, cand, a, doc_b=b, strategy=str(config.pairs)))
    return jobs


# --------------------------------------------------------------------------- progress & results


@dataclass
class Progress:
    """What the CLI's progress bar shows; passed to `on_progress` after every finished request."""

    total: int
    skipped: int = 0
    done: int = 0
    rejected: int = 0
    in_flight: int = 0
    calls: int = 0
    retries: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: float | None = None
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

    @property
    def eta(self) -> float | None:
        remaining = self.total - self.skipped - self.finished
        return remaining / self.rate if self.rate > 0 else None


@dataclass
class DryRunEstimate:
    """What a run would ask, without asking: requests, LM calls, tokens and (if priced) cost."""

    requests: dict[str, int]
    skipped_done: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    completion_tokens_assumed_per_call: int
    cost: float | None
    teacher: str


@dataclass
class GenerateResult:
    run_dir: Path | None
    manifest: Manifest | None = None
    progress: Progress | None = None
    estimate: DryRunEstimate | None = None


# --------------------------------------------------------------------------- pacing


class RateLimiter:
    """Requests-per-minute and tokens-per-minute pacing (a leaky bucket: starts are spaced so that
    no minute exceeds either limit; token estimates are corrected once the usage is known)."""

    def __init__(self, *, rpm: int | None, tpm: int | None):
        self.rpm, self.tpm = rpm, tpm
        self._next = 0.0

    @property
    def active(self) -> bool:
        return bool(self.rpm or self.tpm)

    async def acquire(self, tokens: int) -> None:
        if not self.active:
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
    def __init__(self, reason: str, *, raw: str | None = None, attempts: int = 1):
        super().__init__(reason)
        self.reason, self.raw, self.attempts = reason, raw, attempts


def _status_of(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def _classify(exc: BaseException) -> str:
    """'retry' (429, 5xx, timeouts, connection errors), 'fatal' (the teacher cannot work: bad key,
    unknown model), or 'reject' (this request cannot work: e.g. too long for the context)."""
    import httpx
    import litellm

    if isinstance(exc, (litellm.Timeout, litellm.APIConnectionError, litellm.RateLimitError,
                        litellm.InternalServerError, litellm.ServiceUnavailableError, asyncio.TimeoutError,
                        httpx.TimeoutException, httpx.TransportError)):
        return "retry"
    status = _status_of(exc)
    if status in (408, 409, 425, 429) or (status is not None and status >= 500):
        return "retry"
    if isinstance(exc, (litellm.AuthenticationError, litellm.PermissionDeniedError, litellm.NotFoundError)) \
            or status in (401, 403, 404):
        return "fatal"
    if isinstance(exc, litellm.BadRequestError) or (status is not None and 400 <= status < 500):
        return "reject"
    return "fatal"


# --------------------------------------------------------------------------- the engine


class _Engine:
    def __init__(self, *, config: GenerateConfig, teacher: Any, programs: dict[str, Any], run_dir: Path,
                 progress: Progress, on_progress: Callable[[Progress], None] | None, spent_before: float | None,
                 backoff_base: float, backoff_cap: float):
        import dspy

        self.config = config
        self.teacher = teacher
        self.programs = programs
        self.progress = progress
        self.on_progress = on_progress
        self.adapter = teacher.adapter or dspy.ChatAdapter()
        self.limiter = RateLimiter(rpm=config.rpm, tpm=config.tpm)
        self.concurrency = resolved_concurrency(config, teacher)
        self.slots = asyncio.Semaphore(self.concurrency)
        if hasattr(teacher, "set_pool_size"):
            teacher.set_pool_size(self.concurrency)
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.spent_before = spent_before
        self.stop: str | None = None
        self.fatal: BaseException | None = None
        self.consecutive_transient = 0
        self.breaker = max(16, 2 * self.concurrency)
        self.costs_known = True
        self.files = {k: JsonlAppender(run_dir / RECORD_FILES[k]) for k in KINDS}
        self.rejects = JsonlAppender(run_dir / REJECTS_FILE)
        self.prefix: dict[str, list[dict[str, Any]]] = {}
        self.extra: dict[str, dict[str, Any]] = {}
        self.signature: dict[str, Any] = {}
        self.full_format: dict[str, bool] = {}
        for kind, prog in programs.items():
            self._plan(kind, prog)

    # -- prompt plan: DSPy's adapter formats the signature once; per request only the user turn.
    def _plan(self, kind: str, prog: Any) -> None:
        pred = prog.predictor
        sig, demos = pred.signature, list(pred.demos)
        self.signature[kind] = sig
        self.prefix[kind] = ([{"role": "system", "content": self.adapter.format_system_message(sig)}]
                             + self.adapter.format_demos(sig, demos))
        extra: dict[str, Any] = {}
        prepare = getattr(self.adapter, "_prepare_response_format", None)
        if callable(prepare):  # JSON-mode adapters (e.g. the embedded teacher's) choose a response_format
            prepare(self.teacher.lm, extra, sig)
        self.extra[kind] = extra
        # A custom adapter may format differently from system+demos+user: then use its format() whole.
        probe = {name: f"<{name}>" for name in sig.input_fields}
        self.full_format[kind] = self.adapter.format(sig, demos, probe) != self._compose(kind, probe)

    def _compose(self, kind: str, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        sig = self.signature[kind]
        content = self.adapter.format_user_message_content(sig, inputs, main_request=True)
        return [*self.prefix[kind], {"role": "user", "content": content}]

    def messages(self, kind: str, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        if self.full_format[kind]:
            pred = self.programs[kind].predictor
            return self.adapter.format(self.signature[kind], list(pred.demos), inputs)
        return self._compose(kind, inputs)

    # -- one LM call with retries; returns the parsed, validated answer
    async def ask(self, kind: str, inputs: dict[str, Any], validate: Callable[[dict[str, Any]], Any],
                  acc: dict[str, Any], rollout: int = 0) -> Any:
        from dspy.utils.exceptions import AdapterParseError

        messages = self.messages(kind, inputs)
        call_kwargs = dict(self.extra[kind])
        if self.config.temperature > 0:
            # Samples differ by rollout and are reproducible where the provider honours `seed`
            # (LiteLLM drops it for providers that do not take it).
            call_kwargs["seed"] = self.config.seed * 1_000_003 + rollout
        est = sum(len(m["content"]) for m in messages) // 4 + (self.config.max_tokens or 256)
        transient = 0
        bad = 0
        attempts = 0
        while True:
            if self.fatal is not None:
                raise _Rejected("run aborted", attempts=attempts)
            attempts += 1
            await self.limiter.acquire(est)
            t0 = time.monotonic()
            try:
                async with self.slots:
                    self.progress.calls += 1
                    resp = await self.teacher.acomplete(messages, **call_kwargs)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - LiteLLM maps every provider error onto its exception classes
                verdict = _classify(e)
                msg = scrub(f"{type(e).__name__}: {e}", [self.config.api_key or ""])[:500]
                if verdict == "fatal":
                    self.fatal = TeacherError(
                        f"the teacher {self.teacher.name!r} refused the request: {msg}",
                        hint="check --teacher, --api-base and the provider's API key environment variable",
                    )
                    raise _Rejected(msg, attempts=attempts) from None
                if verdict == "reject":
                    raise _Rejected(f"request refused: {msg}", attempts=attempts) from None
                transient += 1
                if transient > self.config.max_retries:
                    self.consecutive_transient += 1
                    if self.consecutive_transient >= self.breaker and self.fatal is None:
                        self.fatal = TeacherError(
                            f"{self.consecutive_transient} requests in a row failed after "
                            f"{self.config.max_retries} retries each; last error: {msg}",
                            hint="the teacher looks down or overloaded: check it, lower --concurrency or set "
                                 "--rpm/--tpm, then rerun the same command to resume",
                        )
                    raise _Rejected(f"{TRANSIENT}gave up after {attempts} attempts: {msg}",
                                    attempts=attempts) from None
                self.progress.retries += 1
                delay = random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** (transient - 1)))
                logger.debug("retry %d of %s in %.2fs after %s", transient, kind, delay, msg)
                await asyncio.sleep(delay)
                continue
            self.consecutive_transient = 0
            acc["latency"] = acc.get("latency", 0.0) + time.monotonic() - t0
            usage = Usage(prompt_tokens=resp.prompt_tokens, completion_tokens=resp.completion_tokens,
                          total_tokens=resp.prompt_tokens + resp.completion_tokens)
            acc["usage"] = acc.get("usage", Usage()) + usage
            self.limiter.correct(est, usage.total_tokens)
            if resp.cost is None:
                self.costs_known = False
            else:
                acc["cost"] = acc.get("cost", 0.0) + resp.cost
                self.progress.cost = (self.progress.cost or 0.0) + resp.cost
            self.progress.usage = self.progress.usage + usage
            text = resp.text
            try:
                if not text:
                    raise AdapterParseError(adapter_name=type(self.adapter).__name__, signature=self.signature[kind],
                                            lm_response=str(text), message="The LM returned an empty reply.")
                fields = self.adapter.parse(self.signature[kind], text)
                return validate(fields)
            except (AdapterParseError, ValidationError, ValueError, TypeError) as e:
                bad += 1
                if bad > self.config.parse_retries:
                    what = "invalid reply" if isinstance(e, ValidationError) else "unparseable reply"
                    raise _Rejected(f"{what}: {_short(e)}", raw=text, attempts=attempts) from None

    async def run_job(self, job: Job) -> None:
        acc: dict[str, Any] = {}
        self.progress.in_flight += 1
        try:
            if job.kind == "direct":
                record = await self._direct(job, acc)
            else:
                record = await self._comparison(job, acc)
        except _Rejected as r:
            self.rejects.write(Reject(
                kind=job.kind, key=job.key, reason=r.reason, attempts=r.attempts, inputs=job.reject_inputs(),
                raw=r.raw, teacher=self.teacher.name, program_hash=self.programs[job.kind].program_hash))
            self.progress.rejected += 1
        else:
            self.files[job.kind].write(record)
            self.progress.done += 1
        finally:
            self.progress.in_flight -= 1
        if self.on_progress is not None:
            self.on_progress(self.progress)

    def _provenance(self, job: Job, acc: dict[str, Any]) -> Provenance:
        prog = self.programs[job.kind]
        return Provenance(
            teacher=self.teacher.name, program=prog.name, program_hash=prog.program_hash,
            prompt_hash=prog.prompt_hash, rollout_id=job.rollout, usage=acc.get("usage"),
            cost=acc.get("cost") if self.costs_known else None, latency_s=round(acc.get("latency", 0.0), 4),
            r2r_synth_version=__version__)

    async def _direct(self, job: Job, acc: dict[str, Any]) -> DirectRecord:
        q = job.cand.query

        def validate(f: dict[str, Any]) -> DirectRecord:
            return DirectRecord(
                key=job.key, query=q, document=job.doc, reasoning=f["reasoning"], relevance=f["relevance"],
                score=f["score"], first_stage_rank=job.rank, gold=job.cand.qrels.get(job.doc.docid),
                provenance=_PLACEHOLDER)

        rec = await self.ask("direct", {"query": q.text, "document": job.doc.full_text()}, validate, acc, job.rollout)
        return rec.model_copy(update={"provenance": self._provenance(job, acc)})

    async def _comparison(self, job: Job, acc: dict[str, Any]) -> ComparisonRecord:
        q, a, b = job.cand.query, job.doc, job.doc_b
        assert b is not None

        def answer(f: dict[str, Any]) -> ComparisonAnswer:
            return ComparisonAnswer(reasoning=f["reasoning"], preferred=f["preferred"], confidence=f["confidence"])

        # Both orders at once: a comparison's two calls are in flight together, so a crash between
        # them is as unlikely as possible (its key is written only when both are back).
        ab, ba = await asyncio.gather(
            self.ask("comparison", {"query": q.text, "document_a": a.full_text(), "document_b": b.full_text()},
                     answer, acc, job.rollout),
            self.ask("comparison", {"query": q.text, "document_a": b.full_text(), "document_b": a.full_text()},
                     answer, acc, job.rollout),
            return_exceptions=True,
        )
        for res in (ab, ba):
            if isinstance(res, BaseException):
                raise res
        swapped = ba.model_copy(update={"preferred": "B" if ba.preferred == "A" else "A"})
        try:
            return ComparisonRecord(
                key=job.key, query=q, doc_a=a, doc_b=b, reasoning=ab.reasoning, preferred=ab.preferred,
                confidence=ab.confidence, swapped=swapped, gold_a=job.cand.qrels.get(a.docid),
                gold_b=job.cand.qrels.get(b.docid), pair_strategy=job.strategy,
                provenance=self._provenance(job, acc))
        except ValidationError as e:
            raise _Rejected(f"invalid record: {_short(e)}") from None

    def over_budget(self) -> bool:
        cap = self.config.max_cost
        if cap is None:
            return False
        spent = (self.spent_before or 0.0) + (self.progress.cost or 0.0)
        n = self.progress.finished
        avg = (self.progress.cost or 0.0) / n if n else 0.0
        # Do not start what the requests in flight (at the average cost so far) would push over the cap.
        return spent + avg * (self.progress.in_flight + 1) > cap

    async def run(self, jobs: list[Job]) -> None:
        it: Iterator[Job] = iter(jobs)

        async def worker() -> None:
            for job in it:
                if self.fatal is not None or self.stop:
                    return
                if self.over_budget():
                    self.stop = "stopped_budget"
                    return
                await self.run_job(job)

        n_workers = min(self.concurrency, max(1, len(jobs)))
        try:
            await asyncio.gather(*(worker() for _ in range(n_workers)))
        finally:
            await self.teacher.aclose()

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.rejects.close()


_PLACEHOLDER = Provenance(teacher="-", program="-", program_hash="-", prompt_hash="-")


def _short(e: BaseException) -> str:
    if isinstance(e, ValidationError):
        return describe_validation(e)
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


# --------------------------------------------------------------------------- run directory state


def _done_keys(run_dir: Path, *, retry_rejects: bool, wanted: set[str]) -> set[str]:
    """Keys already finished in `run_dir`. Rejects that will be asked again (transient ones, or all
    with `retry_rejects`) are removed from rejects.jsonl now, so every key ends up in exactly one
    file."""
    done: set[str] = set()
    for kind in KINDS:
        path = run_dir / RECORD_FILES[kind]
        if path.exists():
            truncate_torn_tail(path)
            for _, obj in iter_json_lines(path):
                done.add(obj["key"])
    rpath = run_dir / REJECTS_FILE
    if rpath.exists():
        truncate_torn_tail(rpath)
        keep: list[Reject] = []
        dropped = False
        for _, obj in iter_json_lines(rpath):
            rej = Reject.model_validate(obj)
            again = rej.key in wanted and rej.key not in done and (retry_rejects or rej.reason.startswith(TRANSIENT))
            if again or rej.key in done:  # a reject whose key later succeeded is stale
                dropped = True
                continue
            keep.append(rej)
            done.add(rej.key)
        if dropped:
            write_jsonl_atomic(rpath, keep)
    return done


def _line_counts(run_dir: Path) -> dict[str, Counts]:
    counts = {k: Counts() for k in KINDS}
    for kind in KINDS:
        p = run_dir / RECORD_FILES[kind]
        if p.exists():
            counts[kind].records = sum(1 for _ in iter_json_lines(p))
    p = run_dir / REJECTS_FILE
    if p.exists():
        for _, obj in iter_json_lines(p):
            k = obj.get("kind")
            if k in counts:
                counts[k].rejects += 1
    return counts


def _previous_manifest(run_dir: Path) -> Manifest | None:
    p = run_dir / MANIFEST_FILE
    if not p.exists():
        return None
    try:
        return Manifest.model_validate_json(p.read_text(encoding="utf-8"))
    except (ValidationError, ValueError):
        logger.warning("%s is not a valid manifest; starting its totals afresh", p)
        return None


def _write_manifest(run_dir: Path, m: Manifest) -> None:
    tmp = run_dir / (MANIFEST_FILE + ".tmp")
    tmp.write_text(scrub(m.model_dump_json(indent=2)) + "\n", encoding="utf-8")
    tmp.replace(run_dir / MANIFEST_FILE)


# --------------------------------------------------------------------------- entry points


EMBEDDED_CONCURRENCY = 2  # llama.cpp's server decodes one request at a time: one queued keeps it busy
DEFAULT_CONCURRENCY = 16


def resolved_concurrency(config: GenerateConfig, teacher: Any) -> int:
    """`--concurrency`, or its default: 16 for a remote teacher, 2 for the embedded one."""
    if config.concurrency:
        return config.concurrency
    return EMBEDDED_CONCURRENCY if getattr(teacher, "embedded", False) else DEFAULT_CONCURRENCY


EMBEDDED_TIMEOUT_S = 600.0  # a local CPU model under load can take minutes; a timeout would only re-queue it
DEFAULT_TIMEOUT_S = 120.0


def resolved_timeout(config: GenerateConfig) -> float:
    """`--timeout`, or its default: 120 s for a remote teacher, 600 s for the embedded one."""
    if config.timeout:
        return config.timeout
    return EMBEDDED_TIMEOUT_S if config.teacher is None and config.router is None else DEFAULT_TIMEOUT_S


def _check_config(config: GenerateConfig) -> None:
    if config.rollouts > 1 and config.temperature == 0:
        raise ConfigError(
            f"--rollouts {config.rollouts} at --temperature 0 would ask the same question {config.rollouts} times",
            hint="set --temperature above 0 (e.g. 0.7) to sample different rollouts",
        )
    if config.depth < 1:
        raise ConfigError(f"--depth {config.depth}: need at least 1", hint="e.g. --depth 10")
    if not config.direct and PairStrategy(config.pairs) is PairStrategy.none:
        raise ConfigError("nothing to ask: --no-direct with --pairs none", hint="drop --no-direct or choose --pairs")


def load_inputs(config: GenerateConfig) -> list[Candidates]:
    """The candidates of this run (validated, limited, sharded). Raises InputError on a bad line."""
    from r2r_synth.io.candidates import load_candidates

    cands = load_candidates(config.input, qrels=config.qrels, limit=config.limit, depth=config.depth)
    shard = parse_shard(config.shard)
    return [c for c in cands if in_shard(c.query.qid, shard)]


def generate(
    config: GenerateConfig,
    *,
    candidates: list[Candidates] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    command: str = "",
    teacher: Any = None,
    backoff_base: float = 0.5,
    backoff_cap: float = 30.0,
) -> GenerateResult:
    """Run `config` (see the module docstring). `candidates` skips reading `config.input`; `teacher`
    (an opened `Teacher`) skips `open_teacher` (tests, benchmarks). Returns the run's manifest, or
    with `config.dry_run` an estimate. Raises InputError/ConfigError before writing anything,
    BudgetExceeded (exit 3) after a clean stop at `max_cost`, TeacherError when the teacher fails."""
    _check_config(config)
    shard = parse_shard(config.shard)
    if candidates is None:
        candidates = load_inputs(config)
    else:
        candidates = [c for c in candidates if in_shard(c.query.qid, shard)]
    check_pairs_possible(candidates, config.pairs)

    from r2r_synth.teacher.programs import load_program

    programs = {k: load_program(k, programs_dir=config.programs_dir) for k in KINDS}
    if teacher is not None:
        return _generate_with(config, candidates, programs, teacher, on_progress, command, backoff_base, backoff_cap)

    if config.dry_run and config.teacher is None and config.router is None:
        # Counting needs the embedded teacher's prompts (its adapter), not its server: do not start it.
        from r2r_synth.teacher.embedded import EMBEDDED_NAME, MODEL_ALIAS, EmbeddedJSONAdapter
        from r2r_synth.teacher.lm import make_teacher

        offline = make_teacher(f"openai/{MODEL_ALIAS}", name=EMBEDDED_NAME, adapter=EmbeddedJSONAdapter(),
                               embedded=True, transport="litellm")
        return _generate_with(config, candidates, programs, offline, on_progress, command, backoff_base, backoff_cap)

    from r2r_synth.teacher.lm import open_teacher
    from r2r_synth.teacher.policy import command_policy

    policy = command_policy(embedded=config.teacher is None and config.router is None, timeout=config.timeout,
                            max_retries=config.max_retries, api_key=config.api_key)
    with open_teacher(config.teacher, api_base=config.api_base, api_key=config.api_key,
                      temperature=config.temperature, max_tokens=config.max_tokens, router=config.router,
                      policy=policy, transport=config.transport) as t:
        return _generate_with(config, candidates, programs, t, on_progress, command, backoff_base, backoff_cap)


def _generate_with(config: GenerateConfig, candidates: list[Candidates], programs: dict[str, Any], teacher: Any,
                   on_progress: Callable[[Progress], None] | None, command: str, backoff_base: float,
                   backoff_cap: float) -> GenerateResult:
    hashes = {k: p.program_hash for k, p in programs.items()}
    jobs = build_jobs(candidates, config=config, program_hashes=hashes, teacher=teacher.name)
    run_dir = Path(config.out)
    if config.max_cost is not None:
        from r2r_synth.teacher.pricing import is_priced

        if not is_priced(teacher):
            raise ConfigError(
                f"--max-cost needs a teacher LiteLLM can price; {teacher.name!r} is not in its cost map",
                hint="drop --max-cost, or register the model's prices with litellm.register_model",
            )
    wanted = {j.key for j in jobs}
    if config.dry_run:
        done = _done_keys_readonly(run_dir) if run_dir.exists() else set()
        return GenerateResult(run_dir=None, estimate=_estimate(config, jobs, done, programs, teacher))

    run_dir.mkdir(parents=True, exist_ok=True)
    done = _done_keys(run_dir, retry_rejects=config.retry_rejects, wanted=wanted)
    todo = [j for j in jobs if j.key not in done]
    skipped = {k: sum(1 for j in jobs if j.kind == k and j.key in done) for k in KINDS}
    prev = _previous_manifest(run_dir)
    spent_before = prev.cost if prev else None
    (run_dir / CONFIG_FILE).write_text(scrub(_json(config.public_dict())) + "\n", encoding="utf-8")

    progress = Progress(total=len(jobs), skipped=sum(skipped.values()))
    started_at = utcnow()
    status = "complete"
    error: BaseException | None = None
    engine = _Engine(config=config, teacher=teacher, programs=programs, run_dir=run_dir, progress=progress,
                     on_progress=on_progress, spent_before=spent_before, backoff_base=backoff_base,
                     backoff_cap=backoff_cap)
    if on_progress is not None:
        on_progress(progress)
    try:
        asyncio.run(engine.run(todo))
        if engine.fatal is not None:
            status, error = "failed", engine.fatal
        elif engine.stop == "stopped_budget":
            status = "stopped_budget"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException as e:
        status, error = "failed", e
        raise
    finally:
        engine.close()
        manifest = _manifest(config, run_dir, teacher, programs, jobs, progress, prev, started_at, status, command,
                             engine.costs_known, skipped)
        _write_manifest(run_dir, manifest)
    if error is not None:
        raise error
    if status == "stopped_budget":
        raise BudgetExceeded(
            f"stopped at the budget: ${manifest.cost or 0:.4f} spent of --max-cost ${config.max_cost}; "
            f"{progress.finished} requests finished this session, "
            f"{len(todo) - progress.finished} not started",
            hint="rerun the same command with a larger --max-cost to resume where it stopped",
        )
    return GenerateResult(run_dir=run_dir, manifest=manifest, progress=progress)


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2, default=str)


def _manifest(config: GenerateConfig, run_dir: Path, teacher: Any, programs: dict[str, Any], jobs: list[Job],
              progress: Progress, prev: Manifest | None, started_at: Any, status: str, command: str,
              costs_known: bool, skipped: dict[str, int]) -> Manifest:
    counts = _line_counts(run_dir)
    for kind in KINDS:
        counts[kind].requested = sum(1 for j in jobs if j.kind == kind)
        counts[kind].skipped_done = skipped[kind]
    sessions = list((prev.extra.get("sessions") if prev else None) or [])
    wall = progress.elapsed
    session_cost = progress.cost if costs_known else None
    sessions.append({
        "started_at": started_at.isoformat(), "wall_s": round(wall, 3), "status": status,
        "requests": progress.finished, "records": progress.done, "rejects": progress.rejected,
        "skipped_done": sum(skipped.values()), "calls": progress.calls, "retries": progress.retries,
        "usage": progress.usage.model_dump(), "cost": session_cost,
    })
    usage = (prev.usage if prev else Usage()) + progress.usage
    prev_cost = prev.cost if prev else None
    if prev is not None and prev.cost is None and prev.usage.total_tokens > 0:
        cost = None  # an earlier session could not be priced: the total is unknown, not a guess
    elif session_cost is None and progress.usage.total_tokens > 0:
        cost = None
    else:
        cost = (prev_cost or 0.0) + (session_cost or 0.0)
    return Manifest(
        r2r_synth_version=__version__,
        command=scrub(command, [config.api_key or ""]),
        config=config.public_dict(),
        teacher=teacher.name,
        programs={k: p.program_hash for k, p in programs.items()},
        prompts={k: p.prompt_hash for k, p in programs.items()},
        counts=counts,
        usage=usage,
        cost=cost,
        versions=package_versions("dspy", "litellm", "pydantic"),
        started_at=(prev.started_at if prev else started_at),
        finished_at=utcnow(),
        wall_s=round(sum(s["wall_s"] for s in sessions), 3),
        status=status,  # type: ignore[arg-type]
        shard=config.shard,
        extra={"sessions": sessions, "teacher": teacher.public_dict(),
               "concurrency": resolved_concurrency(config, teacher),
               "optimized": {k: p.optimized for k, p in programs.items()}},
    )


def _done_keys_readonly(run_dir: Path) -> set[str]:
    done: set[str] = set()
    for name in [*RECORD_FILES.values(), REJECTS_FILE]:
        p = run_dir / name
        if p.exists():
            for _, obj in iter_json_lines(p, tolerate_torn_tail=True):
                if name != REJECTS_FILE or not str(obj.get("reason", "")).startswith(TRANSIENT):
                    done.add(obj["key"])
    return done


def _estimate(config: GenerateConfig, jobs: list[Job], done: set[str], programs: dict[str, Any],
              teacher: Any) -> DryRunEstimate:
    """Count requests and LM calls; count prompt tokens on a sample of the real prompts."""
    import dspy

    todo = [j for j in jobs if j.key not in done]
    adapter = teacher.adapter or dspy.ChatAdapter()
    per_call_completion = config.max_tokens or 200
    calls = sum(1 if j.kind == "direct" else 2 for j in todo)
    sample = todo[:: max(1, len(todo) // 64)][:64]
    tok = 0
    sampled_calls = 0
    for j in sample:
        pred = programs[j.kind].predictor
        ins = j.inputs()
        fields = ({"query": ins["query"], "document": ins["document"]} if j.kind == "direct" else
                  {"query": ins["query"], "document_a": ins["document_a"], "document_b": ins["document_b"]})
        msgs = adapter.format(pred.signature, list(pred.demos), fields)
        n = _count_tokens(teacher.model, msgs)
        mult = 1 if j.kind == "direct" else 2
        tok += n * mult
        sampled_calls += mult
    prompt_tokens = int(tok / sampled_calls * calls) if sampled_calls else 0
    completion_tokens = per_call_completion * calls
    cost = None
    from r2r_synth.teacher.pricing import price

    cost = price(teacher, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    requests = {k: sum(1 for j in todo if j.kind == k) for k in KINDS}
    return DryRunEstimate(requests=requests, skipped_done=len(jobs) - len(todo), calls=calls,
                          prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          completion_tokens_assumed_per_call=per_call_completion, cost=cost, teacher=teacher.name)


def _count_tokens(model: str | None, messages: list[dict[str, Any]]) -> int:
    try:
        import litellm

        return int(litellm.token_counter(model=model or "gpt-4o", messages=messages))
    except Exception:  # noqa: BLE001 - an unknown tokenizer: ~4 characters a token
        return sum(len(m["content"]) for m in messages) // 4


# --------------------------------------------------------------------------- merge


def merge_runs(out: Path | str, run_dirs: list[Path], *, command: str = "", force: bool = False) -> Manifest:
    """Merge run directories (e.g. the shards of one job) into `out`.

    A key found in several directories with the same answer is kept once (an overlap: the same
    shard run twice); with different answers it is a conflict and nothing is written. A reject
    whose key has a record elsewhere is dropped. The merged manifest sums usage and cost and lists
    its sources."""
    from r2r_synth.schemas import RECORD_KINDS

    out = Path(out)
    if out.exists() and any((out / f).exists() for f in [*RECORD_FILES.values(), REJECTS_FILE]) and not force:
        raise InputError(f"{out} already holds records", hint="choose a new output directory or pass --force")
    sources = [Path(d) for d in run_dirs]
    if out.resolve() in {d.resolve() for d in sources}:
        raise InputError(f"{out} is also one of the inputs", hint="merge into a new directory")
    manifests: list[tuple[Path, Manifest]] = []
    for d in sources:
        m = _previous_manifest(d)
        if m is None:
            raise InputError(f"{d}: no valid {MANIFEST_FILE}; not a run directory written by `generate`",
                             hint="pass run directories written by `r2r-synth generate`")
        manifests.append((d, m))
    merged: dict[str, dict[str, Any]] = {k: {} for k in RECORD_FILES}
    origin: dict[str, Path] = {}
    overlaps = 0
    for d in sources:
        for kind, fname in RECORD_FILES.items():
            p = d / fname
            if not p.exists():
                continue
            model = RECORD_KINDS[kind]
            for line, obj in iter_json_lines(p, tolerate_torn_tail=True):
                try:
                    rec = model.model_validate(obj)
                except ValidationError as e:
                    raise InputError(f"{p}:{line}: not a valid {model.__name__} record: {_short(e)}",
                                     hint="fix or remove that line") from None
                key = obj["key"]
                if key in merged[kind]:
                    old = merged[kind][key]
                    if old.model_dump(exclude={"provenance"}) != rec.model_dump(exclude={"provenance"}):
                        raise InputError(
                            f"conflicting {kind} records for key {key}: {origin[key]} and {p}:{line} disagree",
                            hint="these run directories answered the same request differently (another teacher "
                                 "setting or sampling); merge only shards of one job",
                        )
                    overlaps += 1
                    continue
                merged[kind][key] = rec
                origin[key] = p
    rejects: dict[str, Reject] = {}
    for d in sources:
        p = d / REJECTS_FILE
        if p.exists():
            for _, obj in iter_json_lines(p, tolerate_torn_tail=True):
                rej = Reject.model_validate(obj)
                if rej.key in origin or rej.key in rejects:
                    continue
                rejects[rej.key] = rej
    out.mkdir(parents=True, exist_ok=True)
    for kind, fname in RECORD_FILES.items():
        if merged[kind] or kind in KINDS:
            write_jsonl_atomic(out / fname, merged[kind].values())
    write_jsonl_atomic(out / REJECTS_FILE, rejects.values())
    counts = _line_counts(out)
    for kind in KINDS:
        counts[kind].requested = sum(m.counts.get(kind, Counts()).requested for _, m in manifests)
    usage = Usage()
    for _, m in manifests:
        usage = usage + m.usage
    costs = [m.cost for _, m in manifests]
    teachers = sorted({m.teacher for _, m in manifests})
    statuses = [m.status for _, m in manifests]
    status = next((s for s in ("failed", "interrupted", "stopped_budget") if s in statuses), "complete")
    first = manifests[0][1]
    manifest = Manifest(
        r2r_synth_version=__version__, command=scrub(command), config=first.config,
        teacher=teachers[0] if len(teachers) == 1 else "mixed:" + ",".join(teachers),
        programs=first.programs, prompts=first.prompts, counts=counts, usage=usage,
        cost=None if any(c is None for c in costs) else sum(costs),  # type: ignore[arg-type]
        versions=package_versions("dspy", "litellm", "pydantic"), started_at=min(m.started_at for _, m in manifests), finished_at=utcnow(),
        wall_s=sum(m.wall_s or 0.0 for _, m in manifests), status=status,  # type: ignore[arg-type]
        shard=None,
        extra={"merged_from": [{"dir": str(d), "shard": m.shard, "status": m.status, "teacher": m.teacher,
                                "programs": m.programs} for d, m in manifests], "overlapping_keys": overlaps},
    )
    _write_manifest(out, manifest)
    return manifest


__all__ = [
    "DryRunEstimate",
    "GenerateResult",
    "Progress",
    "RateLimiter",
    "build_jobs",
    "generate",
    "load_inputs",
    "merge_runs",
]
