"""What the two sentence-transformers students (bi-encoder, cross-encoder) share: holding the model and,
when loaded with int8, its int8 scorer; saving it in the library's own format with
`r2r_config.json` beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r2r_synth.student.base import R2RConfig, Student, write_r2r_config


class SentenceTransformersStudent(Student):
    """A `SentenceTransformer` or `CrossEncoder` behind the `Student` interface."""

    can_explain = False

    def __init__(self, model: Any, *, meta: R2RConfig, path: Path | None = None, onnx: Any = None):
        self.model = model
        self.meta = meta
        self.path = path
        self.onnx = onnx  # an `int8.Int8Scorer` (OpenVINO or ONNX Runtime) when loaded with int8

    def save(self, out_dir: Path) -> Path:
        out_dir = Path(out_dir)
        self.model.save_pretrained(str(out_dir))
        write_r2r_config(out_dir, self.meta)
        self.path = out_dir
        return out_dir
