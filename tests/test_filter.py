"""`filter`: each rule on hand-made records with known answers, self-consistency on a generated run whose
rollouts disagree (a scripted loopback server), the partition (kept + filtered = input), idempotence, the
child run's manifest, lineage, lock and errors, and the stages that read a filtered run (report,
publish, train, generate's resume rule)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from run_factory import make_run

from r2r_synth.config import FilterConfig, GenerateConfig
from r2r_synth.errors import ConfigError, InputError
from r2r_synth.filter import filter_run
from r2r_synth.filter.neardup import MISS_AT_THRESHOLD, MinHashIndex, band_shape, jaccard, shingles
from r2r_synth.generate import generate
from r2r_synth.rundir import KIND_ORDER, RunDir
from r2r_synth.schemas import (
    ComparisonAnswer,
    ComparisonRecord,
    DirectRecord,
    Document,
    ListwiseRecord,
    Provenance,
    Query,
    request_key,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample_candidates.jsonl"
KEY = "sk-test-secret-0123456789"
LONG = ("the passage explains how long a soft boiled egg cooks in boiling water and why the yolk stays runny "
        "when the egg is cooled in ice water right after six minutes")
NEAR = LONG.replace("minutes", "mins")  # only the last shingle differs: Jaccard 26/28


def gen(srv, out: Path, **kw):
    base = {"input": str(SAMPLE), "out": out, "teacher": "openai/loopback", "api_base": srv.url, "api_key": KEY,
            "depth": 5, "pairs": "adjacent", "concurrency": 8, "programs_dir": REPO / "programs",
            "transport": "litellm", "max_retries": 2, "timeout": 10}
    generate(GenerateConfig(**{**base, **kw}), backoff_base=0.01, backoff_cap=0.05)
    return out


def fcfg(run: Path, out: Path, **kw) -> FilterConfig:
    return FilterConfig(run_dir=run, out=out, **kw)


def by_key(run: Path) -> dict[str, dict]:
    rd = RunDir(run)
    return {r.key: r.model_dump(mode="json") for k in KIND_ORDER for r in rd.records(k)}


def check_partition(parent: Path, child: Path) -> dict[str, object]:
    """kept + filtered = the parent's records, whole and each once; returns key -> Filtered."""
    before, kept = by_key(parent), by_key(child)
    filtered = {f.key: f for f in RunDir(child).filtered()}
    assert not set(kept) & set(filtered)
    assert set(kept) | set(filtered) == set(before)
    assert len(kept) + len(filtered) == len(before)
    assert all(kept[k] == before[k] for k in kept)
    assert all(f.record.model_dump(mode="json") == before[k] for k, f in filtered.items())
    return filtered


def answer(rel: int, reasoning: str) -> dict:
    return {"content": f"[[ ## reasoning ## ]]\n{reasoning}\n\n[[ ## relevance ## ]]\n{rel}\n\n"
                       f"[[ ## score ## ]]\n{0.9 if rel >= 2 else 0.1}\n\n[[ ## completed ## ]]"}


# ----------------------------------------------------------------------------- self-consistency


