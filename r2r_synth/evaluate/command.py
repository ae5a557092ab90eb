"""`r2r-synth evaluate`: rerank the top `--depth` candidates with each system (the rest follow in
first-stage order), score every query with ir-measures, test each system against the first one
with paired tests over queries, and write `evaluation.json`, `per_query.tsv`, one TREC run per
system and `evaluation.png`. Nothing is written until every system has ranked."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r2r_synth.artifacts import EVALUATION_FILE, EvaluationReport
from r2r_synth.atomic import check_dir_target, write_json_atomic, write_text_atomic
from r2r_synth.config import EvaluateConfig
from r2r_synth.errors import ConfigError, InputError, TeacherError
from r2r_synth.evaluate.ranking import RankedRun, rerank_candidates
from r2r_synth.evaluate.systems import (
    System,
    SystemSpec,
    check_first_stage,
    check_specs,
    open_system,
    parse_spec,
)
from r2r_synth.plural import plural
from r2r_synth.schemas import Candidates, utcnow

log = logging.getLogger(__name__)

PER_QUERY_FILE = "per_query.tsv"
CHART_FILE = "evaluation.png"
TESTS = {
    "randomization": "paired two-sided randomization (permutation) test over queries: each per-query difference "
                     "keeps or flips its sign (Fisher; Smucker, Allan & Carterette, CIKM 2007)",
    "t-test": "paired two-sided Student's t-test over queries (scipy.stats.ttest_rel)",
}
UNCHANGED_WHY = ("set-based at a cutoff at or past the reranking depth: every system reranks the same top {depth} "
                 "candidates and keeps the rest in first-stage order, so the documents above the cutoff are the "
                 "same for every system and these measures score every system alike, query by query")


@dataclass
class SystemResult:
    name: str
    spec: str
    metrics: dict[str, float]
    pairs: int
    seconds: float
    query_seconds: list[float] = field(repr=False)
    per_query: dict[str, dict[str, float]] = field(repr=False, default_factory=dict)  # {measure: {qid: value}}
    failed_calls: int = 0
    invalid_replies: int = 0
    left_out: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # run:FILE: candidates / queries it lacks
    hybrid: dict[str, Any] | None = None  # a student fused with the first stage: method, weight, why

    def as_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            **{k: round(v, 4) for k, v in self.metrics.items()},
            "pairs": self.pairs,
            "seconds": round(self.seconds, 2),
            "pairs_per_s": round(self.pairs / self.seconds, 1) if self.seconds > 0 else None,
            "median_query_s": round(statistics.median(self.query_seconds), 4) if self.query_seconds else None,
            "failed_calls": self.failed_calls,
            "invalid_replies": self.invalid_replies,
            **({"hybrid": self.hybrid} if self.hybrid else {}),
            "queries_left_out": len(self.left_out),
            "left_out_qids": self.left_out,
            **self.counts,
        }


@dataclass
class Evaluation:
    results: list[SystemResult]
    out: Path
    report: dict[str, Any]


def _nothing_ranked(system: System, pairs: int, left_out: list[str]) -> TeacherError:
    what = (f"every one of the {plural(pairs, 'teacher call')} of system {system.name!r} failed after its retries"
            if system.failed_calls == pairs else
            f"system {system.name!r} had a failed teacher call in every judged query ({plural(len(left_out), 'query')} "
            f"left out; {system.failed_calls} of its {pairs} calls failed after their retries)")
    return TeacherError(f"{what}: nothing to measure",
                        hint="check the teacher (--api-base, --api-key) and rerun; --timeout and --max-retries "
                        "give a slow or overloaded teacher more room")


def _load(config: EvaluateConfig) -> list[Candidates]:
    from r2r_synth.io.candidates import DEFAULT_DEPTH, load_candidates

    # Every candidate stays in the run; only a corpus-only input (BEIR, TREC collection, irds
    # without scoreddocs) needs a depth, its BM25 depth: at least the reranking depth.
    first_stage = None if Path(config.input).is_file() else max(config.depth or DEFAULT_DEPTH, DEFAULT_DEPTH)
    return load_candidates(config.input, qrels=config.qrels, limit=config.limit, depth=first_stage,
                           split=config.split)


def evaluate(config: EvaluateConfig, *, on_query: Callable[[str], None] | None = None) -> Evaluation:
    """Rerank `config.input` with each of `config.systems`, score with ir-measures, test against the
    first system, write the outputs. `on_query(system_name)` is called after each query."""
    from r2r_synth.evaluate.fusion import read_run_file
    from r2r_synth.metrics import unchanged_by_reranking

    if not config.systems:
        raise ConfigError("no --system given", hint="e.g. --system bm25 --system outputs/my-student")
    out = check_dir_target(config.out, what="--out")  # before any system runs (or spends a call)
    specs = [parse_spec(s) for s in config.systems]
    check_specs(specs)
    cands = _load(config)
    if config.hybrid:
        check_first_stage(specs, cands, source=str(config.input))
    qrels = {c.query.qid: dict(c.qrels) for c in cands if c.qrels}
    if not qrels:
        raise InputError(
            f"{config.input}: none of the {plural(len(cands), 'query')} has gold labels, so there is nothing to measure",
            hint="pass --qrels with the TREC qrels of these queries",
        )
    longest = max((len(c.documents) for c in cands), default=0)
    depth = longest if config.depth is None else min(config.depth, longest)
    unchanged = unchanged_by_reranking(config.measures, depth=depth)  # checks the names before any system runs
    runs = {s.name: read_run_file(s, [c.query.qid for c in cands]) for s in specs if s.kind == "run"}

    ranked: dict[str, RankedRun] = {}
    results: list[SystemResult] = []
    for spec in specs:
        results.append(_rank_one(spec, cands, qrels, config=config, ranked=ranked, run=runs.get(spec.name),
                                 on_query=on_query))
    significance = _significance(results, [m for m in config.measures if m not in unchanged], config=config)
    lengths = [len(c.documents) for c in cands]
    from r2r_synth.io.candidates import describe_input

    read = describe_input(config.input, qrels=config.qrels, split=config.split)
    report = {
        "input": str(config.input),
        # The files actually read: a BEIR directory's one split, never every qrels file it holds.
        "split": read["split"],
        "queries_files": read["queries"],
        "qrels": ", ".join(read["qrels"]) or None,
        "queries": len(cands),
        "judged_queries": len(qrels),
        "depth": config.depth,
        "candidates_per_query": {"min": min(lengths, default=0), "max": max(lengths, default=0)},
        "measures": list(config.measures),
        "unchanged_by_reranking": {"measures": unchanged, "why": UNCHANGED_WHY.format(depth=depth)},
        "systems": {r.name: r.as_json() for r in results},
        "significance": significance,
        "per_query": {r.name: r.per_query for r in results},
        "device": config.device or _device(),
        "created_at": utcnow().isoformat(),
        "config": config.public_dict(),
    }
    # The report's shape is the `EvaluationReport` schema that `report` and `publish` read it with.
    EvaluationReport.model_validate(report)
    _write(out, report, results, ranked, cands)
    return Evaluation(results=results, out=out, report=report)


def _rank_one(spec: SystemSpec, cands: list[Candidates], qrels: dict, *, config: EvaluateConfig,
              ranked: dict[str, RankedRun], run: dict | None, on_query: Callable[[str], None] | None) -> SystemResult:
    from r2r_synth.metrics import ir_eval, ir_eval_per_query

    system = open_system(spec, config=config, ranked={n: r.tops for n, r in ranked.items()}, run=run)
    try:
        result = rerank_candidates(system, cands, depth=config.depth,
                                   on_query=(lambda n=system.name: on_query(n)) if on_query else None)
    finally:
        system.close()
    ranked[system.name] = result
    if result.left_out:
        log.warning("%s: %d quer%s left out (a teacher call failed after its retries): %s", system.name,
                    len(result.left_out), "y" if len(result.left_out) == 1 else "ies", ", ".join(result.left_out[:10]))
    if result.left_out and not result.run.keys() & qrels.keys():
        raise _nothing_ranked(system, result.pairs, result.left_out)
    # A fusion costs what its systems cost, query by query, plus the fusing itself (a fused fusion too).
    times = {q: t + sum(ranked[c].times.get(q, 0.0) for c in system.components) for q, t in result.times.items()}
    result.times = times
    per_query = ir_eval_per_query(qrels, result.run, measures=config.measures)
    return SystemResult(
        name=system.name, spec=system.spec, metrics=ir_eval(qrels, result.run, measures=config.measures),
        pairs=result.pairs, seconds=sum(times.values()), query_seconds=list(times.values()),
        per_query={m: {q: round(v[m], 6) for q, v in per_query.items()} for m in config.measures},
        failed_calls=system.failed_calls, invalid_replies=system.invalid_replies, left_out=result.left_out,
        counts=dict(system.counts), hybrid=system.hybrid,
    )


def _significance(results: list[SystemResult], measures: Sequence[str], *, config: EvaluateConfig) -> dict[str, Any]:
    """Each system against the first, per measure, over the queries both ranked: both tests' p-values."""
    from r2r_synth.metrics import paired_randomization_test, paired_t_test

    base = results[0]
    block: dict[str, Any] = {
        "baseline": base.name, "shown": config.test, "tests": TESTS, "permutations": config.permutations,
        "seed": config.seed, "correction": "none (one comparison per system and measure; for many, use Holm)",
        "measures": list(measures), "systems": {},
    }
    for r in results[1:]:
        rows = {}
        for m in measures:
            qids = [q for q in base.per_query[m] if q in r.per_query[m]]
            a = [r.per_query[m][q] for q in qids]
            b = [base.per_query[m][q] for q in qids]
            rows[m] = {
                "queries": len(qids),
                "mean_diff": round(sum(x - y for x, y in zip(a, b)) / len(qids), 6) if qids else None,
                "randomization": _p(paired_randomization_test(a, b, samples=config.permutations, seed=config.seed)),
                "t-test": _p(paired_t_test(a, b)),
            }
        block["systems"][r.name] = rows
    return block


