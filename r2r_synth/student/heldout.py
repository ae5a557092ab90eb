"""The held-out share of `train`'s queries: the data that chooses the epoch count and the hybrid.

A student is chosen on queries it did not train on, never on a test collection. `split` sets aside a
seeded share (`--holdout`, 0.2) of the training queries that have a relevant document, by query (a
hash of the seed and the qid, so a query is held out or not whatever else the corpus holds); the
student trains on the rest. After each epoch `Tracker` ranks the held-out queries' documents with the
model as it stands and measures nDCG@10 against the labels training uses (gold grades with `--labels
gold`, the teacher's grades otherwise); the best epoch's weights are kept (early stopping). On that
epoch's scores `fit_hybrid` fits the fusion with the first stage (`r2r_synth.hybrid`): each method over
a grid of weights, the best kept; a weight of 0 means the student ranks alone, and the record says why.

The first stage of a held-out query is its candidate list's scores (BM25 of a BEIR or TREC directory, a
RankGPT file's scores); a corpus without them (a teacher's run directory) gets BM25 over each query's
own documents, computed as `rerank` computes it over a user's documents.

Everything measured is recorded in `r2r_config.json` (`HeldOut`): the qids, each epoch's nDCG@10, the
epoch kept, each method's nDCG@10 at every weight.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from r2r_synth.artifacts import EpochScore, HeldOut
from r2r_synth.hybrid import METHODS, WEIGHT_GRID, Hybrid, fuse_scores
from r2r_synth.student.corpus import TrainingView, ViewQuery

log = logging.getLogger(__name__)

#: Below this many queries with a relevant document nothing is held out (too few to choose anything by).
MIN_QUERIES = 20
MEASURE = "nDCG@10"


@dataclass
class HeldOutQuery:
    """One held-out query: its documents (in first-stage order), their first-stage scores and labels."""

    qid: str
    text: str
    docids: list[str]
    texts: list[str]
    first_stage: list[float]
    qrels: dict[str, int]


def is_heldout(qid: str, *, seed: int, fraction: float) -> bool:
    """Whether `qid` is in the held-out share: a seeded hash of the qid, so the split is by query."""
    h = hashlib.sha256(f"heldout:{seed}:{qid}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


def labels_of(q: ViewQuery, *, labels: str) -> dict[str, int]:
    """The query's graded labels training learns from, as integer grades for nDCG."""
    from r2r_synth.student.cross_encoder import teacher_grades

    return {d: round(g) for d, g in teacher_grades(q, labels=labels).items()}


def split(view: TrainingView, *, fraction: float, seed: int,
          labels: str) -> tuple[TrainingView, list[HeldOutQuery], str]:
    """(the view to train on, the held-out queries, a line saying what was held out or why nothing was)."""
    if fraction <= 0:
        return view, [], "--holdout 0: every query trains, nothing is held out"
    eligible = [q for q in view.queries if len(q.docs) > 1 and any(g > 0 for g in labels_of(q, labels=labels).values())]
    if len(eligible) < MIN_QUERIES:
        return view, [], (f"only {len(eligible)} training queries have a relevant document and two or more "
                          f"documents; at least {MIN_QUERIES} are needed to hold some out")
    held = {q.qid for q in eligible if is_heldout(q.qid, seed=seed, fraction=fraction)}
    if not held or len(held) == len(view.queries):
        return view, [], f"a share of {fraction} holds out {len(held)} of {len(view.queries)} queries"
    kept = [q for q in view.queries if q.qid not in held]
    counts = {
        "direct": sum(len(d.teacher_scores) for q in kept for d in q.docs.values()),
        "comparison": sum(len(q.preferences) for q in kept),
        "listwise": sum(len(q.permutations) for q in kept),
        "candidates": min(view.counts.get("candidates", 0), len(kept)),
        "rankings": min(view.counts.get("rankings", 0), len(kept)),
    }
    train_view = TrainingView(queries=kept, sources=view.sources, rejects=view.rejects, counts=counts)
    queries = [_heldout_query(q, labels=labels) for q in view.queries if q.qid in held]
    computed = sum(1 for q in view.queries if q.qid in held and any(d.first_stage is None for d in q.docs.values()))
    source = ("the candidates' first-stage scores" if not computed else
              f"BM25 over each query's own documents ({computed} of {len(queries)} queries carry no first-stage "
              "scores)")
    return train_view, queries, source


def _heldout_query(q: ViewQuery, *, labels: str) -> HeldOutQuery:
    docs = list(q.docs.values())
    scores = [d.first_stage for d in docs]
    if any(s is None for s in scores):
        from r2r_synth.io.first_stage import score_documents

        scores = score_documents(q.text, [d.text for d in docs])
    return HeldOutQuery(qid=q.qid, text=q.text, docids=[d.docid for d in docs], texts=[d.text for d in docs],
                        first_stage=[float(s) for s in scores], qrels=labels_of(q, labels=labels))


def ndcg(queries: list[HeldOutQuery], scores: dict[str, list[float]]) -> float:
    """Mean nDCG@10 of `scores` (qid -> one score per document) over `queries` (ir-measures)."""
    from r2r_synth.metrics import ir_eval

    run = {q.qid: dict(zip(q.docids, scores[q.qid])) for q in queries}
    return float(ir_eval({q.qid: q.qrels for q in queries}, run, [MEASURE])[MEASURE])


