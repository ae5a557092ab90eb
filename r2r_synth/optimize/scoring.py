"""Scoring a program (direct, comparison, listwise) on the validation split, and counting what the
teacher was asked.

**A failed call is not a wrong answer.** Every teacher call goes through the command's
`CallPolicy` (retries with backoff on 429/5xx/timeouts). A call that still fails (`CallFailed`,
found with `call_failure`) says nothing about the program, so it leaves the metrics:

- direct: the example leaves the graded metrics (``metric``, ``exact``, ``within_1``,
  ``binary_accuracy@2``), and a query with any failed call leaves the ranking metrics (``nDCG@10``,
  ``kendall_tau``, ``pairwise_accuracy``: a ranking with a hole in it is not the teacher's ranking);
- comparison: a pair with a failed call in either order leaves every comparison metric.

A reply that came back but cannot be used (unparseable, a grade out of range) *is* the teacher's
answer: it counts as a miss, and ``invalid`` is the share of such replies. Each scores dict also
carries its counts (`COUNTS`): ``n`` (examples graded), ``failed_calls`` and, for direct,
``queries_left_out``. When every call of a scoring failed there is nothing to report: it raises
(`all_failed`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback

from r2r_synth import metrics as M
from r2r_synth.errors import TeacherError
from r2r_synth.teacher.policy import CallFailed, call_failure

#: Keys of a scores dict that are counts, not metrics (the CLI shows them apart; they differ between
#: a clean and a faulty run of the same program while every metric stays the same).
COUNTS = ("n", "failed_calls", "queries_left_out")


# --------------------------------------------------------------------------- call counting


class CallCounter(BaseCallback):
    """Counts LM calls (DSPy's `on_lm_start`) and failed ones (`on_lm_end` with a `CallFailed`
    behind its exception), apart for the teacher and the prompt model.

    Counted at the LM's `__call__`, so a call DSPy's cache answers counts too: this is the budget
    as the optimizer spends it; a rerun with the cache pays for fewer. A call is one request after
    the policy's retries (the retries are the policy's, not the optimizer's)."""

    def __init__(self, prompt_lm: Any = None):
        self.prompt_lm = prompt_lm
        self.counts = {"teacher": 0, "prompt_model": 0, "teacher_failed": 0, "prompt_model_failed": 0}
        self._roles: dict[str, str] = {}
        self._lock = threading.Lock()

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        role = "prompt_model" if self.prompt_lm is not None and instance is self.prompt_lm else "teacher"
        with self._lock:
            self.counts[role] += 1
            self._roles[call_id] = role

    def on_lm_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
        with self._lock:
            role = self._roles.pop(call_id, "teacher")
            if exception is not None and call_failure(exception) is not None:
                self.counts[f"{role}_failed"] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """What a phase cost: the difference of two `CallCounter.snapshot`s."""
    return {k: after[k] - before.get(k, 0) for k in after}


# --------------------------------------------------------------------------- running a program


@dataclass
class _Failed:
    """A request that produced no prediction, and why (the executor would swallow a bare exception)."""

    error: Exception


def _predict_all(module: dspy.Module, inputs: list[dict[str, Any]], *, num_threads: int) -> list[Any]:
    """Run `module` on every input; a failure (a failed call, an unparseable reply, a bad value) is a
    `_Failed` in its slot, never a missing row."""
    from dspy.utils.parallelizer import ParallelExecutor

    def one(kwargs: dict[str, Any]) -> Any:
        try:
            return module(**kwargs)
        except Exception as e:  # noqa: BLE001 - sorted into failed calls and misses by _sort_out
            return _Failed(e)

    # timeout=0: no straggler resubmission (a slow local teacher is not a stuck one).
    executor = ParallelExecutor(num_threads=num_threads, disable_progress_bar=True, timeout=0,
                                max_errors=len(inputs) + 1)
    return executor.execute(one, inputs)


def all_failed(what: str, failures: Sequence[CallFailed]) -> TeacherError:
    """The error of a phase whose every one of `failures` is a failed call: the `CallFailed` itself
    when no retry could fix it (a bad key, an unknown model: its message and fix say so), else a
    `TeacherError` that counts them and quotes the first. Messages are masked by the policy."""
    first = failures[0]
    if first.cause in ("auth", "config"):
        return first
    return TeacherError(f"every one of the {len(failures)} {what} teacher calls failed after its retries; "
                        f"nothing was scored. The first: {first.message}", hint=first.hint)


def _sort_out(what: str, results: list[Any]) -> tuple[list[Any], list[bool]]:
    """``(predictions, failed)``: the prediction of each request (None for an unusable reply, a
    miss) and whether its call failed. Raises `all_failed` when every call failed."""
    failures = [call_failure(r.error) if isinstance(r, _Failed) else None for r in results]
    failed = [f is not None for f in failures]
    if results and all(failed):
        raise all_failed(what, [f for f in failures if f is not None])
    return [r if isinstance(r, dspy.Prediction) else None for r in results], failed


