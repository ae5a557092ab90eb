"""`report`: a self-contained HTML page with matplotlib plots; rendered by headless Chromium when present."""

from __future__ import annotations

import base64
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
    # Figures on the page: counts, agreement, swap consistency, nDCG table restricted to the measures.
    assert "<td>direct</td><td>64</td><td>16</td><td>4</td>" in html
    assert "swap_consistency" in html and "0.5412" in html
    assert "pairs_per_s" not in html and ">4300<" not in html


def test_missing_plots_say_why(tmp_path):
    run = make_run(tmp_path / "run", queries=4, kinds=("direct",), rejects=False)
    for line in ["direct.jsonl"]:  # drop every gold label: no confusion matrix can be drawn
        recs = [json.loads(x) for x in (run / line).read_text().splitlines()]
        (run / line).write_text("".join(json.dumps({**r, "gold": None}) + "\n" for r in recs))
    res = build_report(run)
    assert res.html == run / "report" / "report.html"
    assert set(res.missing) == {"confusion", "swap", "rejects"}
    html = res.html.read_text()
    assert "no direct record has a gold grade" in html and "nothing was rejected" in html


def test_report_of_an_imported_corpus(tmp_path, r2r_corpus):
    run = tmp_path / "r2r"
    import_r2r([r2r_corpus / "msmarco_100.jsonl"], out=run)
    res = build_report(run)
    assert {"labels", "reasoning_length"} <= set(res.plots)
    assert "tokens" in res.missing and "imported corpora carry none" in res.html.read_text()
    assert "imported:r2r-gpt4" in res.html.read_text()


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


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="headless Chromium is not installed (apt-get install -y chromium); the page "
                           "is not rendered in this environment")
def test_report_renders_in_headless_chromium(tmp_path):
    run = make_run(tmp_path / "run", queries=16, kinds=("direct", "comparison", "listwise"))
    res = build_report(run)
    shot = tmp_path / "shot.png"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "screenshot_report.sh"), str(res.html), str(shot),
                           "1280x2400"], check=False, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    img = mpimg.imread(shot)
    assert img.shape[:2] == (2400, 1280)
    # A page that failed to render is one flat colour; ours has text, tables and plots.
    assert img[..., :3].std() > 0.05
    # The plots are drawn: saturated plot colours occur in the upper part of the page.
    top = img[: 1600, :, :3]
    colourful = ((top.max(axis=2) - top.min(axis=2)) > 0.3).mean()
    assert colourful > 0.01
