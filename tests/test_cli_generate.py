"""What `generate` and `merge` tell the user, against the real loopback server through LiteLLM: a
run that asked nothing or got nothing fails and says so, a rerun that would change the job is
refused, a missing key, a wrong key or a dead endpoint stop it at the preflight (exit 2, nothing
asked or written), config.json holds the values the run used, progress reaches a log, and merge names
missing shards, mixed teachers and questions answered twice."""

from __future__ import annotations

import json

import pytest
from openai_server import OpenAIServer
from test_generate import KEY, SAMPLE, cfg, cli, lines, manifest, run
from test_preflight import BAD, GOOD, dead_url

from r2r_synth.errors import ConfigError, InputError
from r2r_synth.generate import merge_runs

# --------------------------------------------------------------------------- preflight: the bars


def _generate(monkeypatch, capsys, out, *args: str) -> tuple[int, str]:
    code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(SAMPLE), "-o", str(out), "--depth", "2",
                       "--pairs", "none", "--max-retries", "1", *args)
    return code, err


@pytest.mark.parametrize("case", ["wrong key", "missing key", "dead endpoint"])
def test_cli_generate_exits_2_before_any_request_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("R2R_API_KEY", raising=False)
    out = tmp_path / "run"
    with OpenAIServer(require_key=GOOD, guard_models=True) as srv:
        args = {"wrong key": ["-t", "openai/loopback", "--api-base", srv.url, "--api-key", BAD],
                "missing key": ["-t", "gpt-4o"],
                "dead endpoint": ["-t", "openai/loopback", "--api-base", dead_url(), "--api-key", GOOD]}[case]
        code, err = _generate(monkeypatch, capsys, out, *args)
        assert srv.requests == []
    assert code == 2, err
    expected = {"wrong key": "refused the key", "missing key": "needs OPENAI_API_KEY", "dead endpoint": "did not answer"}
    assert expected[case] in " ".join(err.split()) and "nothing was asked or written" in " ".join(err.split())
    assert not out.exists()
    assert BAD not in err


def test_cli_generate_says_what_it_checked(tmp_path, monkeypatch, capsys):
    with OpenAIServer(require_key=GOOD, guard_models=True) as srv:
        code, err = _generate(monkeypatch, capsys, tmp_path / "run", "-t", "openai/loopback", "--api-base", srv.url,
                              "--api-key", GOOD, "--limit", "1")
    flat = " ".join(err.split())
    assert code == 0, err
    assert "generate: opening the teacher openai/loopback: checking its key and endpoint" in flat
    assert f"generate: preflight: openai/loopback at {srv.url}: GET /models answered in" in flat


# --------------------------------------------------------------------------- a run that did nothing


def test_an_empty_shard_is_an_error_and_writes_nothing(openai_server, tmp_path):
    out = tmp_path / "run"
    # ex1, the only query under --limit 1, falls in shard 1 of 2.
    with pytest.raises(InputError, match=r"nothing to ask: shard 0/2 of --input .* \(--limit 1\) holds no query"):
        run(cfg(openai_server, out, limit=1, shard="0/2"))
    assert not out.exists() and openai_server.requests == []


def test_cli_an_empty_shard_exits_2(openai_server, tmp_path, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(SAMPLE), "-o", str(tmp_path / "run"), "-t",
                       "openai/loopback", "--api-base", openai_server.url, "--limit", "1", "--shard", "0/2")
    flat = " ".join(err.split())  # the console wraps at its width, wherever the path is long
    assert code == 2 and "holds no query" in flat and "fewer shards or a larger --limit" in flat


def test_a_session_whose_every_reply_was_rejected_fails(openai_server, tmp_path, monkeypatch, capsys):
    openai_server.script("", *[{"content": "I cannot help with that."}] * 40)
    out = tmp_path / "run"
    code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(SAMPLE), "-o", str(out), "-t", "openai/loopback",
                       "--api-base", openai_server.url, "--api-key", KEY, "--limit", "1", "--depth", "2",
                       "--pairs", "none", "--parse-retries", "0")
    assert code == 1
    assert "none of the 2 requests of this session became a record" in " ".join(err.split())
    m = manifest(out)
    assert m.status == "failed" and m.counts["direct"].records == 0 and m.counts["direct"].rejects == 2


def test_a_session_with_one_record_is_not_a_failure(openai_server, tmp_path):
    openai_server.script("", {"content": "I cannot help with that."}, {"content": "no"})
    res = run(cfg(openai_server, tmp_path / "run", limit=1, depth=2, pairs="none", concurrency=1))
    assert res.manifest.status == "complete" and res.manifest.counts["direct"].records == 1


# --------------------------------------------------------------------------- a rerun that changes the job


