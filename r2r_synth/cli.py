"""The `r2r-synth` command line: thin commands, one library call each. This is the one place
errors become exit codes (library code raises `R2RError`; `main` prints it and exits)."""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from r2r_synth.errors import R2RError

app = typer.Typer(
    name="r2r-synth",
    help="Distill an LLM's reasoning about relevance into a small, explainable reranker (Reason-to-Rank).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


# ----------------------------------------------------------------- shared option aliases

Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")]
InputOpt = Annotated[
    str,
    typer.Option(
        "--input",
        "-i",
        help="Candidates: RankGPT JSON, JSONL of candidate lists, a BEIR directory, a TREC collection "
        "directory, or an ir_datasets id (e.g. irds:msmarco-passage/trec-dl-2019/judged).",
    ),
]
QrelsOpt = Annotated[
    Path | None,
    typer.Option("--qrels", help="TREC qrels (qid Q0 docid grade) or BEIR qrels TSV, when labels come separately.",
                 exists=True, dir_okay=False),
]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N queries.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory.")]
TeacherOpt = Annotated[
    str | None,
    typer.Option(
        "--teacher",
        "-t",
        help="Any LiteLLM model string (gpt-4o, anthropic/claude-..., ollama_chat/llama3.1, hosted_vllm/<name>). "
        "Omit it to use the embedded offline teacher (SmolLM2-135M: for trying the toolkit, not for quality).",
    ),
]
ApiBaseOpt = Annotated[str | None, typer.Option("--api-base", help="Base URL of an OpenAI-compatible server.")]
ProgramsDirOpt = Annotated[
    Path, typer.Option("--programs-dir", help="Where optimized teacher programs live (programs/<name>.json).")
]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Requests in flight at once.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]


@app.callback()
def _root(verbose: Verbose = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


# ----------------------------------------------------------------- schema


class SchemaKind(str, Enum):
    direct = "direct"
    comparison = "comparison"
    listwise = "listwise"
    reject = "reject"
    candidates = "candidates"


@app.command()
def schema(kind: Annotated[SchemaKind, typer.Argument(help="Record kind.")]) -> None:
    """Print the JSON Schema of a record kind."""
    from r2r_synth.schemas import RECORD_KINDS

    typer.echo(json.dumps(RECORD_KINDS[kind.value].model_json_schema(), indent=2))


# ----------------------------------------------------------------- commands
# Each stage's commands live in their own block below, in this order: generate/merge, optimize,
# publish/import/report, train/evaluate/rerank. Import the stage inside the command (keeps --help fast).


# ----------------------------------------------------------------- publish / import / report


def _command_line(*secrets: str | None) -> str:
    """The command as typed, with secret values (API keys, --token) replaced by '***'."""
    import shlex

    from r2r_synth.config import scrub

    return scrub(shlex.join(["r2r-synth", *sys.argv[1:]]), extra=[s for s in secrets if s])


RunDirArg = Annotated[
    Path, typer.Argument(help="A run directory written by `generate` or `import`.", exists=True, file_okay=False)
]


@app.command()
def publish(
    run_dir: RunDirArg,
    repo_id: Annotated[str, typer.Option("--repo-id", help="Dataset repository, user/name.")],
    license: Annotated[
        str | None,
        typer.Option("--license", help="Hub license id of the dataset, e.g. cc-by-4.0, mit, other. Required: "
                     "never assumed."),
    ] = None,
    split: Annotated[
        str, typer.Option("--split", help="Splits by query, NAME=FRACTION,... e.g. train=0.9,test=0.1.")
    ] = "train=1",
    seed: SeedOpt = 0,
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private.")] = False,
    revision: Annotated[str | None, typer.Option("--revision", help="Branch to push to (created if missing).")] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="Hugging Face token (default: HF_TOKEN or the `hf auth login` cache). "
                     "Never written anywhere."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Push nothing: write exactly what would be pushed into --out.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for the dataset files (required with --dry-run).")
    ] = None,
    optimize_report: Annotated[
        Path | None,
        typer.Option("--optimize-report", help="Optimize report to include in the card "
                     "(default: <programs-dir>/optimize_report.json when it exists).", exists=True, dir_okay=False),
    ] = None,
    programs_dir: ProgramsDirOpt = Path("programs"),
) -> None:
    """Publish a run as a Hugging Face dataset: one config per record kind, Parquet shards, a dataset card."""
    from r2r_synth.config import PublishConfig
    from r2r_synth.publish import publish as do_publish

    if optimize_report is None and (programs_dir / "optimize_report.json").is_file():
        optimize_report = programs_dir / "optimize_report.json"
    cfg = PublishConfig(run_dir=run_dir, repo_id=repo_id, license=license, split=split, seed=seed, private=private,
                        revision=revision, token=token, dry_run=dry_run, out=out, optimize_report=optimize_report,
                        programs_dir=programs_dir)
    res = do_publish(cfg.run_dir, repo_id=cfg.repo_id, license=cfg.license, split=cfg.split, seed=cfg.seed,
                     private=cfg.private, revision=cfg.revision, token=cfg.token, dry_run=cfg.dry_run, out=cfg.out,
                     optimize_report=cfg.optimize_report, programs_dir=cfg.programs_dir, command=_command_line(token))
    for kind, per in res.rows.items():
        typer.echo(f"{kind}: " + ", ".join(f"{s} {n} rows" for s, n in per.items()))
    if res.dry_run:
        typer.echo(f"dry run: {len(res.files)} files written to {res.folder} (nothing pushed)")
    else:
        typer.echo(f"pushed {len(res.files)} files ({len(res.deleted)} stale deleted): {res.commit_url}")


