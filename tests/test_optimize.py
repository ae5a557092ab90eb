"""optimize: labeled sets, the by-query split, optimizers, saved programs and the report.

Program logic runs on DSPy's DummyLM (an oracle keyed by passage text); the split, generate and
CLI tests go through LiteLLM to the loopback OpenAI server in tests/openai_server.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import dspy
import pytest
from dspy.utils.dummies import DummyLM

from r2r_synth import metrics as M
from r2r_synth.config import OptimizeConfig
from r2r_synth.errors import InputError
from r2r_synth.optimize import (
    build_labeled_set,
    comparison_examples,
    direct_examples,
    evaluate_direct,
    run_optimize,
    split_by_query,
)
from r2r_synth.schemas import Candidates, Document, Query
from r2r_synth.teacher.programs import build_program, load_program, program_hash

sys.path.insert(0, str(Path(__file__).parent))
from openai_server import OpenAIServer, spawn_server

GRADES = [3, 2, 0, 1, 0]


def make_candidates(n_queries: int = 8, grades: list[int] = GRADES) -> list[Candidates]:
    out = []
    for q in range(n_queries):
        docs = [Document(docid=f"D{q}x{i}", text=f"Passage {q}.{i} on subject {q} [{q}-{i}-end]")
                for i in range(len(grades))]
        out.append(Candidates(query=Query(qid=f"Q{q}", text=f"what about subject {q}?"), documents=docs,
                              scores=[float(len(grades) - i) for i in range(len(grades))],
                              qrels={d.docid: g for d, g in zip(docs, grades)}))
    return out


def oracle_lm(cands: list[Candidates], *, miss: dict[int, int] | None = None) -> DummyLM:
    """A DummyLM that answers every direct prompt with the gold grade (or `miss[gold]`) and every
    comparison with the gold preference. Keyed by passage text: comparison keys first, because a
    comparison prompt also contains each single passage."""
    miss = miss or {}
    answers: dict[str, dict] = {}
    for c in cands:
        for a in c.documents:
            for b in c.documents:
                if a.docid != b.docid:
                    ga, gb = c.qrels[a.docid], c.qrels[b.docid]
                    answers[f"{a.text}\n\n[[ ## document_b ## ]]\n{b.text}"] = {
                        "reasoning": "A names the answer." if ga > gb else "B names the answer.",
                        "preferred": "A" if ga > gb else "B", "confidence": 0.9}
    for c in cands:
        for d in c.documents:
            g = c.qrels[d.docid]
            r = miss.get(g, g)
            answers[d.text] = {"reasoning": f"It reads like a grade {r} passage.", "relevance": r, "score": r / 3}
    return DummyLM(answers)


def test_split_by_query_is_deterministic_disjoint_and_complete():
    qids = [f"q{i}" for i in range(43)]
    for seed in range(5):
        s = split_by_query(qids, val_fraction=0.25, seed=seed)
        assert not set(s.train) & set(s.val)
        assert sorted(s.train + s.val) == sorted(qids)
        assert len(s.val) == 11
        assert split_by_query(list(reversed(qids)), val_fraction=0.25, seed=seed) == s  # input order is irrelevant
    assert split_by_query(qids, seed=0).val != split_by_query(qids, seed=1).val
    assert len(split_by_query(["a", "b"], val_fraction=0.9).train) == 1  # never an empty side
    with pytest.raises(InputError, match="needs at least 2"):
        split_by_query(["only"], val_fraction=0.5)


def test_labeled_set_rows_split_by_query_never_by_row():
    cands = make_candidates(8)
    examples, split, summary = build_labeled_set(cands, seed=3, val_fraction=0.25, max_pairs_per_query=4)
    assert summary["direct_examples"] == 40 and summary["comparison_examples"] == 32
    for name in ("direct", "comparison"):
        train, val = split.of(examples[name])
        assert {e.qid for e in train} == set(split.train) and {e.qid for e in val} == set(split.val)
        assert len(train) + len(val) == len(examples[name])
    comp = examples["comparison"]
    for e in comp:
        assert e.docid_a.startswith(f"D{e.qid[1:]}x") and e.docid_b.startswith(f"D{e.qid[1:]}x")  # one query
        assert e.gold_a != e.gold_b and e.gold == ("A" if e.gold_a > e.gold_b else "B") == e.preferred
    assert 0.25 < sum(e.gold == "A" for e in comp) / len(comp) < 0.75  # "always A" is no strategy
    assert [e.toDict() for e in comparison_examples(cands, seed=3, max_pairs_per_query=4)] == [
        e.toDict() for e in comp]  # deterministic
    d = direct_examples(cands[:1])
    assert [(e.docid, e.gold, e.rank) for e in d] == [(f"D0x{i}", g, i + 1) for i, g in enumerate(GRADES)]
    assert set(d[0].inputs().keys()) == {"query", "document"}


def test_labeled_set_needs_qrels():
    cands = [c.model_copy(update={"qrels": {}}) for c in make_candidates(3)]
    with pytest.raises(InputError, match="none of the 3 queries has gold labels: optimize needs qrels"):
        build_labeled_set(cands, seed=0, val_fraction=0.25, max_pairs_per_query=4)


def test_evaluate_direct_matches_hand_computed_metrics():
    cands = make_candidates(1)
    examples = direct_examples(cands)
    # The oracle misses grade 1 (says 0) and grade 2 (says 3).
    lm = oracle_lm(cands, miss={1: 0, 2: 3})
    with dspy.context(lm=lm):
        out = evaluate_direct(build_program("direct"), examples, qrels={"Q0": dict(cands[0].qrels)}, num_threads=1)
    gold = GRADES  # [3, 2, 0, 1, 0]
    pred = [3, 3, 0, 0, 0]
    assert out["exact"] == pytest.approx(3 / 5)
    assert out["within_1"] == pytest.approx(1.0)
    assert out["binary_accuracy@2"] == pytest.approx(1.0)
    assert out["metric"] == pytest.approx((1 + 0.5 + 1 + 0.5 + 1) / 5)
    # induced scores 2*rel + rel/3: D0x0=7, D0x1=7, D0x2=0, D0x3=0, D0x4=0 -> ties broken by docid descending
    scores = {f"D0x{i}": 2 * p + p / 3 for i, p in enumerate(pred)}
    qrels = dict(zip(scores, gold))
    assert out["nDCG@10"] == pytest.approx(M.ir_eval({"Q0": qrels}, {"Q0": scores}, ["nDCG@10"])["nDCG@10"])
    order = ["D0x1", "D0x0", "D0x4", "D0x3", "D0x2"]
    dcg = sum(qrels[d] / math.log2(i + 2) for i, d in enumerate(order))
    idcg = 3 + 2 / math.log2(3) + 1 / math.log2(4)
    assert out["nDCG@10"] == pytest.approx(dcg / idcg)
    assert out["kendall_tau"] == pytest.approx(M.kendall_tau(qrels, scores))
    assert out["invalid"] == 0.0 and out["n"] == 5 and out["failed_calls"] == 0 and out["queries_left_out"] == 0


def test_optimize_saves_a_program_that_round_trips(tmp_path):
    cands = make_candidates(8)
    lm = oracle_lm(cands, miss={1: 0})
    cfg = OptimizeConfig(input="mem", programs_dir=tmp_path / "programs", max_demos=2, concurrency=2, seed=1)
    fresh = {name: program_hash(build_program(name)) for name in ("direct", "comparison")}
    rep = run_optimize(cfg, candidates=cands, lm=lm)

    for name in ("direct", "comparison"):
        pr = rep.programs[name]
        loaded = load_program(name, programs_dir=tmp_path / "programs")
        assert loaded.optimized and loaded.path == tmp_path / "programs" / f"{name}.json"
        demos = loaded.predictor.demos
        assert len(demos) == 2 and pr.demos == 2
        # demos come from training queries only, and carry the teacher's full answer
        text_qid = {d.text: c.query.qid for c in cands for d in c.documents}
        shown = {text_qid[d[f]] for d in demos for f in ("document", "document_a", "document_b") if f in d}
        assert shown and shown <= set(rep.split["train_qids"])
        assert all(d.get("reasoning") for d in demos)
        assert loaded.predictor.signature.instructions == build_program(name).predictors()[0].signature.instructions
        assert loaded.program_hash == pr.program_hash_after != fresh[name] == pr.program_hash_before
        # a second load is the same program: same instructions, same demos, same hash
        again = load_program(name, programs_dir=tmp_path / "programs")
        assert again.program_hash == loaded.program_hash
        assert [dict(d) for d in again.predictor.demos] == [dict(d) for d in demos]

        meta = json.loads((tmp_path / "programs" / f"{name}.meta.json").read_text())
        for key in ("optimizer", "teacher", "prompt_model", "labeled_set", "split", "metric_before", "metric_after",
                    "dspy_version", "saved_at", "program_hash"):
            assert key in meta, key
        assert meta["program_hash"] == loaded.program_hash
        assert meta["labeled_set"]["hash"] == rep.labeled_set["hash"]
        assert not set(meta["split"]["train_qids"]) & set(meta["split"]["val_qids"])
        assert meta["dspy_version"] == dspy.__version__
    # the oracle is right on every comparison; on direct it misses the grade-1 passages only
    assert rep.programs["comparison"].after["preference_accuracy"] == 1.0
    assert rep.programs["comparison"].after["swap_consistency"] == 1.0
    assert rep.programs["direct"].after["exact"] == pytest.approx(4 / 5)
    report = json.loads((tmp_path / "programs" / "optimize_report.json").read_text())
    assert report["programs"]["direct"]["after"]["exact"] == pytest.approx(0.8)
    assert report["programs"]["direct"]["calls"]["evaluate_before"] == 10  # 2 validation queries x 5 passages
    # 9 pairs of different grades per query (the two grade-0 passages tie), asked in both orders
    assert report["programs"]["comparison"]["calls"]["evaluate_after"] == 2 * 9 * 2


def test_optimizer_never_sees_a_validation_query(tmp_path):
    """Through LiteLLM to the loopback server: every request between the before- and the after-
    evaluation (the optimizer's) shows only training passages; the evaluations only validation ones."""
    cands = make_candidates(8)
    text_qid = {d.text: c.query.qid for c in cands for d in c.documents}
    cfg = OptimizeConfig(input="mem", programs_dir=tmp_path / "p", teacher="openai/loopback", program="direct",
                         max_demos=3, concurrency=3, seed=5, cache=False, api_key="sk-loopback")
    with OpenAIServer() as srv:
        rep = run_optimize(cfg.model_copy(update={"api_base": srv.url}), candidates=cands)
        asked = []
        for r in srv.requests:
            final = r["user"]  # the final user message: what is being asked (demos are earlier turns)
            qids = {q for t, q in text_qid.items() if t in final}
            assert len(qids) == 1, final
            asked.append(qids.pop())
    val, train = set(rep.split["val_qids"]), set(rep.split["train_qids"])
    n_val = rep.programs["direct"].val_examples
    calls = rep.programs["direct"].calls
    assert len(asked) == calls["evaluate_before"] + calls["optimize"]["teacher"] + calls["evaluate_after"]
    assert set(asked[:n_val]) == val and set(asked[-n_val:]) == val
    assert calls["optimize"]["teacher"] > 0 and set(asked[n_val:-n_val]) <= train


def test_generate_uses_the_optimized_program_and_records_its_hash(tmp_path):
    from r2r_synth.config import GenerateConfig
    from r2r_synth.generate import generate

    cands = make_candidates(4)
    programs = tmp_path / "programs"
    run_optimize(OptimizeConfig(input="mem", programs_dir=programs, max_demos=2, concurrency=2),
                 candidates=cands, lm=oracle_lm(cands))
    optimized = {k: load_program(k, programs_dir=programs).program_hash for k in ("direct", "comparison")}
    fresh = {k: program_hash(build_program(k)) for k in ("direct", "comparison")}
    assert all(optimized[k] != fresh[k] for k in optimized)
    with OpenAIServer() as srv:
        generate(GenerateConfig(input="mem", out=tmp_path / "run", teacher="openai/loopback", api_base=srv.url,
                                api_key="sk-loopback", programs_dir=programs, depth=3, pairs="adjacent", concurrency=4),
                 candidates=cands[:2])
    for kind in ("direct", "comparison"):
        rows = [json.loads(line) for line in (tmp_path / "run" / f"{kind}.jsonl").read_text().splitlines()]
        assert rows, kind
        assert {r["provenance"]["program_hash"] for r in rows} == {optimized[kind]}
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["programs"] == optimized


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("r2r-synth")
    # A generous timeout: two LiteLLM imports take minutes on a loaded, shared 2-core machine.
    return subprocess.run([str(exe), *args], check=False, capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})})


