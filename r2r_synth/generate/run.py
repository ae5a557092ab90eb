"""`generate(config)`: candidates -> a run directory of validated teacher reasoning.

The order of a session: check the config and `--out` (nothing asked or written on a bad one), read
and validate every input line (a shard that holds no query is an error), refuse a rerun that would
change the job of the run already in `--out` (unless `--extend`), open the teacher (LiteLLM checks the
model string) and run its preflight (key and endpoint, `r2r_synth.teacher.preflight`), take the run
directory's lock, apply the resume rule, snapshot the programs, then let the engine ask what is not
done. A session in which no request became a record fails. The manifest is written at the end of the session (and on a clean stop, an interrupt or a
failure) from the files and the journal, so a killed session loses nothing but its requests in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r2r_synth import __version__
from r2r_synth.config import GenerateConfig, scrub
from r2r_synth.errors import (
    BatchPending,
    BudgetExceeded,
    ConfigError,
    IncompleteRun,
    InputError,
    TeacherError,
)
from r2r_synth.generate.batch import Broker, check_batch_config, make_broker
from r2r_synth.generate.engine import Engine, Progress, resolved_concurrency
from r2r_synth.generate.estimate import DryRunEstimate, estimate
from r2r_synth.generate.jobs import CutReport, Job, build_jobs, check_config, cut_documents, load_inputs
from r2r_synth.generate.windows import (
    Chain,
    build_chains,
    check_listwise_candidates,
    listwise_summary,
    replay,
)
from r2r_synth.pairs import PairStrategy, check_pairs_possible, gold_pairs_summary, in_shard, parse_shard
from r2r_synth.rundir import ProgramSnapshot, RunDir
from r2r_synth.schemas import Candidates, Manifest, package_versions, utcnow

logger = logging.getLogger(__name__)

KINDS = ("direct", "comparison", "listwise")


@dataclass
class GenerateResult:
    run_dir: Path | None
    manifest: Manifest | None = None
    progress: Progress | None = None
    estimate: DryRunEstimate | None = None
    batch: dict[str, Any] | None = None  # --batch / --export-batch / --import-batch: what this session did


def generate(
    config: GenerateConfig,
    *,
    candidates: list[Candidates] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_status: Callable[[str], None] | None = None,
    command: str = "",
    teacher: Any = None,
    backoff_base: float = 0.5,
    backoff_cap: float = 30.0,
) -> GenerateResult:
    """Run `config` (see the module docstring). `candidates` skips reading `config.input`; `teacher`
    (an opened `Teacher`) skips `open_teacher` and its preflight (tests, benchmarks);
    `on_status(message)` hears each slow step before it starts (reading the input, starting the
    teacher, the preflight); `backoff_base`/`backoff_cap` are the policy's retry delays in seconds
    (tests shorten them). Returns the run's manifest, or with `config.dry_run` an estimate. Raises
    InputError/ConfigError before writing anything (a failed preflight too), BudgetExceeded (exit 3)
    after a clean stop at `max_cost`, TeacherError when the teacher fails or nothing succeeded."""
    say = on_status or logger.info
    check_config(config)
    mode = check_batch_config(config)
    run = RunDir(config.out).check_writable()
    if not config.dry_run:  # a dry run writes nothing
        run.check_run_or_empty(force=config.force)
    shard = parse_shard(config.shard)
    if candidates is None:
        say(f"reading {config.input}")
        candidates = load_inputs(config)
    else:
        candidates = [c for c in candidates if in_shard(c.query.qid, shard)]
    if not candidates:
        where = f"shard {config.shard} of " if config.shard else ""
        raise InputError(
            f"nothing to ask: {where}--input {config.input}" + (f" (--limit {config.limit})" if config.limit else "")
            + " holds no query",
            hint="use fewer shards or a larger --limit" if config.shard else "check --input",
        )
    check_same_job(config, run)
    check_pairs_possible(candidates, config.pairs, depth=config.depth, max_pairs=config.max_pairs_per_query)
    if config.listwise:
        check_listwise_candidates(candidates, config)
    candidates, cuts = cut_documents(candidates, config.max_doc_chars)

    from r2r_synth.teacher.pricing import command_line_prices
    from r2r_synth.teacher.programs import load_program

    prices = command_line_prices(price_in=config.price_in, price_out=config.price_out,
                                 price_cached_in=config.price_cached_in)
    programs = {k: load_program(k, programs_dir=config.programs_dir) for k in _program_kinds(config)}
    args = (config, candidates, programs, cuts, on_progress, command, say)
    if teacher is not None:
        if prices is not None:
            teacher.prices = prices
        return _generate_with(*args, teacher)
    if config.dry_run and config.teacher is None and config.router is None:
        # Counting needs the embedded teacher's prompts (its adapter), not its server: do not start it.
        from r2r_synth.teacher.embedded import EMBEDDED_NAME, MODEL_ALIAS, EmbeddedJSONAdapter
        from r2r_synth.teacher.lm import make_teacher

        offline = make_teacher(f"openai/{MODEL_ALIAS}", name=EMBEDDED_NAME, adapter=EmbeddedJSONAdapter(),
                               embedded=True, transport="litellm", prices=prices,
                               prompt_cache=False if config.prompt_cache is False else None)
        if config.prompt_cache:
            from r2r_synth.teacher.caching import check_prompt_cache

            check_prompt_cache(True, model=None, teacher=EMBEDDED_NAME, embedded=True)
        return _generate_with(*args, offline)

    from r2r_synth.teacher.lm import open_teacher
    from r2r_synth.teacher.policy import command_policy
    from r2r_synth.teacher.preflight import preflight

    embedded = config.teacher is None and config.router is None
    policy = command_policy(embedded=embedded, timeout=config.timeout,
                            max_retries=config.max_retries, api_key=config.api_key, backoff_base=backoff_base,
                            backoff_cap=backoff_cap)
    say("starting the embedded teacher (SmolLM2-135M under llama.cpp)" if embedded
        else f"opening the teacher {config.teacher or config.router}" + ("" if config.dry_run else
                                                                          ": checking its key and endpoint"))
    api_base = config.api_base
    if mode == "ray":  # several endpoints under --ray: the first is the one checked here
        from r2r_synth.generate.ray_cluster import endpoints, hosted_model

        api_base = (endpoints(api_base) or [None])[0]
    with open_teacher(config.teacher, api_base=api_base, api_key=config.api_key,
                      temperature=config.temperature, max_tokens=config.max_tokens, router=config.router,
                      policy=policy, transport=config.transport, prices=prices,
                      prompt_cache=config.prompt_cache) as t:
        if mode == "batch":  # an unsupported provider is refused before its endpoint is asked anything
            from r2r_synth.generate.batch_api import check_provider

            check_provider(t)
        hosted = mode == "ray" and hosted_model(config.teacher) is not None  # no endpoint: Ray starts vLLM
        if not config.dry_run and mode not in ("export", "import") and not hosted:  # a batch file reaches none
            say(f"preflight: {preflight(t).describe()}")
        return _generate_with(*args, t)


def _asked_kinds(config: GenerateConfig) -> list[str]:
    return [k for k, on in (("direct", config.direct), ("comparison", PairStrategy(config.pairs) is not
                                                         PairStrategy.none), ("listwise", config.listwise)) if on]


def _program_kinds(config: GenerateConfig) -> list[str]:
    """The programs a run loads (and its manifest counts): direct and comparison together whenever
    either is asked, as runs always have; listwise when asked."""
    asked = _asked_kinds(config)
    return [k for k in KINDS if k in asked or (k != "listwise" and {"direct", "comparison"} & set(asked))]


def _generate_with(config: GenerateConfig, candidates: list[Candidates], programs: dict[str, Any], cuts: CutReport,
                   on_progress: Callable[[Progress], None] | None, command: str, say: Callable[[str], None],
                   teacher: Any) -> GenerateResult:
    mode = check_batch_config(config)
    if mode == "batch":
        from r2r_synth.generate.batch_api import check_provider

        check_provider(teacher)
    hashes = {k: p.program_hash for k, p in programs.items()}
    jobs = build_jobs(candidates, config=config, program_hashes=hashes, teacher=teacher.name)
    chains, passages_cut = (build_chains(candidates, config=config, program_hash=hashes["listwise"],
                                         teacher=teacher.name) if config.listwise else ([], 0))
    run = RunDir(config.out)
    if config.max_cost is not None:
        from r2r_synth.teacher.pricing import is_priced

        if not is_priced(teacher, batch=mode == "batch"):
            what = "at batch prices (input_cost_per_token_batches)" if mode == "batch" else "in its cost map"
            raise ConfigError(
                f"--max-cost needs a teacher LiteLLM can price; {teacher.name!r} is not priced {what}",
                hint="give the teacher's prices with --price-in and --price-out (USD per million tokens), "
                     "or drop --max-cost",
            )
    if config.dry_run:
        done = run.done_keys(prune=False) if run.exists() else set()
        if chains and run.exists():
            replay(chains, run, retry_rejects=config.retry_rejects)
        est = estimate(config, jobs, done, programs, teacher, chains=chains, batch=None if mode == "ray" else mode,
                       in_flight=run.batch_state().outstanding if run.exists() else [])
        if mode == "ray":
            from r2r_synth.generate.ray_runner import ray_plan

            est.batch = ray_plan(config, calls=est.calls - est.requests.get("listwise", 0)
                                 + sum(1 for c in chains if not c.finished),
                                 rounds=max((len(c.spans) - c.next for c in chains if not c.finished), default=1),
                                 cost=est.cost)
        return GenerateResult(run_dir=None, estimate=est)
    if mode != "batch" and run.exists():
        waiting = run.batch_state().outstanding
        if waiting:
            raise ConfigError(
                f"{sum(len(u.items) for u in waiting)} requests of {run.path} are in {len(waiting)} provider "
                "batch(es) not collected yet; asking them another way would pay for them twice",
                hint="rerun the command that submitted them, with --batch, to collect them first")

    command = scrub(command, [config.api_key or ""])
    session = None
    if mode == "ray":  # joined (or started) before the lock: an unreachable cluster writes nothing
        from r2r_synth.generate.ray_cluster import connect

        session = connect(config, teacher, say=say)
    try:
        with run.lock(command=command):
            if session is not None:
                from r2r_synth.generate.ray_runner import RayBroker

                broker: Broker | None = RayBroker(session=session, teacher=teacher, config=config, run=run, say=say)
            else:
                broker = make_broker(mode, teacher=teacher, config=config, run=run, say=say) if mode else None
            try:
                return _session(config, run, jobs, programs, cuts, on_progress, command, teacher, chains,
                                passages_cut, broker)
            finally:
                if broker is not None:
                    broker.close()
    finally:
        if session is not None:
            session.close()


def _session(config: GenerateConfig, run: RunDir, jobs: list[Job], programs: dict[str, Any], cuts: CutReport,
             on_progress: Callable[[Progress], None] | None, command: str, teacher: Any, chains: list[Chain],
             passages_cut: int, broker: Broker | None, *, kinds: list[str] | None = None) -> GenerateResult:
    """One session over `jobs` (and listwise `chains`) in the locked run directory. `kinds` are the
    programs whose snapshots the run keeps (default: the kinds `config` asks); `queries` runs pass
    their own jobs and config through here (one engine, one resume rule, one manifest)."""
    if broker is not None:
        broker.prepare(run.batch_state())  # an unusable import file is refused before anything is written
    final_before = ({r.key for r in run.rejects() if not r.retryable}
                    if broker is not None and config.retry_rejects else set())
    wanted = {j.key for j in jobs}
    if chains:  # resume: each query's order rebuilt from its finished windows, up to where it stopped
        wanted |= replay(chains, run, retry_rejects=config.retry_rejects)
    done = run.done_keys(wanted=wanted, retry_rejects=config.retry_rejects)
    todo: list[Job | Chain] = [j for j in jobs if j.key not in done]
    skipped = {k: sum(1 for j in jobs if j.kind == k and j.key in done) for k in programs}
    if chains:
        skipped["listwise"] = sum(c.next for c in chains)
        todo += [c for c in chains if not c.written]
    prev = run.read_manifest()
    if prev is not None and not run.journal_path.exists() and prev.usage.total_tokens:
        from r2r_synth.rundir import Journal

        # A run written before runs had a journal: its totals carry over as one "legacy" entry.
        legacy = Journal(run.journal_path)
        legacy.legacy(usage=prev.usage, cost=prev.cost, sessions=list(prev.extra.get("sessions") or []))
        legacy.close()
    journal = run.journal(command=command)
    if broker is None:
        replies_for = {j.key for j in todo if isinstance(j, Job) and j.kind == "comparison"}
    else:
        # Batch results are journaled replies: every request still to do may have one (a reply a
        # --retry-rejects run asks again is not reused).
        try:
            broker.collect(journal, batch_items=run.journal_totals().batch_items, done=done)
        except BaseException:
            journal.end(status="failed", wall_s=0.0, retries=0)
            journal.close()
            raise
        replies_for = ({j.key for j in todo if isinstance(j, Job)} | wanted) - done - final_before
    before = run.journal_totals(replies_for=replies_for)
    run.write_config(resolved_config(config, teacher))
    for kind in (_asked_kinds(config) if kinds is None else kinds):
        p = programs[kind]
        run.snapshot_program(ProgramSnapshot(name=kind, program_hash=p.program_hash, prompt_hash=p.prompt_hash,
                                             instructions=p.predictor.signature.instructions,
                                             state=p.module.dump_state()))

    progress = Progress(total=len(jobs) + sum(len(c.spans) for c in chains), skipped=sum(skipped.values()))
    if broker is not None:  # what the collected results used and cost (at batch prices)
        progress.usage = progress.usage.model_copy(update={
            "prompt_tokens": broker.usage[0], "completion_tokens": broker.usage[1],
            "total_tokens": sum(broker.usage)})
        progress.cost = broker.cost if broker.prices is not None else None
    asked = progress.total - progress.skipped  # requests this session would ask (listwise: windows)
    started_at = utcnow()
    status = "complete"
    error: BaseException | None = None
    est_call_cost = before.cost / before.calls if before.cost and before.calls else 0.0
    engine = Engine(config=config, teacher=teacher, programs=programs, run=run, journal=journal, progress=progress,
                    on_progress=on_progress, spent_before=before.spent,
                    replies=before.replies, est_call_cost=est_call_cost, broker=broker)
    if on_progress is not None:
        on_progress(progress)
    try:
        asyncio.run(engine.run(todo))
        if broker is not None and broker.mode == "ray":  # rounds on Ray, each parsed by the engine
            from r2r_synth.generate.ray_runner import ray_rounds

            ray_rounds(engine, broker, todo, spent=before.spent, on_progress=on_progress)
        elif broker is not None and engine.fatal is None:
            broker.finish(spent=before.spent)
        if engine.fatal is not None:
            status, error = "failed", engine.fatal
        elif broker is not None and broker.problems:
            status, error = "failed", TeacherError("; ".join(broker.problems), hint="fix what the provider names, "
                                                   "then rerun the same command: it submits those requests again")
        elif broker is not None and _batch_status(broker):
            status = _batch_status(broker)
        elif engine.stop == "stopped_budget":
            status = "stopped_budget"
        elif engine.unanswered and engine.unanswered == progress.finished and broker is None:
            status, error = "failed", TeacherError(
                f"every one of the {engine.unanswered} requests of this session failed without an answer "
                "(see rejects.jsonl)", hint="check the teacher, --api-base and the API key, then rerun the same "
                "command: it asks them again")
        elif engine.unanswered:
            status = "incomplete"
        elif asked and progress.finished == asked and not progress.done:
            status, error = "failed", TeacherError(
                f"none of the {asked} requests of this session became a record: every reply was rejected "
                "(see the reasons in rejects.jsonl)", hint="the teacher may not follow the output format: try a "
                "stronger teacher, a larger --max-tokens or --parse-retries, then rerun with --retry-rejects")
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException as e:
        status, error = "failed", e
        raise
    finally:
        engine.close()
        journal.end(status=status, wall_s=progress.elapsed, retries=progress.retries)
        journal.close()
        manifest = _manifest(config, run, teacher, programs, jobs, prev, started_at, status, command, skipped,
                             cuts)
        if isinstance(config, GenerateConfig) and PairStrategy(config.pairs) is PairStrategy.gold:
            manifest.extra["gold_pairs"] = gold_pairs_summary(
                list({j.cand.query.qid: j.cand for j in jobs}.values()), depth=config.depth)
        if chains:
            manifest.counts["listwise"].requested = sum(len(c.spans) for c in chains)
            manifest.extra["listwise"] = listwise_summary(config, chains, run, passages_cut=passages_cut)
        if broker is not None:
            manifest.extra["batches"] = batch_summary(broker, run)
        run.write_manifest(manifest)
    if error is not None:
        raise error
    batch = batch_summary(broker, run) if broker is not None else None
    if status == "pending" and broker is not None and broker.mode != "export":
        raise _pending(broker, progress, config)
    if status == "stopped_budget" and broker is not None and broker.mode != "ray":
        raise BudgetExceeded(
            f"--max-cost ${config.max_cost}: {broker.pending} requests were not submitted: ${manifest.cost or 0:.4f} "
            "is spent and what the batches in flight would cost at most leaves no room for them",
            hint="rerun the same command with a larger --max-cost to submit them")
    if status == "stopped_budget":
        raise BudgetExceeded(
            f"stopped at the budget: ${manifest.cost or 0:.4f} spent of --max-cost ${config.max_cost}; "
            f"{progress.finished} requests finished this session, "
            f"{asked - progress.finished} not started",
            hint="rerun the same command with a larger --max-cost to resume where it stopped",
        )
    if status == "incomplete":
        raise IncompleteRun(
            f"{engine.unanswered} of the {progress.finished} requests of this session got no answer (transport, "
            "key or configuration failures after their retries; see rejects.jsonl)",
            hint="rerun the same command: it asks them again and nothing else",
        )
    return GenerateResult(run_dir=run.path, manifest=manifest, progress=progress, batch=batch)


def _batch_status(broker: Broker) -> str | None:
    """The status a batch session ends with, when its batches decide it: `pending` while requests
    wait in a provider batch, in an exported file, or for an import that lacks them;
    `stopped_budget` when `--max-cost` left requests unsubmitted (or, with --ray, unasked). None: the
    usual rules."""
    if broker.mode == "ray":
        return "stopped_budget" if broker.new else None
    if broker.mode == "export":
        return "pending" if getattr(broker, "exported", 0) else None
    if broker.waiting or (broker.mode == "import" and broker.new):
        return "pending"
    return "stopped_budget" if broker.new else None


def batch_summary(broker: Broker, run: RunDir) -> dict[str, Any]:
    """What a batch session did, and every batch of the run with its state (the manifest's
    `extra.batches`, and what the CLI prints)."""
    out: dict[str, Any] = {"mode": broker.mode, "waiting": len(broker.waiting), "not_submitted": len(broker.new),
                           **run.batch_state().summary()}
    if hasattr(broker, "summary"):
        out["ray"] = broker.summary()
    for name in ("in_flight", "submitted", "counts", "exported"):
        if hasattr(broker, name):
            out["import" if name == "counts" else name] = getattr(broker, name)
    return out


def _pending(broker: Broker, progress: Progress, config: GenerateConfig) -> BatchPending:
    done = f"this session wrote {progress.done} records and {progress.rejected} rejects"
    if broker.mode == "import":
        return BatchPending(
            f"{len(broker.new)} requests have no result in {config.import_batch}; {done}",
            hint="write them with --export-batch FILE, run that file, then --import-batch its results (one round of "
                 "listwise windows per file)")
    batches = getattr(broker, "in_flight", []) + [{"status": "submitted", **b} for b in getattr(broker, "submitted", [])]
    states = ", ".join(f"{b['batch_id']} {b['status']}" for b in batches[:5]) + (" ..." if len(batches) > 5 else "")
    capped = (f"; {len(broker.new)} more were not submitted: --max-cost ${config.max_cost} leaves no room for them "
              "until the batches in flight are collected at their real cost" if broker.new else "")
    return BatchPending(
        f"{len(broker.waiting)} requests wait in {len(batches)} provider batch(es) ({states}); {done}{capped}",
        hint="rerun the same command later to collect them (nothing is submitted twice); a script can loop "
             "while the exit code is 5, e.g. every 10 minutes")


def _manifest(config: GenerateConfig, run: RunDir, teacher: Any, programs: dict[str, Any], jobs: list[Job],
              prev: Manifest | None, started_at: Any, status: str, command: str, skipped: dict[str, int],
              cuts: CutReport) -> Manifest:
    """The manifest from what the run directory holds: counts from the files, usage, cost and
    sessions from the journal (so a killed session's spend is in it)."""
    counts = run.line_counts(list(programs))
    for kind in programs:
        counts[kind].requested = sum(1 for j in jobs if j.kind == kind)
        counts[kind].skipped_done = skipped[kind]
    totals = run.journal_totals()
    sessions = totals.legacy_sessions + [s.as_dict() for s in totals.sessions]
    return Manifest(
        r2r_synth_version=__version__,
        command=command,
        config=resolved_config(config, teacher),
        teacher=teacher.name,
        programs={k: p.program_hash for k, p in programs.items()},
        prompts={k: p.prompt_hash for k, p in programs.items()},
        counts=counts,
        usage=totals.usage,
        cost=totals.cost,
        versions=package_versions("dspy", "litellm", "pydantic"),
        started_at=(prev.started_at if prev else started_at),
        finished_at=utcnow(),
        wall_s=round(sum(float(s.get("wall_s") or 0.0) for s in sessions), 3),
        status=status,  # type: ignore[arg-type]
        shard=getattr(config, "shard", None),  # a `queries` run has no shards
        extra={"sessions": sessions, "teacher": teacher.public_dict(),
               "concurrency": resolved_concurrency(config, teacher),
               "optimized": {k: p.optimized for k, p in programs.items()},
               "calls_in_flight_when_killed": totals.orphans,
               "documents_cut": cuts.as_dict(),
               "prompt_cache": prompt_cache_summary(totals.usage, saved=totals.saved, cost=totals.cost,
                                                    marked=bool(getattr(teacher, "cache_marking", False)))},
    )


def prompt_cache_summary(usage: Any, *, saved: float, cost: float | None, marked: bool) -> dict[str, Any]:
    """The manifest's `extra.prompt_cache`: input tokens served from the provider's cache, their
    share, what the cache saved (None where the run is unpriced) and whether requests were marked."""
    return {"marked": marked, "input_tokens": usage.prompt_tokens, "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens, "cached_share": round(usage.cached_share, 6),
            "saved": None if cost is None else round(saved, 8)}


def resolved_config(config: GenerateConfig, teacher: Any) -> dict[str, Any]:
    """`config` as the run used it (secrets masked): the defaults the teacher applied in place of the
    None of a flag not given (concurrency, timeout, retries, the reply cap, the transport)."""
    policy = getattr(teacher, "policy", None)
    kwargs = getattr(teacher, "completion_kwargs", None) or {}
    update: dict[str, Any] = {"concurrency": resolved_concurrency(config, teacher),
                              "transport": getattr(teacher, "transport", config.transport)}
    if policy is not None:
        update |= {"timeout": policy.timeout, "max_retries": policy.max_retries}
    if config.max_tokens is None and kwargs.get("max_tokens") is not None:
        update["max_tokens"] = kwargs["max_tokens"]
    out = config.model_copy(update=update).public_dict()
    if isinstance(config, GenerateConfig):  # `queries` reads a corpus, named in its own config
        from r2r_synth.io.candidates import describe_input

        # The split and the queries and qrels files the run read (a card quotes them).
        out["read"] = describe_input(config.input, qrels=config.qrels, split=config.split)
    return out


#: Flags whose change alters what a run asks (the questions per query, who answers them, which
#: queries): a rerun with another value would mix two jobs in one corpus. `--limit` is not among them:
#: a larger one adds queries asked the same way (a pilot grown into the full run).
JOB_FLAGS = {"teacher": "--teacher", "router": "--router", "depth": "--depth", "direct": "--direct",
             "pairs": "--pairs", "max_pairs_per_query": "--max-pairs-per-query", "rollouts": "--rollouts",
             "temperature": "--temperature", "max_doc_chars": "--max-doc-chars", "shard": "--shard",
             "listwise": "--listwise", "window": "--window", "stride": "--stride", "repair": "--repair",
             "max_passage_words": "--max-passage-words"}


def check_same_job(config: GenerateConfig, run: RunDir) -> None:
    """Refuse (ConfigError, exit 2) to rerun `run` with flags that change its job (`JOB_FLAGS`) unless
    `config.extend`: resuming takes the run's own settings, and anything else would silently extend it."""
    if config.extend or not run.exists():
        return
    prev = run.read_manifest()
    if prev is None:
        return
    was_split = (prev.config.get("read") or {}).get("split")
    if was_split is not None:
        from r2r_synth.io.candidates import describe_input

        split = describe_input(config.input, qrels=config.qrels, split=config.split)["split"]
        if split != was_split:  # another split's queries would join this one's in one corpus
            raise ConfigError(f"{run.path} holds a run of split {was_split!r}; this command reads split {split!r}, "
                              "which would mix two splits in one run (nothing was asked or written)",
                              hint=f"rerun with --split {was_split} to resume it, or choose another --out")
    new = config.public_dict()
    changed = [f for f in JOB_FLAGS if f in prev.config and prev.config[f] != new.get(f)]
    if not changed:
        return

    def shown(field: str, value: Any) -> str:
        if field in ("direct", "repair"):
            return f"--{field}" if value else f"--no-{field}"
        if field == "listwise":
            return "--listwise" if value else "no --listwise"
        if value is None:
            return "no --teacher (the embedded teacher)" if field == "teacher" else f"no {JOB_FLAGS[field]}"
        return f"{JOB_FLAGS[field]} {value}"

    was = ", ".join(shown(f, prev.config[f]) for f in changed)
    now = ", ".join(shown(f, new.get(f)) for f in changed)
    raise ConfigError(
        f"{run.path} holds a run asked with {was}; this command asks with {now}, which would mix two jobs in "
        "one run (nothing was asked or written)",
        hint=f"rerun with {was} to resume it, choose another --out, or pass --extend to add the new requests "
             "to this run",
    )
