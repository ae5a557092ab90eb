"""The student interface: what `train` produces and what `evaluate` / `rerank` consume.

Every student kind (the cross-encoder in `cross_encoder.py`, the reasoning student in
`reasoning.py`) implements `Student` and a module-level training entry point

    def train_student(view: TrainingView, *, config: TrainConfig, out_dir: Path) -> Student

(`view` is the corpus in training shape, see `r2r_synth.student.corpus`). `train_student` saves the
model into `out_dir` (loadable by plain sentence-transformers / transformers), writes the resolved
config beside it as `r2r_config.json` with `write_r2r_config`, and returns the loaded student.

`load_student(dir)` reads `r2r_config.json` and dispatches on its `"student"` field, so evaluate and
rerank never need to know which kind they hold.
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from r2r_synth.errors import ConfigError, InputError

R2R_CONFIG_FILE = "r2r_config.json"

# kind -> (module, class). Imported lazily: torch/transformers load only when a student is used.
STUDENT_CLASSES: dict[str, tuple[str, str]] = {
    "cross-encoder": ("r2r_synth.student.cross_encoder", "CrossEncoderStudent"),
    "reasoning": ("r2r_synth.student.reasoning", "ReasoningStudent"),
}
STUDENT_KINDS = tuple(STUDENT_CLASSES)


class Student(ABC):
    """A trained reranker. Scores are comparable within one query (higher = more relevant); they
    need not be probabilities."""

    kind: ClassVar[str]
    #: True when `explain` can say why a document got its score (the reasoning student).
    can_explain: ClassVar[bool] = False

    path: Path | None = None

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
        supports it (the cross-encoder) and is a `ConfigError` where it does not."""


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


def write_r2r_config(out_dir: Path, *, student: str, config: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Save the resolved training config beside the model (nanoGPT keeps it in every checkpoint)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / R2R_CONFIG_FILE
    path.write_text(json.dumps({"student": student, "config": config, **(extra or {})}, indent=2, default=str) + "\n")
    return path


def read_r2r_config(path: Path) -> dict[str, Any]:
    path = Path(path)
    f = path / R2R_CONFIG_FILE
    if not f.exists():
        raise InputError(
            f"{path}: no {R2R_CONFIG_FILE}; not a model written by `r2r-synth train`",
            hint="pass a directory written by `r2r-synth train`, or use `bi-encoder:<path>` for a plain "
            "sentence-transformers model",
        )
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{f}: not valid JSON ({e.msg})", hint="retrain, or restore the file") from None


def load_student(path: Path | str, *, device: str | None = None, int8: bool = False) -> Student:
    """Load any student `r2r-synth train` wrote, dispatching on `r2r_config.json`."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: no such model directory", hint="pass the --out directory of `r2r-synth train`")
    kind = read_r2r_config(path).get("student")
    return student_class(str(kind)).load(path, device=device, int8=int8)
