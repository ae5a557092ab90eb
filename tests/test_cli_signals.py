"""A run stopped with SIGTERM (what `timeout` and schedulers send) ends like Ctrl-C: exit 130, a
manifest that says "interrupted", so a report or a resume sees what happened, and a message that says
how to resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from openai_server import spawn_server

from r2r_synth.schemas import Candidates, Document, Query


def test_sigterm_mid_run_writes_an_interrupted_manifest(tmp_path: Path):
    cands = tmp_path / "cands.jsonl"
    with cands.open("w") as fh:
        for q in range(6):
            docs = [Document(docid=f"d{q}-{i}", text=f"passage {i} about tides") for i in range(5)]
            fh.write(Candidates(query=Query(qid=f"q{q}", text="how do tides work"), documents=docs).model_dump_json())
            fh.write("\n")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with spawn_server(latency=0.5) as url:
        proc = subprocess.Popen(
            [sys.executable, "-m", "r2r_synth.cli", "generate", "-i", str(cands), "-o", str(out),
             "-t", "openai/loopback", "--api-base", url, "--depth", "5", "--pairs", "none", "-c", "1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.time() + 300
        direct = out / "direct.jsonl"
        while not (direct.exists() and direct.read_bytes().count(b"\n") >= 1):
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "generate wrote no record in 300 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    # It says where the answers are and how to go on.
    assert f"interrupted: what was answered is saved in {out}; rerun the same command to resume" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert manifest["counts"]["direct"]["records"] == direct.read_bytes().count(b"\n")
    assert manifest["counts"]["direct"]["records"] < 30
