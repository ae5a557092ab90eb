"""`generate(config)`: candidates -> a run directory of validated teacher reasoning.

The order of a session: check the config and `--out` (nothing asked or written on a bad one), read
and validate every input line, open the teacher (LiteLLM checks the model string), take the run
directory's lock, apply the resume rule, snapshot the programs, then let the engine ask what is not
done. The manifest is written at the end of the session (and on a clean stop, an interrupt or a
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
from r2r_synth.errors import BudgetExceeded, ConfigError, IncompleteRun, TeacherError
from r2r_synth.generate.engine import Engine, Progress, resolved_concurrency
from r2r_synth.generate.estimate import DryRunEstimate, estimate
from r2r_synth.generate.jobs import CutReport, Job, build_jobs, check_config, cut_documents, load_inputs
from r2r_synth.pairs import PairStrategy, check_pairs_possible, in_shard, parse_shard
from r2r_synth.rundir import ProgramSnapshot, RunDir
from r2r_synth.schemas import Candidates, Manifest, package_versions, utcnow

logger = logging.getLogger(__name__)

KINDS = ("direct", "comparison")


@dataclass
class GenerateResult:
    run_dir: Path | None
    manifest: Manifest | None = None
    progress: Progress | None = None
    estimate: DryRunEstimate | None = None


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
    (an opened `Teacher`) skips `open_teacher` (tests, benchmarks); `backoff_base`/`backoff_cap` are
    the policy's retry delays in seconds (tests shorten them). Returns the run's manifest, or
    with `config.dry_run` an estimate. Raises InputError/ConfigError before writing anything,
    BudgetExceeded (exit 3) after a clean stop at `max_cost`, TeacherError when the teacher fails."""
    check_config(config)
    RunDir(config.out).check_writable()
    shard = parse_shard(config.shard)
    if candidates is None:
        candidates = load_inputs(config)
    else:
        candidates = [c for c in candidates if in_shard(c.query.qid, shard)]
    check_pairs_possible(candidates, config.pairs)
    candidates, cuts = cut_documents(candidates, config.max_doc_chars)

    from r2r_synth.teacher.programs import load_program

    programs = {k: load_program(k, programs_dir=config.programs_dir) for k in KINDS}
    args = (config, candidates, programs, cuts, on_progress, command)
    if teacher is not None:
        return _generate_with(*args, teacher)
    if config.dry_run and config.teacher is None and config.router is None:
        # Counting needs the embedded teacher's prompts (its adapter), not its server: do not start it.
        from r2r_synth.teacher.embedded import EMBEDDED_NAME, MODEL_ALIAS, EmbeddedJSONAdapter
        from r2r_synth.teacher.lm import make_teacher

        offline = make_teacher(f"openai/{MODEL_ALIAS}", name=EMBEDDED_NAME, adapter=EmbeddedJSONAdapter(),
                               embedded=True, transport="litellm")
        return _generate_with(*args, offline)

    from r2r_synth.teacher.lm import open_teacher
    from r2r_synth.teacher.policy import command_policy

    policy = command_policy(embedded=config.teacher is None and config.router is None, timeout=config.timeout,
                            max_retries=config.max_retries, api_key=config.api_key, backoff_base=backoff_base,
                            backoff_cap=backoff_cap)
    with open_teacher(config.teacher, api_base=config.api_base, api_key=config.api_key,
                      temperature=config.temperature, max_tokens=config.max_tokens, router=config.router,
                      policy=policy, transport=config.transport) as t:
        return _generate_with(*args, t)


def _asked_kinds(config: GenerateConfig) -> list[str]:
    return [k for k, on in (("direct", config.direct), ("comparison", PairStrategy(config.pairs) is not
                                                         PairStrategy.none)) if on]


def _generate_with(config: GenerateConfig, candidates: list[Candidates], programs: dict[str, Any], cuts: CutReport,
                   on_progress: Callable[[Progress], None] | None, command: str, teacher: Any) -> GenerateResult:
    hashes = {k: p.program_hash for k, p in programs.items()}
    jobs = build_jobs(candidates, config=config, program_hashes=hashes, teacher=teacher.name)
    run = RunDir(config.out)
    if config.max_cost is not None:
        from r2r_synth.teacher.pricing import is_priced

        if not is_priced(teacher):
            raise ConfigError(
                f"--max-cost needs a teacher LiteLLM can price; {teacher.name!r} is not in its cost map",
                hint="drop --max-cost, or register the model's prices with litellm.register_model",
            )
    if config.dry_run:
        done = run.done_keys(prune=False) if run.exists() else set()
        return GenerateResult(run_dir=None, estimate=estimate(config, jobs, done, programs, teacher))

    command = scrub(command, [config.api_key or ""])
    with run.lock(command=command):
        return _session(config, run, jobs, programs, cuts, on_progress, command, teacher)


