"""Distillation lists: a real (tiny) sentence-transformers encoder scores them; the teacher re-orders a
query's own documents on the encoder's scale; negatives come from other queries only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r2r_synth.errors import InputError
from r2r_synth.student.corpus import load_training_view
from r2r_synth.student.cross_encoder import teacher_grades
from r2r_synth.student.distill import distill_lists, fuse, reorder, score_pool

pytest.importorskip("sentence_transformers")

TOPICS = ["solar panels", "coffee brewing", "river otters", "tax returns", "jazz piano"]


def _view(tmp_path: Path):
    rows = []
    for i, topic in enumerate(TOPICS):
        docs = [f"{topic} explained in detail", f"a note that mentions {topic}", f"cooking pasta number {i}"]
        # the teacher prefers the note (2) over the explanation (1): its order, not the encoder's, must win
        rows.append({"query": f"what is {topic}", "qid": str(i), "unsorted_docs": docs, "re_rank_id": [2, 1, 3]})
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_training_view([path])


def test_reorder_hands_out_the_scores_in_the_teachers_order():
    own = {"a": 0.2, "b": 0.9, "c": 0.5, "unjudged": 0.7}
    assert reorder(own, {"a": 3.0, "b": 1.0, "c": 2.0}) == {"a": 0.9, "c": 0.5, "b": 0.2, "unjudged": 0.7}
    # ties in the teacher's grades keep the encoder's order
    assert reorder({"x": 0.1, "y": 0.8}, {"x": 2.0, "y": 2.0}) == {"x": 0.1, "y": 0.8}


def test_lists_follow_the_teacher_and_take_negatives_from_other_queries(tmp_path, tiny_bert):
    import numpy as np

    view = _view(tmp_path)
    pool = score_pool(view, encoder=str(tiny_bert), device="cpu")
    assert pool.sims.shape == (len(TOPICS), 3 * len(TOPICS))
    assert np.all(np.abs(pool.sims) <= 1.0 + 1e-5)  # normalized embeddings: cosines
    cols = distill_lists(view, pool, grades_of=teacher_grades, hard_negatives=3, negatives=2,
                         temperature=0.1, seed=0)
    assert len(cols["query"]) == len(TOPICS)
    for i, q in enumerate(view.queries):
        docs, labels = cols["docs"][i], cols["labels"][i]
        assert len(docs) == 3 + 3 + 2
        own_texts = [d.text for d in q.docs.values()]
        assert docs[:3] == own_texts and not set(docs[3:]) & set(own_texts)
        by_text = dict(zip(docs[:3], labels[:3]))
        best, middle, worst = (q.docs[d].text for d in q.permutations[0])
        assert by_text[best] >= by_text[middle] >= by_text[worst]
        own_sims = sorted((pool.sims[i][j] / 0.1 for j, o in enumerate(pool.owners) if o == q.qid), reverse=True)
        assert sorted(labels[:3], reverse=True) == pytest.approx(own_sims, rel=1e-5)  # the encoder's scale
        others = [(pool.sims[i][j], pool.texts[j]) for j, o in enumerate(pool.owners) if o != q.qid]
        nearest = {t for _, t in sorted(others, key=lambda x: -x[0])[:3]}
        assert set(docs[3:6]) == nearest  # hard negatives: the encoder's nearest other-query passages
        assert labels[3:] == pytest.approx([pool.sims[i][pool.texts.index(t)] / 0.1 for t in docs[3:]], rel=1e-5)


def test_lists_are_reproducible_with_a_seed(tmp_path, tiny_bert):
    view = _view(tmp_path)
    pool = score_pool(view, encoder=str(tiny_bert), device="cpu")
    a = distill_lists(view, pool, grades_of=teacher_grades, hard_negatives=1, negatives=3, temperature=0.05, seed=7)
    b = distill_lists(view, pool, grades_of=teacher_grades, hard_negatives=1, negatives=3, temperature=0.05, seed=7)
    assert a == b


def test_bad_temperature_is_refused(tmp_path, tiny_bert):
    view = _view(tmp_path)
    pool = score_pool(view, encoder=str(tiny_bert), device="cpu")
    with pytest.raises(InputError, match="distillation temperature is -1"):
        distill_lists(view, pool, grades_of=teacher_grades, hard_negatives=1, negatives=1, temperature=-1, seed=0)


def test_fuse_mixes_z_scores_on_the_cosines_scale():
    import numpy as np

    cos = np.array([0.9, 0.5, 0.1, 0.3])
    bm25 = np.array([0.0, 12.0, 3.0, 6.0])
    assert fuse(cos, bm25, 0.0) == pytest.approx(cos)
    lexical = fuse(cos, bm25, 1.0)
    assert list(np.argsort(-lexical)) == [1, 3, 2, 0]  # BM25's order ...
    assert lexical.mean() == pytest.approx(cos.mean()) and lexical.std() == pytest.approx(cos.std())  # ... cos' scale
    assert fuse(cos, np.zeros(4), 0.5) == pytest.approx(cos.mean() + 0.5 * (cos - cos.mean()))  # no spread: no say


def test_lexical_weight_fuses_bm25_into_the_labels(tmp_path, tiny_bert):
    import numpy as np

    view = _view(tmp_path)
    pool = score_pool(view, encoder=str(tiny_bert), device="cpu", lexical=True)
    assert pool.lexical.shape == pool.sims.shape
    q0 = [j for j, o in enumerate(pool.owners) if o == view.queries[0].qid]
    assert pool.lexical[0][q0[0]] > 0 and pool.lexical[0][q0[2]] == 0  # "solar panels ..." vs "cooking pasta"
    cols = distill_lists(view, pool, grades_of=lambda q: {}, hard_negatives=2, negatives=2, temperature=0.1,
                         seed=0, lexical_weight=1.0)
    for i in range(len(TOPICS)):
        bm25 = [pool.lexical[i][pool.texts.index(t)] for t in cols["docs"][i]]
        labels = cols["labels"][i]
        for a in range(len(bm25)):
            for b in range(len(bm25)):
                if bm25[a] > bm25[b]:
                    assert labels[a] > labels[b]
    plain = distill_lists(view, pool, grades_of=lambda q: {}, hard_negatives=2, negatives=2, temperature=0.1, seed=0)
    assert plain["docs"] == cols["docs"] and not np.allclose(plain["labels"][0], cols["labels"][0])


def test_lexical_weight_needs_bm25_scores(tmp_path, tiny_bert):
    view = _view(tmp_path)
    pool = score_pool(view, encoder=str(tiny_bert), device="cpu")
    with pytest.raises(InputError, match="a lexical weight needs BM25 scores"):
        distill_lists(view, pool, grades_of=teacher_grades, hard_negatives=1, negatives=1, temperature=0.1, seed=0,
                      lexical_weight=0.3)
    with pytest.raises(InputError, match="the lexical weight is 1.5"):
        distill_lists(view, pool, grades_of=teacher_grades, hard_negatives=1, negatives=1, temperature=0.1, seed=0,
                      lexical_weight=1.5)
