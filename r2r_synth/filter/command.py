"""`r2r-synth filter RUN --out RUN2`: read a run, apply the rules, write the child run."""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r2r_synth import __version__
from r2r_synth.config import FilterConfig, scrub
from r2r_synth.errors import ConfigError, InputError
from r2r_synth.filter.rules import (
    ExactDuplicate,
    Funnel,
    GoldDistance,
    Length,
    ListwiseNdcg,
    MinConfidence,
    NearDuplicate,
    Record,
    Rule,
    SelfConsistency,
    SwapConsistent,
    request_group,
    run_funnel,
)
from r2r_synth.rundir import KIND_ORDER, RunDir
from r2r_synth.schemas import FILTER_RULES, Counts, Manifest, Usage, package_versions, utcnow


@dataclass
class FilterResult:
    out: Path
    manifest: Manifest
    funnel: dict[str, Any]  # the manifest's `extra["filter"]`


def build_rules(cfg: FilterConfig) -> list[Rule]:
    """The rules `cfg` asks for, in `FILTER_RULES` order; a `ConfigError` for a value out of range or
    for no rule at all."""
    def bad(flag: str, value: Any, want: str) -> ConfigError:
        return ConfigError(f"{flag} {value}: expected {want}", hint=f"give {flag} {want}")

    rules: list[Rule] = []
    if cfg.swap_consistent:
        rules.append(SwapConsistent())
    if cfg.max_gold_distance is not None:
        if not 0 <= cfg.max_gold_distance <= 2:
            raise bad("--max-gold-distance", cfg.max_gold_distance, "0, 1 or 2 (grades are 0-3)")
        rules.append(GoldDistance(cfg.max_gold_distance))
    if cfg.min_confidence is not None:
        if not 0.0 <= cfg.min_confidence <= 1.0:
            raise bad("--min-confidence", cfg.min_confidence, "a number in [0, 1]")
        rules.append(MinConfidence(cfg.min_confidence))
    if cfg.min_words is not None or cfg.max_words is not None:
        for flag, v in (("--min-words", cfg.min_words), ("--max-words", cfg.max_words)):
            if v is not None and v < 0:
                raise bad(flag, v, "a number of words >= 0")
        if cfg.min_words is not None and cfg.max_words is not None and cfg.min_words > cfg.max_words:
            raise ConfigError(f"--min-words {cfg.min_words} is above --max-words {cfg.max_words}: every record "
                              "would be dropped", hint="give --min-words <= --max-words")
        rules.append(Length(cfg.min_words, cfg.max_words))
    if cfg.min_ndcg is not None:
        if not 0.0 <= cfg.min_ndcg <= 1.0:
            raise bad("--min-ndcg", cfg.min_ndcg, "a number in [0, 1]")
        rules.append(ListwiseNdcg(cfg.min_ndcg))
    if cfg.exact_duplicates:
        rules.append(ExactDuplicate())
    if cfg.near_duplicates is not None:
        if not 0.0 < cfg.near_duplicates <= 1.0:
            raise bad("--near-duplicates", cfg.near_duplicates, "a Jaccard similarity in (0, 1], e.g. 0.8")
        rules.append(NearDuplicate(cfg.near_duplicates))
    if cfg.self_consistency is not None:
        if cfg.self_consistency < 1:
            raise bad("--self-consistency", cfg.self_consistency, "a number of agreeing rollouts >= 1")
        rules.append(SelfConsistency(cfg.self_consistency))
    if not rules:
        raise ConfigError("no rule given: filter would copy the run unchanged",
                          hint="name at least one rule, e.g. --swap-consistent --max-gold-distance 1 "
                               "(`r2r-synth filter --help` lists them)")
    return sorted(rules, key=lambda r: FILTER_RULES.index(r.name))


def _check_records(src: RunDir, records: dict[str, list[Record]], rules: list[Rule]) -> None:
    for kind, recs in records.items():
        seen: dict[str, int] = {}
        for line, rec in enumerate(recs, start=1):
            if rec.key in seen:
                raise InputError(f"{src.records_path(kind)}:{line}: key {rec.key} also on line {seen[rec.key]}",
                                 hint="a run holds each request once; rebuild it with `r2r-synth merge`, which "
                                      "keeps a repeated key once")
            seen[rec.key] = line
    need = next((r.min_agree for r in rules if isinstance(r, SelfConsistency)), None)
    for kind, recs in records.items():
        if need is None or not recs:
            continue
        most = max(_group_sizes(recs).values())
        if most < need:
            raise ConfigError(
                f"--self-consistency {need} needs {need} rollouts of a request, but the {kind} records of "
                f"{src.path} have at most {most} (their rollout_ids)",
                hint=f"generate with --rollouts {need} or more at --temperature > 0, or lower --self-consistency")