def test_cli_optimize_then_evaluate_only(tmp_path):
    cands = make_candidates(6)
    inp = tmp_path / "cands.jsonl"
    inp.write_text("".join(c.model_dump_json() + "\n" for c in cands))
    secret = "sk-loopback-SECRET-0123456789"
    programs = tmp_path / "programs"
    with spawn_server() as url:
        common = ["--input", str(inp), "--teacher", "openai/loopback", "--api-base", url, "--api-key", secret,
                  "--programs-dir", str(programs), "--no-cache", "--program", "direct"]
        res = _cli("optimize", *common, "--max-demos", "2", "--max-calls", "8")
        assert res.returncode == 0, res.stderr
        assert "direct: validation split" in res.stdout and "before" in res.stdout and "after" in res.stdout
        assert (programs / "direct.json").is_file() and (programs / "direct.meta.json").is_file()
        report = json.loads((programs / "optimize_report.json").read_text())
        assert report["programs"]["direct"]["calls"]["optimize"]["teacher"] <= 8
        assert report["programs"]["direct"]["optimizer_settings"]["train_examples"] <= 8
        before = {p.name: p.read_bytes() for p in programs.iterdir() if p.name != "optimize_report.json"}

        res = _cli("optimize", *common, "--evaluate-only", "--report", str(tmp_path / "eval.json"))
        assert res.returncode == 0, res.stderr
        assert "fresh" in res.stdout and "current" in res.stdout
        ev = json.loads((tmp_path / "eval.json").read_text())
        assert ev["evaluate_only"] is True
        assert ev["programs"]["direct"]["program_hash_after"] == report["programs"]["direct"]["program_hash_after"]
        assert {p.name: p.read_bytes() for p in programs.iterdir() if p.name != "optimize_report.json"} == before
    for p in [*programs.iterdir(), tmp_path / "eval.json"]:
        assert secret not in p.read_text(), p


