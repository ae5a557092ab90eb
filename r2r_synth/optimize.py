"""`r2r-synth optimize`: tune the teacher's prompt programs against human relevance labels.

The pipeline (`run_optimize`):

1. **Labeled set.** Any input `generate` reads that comes with qrels becomes DSPy examples
   (`direct_examples`, `comparison_examples`): a judged candidate is a direct example
   ``(query, document) -> gold grade``; two judged candidates of one query with different grades
   are a comparison example whose gold preference is the higher grade (shown as A or B at random,
   so "always A" scores 50%).
2. **Split by query** (`split_by_query`): a seeded shuffle of the qids, never of rows, so no query
   is on both sides. The optimizer never sees the validation queries: optimizers that select among
   candidates (random search, MIPROv2, GEPA) get a second by-query slice of the *training* queries.
3. **Before**: the current program (`programs/<name>.json` if present, else `prompts/<name>.md`) is
   scored on the validation split with every metric of `r2r_synth.metrics`.
4. **Optimize** with BootstrapFewShot (or random search), MIPROv2 or GEPA, within a budget.
5. **Save** `programs/<name>.json` + `.meta.json` (`teacher.programs.save_program`), **reload** it
   the way `generate` will, and score the reloaded program on the same validation split (**after**).
6. **Report**: every metric before and after, the calls each phase cost, the split, the hashes
   (`OptimizeReport`, saved as JSON).

`run_optimize(config, evaluate_only=True)` (the CLI's `--evaluate-only`) scores the current
programs (and, when they are optimized, the fresh prompt programs beside them) without changing
anything. The library returns data and never prints; the CLI renders the table.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback

from r2r_synth import metrics as M
from r2r_synth.config import OptimizeConfig
from r2r_synth.errors import ConfigError, InputError, TeacherError
from r2r_synth.schemas import Candidates, stable_hash, utcnow

logger = logging.getLogger(__name__)

OPTIMIZERS = ("bootstrap", "mipro", "gepa")
AUTO_PRESETS = ("light", "medium", "heavy")
PROGRAM_CHOICES = ("direct", "comparison", "both")
PRIMARY_METRIC = {"direct": "metric", "comparison": "preference_accuracy"}
REPORT_FILE = "optimize_report.json"

Progress = Callable[[str], None]


# --------------------------------------------------------------------------- labeled set


def _grade(value: int) -> int:
    # The signatures grade 0..3 (TREC DL); other collections use -1/-2 for junk or 4 for "key".
    return max(0, min(3, int(value)))


def direct_examples(candidates: Sequence[Candidates]) -> list[dspy.Example]:
    """One example per judged candidate: inputs ``query``, ``document``; labels ``gold`` (the grade)
    and ``relevance`` (the same grade under the signature's field name, so a labeled demo shows it),
    plus ``qid``/``docid``/``rank`` to group by query. Unjudged candidates have no label and are left out."""
    out = []
    for c in candidates:
        for rank, doc in enumerate(c.documents, start=1):
            g = c.qrels.get(doc.docid)
            if g is None:
                continue
            out.append(
                dspy.Example(
                    qid=c.query.qid,
                    docid=doc.docid,
                    rank=rank,
                    first_stage_score=c.scores[rank - 1] if c.scores is not None else None,
                    query=c.query.text,
                    document=doc.full_text(),
                    gold=_grade(g),
                    relevance=_grade(g),
                ).with_inputs("query", "document")
            )
    return out


def comparison_examples(
    candidates: Sequence[Candidates], *, seed: int = 0, max_pairs_per_query: int | None = 10
) -> list[dspy.Example]:
    """Pairs of judged candidates of one query whose grades differ; ``gold``/``preferred`` is the
    label ("A"/"B") of the higher grade. Which document is A is a seeded coin flip per pair, and at
    most `max_pairs_per_query` pairs are kept per query (a seeded sample), so the set stays small and
    position-balanced."""
    out = []
    for c in candidates:
        judged = [(d, _grade(c.qrels[d.docid])) for d in c.documents if d.docid in c.qrels]
        pairs = [(a, b) for i, a in enumerate(judged) for b in judged[i + 1 :] if a[1] != b[1]]
        # A per-query generator: the pairs of one query do not change when another query is added.
        rng = random.Random(f"{seed}:{c.query.qid}")
        rng.shuffle(pairs)
        if max_pairs_per_query is not None:
            pairs = pairs[:max_pairs_per_query]
        for (da, ga), (db, gb) in pairs:
            if rng.random() < 0.5:
                (da, ga), (db, gb) = (db, gb), (da, ga)
            label = "A" if ga > gb else "B"
            out.append(
                dspy.Example(
                    qid=c.query.qid,
                    docid_a=da.docid,
                    docid_b=db.docid,
                    query=c.query.text,
                    document_a=da.full_text(),
                    document_b=db.full_text(),
                    gold=label,
                    preferred=label,
                    gold_a=ga,
                    gold_b=gb,
                ).with_inputs("query", "document_a", "document_b")
            )
    return out


def labeled_set_hash(examples: Sequence[dspy.Example]) -> str:
    """Content hash of a labeled set (what was asked and the gold labels, in order)."""
    rows = [{k: v for k, v in ex.toDict().items() if k != "first_stage_score"} for ex in examples]
    return stable_hash(rows, n=16)


@dataclass
class Split:
    """Which queries train and which validate. Disjoint by construction."""

    train: list[str]
    val: list[str]
    seed: int
    val_fraction: float

    def of(self, examples: Sequence[dspy.Example]) -> tuple[list[dspy.Example], list[dspy.Example]]:
        """The examples of the train and the validation queries (input order kept)."""
        train, val = set(self.train), set(self.val)
        return [e for e in examples if e.qid in train], [e for e in examples if e.qid in val]


def split_by_query(qids: Sequence[str], *, val_fraction: float = 0.25, seed: int = 0) -> Split:
    """A deterministic split of `qids` into train and validation queries: sort, shuffle with `seed`,
    the first ``round(n * val_fraction)`` (at least 1, at most n - 1) validate."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be between 0 and 1 (exclusive), not {val_fraction}",
                          hint="e.g. --val-fraction 0.25")
    unique = sorted(set(map(str, qids)))
    if len(unique) < 2:
        raise InputError(
            f"the labeled set has {len(unique)} quer{'y' if len(unique) == 1 else 'ies'} with judged candidates; "
            "a train/validation split by query needs at least 2",
            hint="raise --limit or --depth, or pass qrels that judge more of the candidates",
        )
    random.Random(seed).shuffle(unique)
    n_val = min(len(unique) - 1, max(1, round(len(unique) * val_fraction)))
    return Split(train=sorted(unique[n_val:]), val=sorted(unique[:n_val]), seed=seed, val_fraction=val_fraction)