def test_self_consistency_keeps_the_majority_of_rollouts_that_disagree(openai_server, tmp_path):
    # Three rollouts of every request; two requests are scripted to disagree (the server's own answers
    # are a function of the prompt, which rollouts share).
    openai_server.script("six to seven minutes", answer(3, "Gives the time."), answer(3, "States six minutes."),
                         answer(0, "Not about eggs."))
    openai_server.script("northern lights, or aurora", answer(3, "Explains it."), answer(1, "Mentions it."),
                         answer(0, "Off topic."))
    run = gen(openai_server, tmp_path / "run", rollouts=3, temperature=0.7, pairs="none")
    assert len(RunDir(run).records("direct")) == 45  # 3 queries x 5 documents x 3 rollouts

    res = filter_run(fcfg(run, tmp_path / "sc2", self_consistency=2))
    filtered = check_partition(run, tmp_path / "sc2")
    assert res.funnel["kinds"]["direct"] == {"input": 45, "kept": 41, "rules": {
        "self-consistency": {"applies": 45, "dropped": 4, "flagged": 4}}}
    by_doc = {}
    for f in filtered.values():
        assert f.rule == "self-consistency" and f.also == []
        by_doc.setdefault(f.record.document.docid, []).append((f.record.relevance, f.detail))
    assert by_doc["ex1-d1"] == [(0, "minority grade 0: grade 3 has 2 of 3 rollouts")]
    assert sorted(g for g, _ in by_doc["ex2-d1"]) == [0, 1, 3]
    assert {d for _, d in by_doc["ex2-d1"]} == {"no answer has 2 of 3 rollouts (grade 3 x1, grade 1 x1, grade 0 x1)"}
    kept = RunDir(tmp_path / "sc2").records("direct")
    assert sorted(r.relevance for r in kept if r.document.docid == "ex1-d1") == [3, 3]

    # All three must agree: ex1-d1 loses its two grade-3 rollouts as well.
    filter_run(fcfg(run, tmp_path / "sc3", self_consistency=3))
    dropped = {f.record.document.docid for f in RunDir(tmp_path / "sc3").filtered()}
    assert dropped == {"ex1-d1", "ex2-d1"} and len(RunDir(tmp_path / "sc3").filtered()) == 6

    # Filtering the result again with the same rule drops nothing.
    again = filter_run(fcfg(tmp_path / "sc2", tmp_path / "sc2b", self_consistency=2))
    assert again.funnel["kinds"]["direct"]["kept"] == 41 and RunDir(tmp_path / "sc2b").filtered() == []
    assert (tmp_path / "sc2b" / "direct.jsonl").read_bytes() == (tmp_path / "sc2" / "direct.jsonl").read_bytes()


def test_self_consistency_needs_rollouts(tmp_path):
    run = make_run(tmp_path / "run")  # one rollout per request
    with pytest.raises(ConfigError, match=r"--self-consistency 2 needs 2 rollouts of a request, but the direct "
                                          r"records of .* have at most 1"):
        filter_run(fcfg(run, tmp_path / "out", self_consistency=2))
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- rules one by one


def _prov(rollout: int = 0) -> Provenance:
    return Provenance(teacher="t", program="p", program_hash="ph", prompt_hash="pr", rollout_id=rollout)


def _direct(doc: str, reasoning: str, rel: int, score: float, gold: int | None) -> DirectRecord:
    q = Query(qid="q1", text="how long to boil an egg")
    return DirectRecord(key=request_key(kind="direct", inputs={"d": doc}, program_hash="ph", teacher="t"), query=q,
                        document=Document(docid=doc, text=f"text of {doc}"), reasoning=reasoning, relevance=rel,
                        score=score, gold=gold, provenance=_prov())


def _comparison(a: str, b: str, first: str, second: str | None, conf: float) -> ComparisonRecord:
    q = Query(qid="q1", text="how long to boil an egg")
    swapped = None if second is None else ComparisonAnswer(
        reasoning=f"Shown second this time, passage {a} is still weighed against passage {b} on the time it gives.",
        preferred=second, confidence=conf)
    return ComparisonRecord(key=request_key(kind="comparison", inputs={"a": a, "b": b}, program_hash="ph", teacher="t"),
                            query=q, doc_a=Document(docid=a, text=a), doc_b=Document(docid=b, text=b),
                            reasoning=f"Passage {a} names the time while passage {b} only mentions eggs in passing.",
                            preferred=first, confidence=0.9,
                            swapped=swapped, provenance=_prov())


def _listwise(qid: str, gold: dict[str, int], ranking: list[str]) -> ListwiseRecord:
    docs = [Document(docid=d, text=d) for d in ("d1", "d2", "d3")]
    return ListwiseRecord(key=f"lw-{qid}", query=Query(qid=qid, text="q"), documents=docs, ranking=ranking,
                          gold=gold, provenance=_prov())


