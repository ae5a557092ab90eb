"""The bi-encoder's embedding cache: each distinct document embedded once per call (counted at the model's
boundary: a wrapper around a real tiny model's `encode`, and a forward hook on its transformer), scores
equal to embedding every query's candidates afresh, int8 rows within a small error at a quarter of the
memory."""

from __future__ import annotations

import numpy as np
import pytest

from r2r_synth.config import EvaluateConfig
from r2r_synth.evaluate.ranking import rerank_candidates
from r2r_synth.evaluate.systems import open_system, parse_spec
from r2r_synth.schemas import Candidates, Document, Query
from r2r_synth.student.embedding_cache import EmbeddingCache

pytest.importorskip("sentence_transformers")

WORDS = ["solar", "panels", "coffee", "otters", "river", "tax", "jazz", "piano", "glacier", "melt", "pasta"]


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) + f" {i}" for i in range(n)]


def _overlapping_candidates(docs: list[str], queries: int = 6, per_query: int = 8) -> list[Candidates]:
    """Queries whose candidate lists share documents (as BM25 top-100 lists of one corpus do)."""
    out = []
    for q in range(queries):
        picks = [(q * 3 + j) % len(docs) for j in range(per_query)]
        out.append(Candidates(query=Query(qid=str(q), text=f"{WORDS[q]} {WORDS[q + 1]}"),
                              documents=[Document(docid=f"d{i}", text=docs[i]) for i in picks]))
    return out


@pytest.fixture(scope="module")
def model(tiny_bert):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_bert), device="cpu")


def _encode(model, texts):
    return model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


def test_each_distinct_text_goes_through_the_model_once(model):
    seen: list[str] = []

    def counting_encode(texts: list[str]):
        seen.extend(texts)
        return _encode(model, texts)

    cache = EmbeddingCache(counting_encode, chunk=5)
    docs = _texts(12)
    q = _encode(model, ["solar panels"])[0]
    first = cache.scores(q, docs[:8] + docs[:3])  # a text given twice in one call
    second = cache.scores(q, docs[4:12])
    assert sorted(seen) == sorted(docs) and cache.encoded == 12 and len(cache) == 12
    assert first == pytest.approx([float(x) for x in _encode(model, docs[:8] + docs[:3]) @ q], abs=1e-5)
    assert second == pytest.approx([float(x) for x in _encode(model, docs[4:12]) @ q], abs=1e-5)
    assert cache.scores(q, []) == [] and cache.encoded == 12


def test_evaluate_embeds_each_document_once_and_scores_as_the_uncached_path(model, tiny_bert):
    """Through `evaluate`'s own system: a forward hook on the transformer counts the texts it embeds."""
    import torch

    docs = _texts(20, seed=1)
    cands = _overlapping_candidates(docs)
    distinct = {d.text for c in cands for d in c.documents}
    assert len(distinct) < sum(len(c.documents) for c in cands)  # the lists overlap
    rows: list[int] = []

    def count(module, args, output):
        if type(module).__name__ == "BertEmbeddings":  # the transformer's input layer: a row per text
            rows.append(int(output.shape[0]))

    spec = parse_spec(f"bi-encoder:{tiny_bert}")
    system = open_system(spec, config=EvaluateConfig(input="x", systems=[spec.spec], out="o", device="cpu"))
    handle = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        ranked = rerank_candidates(system, cands, depth=None)
    finally:
        handle.remove()
    # every distinct document once, and one query per query: no candidate embedded twice
    assert sum(rows) == len(distinct) + len(cands)
    assert system.cache.encoded == len(distinct)
    for c in cands:
        q = _encode(model, [c.query.text])[0]
        fresh = _encode(model, [d.text for d in c.documents]) @ q
        top = dict(ranked.tops[c.query.qid])
        assert [top[d.docid] for d in c.documents] == pytest.approx([float(x) for x in fresh], abs=1e-5)


def test_int8_rows_score_close_at_a_quarter_of_the_memory(model):
    docs = _texts(40, seed=2)
    q = _encode(model, ["river otters"])[0]
    f32 = EmbeddingCache(lambda t: _encode(model, t))
    i8 = EmbeddingCache(lambda t: _encode(model, t), int8=True)
    exact, approx = f32.scores(q, docs), i8.scores(q, docs)
    assert approx == pytest.approx(exact, abs=0.01)
    assert i8.nbytes == 40 * (32 + 4) and f32.nbytes == 40 * 32 * 4


def test_an_encoder_that_returns_the_wrong_shape_is_an_error():
    cache = EmbeddingCache(lambda texts: np.zeros((len(texts) + 1, 4), dtype=np.float32))
    with pytest.raises(RuntimeError, match=r"the encoder returned shape \(3, 4\) for 2 texts"):
        cache.add(["a", "b"])
    grows = EmbeddingCache(lambda texts: np.ones((len(texts), 4 + len(texts)), dtype=np.float32))
    grows.add(["a"])
    with pytest.raises(RuntimeError, match="the encoder returned 6-dimension rows after 5-dimension ones"):
        grows.add(["b", "c"])
