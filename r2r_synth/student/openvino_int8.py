"""int8 inference on the CPU through OpenVINO (static int8): one of the two runtimes of the students'
`int8` path (`student-int8:DIR`, `rerank --int8`; `int8` chooses).

The ecosystem's way is sentence-transformers' `export_static_quantized_openvino_model` (Optimum Intel
over NNCF); Optimum does not import under the transformers 5 that sentence-transformers 6 requires
(see `onnx_int8`), so the same steps are taken with the libraries underneath it:

1. **convert**: the student's transformer (`model.transformers_model`) with `openvino.convert_model`,
   dynamic batch and sequence axes;
2. **quantize**: `nncf.quantize` with the transformer preset (SmoothQuant, int8 weights and
   activations, the activations' ranges calibrated on `calibration.jsonl`: (query, document) pairs
   that `train` draws from the training data, `CALIBRATION_PAIRS` of them spread over its queries);
3. **save** the IR to `DIR/openvino/openvino_model_qint8_quantized.xml` (+ `.bin`), the file name
   sentence-transformers' export writes, once, on the first int8 load; reused after (into a temporary
   folder when DIR is not writable).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from r2r_synth.atomic import write_text_atomic
from r2r_synth.errors import InputError
from r2r_synth.student.int8 import Int8Scorer, export_folder, quiet_export

log = logging.getLogger(__name__)

OV_DIR = "openvino"
INT8_XML = "openvino_model_qint8_quantized.xml"
INT8_BIN = "openvino_model_qint8_quantized.bin"  # the weights beside it
CALIBRATION_FILE = "calibration.jsonl"
CALIBRATION_PAIRS = 256
CALIBRATION_BATCH = 16


def write_calibration(out_dir: Path, view: Any, *, size: int = CALIBRATION_PAIRS) -> int:
    """Write `out_dir/calibration.jsonl`: up to `size` (query, document) pairs of the training view,
    taken a document per query in turn (every query's first document, then every second, ...) so the
    pairs span the queries. Returns how many."""
    lists = [[(q.text, d.text) for d in q.docs.values()] for q in view.queries]
    pairs: list[tuple[str, str]] = []
    for depth in range(max((len(x) for x in lists), default=0)):
        pairs += [x[depth] for x in lists if depth < len(x)][:size - len(pairs)]
        if len(pairs) >= size:
            break
    write_text_atomic(Path(out_dir) / CALIBRATION_FILE,
                      "".join(json.dumps({"query": q, "document": d}, ensure_ascii=False) + "\n" for q, d in pairs),
                      mask=False)
    return len(pairs)


def read_calibration(model_dir: Path) -> list[tuple[str, str]]:
    path = Path(model_dir) / CALIBRATION_FILE
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            pairs.append((str(row["query"]), str(row["document"])))
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{path}:{n}: not a calibration pair ({e})",
                             hint='each line is {"query": ..., "document": ...}; delete the file and set '
                                  "R2R_INT8_BACKEND=onnx, or retrain to write it again") from e
    if not pairs:
        raise InputError(f"{path}: no calibration pairs", hint="retrain, or set R2R_INT8_BACKEND=onnx")
    return pairs


def export_int8(model: Any, model_dir: Path, *, pair: bool) -> Path:
    """The static-int8 OpenVINO IR of `model`: reused when it exists in `model_dir/openvino/`, else
    converted, calibrated on `model_dir/calibration.jsonl` (pairs for a cross-encoder, their queries and
    documents as texts for a bi-encoder; read only here) and saved there."""
    have = Path(model_dir) / OV_DIR / INT8_XML
    if have.is_file() and have.with_name(INT8_BIN).is_file():
        return have
    calibration = read_calibration(model_dir)
    target = export_folder(model_dir, OV_DIR)
    import nncf
    import openvino as ov
    import torch

    tok, hf = model.tokenizer, model.transformers_model
    max_length = model.max_seq_length or 512
    if pair:
        columns = [([q for q, _ in chunk], [d for _, d in chunk]) for chunk in _chunks(calibration)]
    else:
        texts = list(dict.fromkeys(t for q, d in calibration for t in (q, d)))
        columns = [(chunk,) for chunk in _chunks(texts)]
    samples = [dict(tok(*c, padding=True, truncation=True, max_length=max_length, return_tensors="np"))
               for c in columns]
    was_training = hf.training
    hf.eval()
    part = Path(tempfile.mkdtemp(prefix=".part-", dir=target))
    try:
        with torch.no_grad(), warnings.catch_warnings(), quiet_export():
            warnings.simplefilter("ignore")  # the tracer's notes
            example = {k: torch.as_tensor(v) for k, v in samples[0].items()}
            graph = ov.convert_model(hf, example_input=example)
            graph.reshape({i.get_any_name(): ov.PartialShape([-1, -1]) for i in graph.inputs})
            quantized = nncf.quantize(graph, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER,
                                      subset_size=len(samples))
        ov.save_model(quantized, str(part / INT8_XML), compress_to_fp16=False)
        os.replace(part / INT8_BIN, target / INT8_BIN)
        os.replace(part / INT8_XML, target / INT8_XML)  # last: its presence marks a whole pair
    finally:
        for f in part.iterdir():
            f.unlink()
        part.rmdir()
        hf.train(was_training)
    log.info("exported %s (calibrated on %d samples)", target / INT8_XML, len(samples))
    return target / INT8_XML


def _chunks(items: list[Any]) -> list[list[Any]]:
    return [items[i:i + CALIBRATION_BATCH] for i in range(0, len(items), CALIBRATION_BATCH)]


class OpenVinoScorer(Int8Scorer):
    """An OpenVINO IR compiled for the CPU (latency hint), with the student's tokenizer."""

    def __init__(self, path: Path, *, tokenizer: Any, max_length: int, pooling: str | None = None,
                 normalize: bool = True):
        super().__init__(tokenizer=tokenizer, max_length=max_length, pooling=pooling, normalize=normalize)
        import openvino as ov

        self.compiled = ov.Core().compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        self.names = {i.get_any_name() for i in self.compiled.inputs}

    def _infer(self, feed: dict[str, Any]) -> Any:
        return self.compiled(feed)[0]
