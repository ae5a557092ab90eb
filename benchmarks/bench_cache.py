"""Prompt-caching bars of `generate` (each a pass/fail check on real runs; figures in a table):

1. **OpenAI-style cached tokens**: a 20-query x depth-10 direct job with an optimized program whose
   demos make a static prefix over 1,024 tokens, against the loopback server reporting
   `prompt_tokens_details.cached_tokens` as OpenAI does, priced with `--price-in 2.5 --price-out 10
   --price-cached-in 1.25` (USD per million tokens: gpt-4o's list prices). Bar: the recorded spend
   equals the cost computed by hand from the server's own usage log at the cached price, and the
   summary prints the cached share.
2. **Anthropic `cache_control`**: through LiteLLM's `anthropic/` route against a loopback Messages
   API. Bar: every request carries `cache_control` on the last static-prefix message by default,
   none with `--no-prompt-cache`; the cache reads and the write are counted.
3. **`--dry-run`** on the optimized program (teacher gpt-4o, priced by LiteLLM's cost map). Bar: both
   estimates are printed, the cached one below the uncached one.
4. **`--price-in 1 --price-out 2 --max-cost 0.01`** on `openai/fake`: bar: exit 3, and the spend in
   the manifest equals the journal's tokens at those prices and is within the cap.

    .venv/bin/python benchmarks/bench_cache.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import dspy
from anthropic_server import AnthropicServer
from openai_server import spawn_server

from r2r_synth.config import GenerateConfig
from r2r_synth.generate import generate
from r2r_synth.schemas import Candidates, Document, Manifest, Query
from r2r_synth.teacher.programs import build_program, save_program

WORDS = ["river", "delta", "sediment", "tide", "estuary", "marsh", "channel", "flood", "plain", "salt"]


def optimized_programs(path: Path) -> Path:
    prog = build_program("direct")
    prog.predict.demos = [
        dspy.Example(query=f"how do {WORDS[i]}s form", document=" ".join(WORDS * 40) + f" demo {i}.",
                     reasoning="The passage explains the process the query asks about, step by step.",
                     relevance=i % 4, score=round((i % 4) / 3, 2)) for i in range(4)]
    save_program(prog, "direct", programs_dir=path, meta={"optimizer": "bench"})
    return path


def candidates(path: Path, *, queries: int, depth: int) -> Path:
    rows = []
    for q in range(queries):
        docs = [Document(docid=f"d{q}-{d}", text=f"Passage {q}-{d}: " + " ".join(WORDS[(q + d + i) % 10]
                                                                             for i in range(40)))
                for d in range(depth)]
        rows.append(Candidates(query=Query(qid=f"q{q}", text=f"how does a {WORDS[q % 10]} form {q}"),
                               documents=docs).model_dump_json())
    path.write_text("\n".join(rows) + "\n")
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "r2r_synth.cli", *args], capture_output=True, text=True,
                          check=False, env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"})


def manifest(out: Path) -> Manifest:
    return Manifest.model_validate_json((out / "manifest.json").read_text())


def bar_openai(tmp: Path, programs: Path, rows: list[tuple[str, str, bool]]) -> None:
    inp = candidates(tmp / "c20.jsonl", queries=20, depth=10)
    log = tmp / "openai.log"
    out = tmp / "openai"
    with spawn_server(log_path=str(log)) as url:
        proc = cli("generate", "-i", str(inp), "-o", str(out), "--teacher", "openai/loopback", "--api-base", url,
                   "--pairs", "none", "--programs-dir", str(programs), "--price-in", "2.5", "--price-out", "10",
                   "--price-cached-in", "1.25")
    usages = [json.loads(x)["usage"] for x in log.read_text().splitlines() if '"reply"' in x]
    cached = sum((u.get("prompt_tokens_details") or {}).get("cached_tokens", 0) for u in usages)
    prompt = sum(u["prompt_tokens"] for u in usages)
    by_hand = sum(((u["prompt_tokens"] - (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0)) * 2.5
                   + (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0) * 1.25
                   + u["completion_tokens"] * 10) / 1e6 for u in usages)
    full = sum((u["prompt_tokens"] * 2.5 + u["completion_tokens"] * 10) / 1e6 for u in usages)
    m = manifest(out)
    summary = next((line for line in proc.stderr.splitlines() if line.startswith("prompt cache:")), "")
    rows += [
        ("openai: requests / prompt tokens / cached",
         f"{len(usages)} / {prompt:,} / {cached:,} ({100 * cached / prompt:.1f} %)", True),
        ("openai: recorded spend vs by hand (cached price)", f"${m.cost:.6f} vs ${by_hand:.6f}",
         proc.returncode == 0 and abs(m.cost - by_hand) <= 1e-9 * by_hand),
        ("openai: at full input price / saved", f"${full:.6f} / ${full - by_hand:.6f}", True),
        ("openai: summary line", summary or "(missing)", f"{100 * cached / prompt:.1f} %" in summary),
    ]


def bar_anthropic(tmp: Path, programs: Path, rows: list[tuple[str, str, bool]]) -> None:
    inp = candidates(tmp / "c3.jsonl", queries=3, depth=4)
    for flag in (None, False):
        with AnthropicServer() as srv:
            res = generate(GenerateConfig(input=str(inp), out=tmp / f"anthropic-{flag}", teacher="anthropic/"
                                          "claude-sonnet-4-5", api_base=srv.url, api_key="sk-ant-bench", depth=4,
                                          pairs="none", programs_dir=programs, concurrency=1, prompt_cache=flag))
            asked = [n for n, b in enumerate(srv.requests) if b.get("max_tokens") != 1]  # not the preflight
            marked = sum(1 for n in asked if srv.marked(n))
        u = res.manifest.usage
        name = "--no-prompt-cache" if flag is False else "default"
        ok = marked == len(asked) if flag is None else marked == 0
        rows.append((f"anthropic {name}: requests marked", f"{marked} of {len(asked)}", ok and len(asked) == 12))
        rows.append((f"anthropic {name}: cache read / written tokens, cost",
                     f"{u.cached_tokens:,} / {u.cache_write_tokens:,}, ${res.manifest.cost:.6f}",
                     (u.cached_tokens > 0) == (flag is None)))


def bar_dry_run(tmp: Path, programs: Path, rows: list[tuple[str, str, bool]]) -> None:
    inp = candidates(tmp / "c100.jsonl", queries=100, depth=10)
    proc = cli("generate", "-i", str(inp), "-o", str(tmp / "dry"), "--teacher", "openai/gpt-4o", "--pairs", "none",
               "--programs-dir", str(programs), "--dry-run")
    res = generate(GenerateConfig(input=str(inp), out=tmp / "dry", teacher="openai/gpt-4o", pairs="none",
                                  programs_dir=programs, dry_run=True))
    e = res.estimate
    shown = "cost with prompt caching" in proc.stderr and "static prefix per call" in proc.stderr
    figure = f"{e.prefix_tokens['direct']:,} / {e.cached_tokens:,} of {e.prompt_tokens:,}"
    rows.append(("dry run (gpt-4o, 100 x 10): prefix / cached tokens", figure, True))
    rows.append(("dry run: cost without / with caching", f"${e.cost:.4f} / ${e.cost_with_cache:.4f}",
                 proc.returncode == 0 and shown and e.cost_with_cache < e.cost))


def bar_price_flags(tmp: Path, rows: list[tuple[str, str, bool]]) -> None:
    inp = candidates(tmp / "c10.jsonl", queries=10, depth=10)
    out = tmp / "capped"
    with spawn_server() as url:
        proc = cli("generate", "-i", str(inp), "-o", str(out), "--teacher", "openai/fake", "--api-base", url,
                   "--pairs", "none", "--price-in", "1", "--price-out", "2", "--max-cost", "0.01",
                   "--concurrency", "2")
    replies = [e for e in map(json.loads, (out / "journal.jsonl").read_text().splitlines()) if e["t"] == "reply"]
    by_hand = sum(e["prompt_tokens"] * 1e-6 + e["completion_tokens"] * 2e-6 for e in replies)
    m = manifest(out)
    rows.append(("--price-in 1 --price-out 2 --max-cost 0.01: exit, requests",
                 f"exit {proc.returncode}, {len(replies)} of 100", proc.returncode == 3))
    rows.append(("  spend recorded vs by hand", f"${m.cost:.6f} vs ${by_hand:.6f}",
                 abs(m.cost - by_hand) <= 1e-12 + 1e-9 * by_hand and m.cost <= 0.01))


def main() -> int:
    rows: list[tuple[str, str, bool]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        programs = optimized_programs(tmp / "programs")
        bar_openai(tmp, programs, rows)
        bar_anthropic(tmp, programs, rows)
        bar_dry_run(tmp, programs, rows)
        bar_price_flags(tmp, rows)
    width = max(len(r[0]) for r in rows)
    print("\nprompt caching and prices")
    for name, figure, ok in rows:
        print(f"{name:{width}s}  {figure:60s}  {'PASS' if ok else 'FAIL'}")
    ok = all(r[2] for r in rows)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
