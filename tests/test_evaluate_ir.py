"""evaluate as IR does it: the top --depth reranked and the rest appended in first-stage order, per
query measures and paired tests against the first system, measures no reranker can change named,
any TREC run and any sentence-transformers cross-encoder as a system, fusion; the chart's legend
off the bars; rerank --explain gives a cross-encoder evidence sentences. Real files, real tiny models."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from r2r_synth.config import EvaluateConfig
from r2r_synth.errors import ConfigError, InputError
from r2r_synth.evaluate import chart, evaluate, rerank_documents

REPO = Path(__file__).resolve().parents[1]
R2R = str(REPO / ".venv" / "bin" / "r2r-synth")
N_DOCS = 6


@pytest.fixture
def cands(tmp_path) -> tuple[Path, Path]:
    """Three queries of six passages in first-stage order q{i}d0..d5; the relevant ones sit low."""
    entries, qrels = [], []
    for q in ("1", "2", "3"):
        hits = [{"qid": int(q), "docid": f"q{q}d{i}", "content": f"passage {i} about topic {q}", "score": 10.0 - i}
                for i in range(N_DOCS)]
        entries.append({"query": f"topic {q}", "hits": hits})
        qrels += [f"{q} 0 q{q}d{2 if q == '1' else 4} 3", f"{q} 0 q{q}d0 0", f"{q} 0 q{q}d5 1"]
    (tmp_path / "cands.json").write_text(json.dumps(entries))
    (tmp_path / "qrels.txt").write_text("\n".join(qrels) + "\n")
    return tmp_path / "cands.json", tmp_path / "qrels.txt"


def write_run(path: Path, ranking: dict[str, list[str]]) -> Path:
    path.write_text("".join(f"{q} Q0 {d} {r} {100 - r} other\n" for q, docs in ranking.items()
                            for r, d in enumerate(docs, start=1)))
    return path


def reverse_run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "reverse.trec", {q: [f"q{q}d{i}" for i in reversed(range(N_DOCS))] for q in "123"})


def trec(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        q, _, d, rank, _, _ = line.split()
        out.setdefault(q, []).append(d)
        assert int(rank) == len(out[q])
    return out


def ev(cands, tmp_path, systems, **kw):
    inp, qrels = cands
    return evaluate(EvaluateConfig(input=str(inp), qrels=qrels, systems=systems, out=tmp_path / "ev", **kw))


@pytest.fixture(scope="module")
def tiny_ce(tmp_path_factory, tiny_bert) -> Path:
    """A plain sentence-transformers cross-encoder (no r2r_config.json): tiny_bert with a one-logit
    head, saved with `CrossEncoder.save`."""
    st = pytest.importorskip("sentence_transformers")
    import torch

    torch.manual_seed(1)
    out = tmp_path_factory.mktemp("plain") / "ce"
    st.CrossEncoder(str(tiny_bert), num_labels=1, max_length=64).save(str(out))
    return out


# --------------------------------------------------------------------------- the protocol


def test_depth_reranks_the_top_and_appends_the_rest_in_first_stage_order(cands, tmp_path):
    res = ev(cands, tmp_path, ["bm25", f"rev=run:{reverse_run(tmp_path)}"], depth=3)
    runs = trec(tmp_path / "ev" / "run.rev.trec")
    assert runs["1"] == ["q1d2", "q1d1", "q1d0", "q1d3", "q1d4", "q1d5"]  # top 3 reversed, then d3..d5 as given
    assert all(len(docs) == N_DOCS for docs in runs.values())
    assert trec(tmp_path / "ev" / "run.bm25.trec")["2"] == [f"q2d{i}" for i in range(N_DOCS)]
    rows = res.report["systems"]
    assert rows["rev"]["pairs"] == 9 and res.report["candidates_per_query"] == {"min": 6, "max": 6}
    # q1: the grade-3 passage moved from rank 3 to 1; q2, q3: theirs (d4) stays at 5 below the depth
    assert res.report["per_query"]["rev"]["RR@10"] == {"1": 1.0, "2": 0.2, "3": 0.2}
    assert res.report["per_query"]["bm25"]["RR@10"] == {"1": pytest.approx(1 / 3), "2": 0.2, "3": 0.2}


def test_the_trec_files_read_back_give_the_figures_of_the_table(cands, tmp_path, tiny_ce):
    """The runs' scores are strictly decreasing in the measured order, so any reader gets the same figures."""
    ir_measures = pytest.importorskip("ir_measures")
    res = ev(cands, tmp_path, ["bm25", f"ce=cross-encoder:{tiny_ce}", f"rev=run:{reverse_run(tmp_path)}",
                               "f=fuse:ce+rev"], depth=4, measures=["nDCG@10", "RR@10", "AP"])
    qrels = list(ir_measures.read_trec_qrels(str(cands[1])))
    for name, row in res.report["systems"].items():
        run = list(ir_measures.read_trec_run(str(tmp_path / "ev" / f"run.{name}.trec")))
        agg = ir_measures.calc_aggregate([ir_measures.parse_measure(m) for m in ("nDCG@10", "RR@10", "AP")], qrels, run)
        assert {str(m): round(v, 4) for m, v in agg.items()} == {m: row[m] for m in ("nDCG@10", "RR@10", "AP")}, name