def test_a_rerun_that_changes_the_job_is_refused_unless_extend(openai_server, tmp_path):
    out = tmp_path / "run"
    run(cfg(openai_server, out, depth=3, pairs="none"))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    n = len(openai_server.requests)
    with pytest.raises(ConfigError, match=r"holds a run asked with --depth 3; this command asks with --depth 5") as ei:
        run(cfg(openai_server, out, depth=5, pairs="none"))
    assert "--extend" in ei.value.hint and "rerun with --depth 3" in ei.value.hint
    assert len(openai_server.requests) == n
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    with pytest.raises(ConfigError, match=r"asked with --teacher openai/loopback, --pairs none; this command asks "
                                          r"with --teacher openai/other, --pairs adjacent"):
        run(cfg(openai_server, out, depth=3, teacher="openai/other"))
    res = run(cfg(openai_server, out, depth=5, pairs="none", extend=True))
    assert res.manifest.counts["direct"].records == 15 and len(openai_server.requests) == n + 3 * 2
    # the same job again resumes: nothing is asked
    run(cfg(openai_server, out, depth=5, pairs="none"))
    assert len(openai_server.requests) == n + 3 * 2


def test_cli_a_changed_depth_exits_2(openai_server, tmp_path, monkeypatch, capsys):
    args = ["generate", "-i", str(SAMPLE), "-o", str(tmp_path / "run"), "-t", "openai/loopback", "--api-base",
            openai_server.url, "--pairs", "none", "--limit", "1"]
    assert cli(monkeypatch, capsys, *args, "--depth", "2")[0] == 0
    code, _, err = cli(monkeypatch, capsys, *args, "--depth", "4")
    assert code == 2 and "would mix two jobs in one run" in " ".join(err.split())
    assert cli(monkeypatch, capsys, *args, "--depth", "4", "--extend")[0] == 0


# --------------------------------------------------------------------------- config.json holds what was used


def test_config_json_holds_the_resolved_values(openai_server, tmp_path):
    out = tmp_path / "run"
    res = run(cfg(openai_server, out, concurrency=None, timeout=None, max_retries=None, transport="auto",
                  pairs="none", limit=1))
    written = json.loads((out / "config.json").read_text())
    assert written["concurrency"] == 16 and written["timeout"] == 120.0 and written["max_retries"] == 5
    assert written["transport"] == "http" and written["api_key"] == "***"
    assert res.manifest.config == written


# --------------------------------------------------------------------------- progress in a log


def test_progress_reaches_a_log_as_lines(openai_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("R2R_PROGRESS_SECONDS", "0.05")
    openai_server.behaviour.latency = 0.06
    code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(SAMPLE), "-o", str(tmp_path / "run"), "-t",
                       "openai/loopback", "--api-base", openai_server.url, "--pairs", "none", "--depth", "3", "-c", "1")
    assert code == 0, err
    progress = [line for line in err.splitlines() if line.startswith("generate: ") and " requests (" in line]
    assert len(progress) >= 3, err
    assert progress[0].startswith("generate: 0/9 requests") and progress[-1].startswith("generate: 9/9 requests")
    assert "req/s" in progress[-1] and "elapsed" in progress[-1]
    assert "generate: reading " in err  # the start-up line before the input is read


# --------------------------------------------------------------------------- merge


def _shards(openai_server, tmp_path, **kw):
    dirs = []
    for i in range(2):
        d = tmp_path / f"s{i}"
        run(cfg(openai_server, d, shard=f"{i}/2", pairs="none", **kw))
        dirs.append(d)
    return dirs


def test_merge_warns_about_a_missing_shard(openai_server, tmp_path, monkeypatch, capsys):
    s0, _ = _shards(openai_server, tmp_path)
    code, _, err = cli(monkeypatch, capsys, "merge", str(tmp_path / "m"), str(s0))
    assert code == 0
    flat = " ".join(err.split())
    assert "warning: shard 1/2 of the 2-way split is missing: the merged run holds 1 of 2 shards' queries" in flat
    assert manifest(tmp_path / "m").extra["warnings"]


def test_merge_refuses_mixed_teachers_unless_asked_and_counts_questions_answered_twice(openai_server, tmp_path,
                                                                                      monkeypatch, capsys):
    a = tmp_path / "a"
    b = tmp_path / "b"
    run(cfg(openai_server, a, pairs="none", limit=1))
    run(cfg(openai_server, b, pairs="none", limit=1, teacher="openai/other"))
    with pytest.raises(ConfigError, match=r"made by 2 teachers \(openai/loopback, openai/other\)"):
        merge_runs(tmp_path / "m", [a, b])
    assert not (tmp_path / "m").exists()
    code, _, err = cli(monkeypatch, capsys, "merge", str(tmp_path / "m"), str(a), str(b), "--mixed-teachers")
    assert code == 0
    flat = " ".join(err.split())
    differ = sum(1 for x, y in zip(sorted(lines(a / "direct.jsonl"), key=lambda r: r["document"]["docid"]),
                                   sorted(lines(b / "direct.jsonl"), key=lambda r: r["document"]["docid"]))
                 if x["relevance"] != y["relevance"])
    assert "the merged run mixes 2 teachers: openai/loopback, openai/other" in flat
    assert (f"5 direct questions were answered more than once (by another teacher or program), {differ} of them "
            "with a different relevance") in flat
    m = manifest(tmp_path / "m")
    assert m.teacher == "mixed:openai/loopback,openai/other" and m.counts["direct"].records == 10


def test_merge_of_a_whole_split_warns_nothing(openai_server, tmp_path):
    m = merge_runs(tmp_path / "m", _shards(openai_server, tmp_path))
    assert m.extra["warnings"] == [] and m.counts["direct"].records == 15
