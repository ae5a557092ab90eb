"""`r2r-synth merge`: run directories (e.g. the shards of one job) -> one run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r2r_synth import __version__
from r2r_synth.config import scrub
from r2r_synth.errors import ConfigError, InputError
from r2r_synth.pairs import parse_shard
from r2r_synth.plural import plural
from r2r_synth.rundir import KIND_ORDER, RunDir
from r2r_synth.schemas import Counts, Manifest, Reject, Usage, package_versions, utcnow

GENERATED_KINDS = ("direct", "comparison")


def merge_runs(out: Path | str, run_dirs: list[Path], *, command: str = "", force: bool = False,
               mixed_teachers: bool = False) -> Manifest:
    """Merge run directories (e.g. the shards of one job) into `out`.

    A key found in several directories with the same answer is kept once (an overlap: the same
    shard run twice); with different answers it is a conflict and nothing is written. A reject
    whose key has a record elsewhere is dropped. Runs of different teachers are refused (a
    `ConfigError`) unless `mixed_teachers`. The merged manifest sums usage and cost, lists its
    sources, and keeps in `extra["warnings"]` what the merge found suspicious: shards missing from a
    split (0/2 given without 1/2), splits that overlap, a whole run beside shards, and questions
    answered by more than one teacher or program (how many with different labels)."""
    target = RunDir(out).check_writable(what="OUT")
    if target.holds_records() and not force:
        raise InputError(f"{target.path} already holds records", hint="choose a new output directory or pass --force")
    sources = [RunDir(d) for d in run_dirs]
    if target.path.resolve() in {s.path.resolve() for s in sources}:
        raise InputError(f"{target.path} is also one of the inputs", hint="merge into a new directory")
    manifests: list[tuple[RunDir, Manifest]] = []
    for src in sources:
        m = src.read_manifest(strict=True)
        if m is None:
            raise InputError(f"{src.path}: no manifest.json; not a run directory written by `generate`",
                             hint="pass run directories written by `r2r-synth generate`")
        waiting = src.batch_state().outstanding
        if waiting:
            raise InputError(f"{src.path}: {sum(len(u.items) for u in waiting)} requests are in provider batches not "
                             "collected yet; a merge would leave them behind (nothing was written)",
                             hint="rerun that run's `generate --batch` command until it exits 0, then merge")
        manifests.append((src, m))
    teachers = sorted({m.teacher for _, m in manifests})
    if len(teachers) > 1 and not mixed_teachers:
        raise ConfigError(
            f"the runs were made by {len(teachers)} teachers ({', '.join(teachers)}): merged, one corpus would mix "
            "their labels (nothing was written)",
            hint="merge the runs of one teacher, or pass --mixed-teachers to merge them anyway (each record keeps "
                 "its own teacher, and the manifest names them all)",
        )
    warnings = _shard_warnings(manifests)
    if len(teachers) > 1:
        warnings.append(f"the merged run mixes {len(teachers)} teachers: {', '.join(teachers)}")
    merged: dict[str, dict[str, Any]] = {k: {} for k in KIND_ORDER}
    origin: dict[str, str] = {}
    overlaps: dict[str, int] = {}
    for src in sources:
        for kind in KIND_ORDER:
            for i, rec in enumerate(src.records(kind), start=1):
                old = merged[kind].get(rec.key)
                if old is None:
                    merged[kind][rec.key] = rec
                    origin[rec.key] = f"{src.records_path(kind)}:{i}"
                    continue
                if old.model_dump(exclude={"provenance"}) != rec.model_dump(exclude={"provenance"}):
                    raise InputError(
                        f"conflicting {kind} records for key {rec.key}: {origin[rec.key]} and "
                        f"{src.records_path(kind)}:{i} disagree",
                        hint="these run directories answered the same request differently (another teacher "
                             "setting or sampling); merge only shards of one job",
                    )
                overlaps[kind] = overlaps.get(kind, 0) + 1
    if overlaps:
        # `requested` sums what each input asked, so without this line a merge of a run with its own
        # shards reads "requested 150 / records 100" and looks like lost records.
        warnings.append(f"{plural(sum(overlaps.values()), 'record')} ({', '.join(f'{k} {n}' for k, n in overlaps.items())}) "
                        "were in more than one input with the same answer: each is kept once, while `requested` "
                        "counts every input's requests")
    warnings += _question_warnings(merged)
    rejects: dict[str, Reject] = {}
    for src in sources:
        for rej in src.rejects():
            if rej.key not in origin and rej.key not in rejects:
                rejects[rej.key] = rej
    if not origin and not rejects:
        raise InputError(f"{', '.join(str(s.path) for s in sources)}: no record and no reject in "
                         f"{'any of these runs' if len(sources) > 1 else 'the run'}, so there is nothing to merge",
                         hint="merge runs that `generate` wrote records into")
    # Listwise runs: each query's final ranking, kept once per key (the same query's windows, asked
    # the same way, give the same ranking; a different one is a conflict like a record's).
    rankings: dict[str, Any] = {}
    for src in sources:
        for i, rk in enumerate(src.rankings(), start=1):
            old = rankings.get(rk.key)
            if old is not None and old.ranking != rk.ranking:
                raise InputError(f"conflicting final rankings for key {rk.key} (qid {rk.query.qid!r}) in "
                                 f"{src.rankings_path}:{i} and another input",
                                 hint="these run directories ranked the same query differently; merge only "
                                      "shards of one job")
            rankings.setdefault(rk.key, rk)
    with target.lock(command=command):
        for kind in KIND_ORDER:
            if merged[kind] or kind in GENERATED_KINDS:
                target.write_records(kind, merged[kind].values())
        target.write_records("reject", rejects.values())
        if rankings:
            target.write_records("ranking", rankings.values())
        for src in sources:
            for snap in src.program_snapshots():
                target.snapshot_program(snap)
        manifest = _merged_manifest(target, manifests, command=command, overlaps=overlaps, warnings=warnings)
        target.write_manifest(manifest)
    return manifest


def _shard_warnings(manifests: list[tuple[RunDir, Manifest]]) -> list[str]:
    """What the sources' `shard` fields say is missing or overlapping."""
    splits: dict[int, set[int]] = {}
    whole = []
    for src, m in manifests:
        shard = parse_shard(m.shard) if m.shard else None
        if shard is None:
            whole.append(str(src.path))
        else:
            splits.setdefault(shard[1], set()).add(shard[0])
    out = []
    for n, have in sorted(splits.items()):
        missing = [f"{i}/{n}" for i in range(n) if i not in have]
        if missing:
            out.append(f"shard{'s' if len(missing) > 1 else ''} {', '.join(missing)} of the {n}-way split "
                       f"{'are' if len(missing) > 1 else 'is'} missing: the merged run holds {len(have)} of {n} "
                       "shards' queries")
    if len(splits) > 1:
        out.append(f"shards of {len(splits)} different splits ({', '.join(f'/{n}' for n in sorted(splits))}) "
                   "overlap by query")
    if splits and whole:
        out.append(f"{', '.join(whole)} {'is a whole run' if len(whole) == 1 else 'are whole runs'} (no --shard), "
                   "merged with shards: their queries overlap")
    return out


