"""Batches: `generate --batch` (a provider's batch API, through LiteLLM), `--export-batch FILE` and
`--import-batch FILE` (an OpenAI batch file, for vLLM's `run_batch` or any compatible runner).

**One engine, a different transport.** The engine formats every call with the program's DSPy
adapter and parses and validates every reply exactly as online; only the door changes. With a
broker, `Engine._call` asks the broker instead of the teacher, and the broker answers in one of
three ways:

- the call's result was collected (downloaded from a finished batch, or read from an imported
  file): it was journaled with its usage and its cost at batch prices before the engine started, so
  the engine finds it among the journal's kept replies like any paid answer (`Engine.ask`);
- the call's item failed or expired: a transport failure, so a retryable reject that the next run
  asks again;
- otherwise the call waits (`Deferred`): already in an outstanding batch, or recorded now for
  submission or export. A deferred request writes nothing this session.

The id of a call in a batch (`custom_id`) is its id in the journal: the request key, or for a
comparison half the hash of its messages; a re-ask after an unusable reply adds ``~n``. The body of
each line is exactly the request the online path sends (`request_body`). A listwise query's next
window depends on this one, so its chain stops at its first deferred window: one round of windows
per batch.

`ProviderBatches` (in `r2r_synth.generate.batch_api`) submits and collects through LiteLLM's files
and batches API; `ExportBatches` and `ImportBatches` (here) write and read batch files. Every
batch, export and import is recorded in the run's `batches.jsonl` (`r2r_synth.rundir.batches`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn

from r2r_synth.config import GenerateConfig
from r2r_synth.errors import ConfigError, InputError
from r2r_synth.rundir import Journal, RunDir, reject_key
from r2r_synth.rundir.batches import BatchState, new_id
from r2r_synth.schemas import Reject
from r2r_synth.teacher.policy import CallFailed, classify
from r2r_synth.teacher.pricing import batch_prices

BATCH_ENDPOINT = "/v1/chat/completions"
#: Batches of these statuses are over: their results are collected.
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


class Deferred(Exception):
    """A call whose answer waits for a batch: its request writes nothing this session."""


@dataclass
class Call:
    """One request line of a batch: `cid` (its custom_id), the request key it belongs to, the body."""

    cid: str
    key: str
    body: dict[str, Any]
    reply_tokens: int

    def line(self) -> str:
        return json.dumps({"custom_id": self.cid, "method": "POST", "url": BATCH_ENDPOINT, "body": self.body},
                          ensure_ascii=False, separators=(",", ":")) + "\n"

    @cached_property
    def encoded(self) -> bytes:
        return self.line().encode("utf-8")

    def prompt_tokens(self, *, count: bool) -> int:
        """The prompt's tokens: counted with LiteLLM's tokenizer when `count` (a budget), else ~4
        characters a token."""
        msgs = self.body["messages"]
        if count:
            from r2r_synth.generate.estimate import _count_tokens

            return _count_tokens(self.body.get("model"), msgs)
        return sum(len(str(m.get("content") or "")) for m in msgs) // 4


def wire_model(teacher: Any) -> str:
    """The model name the provider sees (LiteLLM's resolution of the teacher's model string)."""
    import litellm

    model = teacher.model or teacher.name
    try:
        return litellm.get_llm_provider(model, api_base=teacher.completion_kwargs.get("api_base"))[0]
    except Exception:  # noqa: BLE001 - make_teacher already checked that LiteLLM routes it
        return model


def request_body(model: str, teacher: Any, messages: list[dict[str, Any]], call_kwargs: dict[str, Any]) -> dict:
    """The chat-completion body the online path sends for this call: the wire model, the messages,
    the teacher's temperature and reply cap, and the call's own arguments (seed, response_format)."""
    gen = {k: v for k, v in teacher.completion_kwargs.items() if k in ("temperature", "max_tokens")}
    return {"model": model, "messages": messages, **{k: v for k, v in {**gen, **call_kwargs}.items() if v is not None}}


@dataclass
class Outcome:
    """A result line: the reply (text and usage), or why there is none (`failure`)."""

    cid: str
    text: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failure: CallFailed | None = None


def completion_outcome(cid: str, body: dict[str, Any]) -> Outcome:
    """A chat completion's body (a batch result line's, or an endpoint's reply under --ray) as an
    `Outcome`: the assistant text (None where the body has none) and the token usage."""
    try:
        text = body["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        text = None
    u = body.get("usage") or {}
    return Outcome(cid=cid, text=text, prompt_tokens=int(u.get("prompt_tokens") or 0),
                   completion_tokens=int(u.get("completion_tokens") or 0))


def outcome(obj: dict[str, Any]) -> Outcome:
    """An OpenAI batch output or error line (`custom_id`, `response: {status_code, body}`, `error`)
    as an `Outcome`. Raises ValueError when the line is not one."""
    from r2r_synth.teacher.transport import HTTPStatusError

    cid = obj.get("custom_id")
    if not isinstance(cid, str) or not cid:
        raise ValueError('no "custom_id"')
    resp, err = obj.get("response"), obj.get("error")
    if resp is None and err is None:
        raise ValueError('neither "response" nor "error"')
    status = resp.get("status_code") if isinstance(resp, dict) else None
    body = resp.get("body") if isinstance(resp, dict) else None
    if status == 200 and isinstance(body, dict) and not err:
        return completion_outcome(cid, body)
    detail = err if err else (body or {}).get("error") if isinstance(body, dict) else body
    if isinstance(detail, dict):
        msg = f"{detail.get('code') or detail.get('type') or 'error'}: {detail.get('message') or ''}".strip()
    else:
        msg = str(detail or f"status {status}")
    verdict = classify(HTTPStatusError(int(status), msg)) if isinstance(status, int) else "retry"
    cause = "transport" if verdict == "retry" else verdict
    what = f"the batch item failed (status {status}): {msg}" if status else f"the batch item failed: {msg}"
    return Outcome(cid=cid, failure=CallFailed(what[:500], cause=cause, attempts=1))  # type: ignore[arg-type]


class Broker:
    """What the engine asks in place of the teacher (see the module docstring). Subclasses collect
    results before the engine runs (`collect`) and submit or export what it deferred (`finish`)."""

    mode = ""

    def __init__(self, *, teacher: Any, config: GenerateConfig, run: RunDir, say: Callable[[str], None]):
        self.teacher, self.config, self.run, self.say = teacher, config, run, say
        self.model = wire_model(teacher)
        given = getattr(teacher, "prices", None)  # --price-in / --price-out: the user's prices hold for batches too
        self.prices = ((given.input, given.output) if given is not None else
                       None if getattr(teacher, "embedded", False) else batch_prices(teacher.model))
        self.failed: dict[str, CallFailed] = {}
        self.waiting: set[str] = set()  # custom_ids in outstanding batches
        self.new: dict[str, Call] = {}  # deferred this session, not yet submitted
        self.cost = 0.0  # of the results journaled this session (None-free: unpriced adds nothing)
        self.usage = (0, 0)
        self.problems: list[str] = []  # batches that failed as a whole (exit 1)

    def prepare(self, state: BatchState) -> None:
        """Checks that must pass before anything is written (the import file)."""

    def collect(self, journal: Journal, *, batch_items: set[tuple[str, str]], done: set[str]) -> None:
        """Journal the results that came in (before the engine reads the journal's kept replies)."""

    def finish(self, *, spent: float) -> None:
        """Submit or export the deferred calls (after the engine ran)."""

    def close(self) -> None:
        """Release what the broker holds open."""

    @property
    def pending(self) -> int:
        """Requests (calls) that wait for a batch after this session."""
        return len(self.waiting) + len(self.new)

    def route(self, *, key: str, call: str, messages: list[dict[str, Any]], call_kwargs: dict[str, Any],
              reply_tokens: int) -> NoReturn:
        """The engine's call: raise its failure when its item failed, else defer it (recorded for
        submission unless it is in an outstanding batch already)."""
        failure = self.failed.pop(call, None)
        if failure is not None:
            raise failure
        if call not in self.waiting and call not in self.new:
            self.new[call] = Call(cid=call, key=key, body=request_body(self.model, self.teacher, messages, call_kwargs),
                                  reply_tokens=reply_tokens)
        raise Deferred

    def journal_result(self, journal: Journal, *, key: str, source: str, out: Outcome) -> None:
        """Journal one collected result under its batch `source`: a reply (with its text, so the
        engine and every later run reuse it) or a failure (which this session rejects)."""
        n = journal.send(key=key, call=out.cid, batch=source)
        if out.failure is not None:
            journal.fail(n)
            self.failed[out.cid] = out.failure
            return
        cost = (None if self.prices is None
                else out.prompt_tokens * self.prices[0] + out.completion_tokens * self.prices[1])
        journal.reply(n, prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens, cost=cost,
                      text=out.text or "")
        self.cost += cost or 0.0
        self.usage = (self.usage[0] + out.prompt_tokens, self.usage[1] + out.completion_tokens)

    def estimate(self, call: Call, *, count: bool) -> float:
        """USD of one call at batch prices: its prompt tokens and its full reply allowance (0 unpriced)."""
        if self.prices is None:
            return 0.0
        return call.prompt_tokens(count=count) * self.prices[0] + call.reply_tokens * self.prices[1]


def check_batch_config(config: GenerateConfig) -> str | None:
    """The batch mode of `config` ("batch", "export", "import" or None); refuses combinations that
    cannot work (ConfigError, exit 2) before anything is read."""
    modes = [m for m, on in (("batch", config.batch), ("export", config.export_batch is not None),
                             ("import", config.import_batch is not None), ("ray", config.ray)) if on]
    if len(modes) > 1:
        flags = {"batch": "--batch", "export": "--export-batch", "import": "--import-batch", "ray": "--ray"}
        raise ConfigError(f"{' and '.join(flags[m] for m in modes)} cannot be given together",
                          hint="--batch submits to the provider; --export-batch writes a file for a runner and "
                               "--import-batch reads its results back; --ray asks through a Ray cluster: one per "
                               "command")
    mode = modes[0] if modes else None
    if config.batch_size is not None and mode not in ("batch", "export", "ray"):
        raise ConfigError("--batch-size applies to --batch, --export-batch and --ray only", hint="drop --batch-size")
    if config.batch_size is not None and config.batch_size < 1:
        raise ConfigError(f"--batch-size {config.batch_size}: need at least 1", hint="e.g. --batch-size 10000")
    ray_only = [f for f, v in (("--ray-address", config.ray_address), ("--replicas", config.replicas),
                               ("--tensor-parallel", config.tensor_parallel)) if v is not None]
    if ray_only and mode != "ray":
        raise ConfigError(f"{', '.join(ray_only)} appl{'ies' if len(ray_only) == 1 else 'y'} to --ray only",
                          hint="add --ray, or drop " + ", ".join(ray_only))
    if mode == "ray":
        from r2r_synth.generate.ray_cluster import check_ray_config

        check_ray_config(config)
        return mode
    if mode is None:
        return None
    if config.router is not None:
        raise ConfigError("batches go to one provider; a --router spreads requests over several",
                          hint="drop --router and give its model with --teacher, or use --export-batch and run "
                               "the file with vLLM's run_batch")
    if config.teacher is None:
        raise ConfigError("batches need --teacher: the embedded teacher has no batch API and its model name means "
                          "nothing to a runner", hint="give --teacher, e.g. hosted_vllm/Qwen/Qwen2.5-7B-Instruct "
                                                      "with --export-batch for vLLM's run_batch")
    if mode in ("export", "import") and config.max_cost is not None:
        raise ConfigError(f"--max-cost counts what a provider bills; --{mode}-batch bills nothing through r2r-synth",
                          hint="drop --max-cost")
    if mode == "import" and getattr(config, "dry_run", False):  # `queries` runs have no --dry-run
        raise ConfigError("--dry-run with --import-batch: an import asks nobody and costs nothing",
                          hint="drop --dry-run")
    if mode == "export":
        from r2r_synth.atomic import check_file_target

        check_file_target(Path(config.export_batch or ""), what="--export-batch")
    if mode == "import" and not Path(config.import_batch or "").is_file():
        raise InputError(f"--import-batch {config.import_batch}: no such file",
                         hint="give the results file the runner wrote")
    return mode


# --------------------------------------------------------------------------- batch files


class ExportBatches(Broker):
    """`--export-batch FILE`: every call still to ask (one round of listwise windows) as OpenAI batch
    JSONL, written whole and atomically, and recorded in batches.jsonl."""

    mode = "export"

    def finish(self, *, spent: float) -> None:
        from r2r_synth.atomic import atomic_open

        path = Path(self.config.export_batch or "")
        calls = list(self.new.values())
        with atomic_open(path) as fh:
            for c in calls:
                fh.write(c.line())
        log = self.run.batch_log()
        log.exported(export=new_id(), path=str(path), items=[(c.cid, c.key) for c in calls])
        log.close()
        self.exported = len(calls)
        self.say(f"wrote {len(calls)} requests to {path}: run them (e.g. python -m vllm.entrypoints.openai.run_batch "
                 f"-i {path} -o results.jsonl --model {self.model}), then rerun with --import-batch results.jsonl")


class ImportBatches(Broker):
    """`--import-batch FILE`: a results file back into the run (see `prepare` for what each line
    becomes)."""

    mode = "import"

    def prepare(self, state: BatchState) -> None:
        """Read and classify every line before anything is written: a result of an exported request
        (the first line of a custom_id counts; a repeat is counted once), a custom_id this run never
        exported, or a malformed line (a truncated last line among them). A file with no usable
        result is an InputError (exit 2) and nothing is written."""
        from r2r_synth.io.text import iter_lines

        path = Path(self.config.import_batch or "")
        known = state.exported_calls()
        if not known:
            raise InputError(f"--import-batch {path}: {self.run.path} has exported no batch file, so no result "
                             "can be matched to a request", hint="run the same command with --export-batch FILE "
                                                                 "first, run that file, then import its results")
        self.results: list[tuple[str, str, Outcome]] = []  # (key, export id, outcome)
        self.bad: list[Reject] = []
        self.counts = {"lines": 0, "results": 0, "failed_items": 0, "duplicates": 0, "already_recorded": 0,
                       "unknown_custom_id": 0, "malformed": 0}
        seen: set[str] = set()
        first_bad = None
        for n, line in iter_lines(path):
            if not line.strip():
                continue
            self.counts["lines"] += 1
            try:
                obj = json.loads(line)
                out = outcome(obj if isinstance(obj, dict) else {})
            except ValueError as e:
                torn = "" if line.endswith("\n") else " (the last line, cut short)"
                why = f"{path}:{n}: not a batch result line{torn}: {str(e)[:200]}"
                self._bad(why, raw=line, n=n, cid=None, path=path)
                self.counts["malformed"] += 1
                first_bad = first_bad or why
                continue
            if out.cid not in known:
                why = f"{path}:{n}: custom_id {out.cid!r} is not a request this run exported"
                self._bad(why, raw=line, n=n, cid=out.cid, path=path)
                self.counts["unknown_custom_id"] += 1
                first_bad = first_bad or why
                continue
            if out.cid in seen:
                self.counts["duplicates"] += 1
                continue
            seen.add(out.cid)
            key, export = known[out.cid]
            self.results.append((key, export, out))
        if not self.results:
            raise InputError(f"--import-batch {path}: no line is a result of a request this run exported"
                             + (f" (first: {first_bad})" if first_bad else " (the file is empty)"),
                             hint="give the output file of the runner (custom_id, response), not the exported "
                                  "requests; nothing was written")

    def _bad(self, why: str, *, raw: str, n: int, cid: str | None, path: Path) -> None:
        self.bad.append(Reject(kind="input", key=reject_key("import-batch", cid or raw.rstrip("\n")), reason=why,
                               cause="input", inputs={"file": str(path), "line": n, "custom_id": cid},
                               raw=raw.rstrip("\n")[:2000], teacher=self.teacher.name))

    def collect(self, journal: Journal, *, batch_items: set[tuple[str, str]], done: set[str]) -> None:
        for key, export, out in self.results:
            if (export, out.cid) in batch_items or key in done:
                self.counts["already_recorded"] += 1  # imported before, or the request is done
                continue
            self.journal_result(journal, key=key, source=export, out=out)
            self.counts["failed_items" if out.failure else "results"] += 1
        existing = {r.key for r in self.run.rejects()}
        fresh = {r.key: r for r in self.bad if r.key not in existing}
        if fresh:
            with self.run.appender("reject") as rejects:
                for r in fresh.values():
                    rejects.write(r)
        log = self.run.batch_log()
        log.imported(path=str(self.config.import_batch), counts=self.counts)
        log.close()
        c = self.counts
        self.say(f"imported {self.config.import_batch}: {c['lines']} lines, {c['results']} results, "
                 f"{c['failed_items']} failed items, {c['duplicates']} duplicates counted once, "
                 f"{c['already_recorded']} already recorded, {c['unknown_custom_id']} unknown custom_ids and "
                 f"{c['malformed']} malformed lines (rejects with their line numbers)")


def make_broker(mode: str, *, teacher: Any, config: GenerateConfig, run: RunDir,
                say: Callable[[str], None]) -> Broker:
    """The broker of a batch mode (see `check_batch_config`)."""
    if mode == "batch":
        from r2r_synth.generate.batch_api import ProviderBatches

        return ProviderBatches(teacher=teacher, config=config, run=run, say=say)
    cls = ExportBatches if mode == "export" else ImportBatches
    return cls(teacher=teacher, config=config, run=run, say=say)
