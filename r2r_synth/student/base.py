"""The student interface: what `train` produces and what `evaluate` / `rerank` consume.

Every student kind (the bi-encoder in `bi_encoder.py`, the cross-encoder in `cross_encoder.py`, the
reasoning student in the `reasoning` package) implements `Student` and a module-level training entry point

    def train_student(view: TrainingView, *, config: TrainConfig, out_dir: Path) -> Student

(`view` is the corpus in training shape, see `r2r_synth.student.corpus`). `train_student` resolves
the kind's pydantic options from the command's `TrainConfig` (`resolve_options`), trains, and saves
the model into `out_dir` (loadable by plain sentence-transformers / transformers) with its
`r2r_config.json` beside it: one `R2RConfig` shape for every kind, built by `r2r_config`.

`load_student(dir)` reads `r2r_config.json` and dispatches on its `"student"` field, so evaluate and
rerank never need to know which kind they hold.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from r2r_synth import __version__
from r2r_synth.artifacts import R2R_CONFIG_FILE, HeldOut, R2RConfig, read_r2r_config
from r2r_synth.atomic import write_text_atomic
from r2r_synth.config import TrainConfig
from r2r_synth.errors import ConfigError, InputError
from r2r_synth.hybrid import Hybrid
from r2r_synth.student.corpus import TrainingView

# kind -> (module, class). Imported lazily: torch/transformers load only when a student is used.
STUDENT_CLASSES: dict[str, tuple[str, str]] = {
    "bi-encoder": ("r2r_synth.student.bi_encoder", "BiEncoderStudent"),
    "cross-encoder": ("r2r_synth.student.cross_encoder", "CrossEncoderStudent"),
    "reasoning": ("r2r_synth.student.reasoning", "ReasoningStudent"),
}
STUDENT_KINDS = tuple(STUDENT_CLASSES)


def r2r_config(student: str, *, base: str, options: BaseModel | None = None, config: TrainConfig | None = None,
               view: TrainingView | None = None, training: dict[str, Any] | None = None,
               hybrid: Hybrid | None = None, heldout: HeldOut | None = None) -> R2RConfig:
    """The `R2RConfig` of a student this r2r-synth made. An untrained student (a base scored as it
    stands) leaves out `options`, `config`, `view` and `training`: there is nothing to record."""
    return R2RConfig(
        student=student,
        r2r_synth_version=__version__,
        base=base,
        options=options.model_dump(mode="json") if options is not None else {},
        config=config.public_dict() if config is not None else {},
        corpus=view.summary() | {"sources": view.sources} if view is not None else {},
        training=training or {},
        hybrid=hybrid,
        heldout=heldout,
    )


class Student(ABC):
    """A trained reranker. Scores are comparable within one query (higher = more relevant); they
    need not be probabilities."""

    kind: ClassVar[str]
    #: True when `explain` can say why a document got its score (the reasoning student).
    can_explain: ClassVar[bool] = False

    path: Path | None = None
    #: What `r2r_config.json` holds (or will hold once `save` writes it).
    meta: R2RConfig

    @abstractmethod
    def score(self, query: str, documents: Sequence[str], *, batch_size: int = 32) -> list[float]:
        """One relevance score per document, in the order given."""

    def explain(self, query: str, document: str, *, max_new_tokens: int = 256) -> str:
        """Why `document` does or does not answer `query`, in words."""
        raise InputError(
            f"a {self.kind} student cannot explain its scores",
            hint="drop --explain, or train a reasoning student (r2r-synth train --student reasoning)",
        )

    @abstractmethod
    def save(self, out_dir: Path) -> Path:
        """Write the model (and its `r2r_config.json`) into `out_dir`; return `out_dir`."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path, *, device: str | None = None, int8: bool = False) -> Student:
        """Load a student that `save` wrote; `int8` asks for int8 weights on the CPU where the kind
        supports it (the bi-encoder and the cross-encoder, through ONNX Runtime) and is a
        `ConfigError` where it does not."""

    @classmethod
    def read_own_config(cls, path: Path) -> R2RConfig:
        """`read_r2r_config(path)`, refused with an `InputError` when it names another kind."""
        meta = read_r2r_config(path)
        if meta.student != cls.kind:
            raise InputError(
                f"{Path(path) / R2R_CONFIG_FILE}: not a {cls.kind} student's config (it names {meta.student!r})",
                hint="load it with `load_student(DIR)`, which picks the kind from the file",
            )
        return meta


def refuse_knobs(config: Any, names: Sequence[str], *, belongs_to: str) -> None:
    """ConfigError for the first of `names` that is set on `config`: a knob of the other student kind
    (`belongs_to` names it) must not be silently ignored."""
    for name in names:
        if getattr(config, name) is not None:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} applies to the {belongs_to} student only",
                              hint=f"drop {flag} or train --student {belongs_to}")


def student_class(kind: str) -> type[Student]:
    if kind not in STUDENT_CLASSES:
        raise InputError(f"unknown student kind {kind!r}", hint=f"use one of: {', '.join(STUDENT_KINDS)}")
    module, name = STUDENT_CLASSES[kind]
    return getattr(importlib.import_module(module), name)


def training_summary(result: Any, *, wall_s: float, budget: Any = None) -> dict[str, Any]:
    """What every kind's training measured, for `R2RConfig.training`: optimizer steps, the mean
    training loss, wall-clock seconds, and where `--max-minutes` acted (`budget`, the
    `budget.time_budget` callback, or None): the step it stopped the run at and the step from which
    the clock led the learning-rate schedule (None where it did not)."""
    return {
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "wall_s": round(wall_s, 1),
        "stopped_at_step": budget.stopped_at_step if budget else None,
        "annealed_from_step": budget.annealed_from_step if budget else None,
    }


def write_r2r_config(out_dir: Path, meta: R2RConfig) -> Path:
    """Save `meta` beside the model as `out_dir/r2r_config.json`; return the file's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / R2R_CONFIG_FILE
    write_text_atomic(path, meta.model_dump_json(indent=2) + "\n")
    return path


def load_student(path: Path | str, *, device: str | None = None, int8: bool = False) -> Student:
    """Load any student `r2r-synth train` wrote, dispatching on `r2r_config.json`."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: no such model directory", hint="pass the --out directory of `r2r-synth train`")
    kind = read_r2r_config(path).student
    return student_class(kind).load(path, device=device, int8=int8)