@app.command("import")
def import_cmd(
    paths: Annotated[
        list[Path], typer.Argument(help="R2R listwise .jsonl files (e.g. msmarco_500.jsonl).", exists=True,
                                   dir_okay=False)
    ],
    out: OutOpt,
    name: Annotated[
        str, typer.Option("--name", help="Provenance teacher string of the records; starts with 'imported:'.")
    ] = "imported:r2r-gpt4",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a run already in --out.")] = False,
) -> None:
    """Import corpora released in R2R's listwise format into a run directory (listwise records)."""
    from r2r_synth.config import ImportConfig
    from r2r_synth.importer import import_r2r

    cfg = ImportConfig(paths=paths, out=out, name=name, overwrite=overwrite)
    res = import_r2r(cfg.paths, out=cfg.out, name=cfg.name, overwrite=cfg.overwrite, command=_command_line(),
                     config=cfg.public_dict())
    typer.echo(f"{res.records} listwise records from {res.queries} queries, {res.rejects} rejects -> {res.out}")
    for reason, n in res.reject_reasons.items():
        typer.echo(f"  rejected {n}: {reason} (see {res.out / 'rejects.jsonl'})")


@app.command()
def report(
    run_dir: RunDirArg,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: RUN_DIR/report).")] = None,
    evaluation: Annotated[
        Path | None,
        typer.Option("--evaluation", "-e", help="JSON written by `r2r-synth evaluate`, for the nDCG@10 bars.",
                     exists=True, dir_okay=False),
    ] = None,
) -> None:
    """Write a self-contained HTML report (plots embedded) about a run directory."""
    from r2r_synth.config import ReportConfig
    from r2r_synth.report import build_report

    cfg = ReportConfig(run_dir=run_dir, out=out, evaluation=evaluation)
    res = build_report(cfg.run_dir, out=cfg.out, evaluation=cfg.evaluation)
    typer.echo(f"{res.html} ({len(res.plots)} plots)")
    for name, why in res.missing.items():
        typer.echo(f"  no {name} plot: {why}")


# ----------------------------------------------------------------- entry point


def main() -> None:
    try:
        app(standalone_mode=False)
    except R2RError as e:
        console.print(f"[bold red]error:[/] {escape(e.message)}", highlight=False)
        if e.hint:
            console.print(f"  [bold]fix:[/] {escape(e.hint)}", highlight=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except typer.Abort:
        sys.exit(1)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
