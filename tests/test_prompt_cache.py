"""Provider prompt caching: prefix-first prompts, cached tokens counted and priced from the usage
(OpenAI's `prompt_tokens_details`, Anthropic's cache reads and writes through LiteLLM), the
`cache_control` mark on the static prefix (loopback Anthropic Messages API), `--no-prompt-cache`,
`--prompt-cache` refused where nothing caches, an impossible cached count refused, `--price-in` /
`--price-out` pricing a self-hosted teacher, `--dry-run` with and without caching, and the lean
start (no LiteLLM import on the direct transport)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dspy
import pytest
from anthropic_server import AnthropicServer
from openai_server import OpenAIServer
from test_generate import KEY, cli, lines, manifest, run

from r2r_synth.config import GenerateConfig
from r2r_synth.errors import ConfigError, ProviderUsageError
from r2r_synth.generate.prompts import PromptPlan
from r2r_synth.schemas import Candidates, Document, Query
from r2r_synth.teacher.lm import make_teacher
from r2r_synth.teacher.programs import build_program, load_program, program_hash, save_program

REPO = Path(__file__).resolve().parents[1]
WORDS = ["river", "delta", "sediment", "tide", "estuary", "marsh", "channel", "flood", "plain", "salt"]


def programs_with_demos(path: Path, *, demos: int = 4) -> Path:
    """A programs dir whose direct program has `demos` long demos (a static prefix over 1,024 tokens)."""
    prog = build_program("direct")
    prog.predict.demos = [
        dspy.Example(query=f"how do {WORDS[i]}s form", document=" ".join(WORDS * 40) + f" demo {i}.",
                     reasoning="The passage explains the process the query asks about, step by step.",
                     relevance=i % 4, score=round((i % 4) / 3, 2))
        for i in range(demos)]
    save_program(prog, "direct", programs_dir=path, meta={"optimizer": "test"})
    return path


def candidates_file(path: Path, *, queries: int, depth: int) -> Path:
    rows = []
    for q in range(queries):
        docs = [Document(docid=f"d{q}-{d}", text=f"Passage {q}-{d}: " + " ".join(WORDS[(q + d + i) % 10]
                                                                             for i in range(40)))
                for d in range(depth)]
        rows.append(Candidates(query=Query(qid=f"q{q}", text=f"how does a {WORDS[q % 10]} form {q}"),
                               documents=docs).model_dump_json())
    path.write_text("\n".join(rows) + "\n")
    return path


def config(srv_url: str, out: Path, inp: Path, programs: Path, **kw) -> GenerateConfig:
    base = {"input": str(inp), "out": out, "teacher": "openai/loopback", "api_base": srv_url, "api_key": KEY,
            "depth": 10, "pairs": "none", "concurrency": 8, "programs_dir": programs, "transport": "http",
            "max_retries": 1, "timeout": 10}
    return GenerateConfig(**{**base, **kw})


def test_prompts_are_prefix_first_and_marking_leaves_the_program_hash(tmp_path):
    programs = programs_with_demos(tmp_path / "programs")
    prog = load_program("direct", programs_dir=programs)
    teacher = make_teacher("anthropic/claude-sonnet-4-5", api_key="sk-ant-x")
    assert teacher.cache_marking
    plan = PromptPlan(teacher=teacher, programs={"direct": prog})
    msgs = plan.messages("direct", {"query": "QUERY-TEXT", "document": "DOC-TEXT"})
    # instructions (system), the demos (user/assistant pairs), then the request: query before document
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * 4 + ["user"]
    assert plan.prefix_len("direct") == 9
    user = msgs[-1]["content"]
    assert user.index("QUERY-TEXT") < user.index("DOC-TEXT")
    other = plan.messages("direct", {"query": "OTHER", "document": "D2"})
    assert other[:9] == msgs[:9]  # the static prefix is byte-identical across requests
    wire = teacher.wire_messages(msgs, prefix=plan.prefix_len("direct"))
    assert wire[8]["content"] == [{"type": "text", "text": msgs[8]["content"], "cache_control": {"type": "ephemeral"}}]
    assert all(isinstance(m["content"], str) for i, m in enumerate(wire) if i != 8)
    assert msgs[8]["content"] == other[8]["content"]  # marking copies; the prompt itself is unchanged
    assert program_hash(prog.module) == prog.program_hash


def test_openai_cached_tokens_are_priced_at_the_cached_rate(tmp_path, monkeypatch, capsys):
    """20 queries x depth 10 against a server that reports cached tokens the way OpenAI does."""
    programs = programs_with_demos(tmp_path / "programs")
    inp = candidates_file(tmp_path / "cands.jsonl", queries=20, depth=10)
    out = tmp_path / "run"
    with OpenAIServer() as srv:
        code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(inp), "-o", str(out), "--teacher",
                                "openai/loopback", "--api-base", srv.url, "--depth", "10", "--pairs", "none",
                                "--programs-dir", str(programs), "--price-in", "2.5", "--price-out", "10",
                                "--price-cached-in", "1.25")
        usages = [r["usage"] for r in srv.requests]
    assert code == 0, err
    assert len(usages) == 200
    cached = sum((u.get("prompt_tokens_details") or {}).get("cached_tokens", 0) for u in usages)
    prompt = sum(u["prompt_tokens"] for u in usages)
    assert cached > 0.5 * prompt  # the demos are most of every prompt, and all but the first hit
    by_hand = sum(((u["prompt_tokens"] - (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0)) * 2.5
                   + (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0) * 1.25
                   + u["completion_tokens"] * 10) / 1e6 for u in usages)
    full = sum((u["prompt_tokens"] * 2.5 + u["completion_tokens"] * 10) / 1e6 for u in usages)
    m = manifest(out)
    assert m.cost == pytest.approx(by_hand, rel=1e-9)
    assert m.usage.cached_tokens == cached and m.usage.prompt_tokens == prompt
    assert m.extra["prompt_cache"]["saved"] == pytest.approx(full - by_hand, rel=1e-6)
    recs = lines(out / "direct.jsonl")
    assert sum(r["provenance"]["usage"]["cached_tokens"] for r in recs) == cached
    assert sum(r["provenance"]["cost"] for r in recs) == pytest.approx(by_hand, rel=1e-9)
    assert sum(r["provenance"]["cache_saved"] or 0 for r in recs) == pytest.approx(full - by_hand, rel=1e-6)
    assert sum(json.loads(x).get("cached_tokens", 0) for x in (out / "journal.jsonl").read_text().splitlines()) \
        == cached
    share = 100 * cached / prompt
    assert f"prompt cache: {share:.1f} % of input tokens served from cache" in err
    assert f"${full - by_hand:.4f} saved" in err
    saved_config = json.loads((out / "config.json").read_text())
    assert (saved_config["price_in"], saved_config["price_out"], saved_config["price_cached_in"]) == (2.5, 10, 1.25)
    # the report and the dataset card say the same, from the records
    line = f"{share:.1f} % of input tokens served from cache ({cached:,} of {prompt:,}), ${full - by_hand:.4f} saved"
    from r2r_synth.publish import publish
    from r2r_synth.report.page import build_report

    build_report(out, out=tmp_path / "report", samples=0)
    assert line in (tmp_path / "report" / "report.html").read_text()
    publish(out, repo_id="alice/r2r-demo", license="mit", dry_run=True, out=tmp_path / "card")
    assert f"**Prompt cache:** {line}" in (tmp_path / "card" / "README.md").read_text()


@pytest.mark.parametrize("flag", [None, False])
def test_anthropic_requests_mark_the_static_prefix_unless_no_prompt_cache(tmp_path, flag):
    programs = programs_with_demos(tmp_path / "programs")
    inp = candidates_file(tmp_path / "cands.jsonl", queries=2, depth=3)
    out = tmp_path / "run"
    with AnthropicServer() as srv:
        res = run(config(srv.url, out, inp, programs, teacher="anthropic/claude-sonnet-4-5", depth=3,
                         transport="auto", prompt_cache=flag, concurrency=4))
        asked = [n for n, body in enumerate(srv.requests) if body.get("max_tokens") != 1]  # not the preflight
        marks = [srv.marked(n) for n in asked]
        usages = [srv.usages[n] for n in asked]
    assert len(asked) == 6
    if flag is None:
        # the last demo (an assistant turn) closes the static prefix: that is where the mark goes
        assert marks == [["message 7 (assistant)"]] * 6
        # the first request goes alone and writes the prefix once; the others, sent together, read it
        assert usages[0]["cache_creation_input_tokens"] > 1024 and usages[0]["cache_read_input_tokens"] == 0
        assert all(u["cache_read_input_tokens"] == usages[0]["cache_creation_input_tokens"] for u in usages[1:])
        m = res.manifest
        assert m.usage.cached_tokens == sum(u["cache_read_input_tokens"] for u in usages)
        assert m.usage.cache_write_tokens == usages[0]["cache_creation_input_tokens"]
        assert m.extra["prompt_cache"]["marked"] and m.extra["prompt_cache"]["saved"] > 0
        # LiteLLM priced the reads and the write at Claude's cache rates: cheaper than all at the full rate
        import litellm

        info = litellm.get_model_info("anthropic/claude-sonnet-4-5")
        full = sum((u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"])
                   * info["input_cost_per_token"] + u["output_tokens"] * info["output_cost_per_token"] for u in usages)
        assert m.cost == pytest.approx(full - m.extra["prompt_cache"]["saved"], rel=1e-6)
    else:
        assert marks == [[]] * 6
        assert all(u["cache_read_input_tokens"] == u["cache_creation_input_tokens"] == 0 for u in usages)
        assert not res.manifest.extra["prompt_cache"]["marked"]


def test_prompt_cache_asked_of_a_teacher_that_cannot_cache_exits_2_writing_nothing(openai_server, tmp_path,
                                                                                  monkeypatch, capsys):
    out = tmp_path / "run"
    code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(REPO / "examples" / "sample_candidates.jsonl"),
                       "-o", str(out), "--teacher", "openai/loopback", "--api-base", openai_server.url,
                       "--prompt-cache")
    assert code == 2
    assert "--prompt-cache: 'openai/loopback'" in err and "cannot cache prompts" in " ".join(err.split())
    assert not out.exists() and openai_server.requests == []
    with pytest.raises(ConfigError, match="the embedded teacher cannot cache prompts"):
        run(GenerateConfig(input=str(REPO / "examples" / "sample_candidates.jsonl"), out=tmp_path / "e",
                           prompt_cache=True, dry_run=True))


def test_a_cached_count_larger_than_the_prompt_stops_the_run_with_exit_2(openai_server, tmp_path):
    inp = candidates_file(tmp_path / "cands.jsonl", queries=1, depth=3)
    out = tmp_path / "run"
    openai_server.script("Passage 0-1", {"cached_tokens": 10**7})
    with pytest.raises(ProviderUsageError, match=r"reported 10,000,000 cached \+ 0 cache-written input tokens "
                                                 r"for a prompt of [\d,]+ tokens: a provider or proxy bug") as ei:
        run(config(openai_server.url, out, inp, REPO / "programs", depth=3, concurrency=1))
    assert ei.value.exit_code == 2
    recs = lines(out / "direct.jsonl")
    assert "d0-1" not in {r["document"]["docid"] for r in recs}  # nothing of that reply was kept
    journal = [json.loads(x) for x in (out / "journal.jsonl").read_text().splitlines()]
    assert all(e.get("cached_tokens", 0) < 10**7 for e in journal)
    assert manifest(out).status == "failed"


def test_price_flags_price_a_self_hosted_teacher_and_max_cost_stops_at_the_cap(openai_server, tmp_path,
                                                                              monkeypatch, capsys):
    inp = candidates_file(tmp_path / "cands.jsonl", queries=10, depth=10)
    out = tmp_path / "run"
    code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(inp), "-o", str(out), "--teacher", "openai/fake",
                       "--api-base", openai_server.url, "--pairs", "none", "--price-in", "1", "--price-out", "2",
                       "--max-cost", "0.01", "--concurrency", "2")
    assert code == 3, err
    assert "stopped at the budget" in err
    journal = [json.loads(x) for x in (out / "journal.jsonl").read_text().splitlines()]
    replies = [e for e in journal if e["t"] == "reply"]
    by_hand = sum(e["prompt_tokens"] * 1e-6 + e["completion_tokens"] * 2e-6 for e in replies)
    m = manifest(out)
    assert 0 < len(replies) < 100 and m.status == "stopped_budget"
    assert m.cost == pytest.approx(by_hand, rel=1e-9) and m.cost <= 0.01
    assert json.loads((out / "config.json").read_text())["price_in"] == 1
    assert m.extra["teacher"]["prices"]["source"] == "command line"


def test_price_flags_need_both(tmp_path):
    with pytest.raises(ConfigError, match="--price-out is missing"):
        run(GenerateConfig(input=str(REPO / "examples" / "sample_candidates.jsonl"), out=tmp_path / "r",
                           teacher="openai/x", api_base="http://127.0.0.1:9/v1", price_in=1.0, dry_run=True))


def test_dry_run_estimates_with_and_without_caching(tmp_path, monkeypatch, capsys):
    programs = programs_with_demos(tmp_path / "programs")
    inp = candidates_file(tmp_path / "cands.jsonl", queries=20, depth=10)
    code, _, err = cli(monkeypatch, capsys, "generate", "-i", str(inp), "-o", str(tmp_path / "run"), "--teacher",
                       "openai/gpt-4o", "--pairs", "none", "--programs-dir", str(programs), "--dry-run")
    assert code == 0, err
    flat = " ".join(err.split())
    assert "static prefix per call" in flat and "cost with prompt caching" in flat
    res = run(GenerateConfig(input=str(inp), out=tmp_path / "run", teacher="openai/gpt-4o", pairs="none",
                             programs_dir=programs, dry_run=True))
    est = res.estimate
    assert est.prefix_tokens["direct"] > 1024
    assert est.cached_tokens == est.prefix_tokens["direct"] * 199
    assert est.cost_with_cache is not None and est.cost is not None and est.cost_with_cache < est.cost
    # --prompt-cache is accepted for a model whose provider caches (the cost map prices its cached input)
    asked = run(GenerateConfig(input=str(inp), out=tmp_path / "run", teacher="openai/gpt-4o", pairs="none",
                               programs_dir=programs, dry_run=True, prompt_cache=True))
    assert asked.estimate.cached_tokens == est.cached_tokens
    assert not (tmp_path / "run").exists()


def test_the_direct_transport_reaches_its_requests_without_importing_litellm(openai_server, tmp_path):
    """A lean start: a self-hosted endpoint, prices from the command line."""
    code = f"""