def test_cli_bad_input_exits_2_with_the_fix(tmp_path):
    cands = [c.model_copy(update={"qrels": {}}) for c in make_candidates(3)]
    inp = tmp_path / "cands.jsonl"
    inp.write_text("".join(c.model_dump_json() + "\n" for c in cands))
    res = _cli("optimize", "--input", str(inp), "--teacher", "openai/x", "--programs-dir", str(tmp_path / "p"))
    assert res.returncode == 2
    assert "optimize needs qrels" in res.stderr and "fix:" in res.stderr and "--qrels" in res.stderr
    assert not (tmp_path / "p").exists()
    res = _cli("optimize", "--input", str(inp), "--auto", "light", "--programs-dir", str(tmp_path / "p"))
    assert res.returncode == 2 and "--auto is a preset of mipro and gepa" in res.stderr


def test_random_search_respects_the_call_budget(tmp_path):
    cands = make_candidates(8)
    cfg = OptimizeConfig(input="mem", programs_dir=tmp_path, program="comparison", candidates=8, max_calls=200,
                         max_demos=1, concurrency=2, swap=False)
    rep = run_optimize(cfg, candidates=cands, lm=oracle_lm(cands))
    pr = rep.programs["comparison"]
    assert pr.optimizer_settings["kind"] == "BootstrapFewShotWithRandomSearch"
    assert 0 < pr.optimizer_settings["num_candidate_programs"] < 8
    assert pr.calls["optimize"]["teacher"] <= 200
    assert pr.after["preference_accuracy"] == 1.0


