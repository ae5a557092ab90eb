"""The `r2r-synth` command line: thin commands, one library call each. This is the one place
errors become exit codes (library code raises `R2RError`; `main` prints it and exits)."""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from typing import Annotated

import typer
from rich.console import Console

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


# ----------------------------------------------------------------- entry point


def main() -> None:
    try:
        app(standalone_mode=False)
    except R2RError as e:
        console.print(f"[bold red]error:[/] {e.message}", highlight=False, markup=True)
        if e.hint:
            console.print(f"  [bold]fix:[/] {e.hint}", highlight=False)
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