import sys
from r2r_synth.config import GenerateConfig
from r2r_synth.generate import generate
res = generate(GenerateConfig(input={str(REPO / "examples" / "sample_candidates.jsonl")!r}, out={str(tmp_path / "run")!r},
               teacher="hosted_vllm/loopback", api_base={openai_server.url!r}, depth=2, pairs="none",
               price_in=1.0, price_out=2.0))
assert res.manifest.status == "complete", res.manifest.status
print("litellm" in sys.modules, res.manifest.cost)
"""
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    imported, cost = proc.stdout.split()
    assert imported == "False" and float(cost) > 0


def test_read_usage_reads_each_providers_cached_counts_and_refuses_impossible_ones():
    from litellm.types.utils import PromptTokensDetailsWrapper, Usage

    from r2r_synth.teacher.usage import read_usage

    # OpenAI on the wire (the direct transport)
    u = read_usage({"prompt_tokens": 2000, "completion_tokens": 50,
                    "prompt_tokens_details": {"cached_tokens": 1536}}, teacher="t")
    assert (u.prompt, u.completion, u.cached, u.cache_write) == (2000, 50, 1536, 0)
    # Gemini's cachedContentTokenCount and OpenAI's, as LiteLLM hands them over
    u = read_usage(Usage(prompt_tokens=3000, completion_tokens=10,
                         prompt_tokens_details=PromptTokensDetailsWrapper(cached_tokens=2048)), teacher="t")
    assert (u.cached, u.cache_write) == (2048, 0)
    # Anthropic through LiteLLM: reads and writes, both inside prompt_tokens
    u = read_usage(Usage(prompt_tokens=5000, completion_tokens=10, cache_read_input_tokens=1200,
                         cache_creation_input_tokens=3000), teacher="t")
    assert (u.prompt, u.cached, u.cache_write) == (5000, 1200, 3000)
    with pytest.raises(ProviderUsageError, match=r"reported 4,000 cached \+ 0 cache-written input tokens for a "
                                                 r"prompt of 3,000 tokens"):
        read_usage({"prompt_tokens": 3000, "prompt_tokens_details": {"cached_tokens": 4000}}, teacher="t")