# --------------------------------------------------------------------------- call counting


class CallCounter(BaseCallback):
    """Counts LM calls (DSPy's `on_lm_start`), apart for the teacher and the prompt model.

    Counted at the LM's `__call__`, so a call DSPy's cache answers counts too: this is the budget
    as the optimizer spends it; a rerun with the cache pays for fewer."""

    def __init__(self, prompt_lm: Any = None):
        self.prompt_lm = prompt_lm
        self.counts = {"teacher": 0, "prompt_model": 0}
        self._lock = threading.Lock()

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        role = "prompt_model" if self.prompt_lm is not None and instance is self.prompt_lm else "teacher"
        with self._lock:
            self.counts[role] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


# --------------------------------------------------------------------------- evaluation


@dataclass
class _Failed:
    """A request that produced no prediction, and why (the executor would swallow a bare exception)."""

    error: Exception


def _predict_all(module: dspy.Module, inputs: list[dict[str, Any]], *, num_threads: int) -> list[Any]:
    """Run `module` on every input; a failure (unparseable reply, bad value, server error) is a
    `_Failed` in its slot, never a missing row."""
    from dspy.utils.parallelizer import ParallelExecutor

    def one(kwargs: dict[str, Any]) -> Any:
        try:
            return module(**kwargs)
        except Exception as e:  # noqa: BLE001 - every failure is counted as a miss below; none is dropped
            return _Failed(e)

    # timeout=0: no straggler resubmission (a slow local teacher is not a stuck one).
    executor = ParallelExecutor(num_threads=num_threads, disable_progress_bar=True, timeout=0,
                                max_errors=len(inputs) + 1)
    return executor.execute(one, inputs)


