"""`--json` on every command that reports: run as a script runs it (a subprocess, stdout and stderr
apart), stdout must parse as exactly one JSON object with what the command did, and the human text
must still reach stderr."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from openai_server import spawn_server
from run_factory import make_run

from r2r_synth.schemas import Candidates, Document, Query

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample_candidates.jsonl"


def cli(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The command in a subprocess, stdout and stderr apart, decoded as written (text mode would turn
    a progress bar's carriage return into a newline)."""
    # A generous timeout: LiteLLM and torch imports take a while on a loaded, shared 2-core machine.
    res = subprocess.run([sys.executable, "-m", "r2r_synth.cli", *map(str, args)], check=False,
                         capture_output=True, timeout=900, env={**os.environ, **(env or {})})
    return subprocess.CompletedProcess(res.args, res.returncode, res.stdout.decode(), res.stderr.decode())


def parsed(res: subprocess.CompletedProcess) -> dict:
    """The one JSON object on stdout (json.loads fails on anything before or after it)."""
    assert res.returncode == 0, res.stderr
    obj = json.loads(res.stdout)
    assert isinstance(obj, dict)
    return obj


def write_candidates(path: Path, queries: int, docs: int = 4) -> Path:
    with path.open("w") as fh:
        for q in range(queries):
            documents = [Document(docid=f"d{q}-{i}", text=f"passage {i} about tides and the moon {q}")
                         for i in range(docs)]
            qrels = {documents[0].docid: 2, documents[-1].docid: 0}
            fh.write(Candidates(query=Query(qid=f"q{q}", text=f"how do tides work {q}"), documents=documents,
                                qrels=qrels).model_dump_json() + "\n")
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("json") / "run", queries=6, docs=3, distinct_reasoning=True)


@pytest.fixture(scope="module")
def teacher_url():
    with spawn_server() as url:
        yield url


def test_generate_and_its_dry_run(tmp_path, teacher_url):
    common = ["-i", SAMPLE, "-t", "openai/loopback", "--api-base", teacher_url, "--depth", "3", "--pairs", "none",
              "--json"]
    plan = parsed(cli("generate", "-o", tmp_path / "plan", "--dry-run", *common))
    assert plan["dry_run"] is True and plan["requests"] == {"direct": 9} and plan["calls"] == 9
    assert plan["teacher"] == "openai/loopback" and not (tmp_path / "plan").exists()

    res = cli("generate", "-o", tmp_path / "run", *common)
    obj = parsed(res)
    assert obj["run_dir"] == str(tmp_path / "run")
    assert obj["manifest"]["status"] == "complete" and obj["manifest"]["counts"]["direct"]["records"] == 9
    assert "requested" in res.stderr and str(tmp_path / "run") in res.stderr  # the table and the path, on stderr


def test_generate_gives_its_object_when_it_exits_5_with_batches_out(tmp_path, teacher_url):
    res = cli("generate", "-i", SAMPLE, "-o", tmp_path / "run", "-t", "openai/loopback", "--api-base", teacher_url,
              "--depth", "3", "--pairs", "none", "--batch", "--json")
    assert res.returncode == 5, res.stderr
    obj = json.loads(res.stdout)  # what the session did; the exit code says why it stopped
    assert obj["manifest"]["status"] == "pending" and obj["manifest"]["counts"]["direct"]["records"] == 0
    assert "rerun the same command later" in res.stderr


def test_merge_counts_the_keys_found_in_several_inputs(tmp_path, run_dir):
    copy = tmp_path / "again"
    shutil.copytree(run_dir, copy)
    res = cli("merge", tmp_path / "merged", run_dir, copy, "--json")
    obj = parsed(res)
    records = sum(c["records"] for c in obj["manifest"]["counts"].values())
    extra = obj["manifest"]["extra"]
    assert records > 0 and extra["overlapping_keys"] == records
    assert extra["overlapping_keys_by_kind"] == {k: c["records"] for k, c in obj["manifest"]["counts"].items()
                                                 if c["records"]}
    line = next(ln for ln in res.stderr.splitlines() if "more than one input" in ln)
    assert f"{records} records (" in line and "kept once" in line and "`requested` counts every input" in line


def test_filter(tmp_path, run_dir):
    obj = parsed(cli("filter", run_dir, "-o", tmp_path / "kept", "--exact-duplicates", "--json"))
    assert obj["out"] == str(tmp_path / "kept") and obj["status"] == "complete"
    assert obj["kept"] + obj["filtered"] == sum(k["input"] for k in obj["kinds"].values()) > 0
    assert obj["rules"] == [{"rule": "exact-duplicate"}] or obj["rules"][0]["rule"] == "exact-duplicate"