def test_dl19_labeled_set_splits_by_query(dl19):
    from r2r_synth.io.candidates import load_candidates

    cands = load_candidates(dl19 / "bm25_top100.json", qrels=dl19 / "qrels.txt", limit=12, depth=10)
    examples, split, summary = build_labeled_set(cands, seed=0, val_fraction=0.25, max_pairs_per_query=10)
    assert summary["queries"] == 12 and len(split.val) == 3
    for name in ("direct", "comparison"):
        train, val = split.of(examples[name])
        assert train and val and not {e.qid for e in train} & {e.qid for e in val}


def _prompt_lm(adapter=None) -> DummyLM:
    """A prompt model / reflection LM that answers every proposal signature with a fixed instruction."""
    answer = {"observations": "Short passages.", "summary": "Passages about numbered subjects.",
              "proposed_instruction": "Grade the passage 0-3. PROPOSED.", "new_instruction": "Grade 0-3. REFLECTED."}
    return DummyLM([answer] * 500, adapter=adapter)


def test_mipro_uses_a_separate_prompt_model_within_budget(tmp_path):
    cands = make_candidates(8)
    prompt = _prompt_lm()
    cfg = OptimizeConfig(input="mem", programs_dir=tmp_path, program="direct", optimizer="mipro", max_calls=40,
                         max_demos=1, concurrency=1)
    rep = run_optimize(cfg, candidates=cands, lm=oracle_lm(cands, miss={1: 0}), prompt_lm=prompt)
    pr = rep.programs["direct"]
    assert pr.optimizer_settings["kind"] == "MIPROv2" and pr.optimizer_settings["num_trials"] >= 1
    assert pr.calls["optimize"]["prompt_model"] > 0  # instructions were proposed by the prompt model
    assert pr.calls["optimize"]["prompt_model"] == len(prompt.history)
    assert 0 < pr.calls["optimize"]["teacher"] <= 40
    assert load_program("direct", programs_dir=tmp_path).program_hash == pr.program_hash_after