def _check_failures(name: str, results: list[Any]) -> int:
    failures = [r for r in results if not isinstance(r, dspy.Prediction)]
    if results and len(failures) == len(results):
        first = failures[0].error if isinstance(failures[0], _Failed) else failures[0]
        raise TeacherError(
            f"every one of the {len(results)} {name} requests failed; the first: {type(first).__name__}: {first}",
            hint="check --teacher / --api-base (and the API key in the environment), or try --concurrency 1",
        )
    return len(failures)


def _pred(r: Any) -> Any:
    return r if isinstance(r, dspy.Prediction) else None


def evaluate_direct(
    module: dspy.Module, examples: Sequence[dspy.Example], *, qrels: dict[str, dict[str, int]], num_threads: int = 4
) -> dict[str, float]:
    """Every direct metric of `module` on `examples` (see `r2r_synth.metrics`).

    Graded metrics are over examples; ranking metrics rank each query's judged candidates by the
    teacher's ``2 * relevance + score`` (the grade first, the calibrated score within a grade) and
    average over queries; nDCG@10 uses the query's full `qrels` for the ideal ranking. A failed
    request counts as a wrong answer (and its document ranks last)."""
    results = _predict_all(module, [ex.inputs().toDict() for ex in examples], num_threads=num_threads)
    failed = _check_failures("direct", results)
    gold = [int(ex.gold) for ex in examples]
    grades = [M._pred_grade(_pred(r)) for r in results]
    run: dict[str, dict[str, float]] = {}
    for ex, r, g in zip(examples, results, grades):
        score = getattr(_pred(r), "score", None)
        try:
            s = min(1.0, max(0.0, float(score))) if score is not None else 0.0
        except (TypeError, ValueError):
            s = 0.0
        run.setdefault(ex.qid, {})[ex.docid] = 2.0 * g + s if g is not None else -1.0
    per_query = [M.ranking_metrics(qrels[q], docs) for q, docs in run.items()]
    out = {
        "metric": sum(M.direct_score(g, p) for g, p in zip(gold, grades)) / len(gold) if gold else math.nan,
        "exact": M.exact_agreement(gold, grades),
        "within_1": M.within_one_agreement(gold, grades),
        "binary_accuracy@2": M.binary_accuracy(gold, grades, threshold=2),
        "nDCG@10": M.nanmean(m["nDCG@10"] for m in per_query),
        "kendall_tau": M.nanmean(m["kendall_tau"] for m in per_query),
        "pairwise_accuracy": M.nanmean(m["pairwise_accuracy"] for m in per_query),
        "failed": failed / len(results) if results else math.nan,
        "n": float(len(examples)),
    }
    return out