def test_report(tmp_path, run_dir):
    obj = parsed(cli("report", run_dir, "-o", tmp_path / "report", "--json"))
    assert Path(obj["html"]).is_file() and obj["plots"]
    assert all(set(p) == {"kind", "check", "text", "advice"} for p in obj["problems"])


def test_publish_a_run(tmp_path, run_dir):
    obj = parsed(cli("publish", run_dir, "--repo-id", "alice/x", "--license", "cc-by-4.0", "--dry-run", "--out",
                     tmp_path / "hub", "--json"))
    assert obj["dry_run"] is True and obj["commit_url"] is None and "README.md" in obj["files"]
    assert obj["rows"]["direct"]["train"] == 18


def test_import_then_export(tmp_path, r2r_corpus):
    src = r2r_corpus / "msmarco_100.jsonl"
    res = cli("import", src, "--out", tmp_path / "run", "--json")
    obj = parsed(res)
    assert obj["records"] == 100 and obj["queries"] == 100 and obj["rejects"] == 0
    assert "100 listwise records from 100 queries" in res.stderr
    obj = parsed(cli("export", tmp_path / "run", "-o", tmp_path / "r2r.jsonl", "--json"))
    assert obj == {"out": str(tmp_path / "r2r.jsonl"), "rows": 100, "queries": 100, "repaired": 0}


def test_evaluate(tmp_path):
    res = cli("evaluate", "-i", SAMPLE, "-s", "bm25", "-s", "again=bm25", "-o", tmp_path / "ev", "--json")
    obj = parsed(res)
    assert set(obj["systems"]) == {"bm25", "again"} and obj["systems"]["bm25"]["nDCG@10"] >= 0
    assert Path(obj["files"]["evaluation"]).is_file()
    assert json.loads(Path(obj["files"]["evaluation"]).read_text())["systems"] == obj["systems"]
    assert "judged quer" in res.stderr  # the table went to stderr


def test_train_names_its_phases_in_a_log(tmp_path, run_dir, tiny_bert):
    res = cli("train", "--corpus", run_dir, "-o", tmp_path / "student", "--base", tiny_bert, "--max-steps", "2",
              "--batch-size", "4", "--device", "cpu", "--json")
    obj = parsed(res)
    assert obj["out"] == str(tmp_path / "student") and obj["student"] == "bi-encoder"
    assert obj["corpus"]["queries"] == 6 and obj["r2r_config"]["student"] == "bi-encoder"
    lines = res.stderr.splitlines()
    for phase in ("train: reading the corpus", "train: loading the base model",
                  "train: building the training examples", "train: epoch 1/1, step 0/2",
                  f"train: saving the model to {tmp_path / 'student'}"):
        assert any(line.startswith(phase) for line in lines), (phase, res.stderr)
    # No bar of ours, of Hugging Face, or the one sentence-transformers' mining forces on.
    assert "\r" not in res.stderr and "\x1b[" not in res.stderr and "Batches:" not in res.stderr


def test_optimize_evaluate_only(tmp_path, teacher_url):
    inp = write_candidates(tmp_path / "cands.jsonl", 4)
    res = cli("optimize", "--input", inp, "--teacher", "openai/loopback", "--api-base", teacher_url, "--evaluate-only",
              "--program", "direct", "--programs-dir", tmp_path / "programs", "--no-cache", "--val-fraction", "1.0",
              "--json")
    obj = parsed(res)
    assert obj["evaluate_only"] is True and obj["report_path"] is None and "direct" in obj["programs"]
    assert "direct: validation split" in res.stderr


def test_an_error_leaves_stdout_empty(tmp_path):
    res = cli("report", tmp_path, "--json")
    assert res.returncode == 2 and res.stdout == "" and "error:" in res.stderr


def test_queries_priced_on_the_command_line(tmp_path, teacher_url):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "title": f"Topic {i}", "text": text}) + "\n" for i, text in
                              enumerate(["Otters eat fish and crabs. They dive for urchins.",
                                         "The Nile is the longest river. It flows north into the sea.",
                                         "Tides follow the moon. Spring tides come at full moon."])))
    res = cli("queries", "--corpus", corpus, "-o", tmp_path / "q", "-t", "openai/loopback", "--api-base", teacher_url,
              "--per-doc", "1", "--depth", "3", "--price-in", "1", "--price-out", "2", "--json")
    obj = parsed(res)
    assert obj["run_dir"] == str(tmp_path / "q") and obj["manifest"]["status"] == "complete"
    assert obj["manifest"]["config"]["price_in"] == 1.0 and obj["manifest"]["cost"] > 0  # priced by the flags
    assert obj["queries"]["records"] == 3 and "consistency filter" in res.stderr
