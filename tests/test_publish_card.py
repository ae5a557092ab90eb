"""The dataset card's provenance: the prompt text comes from the run's own program snapshots (never from
today's `prompts/`), and the card names no folder of the publisher's machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from run_factory import TEACHER, make_run

from r2r_synth.config import GenerateConfig
from r2r_synth.errors import InputError
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


# ----------------------------------------------------------------------------- what the card says


def card_meta(text: str) -> dict:
    import yaml

    return yaml.safe_load(text.split("---\n")[1])


def test_card_lists_the_columns_as_published(tmp_path):
    """Per config, the card's column table is the Parquet files' own schema: names, types, in order, and
    every column has a meaning."""
    import pyarrow.parquet as pq

    run = make_run(tmp_path / "run", queries=4, kinds=("direct", "comparison", "listwise"))
    text = card(run, tmp_path / "hub")
    for kind in ("direct", "comparison", "listwise"):
        section = text.split(f"### Columns of `{kind}`\n\n", 1)[1].split("\n\n", 1)[0]
        rows = [line.split(" | ") for line in section.splitlines()[2:]]
        (shard,) = (tmp_path / "hub" / "data" / kind).glob("*.parquet")
        schema = pq.read_schema(shard)
        assert [r[0].strip("| `") for r in rows] == schema.names
        assert all(r[2].strip(" |") for r in rows)  # a meaning for every column
        types = {r[0].strip("| `"): r[1].strip("`") for r in rows}
        assert types["qid"] == "string" and types.get("cost") == "double"
    assert types["gold"] == "list<struct<docid: string, grade: int64>>"
    assert "| `swap_agrees` | `bool` | whether both orders prefer the same document" in text
    assert "| `relevance` | `int64` | the teacher's graded label, 0 (not relevant) to 3" in text


def test_language_and_source_datasets(tmp_path):
    run = make_run(tmp_path / "run", queries=3, kinds=("direct",))
    meta = card_meta(card(run, tmp_path / "a"))
    assert meta["language"] == ["en"] and meta["multilinguality"] == "monolingual"
    assert "source_datasets" not in meta  # a local file names no dataset
    text = card(run, tmp_path / "b", language=["de", "en"], source_datasets=["msmarco-passage"])
    meta = card_meta(text)
    assert meta["language"] == ["de", "en"] and meta["multilinguality"] == "multilingual"
    assert meta["source_datasets"] == ["msmarco-passage"]
    assert "**Language:** `de`, `en`. **Source datasets:** `msmarco-passage`." in text
    with pytest.raises(InputError, match=r"--language 'English' is not an ISO 639 language code"):
        card(run, tmp_path / "c", language=["English"])
    assert not (tmp_path / "c").exists()

    # The run's own provenance: an irds: input, and for a run `filter` wrote, its parent's input.
    m = json.loads((run / "manifest.json").read_text())
    m["config"] = {"input": "irds:msmarco-passage/trec-dl-2019/judged", "out": "run"}
    (run / "manifest.json").write_text(json.dumps(m))
    assert card_meta(card(run, tmp_path / "d"))["source_datasets"] == ["irds:msmarco-passage/trec-dl-2019/judged"]
    m["config"] = {"run_dir": "parent", "out": "run"}
    m["extra"] = {"filter": {"parent": {"command": "r2r-synth generate -i irds:beir/scifact/train --teacher x -o p"}}}
    (run / "manifest.json").write_text(json.dumps(m))
    assert card_meta(card(run, tmp_path / "e"))["source_datasets"] == ["irds:beir/scifact/train"]


def test_an_imported_corpus_names_the_r2r_release(tmp_path, r2r_corpus):
    from r2r_synth.importer import import_r2r

    import_r2r([r2r_corpus / "msmarco_100.jsonl"], out=tmp_path / "r2r")
    text = card(tmp_path / "r2r", tmp_path / "hub")
    assert card_meta(text)["source_datasets"] == ["Reason-to-Rank (R2R) release: msmarco_100.jsonl"]
    assert "- **Tokens:** not recorded (the records carry no token usage)" in text
    assert "0 prompt + 0 completion" not in text
    assert "mean Kendall tau +0.29" in text and "Position bias: the teacher's ranks follow the order" in text


def test_a_constant_teacher_is_never_quoted_without_saying_so(tmp_path):
    """The embedded teacher's shape: every passage graded 3, the passage shown first always preferred.
    Every agreement figure stands beside the label distribution and what a constant answer scores."""
    run = make_run(tmp_path / "run", queries=8, kinds=("direct", "comparison"), label=3, prefer_first=True,
                   teacher="embedded/smollm2-135m-instruct")
    text = card(run, tmp_path / "hub")
    assert "- **Teacher labels (0–3):** 3: 32 (grade 3 for 32 of 32, 100%) — **the labels are (nearly) constant**" in text
    lines = [line for line in text.splitlines() if "binary accuracy" in line]
    assert lines and all("constant" in line for line in lines)
    agreement = next(line for line in lines if line.startswith("- **Agreement with gold**"))
    acc = float(agreement.split("binary accuracy (grade ≥ 2 = relevant) ")[1].split()[0])
    assert f"(a constant grade 3 scores {acc:.3f})" in agreement  # the teacher scores what a constant scores
    assert "Constant label: the teacher gave grade 3 to every passage." in text
    assert "Position bias: in 48 of 48 answers (100%) the teacher preferred the passage shown first" in text
    assert "always answering A scores" in text


def optimize_report(path: Path, *, hash_before: str, hash_after: str | None, teacher: str = TEACHER,
                    evaluate_only: bool = False) -> Path:
    """An optimize report as `r2r-synth optimize` writes it (see r2r_synth.optimize.report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "evaluate_only": evaluate_only, "optimizer": None if evaluate_only else "mipro", "teacher": teacher,
        "programs": {"direct": {
            "name": "direct", "primary_metric": "ndcg@10", "before": {"ndcg@10": 0.41},
            "after": None if evaluate_only else {"ndcg@10": 0.57}, "program_hash_before": hash_before,
            "program_hash_after": hash_after, "train_examples": 30, "val_examples": 12}},
    }))
    return path


