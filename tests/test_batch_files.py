"""generate --export-batch / --import-batch: an OpenAI batch file for vLLM's run_batch or any compatible
runner (here `tests/openai_batches.py run-batch`, which answers with the loopback server's logic), and
its results read back: the same records as online, listwise rounds, and every bad line of a results
file handled: a foreign custom_id and a malformed (truncated) line are rejects with their line
numbers, a duplicate counts once, a result already recorded is not written twice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from openai_batches import run_batch
from openai_server import OpenAIServer
from test_batch import contents
from test_generate import KEY, REPO, SAMPLE, cfg, check_run_dir, cli, lines, manifest, run

from r2r_synth.errors import BatchPending, ConfigError, InputError

OFFLINE = {"teacher": "hosted_vllm/Qwen/Qwen2.5-7B-Instruct", "api_base": None, "api_key": None}


NO_SERVER = SimpleNamespace(url=None)  # a batch file reaches no endpoint


def export(out: Path, path: Path, **kw):
    return run(cfg(NO_SERVER, out, export_batch=path, **{**OFFLINE, **kw}))


def import_(out: Path, path: Path, **kw):
    return run(cfg(NO_SERVER, out, import_batch=path, **{**OFFLINE, **kw}))


def test_export_run_import_gives_the_online_records(tmp_path):
    with OpenAIServer() as srv:  # the online reference, from a server that answers as the runner does
        run(cfg(srv, tmp_path / "online", teacher=OFFLINE["teacher"]))
    out, requests, results = tmp_path / "run", tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    res = export(out, requests)
    assert res.manifest.status == "pending"  # exit 0: the command did what it was asked
    body = [json.loads(x) for x in requests.read_text().splitlines()]
    assert len(body) == 39 and {b["method"] for b in body} == {"POST"} and {b["url"] for b in body} == {
        "/v1/chat/completions"}
    assert {b["body"]["model"] for b in body} == {"Qwen/Qwen2.5-7B-Instruct"}  # the name vLLM serves
    assert all(b["body"]["temperature"] == 0.0 for b in body)
    done = subprocess.run([sys.executable, str(REPO / "tests" / "openai_batches.py"), "run-batch", "-i", str(requests),
                           "-o", str(results)], capture_output=True, text=True, check=True)
    assert "wrote 39 results" in done.stdout
    res = import_(out, results)
    assert res.manifest.status == "complete" and res.batch["import"]["results"] == 39
    for kind in ("direct", "comparison"):
        assert contents(tmp_path / "online", kind) == contents(out, kind)
    check_run_dir(out)
    assert res.manifest.cost is None  # a self-hosted model has no price
    state = [json.loads(x)["t"] for x in (out / "batches.jsonl").read_text().splitlines()]
    assert state == ["export", "import"]


def test_a_damaged_results_file_is_counted_line_by_line(tmp_path, monkeypatch, capsys):
    out, requests, results = tmp_path / "run", tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    export(out, requests, pairs="none")
    run_batch(str(requests), str(results))
    good = results.read_text().splitlines()
    foreign = json.loads(good[0]) | {"custom_id": "not-from-this-run"}
    damaged = [good[0], json.dumps(foreign), *good[1:-1], good[3], good[-1][: len(good[-1]) // 2]]
    results.write_text("\n".join(damaged))  # the last line cut short, with no newline: a runner killed mid-write
    code, out_text, err = cli(monkeypatch, capsys, "generate", "-i", str(SAMPLE), "-o", str(out), "-t", OFFLINE["teacher"],
                              "--depth", "5", "--pairs", "none", "--import-batch", str(results))
    printed = " ".join((out_text + err).split())
    assert code == 5  # the request of the cut line has no result yet: export it again
    assert ("import: 17 lines, 14 results, 0 failed items, 1 duplicates, 0 already recorded, 1 unknown custom id, "
            "1 malformed") in printed
    assert "1 requests have no result in" in printed and "--export-batch" in printed
    rejects = lines(out / "rejects.jsonl")
    assert sorted(r["reason"].split(": ")[0] for r in rejects) == [f"{results}:17", f"{results}:2"]
    assert {r["cause"] for r in rejects} == {"input"} and {r["kind"] for r in rejects} == {"input"}
    assert "not-from-this-run" in next(r["reason"] for r in rejects if r["inputs"]["line"] == 2)
    assert "cut short" in next(r["reason"] for r in rejects if r["inputs"]["line"] == 17)
    assert len(lines(out / "direct.jsonl")) == 14 and manifest(out).status == "pending"

    # The same file again: nothing is written twice, not even its rejects.
    with pytest.raises(BatchPending, match="1 requests have no result"):
        import_(out, results, pairs="none")
    assert len(lines(out / "direct.jsonl")) == 14 and len(lines(out / "rejects.jsonl")) == 2
    assert manifest(out).extra["batches"]["import"]["already_recorded"] == 14
    usage = manifest(out).usage.total_tokens

    # Export again: only the request whose result was lost; its result completes the run.
    export(out, requests, pairs="none")
    assert len(requests.read_text().splitlines()) == 1
    run_batch(str(requests), str(results))
    res = import_(out, results, pairs="none")
    assert res.manifest.status == "complete" and len(lines(out / "direct.jsonl")) == 15
    assert res.manifest.usage.total_tokens > usage


def test_a_failed_item_is_exported_again(tmp_path):
    out, requests, results = tmp_path / "run", tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    export(out, requests, pairs="none")
    run_batch(str(requests), str(results))
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    rows[4]["response"] = {"status_code": 500, "request_id": "r", "body": {"error": {"message": "out of memory"}}}
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from r2r_synth.errors import IncompleteRun

    with pytest.raises(IncompleteRun, match="1 of the 15 requests"):
        import_(out, results, pairs="none")
    (rej,) = lines(out / "rejects.jsonl")
    assert rej["cause"] == "transport" and "out of memory" in rej["reason"]
    export(out, requests, pairs="none")
    (again,) = [json.loads(x) for x in requests.read_text().splitlines()]
    assert again["custom_id"] == rows[4]["custom_id"]


def test_listwise_goes_one_round_per_file(tmp_path):
    lw = {"listwise": True, "window": 3, "stride": 1, "depth": 5, "limit": 2, "pairs": "none"}
    with OpenAIServer() as srv:
        run(cfg(srv, tmp_path / "online", teacher=OFFLINE["teacher"], **lw))
    out, requests, results = tmp_path / "run", tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    sizes = []
    for _ in range(5):
        export(out, requests, **lw)
        sizes.append(len(requests.read_text().splitlines()))
        if not sizes[-1]:
            break
        run_batch(str(requests), str(results))
        try:
            import_(out, results, **lw)
        except BatchPending:
            continue
    assert sizes == [2, 2, 2, 0]  # one window of each query per file; an empty file once the run is complete
    assert contents(tmp_path / "online", "listwise") == contents(out, "listwise")
    assert manifest(out).status == "complete"


def test_an_import_with_no_usable_line_writes_nothing(tmp_path, monkeypatch, capsys):
    out, requests = tmp_path / "run", tmp_path / "requests.jsonl"
    with pytest.raises(InputError, match="has exported no batch file"):
        import_(out, SAMPLE)
    export(out, requests, pairs="none")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(SAMPLE), "-o", str(out), "-t", OFFLINE["teacher"],
                       "--depth", "5", "--pairs", "none", "--import-batch", str(requests))
    printed = " ".join(err.split())
    assert code == 2 and "no line is a result of a request this run exported" in printed
    assert f"{requests}:1: not a batch result line" in printed and "nothing was written" in printed
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_batch_file_configuration_errors(tmp_path):
    with pytest.raises(ConfigError, match="--export-batch bills nothing through r2r-synth"):
        export(tmp_path / "a", tmp_path / "x.jsonl", teacher="openai/gpt-4o-mini", max_cost=1.0)
    with pytest.raises(ConfigError, match="--export-batch and --import-batch cannot be given together"):
        export(tmp_path / "b", tmp_path / "x.jsonl", import_batch=SAMPLE)
    with pytest.raises(ConfigError, match="an import asks nobody"):
        import_(tmp_path / "c", SAMPLE, dry_run=True)
    with pytest.raises(InputError, match="--export-batch .* is a directory"):
        export(tmp_path / "d", tmp_path)
    assert not any((tmp_path / x).exists() for x in "abc")
    for f in tmp_path.rglob("*"):
        assert f.is_dir() or KEY not in f.read_text()
