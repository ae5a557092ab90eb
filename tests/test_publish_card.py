"""The dataset card's provenance: the prompt text comes from the run's own program snapshots (never from
today's `prompts/`)."""

from __future__ import annotations

from pathlib import Path

from run_factory import make_run

from r2r_synth.config import GenerateConfig
from r2r_synth.generate import generate
from r2r_synth.publish import publish
from r2r_synth.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample_candidates.jsonl"
TODAYS_DIRECT_PROMPT = (REPO / "prompts" / "direct.md").read_text(encoding="utf-8").splitlines()[0]


def card(run: Path, out: Path, **kw) -> str:
    publish(run, repo_id="alice/r2r-demo", license="mit", dry_run=True, out=out, **kw)
    return (out / "README.md").read_text(encoding="utf-8")


def test_card_quotes_the_prompt_the_run_kept_not_todays_prompts(tmp_path):
    kept = "Grade the passage as the run's own prompt said.\nSecond line of that prompt."
    run = make_run(tmp_path / "run", queries=3, kinds=("direct", "comparison"), prompt_texts={"direct": kept})
    text = card(run, tmp_path / "hub")
    assert ("- **Prompt** `direct` (prompt hash `direct-pr0123`):\n\n  ```text\n"
            "  Grade the passage as the run's own prompt said.\n  Second line of that prompt.\n  ```") in text
    assert TODAYS_DIRECT_PROMPT not in text
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
    assert TODAYS_DIRECT_PROMPT not in text and "not kept in this run directory" not in text