def test_dl19_depth_10_runs_hold_every_candidate(dl19, tmp_path):
    """The bar: `evaluate --depth 10` on DL19 writes runs of 100 documents per query."""
    rev = {}
    for entry in json.loads((dl19 / "bm25_top100.json").read_text()):
        rev[str(entry["hits"][0]["qid"])] = [h["docid"] for h in reversed(entry["hits"][:10])]
    res = evaluate(EvaluateConfig(input=str(dl19 / "bm25_top100.json"), qrels=dl19 / "qrels.txt", depth=10,
                                  systems=["bm25", f"rev=run:{write_run(tmp_path / 'rev.trec', rev)}"],
                                  measures=["nDCG@10", "R@100"], out=tmp_path / "ev"))
    for name in ("bm25", "rev"):
        runs = trec(tmp_path / "ev" / f"run.{name}.trec")
        assert len(runs) == 43 and {len(docs) for docs in runs.values()} == {100}
    rows = res.report["systems"]
    assert rows["bm25"]["nDCG@10"] == pytest.approx(0.5058, abs=1e-4) and rows["bm25"]["pairs"] == 430
    assert rows["rev"]["nDCG@10"] < rows["bm25"]["nDCG@10"] and rows["rev"]["R@100"] == rows["bm25"]["R@100"]
    assert res.report["unchanged_by_reranking"]["measures"] == ["R@100"]
    sig = res.report["significance"]["systems"]["rev"]["nDCG@10"]
    assert sig["queries"] == 43 and sig["randomization"] < 0.05 and sig["t-test"] < 0.05


def test_measures_no_reranker_can_change_are_named_and_really_are_the_same(cands, tmp_path, tiny_ce):
    res = ev(cands, tmp_path, ["bm25", f"rev=run:{reverse_run(tmp_path)}", f"cross-encoder:{tiny_ce}"], depth=3,
             measures=["nDCG@10", "R@6", "P@3", "P@2", "Success@4"])
    unchanged = res.report["unchanged_by_reranking"]
    assert unchanged["measures"] == ["R@6", "P@3", "Success@4"] and "same top 3 candidates" in unchanged["why"]
    per_query = res.report["per_query"]
    for m in unchanged["measures"]:
        assert len({json.dumps(v[m], sort_keys=True) for v in per_query.values()}) == 1, m
    assert per_query["rev"]["P@2"] != per_query["bm25"]["P@2"]  # a cutoff above the depth does move
    assert res.report["significance"]["measures"] == ["nDCG@10", "P@2"]
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert saved["measures"] == ["nDCG@10", "R@6", "P@3", "P@2", "Success@4"]  # asked for: still reported