def hand_made_run(root: Path) -> Path:
    """A real run directory (manifest, rejects, snapshots from run_factory) whose records are these."""
    make_run(root, queries=1, prompt_texts={"direct": "Judge the passage."})
    rd = RunDir(root)
    rd.write_records("direct", [
        _direct("a", "It gives the boiling time for a soft egg.", 3, 0.95, 0),  # 3 from gold
        _direct("b", "It mentions eggs but not the time needed.", 1, 0.55, 2),  # unsure
        _direct("c", "Relevant passage.", 2, 0.8, None),  # two words
        _direct("e", "The  passage GIVES the exact time.", 3, 0.9, 3),
        _direct("d", "the passage gives the exact time.", 3, 0.9, 3),  # e's text, normalized
        _direct("g", LONG, 2, 0.85, 2),
        _direct("f", NEAR, 2, 0.85, 2),  # the last word changed
        _direct("h", "Not relevant.", 3, 0.5, 0),  # 3 from gold, unsure and short
    ])
    rd.write_records("comparison", [
        _comparison("a", "b", "A", "A", 0.8),
        _comparison("a", "c", "A", "B", 0.8),  # the orders disagree
        _comparison("b", "c", "B", None, 0.8),  # asked once
        _comparison("c", "d", "B", "B", 0.4),  # the swapped order is unsure
    ])
    rd.write_records("listwise", [
        _listwise("l1", {"d1": 3, "d2": 0, "d3": 1}, ["d3", "d2", "d1"]),  # nDCG@10 = 2.5 / 3.6309 = 0.689
        _listwise("l2", {"d1": 3, "d2": 0, "d3": 1}, ["d1", "d3", "d2"]),  # ideal: 1.0
        _listwise("l3", {"d1": 0}, ["d2", "d1", "d3"]),  # nothing relevant: cannot be scored
    ])
    return root


def test_each_rule_drops_what_it_says_with_the_first_rule_and_the_others(tmp_path):
    run = hand_made_run(tmp_path / "run")
    res = filter_run(fcfg(run, tmp_path / "out", swap_consistent=True, max_gold_distance=1, min_confidence=0.6,
                          min_words=3, max_words=40, min_ndcg=0.7, exact_duplicates=True, near_duplicates=0.8))
    f = check_partition(run, tmp_path / "out")
    got = {(x.kind, x.record.document.docid if x.kind == "direct" else
            f"{x.record.doc_a.docid}{x.record.doc_b.docid}" if x.kind == "comparison" else x.record.query.qid):
           (x.rule, x.detail, x.also) for x in f.values()}
    key_g = _direct("g", LONG, 2, 0.85, 2).key
    near = got[("direct", "f")]
    assert {k: v for k, v in got.items() if k != ("direct", "f")} == {
        ("direct", "a"): ("gold-distance", "grade 3, gold 0: 3 apart (> 1)", []),
        ("direct", "b"): ("min-confidence", "confidence 0.55 < 0.6", []),
        ("direct", "c"): ("length", "reasoning: 2 words (< 3)", []),
        ("direct", "d"): ("exact-duplicate", f"the same reasoning as {_direct('e', '', 3, 0.9, 3).key}",
                          ["near-duplicate"]),
        ("direct", "h"): ("gold-distance", "grade 3, gold 0: 3 apart (> 1)", ["min-confidence", "length"]),
        ("comparison", "ac"): ("swap-consistent",
                               "position-biased: preferred A with A shown first, B with B shown first", []),
        ("comparison", "bc"): ("swap-consistent", "asked in one order only: swap consistency unknown", []),
        ("comparison", "cd"): ("min-confidence", "confidence 0.4 < 0.6", []),
        ("listwise", "l1"): ("listwise-ndcg", "nDCG@10 0.689 < 0.7", []),
    }
    rule, detail, also = near
    sim = jaccard(shingles(LONG), shingles(NEAR))
    assert rule == "near-duplicate" and also == [] and detail == f"Jaccard {sim:.2f} (>= 0.8) with {key_g}"
    assert sim == pytest.approx(26 / 28)
    kinds = res.funnel["kinds"]
    assert (kinds["direct"]["input"], kinds["direct"]["kept"]) == (8, 2)  # e and g
    assert kinds["direct"]["rules"]["gold-distance"] == {"applies": 7, "dropped": 2, "flagged": 2}
    assert kinds["listwise"]["rules"]["listwise-ndcg"] == {"applies": 2, "dropped": 1, "flagged": 1}
    assert set(kinds["listwise"]["rules"]) == {"length", "listwise-ndcg", "exact-duplicate", "near-duplicate"}
    assert [r.query.qid for r in RunDir(tmp_path / "out").records("listwise")] == ["l2", "l3"]
    # Again with the same rules: nothing more is dropped.
    again = filter_run(fcfg(tmp_path / "out", tmp_path / "out2", swap_consistent=True, max_gold_distance=1,
                            min_confidence=0.6, min_words=3, max_words=40, min_ndcg=0.7, exact_duplicates=True,
                            near_duplicates=0.8))
    assert RunDir(tmp_path / "out2").filtered() == []
    assert {k: v["kept"] for k, v in again.funnel["kinds"].items()} == {"direct": 2, "comparison": 1, "listwise": 2}


