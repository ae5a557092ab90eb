"""The hybrid student: train holds out a share of its queries by query, keeps the best epoch on them and
fits the fusion with the first stage there; r2r_config.json records it; evaluate and rerank rank with
it, --no-hybrid without it; a hybrid with no first-stage scores is refused before anything is written.
A tiny BERT trained in the test, real candidate files, the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from r2r_synth.config import EvaluateConfig, TrainConfig
from r2r_synth.errors import InputError
from r2r_synth.evaluate import evaluate, rerank_documents
from r2r_synth.hybrid import WEIGHT_GRID, Hybrid, fuse_scores, fuse_with
from r2r_synth.io.first_stage import score_documents
from r2r_synth.student.base import read_r2r_config
from r2r_synth.student.corpus import load_training_view
from r2r_synth.student.heldout import MIN_QUERIES, HeldOutQuery, fit_hybrid, ndcg, split

REPO = Path(__file__).resolve().parents[1]
TOPICS = ["solar panels", "coffee brewing", "river otters", "tax returns", "jazz piano", "glacier melt",
          "tide pools", "bread baking", "chess openings", "volcano eruptions", "bee keeping", "rock climbing",
          "wind turbines", "sushi rolls", "comet tails", "tea ceremonies", "desert foxes", "violin making",
          "coral reefs", "paper folding", "ice hockey", "moon phases", "cheese aging", "kite flying",
          "salt marshes", "clock repair", "owl pellets", "sand dunes", "maple syrup", "lighthouse keepers"]


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "r2r_synth.cli", *args], input=stdin, capture_output=True, check=False,
                          text=True, env=env, timeout=600)


def write_candidates(path: Path, *, scores: bool = True) -> tuple[Path, Path]:
    """A RankGPT file of 30 queries x 4 candidates and its qrels. The relevant candidate comes first and
    shares no word with its query: the first stage's scores know it, a student that never saw the query
    cannot, so fusing the two helps."""
    entries, qrels = [], []
    for i, topic in enumerate(TOPICS):
        texts = [f"fact sheet {i}", f"a note that mentions {topic} once", f"cooking pasta {i}", f"weather report {i}"]
        hits = [{"qid": i, "docid": f"{i}d{j}", "content": t} | ({"score": 10.0 - j} if scores else {})
                for j, t in enumerate(texts)]
        entries.append({"query": f"what is {topic}", "hits": hits})
        qrels += [f"{i} 0 {i}d0 1", f"{i} 0 {i}d2 0", f"{i} 0 {i}d3 0"]
    path.mkdir(parents=True, exist_ok=True)
    (path / "cands.json").write_text(json.dumps(entries))
    (path / "qrels.txt").write_text("\n".join(qrels) + "\n")
    return path / "cands.json", path / "qrels.txt"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    return write_candidates(tmp_path_factory.mktemp("cands"))


@pytest.fixture(scope="module")
def student(tmp_path_factory, tiny_bert, corpus) -> Path:
    """A bi-encoder trained with the default held-out share over at most 2 epochs."""
    pytest.importorskip("sentence_transformers")
    from r2r_synth.student.train import train

    out = tmp_path_factory.mktemp("student") / "bi"
    cands, qrels = corpus
    train(TrainConfig(corpus=[cands], qrels=qrels, labels="gold", out=out, base=str(tiny_bert), epochs=2,
                      batch_size=4, device="cpu"))
    return out


# ----------------------------------------------------------------------------- the arithmetic


def test_minmax_interpolation_and_weighted_rrf():
    student, first = [0.9, 0.1, 0.5], [1.0, 3.0, 2.0]
    # minmax: student -> [1, 0, 0.5], first -> [0, 1, 0.5]
    assert fuse_scores(student, first, method="minmax", weight=0.25) == pytest.approx([0.75, 0.25, 0.5])
    # rrf: student ranks 1, 3, 2; first stage 3, 1, 2
    assert fuse_scores(student, first, method="rrf", weight=0.5) == pytest.approx(
        [0.5 / 63 + 0.5 / 61, 0.5 / 61 + 0.5 / 63, 0.5 / 62 + 0.5 / 62])
    assert fuse_scores(student, first, method="minmax", weight=0.0) == student  # alone: its own scores
    assert fuse_with(Hybrid(weight=0.0), student, None) == student
    with pytest.raises(ValueError, match="a hybrid needs first-stage scores"):
        fuse_with(Hybrid(weight=0.3), student, None)


def test_a_student_better_than_any_fusion_ranks_alone_and_the_record_says_why():
    queries = [HeldOutQuery(qid=str(i), text="q", docids=["a", "b", "c"], texts=["a", "b", "c"],
                            first_stage=[3.0, 2.0, 1.0], qrels={"c": 1}) for i in range(5)]
    perfect = {q.qid: [0.0, 0.1, 0.9] for q in queries}  # c first; BM25 puts it last
    hybrid, fits, scores = fit_hybrid(queries, perfect)
    assert hybrid.weight == 0.0 and not hybrid.active
    assert "no fusion with the first stage beat the student alone" in hybrid.reason and "ranks alone" in hybrid.reason
    assert scores["student"] == pytest.approx(1.0) and scores["first_stage"] < 1.0
    assert set(fits) == {"minmax", "rrf"} and all(len(v) == len(WEIGHT_GRID) for v in fits.values())


def test_the_split_is_by_query_seeded_and_needs_enough_queries(corpus):
    cands, qrels = corpus
    view = load_training_view([cands], qrels=qrels)
    train_view, held, note = split(view, fraction=0.2, seed=42, labels="gold")
    held_ids = {q.qid for q in held}
    assert held_ids and not held_ids & {q.qid for q in train_view.queries}
    assert len(held_ids) + len(train_view.queries) == len(TOPICS)
    assert note == "the candidates' first-stage scores" and held[0].first_stage == [10.0, 9.0, 8.0, 7.0]
    assert {q.qid for q in split(view, fraction=0.2, seed=42, labels="gold")[1]} == held_ids  # seeded
    assert {q.qid for q in split(view, fraction=0.2, seed=7, labels="gold")[1]} != held_ids
    few = load_training_view([cands], qrels=qrels).limit(MIN_QUERIES - 1)
    same, none, why = split(few, fraction=0.2, seed=42, labels="gold")
    assert same is few and not none and f"at least {MIN_QUERIES} are needed" in why
    assert split(view, fraction=0.0, seed=42, labels="gold")[2] == "--holdout 0: every query trains, nothing is held out"


def test_a_corpus_without_first_stage_scores_gets_bm25_over_each_querys_documents(tmp_path):
    cands, qrels = write_candidates(tmp_path, scores=False)
    _, held, note = split(load_training_view([cands], qrels=qrels), fraction=0.2, seed=42, labels="gold")
    assert note.startswith("BM25 over each query's own documents")
    q = held[0]
    assert q.first_stage == score_documents(q.text, q.texts) and q.first_stage[1] > 0


# ----------------------------------------------------------------------------- training records it


def test_training_holds_out_queries_keeps_the_best_epoch_and_records_the_fitted_hybrid(student, corpus):
    from r2r_synth.student.base import load_student

    meta = read_r2r_config(student)
    ho, hybrid = meta.heldout, meta.hybrid
    assert ho is not None and hybrid is not None and hybrid.reason
    assert ho.fraction == 0.2 and ho.seed == 42 and ho.labels == "gold" and ho.qids
    # the held-out queries never trained: the training view holds the others only
    assert meta.corpus["queries"] == len(TOPICS) - len(ho.qids)
    assert [e.epoch for e in ho.epochs] == [1.0, 2.0] and ho.chosen in ho.epochs
    assert ho.chosen.ndcg_at_10 == max(e.ndcg_at_10 for e in ho.epochs)
    assert meta.options["epochs"] == 2.0
    # The saved weights are the chosen epoch's, and the recorded figures are theirs: recompute them.
    view = load_training_view([corpus[0]], qrels=corpus[1])
    _, held, _ = split(view, fraction=0.2, seed=42, labels="gold")
    assert [q.qid for q in held] == ho.qids
    model = load_student(student, device="cpu")
    scores = {q.qid: model.score(q.text, q.texts) for q in held}
    assert ndcg(held, scores) == pytest.approx(ho.chosen.ndcg_at_10, abs=1e-4)
    fused = {q.qid: fuse_with(hybrid, scores[q.qid], q.first_stage) for q in held}
    assert ndcg(held, fused) == pytest.approx(ho.ndcg_at_10["hybrid"], abs=1e-4)
    i = WEIGHT_GRID.index(hybrid.weight)
    assert ho.fits[hybrid.method][i] == max(max(v) for v in ho.fits.values())
    # the first stage puts the relevant candidate first everywhere: a student gains from it
    assert hybrid.active and ho.ndcg_at_10["hybrid"] >= ho.ndcg_at_10["student"]


def test_no_holdout_trains_every_query_for_one_epoch_and_ranks_alone(tmp_path, tiny_bert, corpus):
    proc = cli("train", "--corpus", str(corpus[0]), "--qrels", str(corpus[1]), "--labels", "gold", "--out",
               str(tmp_path / "m"), "--base", str(tiny_bert), "--holdout", "0", "--batch-size", "8",
               "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "hybrid: nothing held out (--holdout 0" in " ".join(proc.stderr.split())
    meta = read_r2r_config(tmp_path / "m")
    assert meta.heldout is None and meta.options["epochs"] == 1.0 and meta.corpus["queries"] == len(TOPICS)
    assert meta.hybrid == Hybrid(weight=0.0, reason="nothing held out (--holdout 0: every query trains, nothing "
                                 "is held out): no fusion was fitted, the student ranks alone")


# ----------------------------------------------------------------------------- evaluate and rerank use it


def _run(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[tuple[float, str]]] = {}
    for line in path.read_text().splitlines():
        qid, _, docid, _, score, _ = line.split()
        out.setdefault(qid, []).append((-float(score), docid))
    return {q: [d for _, d in sorted(v)] for q, v in out.items()}


def test_evaluate_ranks_a_student_with_its_hybrid_and_no_hybrid_turns_it_off(student, corpus, tmp_path):
    from r2r_synth.student.base import load_student

    cands, qrels = corpus
    ev = evaluate(EvaluateConfig(input=str(cands), qrels=qrels, systems=["bm25", f"s={student}"], out=tmp_path / "h"))
    alone = evaluate(EvaluateConfig(input=str(cands), qrels=qrels, systems=["bm25", f"s={student}"],
                                    out=tmp_path / "a", hybrid=False))
    hybrid = read_r2r_config(student).hybrid
    assert ev.report["systems"]["s"]["hybrid"] == hybrid.model_dump(mode="json")
    assert "hybrid" not in alone.report["systems"]["s"]
    model = load_student(student, device="cpu")
    texts = ["fact sheet 0", f"a note that mentions {TOPICS[0]} once", "cooking pasta 0", "weather report 0"]
    own = model.score(f"what is {TOPICS[0]}", texts)
    fused = fuse_with(hybrid, own, [10.0, 9.0, 8.0, 7.0])
    by = lambda s: [f"0d{i}" for i in sorted(range(4), key=lambda i: (-s[i], i))]
    assert _run(tmp_path / "h" / "run.s.trec")["0"] == by(fused)
    assert _run(tmp_path / "a" / "run.s.trec")["0"] == by(own)
    assert ev.report["systems"]["s"]["nDCG@10"] >= alone.report["systems"]["s"]["nDCG@10"]


def test_rerank_fuses_with_bm25_over_the_given_documents(student):
    docs = [("a", "river otters swim in cold rivers"), ("b", "a recipe for pasta"), ("c", "otters and rivers")]
    hybrid = read_r2r_config(student).hybrid
    fused = rerank_documents(model=str(student), query="river otters", documents=docs, device="cpu")
    alone = rerank_documents(model=str(student), query="river otters", documents=docs, device="cpu", hybrid=False)
    own = {r.docid: r.score for r in alone}
    assert all(r.student_score is None for r in alone)
    assert {r.docid: r.student_score for r in fused} == pytest.approx(own)
    want = fuse_with(hybrid, [own[d] for d, _ in docs], score_documents("river otters", [t for _, t in docs]))
    assert {r.docid: r.score for r in fused} == pytest.approx(dict(zip("abc", want)))
    assert [r.docid for r in fused] == [d for _, d in sorted(zip([-w for w in want], "abc"))]


def test_rerank_cli_prints_the_fused_and_the_students_score(student):
    proc = cli("rerank", "--model", str(student), "--query", "river otters", "--docs", "-", "--json",
               "--device", "cpu", stdin="river otters swim\na recipe for pasta\n")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 2 and all(r["student_score"] is not None for r in rows)


# ----------------------------------------------------------------------------- bad input


def test_a_hybrid_with_no_first_stage_scores_is_refused_before_anything_is_written(student, tmp_path):
    cands, qrels = write_candidates(tmp_path / "in", scores=False)
    with pytest.raises(InputError, match=r"cands.json: 30 of 30 queries carry no first-stage scores \(first: qid "
                                         r"'0'\), and the student .* ranks fused with them"):
        evaluate(EvaluateConfig(input=str(cands), qrels=qrels, systems=["bm25", str(student)], out=tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    proc = cli("evaluate", "-i", str(cands), "--qrels", str(qrels), "-s", "bm25", "-s", str(student), "--out",
               str(tmp_path / "y"), "--device", "cpu")
    assert proc.returncode == 2 and "--no-hybrid" in proc.stderr and not (tmp_path / "y").exists()
    proc = cli("evaluate", "-i", str(cands), "--qrels", str(qrels), "-s", "bm25", "-s", str(student), "--out",
               str(tmp_path / "z"), "--device", "cpu", "--no-hybrid")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "z" / "evaluation.json").exists()


def test_a_holdout_share_out_of_range_is_refused(tmp_path, corpus):
    proc = cli("train", "--corpus", str(corpus[0]), "--qrels", str(corpus[1]), "--labels", "gold", "--out",
               str(tmp_path / "m"), "--holdout", "1")
    assert proc.returncode == 2 and "--holdout" in proc.stderr and not (tmp_path / "m").exists()


def test_the_cross_encoder_keeps_its_best_epoch_and_records_its_hybrid_too(tmp_path, tiny_bert, corpus):
    pytest.importorskip("sentence_transformers")
    from r2r_synth.student.train import train

    cands, qrels = corpus
    train(TrainConfig(student="cross-encoder", corpus=[cands], qrels=qrels, labels="gold", out=tmp_path / "ce",
                      base=str(tiny_bert), encoder="none", epochs=1, batch_size=4, max_length=32, device="cpu"))
    meta = read_r2r_config(tmp_path / "ce")
    assert meta.heldout is not None and [e.epoch for e in meta.heldout.epochs] == [1.0]
    assert meta.heldout.chosen == meta.heldout.epochs[0] and meta.hybrid is not None and meta.hybrid.reason
    assert meta.corpus["queries"] == len(TOPICS) - len(meta.heldout.qids)


def test_the_model_card_says_how_the_student_ranks_with_bm25(student):
    from r2r_synth.publish.model import r2r_section

    meta = read_r2r_config(student)
    card = r2r_section(meta, evaluation=None, datasets=[])
    assert "### Ranking with BM25 (hybrid)" in card and f"w = {meta.hybrid.weight:g}" in card
    assert meta.hybrid.reason in card and f"the weights of epoch {meta.heldout.chosen.epoch:g} are the ones" in card
    alone = meta.model_copy(update={"hybrid": Hybrid(weight=0.0, reason="nothing held out")})
    assert "The student ranks alone" in r2r_section(alone, evaluation=None, datasets=[])