# --------------------------------------------------------------------------- per query, paired tests


def test_per_query_scores_and_paired_tests_against_the_first_system(cands, tmp_path):
    scipy_stats = pytest.importorskip("scipy.stats")
    res = ev(cands, tmp_path, ["bm25", f"rev=run:{reverse_run(tmp_path)}", "same=first-stage"], depth=6)
    per_query = res.report["per_query"]
    for name, row in res.report["systems"].items():
        for m in ("nDCG@10", "RR@10"):
            assert set(per_query[name][m]) == {"1", "2", "3"}
            assert sum(per_query[name][m].values()) / 3 == pytest.approx(row[m], abs=1e-4)
    sig = res.report["significance"]
    assert sig["baseline"] == "bm25" and set(sig["systems"]) == {"rev", "same"} and sig["shown"] == "randomization"
    assert "randomization" in sig["tests"]["randomization"] and "t-test" in sig["tests"]["t-test"]
    same = sig["systems"]["same"]["nDCG@10"]
    assert same == {"queries": 3, "mean_diff": 0.0, "randomization": 1.0, "t-test": 1.0}
    rev = sig["systems"]["rev"]["nDCG@10"]
    a, b = (list(per_query[n]["nDCG@10"].values()) for n in ("rev", "bm25"))
    assert rev["t-test"] == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue, abs=1e-6)
    assert rev["mean_diff"] == pytest.approx(sum(a) / 3 - sum(b) / 3, abs=1e-6)
    diffs = [x - y for x, y in zip(a, b)]
    flips = [abs(sum(s * d for s, d in zip(signs, diffs))) for signs in itertools.product((1, -1), repeat=3)]
    assert rev["randomization"] == pytest.approx(sum(f >= abs(sum(diffs)) - 1e-12 for f in flips) / 8)
    tsv = (tmp_path / "ev" / "per_query.tsv").read_text().splitlines()
    assert tsv[0].split("\t") == ["qid", "measure", "bm25", "rev", "same"] and len(tsv) == 1 + 3 * 2
    cells = {(r.split("\t")[0], r.split("\t")[1]): r.split("\t")[2:] for r in tsv[1:]}
    assert float(cells[("2", "nDCG@10")][1]) == pytest.approx(per_query["rev"]["nDCG@10"]["2"], abs=1e-4)


# --------------------------------------------------------------------------- run files and fusion


def test_a_run_file_with_gaps_ranks_what_it_lacks_below_in_first_stage_order(cands, tmp_path):
    run = write_run(tmp_path / "gaps.trec", {"1": ["q1d3", "q1d1", "elsewhere"], "2": ["q2d2"]})  # no query 3
    res = ev(cands, tmp_path, ["bm25", f"g=run:{run}"], depth=4)
    runs = trec(tmp_path / "ev" / "run.g.trec")
    assert runs["1"] == ["q1d3", "q1d1", "q1d0", "q1d2", "q1d4", "q1d5"]
    assert runs["2"] == ["q2d2", "q2d0", "q2d1", "q2d3", "q2d4", "q2d5"]
    assert runs["3"] == [f"q3d{i}" for i in range(N_DOCS)]
    row = res.report["systems"]["g"]
    assert (row["not_in_run"], row["queries_not_in_run"], row["outside_candidates"]) == (2 + 3 + 4, 1, 1)


def test_a_run_of_other_queries_is_refused_before_any_system_runs(cands, tmp_path):
    run = write_run(tmp_path / "other.trec", {"901": ["x"]})
    with pytest.raises(InputError, match=r"other.trec: the run ranks none of the 3 input queries \(its qids start 901"):
        ev(cands, tmp_path, ["bm25", f"run:{run}"])
    with pytest.raises(ConfigError, match="nope.trec: no such run file"):
        ev(cands, tmp_path, ["bm25", f"run:{tmp_path / 'nope.trec'}"])
    assert not (tmp_path / "ev").exists()