def _session(config: GenerateConfig, run: RunDir, jobs: list[Job], programs: dict[str, Any], cuts: CutReport,
             on_progress: Callable[[Progress], None] | None, command: str, teacher: Any) -> GenerateResult:
    wanted = {j.key for j in jobs}
    done = run.done_keys(wanted=wanted, retry_rejects=config.retry_rejects)
    todo = [j for j in jobs if j.key not in done]
    skipped = {k: sum(1 for j in jobs if j.kind == k and j.key in done) for k in KINDS}
    prev = run.read_manifest()
    if prev is not None and not run.journal_path.exists() and prev.usage.total_tokens:
        from r2r_synth.rundir import Journal

        # A run written before runs had a journal: its totals carry over as one "legacy" entry.
        legacy = Journal(run.journal_path)
        legacy.legacy(usage=prev.usage, cost=prev.cost, sessions=list(prev.extra.get("sessions") or []))
        legacy.close()
    before = run.journal_totals(replies_for={j.key for j in todo if j.kind == "comparison"})
    run.write_config(config.public_dict())
    for kind in _asked_kinds(config):
        p = programs[kind]
        run.snapshot_program(ProgramSnapshot(name=kind, program_hash=p.program_hash, prompt_hash=p.prompt_hash,
                                             instructions=p.predictor.signature.instructions,
                                             state=p.module.dump_state()))

    journal = run.journal(command=command)
    progress = Progress(total=len(jobs), skipped=sum(skipped.values()))
    started_at = utcnow()
    status = "complete"
    error: BaseException | None = None
    est_call_cost = before.cost / before.calls if before.cost and before.calls else 0.0
    engine = Engine(config=config, teacher=teacher, programs=programs, run=run, journal=journal, progress=progress,
                    on_progress=on_progress, spent_before=before.spent,
                    replies=before.replies, est_call_cost=est_call_cost)
    if on_progress is not None:
        on_progress(progress)
    try:
        asyncio.run(engine.run(todo))
        if engine.fatal is not None:
            status, error = "failed", engine.fatal
        elif engine.stop == "stopped_budget":
            status = "stopped_budget"
        elif engine.unanswered and engine.unanswered == progress.finished:
            status, error = "failed", TeacherError(
                f"every one of the {engine.unanswered} requests of this session failed without an answer "
                "(see rejects.jsonl)", hint="check the teacher, --api-base and the API key, then rerun the same "
                "command: it asks them again")
        elif engine.unanswered:
            status = "incomplete"
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
        run.write_manifest(manifest)
    if error is not None:
        raise error
    if status == "stopped_budget":
        raise BudgetExceeded(
            f"stopped at the budget: ${manifest.cost or 0:.4f} spent of --max-cost ${config.max_cost}; "
            f"{progress.finished} requests finished this session, "
            f"{len(todo) - progress.finished} not started",
            hint="rerun the same command with a larger --max-cost to resume where it stopped",
        )
    if status == "incomplete":
        raise IncompleteRun(
            f"{engine.unanswered} of the {progress.finished} requests of this session got no answer (transport, "
            "key or configuration failures after their retries; see rejects.jsonl)",
            hint="rerun the same command: it asks them again and nothing else",
        )
    return GenerateResult(run_dir=run.path, manifest=manifest, progress=progress)


def _manifest(config: GenerateConfig, run: RunDir, teacher: Any, programs: dict[str, Any], jobs: list[Job],
              prev: Manifest | None, started_at: Any, status: str, command: str, skipped: dict[str, int],
              cuts: CutReport) -> Manifest:
    """The manifest from what the run directory holds: counts from the files, usage, cost and
    sessions from the journal (so a killed session's spend is in it)."""
    counts = run.line_counts(KINDS)
    for kind in KINDS:
        counts[kind].requested = sum(1 for j in jobs if j.kind == kind)
        counts[kind].skipped_done = skipped[kind]
    totals = run.journal_totals()
    sessions = totals.legacy_sessions + [s.as_dict() for s in totals.sessions]
    return Manifest(
        r2r_synth_version=__version__,
        command=command,
        config=config.public_dict(),
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
        shard=config.shard,
        extra={"sessions": sessions, "teacher": teacher.public_dict(),
               "concurrency": resolved_concurrency(config, teacher),
               "optimized": {k: p.optimized for k, p in programs.items()},
               "calls_in_flight_when_killed": totals.orphans,
               "documents_cut": cuts.as_dict()},
    )
