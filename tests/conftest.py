"""Shared fixtures. Real data from ../shared/data is read in place (never copied); tests that need it
skip with a clear reason where it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test when that data is not on this machine."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent: the real benchmark data lives in ../shared/data beside the checkout")
    return p


@pytest.fixture
def dl19() -> Path:
    return shared_data("trec-dl19")


@pytest.fixture
def r2r_corpus() -> Path:
    return shared_data("r2r-gpt4-msmarco")