def test_fusion_by_hand(cands, tmp_path):
    swap = write_run(tmp_path / "swap.trec", {q: [f"q{q}d1", f"q{q}d0", f"q{q}d3", f"q{q}d2"] for q in "123"})
    res = ev(cands, tmp_path, ["bm25", f"s=run:{swap}", "rrf=fuse:bm25+s", "w=fuse:combsum:bm25*1+s*3"], depth=4)
    # RRF: d0 1/61+1/62, d1 1/62+1/61 (a tie: first-stage order), d2 1/63+1/64, d3 1/64+1/63 (tie)
    assert trec(tmp_path / "ev" / "run.rrf.trec")["1"][:4] == ["q1d0", "q1d1", "q1d2", "q1d3"]
    # CombSUM of min-max scores: bm25 d0..d3 = 1, 2/3, 1/3, 0; swap (100-rank) d1..d2 = 1, 2/3, 1/3, 0
    # d1: 2/3 + 3 = 3.67, d0: 1 + 2 = 3, d3: 0 + 1 = 1, d2: 1/3 + 0
    assert trec(tmp_path / "ev" / "run.w.trec")["1"] == ["q1d1", "q1d0", "q1d3", "q1d2", "q1d4", "q1d5"]
    assert res.report["systems"]["w"]["spec"] == "fuse:combsum:bm25*1+s*3"


@pytest.mark.parametrize(("spec", "match"), [
    ("fuse:bm25+later", "'later' is not a system given before it"),
    ("fuse:bm25", "a fusion needs two or more different systems"),
    ("fuse:combsum:bm25*-1+r", "weight '-1' of 'bm25' is not a positive number"),
    ("fuse:", "names no argument"),
])
def test_bad_fusions_are_refused_before_any_system_runs(cands, tmp_path, spec, match):
    with pytest.raises(ConfigError, match=match):
        ev(cands, tmp_path, ["bm25", f"r=run:{reverse_run(tmp_path)}", spec, "later=bm25"])
    assert not (tmp_path / "ev").exists()


# --------------------------------------------------------------------------- any cross-encoder


def test_a_plain_sentence_transformers_cross_encoder_is_a_system(cands, tmp_path, tiny_ce):
    from sentence_transformers import CrossEncoder

    assert not (tiny_ce / "r2r_config.json").exists()
    res = ev(cands, tmp_path, ["bm25", f"ce=cross-encoder:{tiny_ce}"], depth=4)
    assert res.report["systems"]["ce"]["pairs"] == 12
    scores = CrossEncoder(str(tiny_ce)).predict([("topic 1", f"passage {i} about topic 1") for i in range(4)])
    expected = [f"q1d{i}" for i in sorted(range(4), key=lambda i: -scores[i])]
    assert trec(tmp_path / "ev" / "run.ce.trec")["1"] == expected + ["q1d4", "q1d5"]


def test_what_is_not_a_cross_encoder_is_refused(cands, tmp_path, tiny_bert, tiny_ce):
    with pytest.raises(ConfigError, match="is not a cross-encoder: its weights are a BertModel without a scoring head"):
        ev(cands, tmp_path, [f"cross-encoder:{tiny_bert}"])
    with pytest.raises(ConfigError, match="has no r2r_config.json, so it is not a student written by") as ei:
        ev(cands, tmp_path, [str(tiny_ce)])
    assert f"cross-encoder:{tiny_ce}" in ei.value.hint
    with pytest.raises(ConfigError, match="no such directory, and not a Hugging Face model id"):
        ev(cands, tmp_path, ["cross-encoder:./no such/model dir"])


# --------------------------------------------------------------------------- the chart


