"""`report`: a self-contained HTML page with matplotlib plots; rendered by headless Chromium when present."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from run_factory import make_run

from r2r_synth.errors import InputError
from r2r_synth.importer import import_r2r
from r2r_synth.report import build_report, read_evaluation

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
EVALUATION = {  # the shape `r2r-synth evaluate` writes (see r2r_synth/evaluate.py)
    "input": "bm25_top100.json", "qrels": "qrels.txt", "queries": 43, "judged_queries": 43, "depth": 100,
    "measures": ["nDCG@10", "RR@10", "R@100"],
    "systems": {
        "bm25": {"spec": "bm25", "nDCG@10": 0.5058, "RR@10": 0.7, "R@100": 0.49, "pairs": 4300, "seconds": 1.0},
        "student": {"spec": "outputs/ce", "nDCG@10": 0.5412, "RR@10": 0.72, "R@100": 0.49, "pairs": 4300,
                    "seconds": 30.0, "failures": 0},
    },
    "device": "cpu", "config": {"systems": ["bm25", "student"]},
}


def embedded_images(html: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_report_has_every_plot_embedded_and_beside(tmp_path):
    run = make_run(tmp_path / "run", queries=16, kinds=("direct", "comparison", "listwise"))
    ev = tmp_path / "evaluation.json"
    ev.write_text(json.dumps(EVALUATION))
    res = build_report(run, evaluation=ev, out=tmp_path / "rep")
    assert set(res.plots) == {"labels", "confusion", "swap", "reasoning_length", "rejects", "tokens", "ndcg"}
    assert not res.missing
    # Written through a temporary file and a rename: only the finished PNGs are left.
    assert sorted(p.name for p in (tmp_path / "rep" / "plots").iterdir()) == sorted(f"{n}.png" for n in res.plots)
    html = res.html.read_text()
    images = embedded_images(html)
    assert len(images) == 7 and all(img.startswith(PNG) for img in images)
    for name, path in res.plots.items():
        assert path.read_bytes() in images, name  # the PNG beside the page is the one inside it
        h, w = mpimg.imread(path).shape[:2]
        assert h > 100 and w > 100
    assert "<script" not in html and "http://" not in html and "https://" not in html  # self-contained
    # Figures on the page: counts (integers as integers), agreement under readable names, swap
    # consistency, the nDCG table restricted to the measures, with four decimals.
    assert "<td>direct</td><td class=num>64</td><td class=num>16</td><td class=num>4</td>" in html
    assert "swap consistency (same passage preferred in both orders)" in html and "binary_accuracy" not in html
    assert "<td class=num>0.5412</td>" in html and "<td class=num>0.7000</td>" in html
    assert "pairs_per_s" not in html and "4300" not in html and "64.0" not in html


def test_missing_plots_say_why(tmp_path):
    run = make_run(tmp_path / "run", queries=4, kinds=("direct",), rejects=False)
    for line in ["direct.jsonl"]:  # drop every gold label: no confusion matrix can be drawn
        recs = [json.loads(x) for x in (run / line).read_text().splitlines()]
        (run / line).write_text("".join(json.dumps({**r, "gold": None}) + "\n" for r in recs))
    res = build_report(run)
    assert res.html == run / "report" / "report.html"
    # A direct-only run: no swap panel at all (not an empty one); the plots it could have say why not.
    assert set(res.missing) == {"confusion", "rejects"} and "swap" not in res.plots
    html = res.html.read_text()
    assert "no direct record has a gold grade" in html and "nothing was rejected" in html
    assert "Swap consistency" not in html and "Comparison records" not in html


def test_report_of_an_imported_corpus_shows_only_listwise_and_names_its_position_bias(tmp_path, r2r_corpus):
    run = tmp_path / "r2r"
    import_r2r([r2r_corpus / "msmarco_100.jsonl"], out=run)
    res = build_report(run)
    html = res.html.read_text()
    # Only the sections the run has: no direct / comparison panel, note or plot, no token plot.
    assert set(res.plots) == {"labels", "reasoning_length"} and set(res.missing) == {"rejects"}
    for absent in ("Direct records", "Comparison records", "Teacher vs gold", "Swap consistency", "Tokens and cost",
                   "no direct record", "0 prompt + 0 completion"):
        assert absent not in html, absent
    assert html.count("not recorded (the records carry no token usage") == 1
    assert "imported:r2r-gpt4" in html and "Listwise records" in html
    # The bias the heat map shows, in words, with its figures.
    (bias,) = res.problems
    assert (bias.kind, bias.check) == ("listwise", "position bias")
    assert re.search(r"Position bias: the teacher's ranks follow the order it was shown: mean Kendall tau \+0\.\d\d",
                     bias.text)
    assert "12 of 100 windows (12%) were returned in the order shown" in bias.text
    assert "bright diagonal of the position-vs-rank heat map" in html
    # Example windows: the teacher's ranking, each passage with the position it was shown at and its reason.
    assert html.count("<ol class='window'>") == 5 and html.count("<li>(shown ") == 25
    assert html.count("<blockquote><i>no reason given</i>") == 0


def test_report_without_manifest_still_describes_the_files(tmp_path):
    run = make_run(tmp_path / "run", queries=3, kinds=("direct",))
    (run / "manifest.json").unlink()
    html = build_report(run).html.read_text()
    assert "manifest" in html and "did not finish cleanly" in html


@pytest.mark.parametrize(
    "data",
    [
        {"bm25": {"nDCG@10": 0.5}, "student": {"nDCG@10": 0.6, "note": "x"}},
        {"results": {"bm25": {"nDCG@10": 0.5}, "student": {"nDCG@10": 0.6}}},
        [{"system": "bm25", "nDCG@10": 0.5}, {"system": "student", "nDCG@10": 0.6}],
    ],
)
def test_read_evaluation_is_tolerant_of_shapes(tmp_path, data):
    p = tmp_path / "e.json"
    p.write_text(json.dumps(data))
    assert read_evaluation(p) == {"bm25": {"nDCG@10": 0.5}, "student": {"nDCG@10": 0.6}}


def test_read_evaluation_errors_say_what_was_expected(tmp_path):
    p = tmp_path / "e.json"
    p.write_text("{not json")
    with pytest.raises(InputError, match="e.json: not valid JSON"):
        read_evaluation(p)
    p.write_text(json.dumps({"bm25": "good"}))
    with pytest.raises(InputError, match="found no system with numeric measures") as e:
        read_evaluation(p)
    assert '"nDCG@10"' in e.value.hint
    p.write_text(json.dumps([{"nDCG@10": 0.5}]))
    with pytest.raises(InputError, match="row 0 has no 'system' name"):
        read_evaluation(p)
    with pytest.raises(InputError, match="no such file"):
        read_evaluation(tmp_path / "absent.json")


def test_cli_report(tmp_path):
    run = make_run(tmp_path / "run", queries=5, kinds=("direct", "comparison"))
    proc = subprocess.run([sys.executable, "-m", "r2r_synth.cli", "report", str(run), "--out", str(tmp_path / "r")],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r" / "report.html").exists() and "(6 plots)" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "r2r_synth.cli", "report", str(tmp_path)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "not a run directory" in proc.stderr


def test_cli_report_out_naming_a_file_exits_2_and_writes_nothing(tmp_path):
    run = make_run(tmp_path / "run", queries=2, kinds=("direct",))
    out = tmp_path / "report.html"
    out.write_text("not a folder\n")
    for target in (out, out / "sub"):
        proc = subprocess.run([sys.executable, "-m", "r2r_synth.cli", "report", str(run), "--out", str(target)],
                              check=False, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and "--out" in proc.stderr
    assert out.read_text() == "not a folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "run"]


def test_report_of_a_constant_position_biased_teacher_says_so_and_shows_reasoning(tmp_path):
    """What the embedded teacher does (every passage graded 3, the first passage shown always preferred):
    the page names both problems in words, shows the distribution beside every agreement figure, and
    shows example records with their reasoning, the disagreements with gold first."""
    run = make_run(tmp_path / "run", queries=12, kinds=("direct", "comparison"), teacher="embedded/smollm2-135m-instruct",
                   label=3, prefer_first=True, distinct_reasoning=True)
    res = build_report(run, samples=4)
    html = res.html.read_text()
    assert [(p.kind, p.check) for p in res.problems] == [("direct", "constant label"), ("comparison", "position bias")]
    constant, bias = res.problems
    assert "Constant label: the teacher gave grade 3 to every passage." in constant.text
    assert "binary accuracy (grade ≥ 2 = relevant) 0.500 (a constant 3: 0.500)" in constant.text
    assert "embedded teacher (SmolLM2-135M)" in constant.advice
    assert ("Position bias: in 72 of 72 answers (100%) the teacher preferred the passage shown first "
            "(chance: 50%, binomial p = 4.2e-22); 36 of 36 pairs changed their preference") in bias.text
    assert "Problems the data shows" in html and "Constant label: the teacher gave grade 3" in html
    # The agreement figure sits beside the distribution it depends on and what a constant scores.
    assert "Labels of the 48 records: 3: 48 (grade 3 for 48 of 48, 100%)" in html
    assert ("<td>binary accuracy (grade ≥ 2 = relevant)</td><td class=num>0.500</td>"
            "<td>a constant grade 3 scores 0.500</td>") in html
    assert "always answering A scores" in html
    # Examples: 4 per kind, query, passage, reasoning and labels; those that disagree with gold first.
    assert html.count("class='rec'") == 8
    direct = html[html.index("<section id='direct'>"):html.index("</section>")]
    tags = re.findall(r"<span class='tag bad'>([^<]*)</span>", direct)
    assert tags == ["disagrees with gold: teacher 3, gold 0"] * 4
    first = direct.index("<div class='rec'>")
    assert re.search(r"<blockquote>because( because)* passage d\d+-\d speaks of topic \d+</blockquote>", direct[first:])
    assert "teacher grade <b>3</b>" in direct and "<b>Query</b> <code>q" in direct
    comparison = html[html.index("<section id='comparison'>"):]
    assert "Asked with B first: preferred <b>B</b> <span class='cut'>(the one shown first)</span>" in comparison
    assert "B is shown first now. d" in comparison  # the swapped order's own reasoning
    assert "--samples" not in html
    assert build_report(run, samples=0, out=tmp_path / "none").html.read_text().count("class='rec'") == 0


def test_a_clean_run_names_no_problem_and_says_what_was_checked(tmp_path):
    run = make_run(tmp_path / "run", queries=12, kinds=("direct", "comparison"), distinct_reasoning=True)
    # The factory's grades are arbitrary against its gold ones (no better than a constant): without gold
    # the run has nothing to be measured against.
    recs = [json.loads(x) for x in (run / "direct.jsonl").read_text().splitlines()]
    (run / "direct.jsonl").write_text("".join(json.dumps({**r, "gold": None}) + "\n" for r in recs))
    assert [p.check for p in build_report(make_run(tmp_path / "judged", queries=12, kinds=("direct",),
                                                   distinct_reasoning=True)).problems] == ["no better than a constant"]
    res = build_report(run)
    assert res.problems == []
    html = res.html.read_text()
    assert "None found. Checked: constant label (one grade for at least 90% of the direct records)" in html


def test_a_legend_that_covers_data_is_moved_below_the_axes():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from r2r_synth.report.plots import _fig_png, legend_covers_data

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar([0, 1, 2, 3], [10, 10, 10, 10], label="teacher")
    ax.bar([0.4, 1.4, 2.4, 3.4], [10, 10, 10, 10], label="gold")
    ax.set_xlabel("relevance grade")
    ax.legend(loc="upper right")
    fig.canvas.draw()
    assert legend_covers_data(ax, fig.canvas.get_renderer())  # full-height bars: no free corner
    png = _fig_png(fig)
    assert png.startswith(PNG)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the figure was closed: draw it again to measure where the legend went
    canvas.draw()
    renderer = canvas.get_renderer()
    assert not legend_covers_data(ax, renderer)
    # Below the tick labels and the axis label, not over them.
    assert ax.get_legend().get_window_extent(renderer).y1 <= ax.xaxis.get_tightbbox(renderer).y0 + 0.5
    h, w = mpimg.imread(io.BytesIO(png)).shape[:2]
    assert h > 300 and w > 450  # the saved image holds the moved legend (bbox_inches="tight")


def test_cli_report_lists_problems_and_refuses_negative_samples(tmp_path):
    run = make_run(tmp_path / "run", queries=6, kinds=("direct",), label=2)
    proc = subprocess.run([sys.executable, "-m", "r2r_synth.cli", "report", str(run), "--samples", "2"],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "problem (direct): constant label" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "r2r_synth.cli", "report", str(run), "--samples", "-1"],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--samples" in proc.stderr and "Traceback" not in proc.stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install -y "
                                    "chromium); the page is not rendered in this environment")


def render(page: Path, prefix: Path, *widths: int) -> list[dict]:
    args = [a for w in widths for a in ("--width", str(w))]
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "screenshot_report.py"), str(page), str(prefix),
                           *args, "--json"], check=False, capture_output=True, text=True, timeout=180)
    assert proc.returncode in (0, 1), proc.stderr
    facts = json.loads(proc.stdout)
    assert (proc.returncode == 0) == all(f["ok"] for f in facts)
    return facts


@needs_chromium
def test_report_renders_without_overflow_or_overlap_at_desktop_and_phone_widths(tmp_path):
    run = make_run(tmp_path / "run", queries=16, kinds=("direct", "comparison", "listwise"))
    res = build_report(run)
    facts = render(res.html, tmp_path / "shot", 1400, 420)
    for f in facts:
        # The layout as a user sees it: nothing wider than the window, no text out of its box, no two
        # boxes (headings, paragraphs, tables, plots, records) on top of each other.
        assert (f["overflow"], f["spill"], f["overlap"]) == ([], [], []), f
        assert f["viewport"] == f["width"] and f["scroll_width"] <= f["width"]
        assert len(f["images"]) == 6 and all(i["loaded"] and i["w"] <= f["width"] for i in f["images"])
        assert f["boxes"] > 100  # the checks saw the page: headings, tables, plots, records, list items
        img = mpimg.imread(f["screenshot"])
        assert img.shape[1] == f["width"] and img.shape[0] == f["height"] > 2000
        assert img[..., :3].std() > 0.05  # not a blank page
    # At 420 pixels the page is narrower and so taller; its plots are scaled down to fit.
    wide, narrow = facts
    assert narrow["height"] > wide["height"]
    assert all(i["w"] < i["natural"] for i in narrow["images"] if i["natural"] > 420)


@needs_chromium
def test_the_layout_check_catches_overflow_and_overlap(tmp_path):
    """The checks can fail: a page with a table wider than the window and a box drawn over a heading."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><h2>Counts</h2>"
                    "<p style='position:relative;top:-30px'>drawn over the heading</p>"
                    "<table><tr>" + "<td>wide-cell-content</td>" * 40 + "</tr></table></body></html>")
    (f,) = render(page, tmp_path / "bad", 420)
    assert not f["ok"] and f["scroll_width"] > 420
    assert any("td" in x for x in f["overflow"])
    assert any(x.startswith('h2 "Counts"') and "drawn over the heading" in x for x in f["overlap"])