def _p(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _write(out: Path, report: dict[str, Any], results: list[SystemResult], ranked: dict[str, RankedRun],
           cands: list[Candidates]) -> None:
    from r2r_synth.evaluate.chart import plot
    from r2r_synth.io.trec import write_run

    out.mkdir(parents=True, exist_ok=True)
    for r in results:
        write_run(out / f"run.{safe_name(r.name)}.trec", ranked[r.name].run, tag=safe_name(r.name))
    write_text_atomic(out / PER_QUERY_FILE, per_query_tsv(results, [c.query.qid for c in cands]))
    write_json_atomic(out / EVALUATION_FILE, report)
    plot(report, out / CHART_FILE)


def per_query_tsv(results: list[SystemResult], qids: list[str]) -> str:
    """`qid, measure, one column per system`, a row per judged query and measure; an empty cell is a
    query the system left out (a failed teacher call)."""
    names = [r.name for r in results]
    lines = ["\t".join(["qid", "measure", *names])]
    measures = list(results[0].per_query) if results else []
    for m in measures:
        for q in qids:
            cells = [r.per_query[m].get(q) for r in results]
            if all(c is None for c in cells):
                continue  # not judged
            lines.append("\t".join([q, m, *("" if c is None else f"{c:.4f}" for c in cells)]))
    return "\n".join(lines) + "\n"


def safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "system"


def _device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"