def first_stage_direct(examples: Sequence[dspy.Example], *, qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """The ranking metrics of the first stage (BM25) on the same judged candidates: the bar a teacher
    has to clear. Uses the first-stage scores when known, else the first-stage rank."""
    run: dict[str, dict[str, float]] = {}
    for ex in examples:
        s = ex.first_stage_score if ex.get("first_stage_score") is not None else -float(ex.rank)
        run.setdefault(ex.qid, {})[ex.docid] = float(s)
    per_query = [M.ranking_metrics(qrels[q], docs) for q, docs in run.items()]
    return {
        "nDCG@10": M.nanmean(m["nDCG@10"] for m in per_query),
        "kendall_tau": M.nanmean(m["kendall_tau"] for m in per_query),
        "pairwise_accuracy": M.nanmean(m["pairwise_accuracy"] for m in per_query),
    }


def evaluate_comparison(
    module: dspy.Module, examples: Sequence[dspy.Example], *, swap: bool = True, num_threads: int = 4
) -> dict[str, float]:
    """Every comparison metric of `module` on `examples`: preference accuracy as asked and, with
    `swap`, with the documents swapped, and swap consistency (both answers prefer the same document)."""
    asked = [ex.inputs().toDict() for ex in examples]
    inputs = asked + ([{**a, "document_a": a["document_b"], "document_b": a["document_a"]} for a in asked]
                      if swap else [])
    results = _predict_all(module, inputs, num_threads=num_threads)
    failed = _check_failures("comparison", results)
    first = [M._pred_label(_pred(r)) for r in results[: len(asked)]]
    gold = [str(ex.gold) for ex in examples]
    out = {"preference_accuracy": M.preference_accuracy(gold, first)}
    if swap:
        second = [M._pred_label(_pred(r)) for r in results[len(asked) :]]
        flipped = ["B" if g == "A" else "A" for g in gold]
        out["preference_accuracy_swapped"] = M.preference_accuracy(flipped, second)
        out["swap_consistency"] = M.swap_consistency(zip(first, second), frame="raw")
    out["failed"] = failed / len(results) if results else math.nan
    out["n"] = float(len(examples))
    return out


# --------------------------------------------------------------------------- optimizers


def _train_dev(train: list[dspy.Example], *, seed: int) -> tuple[list[dspy.Example], list[dspy.Example]]:
    """A by-query slice of the training examples for optimizers that select among candidates (the
    validation split stays unseen). With one training query, it selects on the training examples."""
    qids = sorted({e.qid for e in train})
    if len(qids) < 2:
        return train, train
    s = split_by_query(qids, val_fraction=0.25, seed=seed + 1)
    return s.of(train)


def _metric_for(name: str) -> Callable[..., Any]:
    return M.direct_metric if name == "direct" else M.comparison_metric


def _feedback_metric_for(name: str) -> Callable[..., Any]:
    return M.direct_feedback_metric if name == "direct" else M.comparison_feedback_metric


def compile_program(
    name: str,
    module: dspy.Module,
    *,
    trainset: list[dspy.Example],
    config: OptimizeConfig,
    lm: Any,
    prompt_lm: Any,
) -> tuple[dspy.Module, dict[str, Any]]:
    """Run the configured optimizer on `module` with `trainset` (validation examples never come
    here). Returns the compiled module and the optimizer settings actually used (for the meta file).
    The teacher LM and adapter come from the surrounding `dspy.context`."""
    cfg = config
    rng = random.Random(cfg.seed)
    train = list(trainset)
    # BootstrapFewShot walks the trainset in order: shuffle so demos do not all come from one query.
    rng.shuffle(train)
    metric = _metric_for(name)
    settings: dict[str, Any] = {"optimizer": cfg.optimizer}

    if cfg.optimizer == "bootstrap":
        inner, dev = _train_dev(train, seed=cfg.seed)
        per_candidate = len(inner) + len(dev)
        candidates = cfg.candidates
        if candidates and cfg.max_calls is not None:
            # Random search: zero-shot and labeled-only cost one dev evaluation each, every other
            # candidate one bootstrap pass plus one dev evaluation.
            affordable = (cfg.max_calls - 2 * len(dev)) // max(1, per_candidate) - 1
            candidates = max(0, min(candidates, affordable))
            if candidates < cfg.candidates:
                logger.warning("--max-calls %d affords %d random-search candidates, not %d",
                               cfg.max_calls, candidates, cfg.candidates)
        if candidates > 0:
            opt = dspy.BootstrapFewShotWithRandomSearch(
                metric=metric, max_bootstrapped_demos=cfg.max_demos, max_labeled_demos=cfg.labeled_demos,
                num_candidate_programs=candidates, num_threads=cfg.concurrency,
            )
            settings.update(kind="BootstrapFewShotWithRandomSearch", num_candidate_programs=candidates,
                            train_examples=len(inner), dev_examples=len(dev))
            compiled = opt.compile(module, trainset=inner, valset=dev)
        else:
            if cfg.max_calls is not None:
                # One call per training example at most (max_rounds=1), and bootstrapping stops as
                # soon as max_demos demos passed the strict metric.
                train = train[: cfg.max_calls]
            opt = dspy.BootstrapFewShot(
                metric=metric, max_bootstrapped_demos=cfg.max_demos, max_labeled_demos=cfg.labeled_demos,
                max_rounds=1,
            )
            settings.update(kind="BootstrapFewShot", train_examples=len(train))
            compiled = opt.compile(module, trainset=train)
        settings.update(max_bootstrapped_demos=cfg.max_demos, max_labeled_demos=cfg.labeled_demos)
        return compiled, settings

    inner, dev = _train_dev(train, seed=cfg.seed)
    if cfg.optimizer == "mipro":
        kwargs: dict[str, Any] = {}
        compile_kwargs: dict[str, Any] = {}
        if cfg.max_calls is not None:
            # Budget -> explicit settings: bootstrapping costs up to n x |train| teacher calls, each
            # trial one full evaluation of the dev slice (no minibatches on small sets).
            n = 3
            trials = max(1, (cfg.max_calls - n * len(inner)) // max(1, len(dev)))
            kwargs.update(auto=None, num_candidates=n)
            compile_kwargs.update(num_trials=trials, minibatch=False)
            settings.update(num_candidates=n, num_trials=trials)
        else:
            kwargs.update(auto=cfg.auto or "light")
            compile_kwargs.update(minibatch_size=min(35, len(dev)))
            settings.update(auto=kwargs["auto"])
        opt = dspy.MIPROv2(
            metric=metric, prompt_model=prompt_lm, task_model=lm, max_bootstrapped_demos=cfg.max_demos,
            max_labeled_demos=cfg.labeled_demos, num_threads=cfg.concurrency, seed=cfg.seed, verbose=False,
            track_stats=False, **kwargs,
        )
        settings.update(kind="MIPROv2", train_examples=len(inner), dev_examples=len(dev),
                        max_bootstrapped_demos=cfg.max_demos, max_labeled_demos=cfg.labeled_demos)
        return opt.compile(module, trainset=inner, valset=dev, **compile_kwargs), settings

    if cfg.optimizer == "gepa":
        budget = {"max_metric_calls": cfg.max_calls} if cfg.max_calls is not None else {"auto": cfg.auto or "light"}
        opt = dspy.GEPA(
            metric=_feedback_metric_for(name), reflection_lm=prompt_lm, num_threads=cfg.concurrency,
            seed=cfg.seed, track_stats=False, **budget,
        )
        settings.update(kind="GEPA", train_examples=len(inner), dev_examples=len(dev), **budget)
        return opt.compile(module, trainset=inner, valset=dev), settings

    raise ConfigError(f"unknown optimizer {cfg.optimizer!r}", hint=f"choose one of {', '.join(OPTIMIZERS)}")


# --------------------------------------------------------------------------- report


@dataclass
class ProgramReport:
    """Before/after of one program on the validation split, and what it cost."""

    name: str
    before: dict[str, float]
    after: dict[str, float] | None
    first_stage: dict[str, float] | None
    primary_metric: str
    calls: dict[str, Any]
    program_hash_before: str
    program_hash_after: str | None
    path: str | None
    train_examples: int
    val_examples: int
    demos: int | None = None
    instructions_changed: bool | None = None
    optimizer_settings: dict[str, Any] = field(default_factory=dict)
    wall_s: float | None = None

    @property
    def improved(self) -> bool | None:
        if self.after is None:
            return None
        return self.after[self.primary_metric] >= self.before[self.primary_metric]


@dataclass
class OptimizeReport:
    """What `run_optimize` did: per program before/after metrics on the validation split."""

    evaluate_only: bool
    optimizer: str | None
    teacher: str
    prompt_model: str | None
    labeled_set: dict[str, Any]
    split: dict[str, Any]
    programs: dict[str, ProgramReport]
    config: dict[str, Any]
    dspy_version: str
    created_at: str
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        return _nan_to_none(d)


def _nan_to_none(obj: Any) -> Any:
    # JSON has no NaN; an undefined metric (e.g. Kendall's tau of a constant ranking) is null.
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the command


def _program_names(program: str) -> list[str]:
    if program not in PROGRAM_CHOICES:
        raise ConfigError(f"unknown --program {program!r}", hint=f"choose one of {', '.join(PROGRAM_CHOICES)}")
    return ["direct", "comparison"] if program == "both" else [program]


def _validate(cfg: OptimizeConfig) -> None:
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown --optimizer {cfg.optimizer!r}", hint=f"choose one of {', '.join(OPTIMIZERS)}")
    if cfg.auto is not None and cfg.auto not in AUTO_PRESETS:
        raise ConfigError(f"unknown --auto {cfg.auto!r}", hint=f"choose one of {', '.join(AUTO_PRESETS)}")
    if cfg.auto is not None and cfg.max_calls is not None:
        raise ConfigError("--auto and --max-calls both set the budget", hint="give one of them")
    if cfg.auto is not None and cfg.optimizer == "bootstrap":
        raise ConfigError("--auto is a preset of mipro and gepa, not of bootstrap",
                          hint="use --max-calls (and --candidates for random search) with bootstrap")
    if cfg.max_calls is not None and cfg.max_calls < 1:
        raise ConfigError(f"--max-calls must be at least 1, not {cfg.max_calls}", hint="e.g. --max-calls 50")
    _program_names(cfg.program)


def build_labeled_set(
    candidates: Sequence[Candidates], *, seed: int, val_fraction: float, max_pairs_per_query: int | None
) -> tuple[dict[str, list[dspy.Example]], Split, dict[str, Any]]:
    """The examples of both programs, their by-query split, and a summary (hash, counts) for reports."""
    if not any(c.qrels for c in candidates):
        raise InputError(
            f"none of the {len(candidates)} queries has gold labels: optimize needs qrels",
            hint="pass --qrels (TREC: qid Q0 docid grade, or BEIR qrels TSV), or an input that carries them",
        )
    examples = {
        "direct": direct_examples(candidates),
        "comparison": comparison_examples(candidates, seed=seed, max_pairs_per_query=max_pairs_per_query),
    }
    split = split_by_query([e.qid for e in examples["direct"]], val_fraction=val_fraction, seed=seed)
    total = sum(len(c.documents) for c in candidates)
    summary = {
        "hash": labeled_set_hash(examples["direct"] + examples["comparison"]),
        "queries": len({e.qid for e in examples["direct"]}),
        "direct_examples": len(examples["direct"]),
        "comparison_examples": len(examples["comparison"]),
        "unjudged_candidates": total - len(examples["direct"]),
    }
    return examples, split, summary


def _qrels_of(candidates: Sequence[Candidates]) -> dict[str, dict[str, int]]:
    return {c.query.qid: {d: _grade(g) for d, g in c.qrels.items()} for c in candidates}


def _evaluate(name: str, module: dspy.Module, val: list[dspy.Example], *, qrels: dict[str, dict[str, int]],
              cfg: OptimizeConfig) -> dict[str, float]:
    if name == "direct":
        return evaluate_direct(module, val, qrels=qrels, num_threads=cfg.concurrency)
    return evaluate_comparison(module, val, swap=cfg.swap, num_threads=cfg.concurrency)


def run_optimize(
    config: OptimizeConfig,
    *,
    candidates: Sequence[Candidates] | None = None,
    lm: Any = None,
    adapter: Any = None,
    prompt_lm: Any = None,
    progress: Progress | None = None,
) -> OptimizeReport:
    """Optimize (or with ``config.evaluate_only`` just score) the teacher programs; see the module doc.

    `candidates` defaults to ``load_candidates(config.input, ...)``. `lm`/`adapter` default to the
    teacher opened from ``config.teacher`` (the embedded one when None) and `prompt_lm` to
    ``config.prompt_model`` (else the teacher); pass them to drive the optimizer with any `dspy.LM`
    (e.g. DSPy's `DummyLM` in tests). Writes the programs (unless evaluating only) and the report.
    """
    from r2r_synth.teacher.lm import make_teacher, open_teacher
    from r2r_synth.teacher.policy import command_policy

    cfg = config
    _validate(cfg)
    say = progress or (lambda msg: logger.info(msg))
    if candidates is None:
        from r2r_synth.io.candidates import load_candidates

        say(f"loading {cfg.input}")
        candidates = load_candidates(cfg.input, qrels=cfg.qrels, limit=cfg.limit, depth=cfg.depth)
    examples, split, summary = build_labeled_set(
        candidates, seed=cfg.seed, val_fraction=cfg.val_fraction, max_pairs_per_query=cfg.max_pairs_per_query
    )
    qrels = _qrels_of(candidates)

    if lm is not None:
        return _run(cfg, examples, split, summary, qrels, lm=lm, adapter=adapter, prompt_lm=prompt_lm,
                    teacher_name=getattr(lm, "model", "custom"), prompt_name=getattr(prompt_lm, "model", None),
                    say=say)
    say("opening the teacher" + ("" if cfg.teacher else " (embedded: starting llama.cpp)"))
    policy = command_policy(embedded=cfg.teacher is None, timeout=cfg.timeout, api_key=cfg.api_key)
    with open_teacher(cfg.teacher, api_base=cfg.api_base, api_key=cfg.api_key, temperature=cfg.temperature,
                      max_tokens=cfg.max_tokens, policy=policy) as teacher:
        task_lm = teacher.lm
        if cfg.cache:
            # DSPy's request cache: rerunning the same optimization (or the before-evaluation of
            # the next one) costs no calls. generate keeps its own content-addressed cache.
            try:
                task_lm = task_lm.copy(cache=True)
            except (TypeError, ValueError) as e:
                logger.warning("the teacher LM cannot cache (%s); every call goes out", e)
        p_lm, p_name = task_lm, None
        if cfg.prompt_model:
            pt = make_teacher(cfg.prompt_model, api_base=cfg.prompt_api_base, temperature=1.0,
                              max_tokens=cfg.max_tokens, policy=policy)
            p_lm, p_name = pt.lm, pt.name
        return _run(cfg, examples, split, summary, qrels, lm=task_lm, adapter=teacher.adapter,
                    prompt_lm=p_lm, teacher_name=teacher.name, prompt_name=p_name, say=say)


def _run(cfg: OptimizeConfig, examples: dict[str, list[dspy.Example]], split: Split, summary: dict[str, Any],
         qrels: dict[str, dict[str, int]], *, lm: Any, adapter: Any, prompt_lm: Any, teacher_name: str,
         prompt_name: str | None, say: Progress) -> OptimizeReport:
    from r2r_synth.teacher.programs import build_program, load_program, program_hash, save_program

    prompt_lm = prompt_lm if prompt_lm is not None else lm
    counter = CallCounter(prompt_lm if prompt_lm is not lm else None)
    reports: dict[str, ProgramReport] = {}
    with dspy.context(lm=lm, adapter=adapter, callbacks=[counter]):
        for name in _program_names(cfg.program):
            train, val = split.of(examples[name])
            if not val or (not train and not cfg.evaluate_only):
                raise InputError(
                    f"the {name} labeled set has {len(train)} training and {len(val)} validation examples",
                    hint="raise --limit or --depth (comparison needs two judged candidates of different grades "
                    "in a query)",
                )
            t0 = time.perf_counter()
            current = load_program(name, programs_dir=cfg.programs_dir)
            first_stage = first_stage_direct(val, qrels=qrels) if name == "direct" else None
            calls: dict[str, Any] = {}

            if cfg.evaluate_only:
                before_module = build_program(name) if current.optimized else current.module
                c0 = counter.snapshot()
                if current.optimized:
                    say(f"{name}: scoring the fresh prompt program on {len(val)} validation examples")
                    before = _evaluate(name, before_module, val, qrels=qrels, cfg=cfg)
                    c1 = counter.snapshot()
                    calls["evaluate_fresh"] = _delta(c1, c0)["teacher"]
                    say(f"{name}: scoring {current.path} on {len(val)} validation examples")
                    after = _evaluate(name, current.module, val, qrels=qrels, cfg=cfg)
                    calls["evaluate_current"] = _delta(counter.snapshot(), c1)["teacher"]
                else:
                    say(f"{name}: scoring the prompt program (no {name}.json in {cfg.programs_dir})")
                    before, after = _evaluate(name, current.module, val, qrels=qrels, cfg=cfg), None
                    calls["evaluate_current"] = _delta(counter.snapshot(), c0)["teacher"]
                reports[name] = ProgramReport(
                    name=name, before=before, after=after, first_stage=first_stage,
                    primary_metric=PRIMARY_METRIC[name], calls=calls,
                    program_hash_before=program_hash(before_module),
                    program_hash_after=current.program_hash if current.optimized else None,
                    path=str(current.path) if current.path else None, train_examples=len(train),
                    val_examples=len(val), demos=len(current.predictor.demos),
                    wall_s=round(time.perf_counter() - t0, 2),
                )
                continue

            # Optimize from the human prompt, not from a previous optimization's demos: each run
            # is reproducible from prompts/ + the labeled set, and "before" is the program generate
            # would use right now.
            start = build_program(name)
            c0 = counter.snapshot()
            say(f"{name}: scoring the current program on {len(val)} validation examples (before)")
            before = _evaluate(name, current.module, val, qrels=qrels, cfg=cfg)
            c1 = counter.snapshot()
            say(f"{name}: {cfg.optimizer} on {len(train)} training examples")
            compiled, settings = compile_program(name, start, trainset=train, config=cfg, lm=lm, prompt_lm=prompt_lm)
            c2 = counter.snapshot()
            meta = {
                "optimizer": cfg.optimizer,
                "optimizer_settings": settings,
                "teacher": teacher_name,
                "prompt_model": prompt_name or teacher_name,
                "labeled_set": {**summary, "program": name, "train_examples": len(train), "val_examples": len(val)},
                "split": {"seed": split.seed, "val_fraction": split.val_fraction, "train_qids": split.train,
                          "val_qids": split.val},
                "metric": PRIMARY_METRIC[name],
                "metric_before": _nan_to_none(before),
                "program_hash_before": current.program_hash,
                "config": cfg.public_dict(),
            }
            path = save_program(compiled, name, programs_dir=cfg.programs_dir, meta=meta)
            # Score what generate will load, not the object in memory: this is also the round trip.
            saved = load_program(name, programs_dir=cfg.programs_dir)
            say(f"{name}: scoring the optimized program on {len(val)} validation examples (after)")
            after = _evaluate(name, saved.module, val, qrels=qrels, cfg=cfg)
            c3 = counter.snapshot()
            calls.update(evaluate_before=_delta(c1, c0)["teacher"], optimize=_delta(c2, c1),
                         evaluate_after=_delta(c3, c2)["teacher"])
            # The meta file also carries the after-metric, so a program explains itself.
            meta_path = path.with_name(f"{name}.meta.json")
            full_meta = json.loads(meta_path.read_text(encoding="utf-8"))
            full_meta.update(metric_after=_nan_to_none(after), calls=calls)
            _write_json(meta_path, full_meta)
            reports[name] = ProgramReport(
                name=name, before=before, after=after, first_stage=first_stage,
                primary_metric=PRIMARY_METRIC[name], calls=calls,
                program_hash_before=current.program_hash, program_hash_after=saved.program_hash, path=str(path),
                train_examples=len(train), val_examples=len(val), demos=len(saved.predictor.demos),
                instructions_changed=saved.predictor.signature.instructions
                != start.predictors()[0].signature.instructions,
                optimizer_settings=settings, wall_s=round(time.perf_counter() - t0, 2),
            )
            if not reports[name].improved:
                logger.warning("%s: the validation %s went from %.3f to %.3f", name, PRIMARY_METRIC[name],
                               before[PRIMARY_METRIC[name]], after[PRIMARY_METRIC[name]])

    report = OptimizeReport(
        evaluate_only=cfg.evaluate_only,
        optimizer=None if cfg.evaluate_only else cfg.optimizer,
        teacher=teacher_name,
        prompt_model=None if cfg.evaluate_only else (prompt_name or teacher_name),
        labeled_set=summary,
        split={"seed": split.seed, "val_fraction": split.val_fraction, "train_qids": split.train,
               "val_qids": split.val},
        programs=reports,
        config=cfg.public_dict(),
        dspy_version=dspy.__version__,
        created_at=utcnow().isoformat(),
    )
    report.path = cfg.report or Path(cfg.programs_dir) / REPORT_FILE
    _write_json(report.path, report.to_dict())
    return report
