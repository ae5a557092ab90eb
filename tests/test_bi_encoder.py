"""The bi-encoder student: the base itself fine-tuned through sentence-transformers' trainer and losses,
from candidate lists + qrels (human labels) or a teacher corpus; objectives chosen by the data; a saved
model that plain `SentenceTransformer(DIR)` loads; int8 through ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r2r_synth.config import TrainConfig
from r2r_synth.errors import ConfigError, InputError
from r2r_synth.schemas import DirectRecord, Document, Provenance, Query
from r2r_synth.student.base import R2R_CONFIG_FILE, load_student
from r2r_synth.student.bi_encoder import (
    BiEncoderOptions,
    build_datasets,
    build_model,
    positives,
    resolve_options,
)
from r2r_synth.student.corpus import load_training_view
from r2r_synth.student.cross_encoder import DEFAULT_BASE_ID
from r2r_synth.student.train import train

pytest.importorskip("sentence_transformers")

TOPICS = ["solar panels", "coffee brewing", "river otters", "tax returns", "jazz piano", "glacier melt"]


def _candidates(tmp_path: Path, *, grades: tuple[int, ...] = (1,)) -> tuple[Path, Path]:
    """A RankGPT file (4 candidates per query, BM25 order) and TREC qrels judging the second candidate
    with grades[0] (and, with more grades, the next candidates with the others)."""
    entries, qrels = [], []
    for i, topic in enumerate(TOPICS):
        texts = [f"a note that mentions {topic} once", f"{topic} explained in detail", f"cooking pasta {i}",
                 f"weather report {i}"]
        entries.append({"query": f"what is {topic}",
                        "hits": [{"qid": i, "docid": f"{i}d{j}", "content": t, "score": 10.0 - j}
                                 for j, t in enumerate(texts)]})
        qrels += [f"{i} 0 {i}d{1 + k} {g}" for k, g in enumerate(grades)]
    (tmp_path / "cands.json").write_text(json.dumps(entries))
    (tmp_path / "qrels.txt").write_text("\n".join(qrels) + "\n")
    return tmp_path / "cands.json", tmp_path / "qrels.txt"


def _config(tmp_path: Path, corpus: Path, base: Path, **kw) -> TrainConfig:
    return TrainConfig(student="bi-encoder", corpus=[corpus], out=tmp_path / "model", base=str(base), max_steps=2,
                       batch_size=4, device="cpu", **kw)


def test_default_student_is_the_bi_encoder_on_the_shipped_base(tmp_path):
    config = TrainConfig(corpus=[tmp_path], out=tmp_path / "m")
    assert config.student == "bi-encoder"
    opts = resolve_options(config)
    # r2r_config.json names the Hub id, never the package's local path
    assert opts.base == DEFAULT_BASE_ID and opts.hard_negatives == 1 and opts.listwise_weight == 1.0


def test_gold_labels_from_candidates_and_qrels_train_a_model_sentence_transformers_loads(tmp_path, tiny_bert):
    from sentence_transformers import SentenceTransformer

    cands, qrels = _candidates(tmp_path)
    result = train(_config(tmp_path, cands, tiny_bert, qrels=qrels, labels="gold", hard_negatives=2))
    out = tmp_path / "model"
    meta = json.loads((out / R2R_CONFIG_FILE).read_text())
    assert meta["student"] == "bi-encoder" and meta["base"] == str(tiny_bert)
    assert meta["corpus"]["candidate_lists"] == len(TOPICS) and meta["corpus"]["sources"] == [str(cands)]
    # binary qrels: the judged document is the positive; one (query, positive, 2 mined negatives) tuple each
    assert meta["training"]["positive_grade"] == 1.0 and meta["training"]["examples"] == {"listwise": len(TOPICS)}
    assert meta["training"]["steps"] == 2
    plain = SentenceTransformer(str(out), device="cpu")
    student = load_student(out)
    assert type(student).__name__ == "BiEncoderStudent" and result.student.kind == "bi-encoder"
    docs = ["jazz piano explained in detail", "cooking pasta 4"]
    q = plain.encode(["what is jazz piano"], normalize_embeddings=True)[0]
    d = plain.encode(docs, normalize_embeddings=True)
    assert student.score("what is jazz piano", docs) == pytest.approx([float(x) for x in d @ q], abs=1e-5)
    assert not (out / "checkpoints").exists()


def test_training_moves_the_base(tmp_path, tiny_bert):
    import torch

    cands, qrels = _candidates(tmp_path)
    train(_config(tmp_path, cands, tiny_bert, qrels=qrels, labels="gold", learning_rate=1e-3))
    before = build_model(str(tiny_bert)).state_dict()
    after = load_student(tmp_path / "model").model.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("encoder.layer" in k for k in moved)


def test_mined_negatives_are_never_the_querys_positives(tmp_path, tiny_bert):
    cands, qrels = _candidates(tmp_path)
    view = load_training_view([cands], qrels=qrels)
    model = build_model(str(tiny_bert), device="cpu")
    cols = build_datasets(view, model=model, options=BiEncoderOptions(base="x", labels="gold", hard_negatives=2,
                                                                      negatives=1))
    assert set(cols) == {"listwise"}  # binary qrels: no graded list, no teacher scores or preferences
    lw = cols["listwise"]
    assert list(lw) == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    for i, anchor in enumerate(lw["anchor"]):
        q = next(q for q in view.queries if q.text == anchor)
        (pos,) = positives(q, labels="gold", threshold=1)
        assert lw["positive"][i] == q.docs[pos].text
        negs = [lw[f"negative_{k}"][i] for k in (1, 2, 3)]
        assert q.docs[pos].text not in negs
        # the random negative comes from another query
        assert lw["negative_3"][i] not in {d.text for d in q.docs.values()}


def test_objectives_follow_what_the_corpus_holds(tmp_path, tiny_bert):
    prov = Provenance(teacher="t", program="direct", program_hash="p", prompt_hash="h")
    recs = [DirectRecord(key=f"k{q}{i}", query=Query(qid=f"q{q}", text=f"query {q}"),
                         document=Document(docid=f"d{q}{i}", text=f"text {q} {i}"), reasoning="r", relevance=3 - i,
                         score=0.9 - 0.3 * i, provenance=prov) for q in range(3) for i in range(3)]
    f = tmp_path / "direct.jsonl"
    f.write_text("".join(r.model_dump_json() + "\n" for r in recs))
    view = load_training_view([f])
    model = build_model(str(tiny_bert), device="cpu")
    cols = build_datasets(view, model=model, options=BiEncoderOptions(base="x", hard_negatives=1))
    # teacher scores -> MarginMSE; grades 3/2/1 -> CoSENT; grade >= 2 -> MNRL positives
    assert set(cols) == {"listwise", "distill", "pointwise"}
    assert sorted(cols["pointwise"]["score"][:3]) == [1.0, 2.0, 3.0]
    assert len(cols["listwise"]["anchor"]) == 6  # two positives (grades 3 and 2) per query
    # pairs adjacent in the teacher's order and best vs worst; margins positive, on the base's scale
    assert len(cols["distill"]["query"]) == 9 and all(m > 0 for m in cols["distill"]["label"])
    off = build_datasets(view, model=model, options=BiEncoderOptions(base="x", hard_negatives=1, distill_weight=0,
                                                                     pointwise_weight=0))
    assert set(off) == {"listwise"}


def test_graded_gold_labels_add_cosent(tmp_path, tiny_bert):
    cands, qrels = _candidates(tmp_path, grades=(3, 1, 0))
    view = load_training_view([cands], qrels=qrels)
    cols = build_datasets(view, model=build_model(str(tiny_bert), device="cpu"),
                          options=BiEncoderOptions(base="x", labels="gold", hard_negatives=1))
    assert set(cols) == {"listwise", "pointwise"}
    assert len(cols["listwise"]["anchor"]) == len(TOPICS)  # graded qrels: positive = grade >= 2
    assert cols["pointwise"]["score"][:3] == [3.0, 1.0, 0.0]


def test_teacher_labels_on_candidate_lists_are_refused(tmp_path, tiny_bert):
    cands, qrels = _candidates(tmp_path)
    with pytest.raises(InputError, match="carry human labels, not a teacher's"):
        train(_config(tmp_path, cands, tiny_bert, qrels=qrels))
    assert not (tmp_path / "model").exists()


def test_candidates_without_qrels_are_refused_with_the_fix(tmp_path):
    cands, _ = _candidates(tmp_path)
    with pytest.raises(InputError, match=r"(?s)cands\.json: not a teacher corpus.*add --qrels FILE --labels gold"):
        load_training_view([cands])


def test_nothing_to_learn_is_a_clear_error(tmp_path, tiny_bert):
    cands, qrels = _candidates(tmp_path)
    with pytest.raises(InputError, match="gives the bi-encoder nothing to learn from"):
        train(_config(tmp_path, cands, tiny_bert, qrels=qrels, labels="gold", listwise_weight=0))


@pytest.mark.parametrize("knob", ["temperature", "lexical_weight", "encoder"])
def test_cross_encoder_knobs_are_refused(tmp_path, knob):
    value = "none" if knob == "encoder" else 0.1
    with pytest.raises(ConfigError, match="applies to the cross-encoder student only"):
        resolve_options(TrainConfig(corpus=[tmp_path], out=tmp_path / "m", **{knob: value}))


def test_int8_runs_through_onnx_runtime(tmp_path, tiny_bert, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("R2R_INT8_BACKEND", "onnx")
    from r2r_synth.student.onnx_int8 import FLOAT_FILE, INT8_FILE, ONNX_DIR, OnnxScorer

    cands, qrels = _candidates(tmp_path)
    train(_config(tmp_path, cands, tiny_bert, qrels=qrels, labels="gold"))
    out = tmp_path / "model"
    fp32 = load_student(out)
    int8 = load_student(out, int8=True)
    assert (out / ONNX_DIR / INT8_FILE).is_file() and (out / ONNX_DIR / FLOAT_FILE).is_file()
    docs = ["jazz piano explained in detail with many more words than the others", "pasta", "a weather report"]
    exact = fp32.score("what is jazz piano", docs)
    # the float export is the same function (padding included): the export is right
    onnx_fp32 = OnnxScorer(out / ONNX_DIR / FLOAT_FILE, tokenizer=fp32.model.tokenizer, max_length=128)
    q = onnx_fp32.embed(["what is jazz piano"])[0]
    assert [float(x) for x in onnx_fp32.embed(docs) @ q] == pytest.approx(exact, abs=1e-4)
    assert int8.score("what is jazz piano", docs) == pytest.approx(exact, abs=0.05)
    with pytest.raises(ConfigError, match="runs on the CPU only"):
        load_student(out, int8=True, device="cuda")


def test_int8_through_openvino_embeds_texts_as_the_float_model(tmp_path, tiny_bert):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from r2r_synth.student.openvino_int8 import OpenVinoScorer

    cands, qrels = _candidates(tmp_path)
    train(_config(tmp_path, cands, tiny_bert, qrels=qrels, labels="gold"))
    out = tmp_path / "model"
    fp32, int8 = load_student(out), load_student(out, int8=True)
    assert isinstance(int8.onnx, OpenVinoScorer)
    docs = ["jazz piano explained in detail with many more words than the others", "pasta", "a weather report"]
    assert int8.score("what is jazz piano", docs) == pytest.approx(fp32.score("what is jazz piano", docs), abs=0.05)


def test_permutation_grades_never_reach_cosent(tmp_path, tiny_bert):
    """A permutation orders one query's documents only; CoSENT compares pairs across the batch, so an
    R2R-style corpus trains MNRL on the teacher's first document and no CoSENT."""
    rows = [{"query": f"what is {t}", "qid": str(i), "unsorted_docs": [f"{t} in detail", f"{t} once", f"pasta {i}"],
             "re_rank_id": [1, 2, 3]} for i, t in enumerate(TOPICS)]
    f = tmp_path / "r2r.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    view = load_training_view([f])
    cols = build_datasets(view, model=build_model(str(tiny_bert), device="cpu"),
                          options=BiEncoderOptions(base="x", hard_negatives=1))
    assert set(cols) == {"listwise"}
    assert sorted(cols["listwise"]["positive"]) == sorted(f"{t} in detail" for t in TOPICS)


def test_the_teachers_answer_sentences_supervise_the_evidence(r2r_corpus, tiny_bert):
    """R2R's release quotes, per passage, the sentence that answers the query: (query, that sentence of
    the teacher's first passage) pairs train the sentence `rerank --explain` shows; gold labels have none."""
    view = load_training_view([r2r_corpus / "msmarco_100.jsonl"]).limit(20)
    model = build_model(str(tiny_bert), device="cpu")
    cols = build_datasets(view, model=model, options=BiEncoderOptions(base="x", hard_negatives=0))
    ev = cols["evidence"]
    assert len(ev["anchor"]) >= 15
    for anchor, sentence in zip(ev["anchor"], ev["positive"]):
        q = next(q for q in view.queries if q.text == anchor)
        firsts = positives(q, labels="teacher", threshold=2.0)
        assert any(sentence in q.docs[d].answer_sentences for d in firsts)
    off = build_datasets(view, model=model, options=BiEncoderOptions(base="x", hard_negatives=0, evidence_weight=0))
    assert "evidence" not in off
