"""The cross-encoder student: labels chosen from the data, real training through sentence-transformers'
CrossEncoderTrainer on a tiny BERT built in code, and a saved model that plain `CrossEncoder(DIR)` loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r2r_synth.config import TrainConfig
from r2r_synth.errors import ConfigError, InputError
from r2r_synth.schemas import DirectRecord, Document, Provenance, Query
from r2r_synth.student.base import R2R_CONFIG_FILE, load_student
from r2r_synth.student.corpus import load_training_view
from r2r_synth.student.cross_encoder import (
    CrossEncoderOptions,
    build_datasets,
    resolve_options,
    teacher_grades,
)
from r2r_synth.student.train import train

pytest.importorskip("sentence_transformers")

TOPICS = ["solar panels", "coffee brewing", "river otters", "tax returns", "jazz piano", "glacier melt"]


def _r2r_file(path: Path) -> Path:
    rows = []
    for i, topic in enumerate(TOPICS):
        docs = [f"{topic} explained in detail with examples", f"a note that mentions {topic} once",
                f"an unrelated page about cooking pasta {i}"]
        rows.append({"query": f"what is {topic}", "qid": str(100 + i), "unsorted_docs": docs, "re_rank_id": [1, 2, 3],
                     "reason": {"ranked_passages": [{"identifier": 1, "direct_reason": "answers it"}]}})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tmp_path: Path, corpus: Path, base: Path, **kw) -> TrainConfig:
    """Teacher-label objectives only (`encoder="none"`) unless the test asks for distillation."""
    kw = {"encoder": "none", "negatives": 2, **kw}
    return TrainConfig(student="cross-encoder", corpus=[corpus], out=tmp_path / "model", base=str(base),
                       max_steps=3, batch_size=2, max_length=64, device="cpu", **kw)


def test_grades_follow_the_teacher_permutation(tmp_path):
    view = load_training_view([_r2r_file(tmp_path / "c.jsonl")])
    q = view.queries[0]
    g = teacher_grades(q)
    first, middle, last = q.permutations[0]
    assert g[first] == 3.0 and g[middle] == 2.0 and g[last] == 1.0


def test_datasets_add_other_query_negatives_only(tmp_path):
    view = load_training_view([_r2r_file(tmp_path / "c.jsonl")])
    cols = build_datasets(view, options=CrossEncoderOptions(base="unused", negatives=4, seed=1))
    assert set(cols) == {"listwise", "pointwise"}  # no comparison records -> no pairwise objective
    lw = cols["listwise"]
    assert len(lw["query"]) == len(TOPICS)
    for query, docs, labels in zip(lw["query"], lw["docs"], lw["labels"]):
        assert len(docs) == 3 + 4 and labels[:3] == [3.0, 2.0, 1.0] and labels[3:] == [0.0] * 4
        own = next(q for q in view.queries if q.text == query)
        assert not set(docs[3:]) & {d.text for d in own.docs.values()}  # negatives come from other queries
    pw = cols["pointwise"]
    assert pw["label"][:3] == [1.0, 1.0, 0.0]  # teacher's top two relevant, its last not


def test_gold_labels_are_used_only_when_asked(tmp_path):
    prov = Provenance(teacher="t", program="direct", program_hash="p", prompt_hash="h")
    f = tmp_path / "direct.jsonl"
    recs = [DirectRecord(key=f"k{i}", query=Query(qid="q", text="q"), document=Document(docid=f"d{i}", text=f"t{i}"),
                         reasoning="r", relevance=3 - i, score=0.9 - 0.3 * i, gold=i, provenance=prov) for i in range(3)]
    f.write_text("".join(r.model_dump_json() + "\n" for r in recs))
    q = load_training_view([f]).queries[0]
    assert teacher_grades(q) == {"d0": 3.0, "d1": 2.0, "d2": 1.0}
    assert teacher_grades(q, labels="gold") == {"d0": 0.0, "d1": 1.0, "d2": 2.0}


def test_train_saves_a_model_that_plain_crossencoder_loads(tmp_path, tiny_bert):
    from sentence_transformers import CrossEncoder

    corpus = _r2r_file(tmp_path / "c.jsonl")
    result = train(_config(tmp_path, corpus, tiny_bert))
    out = tmp_path / "model"
    saved = json.loads((out / R2R_CONFIG_FILE).read_text())
    assert saved["student"] == "cross-encoder" and saved["base"] == str(tiny_bert)
    assert saved["options"]["base"] == str(tiny_bert) and saved["options"]["negatives"] == 2
    assert saved["config"]["encoder"] == "none" and saved["options"]["encoder"] is None  # as given; as resolved
    assert saved["training"]["steps"] == 3 and saved["training"]["examples"] == {"listwise": 6, "pointwise": 24}
    assert saved["corpus"]["queries"] == len(TOPICS) and saved["corpus"]["sources"] == [str(corpus)]

    plain = CrossEncoder(str(out))
    pairs = [("what is solar panels", "solar panels explained"), ("what is solar panels", "pasta")]
    ours = result.student.score(pairs[0][0], [p[1] for p in pairs])
    assert list(plain.predict(pairs)) == pytest.approx(ours, rel=1e-5)
    again = load_student(out)
    assert again.kind == "cross-encoder" and again.score(pairs[0][0], [p[1] for p in pairs]) == pytest.approx(ours, rel=1e-5)


def test_training_moves_the_weights(tmp_path, tiny_bert):
    from sentence_transformers import CrossEncoder

    corpus = _r2r_file(tmp_path / "c.jsonl")
    train(_config(tmp_path, corpus, tiny_bert, seed=3))
    trained = CrossEncoder(str(tmp_path / "model"))
    fresh = CrossEncoder(str(tiny_bert), num_labels=1)
    w_trained = dict(trained.named_parameters())
    w_fresh = dict(fresh.named_parameters())
    key = next(k for k in w_trained if "encoder.layer.0.attention.self.query.weight" in k)
    assert not w_trained[key].detach().equal(w_fresh[key].detach())
    emb = next(k for k in w_trained if k.endswith("word_embeddings.weight"))
    assert w_trained[emb].detach().equal(w_fresh[emb].detach())  # frozen by default (freeze_embeddings)


def test_train_layers_trains_only_the_top_layers(tmp_path, tiny_bert):
    from sentence_transformers import CrossEncoder

    corpus = _r2r_file(tmp_path / "c.jsonl")
    train(_config(tmp_path, corpus, tiny_bert, seed=3, train_layers=1))
    trained = dict(CrossEncoder(str(tmp_path / "model")).named_parameters())
    fresh = dict(CrossEncoder(str(tiny_bert), num_labels=1).named_parameters())

    def moved(part: str) -> bool:
        keys = [k for k in trained if part in k]
        assert keys, part
        return any(not trained[k].detach().equal(fresh[k].detach()) for k in keys)

    assert not moved("encoder.layer.0.") and not moved("embeddings.")  # below the top layer: frozen
    assert moved("encoder.layer.1.") and moved("classifier.")  # the top layer and the head learn
    cfg = json.loads((tmp_path / "model" / R2R_CONFIG_FILE).read_text())
    assert cfg["options"]["train_layers"] == 1


def test_gold_labels_on_a_corpus_without_gold_are_refused(tmp_path, tiny_bert):
    # R2R's release carries the teacher's order only: asking for gold must not train on anything else.
    cfg = _config(tmp_path, _r2r_file(tmp_path / "c.jsonl"), tiny_bert, labels="gold", encoder=None)
    with pytest.raises(InputError, match=r"--labels gold, but no document of the 6 queries read from .*c\.jsonl carries a gold label"):
        train(cfg)
    assert not (tmp_path / "model").exists()


def test_train_layers_above_the_depth_is_refused(tmp_path, tiny_bert):
    cfg = _config(tmp_path, _r2r_file(tmp_path / "c.jsonl"), tiny_bert, train_layers=5)
    with pytest.raises(ConfigError, match="--train-layers 5 but the base has 2 layers"):
        train(cfg)
    assert not (tmp_path / "model").exists()  # the directory the refused run created is gone


def test_a_refused_run_keeps_what_an_existing_out_dir_held(tmp_path, tiny_bert):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "notes.txt").write_text("mine")
    cfg = _config(tmp_path, _r2r_file(tmp_path / "c.jsonl"), tiny_bert, train_layers=5)
    with pytest.raises(ConfigError, match="--train-layers 5"):
        train(cfg)
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["notes.txt"]


def test_explain_is_refused_with_the_fix(tmp_path, tiny_bert):
    train(_config(tmp_path, _r2r_file(tmp_path / "c.jsonl"), tiny_bert))
    student = load_student(tmp_path / "model")
    with pytest.raises(InputError, match="cannot explain its scores"):
        student.explain("q", "d")


def test_unknown_student_kind(tmp_path, tiny_bert):
    cfg = _config(tmp_path, _r2r_file(tmp_path / "c.jsonl"), tiny_bert).model_copy(update={"student": "svm"})
    with pytest.raises(ConfigError, match="unknown --student 'svm'"):
        train(cfg)


def test_all_objectives_switched_off_is_an_error(tmp_path, tiny_bert):
    cfg = _config(tmp_path, _r2r_file(tmp_path / "c.jsonl"), tiny_bert, listwise_weight=0, pointwise_weight=0,
                  pairwise_weight=0)
    with pytest.raises(InputError, match="gives the cross-encoder nothing to learn from"):
        train(cfg)


def test_missing_base_model_is_a_clear_error(tmp_path):
    cfg = _config(tmp_path, _r2r_file(tmp_path / "c.jsonl"), tmp_path / "no-such-model")
    cfg = cfg.model_copy(update={"base": str(tmp_path / "empty")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="cannot load the base model"):
        train(cfg)


def test_not_a_model_directory(tmp_path):
    with pytest.raises(InputError, match="no r2r_config.json; not a model written by `r2r-synth train`"):
        load_student(tmp_path)


def test_resolve_fills_defaults_and_keeps_user_values(tmp_path, tiny_bert):
    cfg = _config(tmp_path, tmp_path, tiny_bert, learning_rate=2e-4)
    opts = resolve_options(cfg)
    assert opts.learning_rate == 2e-4 and opts.head_learning_rate == 1e-3 and opts.max_length == 64
    assert opts.encoder is None and opts.distill_weight == 0.0 and opts.listwise_weight == 1.0
    assert (opts.seed, opts.device, opts.max_steps) == (42, "cpu", 3)


def test_options_refuse_an_unknown_knob():
    with pytest.raises(ValueError, match="head_init\n  Extra inputs are not permitted"):
        CrossEncoderOptions(base="b", head_init="probe")


def test_resolve_distills_by_default_and_teacher_objectives_step_aside(tmp_path, tiny_bert):
    from r2r_synth.student.cross_encoder import DEFAULT_BASE_ID

    opts = resolve_options(TrainConfig(student="cross-encoder", corpus=[tmp_path], out=tmp_path / "m",
                                       base=str(tiny_bert)))
    assert opts.encoder == DEFAULT_BASE_ID and opts.distill_weight == 1.0  # loaded from the shipped copy
    assert opts.listwise_weight == opts.pointwise_weight == opts.pairwise_weight == 0.0
    both = resolve_options(TrainConfig(corpus=[tmp_path], out=tmp_path / "m", base=str(tiny_bert), listwise_weight=0.5))
    assert both.listwise_weight == 0.5 and both.distill_weight == 1.0  # asked for: kept beside distill


@pytest.mark.parametrize("knob", [{"generation_weight": 0.2}, {"max_reason_tokens": 32}])
def test_reasoning_knobs_are_refused_with_the_fix(tmp_path, tiny_bert, knob):
    name = next(iter(knob)).replace("_", "-")
    with pytest.raises(ConfigError, match=f"--{name} applies to the reasoning student only"):
        resolve_options(_config(tmp_path, tmp_path, tiny_bert, **knob))


def test_lexical_weight_without_distillation_is_refused(tmp_path, tiny_bert):
    with pytest.raises(ConfigError, match="--lexical-weight mixes BM25 into the distillation labels, and distillation is off"):
        resolve_options(_config(tmp_path, tmp_path, tiny_bert, lexical_weight=0.3))  # _config: --encoder none


def test_zero_temperature_is_refused(tmp_path, tiny_bert):
    cfg = _config(tmp_path, _r2r_file(tmp_path / "c.jsonl"), tiny_bert, temperature=0.0, encoder=None)
    with pytest.raises(ConfigError, match="--temperature is 0.0"):
        train(cfg)


def test_unloadable_encoder_is_a_clear_error(tmp_path, tiny_bert):
    (tmp_path / "empty").mkdir()
    cfg = _config(tmp_path, _r2r_file(tmp_path / "c.jsonl"), tiny_bert, encoder=str(tmp_path / "empty"))
    with pytest.raises(InputError, match="cannot load the encoder .* that scores the distillation lists"):
        train(cfg)


def test_distillation_trains_and_records_its_lists(tmp_path, tiny_bert):
    from sentence_transformers import CrossEncoder

    corpus = _r2r_file(tmp_path / "c.jsonl")
    train(_config(tmp_path, corpus, tiny_bert, encoder=str(tiny_bert), hard_negatives=2, negatives=1))
    saved = json.loads((tmp_path / "model" / R2R_CONFIG_FILE).read_text())
    assert saved["training"]["examples"] == {"distill": len(TOPICS)}  # teacher objectives step aside by default
    assert saved["options"]["encoder"] == str(tiny_bert) and saved["options"]["hard_negatives"] == 2
    assert len(CrossEncoder(str(tmp_path / "model")).predict([("q", "d"), ("q", "e")])) == 2


def test_max_minutes_stops_training_and_still_saves(tmp_path, tiny_bert):
    from sentence_transformers import CrossEncoder

    cfg = _config(tmp_path, _r2r_file(tmp_path / "c.jsonl"), tiny_bert).model_copy(
        update={"max_steps": 50, "max_minutes": 1e-6})
    train(cfg)
    saved = json.loads((tmp_path / "model" / R2R_CONFIG_FILE).read_text())
    assert saved["training"]["steps"] == 1 and saved["training"]["stopped_at_step"] == 1
    assert len(CrossEncoder(str(tmp_path / "model")).predict([("q", "d")])) == 1


# ----------------------------------------------------------------------------- a cross-encoder base, int8


@pytest.fixture
def ce_base(tmp_path, tiny_bert) -> Path:
    """A sentence-transformers CrossEncoder directory (the tiny BERT with a one-logit head, saved)."""
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(5)
    out = tmp_path / "ce-base"
    CrossEncoder(str(tiny_bert), num_labels=1).save_pretrained(str(out))
    return out


def test_a_cross_encoder_base_keeps_its_head_and_skips_distillation(tmp_path, tiny_bert, ce_base):
    from sentence_transformers import CrossEncoder

    from r2r_synth.student.cross_encoder import build_model, is_cross_encoder_base

    assert is_cross_encoder_base(str(ce_base)) and not is_cross_encoder_base(str(tiny_bert))
    opts = resolve_options(TrainConfig(student="cross-encoder", corpus=[tmp_path], out=tmp_path / "m", base=str(ce_base)))
    # a trained reranker is not taught a bi-encoder's order: its own objectives on the teacher's labels
    assert opts.encoder is None and opts.distill_weight == 0 and opts.listwise_weight == 1.0
    pairs = [("what is solar panels", "solar panels explained"), ("what is solar panels", "pasta")]
    # before training the student scores exactly as its base: the head is loaded, not re-initialised
    assert list(build_model(str(ce_base), max_length=64).predict(pairs)) == pytest.approx(
        list(CrossEncoder(str(ce_base)).predict(pairs)), rel=1e-6)
    corpus = _r2r_file(tmp_path / "c.jsonl")
    train(TrainConfig(student="cross-encoder", corpus=[corpus], out=tmp_path / "model", base=str(ce_base),
                      max_steps=2, batch_size=2, max_length=64, device="cpu", negatives=1))
    assert load_student(tmp_path / "model").kind == "cross-encoder"


def test_the_default_base_is_recorded_by_its_hub_id(tmp_path):
    from r2r_synth.student.cross_encoder import DEFAULT_BASE_ID

    opts = resolve_options(TrainConfig(student="cross-encoder", corpus=[tmp_path], out=tmp_path / "m"))
    assert opts.base == DEFAULT_BASE_ID and opts.encoder == DEFAULT_BASE_ID


def test_binary_gold_qrels_make_relevant_pointwise_targets(tmp_path):
    cands = tmp_path / "c.json"
    cands.write_text(json.dumps([{"query": f"q {t}", "hits": [{"qid": i, "docid": f"{i}d{j}", "content": f"{t} {j}"}
                                                               for j in range(3)]} for i, t in enumerate(TOPICS)]))
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{i}\t{i}d1\t1\n" for i in range(len(TOPICS))))
    view = load_training_view([cands], qrels=qrels)
    cols = build_datasets(view, options=CrossEncoderOptions(base="unused", labels="gold", negatives=1,
                                                            listwise_weight=0))
    pw = cols["pointwise"]
    assert pw["label"].count(1.0) == len(TOPICS)  # the judged document of each query is relevant (BEIR: 1)


def test_int8_runs_through_onnx_runtime(tmp_path, tiny_bert, monkeypatch):
    pytest.importorskip("onnxruntime")
    import torch

    monkeypatch.setenv("R2R_INT8_BACKEND", "onnx")
    from r2r_synth.student.onnx_int8 import FLOAT_FILE, INT8_FILE, ONNX_DIR, OnnxScorer

    corpus = _r2r_file(tmp_path / "c.jsonl")
    train(_config(tmp_path, corpus, tiny_bert))
    out = tmp_path / "model"
    fp32, int8 = load_student(out), load_student(out, int8=True)
    assert (out / ONNX_DIR / INT8_FILE).is_file()
    docs = ["solar panels explained in detail with many more words than the other one", "pasta", "a note"]
    exact = fp32.score("what is solar panels", docs)
    onnx_fp32 = OnnxScorer(out / ONNX_DIR / FLOAT_FILE, tokenizer=fp32.model.tokenizer, max_length=64)
    logits = onnx_fp32.logits([("what is solar panels", d) for d in docs])
    assert [float(x) for x in fp32.model.activation_fn(torch.tensor(logits))] == pytest.approx(exact, abs=1e-4)
    assert int8.score("what is solar panels", docs) == pytest.approx(exact, abs=0.05)
    # the file is reused, not exported again
    mtime = (out / ONNX_DIR / INT8_FILE).stat().st_mtime_ns
    load_student(out, int8=True)
    assert (out / ONNX_DIR / INT8_FILE).stat().st_mtime_ns == mtime


def test_int8_runs_through_openvino_calibrated_on_the_training_pairs(tmp_path, tiny_bert, capfd):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from r2r_synth.student.openvino_int8 import CALIBRATION_FILE, INT8_XML, OV_DIR, OpenVinoScorer

    corpus = _r2r_file(tmp_path / "c.jsonl")
    train(_config(tmp_path, corpus, tiny_bert))
    out = tmp_path / "model"
    rows = [json.loads(line) for line in (out / CALIBRATION_FILE).read_text().splitlines()]
    view = load_training_view([corpus])
    # a document per query in turn: the first pairs cover every query once
    assert [r["query"] for r in rows[:len(view.queries)]] == [q.text for q in view.queries]
    assert len(rows) == sum(len(q.docs) for q in view.queries)
    capfd.readouterr()
    fp32, int8 = load_student(out), load_student(out, int8=True)  # auto: OpenVINO, calibrated
    assert isinstance(int8.onnx, OpenVinoScorer) and (out / OV_DIR / INT8_XML).is_file()
    assert capfd.readouterr().out == ""  # NNCF's progress stays off stdout (rerank writes its run there)
    docs = ["solar panels explained in detail with many more words than the other one", "pasta", "a note"]
    exact = fp32.score("what is solar panels", docs)
    assert int8.score("what is solar panels", docs) == pytest.approx(exact, abs=0.05)
    mtime = (out / OV_DIR / INT8_XML).stat().st_mtime_ns
    load_student(out, int8=True)
    assert (out / OV_DIR / INT8_XML).stat().st_mtime_ns == mtime  # reused, not quantized again


def test_int8_runtime_choice_and_its_errors(tmp_path, tiny_bert, monkeypatch):
    pytest.importorskip("onnxruntime")
    from r2r_synth.student.int8 import choose_backend, openvino_installed
    from r2r_synth.student.onnx_int8 import OnnxScorer
    from r2r_synth.student.openvino_int8 import CALIBRATION_FILE

    corpus = _r2r_file(tmp_path / "c.jsonl")
    train(_config(tmp_path, corpus, tiny_bert))
    out = tmp_path / "model"
    monkeypatch.setenv("R2R_INT8_BACKEND", "fastest")
    with pytest.raises(ConfigError, match="R2R_INT8_BACKEND='fastest' is not an int8 runtime"):
        load_student(out, int8=True)
    # a student without calibration.jsonl (trained before train wrote it) runs through ONNX Runtime
    (out / CALIBRATION_FILE).rename(tmp_path / CALIBRATION_FILE)
    monkeypatch.setenv("R2R_INT8_BACKEND", "auto")
    assert isinstance(load_student(out, int8=True).onnx, OnnxScorer)
    if openvino_installed():
        monkeypatch.setenv("R2R_INT8_BACKEND", "openvino")
        with pytest.raises(ConfigError, match="calibrates on calibration.jsonl, which this student lacks"):
            choose_backend(out)
        (out / CALIBRATION_FILE).write_text('{"query": "q", "document": "d"}\n{"query": "q"}\n')
        with pytest.raises(InputError, match=r"calibration.jsonl:2: not a calibration pair"):
            load_student(out, int8=True)


def test_the_start_learns_the_encoders_own_order_before_the_teacher(tmp_path, tiny_bert):
    from r2r_synth.student.distill import distill_lists, score_pool

    corpus = _r2r_file(tmp_path / "c.jsonl")
    view = load_training_view([corpus])
    opts = resolve_options(TrainConfig(student="cross-encoder", corpus=[corpus], out=tmp_path / "m",
                                       encoder=str(tiny_bert), start_epochs=1, hard_negatives=2, negatives=1))
    assert opts.start_epochs == 1.0 and opts.encoder == str(tiny_bert)
    cols = build_datasets(view, options=opts)
    # the start's lists carry the encoder's scores in the encoder's own order: no teacher reordering
    pool = score_pool(view, encoder=str(tiny_bert), device="cpu")
    own = distill_lists(view, pool, grades_of=lambda q: {}, hard_negatives=2, negatives=1, temperature=0.05, seed=42)
    assert cols["start"] == own and cols["distill"] != own
    train(_config(tmp_path, corpus, tiny_bert, encoder=str(tiny_bert), start_epochs=1, hard_negatives=2))
    meta = json.loads((tmp_path / "model" / R2R_CONFIG_FILE).read_text())
    start = meta["training"]["start"]
    assert start["examples"] == len(TOPICS) and start["steps"] == len(TOPICS) // 2  # one epoch of 2-list steps
    assert meta["training"]["steps"] == 3  # then the objectives, as without a start


def test_the_start_is_refused_where_it_has_no_meaning(tmp_path, tiny_bert, ce_base):
    with pytest.raises(ConfigError, match="already a cross-encoder"):
        resolve_options(TrainConfig(student="cross-encoder", corpus=[tmp_path], out=tmp_path / "m",
                                    base=str(ce_base), start_epochs=1))
    with pytest.raises(ConfigError, match="--encoder is none"):
        resolve_options(TrainConfig(student="cross-encoder", corpus=[tmp_path], out=tmp_path / "m",
                                    base=str(tiny_bert), encoder="none", start_epochs=1))
    from r2r_synth.student.bi_encoder import resolve_options as bi_options

    with pytest.raises(ConfigError, match="--start-epochs applies to the cross-encoder student only"):
        bi_options(TrainConfig(corpus=[tmp_path], out=tmp_path / "m", start_epochs=1))