USED = "direct-ph0123456789"  # the program hash run_factory's direct records carry


@pytest.mark.parametrize(("kw", "quoted", "note"), [
    ({"hash_before": "0000", "hash_after": USED}, "ndcg@10 0.410 -> 0.570; this run used the optimized program", None),
    ({"hash_before": USED, "hash_after": "1111"}, "this run used the program as it was before (the first figure)",
     None),
    ({"hash_before": "0000", "hash_after": USED, "teacher": "openai/gpt-4o"},
     "teacher `openai/gpt-4o` (not this run's teacher, `openai/gpt-4o-mini`)", None),
    ({"hash_before": USED, "hash_after": None, "evaluate_only": True},
     "**Evaluated** by `r2r-synth optimize --evaluate-only` with teacher `openai/gpt-4o-mini`", None),
    ({"hash_before": "0000", "hash_after": "1111"}, None,
     "is about other programs (direct 1111) than the ones this run used"),
    ({"hash_before": USED, "hash_after": None, "evaluate_only": True, "teacher": "openai/gpt-4o"}, None,
     "is an `optimize --evaluate-only` report of teacher openai/gpt-4o, not of this run's teacher"),
])
def test_an_optimize_report_is_quoted_only_when_it_belongs_to_the_run(tmp_path, kw, quoted, note):
    run = make_run(tmp_path / "run", queries=3, kinds=("direct", "comparison"))
    report = optimize_report(tmp_path / "programs" / "optimize_report.json", **kw)
    res = publish(run, repo_id="alice/r2r-demo", license="mit", dry_run=True, out=tmp_path / "hub",
                  optimize_report=report)
    text = (tmp_path / "hub" / "README.md").read_text()
    if quoted:
        assert quoted in text and res.optimize_report == report and res.optimize_note is None
        # Quoted in the config whose program it scored only.
        assert text.count("<summary>Optimize report (optimize_report.json)</summary>") == 1
    else:
        assert res.optimize_report is None and note in res.optimize_note
        assert "ndcg@10" not in text and "Optimize report" not in text


