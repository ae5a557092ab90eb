"""`generate --batch`: a provider's batch API through LiteLLM's files and batches functions
(`create_file`, `create_batch`, `retrieve_batch`, `list_batches`, `file_content`), each call under the
teacher's call policy (retries with backoff on 429/5xx/timeouts; a bad key stops the run).

**Submitting** (after the engine ran, `finish`): the deferred calls, cut to `--max-cost` (each at its
estimate: its prompt tokens and its full reply allowance at batch prices, on top of what the journal
holds and what outstanding batches are estimated at), split at the provider's limits (OpenAI: 50,000
requests or 200 MB a file; `--batch-size` lower), each file uploaded and turned into a batch. Each id
goes into `batches.jsonl` the moment it exists: ``upload`` (the file and its custom_ids), ``creating``
(before the create call), ``batch`` (its id). A session killed between ``creating`` and ``batch`` is
resolved by the next run, which looks the batch up (`list_batches`, by input file or by the
``r2r_synth_upload`` metadata tag) before it creates one; a create retried by the policy looks first
too. So a crash never submits the same requests twice.

**Collecting** (before the engine ran, `collect`): every outstanding batch is retrieved (its state and
counts are reported); a finished one's output and error files are downloaded and each item journaled
(a reply at batch prices, or a failure: the request is rejected as transport and asked again by the
next run; an item a batch never ran, e.g. expired, likewise). A batch that failed as a whole (its
input was refused) ends the session with exit 1 and the provider's errors.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable
from typing import Any, get_args

from r2r_synth.errors import ConfigError, TeacherError
from r2r_synth.generate.batch import BATCH_ENDPOINT, TERMINAL, Broker, Call, Outcome, outcome
from r2r_synth.rundir import Journal
from r2r_synth.rundir.batches import BatchState, Upload, new_id
from r2r_synth.teacher.policy import CallFailed

logger = logging.getLogger(__name__)

MB = 1024 * 1024
#: (requests, bytes) a batch input file may hold. OpenAI: 50,000 requests or 200 MB; Azure OpenAI:
#: 100,000 requests, 200 MB. Other providers get OpenAI's, the smaller.
LIMITS = {"openai": (50_000, 200 * MB), "azure": (100_000, 200 * MB)}
DEFAULT_LIMITS = LIMITS["openai"]
#: Pages of `list_batches` (100 each, newest first) searched for a batch whose create was cut off.
FIND_PAGES = 20


def _providers(fn: Callable[..., Any]) -> set[str]:
    """The `custom_llm_provider` values an installed LiteLLM function takes (its Literal)."""
    ann = inspect.signature(fn).parameters["custom_llm_provider"].annotation
    args: set[str] = set()
    stack = [ann]
    while stack:
        a = stack.pop()
        for x in get_args(a):
            (args.add(x) if isinstance(x, str) else stack.append(x))
    return args


def batch_providers() -> tuple[set[str], set[str]]:
    """(providers whose files can be uploaded, batches created, retrieved and downloaded; those whose
    batches can also be listed), as the installed LiteLLM declares them."""
    import litellm

    can = (_providers(litellm.create_file) & _providers(litellm.create_batch) & _providers(litellm.retrieve_batch))
    return can, can & _providers(litellm.list_batches)


def check_provider(teacher: Any) -> str:
    """The teacher's LiteLLM provider when its batch API is supported; else a ConfigError (exit 2)
    whose fix names --export-batch."""
    import litellm

    try:
        _, provider, _, _ = litellm.get_llm_provider(teacher.model, api_base=teacher.completion_kwargs.get("api_base"))
    except Exception as e:  # noqa: BLE001 - make_teacher checked it already; this is belt and braces
        raise ConfigError(f"LiteLLM cannot route {teacher.model!r}: {e}") from None
    supported, _ = batch_providers()
    if provider not in supported:
        raise ConfigError(
            f"--batch: the installed LiteLLM has no batch API for provider {provider!r} (teacher {teacher.name!r}); "
            f"it has one for {', '.join(sorted(supported))}",
            hint="run without --batch, or write the requests with --export-batch FILE, run them with any OpenAI-"
                 "batch runner (vLLM: python -m vllm.entrypoints.openai.run_batch) and read the results back "
                 "with --import-batch")
    return provider


class ProviderBatches(Broker):
    """The broker of `generate --batch` (see the module docstring)."""

    mode = "batch"

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self.provider = check_provider(self.teacher)
        self.listable = self.provider in batch_providers()[1]
        kwargs = self.teacher.completion_kwargs
        self.api = {"custom_llm_provider": self.provider,
                    **{k: kwargs[k] for k in ("api_base", "api_key") if kwargs.get(k)}}
        self.policy = self.teacher.policy
        cap_n, cap_bytes = LIMITS.get(self.provider, DEFAULT_LIMITS)
        self.max_requests = min(cap_n, self.config.batch_size or cap_n)
        self.max_bytes = cap_bytes
        self.outstanding_cost = 0.0  # estimates of the batches still running after `collect`
        self.in_flight: list[dict[str, Any]] = []  # each running batch's state, for the summary
        self.submitted: list[dict[str, Any]] = []
        self.not_submitted = 0  # calls left out by --max-cost
        self.log = None

    # ------------------------------------------------------------------ LiteLLM, under the policy

    def _api(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return self.policy.call(fn)
        except CallFailed as e:
            raise TeacherError(f"{what} ({self.provider} batch API): {e.message}", hint=e.hint) from None

    def _find(self, up: Upload) -> Any | None:
        """The provider's batch made from upload `up` (by input file or metadata tag), or None."""
        import litellm

        if not self.listable:
            return None
        after = None
        for _ in range(FIND_PAGES):
            page = self._api("listing batches", lambda a=after: litellm.list_batches(after=a, limit=100, **self.api))
            data = list(getattr(page, "data", None) or [])
            for b in data:
                if b.input_file_id == up.file_id or (b.metadata or {}).get("r2r_synth_upload") == up.upload:
                    return b
            if not data or not getattr(page, "has_more", False):
                return None
            after = data[-1].id
        return None

    def _create(self, up: Upload, *, resume: bool) -> None:
        """Turn upload `up` into a batch, unless one exists already (see the module docstring)."""
        import litellm

        if resume:
            found = self._find(up)
            if found is not None:
                self.log.batch(upload=up.upload, batch_id=found.id, status=found.status)
                up.batch_id = found.id
                return
            if not self.listable:
                logger.warning("upload %s (file %s) may have become a batch in a session that was killed; LiteLLM "
                               "cannot list %s batches, so it is submitted again: cancel the older batch in the "
                               "provider's console if there is one", up.upload, up.file_id, self.provider)
        if not up.creating:
            self.log.creating(upload=up.upload, file_id=up.file_id)
            up.creating = True
        tries = 0

        def attempt() -> Any:
            nonlocal tries
            tries += 1
            if tries > 1:  # the last create may have succeeded with its reply lost: look before creating
                found = self._find(up)
                if found is not None:
                    return found
            return litellm.create_batch(completion_window="24h", endpoint=BATCH_ENDPOINT, input_file_id=up.file_id,
                                        metadata={"r2r_synth_upload": up.upload}, model=self.teacher.model,
                                        **self.api)

        b = self._api(f"creating the batch of file {up.file_id}", attempt)
        self.log.batch(upload=up.upload, batch_id=b.id, status=b.status)
        up.batch_id = b.id

    def _download(self, file_id: str | None) -> list[dict[str, Any]]:
        import litellm

        if not file_id:
            return []
        content = self._api(f"downloading file {file_id}",
                            lambda: litellm.file_content(file_id=file_id, **self.api))
        data = content.content if hasattr(content, "content") else bytes(content)
        out = []
        for n, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                logger.warning("file %s line %d is not JSON: its request is asked again by the next run", file_id, n)
        return out

    # ------------------------------------------------------------------ collect

    def collect(self, journal: Journal, *, batch_items: set[tuple[str, str]], done: set[str]) -> None:
        import litellm

        state: BatchState = self.run.batch_state()
        if not state.outstanding:
            return
        self.log = self.log or self.run.batch_log()
        for up in state.outstanding:
            if up.batch_id is None:
                self._create(up, resume=up.creating)
            b = self._api(f"retrieving batch {up.batch_id}",
                          lambda bid=up.batch_id: litellm.retrieve_batch(batch_id=bid, model=self.teacher.model,
                                                                         **self.api))
            rc = getattr(b, "request_counts", None)
            done_n, failed_n = (getattr(rc, "completed", 0) or 0, getattr(rc, "failed", 0) or 0) if rc else (0, 0)
            self.say(f"batch {b.id} ({len(up.items)} requests): {b.status}, {done_n}/{len(up.items)} done, "
                     f"{failed_n} failed")
            if b.status not in TERMINAL:
                self.waiting.update(cid for cid, _ in up.items)
                self.outstanding_cost += up.est_cost or 0.0
                self.in_flight.append({"batch_id": b.id, "status": b.status, "requests": len(up.items),
                                       "completed": done_n, "failed": failed_n})
                continue
            self._collect(up, b, journal, batch_items=batch_items, done=done)

    def _collect(self, up: Upload, b: Any, journal: Journal, *, batch_items: set[tuple[str, str]],
                 done: set[str]) -> None:
        results: dict[str, Outcome] = {}
        for obj in self._download(getattr(b, "error_file_id", None)) + self._download(b.output_file_id):
            try:
                out = outcome(obj)
            except ValueError as e:
                logger.warning("batch %s: a result line without a usable result (%s)", b.id, e)
                continue
            if out.cid not in results or out.failure is None:  # an answer beats a failure of the same id
                results[out.cid] = out
        foreign = set(results) - {cid for cid, _ in up.items}
        if foreign:
            logger.warning("batch %s returned %d results for requests it was not given (e.g. %s); they are ignored",
                           b.id, len(foreign), min(foreign))
        ok = failed = 0
        for cid, key in up.items:
            out = results.get(cid) or Outcome(cid=cid, failure=CallFailed(
                f"the batch ended ({b.status}) before this request ran", cause="transport", attempts=1))
            ok, failed = (ok + 1, failed) if out.failure is None else (ok, failed + 1)
            if (up.upload, cid) in batch_items or key in done:
                continue  # journaled by a session that was killed before it wrote `collected`
            self.journal_result(journal, key=key, source=up.upload, out=out)
        if b.status == "failed":
            errors = getattr(b, "errors", None)
            detail = "; ".join(f"{getattr(e, 'code', '')}: {getattr(e, 'message', e)}"
                               for e in (getattr(errors, "data", None) or [])[:3]) or str(errors or "no detail")
            self.problems.append(f"batch {b.id} failed as a whole: {detail}")
        self.log.collected(upload=up.upload, batch_id=b.id, status=b.status, ok=ok, failed=failed)

    # ------------------------------------------------------------------ submit

    def finish(self, *, spent: float) -> None:
        import litellm

        calls = list(self.new.values())
        if not calls:
            return
        cap = self.config.max_cost
        if cap is not None:
            committed = spent + self.outstanding_cost
            groups: dict[str, list[Call]] = {}
            for c in calls:
                groups.setdefault(c.key, []).append(c)
            calls = []
            for group in groups.values():
                est = sum(self.estimate(c, count=True) for c in group)
                if committed + est > cap:
                    break
                committed += est
                calls += group
        self.log = self.log or self.run.batch_log()
        for part in split(calls, max_requests=self.max_requests, max_bytes=self.max_bytes):
            data = b"".join(c.encoded for c in part)
            uid = new_id()
            f = self._api(f"uploading a batch file of {len(part)} requests",
                          lambda d=data, u=uid: litellm.create_file(file=(f"r2r-synth-{u}.jsonl", d, "application/jsonl"),
                                                                    purpose="batch", **self.api))
            est = sum(self.estimate(c, count=cap is not None) for c in part) if self.prices else None
            self.log.upload(upload=uid, file_id=f.id, provider=self.provider, items=[(c.cid, c.key) for c in part],
                            size=len(data), est_cost=est)
            up = Upload(upload=uid, file_id=f.id, provider=self.provider, items=[(c.cid, c.key) for c in part],
                        size=len(data), est_cost=est)
            self._create(up, resume=False)
            for c in part:
                self.new.pop(c.cid)
                self.waiting.add(c.cid)
            self.submitted.append({"batch_id": up.batch_id, "file_id": f.id, "requests": len(part), "bytes": len(data)})
            self.say(f"submitted batch {up.batch_id}: {len(part)} requests ({len(data) / MB:.1f} MB)")
        self.not_submitted = len(self.new)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None


def split(calls: list[Call], *, max_requests: int, max_bytes: int) -> list[list[Call]]:
    """`calls` in order, cut into files of at most `max_requests` lines and `max_bytes` bytes."""
    parts: list[list[Call]] = []
    cur: list[Call] = []
    size = 0
    for c in calls:
        n = len(c.encoded)
        if cur and (len(cur) >= max_requests or size + n > max_bytes):
            parts.append(cur)
            cur, size = [], 0
        cur.append(c)
        size += n
    if cur:
        parts.append(cur)
    return parts
