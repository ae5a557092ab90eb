"""What `optimize` reports: per program, every metric before and after on the validation split, the
calls each phase cost and how many of them failed (`ProgramReport`), inside one `OptimizeReport`
saved as JSON (``programs/optimize_report.json`` by default)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPORT_FILE = "optimize_report.json"


@dataclass
class ProgramReport:
    """Before/after of one program on the validation split, and what it cost.

    `before`/`after` are scores dicts (`r2r_synth.optimize.scoring`): metrics and their counts (``n``,
    ``failed_calls``, ``queries_left_out``). `calls` and `failed_calls` are per phase
    (``evaluate_before``, ``optimize``, ``evaluate_after``; or ``evaluate_fresh``/``evaluate_current``)."""

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
    failed_calls: dict[str, int] = field(default_factory=dict)
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

    @property
    def failed_calls(self) -> int:
        """Teacher and prompt-model calls that failed after their retries, over every program and phase."""
        return sum(sum(p.failed_calls.values()) for p in self.programs.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        d["failed_calls"] = self.failed_calls
        return nan_to_none(d)


def nan_to_none(obj: Any) -> Any:
    """`obj` with every NaN as None: JSON has no NaN, and an undefined metric (e.g. Kendall's tau of a
    constant ranking) is null."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [nan_to_none(v) for v in obj]
    return obj

