"""The dataset card's provenance: the prompt text comes from the run's own program snapshots (never from
today's `prompts/`), and the card names no folder of the publisher's machine."""

from __future__ import annotations

import json
from pathlib import Path

from run_factory import make_run

from r2r_synth.config import GenerateConfig
from r2r_synth.generate import generate
from r2r_synth.publish import publish
from r2r_synth.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample_candidates.jsonl"


def todays_direct_prompt() -> str:
    """The first line of the direct prompt as the package reads it now (from its prompts/ folder)."""
    from r2r_synth.teacher.programs import build_program

    return build_program("direct").predict.signature.instructions.splitlines()[0]


def card(run: Path, out: Path, **kw) -> str:
    publish(run, repo_id="alice/r2r-demo", license="mit", dry_run=True, out=out, **kw)
    return (out / "README.md").read_text(encoding="utf-8")


def test_card_quotes_the_prompt_the_run_kept_not_todays_prompts(tmp_path):
    kept = "Grade the passage as the run's own prompt said.\nSecond line of that prompt."
    run = make_run(tmp_path / "run", queries=3, kinds=("direct", "comparison"), prompt_texts={"direct": kept})
    text = card(run, tmp_path / "hub")
    assert ("- **Prompt** `direct` (prompt hash `direct-pr0123`):\n\n  ```text\n"
            "  Grade the passage as the run's own prompt said.\n  Second line of that prompt.\n  ```") in text
    assert todays_direct_prompt() not in text
    # No snapshot for the comparison program's prompt hash (an old run): the hash, and why no text.
    assert ("- **Prompt** `comparison`: prompt hash `comparison-pr0123` (its text is not kept in this run "
            "directory: the run was written before runs kept program snapshots, or was imported)") in text


def test_a_generated_run_publishes_the_optimized_instructions_it_used(openai_server, tmp_path):
    from r2r_synth.teacher.programs import build_program, save_program

    optimized = build_program("direct")
    optimized.predict.signature = optimized.predict.signature.with_instructions(
        "Optimized: grade how well the passage answers the query.")
    programs = tmp_path / "programs"
    save_program(optimized, "direct", programs_dir=programs)
    run = tmp_path / "run"
    generate(GenerateConfig(input=str(SAMPLE), out=run, teacher="openai/loopback", api_base=openai_server.url,
                            api_key="sk-test-secret-0123456789", depth=2, pairs="none", programs_dir=programs,
                            transport="litellm", max_retries=1, timeout=10), backoff_base=0.01, backoff_cap=0.05)
    (snap,) = RunDir(run).program_snapshots()
    # `publish` is not told where the program came from: the run directory is enough.
    text = card(run, tmp_path / "hub")
    assert f"(prompt hash `{snap.prompt_hash}`):\n\n  ```text\n  Optimized: grade how well" in text
    assert todays_direct_prompt() not in text and "not kept in this run directory" not in text


def test_card_names_no_local_absolute_path(tmp_path):
    """The manifest (written by an older r2r-synth), the optimize report and an import's sources hold
    absolute paths of this machine; the card shows file names, never the folders."""
    home = Path.home()
    run = make_run(tmp_path / "run", queries=4, kinds=("direct",))
    m = json.loads((run / "manifest.json").read_text())
    m["command"] = (f"r2r-synth generate --input {tmp_path}/data/dl19.json --qrels={home}/qrels/dl19.txt "
                    f"--out '{run}/with space' --teacher openai/gpt-4o-mini")
    m["config"] = {"input": f"{tmp_path}/data/dl19.json", "out": str(run), "programs_dir": f"{home}/programs"}
    m["extra"] = {"provenance": "imported", "sources": [{"path": f"{tmp_path}/r2r/msmarco_100.jsonl",
                                                         "sha256": "ab" * 32, "records": 16, "rejects": 0}]}
    (run / "manifest.json").write_text(json.dumps(m))
    report = tmp_path / "programs" / "optimize_report.json"
    report.parent.mkdir()
    report.write_text(json.dumps({
        "optimizer": "mipro", "labeled_set": {"path": f"{tmp_path}/labeled.jsonl"},
        "config": {"programs_dir": f"{home}/programs", "command": f"r2r-synth optimize --labeled {tmp_path}/l.jsonl"},
        "programs": {"direct": {"primary_metric": "ndcg@10", "before": {"ndcg@10": 0.4}, "after": {"ndcg@10": 0.5},
                                "program_hash_after": "direct-ph0123456789", "path": f"{home}/programs/direct.json"}},
    }))
    text = card(run, tmp_path / "hub", optimize_report=report,
                command="r2r-synth publish run --repo-id alice/r2r-demo --license mit --dry-run --out hub")
    for local in {str(tmp_path), str(tmp_path.resolve()), str(home)}:
        assert local not in text, local
    assert ("`r2r-synth generate --input .../dl19.json --qrels=.../dl19.txt --out '.../with space' "
            "--teacher openai/gpt-4o-mini`") in text
    assert "`msmarco_100.jsonl` (sha256 `abababababab`)" in text
    assert "Optimize report (optimize_report.json)" in text and '"path": ".../direct.json"' in text
    assert '"command": "r2r-synth optimize --labeled .../l.jsonl"' in text
    assert "`r2r-synth publish run --repo-id alice/r2r-demo --license mit --dry-run --out hub`" in text
