"""The hybrid student: a student's scores fused with the first stage's (BM25) scores of the same query.

`train` fits the fusion on a held-out share of its training queries (`r2r_synth.student.heldout`) and
records it as a `Hybrid` in the student's `r2r_config.json`; `evaluate` and `rerank` rank with it
unless asked not to (`--no-hybrid`). Two methods, both per query:

- `minmax` (interpolation): ``w * minmax(first stage) + (1 - w) * minmax(student)``, each score
  min-max normalized within the query's candidates (the interpolation of dense and lexical scores
  that Pyserini's hybrid search and most hybrid-retrieval papers use);
- `rrf` (weighted reciprocal rank fusion): ``w / (60 + rank_first_stage) + (1 - w) / (60 + rank_student)``
  (Cormack, Clarke & Buettcher, SIGIR 2009; k = 60 as there), which needs only the two rankings.

`w` is the first stage's share: 0 is the student alone, 1 the first stage alone. This module holds the
record and the arithmetic only (no model, no torch): training and the ranking commands both use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RRF_K = 60
METHODS = ("minmax", "rrf")
#: The weights the held-out fit tries: 0 (the student alone) to 1 (the first stage alone) in steps of 0.05.
WEIGHT_GRID = tuple(i / 20 for i in range(21))


class Hybrid(BaseModel):
    """How a student's scores are fused with the first stage's: `r2r_config.json`'s `hybrid`."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["minmax", "rrf"] = "minmax"
    #: The first stage's share; 0: the student ranks alone.
    weight: float = Field(default=0.0, ge=0.0, le=1.0)
    #: Why this weight: what the held-out queries measured, or why nothing was fitted.
    reason: str = ""

    @property
    def active(self) -> bool:
        """Whether ranking needs first-stage scores (a weight above 0)."""
        return self.weight > 0


def minmax(values: Sequence[float]) -> list[float]:
    """`values` scaled to [0, 1] (all 0 when they are all equal)."""
    lo, hi = min(values, default=0.0), max(values, default=0.0)
    return [(v - lo) / (hi - lo) if hi > lo else 0.0 for v in values]


def _ranks(values: Sequence[float]) -> list[int]:
    """1-based rank of each value, best (highest) first; ties keep the given order."""
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    ranks = [0] * len(values)
    for r, i in enumerate(order, start=1):
        ranks[i] = r
    return ranks


def fuse_scores(student: Sequence[float], first_stage: Sequence[float], *, method: str, weight: float) -> list[float]:
    """One query's fused scores, in the order given (see the module docstring). Weight 0 returns the
    student's own scores unchanged, so a student that ranks alone shows its own scores."""
    if len(student) != len(first_stage):
        raise ValueError(f"{len(student)} student scores but {len(first_stage)} first-stage scores")
    if weight == 0:
        return [float(s) for s in student]
    if any(not math.isfinite(x) for x in first_stage):
        raise ValueError("a first-stage score is not a finite number")
    if method == "minmax":
        return [weight * b + (1 - weight) * s for b, s in zip(minmax(first_stage), minmax(student))]
    if method == "rrf":
        return [weight / (RRF_K + b) + (1 - weight) / (RRF_K + s)
                for b, s in zip(_ranks(first_stage), _ranks(student))]
    raise ValueError(f"unknown fusion method {method!r} (use one of {', '.join(METHODS)})")


def fuse_with(hybrid: Hybrid | None, student: Sequence[float], first_stage: Sequence[float] | None) -> list[float]:
    """`student` fused as `hybrid` says; the student's own scores where there is no active hybrid."""
    if hybrid is None or not hybrid.active:
        return [float(s) for s in student]
    if first_stage is None:
        raise ValueError("a hybrid needs first-stage scores")
    return fuse_scores(student, first_stage, method=hybrid.method, weight=hybrid.weight)
