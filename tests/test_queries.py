"""`r2r-synth queries`: the program with DSPy's DummyLM, the command end to end against the real
loopback server through LiteLLM (its teacher answers with sentences of the document), resume, the
consistency filter over a real BM25 index, the outputs read by `generate` and `train`, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import dspy
import pytest
from dspy.utils.dummies import DummyLM
from openai_server import OpenAIServer, document_sentences
from test_generate import KEY, cli, lines

from r2r_synth.config import QueriesConfig
from r2r_synth.errors import ConfigError, IncompleteRun, InputError, TeacherError
from r2r_synth.generate.queries_run import consistency, generate_queries
from r2r_synth.schemas import Document, Provenance, QueriesRecord
from r2r_synth.teacher.programs import build_program, load_program
from r2r_synth.teacher.signatures import DocumentQueries

REPO = Path(__file__).resolve().parents[1]

# Twelve documents, each about its own subject in its own words, so that a sentence of one finds it
# again with BM25; the last two share a sentence word for word (a query from it cannot single one out).
TOPICS = [
    ("d1", "Zebrafish fins", ("Zebrafish regrow amputated fins within two weeks. Osteoblasts dedifferentiate near "
     "the wound. The blastema forms from these cells.")),
    ("d2", "Copper corrosion", ("Copper pipes corrode faster in acidic water. Patina protects the surface. Chloride "
     "ions accelerate pitting.")),
    ("d3", "Honeybee navigation", ("Honeybees communicate distance with the waggle dance. Foragers use the sun as a "
     "compass. Polarized light guides them on cloudy days.")),
    ("d4", "Glacier retreat", ("Alpine glaciers lost a third of their volume since 1980. Meltwater raises river "
     "discharge in summer. Moraines mark earlier extents.")),
    ("d5", "Sourdough fermentation", ("Sourdough starters host lactobacilli and wild yeast. Acetic acid gives the "
     "tang. Longer proofing deepens flavour.")),
    ("d6", "Lithium batteries", ("Lithium dendrites pierce separators and cause shorts. Solid electrolytes resist "
     "dendrite growth. Cathode coatings extend cycle life.")),
    ("d7", "Octopus camouflage", ("Octopuses change skin colour using chromatophores. Papillae alter skin texture. "
     "They mimic venomous flatfish.")),
    ("d8", "Volcanic ash", ("Volcanic ash grounds aircraft because silicate melts in turbines. Ash clouds travel "
     "thousands of kilometres. Satellites track sulphur dioxide plumes.")),
    ("d9", "Tea polyphenols", ("Green tea catechins scavenge free radicals. Steeping temperature changes catechin "
     "extraction. Milk proteins bind polyphenols.")),
    ("d10", "Comet tails", ("Comet tails point away from the sun. Solar wind ionizes the gas tail. Dust tails curve "
     "along the orbit.")),
    ("d11", "Shared methods", "Samples were analysed as described previously. Statistical tests were two sided."),
    ("d12", "Shared methods again", "Samples were analysed as described previously. Results were reproducible."),
]


def write_corpus(path: Path, topics=TOPICS) -> Path:
    path.write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in topics))
    return path


def qcfg(srv, corpus: Path, out: Path, **kw) -> QueriesConfig:
    base = {"corpus": corpus, "out": out, "teacher": "openai/loopback", "api_base": srv.url, "api_key": KEY,
            "per_doc": 2, "depth": 5, "concurrency": 4, "programs_dir": REPO / "programs", "transport": "litellm",
            "max_retries": 0, "timeout": 10}
    base.update(kw)
    return QueriesConfig(**base)


def run(config: QueriesConfig):
    return generate_queries(config, backoff_base=0.01, backoff_cap=0.05)


# --------------------------------------------------------------------------- the program


def test_signature_is_the_contract():
    assert list(DocumentQueries.input_fields) == ["document", "example_queries", "count"]
    assert list(DocumentQueries.output_fields) == ["queries"]


def test_queries_program_with_dummy_lm():
    lm = DummyLM([{"queries": '["do zebrafish regrow fins", "blastema origin"]'}])
    with dspy.context(lm=lm):
        pred = build_program("queries")(document="Zebrafish regrow fins.", example_queries=["a claim"], count=2)
    assert pred.queries == ["do zebrafish regrow fins", "blastema origin"]
    # What the teacher was shown: the document, the examples and the count, under their field names.
    shown = json.dumps(lm.history[-1]["messages"])
    assert "Zebrafish regrow fins." in shown and "a claim" in shown and "count" in shown


def test_a_reply_that_is_not_a_list_fails_to_parse():
    lm = DummyLM([{"queries": "plain text, not a list"}] * 2)
    expected = r"Expected to find output fields in the LM response: \[queries\]"
    with dspy.context(lm=lm), pytest.raises(Exception, match=expected):
        build_program("queries")(document="d", example_queries=[], count=1)


def test_program_hash_is_stable_and_names_the_prompt():
    a, b = load_program("queries", programs_dir=REPO / "no-such-dir"), load_program("queries")
    assert a.program_hash == b.program_hash and not a.optimized


# --------------------------------------------------------------------------- the consistency filter


def _record(docid: str, text: str, queries: list[str]) -> QueriesRecord:
    return QueriesRecord(key=f"k-{docid}", document=Document(docid=docid, text=text), queries=queries,
                         provenance=Provenance(teacher="t", program="queries", program_hash="h", prompt_hash="p"))


def test_consistency_keeps_a_query_only_when_bm25_finds_its_document():
    corpus = {i: Document(docid=i, title=t, text=x) for i, t, x in TOPICS}
    recs = [_record("d3", corpus["d3"].text, ["waggle dance distance", "Samples were analysed as described"]),
            _record("d11", corpus["d11"].text, ["Samples were analysed as described previously"])]
    rows, cands = consistency(recs, corpus, keep_top=1, depth=4)
    by_text = {(r.docid, r.text): r for r in rows}
    assert by_text[("d3", "waggle dance distance")].kept and by_text[("d3", "waggle dance distance")].rank == 1
    # Another document's words: BM25 does not bring d3 back first, so the query is not kept (but recorded).
    off = by_text[("d3", "Samples were analysed as described")]
    assert not off.kept and off.rank is None
    assert [r.qid for r in rows] == ["d3-q1", "d3-q2", "d11-q1"]
    kept = next(c for c in cands if c.query.text == "waggle dance distance")
    assert kept.qrels == {"d3": 1} and kept.documents[0].docid == "d3" and len(kept.documents) <= 4
    assert kept.scores == sorted(kept.scores, reverse=True)


# --------------------------------------------------------------------------- end to end


def test_queries_end_to_end_with_the_loopback_teacher(openai_server, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "run"
    result = run(qcfg(openai_server, corpus, out, keep_top=2))
    assert len(openai_server.requests) == 12
    recs = lines(out / "generated_queries.jsonl")
    assert len(recs) == 12 and all(r["kind"] == "queries" and 1 <= len(r["queries"]) <= 2 for r in recs)
    docs = {i: f"{t}. {x}" for i, t, x in TOPICS}
    for r in recs:  # the loopback teacher answers with sentences of the document it was shown
        assert all(q in docs[r["document"]["docid"]] for q in r["queries"])
    rows = lines(out / "consistency.jsonl")
    assert len(rows) == sum(len(r["queries"]) for r in recs)
    kept = [r for r in rows if r["kept"]]
    assert 0 < len(kept) <= len(rows) and all(r["rank"] in (1, 2) for r in kept)
    assert result.summary["kept"] == len(kept) and result.summary["written"] == len(rows)
    queries = lines(out / "queries.jsonl")
    assert [q["_id"] for q in queries] == [r["qid"] for r in kept]
    qrels = (out / "qrels.tsv").read_text().splitlines()
    assert qrels[0] == "query-id\tcorpus-id\tscore" and len(qrels) == len(kept) + 1
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "complete" and m["counts"]["queries"]["records"] == 12
    assert m["extra"]["queries"]["kept"] == len(kept) and m["usage"]["total_tokens"] > 0
    assert list((out / "programs").glob("queries-*.json"))

    # `generate` reads the candidates as they are; the source document is the judged one.
    from r2r_synth.io.candidates import load_candidates
    from r2r_synth.student.corpus import load_training_view

    cands = load_candidates(out / "candidates.jsonl")
    assert len(cands) == len(kept) and all(len(c.qrels) == 1 for c in cands)
    view = load_training_view([out / "candidates.jsonl"], qrels=out / "qrels.tsv")
    assert view.has_gold and len(view.queries) == len(kept)


def test_generate_runs_on_the_candidates_a_queries_run_wrote(openai_server, tmp_path, monkeypatch, capsys):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "q"
    code, stdout, err = cli(monkeypatch, capsys, "queries", "--corpus", str(corpus), "--out", str(out), "--docs", "4",
                            "--per-doc", "1", "-t", "openai/loopback", "--api-base", openai_server.url, "--api-key",
                            KEY, "--depth", "3", "--keep-top", "3")
    assert code == 0, err
    assert stdout.strip() == str(out)  # the result on stdout, as `generate` prints its run directory
    flat = " ".join(err.split())
    assert "kept by the consistency filter" in flat and "queries: 4/4 requests" in flat  # progress, in a log
    code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(out / "candidates.jsonl"), "-o",
                       str(tmp_path / "gen"), "--depth", "2", "--pairs", "none", "-t", "openai/loopback",
                       "--api-base", openai_server.url, "--api-key", KEY)
    assert code == 0, err
    direct = lines(tmp_path / "gen" / "direct.jsonl")
    assert direct and all(r["query"]["qid"].split("-q")[0] in {d["document"]["docid"] for d in direct}
                          or r["gold"] in (1, None) for r in direct)
    assert any(r["gold"] == 1 for r in direct)  # the source document, judged, among the candidates


@pytest.mark.slow
def test_train_runs_on_the_candidates_a_queries_run_wrote(openai_server, tmp_path, monkeypatch, capsys, tiny_bert):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "q"
    run(qcfg(openai_server, corpus, out, keep_top=3))
    code, _, err = cli(monkeypatch, capsys, "train", "--corpus", str(out / "candidates.jsonl"), "--qrels",
                       str(out / "qrels.tsv"), "--labels", "gold", "--base", str(tiny_bert), "--out",
                       str(tmp_path / "student"), "--max-steps", "2")
    assert code == 0, err
    assert (tmp_path / "student" / "r2r_config.json").exists()


def test_a_rerun_asks_nothing_again_and_a_larger_sample_asks_only_the_new(openai_server, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "run"
    run(qcfg(openai_server, corpus, out, docs=4))
    assert len(openai_server.requests) == 4
    first = (out / "candidates.jsonl").read_text()
    run(qcfg(openai_server, corpus, out, docs=4))
    assert len(openai_server.requests) == 4  # nothing asked again
    assert (out / "candidates.jsonl").read_text() == first
    run(qcfg(openai_server, corpus, out, docs=8))
    assert len(openai_server.requests) == 8  # the same 4 and 4 more
    asked = [r["user"] for r in openai_server.requests]
    assert len(set(asked)) == 8
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["queries"]["skipped_done"] == 4 and m["extra"]["queries"]["documents"] == 8


def test_failed_requests_are_asked_again_and_the_outputs_wait_for_them(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "run"
    with OpenAIServer() as srv:
        srv.script("Octopus camouflage", {"status": 500})
        with pytest.raises(IncompleteRun, match="1 of the 12 requests of this session got no answer"):
            run(qcfg(srv, corpus, out))
        assert not (out / "candidates.jsonl").exists()  # nothing half-written
        rej = lines(out / "rejects.jsonl")
        assert [(r["kind"], r["cause"], r["inputs"]["docid"]) for r in rej] == [("queries", "transport", "d7")]
        n = len(srv.requests)
        run(qcfg(srv, corpus, out))
        assert len(srv.requests) == n + 1 and "Octopus camouflage" in srv.requests[-1]["user"]
    assert not (out / "rejects.jsonl").read_text().strip()
    clean = tmp_path / "clean"
    with OpenAIServer() as srv:
        run(qcfg(srv, corpus, clean))
    for name in ("consistency.jsonl", "queries.jsonl", "qrels.tsv", "candidates.jsonl"):
        assert (out / name).read_text() == (clean / name).read_text(), name


def test_an_unusable_reply_is_a_reject_with_its_cause_and_the_run_goes_on(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "run"
    with OpenAIServer() as srv:
        srv.script("Comet tails", {"content": "no fields here"}, {"content": "still nothing"})
        result = run(qcfg(srv, corpus, out, parse_retries=1))
    rej = lines(out / "rejects.jsonl")
    assert [(r["cause"], r["inputs"]["docid"]) for r in rej] == [("reply", "d10")]
    assert rej[0]["reason"].startswith("unparseable reply") and rej[0]["raw"] == "still nothing"
    assert result.summary["records"] == 11 and result.summary["documents_rejected"] == 1


def test_budget_stops_cleanly_without_outputs_and_a_larger_budget_finishes(openai_server, tmp_path):
    from r2r_synth.errors import BudgetExceeded

    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "run"
    c = qcfg(openai_server, corpus, out, teacher="openai/gpt-4o-mini", concurrency=1, max_cost=0.0003)
    with pytest.raises(BudgetExceeded, match="stopped at the budget") as ei:
        run(c)
    assert ei.value.exit_code == 3
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "stopped_budget" and 0 < m["cost"] <= 0.0003
    assert 0 < m["counts"]["queries"]["records"] < 12 and not (out / "candidates.jsonl").exists()
    res = run(c.model_copy(update={"max_cost": 1.0}))
    assert res.summary["records"] == 12 and len(openai_server.requests) == 12
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_examples_are_shown_to_the_teacher_and_change_the_key(openai_server, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    ex = tmp_path / "queries.jsonl"
    ex.write_text("".join(json.dumps({"_id": str(i), "text": f"claim number {i} about cells"}) + "\n"
                          for i in range(20)))
    out = tmp_path / "run"
    run(qcfg(openai_server, corpus, out, docs=2, examples=ex, max_examples=3))
    prompt = openai_server.requests[0]["user"]
    assert sum(f"claim number {i} about cells" in prompt for i in range(20)) == 3
    run(qcfg(openai_server, corpus, tmp_path / "plain", docs=2))
    keys = {r["key"] for r in lines(out / "generated_queries.jsonl")}
    assert keys.isdisjoint(r["key"] for r in lines(tmp_path / "plain" / "generated_queries.jsonl"))
    assert json.loads((out / "manifest.json").read_text())["extra"]["queries"]["examples"] == 3


def test_the_embedded_response_format_asks_for_exactly_count_queries():
    from r2r_synth.generate.doc_queries import queries_response_format
    from r2r_synth.generate.prompts import PromptPlan
    from r2r_synth.teacher.embedded import EMBEDDED_NAME, MODEL_ALIAS, EmbeddedJSONAdapter
    from r2r_synth.teacher.lm import make_teacher

    teacher = make_teacher(f"openai/{MODEL_ALIAS}", name=EMBEDDED_NAME, adapter=EmbeddedJSONAdapter(),
                           embedded=True, transport="litellm")
    plan = PromptPlan(teacher=teacher, programs={"queries": load_program("queries")})
    schema = queries_response_format(plan.extra["queries"], 3)["response_format"]["schema"]
    arr = schema["properties"]["queries"]
    assert arr["minItems"] == arr["maxItems"] == 3
    assert arr["items"] == {"type": "string", "minLength": 1, "maxLength": 200}


def test_the_loopback_teacher_answers_with_sentences_of_the_document():
    user = "[[ ## document ## ]]\nA first one. A second one. A third.\n\n[[ ## count ## ]]\n2\n\n"
    got = document_sentences(user)
    assert len(got) == 2 and all(s in "A first one. A second one. A third." for s in got)


# --------------------------------------------------------------------------- bad input


def _queries_cli(monkeypatch, capsys, srv, *args: str) -> tuple[int, str]:
    code, _, err = cli(monkeypatch, capsys, "queries", "-t", "openai/loopback", "--api-base", srv.url, "--api-key",
                       KEY, *args)
    return code, " ".join(err.split())


def test_examples_that_are_not_queries_exit_2_and_write_nothing(openai_server, tmp_path, monkeypatch, capsys):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "run"
    code, err = _queries_cli(monkeypatch, capsys, openai_server, "--corpus", str(corpus), "--out", str(out),
                             "--examples", str(corpus))
    assert code == 2 and f"{corpus}:1: a corpus document, not a query" in err
    cands = REPO / "examples" / "sample_candidates.jsonl"
    with pytest.raises(InputError, match=r"sample_candidates.jsonl:1: a candidate list, not a query"):
        run(qcfg(openai_server, corpus, out, examples=cands))
    tsv = tmp_path / "qrels.tsv"
    tsv.write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n")
    with pytest.raises(InputError, match=r"--examples .*qrels.tsv: not a queries file"):
        run(qcfg(openai_server, corpus, out, examples=tsv))
    assert not out.exists() and openai_server.requests == []


def test_a_corpus_with_no_text_exits_2_and_writes_nothing(openai_server, tmp_path, monkeypatch, capsys):
    corpus = write_corpus(tmp_path / "corpus.jsonl", [("a", "", ""), ("b", "", " ")])
    out = tmp_path / "run"
    code, err = _queries_cli(monkeypatch, capsys, openai_server, "--corpus", str(corpus), "--out", str(out))
    assert code == 2 and "none of its 2 documents has any text" in err
    assert not out.exists() and openai_server.requests == []


def test_documents_without_text_are_left_out_and_counted(openai_server, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", [*TOPICS[:3], ("empty", "", "")])
    out = tmp_path / "run"
    result = run(qcfg(openai_server, corpus, out))
    assert len(openai_server.requests) == 3 and result.summary["documents_without_text"] == 1


def test_a_run_with_zero_documents_exits_2_and_writes_nothing(openai_server, tmp_path, monkeypatch, capsys):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "run"
    code, err = _queries_cli(monkeypatch, capsys, openai_server, "--corpus", str(corpus), "--out", str(out),
                             "--docs", "0")
    assert code == 2 and "--docs 0: a queries run with zero documents asks nothing" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="the corpus is empty"):
        run(qcfg(openai_server, empty, out))
    assert not out.exists() and openai_server.requests == []


def test_settings_that_cannot_work_are_refused(openai_server, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    with pytest.raises(ConfigError, match="--keep-top 10 is deeper than --depth 5"):
        run(qcfg(openai_server, corpus, tmp_path / "r", keep_top=10))
    with pytest.raises(ConfigError, match="--per-doc 0: need at least 1"):
        run(qcfg(openai_server, corpus, tmp_path / "r", per_doc=0))
    assert not (tmp_path / "r").exists()


def test_no_query_kept_is_an_error_that_names_the_fix(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl", TOPICS[:4])
    off_topic = {"content": '[[ ## queries ## ]]\n["quasar spectroscopy redshift"]\n\n[[ ## completed ## ]]'}
    with OpenAIServer() as srv, pytest.raises(TeacherError, match="none of the 4 queries .* passed the consistency"):
        srv.script("[[ ## document ## ]]", *[off_topic] * 4)
        run(qcfg(srv, corpus, tmp_path / "run", per_doc=1))
    rows = lines(tmp_path / "run" / "consistency.jsonl")
    assert len(rows) == 4 and not any(r["kept"] for r in rows)
    assert not (tmp_path / "run" / "candidates.jsonl").exists()


# --------------------------------------------------------------------------- the embedded teacher


@pytest.mark.slow
def test_the_embedded_teacher_writes_valid_queries(tmp_path, monkeypatch, capsys):
    """Without --teacher, SmolLM2-135M under llama.cpp answers under the JSON Schema: every document
    gets a valid record with exactly --per-doc queries of at most 200 characters."""
    corpus = write_corpus(tmp_path / "corpus.jsonl", TOPICS[:3])
    out = tmp_path / "run"
    code, _, err = cli(monkeypatch, capsys, "queries", "--corpus", str(corpus), "--out", str(out), "--per-doc", "2",
                       "--keep-top", "3", "--depth", "3")
    recs = [QueriesRecord.model_validate(r) for r in lines(out / "generated_queries.jsonl")]
    assert len(recs) == 3 and not lines(out / "rejects.jsonl"), err
    assert all(1 <= len(r.queries) <= 2 and all(0 < len(q) <= 200 for q in r.queries) for r in recs)
    assert recs[0].provenance.teacher.startswith("embedded/")
    # Whether a tiny model's queries find their document again is the filter's business: either way
    # every query is accounted for, and the command says what happened.
    rows = lines(out / "consistency.jsonl")
    assert len(rows) == sum(len(r.queries) for r in recs)
    assert code == 0 if any(r["kept"] for r in rows) else code == 1, err


def test_export_batch_run_and_import_give_the_online_outputs(tmp_path):
    """Batchable like any run: --export-batch writes the documents' requests for vLLM's run_batch (here
    tests/openai_batches.py, which answers as the loopback server does), --import-batch reads the
    results back, and the outputs equal an online run's."""
    import subprocess
    import sys

    corpus = write_corpus(tmp_path / "corpus.jsonl")
    offline = {"teacher": "hosted_vllm/Qwen/Qwen2.5-7B-Instruct", "api_base": None, "api_key": None}
    with OpenAIServer() as srv:
        run(qcfg(srv, corpus, tmp_path / "online", teacher=offline["teacher"]))
    no_server = type("NoServer", (), {"url": None})()
    out, requests, results = tmp_path / "run", tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    res = run(qcfg(no_server, corpus, out, export_batch=requests, **offline))
    assert not res.summary and not (out / "candidates.jsonl").exists()  # pending: nothing to filter yet
    assert len(requests.read_text().splitlines()) == 12
    subprocess.run([sys.executable, str(REPO / "tests" / "openai_batches.py"), "run-batch", "-i", str(requests),
                    "-o", str(results)], capture_output=True, text=True, check=True)
    res = run(qcfg(no_server, corpus, out, import_batch=results, **offline))
    assert res.summary["records"] == 12
    for name in ("consistency.jsonl", "queries.jsonl", "qrels.tsv", "candidates.jsonl"):
        assert (out / name).read_text() == (tmp_path / "online" / name).read_text(), name
