"""int8 inference on the CPU through ONNX Runtime (dynamic int8): one of the two runtimes of the
students' `int8` path (`student-int8:DIR`, `rerank --int8`; `int8` chooses).

The ecosystem's way is sentence-transformers' ONNX backend (`backend="onnx"`) and its
`export_dynamic_quantized_onnx_model`, both built on Optimum. Optimum's ONNX Runtime package
(`optimum-onnx` 0.1.0, the newest on PyPI) requires transformers < 4.58 and fails to import under the
transformers 5 that sentence-transformers 6 requires, so the same two steps are taken here with the
libraries underneath it:

1. **export**: the student's transformer (`model.transformers_model`: a sequence classifier for the
   cross-encoder, the encoder for the bi-encoder) with `torch.onnx.export`, dynamic batch and sequence
   axes, eager attention (the pattern ONNX Runtime fuses);
2. **fuse**: ONNX Runtime's transformer optimizer (`onnxruntime.transformers.optimizer`) replaces
   attention, embeddings + layer norm, skip layer norms and GELU with its fused ops (BERT-like
   encoders), to `DIR/onnx/model.onnx` (Optimum's `export_optimized_onnx_model` does the same);
3. **quantize**: `onnxruntime.quantization.quantize_dynamic` (int8 weights, activations quantized on
   the fly; what `export_dynamic_quantized_onnx_model` runs) to `DIR/onnx/model_qint8.onnx`.

The files sit where sentence-transformers' backend looks for them, so where Optimum works,
`CrossEncoder(DIR, backend="onnx", model_kwargs={"file_name": "onnx/model_qint8.onnx"})` loads the same
file. Both are written once, on the first int8 load, and reused after (into a temporary folder when
DIR is not writable). Scoring (the student's own tokenizer and maximum length, batches by length, the
bi-encoder's pooling and normalization in numpy) is `int8.Int8Scorer`'s, shared with OpenVINO. Measured on DL19: docs/benchmarks.md ("int8 on the CPU").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r2r_synth.errors import ConfigError
from r2r_synth.student.int8 import Int8Scorer, export_folder, quiet_export

log = logging.getLogger(__name__)

ONNX_DIR = "onnx"
FLOAT_FILE = "model.onnx"
INT8_FILE = "model_qint8.onnx"


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise ConfigError(
            "int8 inference runs through ONNX Runtime, which is not installed",
            hint="pip install 'r2r-synth[onnx]' (onnx, onnxruntime), or drop --int8 / student-int8:",
        ) from e
    return onnxruntime


def export_int8(model: Any, model_dir: Path, *, inputs: Sequence[tuple[str, ...]]) -> Path:
    """The int8 ONNX file of `model` (a sentence-transformers model loaded from `model_dir`): reused
    when `model_dir/onnx/model_qint8.onnx` exists, else exported and quantized there (or, where
    `model_dir` is not writable, into a temporary folder). `inputs` is one example input (a text, or a
    query and a document) to trace the graph with."""
    _require_onnxruntime()
    if (Path(model_dir) / ONNX_DIR / INT8_FILE).is_file():
        return Path(model_dir) / ONNX_DIR / INT8_FILE
    target = export_folder(model_dir, ONNX_DIR)
    import warnings

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hf = model.transformers_model
    tok = model.tokenizer
    # Two examples of different lengths, padded: the traced graph must not bake in one length.
    columns = list(zip(*inputs)) if len(inputs[0]) > 1 else [[t[0] for t in inputs]]
    enc = tok(*columns, padding=True, truncation=True, max_length=64, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in enc]
    output = "logits" if hasattr(hf.config, "num_labels") and "ForSequenceClassification" in type(hf).__name__ \
        else "last_hidden_state"
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[output] = {0: "batch"} if output == "logits" else {0: "batch", 1: "sequence"}
    was_training = hf.training
    attention = getattr(hf.config, "_attn_implementation", None)
    hf.eval()
    tmp_float = target / f".{FLOAT_FILE}.part"
    tmp_int8 = target / f".{INT8_FILE}.part"
    try:
        if attention not in (None, "eager"):
            # eager attention exports as the MatMul/Softmax pattern ONNX Runtime fuses into its Attention op
            hf.set_attn_implementation("eager")
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
            torch.onnx.export(_by_name_module()(hf, names, output), tuple(enc[n] for n in names), str(tmp_float),
                              input_names=names, output_names=[output], dynamic_axes=axes, opset_version=17,
                              dynamo=False)
        with quiet_export():  # onnxruntime's root-logger notes (pre-processing, fusion counts)
            _fuse(tmp_float, hf.config)
            quantize_dynamic(str(tmp_float), str(tmp_int8), weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": 1})  # FLOAT, for the fused ops' outputs
        os.replace(tmp_float, target / FLOAT_FILE)
        os.replace(tmp_int8, target / INT8_FILE)
    finally:
        for t in (tmp_float, tmp_int8):
            t.unlink(missing_ok=True)
        if attention not in (None, "eager"):
            hf.set_attn_implementation(attention)
        hf.train(was_training)
    log.info("exported %s", target / INT8_FILE)
    return target / INT8_FILE


#: Encoders whose graph ONNX Runtime's transformer optimizer fuses as "bert" (attention, embeddings,
#: layer norms, GELU): what Optimum's `export_optimized_onnx_model` does before quantizing.
FUSABLE = ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "mpnet")


def _fuse(path: Path, config: Any) -> None:
    """Rewrite the float graph at `path` with ONNX Runtime's fused transformer ops, in place, where the
    architecture is one it knows (`FUSABLE`); other graphs stay as exported."""
    if getattr(config, "model_type", None) not in FUSABLE:
        return
    from onnxruntime.transformers.optimizer import optimize_model

    fused = optimize_model(str(path), model_type="bert", num_heads=config.num_attention_heads,
                           hidden_size=config.hidden_size)
    fused.save_model_to_file(str(path))


def _by_name_module() -> Any:
    import torch

    class ByName(torch.nn.Module):
        """Calls the transformers model with its inputs by name and returns one tensor: the tracer
        hands positional tensors, and transformers 5 models take them by keyword."""

        def __init__(self, model: Any, names: list[str], output: str):
            super().__init__()
            self.model, self.names, self.output = model, names, output

        def forward(self, *tensors: Any) -> Any:
            return getattr(self.model(**dict(zip(self.names, tensors))), self.output)

    return ByName


class OnnxScorer(Int8Scorer):
    """A quantized (or float) ONNX graph run by ONNX Runtime, with the student's tokenizer."""

    def __init__(self, path: Path, *, tokenizer: Any, max_length: int, pooling: str | None = None,
                 normalize: bool = True):
        super().__init__(tokenizer=tokenizer, max_length=max_length, pooling=pooling, normalize=normalize)
        ort = _require_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = {i.name for i in self.session.get_inputs()}

    def _infer(self, feed: dict[str, Any]) -> Any:
        return self.session.run(None, feed)[0]