def _question(rec: Any) -> tuple[Any, ...] | None:
    """What a record answers, whoever asked it: (kind, qid, docids, rollout); None for listwise."""
    if rec.kind == "direct":
        return ("direct", rec.query.qid, rec.document.docid, rec.provenance.rollout_id)
    if rec.kind == "comparison":
        return ("comparison", rec.query.qid, rec.doc_a.docid, rec.doc_b.docid, rec.provenance.rollout_id)
    return None


def _question_warnings(merged: dict[str, dict[str, Any]]) -> list[str]:
    """Questions answered by more than one teacher or program (distinct keys), and how many of them
    got different labels."""
    out = []
    for kind, label in (("direct", "relevance"), ("comparison", "preferred")):
        answers: dict[tuple[Any, ...], set[Any]] = {}
        counts: dict[tuple[Any, ...], int] = {}
        for rec in merged.get(kind, {}).values():
            q = _question(rec)
            if q is not None:
                answers.setdefault(q, set()).add(getattr(rec, label))
                counts[q] = counts.get(q, 0) + 1
        twice = [q for q, n in counts.items() if n > 1]
        if twice:
            differ = sum(1 for q in twice if len(answers[q]) > 1)
            out.append(f"{len(twice)} {kind} questions were answered more than once (by another teacher or "
                       f"program), {differ} of them with a different {label}; the merged run keeps every answer")
    return out


def _merged_manifest(target: RunDir, manifests: list[tuple[RunDir, Manifest]], *, command: str,
                     overlaps: dict[str, int], warnings: list[str]) -> Manifest:
    kinds = [k for k in KIND_ORDER if k in GENERATED_KINDS or any(k in m.counts for _, m in manifests)]
    counts = target.line_counts(kinds)
    for kind in kinds:
        counts[kind].requested = sum(m.counts.get(kind, Counts()).requested for _, m in manifests)
    usage = Usage()
    for _, m in manifests:
        usage = usage + m.usage
    costs = [m.cost for _, m in manifests]
    teachers = sorted({m.teacher for _, m in manifests})
    statuses = [m.status for _, m in manifests]
    first = manifests[0][1]
    return Manifest(
        r2r_synth_version=__version__, command=scrub(command), config=first.config,
        teacher=teachers[0] if len(teachers) == 1 else "mixed:" + ",".join(teachers),
        programs=first.programs, prompts=first.prompts, counts=counts, usage=usage,
        cost=None if any(c is None for c in costs) else sum(costs),  # type: ignore[arg-type]
        versions=package_versions("dspy", "litellm", "pydantic"),
        started_at=min(m.started_at for _, m in manifests), finished_at=utcnow(),
        wall_s=sum(m.wall_s or 0.0 for _, m in manifests),
        status=next((s for s in ("failed", "interrupted", "stopped_budget") if s in statuses), "complete"),
        shard=None,
        extra={"merged_from": [{"dir": str(src.path), "shard": m.shard, "status": m.status, "teacher": m.teacher,
                                "programs": m.programs} for src, m in manifests], "overlapping_keys": sum(overlaps.values()),
               "overlapping_keys_by_kind": overlaps,
               "warnings": warnings},
    )
