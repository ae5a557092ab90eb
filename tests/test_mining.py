"""Hard-negative mining over a corpus read in chunks: the same tuples as sentence-transformers'
`mine_hard_negatives` (one positive per query, where its semantics are unambiguous), whatever the chunk
size, each distinct passage through the (real, tiny) model once."""

from __future__ import annotations

import pytest

from r2r_synth.student.mining import mine_negatives

pytest.importorskip("sentence_transformers")

TOPICS = ["solar panels", "coffee brewing", "river otters", "tax returns", "jazz piano", "glacier melt",
          "bread baking", "chess openings"]


@pytest.fixture(scope="module")
def model(tiny_bert):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_bert), device="cpu")


def _data():
    anchors = [f"what is {t}" for t in TOPICS]
    positives = [f"{t} explained in detail" for t in TOPICS]
    corpus = [f"{t} {kind} {i}" for i, t in enumerate(TOPICS) for kind in ("mentioned once", "history", "prices")]
    return anchors, positives, corpus


def test_the_same_tuples_as_sentence_transformers_in_any_chunk_size(model):
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    anchors, positives, corpus = _data()
    reference = mine_hard_negatives(Dataset.from_dict({"anchor": anchors, "positive": positives}), model,
                                    corpus=corpus + corpus[:5], num_negatives=2, relative_margin=0.05,
                                    sampling_strategy="top", range_max=30, output_format="n-tuple", batch_size=32,
                                    verbose=False)
    want = {name: list(reference[name]) for name in reference.column_names}
    assert len(want["anchor"]) >= 4  # the case holds rows to compare

    def encode(texts):
        return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)

    for chunk in (3, 4096):
        got = mine_negatives(anchors=anchors, positives=positives, corpus=iter(corpus + corpus[:5]), encode=encode,
                             num_negatives=2, range_max=30, relative_margin=0.05, chunk=chunk)
        assert got == want


def test_each_distinct_passage_is_embedded_once_and_a_positive_is_never_a_negative(model):
    anchors, positives, corpus = _data()
    seen: list[str] = []

    def counting(texts):
        seen.extend(texts)
        return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)

    # the first query has two positives: neither may come back as its negative
    got = mine_negatives(anchors=[anchors[0], *anchors], positives=[corpus[0], *positives], corpus=iter(corpus * 2),
                         encode=counting, num_negatives=3, range_max=30, relative_margin=0.0, chunk=5)
    passages = [t for t in seen if t not in set(anchors)]
    assert sorted(passages) == sorted(set(corpus) | set(positives))  # each once, the positives included
    assert got["anchor"][:2] == [anchors[0], anchors[0]]
    for i, a in enumerate(got["anchor"]):
        own = {p for q, p in zip([anchors[0], *anchors], [corpus[0], *positives]) if q == a}
        assert not own & {got[f"negative_{k}"][i] for k in (1, 2, 3)}
