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