def _share(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else math.nan


# --------------------------------------------------------------------------- the two programs


def _induced_score(pred: Any, g: int | None) -> float:
    # The teacher's ranking: the grade first, the calibrated score within a grade; a miss ranks last.
    if g is None:
        return -1.0
    try:
        s = float(pred.score) if getattr(pred, "score", None) is not None else 0.0
    except (TypeError, ValueError):
        s = 0.0
    return 2.0 * g + min(1.0, max(0.0, s))


def evaluate_direct(
    module: dspy.Module, examples: Sequence[dspy.Example], *, qrels: dict[str, dict[str, int]], num_threads: int = 4
) -> dict[str, float]:
    """Every direct metric of `module` on `examples` (see `r2r_synth.metrics`), and its `COUNTS`.

    Graded metrics are over examples; ranking metrics rank each query's judged candidates by the
    teacher's ``2 * relevance + score`` and average over queries; nDCG@10 uses the query's full
    `qrels` for the ideal ranking. An unusable reply counts as a wrong answer (its document ranks
    last); a failed call leaves the metrics (see the module docstring)."""
    results = _predict_all(module, [ex.inputs().toDict() for ex in examples], num_threads=num_threads)
    preds, failed = _sort_out("direct", results)
    kept = [(ex, p) for ex, p, f in zip(examples, preds, failed) if not f]
    left_out = {ex.qid for ex, f in zip(examples, failed) if f}
    gold = [int(ex.gold) for ex, _ in kept]
    grades = [M._pred_grade(p) for _, p in kept]
    run: dict[str, dict[str, float]] = {}
    for (ex, p), g in zip(kept, grades):
        if ex.qid not in left_out:
            run.setdefault(ex.qid, {})[ex.docid] = _induced_score(p, g)
    per_query = [M.ranking_metrics(qrels[q], docs) for q, docs in run.items()]
    return {
        "metric": sum(M.direct_score(g, p) for g, p in zip(gold, grades)) / len(gold) if gold else math.nan,
        "exact": M.exact_agreement(gold, grades),
        "within_1": M.within_one_agreement(gold, grades),
        "binary_accuracy@2": M.binary_accuracy(gold, grades, threshold=2),
        "nDCG@10": M.nanmean(m["nDCG@10"] for m in per_query),
        "kendall_tau": M.nanmean(m["kendall_tau"] for m in per_query),
        "pairwise_accuracy": M.nanmean(m["pairwise_accuracy"] for m in per_query),
        "invalid": _share([p is None for _, p in kept]),
        "n": float(len(kept)),
        "failed_calls": float(sum(failed)),
        "queries_left_out": float(len(left_out)),
    }


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


def evaluate_listwise(module: dspy.Module, examples: Sequence[dspy.Example], *, num_threads: int = 4) -> dict[str, float]:
    """Every listwise metric of `module` on `examples` (one window per query; see
    `r2r_synth.optimize.listwise`), and its `COUNTS`: nDCG@10, pairwise accuracy and Kendall's tau
    averaged over the windows, the share of replies whose permutation was repaired and of unusable
    ones (which score 0). A window whose call failed leaves every metric."""
    from r2r_synth.optimize.listwise import listwise_scores

    results = _predict_all(module, [ex.inputs().toDict() for ex in examples], num_threads=num_threads)
    preds, failed = _sort_out("listwise", results)
    per = [listwise_scores(ex, p) for ex, p, f in zip(examples, preds, failed) if not f]
    out = {k: M.nanmean(s[k] for s in per) for k in ("nDCG@10", "pairwise_accuracy", "kendall_tau")}
    out["repaired"] = _share([s["repaired"] == 1.0 for s in per])
    out["invalid"] = _share([s["invalid"] == 1.0 for s in per])
    out["n"] = float(len(per))
    out["failed_calls"] = float(sum(failed))
    out["queries_left_out"] = float(sum(failed))
    return out


def evaluate_comparison(
    module: dspy.Module, examples: Sequence[dspy.Example], *, swap: bool = True, num_threads: int = 4
) -> dict[str, float]:
    """Every comparison metric of `module` on `examples`, and its `COUNTS`: preference accuracy as
    asked and, with `swap`, with the documents swapped, and swap consistency (both answers prefer
    the same document). A pair with a failed call in either order leaves every metric."""
    asked = [ex.inputs().toDict() for ex in examples]
    inputs = asked + ([{**a, "document_a": a["document_b"], "document_b": a["document_a"]} for a in asked]
                      if swap else [])
    preds, failed = _sort_out("comparison", _predict_all(module, inputs, num_threads=num_threads))
    k = len(asked)
    keep = [i for i in range(k) if not (failed[i] or (swap and failed[k + i]))]
    first = [M._pred_label(preds[i]) for i in keep]
    gold = [str(examples[i].gold) for i in keep]
    out = {"preference_accuracy": M.preference_accuracy(gold, first)}
    used = [preds[i] for i in keep]
    if swap:
        second = [M._pred_label(preds[k + i]) for i in keep]
        flipped = ["B" if g == "A" else "A" for g in gold]
        out["preference_accuracy_swapped"] = M.preference_accuracy(flipped, second)
        out["swap_consistency"] = M.swap_consistency(zip(first, second), frame="raw")
        used += [preds[k + i] for i in keep]
    out["invalid"] = _share([p is None for p in used])
    out["n"] = float(len(keep))
    out["failed_calls"] = float(sum(failed))
    return out