def test_the_legend_covers_no_bar_label(cands, tmp_path):
    res = ev(cands, tmp_path, ["bm25", f"a long system name=run:{reverse_run(tmp_path)}", "third=first-stage"],
             depth=3)
    fig = chart(res.report)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    labels = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(labels) == 3 * 2  # one label per bar
    assert not any(legend.overlaps(box) for box in labels)
    assert legend.x0 >= ax.get_window_extent(renderer).x1  # outside the axes, right of them
    assert (tmp_path / "ev" / "evaluation.png").stat().st_size > 1000


# --------------------------------------------------------------------------- the command line


def test_cli_prints_a_p_value_for_each_system_against_the_first(cands, tmp_path, tiny_ce):
    inp, qrels = cands
    proc = subprocess.run([R2R, "evaluate", "-i", str(inp), "--qrels", str(qrels), "-s", "bm25",
                           "-s", f"ce=cross-encoder:{tiny_ce}", "-s", f"rev=run:{reverse_run(tmp_path)}",
                           "--depth", "4", "--test", "t-test", "--out", str(tmp_path / "ev")],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "p: paired t-test test against bm25" in " ".join(proc.stdout.split())
    header = next(line for line in proc.stdout.splitlines() if "nDCG@10" in line)
    assert [c.strip() for c in header.split("┃")][1:6] == ["system", "nDCG@10", "p", "RR@10", "p"]
    sig = json.loads((tmp_path / "ev" / "evaluation.json").read_text())["significance"]["systems"]
    for name in ("ce", "rev"):
        row = next(line for line in proc.stdout.splitlines() if line.startswith(f"│ {name} "))
        assert [c.strip() for c in row.split("│")][3] == f"{sig[name]['nDCG@10']['t-test']:.3f}"
    bm25 = next(line for line in proc.stdout.splitlines() if line.startswith("│ bm25 "))
    assert [c.strip() for c in bm25.split("│")][3] == ""


def test_cli_rerank_explain_gives_a_cross_encoder_evidence_from_each_document(tiny_ce):
    """--explain with any cross-encoder: each result carries the sentence of its own document the model
    scores highest (--json carries it), taken verbatim."""
    from sentence_transformers import CrossEncoder

    from r2r_synth.evaluate.evidence import split_sentences

    docs = ["Otters eat fish. They also eat crabs and frogs.", "Tax returns are due in April. File early!",
            "Jazz piano began in New Orleans.\nIt spread north."]
    proc = subprocess.run([R2R, "rerank", "--model", f"cross-encoder:{tiny_ce}", "-q", "what do otters eat",
                           "--docs", "-", "--json", "--explain"], input="\n".join(d.replace("\n", " ") for d in docs),
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    model = CrossEncoder(str(tiny_ce), device="cpu")
    for row in rows:
        sentences = split_sentences(row["text"])
        assert row["evidence"] in sentences and row["evidence"] in row["text"] and row["explanation"] is None
        scores = model.predict([("what do otters eat", s) for s in sentences])
        assert row["evidence"] == sentences[int(scores.argmax())]


def test_rerank_with_any_cross_encoder(tiny_ce):
    ranked = rerank_documents(model=f"cross-encoder:{tiny_ce}", query="q", documents=[("a", "x"), ("b", "y")])
    assert sorted(r.docid for r in ranked) == ["a", "b"] and ranked[0].score >= ranked[1].score
    with pytest.raises(ConfigError, match="--int8 applies to a student directory"):
        rerank_documents(model=f"cross-encoder:{tiny_ce}", query="q", documents=[("a", "x")], int8=True)
    with pytest.raises(ConfigError, match="rerank ranks with a model, not with a first-stage system"):
        rerank_documents(model="bm25", query="q", documents=[("a", "x")])


def test_a_copy_of_a_student_without_its_config_says_what_to_write(tmp_path, tiny_ce):
    shutil.copytree(tiny_ce, tmp_path / "copy")
    with pytest.raises(ConfigError, match="has no r2r_config.json, so it is not a student"):
        rerank_documents(model=str(tmp_path / "copy"), query="q", documents=[("a", "x")])
