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
