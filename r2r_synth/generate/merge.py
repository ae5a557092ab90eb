"""`r2r-synth merge`: run directories (e.g. the shards of one job) -> one run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r2r_synth import __version__
from r2r_synth.config import scrub
from r2r_synth.errors import InputError
from r2r_synth.rundir import KIND_ORDER, RunDir
from r2r_synth.schemas import Counts, Manifest, Reject, Usage, package_versions, utcnow

GENERATED_KINDS = ("direct", "comparison")


def merge_runs(out: Path | str, run_dirs: list[Path], *, command: str = "", force: bool = False) -> Manifest:
    """Merge run directories (e.g. the shards of one job) into `out`.

    A key found in several directories with the same answer is kept once (an overlap: the same
    shard run twice); with different answers it is a conflict and nothing is written. A reject
    whose key has a record elsewhere is dropped. The merged manifest sums usage and cost and lists
    its sources."""
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
        manifests.append((src, m))
    merged: dict[str, dict[str, Any]] = {k: {} for k in KIND_ORDER}
    origin: dict[str, str] = {}
    overlaps = 0
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
                overlaps += 1
    rejects: dict[str, Reject] = {}
    for src in sources:
        for rej in src.rejects():
            if rej.key not in origin and rej.key not in rejects:
                rejects[rej.key] = rej
    with target.lock(command=command):
        for kind in KIND_ORDER:
            if merged[kind] or kind in GENERATED_KINDS:
                target.write_records(kind, merged[kind].values())
        target.write_records("reject", rejects.values())
        for src in sources:
            for snap in src.program_snapshots():
                target.snapshot_program(snap)
        manifest = _merged_manifest(target, manifests, command=command, overlaps=overlaps)
        target.write_manifest(manifest)
    return manifest


def _merged_manifest(target: RunDir, manifests: list[tuple[RunDir, Manifest]], *, command: str,
                     overlaps: int) -> Manifest:
    counts = target.line_counts(GENERATED_KINDS)
    for kind in GENERATED_KINDS:
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
                                "programs": m.programs} for src, m in manifests], "overlapping_keys": overlaps},
    )