def _group_sizes(recs: list[Record]) -> dict[Any, int]:
    sizes: dict[Any, int] = {}
    for r in recs:
        g = request_group(r)
        sizes[g] = sizes.get(g, 0) + 1
    return sizes


def filter_run(cfg: FilterConfig, *, command: str = "") -> FilterResult:
    """Filter the run `cfg.run_dir` into `cfg.out` (see `r2r_synth.filter`). Every check comes before
    anything is written; a failure while writing removes what was written."""
    t0 = time.monotonic()
    started = utcnow()
    rules = build_rules(cfg)
    src, target = RunDir(cfg.run_dir), RunDir(cfg.out).check_writable(what="--out")
    if target.path.resolve() == src.path.resolve():
        raise InputError(f"--out {target.path} is the run being filtered",
                         hint="write the filtered run to a new directory; the parent stays as it is")
    if target.holds_records() and not cfg.overwrite:
        raise InputError(f"--out {target.path} already holds a run", hint="choose a new directory or pass --overwrite")
    # A parent being written (a `generate` still running) is refused, not read half-way; a read-only
    # parent (shared data) has no writer to wait for.
    parent_lock = src.lock(command=command) if os.access(src.path, os.W_OK) else nullcontext()
    with parent_lock:
        run = src.load()
        if not any(run.records.values()):
            raise InputError(f"{src.path}: the run holds no record, so there is nothing to filter",
                             hint="filter a run that `generate` or `import` wrote records into")
        _check_records(src, run.records, rules)
        snapshots = src.program_snapshots()
    funnel = run_funnel(run.records, rules)
    with target.lock(command=command):
        try:
            if cfg.overwrite:
                target.clear()
            for kind in run.records:  # every record file the parent has, emptied or not
                target.write_records(kind, funnel.kept[kind])
            target.write_records("filtered", funnel.filtered)
            target.write_records("reject", run.rejects)
            for snap in snapshots:
                target.snapshot_program(snap)
            target.write_config(cfg.public_dict())
            summary = funnel_summary(src, run.manifest, rules, funnel)
            manifest = _manifest(target, run.manifest, cfg, command=command, summary=summary, started=started,
                                 wall_s=time.monotonic() - t0)
            target.write_manifest(manifest)
        except BaseException:
            target.clear()
            raise
    return FilterResult(out=target.path, manifest=manifest, funnel=summary)


def funnel_summary(src: RunDir, parent: Manifest, rules: list[Rule], funnel: Funnel) -> dict[str, Any]:
    """What the manifest keeps under `extra["filter"]`: the parent, the rules in order, and per kind
    the input, each rule's counts and what was kept."""
    kinds = {}
    for kind, per_rule in funnel.counts.items():
        kept = len(funnel.kept[kind])
        dropped = sum(c.dropped for c in per_rule.values())
        kinds[kind] = {"input": kept + dropped, "kept": kept,
                       "rules": {name: vars(c) for name, c in per_rule.items()}}
    return {
        "parent": {"dir": str(src.path), "command": parent.command, "status": parent.status,
                   "teacher": parent.teacher, "started_at": parent.started_at.isoformat(),
                   "usage": parent.usage.model_dump(), "cost": parent.cost, "filter": parent.extra.get("filter")},
        "rules": [{"rule": r.name, **r.params} for r in rules],
        "kinds": kinds,
    }


def _manifest(target: RunDir, parent: Manifest, cfg: FilterConfig, *, command: str, summary: dict[str, Any],
              started, wall_s: float) -> Manifest:
    counts = target.line_counts([k for k in KIND_ORDER if k in parent.counts or k in summary["kinds"]])
    for kind, c in counts.items():
        c.requested = parent.counts.get(kind, Counts()).requested
    return Manifest(
        r2r_synth_version=__version__, command=scrub(command), config=cfg.public_dict(), teacher=parent.teacher,
        programs=parent.programs, prompts=parent.prompts, counts=counts,
        usage=Usage(), cost=0.0,  # filter asks no teacher: the parent's spend is the parent's (extra.filter.parent)
        versions=package_versions("dspy", "litellm", "pydantic"), started_at=started, finished_at=utcnow(),
        wall_s=wall_s, status=parent.status, shard=parent.shard,
        extra={**parent.extra, "filter": summary},
    )