def test_gepa_reflects_on_textual_feedback(tmp_path):
    cands = make_candidates(8)
    reflection = _prompt_lm(adapter=dspy.JSONAdapter())  # GEPA's proposer parses with the JSON adapter
    cfg = OptimizeConfig(input="mem", programs_dir=tmp_path, program="direct", optimizer="gepa", max_calls=40,
                         concurrency=1)
    rep = run_optimize(cfg, candidates=cands, lm=oracle_lm(cands, miss={1: 0}), prompt_lm=reflection)
    pr = rep.programs["direct"]
    assert pr.optimizer_settings == {"optimizer": "gepa", "kind": "GEPA", "train_examples": pr.optimizer_settings[
        "train_examples"], "dev_examples": pr.optimizer_settings["dev_examples"], "max_metric_calls": 40}
    assert pr.calls["optimize"]["teacher"] <= 40 and pr.calls["optimize"]["prompt_model"] > 0
    # the reflection LM read our metric's feedback on the passages the teacher got wrong
    seen = "\n".join(m["content"] for h in reflection.history for m in h["messages"])
    assert "You rated a grade-1 (related but not answering) passage as 0 (irrelevant), too low, because you reasoned:" in seen


# --------------------------------------------------------------------------- --evaluate-only tells the truth


def test_evaluate_only_writes_nothing_unless_asked_and_scores_three_queries(tmp_path):
    cands = make_candidates(3)
    programs = tmp_path / "programs"
    cfg = OptimizeConfig(input="mem", programs_dir=programs, evaluate_only=True, concurrency=2)
    rep = run_optimize(cfg, candidates=cands, lm=oracle_lm(cands))
    assert rep.path is None and not programs.exists()
    # no training split is needed: every query of the three validates (a prompt program was trained on none)
    assert rep.programs["direct"].val_examples == 15 and rep.programs["direct"].train_examples == 0
    assert rep.programs["comparison"].val_examples == 3 * 9
    assert rep.programs["comparison"].before["preference_accuracy"] == 1.0
    assert rep.config["val_fraction"] == 1.0
    out = tmp_path / "eval.json"
    rep = run_optimize(cfg.model_copy(update={"report": out}), candidates=cands, lm=oracle_lm(cands))
    assert rep.path == out and json.loads(out.read_text())["evaluate_only"] is True and not programs.exists()


def test_val_fraction_one_scores_every_query_and_cannot_optimize(tmp_path):
    cands = make_candidates(1)
    cfg = OptimizeConfig(input="mem", programs_dir=tmp_path / "p", evaluate_only=True, val_fraction=1.0,
                         program="direct", concurrency=2)
    rep = run_optimize(cfg, candidates=cands, lm=oracle_lm(cands))
    assert rep.programs["direct"].val_examples == 5 and rep.split["train_qids"] == []
    with pytest.raises(InputError, match="the direct labeled set has 0 training and 5 validation examples") as ei:
        run_optimize(cfg.model_copy(update={"evaluate_only": False}), candidates=cands, lm=oracle_lm(cands))
    assert "optimizing needs training queries: lower --val-fraction" in ei.value.hint
    assert not (tmp_path / "p").exists()


def test_evaluate_only_leaves_out_the_queries_a_program_was_trained_on(tmp_path):
    cands = make_candidates(8)
    programs = tmp_path / "programs"
    base = OptimizeConfig(input="mem", programs_dir=programs, program="direct", max_demos=2, concurrency=2, seed=1)
    opt = run_optimize(base, candidates=cands, lm=oracle_lm(cands))
    trained = set(opt.split["train_qids"])
    ev = run_optimize(base.model_copy(update={"evaluate_only": True}), candidates=cands, lm=oracle_lm(cands))
    assert ev.programs["direct"].val_examples == 5 * (8 - len(trained))
    assert ev.programs["direct"].train_examples == 5 * len(trained)
    assert ev.programs["direct"].val_examples == opt.programs["direct"].val_examples


def test_a_wrong_key_stops_optimize_at_the_preflight_with_nothing_written(tmp_path):
    from r2r_synth.errors import ConfigError

    cands = make_candidates(4)
    cfg = OptimizeConfig(input="mem", programs_dir=tmp_path / "p", teacher="openai/loopback", program="direct",
                         api_key="sk-wrong-0123456789", cache=False, max_retries=0)
    with OpenAIServer(require_key="sk-right-0123456789", guard_models=True) as srv:
        with pytest.raises(ConfigError, match="preflight: the teacher 'openai/loopback' .* refused the key"):
            run_optimize(cfg.model_copy(update={"api_base": srv.url}), candidates=cands)
        assert srv.requests == [] and srv.behaviour.model_requests == 1
    assert not (tmp_path / "p").exists()