#: Scores the held-out queries with a model as it stands: qid -> one score per document.
ScoreFn = Callable[[Any, list[HeldOutQuery]], dict[str, list[float]]]


@dataclass
class Tracker:
    """Measures the held-out queries after each epoch and keeps the best weights (in memory)."""

    queries: list[HeldOutQuery]
    score_fn: ScoreFn
    epochs: list[EpochScore] = field(default_factory=list)
    best: EpochScore | None = None
    best_scores: dict[str, list[float]] = field(default_factory=dict)
    best_state: dict[str, Any] | None = None

    def measure(self, model: Any, *, epoch: float, step: int) -> None:
        if self.epochs and self.epochs[-1].step == step:
            return  # the end of training right after an epoch's end: already measured
        scores = self.score_fn(model, self.queries)
        score = EpochScore(epoch=round(epoch, 3), step=step, ndcg_at_10=round(ndcg(self.queries, scores), 6))
        self.epochs.append(score)
        log.info("held-out %s after epoch %.2f (step %d): %.4f", MEASURE, epoch, step, score.ndcg_at_10)
        if self.best is None or score.ndcg_at_10 > self.best.ndcg_at_10:  # a tie keeps the fewer epochs
            self.best, self.best_scores = score, scores
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def callback(self, model: Any) -> Any:
        """A transformers `TrainerCallback` measuring `model` at each epoch's end and at the end of training."""
        from transformers import TrainerCallback

        tracker = self

        class EpochChoice(TrainerCallback):
            def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                tracker.measure(model, epoch=state.epoch or 0.0, step=state.global_step)

            def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                tracker.measure(model, epoch=state.epoch or 0.0, step=state.global_step)

        return EpochChoice()

    def restore(self, model: Any) -> None:
        """Load the best epoch's weights back into `model` (nothing to do when the last was best)."""
        if self.best is not None and self.best_state is not None and self.best is not self.epochs[-1]:
            model.load_state_dict(self.best_state)
        self.best_state = None


def fit_hybrid(queries: list[HeldOutQuery], scores: dict[str, list[float]]) -> tuple[Hybrid, dict[str, list[float]],
                                                                                     dict[str, float]]:
    """Fit the fusion of `scores` with the first stage on `queries`: (the `Hybrid` kept, each method's
    nDCG@10 at every weight of `WEIGHT_GRID`, nDCG@10 of the student, the first stage and the hybrid)."""
    fits = {m: [round(ndcg(queries, {q.qid: fuse_scores(scores[q.qid], q.first_stage, method=m, weight=w)
                                     for q in queries}), 6) for w in WEIGHT_GRID] for m in METHODS}
    alone = round(ndcg(queries, scores), 6)
    first = fits["minmax"][-1]  # weight 1: the first stage alone
    # The best (method, weight); ties prefer the smaller weight, then min-max interpolation.
    method, i = max(((m, i) for m in METHODS for i in range(len(WEIGHT_GRID))),
                    key=lambda mi: (fits[mi[0]][mi[1]], -mi[1], mi[0] == "minmax"))
    best, weight = fits[method][i], WEIGHT_GRID[i]
    n = len(queries)
    if weight == 0 or best <= alone:
        hybrid = Hybrid(method="minmax", weight=0.0, reason=(
            f"on {n} held-out queries no fusion with the first stage beat the student alone ({MEASURE} {alone:.4f}; "
            f"first stage {first:.4f}, best fusion {best:.4f}): the student ranks alone"))
    else:
        hybrid = Hybrid(method=method, weight=weight, reason=(
            f"on {n} held-out queries {method} at weight {weight:g} reached {MEASURE} {best:.4f} against the "
            f"student alone {alone:.4f} and the first stage alone {first:.4f}"))
    return hybrid, fits, {"student": alone, "first_stage": first, "hybrid": max(best, alone)}


@dataclass
class Selection:
    """The held-out share of one training run (`split`'s result) and what it chose."""

    queries: list[HeldOutQuery]
    note: str  # where the first-stage scores came from, or why nothing is held out
    fraction: float
    seed: int
    labels: str

    def tracker(self, score_fn: ScoreFn) -> Tracker | None:
        return Tracker(self.queries, score_fn) if self.queries else None

    def finish(self, tracker: Tracker | None) -> tuple[Hybrid, HeldOut | None]:
        """The hybrid fitted on the best epoch's held-out scores and the record of it all."""
        if tracker is None or tracker.best is None:
            return Hybrid(weight=0.0, reason=f"nothing held out ({self.note}): no fusion was fitted, the student "
                          "ranks alone"), None
        hybrid, fits, scores = fit_hybrid(self.queries, tracker.best_scores)
        record = HeldOut(fraction=self.fraction, seed=self.seed, labels="gold" if self.labels == "gold" else "teacher",
                         qids=[q.qid for q in self.queries], first_stage=self.note, epochs=tracker.epochs,
                         chosen=tracker.best, ndcg_at_10=scores, fits=fits)
        return hybrid, record


def select(view: TrainingView, *, fraction: float, seed: int, labels: str) -> tuple[TrainingView, Selection]:
    """`split` as a `Selection` beside the view to train on."""
    train_view, queries, note = split(view, fraction=fraction, seed=seed, labels=labels)
    return train_view, Selection(queries=queries, note=note, fraction=fraction, seed=seed, labels=labels)
