"""int8 inference on the CPU: which runtime a student's `int8` load uses, and the scoring both runtimes
share (tokenize, batch by length, pool).

Two runtimes, the two that sentence-transformers offers as backends:

- **OpenVINO, static int8** (`openvino_int8`): weights *and* activations int8, the activations' scales
  calibrated once by NNCF on pairs from the student's own training data (`calibration.jsonl`, which
  `train` writes). What sentence-transformers' `export_static_quantized_openvino_model` does.
- **ONNX Runtime, dynamic int8** (`onnx_int8`): int8 weights, activations quantized on the fly; needs
  no calibration. What `export_dynamic_quantized_onnx_model` does.

`R2R_INT8_BACKEND` chooses: `openvino`, `onnx`, or `auto` (the default: OpenVINO where `openvino` and
`nncf` are installed and the student carries `calibration.jsonl`, else ONNX Runtime). On DL19 the
OpenVINO path reranks 1.6-1.7x faster than PyTorch's dynamic int8 and ONNX Runtime's about as fast
(docs/benchmarks.md, "int8 on the CPU").
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from r2r_synth.errors import ConfigError

log = logging.getLogger(__name__)

BACKEND_ENV = "R2R_INT8_BACKEND"
BACKENDS = ("auto", "openvino", "onnx")


def int8_device(device: str | None) -> str:
    """The device an int8 student loads on: the CPU; a `ConfigError` for any other."""
    if device not in (None, "cpu"):
        raise ConfigError("int8 runs on the CPU only", hint="add --device cpu or drop --int8")
    return "cpu"


def openvino_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("openvino", "nncf"))


def choose_backend(model_dir: Path) -> str:
    """`openvino` or `onnx` for the student in `model_dir`, by `R2R_INT8_BACKEND` (see the module
    docstring); a `ConfigError` naming the fix when the asked-for runtime cannot run it."""
    from r2r_synth.student.openvino_int8 import CALIBRATION_FILE

    asked = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if asked not in BACKENDS:
        raise ConfigError(f"{BACKEND_ENV}={asked!r} is not an int8 runtime",
                          hint=f"set it to one of {', '.join(BACKENDS)}, or unset it")
    calibrated = (Path(model_dir) / CALIBRATION_FILE).is_file()
    if asked == "auto":
        return "openvino" if calibrated and openvino_installed() else "onnx"
    if asked == "openvino":
        if not openvino_installed():
            raise ConfigError("int8 through OpenVINO needs the openvino and nncf packages",
                              hint=f"pip install 'r2r-synth[openvino]', or set {BACKEND_ENV}=onnx")
        if not calibrated:
            raise ConfigError(f"{model_dir}: OpenVINO's static int8 calibrates on {CALIBRATION_FILE}, which this "
                              "student lacks (students trained before it was written)",
                              hint=f"r2r-synth train writes it; or set {BACKEND_ENV}=onnx (dynamic int8, no calibration)")
    return asked


def int8_scorer(model: Any, model_dir: Path, *, pooling: str | None = None) -> Any:
    """The int8 scorer of `model` (a sentence-transformers model loaded from `model_dir`) on the chosen
    runtime; the quantized file is written into `model_dir` on the first load and reused after."""
    backend = choose_backend(model_dir)
    max_length = model.max_seq_length or 512
    pair = pooling is None  # a cross-encoder scores (query, document) pairs
    if backend == "openvino":
        from r2r_synth.student.openvino_int8 import OpenVinoScorer, export_int8

        path = export_int8(model, Path(model_dir), pair=pair)
        log.info("int8: OpenVINO static int8 (%s)", path)
        return OpenVinoScorer(path, tokenizer=model.tokenizer, max_length=max_length, pooling=pooling)
    from r2r_synth.student.onnx_int8 import OnnxScorer, export_int8

    examples = ([("a query", "a passage"), ("a longer query here", "a longer passage of text")] if pair
                else [("a short query",), ("a somewhat longer passage of text here",)])
    path = export_int8(model, Path(model_dir), inputs=examples)
    log.info("int8: ONNX Runtime dynamic int8 (%s)", path)
    return OnnxScorer(path, tokenizer=model.tokenizer, max_length=max_length, pooling=pooling)


def export_folder(model_dir: Path, folder: str) -> Path:
    """Where a runtime writes its int8 files: `model_dir/folder`, or a temporary folder where
    `model_dir` is not writable (created either way)."""
    target = Path(model_dir) / folder
    if not os.access(model_dir, os.W_OK):
        target = Path(tempfile.mkdtemp(prefix=f"r2r-{folder}-"))
    target.mkdir(parents=True, exist_ok=True)
    return target


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """The converters' and quantizers' notes and progress bars: they go to stdout and the root logger,
    and `rerank` writes its run to stdout, so they go to stderr and below WARNING is dropped."""
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logging.disable(logging.NOTSET)


class Int8Scorer:
    """Scoring through a compiled graph: `logits` of (query, document) pairs (cross-encoder) or pooled,
    normalized `embed`dings of texts (bi-encoder). A runtime supplies `_infer(feed) -> first output`."""

    names: set[str]

    def __init__(self, *, tokenizer: Any, max_length: int, pooling: str | None = None, normalize: bool = True):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pooling = pooling
        self.normalize = normalize

    def _infer(self, feed: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _run(self, columns: list[list[str]]) -> tuple[Any, Any]:
        enc = self.tokenizer(*columns, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        feed = {k: v.astype("int64") for k, v in enc.items() if k in self.names}
        return self._infer(feed), enc["attention_mask"]

    @staticmethod
    def _batches(n: int, lengths: list[int], batch_size: int) -> list[list[int]]:
        # longest first, as sentence-transformers batches: less padding per batch
        order = sorted(range(n), key=lambda i: -lengths[i])
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]

    def logits(self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 32) -> list[float]:
        import numpy as np

        out = np.zeros(len(pairs), dtype=np.float32)
        for idx in self._batches(len(pairs), [len(q) + len(d) for q, d in pairs], batch_size):
            logits, _ = self._run([[pairs[i][0] for i in idx], [pairs[i][1] for i in idx]])
            out[idx] = logits[:, 0]
        return [float(x) for x in out]

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> Any:
        import numpy as np

        out: Any = None
        for idx in self._batches(len(texts), [len(t) for t in texts], batch_size):
            hidden, mask = self._run([[texts[i] for i in idx]])
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:  # mean over the real tokens
                m = mask[..., None].astype(hidden.dtype)
                pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
            if self.normalize:
                pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            if out is None:
                out = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
            out[idx] = pooled
        return out