def test_max_words_and_unjudged_records(tmp_path):
    run = hand_made_run(tmp_path / "run")
    filter_run(fcfg(run, tmp_path / "out", max_words=10, max_gold_distance=0))
    f = {x.key: x for x in RunDir(tmp_path / "out").filtered()}
    kept = {r.document.docid for r in RunDir(tmp_path / "out").records("direct")}
    assert "c" in kept  # unjudged: the gold rule does not apply
    assert {r.rule for r in f.values() if r.kind == "comparison"} == {"length"}
    assert any(r.detail == f"reasoning: {len(LONG.split())} words (> 10)" for r in f.values() if r.kind == "direct")


# ----------------------------------------------------------------------------- a generated run end to end


def test_generated_run_with_qrels_and_rollouts_end_to_end(openai_server, tmp_path):
    run = gen(openai_server, tmp_path / "run", rollouts=2, temperature=0.7)
    rules = ["--swap-consistent", "--max-gold-distance", "1", "--min-confidence", "0.6", "--min-words", "3",
             "--self-consistency", "2"]
    cli = [sys.executable, "-m", "r2r_synth.cli", "filter", str(run), "--out", str(tmp_path / "f1"), *rules]
    out = subprocess.run(cli, check=False, capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    m = RunDir(tmp_path / "f1").read_manifest(strict=True)
    funnel = m.extra["filter"]
    for kind, per in funnel["kinds"].items():
        for rule, c in per["rules"].items():
            assert f"{kind:<11} {rule:<17} {c['applies']:>8} {c['dropped']:>8} {c['flagged']:>8}" in out.stdout
        assert per["input"] == per["kept"] + sum(c["dropped"] for c in per["rules"].values())
    assert funnel["kinds"]["comparison"]["rules"]["swap-consistent"]["dropped"] > 0
    assert funnel["kinds"]["direct"]["rules"]["gold-distance"]["dropped"] > 0
    filtered = check_partition(run, tmp_path / "f1")
    assert f"kept {len(by_key(tmp_path / 'f1'))} of {len(by_key(run))}" in out.stdout
    assert f"{len(filtered)} filtered" in out.stdout

    # The manifest names the parent, the rules in order, and keeps the parent's spend as the parent's.
    parent = RunDir(run).read_manifest(strict=True)
    assert funnel["parent"]["command"] == parent.command and funnel["parent"]["status"] == "complete"
    assert funnel["parent"]["usage"] == parent.usage.model_dump() and parent.usage.total_tokens > 0
    assert m.usage.total_tokens == 0 and m.cost == 0.0
    assert [r["rule"] for r in funnel["rules"]] == ["swap-consistent", "gold-distance", "min-confidence", "length",
                                                     "self-consistency"]
    assert m.command.startswith("r2r-synth filter") and m.config["self_consistency"] == 2
    assert m.teacher == parent.teacher and m.programs == parent.programs and m.status == "complete"
    for kind in ("direct", "comparison"):
        assert m.counts[kind].records == funnel["kinds"][kind]["kept"]
        assert m.counts[kind].requested == parent.counts[kind].requested
    assert sorted(p.name for p in (tmp_path / "f1" / "programs").iterdir()) == \
        sorted(p.name for p in (run / "programs").iterdir())
    assert not (tmp_path / "f1" / ".lock").exists() and not (run / ".lock").exists()

    # Twice with the same rules: nothing changes; the lineage names both steps.
    cli2 = [*cli[:4], str(tmp_path / "f1"), "--out", str(tmp_path / "f2"), *rules]
    assert subprocess.run(cli2, check=False, capture_output=True, text=True, cwd=tmp_path).returncode == 0
    assert RunDir(tmp_path / "f2").filtered() == []
    for kind in ("direct", "comparison"):
        assert (tmp_path / "f2" / f"{kind}.jsonl").read_bytes() == (tmp_path / "f1" / f"{kind}.jsonl").read_bytes()
    m2 = RunDir(tmp_path / "f2").read_manifest(strict=True)
    assert m2.extra["filter"]["parent"]["filter"] == funnel

    # generate into the filtered run asks nothing again: a filtered key is done.
    n = len(openai_server.requests)
    gen(openai_server, tmp_path / "f1", rollouts=2, temperature=0.7)
    assert len(openai_server.requests) == n
    assert {r.key for r in RunDir(tmp_path / "f1").filtered()} == set(filtered)


def test_report_card_and_training_read_a_filtered_run(tmp_path, tiny_bert):
    from r2r_synth.config import TrainConfig
    from r2r_synth.publish import publish
    from r2r_synth.report import build_report
    from r2r_synth.student.train import train

    run = make_run(tmp_path / "run", queries=12, prompt_texts={"direct": "Judge the passage.",
                                                              "comparison": "Compare the passages."})
    filter_run(fcfg(run, tmp_path / "f", swap_consistent=True, max_gold_distance=1), command="r2r-synth filter run")
    funnel = RunDir(tmp_path / "f").read_manifest().extra["filter"]["kinds"]
    d, c = funnel["direct"], funnel["comparison"]
    assert d["kept"] < d["input"] and c["kept"] < c["input"]

    html = build_report(tmp_path / "f", out=tmp_path / "rep").html.read_text()
    assert "<h2>Filter funnel</h2>" in html and "<th>swap-consistent</th><th>gold-distance</th>" in html
    assert re.search(rf"<td>direct</td><td[^>]*>{d['input']}</td><td></td>"
                     rf"<td>−{d['rules']['gold-distance']['dropped']}</td><td[^>]*>{d['kept']}</td>", html)

    publish(tmp_path / "f", repo_id="me/filtered", license="cc-by-4.0", split="train=1", seed=0, dry_run=True,
            out=tmp_path / "hub", command="r2r-synth publish f")
    card = (tmp_path / "hub" / "README.md").read_text()
    assert (f"{d['input']} records → `gold-distance` −{d['rules']['gold-distance']['dropped']} → "
            f"{d['kept']} kept") in card
    assert (f"{c['input']} records → `swap-consistent` −{c['rules']['swap-consistent']['dropped']} → "
            f"{c['kept']} kept") in card
    assert "from `run` (made by `r2r-synth generate" in card and "Judge the passage." in card  # snapshot went along

    res = train(TrainConfig(student="cross-encoder", corpus=[tmp_path / "f"], out=tmp_path / "model",
                            base=str(tiny_bert), encoder="none", negatives=0, max_steps=2, batch_size=2,
                            max_length=64, device="cpu"))
    saved = json.loads((tmp_path / "model" / "r2r_config.json").read_text())
    assert saved["corpus"]["sources"] == [str(tmp_path / "f")] and res.student is not None


# ----------------------------------------------------------------------------- refusals


def test_refusals_write_nothing(tmp_path):
    run = make_run(tmp_path / "run")
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="no rule given: filter would copy the run unchanged"):
        filter_run(fcfg(run, out))
    with pytest.raises(ConfigError, match=r"--min-words 9 is above --max-words 3"):
        filter_run(fcfg(run, out, min_words=9, max_words=3))
    with pytest.raises(ConfigError, match=r"--near-duplicates 0.0: expected a Jaccard similarity in \(0, 1\]"):
        filter_run(fcfg(run, out, near_duplicates=0.0))
    with pytest.raises(InputError, match=r"--out .*run is the run being filtered"):
        filter_run(fcfg(run, run, swap_consistent=True))
    assert not out.exists()
    make_run(out)
    with pytest.raises(InputError, match=r"already holds a run.*\n  fix: choose a new directory or pass --overwrite"):
        filter_run(fcfg(run, out, swap_consistent=True))
    filter_run(fcfg(run, out, swap_consistent=True, overwrite=True))
    assert not (out / "listwise.jsonl").exists()  # the old run's files went with --overwrite
    assert RunDir(out).read_manifest().extra["filter"]["rules"] == [{"rule": "swap-consistent"}]