def test_a_report_without_program_hashes_is_left_out(tmp_path):
    run = make_run(tmp_path / "run", queries=3, kinds=("direct",))
    report = tmp_path / "optimize_report.json"
    report.write_text(json.dumps({"direct": {"metric_before": 0.41, "metric_after": 0.57}}))
    res = publish(run, repo_id="alice/r2r-demo", license="mit", dry_run=True, out=tmp_path / "hub",
                  optimize_report=report)
    assert "holds no program hashes (it is not a report written by `r2r-synth optimize`)" in res.optimize_note
    assert "metric_after" not in (tmp_path / "hub" / "README.md").read_text()


def test_cli_says_why_the_default_optimize_report_is_left_out(tmp_path):
    """`optimize --evaluate-only` against another teacher left programs/optimize_report.json behind; the
    embedded teacher's run is published from the same folder: the card does not quote it, and the CLI
    says why, and which language and source datasets the card names."""
    make_run(tmp_path / "run", queries=3, kinds=("direct",), teacher="embedded/smollm2-135m-instruct")
    optimize_report(tmp_path / "programs" / "optimize_report.json", hash_before=USED, hash_after=None,
                    evaluate_only=True, teacher="openai/gpt-4o")
    proc = subprocess.run([sys.executable, "-m", "r2r_synth.cli", "publish", "run", "--repo-id", "alice/x",
                           "--license", "mit", "--dry-run", "--out", "hub"], cwd=tmp_path, check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert ("optimize report left out of the card: optimize_report.json is an `optimize --evaluate-only` report "
            "of teacher openai/gpt-4o, not of this run's teacher (embedded/smollm2-135m-instruct)") in proc.stderr
    assert "language: en (the default; --language sets it)" in proc.stdout
    assert "source datasets: none known" in proc.stdout
    assert "ndcg@10" not in (tmp_path / "hub" / "README.md").read_text()
    proc = subprocess.run([sys.executable, "-m", "r2r_synth.cli", "publish", "run", "--repo-id", "alice/x",
                           "--license", "mit", "--dry-run", "--out", "hub2", "--language", "en_US"], cwd=tmp_path,
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "not an ISO 639 language code" in proc.stderr
    assert not (tmp_path / "hub2").exists()


def test_card_names_no_teacher_host_and_says_what_was_read(tmp_path):
    run = make_run(tmp_path / "run", queries=3, kinds=("direct",))
    m = json.loads((run / "manifest.json").read_text())
    m["command"] = ("r2r-synth generate -i data/scifact --split train -o run -t hosted_vllm/qwen "
                    "--api-base http://gpu-17.lab.internal:8000/v1 --prompt-api-base=https://10.1.2.3/v1")
    m["config"] = {"input": "data/scifact", "api_base": "http://gpu-17.lab.internal:8000/v1",
                   "read": {"split": "train", "queries": [f"{tmp_path}/data/scifact/queries.train.jsonl"],
                            "qrels": ["data/scifact/qrels.train.tsv"]}}
    (run / "manifest.json").write_text(json.dumps(m))
    text = card(run, tmp_path / "hub", command="r2r-synth publish run --repo-id alice/x --license mit "
                                               "--api-base http://gpu-17.lab.internal:8000/v1")
    assert "gpu-17" not in text and "lab.internal" not in text and "10.1.2.3" not in text and "api-base" not in text
    assert "`r2r-synth generate -i data/scifact --split train -o run -t hosted_vllm/qwen`" in text
    assert ("- **Read:** split `train`; queries `.../queries.train.jsonl`; qrels `data/scifact/qrels.train.tsv`"
            in text)
    assert str(tmp_path) not in text