def test_rejects_are_named_a_problem_when_many_and_an_unreadable_input_always(tmp_path):
    from r2r_synth.rundir import RunDir
    from r2r_synth.schemas import Reject

    run = make_run(tmp_path / "run", queries=4, kinds=("direct",), distinct_reasoning=True)
    rundir = RunDir(run)
    rejects = rundir.rejects() + [
        Reject(kind="direct", key=f"r{i}", reason="unparseable reply: no JSON object found", teacher="t")
        for i in range(4)] + [Reject(kind="input", key="in0", reason="in.jsonl:7: not valid JSON")]
    rundir.write_records("reject", rejects)
    res = build_report(run)
    found = {p.check: p for p in res.problems}
    assert ("High reject rate: 5 of 21 direct requests (24%) were rejected (most often: unparseable reply, 5)."
            == found["high reject rate"].text)
    assert found["unreadable input"].text.startswith("Unreadable input: 1 input line could not be read and was asked nothing")
    assert "rejects" in res.plots  # the rejects plot of a run is kept whatever kinds it holds


def test_a_run_of_rejects_only_is_reported_and_an_empty_one_refused(tmp_path):
    # listwise rejects and no listwise record: the summary has nothing to rank, and says so
    src = tmp_path / "r2r.jsonl"
    good = {"query": "q", "qid": "1", "unsorted_docs": ["a", "b"], "re_rank_id": [2, 1]}
    src.write_text(json.dumps(good) + "\n" + json.dumps({**good, "re_rank_id": [1, 1]}) + "\n")
    run = tmp_path / "run"
    import_r2r([src], out=run)
    (run / "listwise.jsonl").write_text("")
    res = build_report(run, out=tmp_path / "rep")
    assert res.html.is_file() and "rejects" in res.plots and res.missing["labels"] == "no records"
    (run / "rejects.jsonl").write_text("")
    with pytest.raises(InputError, match=r"run: the run holds no record and no reject, so there is nothing to report"):
        build_report(run, out=tmp_path / "rep2")
    assert not (tmp_path / "rep2").exists()