def test_a_repeated_key_in_the_parent_is_named_by_file_and_line(tmp_path):
    run = make_run(tmp_path / "run")
    recs = RunDir(run).records("direct")
    RunDir(run).write_records("direct", [*recs, recs[2]])
    with pytest.raises(InputError, match=rf"direct.jsonl:{len(recs) + 1}: key {recs[2].key} also on line 3"):
        filter_run(fcfg(run, tmp_path / "out", swap_consistent=True))
    assert not (tmp_path / "out").exists()


def test_a_parent_being_written_is_refused(tmp_path):
    run = make_run(tmp_path / "run")
    with (RunDir(run).lock(command="r2r-synth generate ..."),
          pytest.raises(InputError, match=r"is being written by another r2r-synth process .*r2r-synth generate")):
        filter_run(fcfg(run, tmp_path / "out", swap_consistent=True))
    assert not RunDir(tmp_path / "out").holds_records()


def test_a_failure_while_writing_leaves_no_half_run(tmp_path):
    run = make_run(tmp_path / "run", prompt_texts={"direct": "Judge the passage."})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "programs").write_text("in the way")  # the records are written, the snapshots cannot be
    with pytest.raises(OSError):
        filter_run(fcfg(run, tmp_path / "out", swap_consistent=True))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def test_cli_exit_code_2_and_the_fix(tmp_path):
    run = make_run(tmp_path / "run")
    out = subprocess.run([sys.executable, "-m", "r2r_synth.cli", "filter", str(run), "--out", str(tmp_path / "o")],
                         check=False, capture_output=True, text=True)
    assert out.returncode == 2
    assert "no rule given" in out.stderr and "fix: name at least one rule" in out.stderr


# ----------------------------------------------------------------------------- near duplicates


def test_minhash_bands_miss_little_at_the_threshold():
    for t in (0.5, 0.7, 0.8, 0.9):
        bands, rows = band_shape(t)
        assert bands * rows <= 128 and (1 - t**rows) ** bands <= MISS_AT_THRESHOLD


def test_near_duplicates_are_verified_by_their_jaccard():
    words = [f"w{i}" for i in range(60)]
    base = " ".join(words)
    close = " ".join(words[:59] + ["other"])  # 55 of 57 shingles shared: Jaccard 0.93
    far = " ".join(words[:30] + [f"x{i}" for i in range(30)])  # Jaccard 26/90 = 0.29
    idx = MinHashIndex(0.8)
    idx.add("base", shingles(base), group="g1")
    hit = idx.near(shingles(close), group="g2")
    assert hit is not None and hit[0] == "base" and hit[1] == pytest.approx(55 / 57)
    assert idx.near(shingles(far), group="g2") is None
    assert idx.near(shingles(close), group="g1") is None  # a rollout of the same request does not count
    assert idx.near(shingles(""), group="g2") is None
