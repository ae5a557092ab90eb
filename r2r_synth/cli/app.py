"""The `r2r-synth` application object, the shared console, and the one place errors become exit
codes (library code raises `R2RError`; `main` prints it, masked, and exits). Help is formatted
by `r2r_synth.cli.help` (plain, at most 80 columns, short metavars)."""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from r2r_synth.cli.help import App
from r2r_synth.cli.options import Verbose
from r2r_synth.errors import R2RError

app = App(
    name="r2r-synth",
    help="Distill an LLM's reasoning about relevance into a small, explainable reranker (Reason-to-Rank).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


class _MaskSecrets(logging.Filter):
    """Masks every known secret (API keys, tokens) in log lines, whoever logs them (LiteLLM quotes a
    key when a server does)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from r2r_synth.config import scrub

        record.msg, record.args = scrub(record.getMessage()), None
        return True


@app.callback()
def _root(verbose: Verbose = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _MaskSecrets) for f in handler.filters):
            handler.addFilter(_MaskSecrets())


# ----------------------------------------------------------------- schema


class SchemaKind(str, Enum):
    direct = "direct"
    comparison = "comparison"
    listwise = "listwise"
    reject = "reject"
    ranking = "ranking"
    filtered = "filtered"
    candidates = "candidates"


@app.command()
def schema(kind: Annotated[SchemaKind, typer.Argument(help="Record kind.")]) -> None:
    """Print the JSON Schema of a record kind."""
    from r2r_synth.schemas import RECORD_KINDS

    typer.echo(json.dumps(RECORD_KINDS[kind.value].model_json_schema(), indent=2))


def _portable(arg: str) -> str:
    """An absolute path as it reads from the current directory (or from ~), so a command quoted in a
    manifest or a dataset card does not carry the machine's directory layout."""
    import os

    head, sep, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    if not os.path.isabs(value):
        return arg
    cwd, home = os.getcwd(), os.path.expanduser("~")
    if value == cwd or value.startswith(cwd + os.sep):
        value = os.path.relpath(value, cwd)
    elif home not in ("", "/") and value.startswith(home + os.sep):
        value = "~" + value[len(home):]
    return f"{head}{sep}{value}"


def _command_line(*secrets: str | None) -> str:
    """The command as typed, with secret values (API keys, --token) replaced by '***' and absolute
    paths made relative to the current directory (or ~)."""
    import shlex

    from r2r_synth.config import scrub

    return scrub(shlex.join(["r2r-synth", *map(_portable, sys.argv[1:])]), extra=[s for s in secrets if s])


# ----------------------------------------------------------------- entry point


def _terminate_as_interrupt(signum, frame) -> None:
    # `timeout`, schedulers and `kill` send SIGTERM. Turned into KeyboardInterrupt, it runs the same
    # cleanup as Ctrl-C: generate writes its manifest (status "interrupted"), servers are stopped.
    raise KeyboardInterrupt


def is_main_rank() -> bool:
    """False in the processes other than rank 0 that torchrun / accelerate launch start: they stay quiet."""
    import os

    return os.environ.get("RANK", "0") in ("", "0")


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        # Outside standalone mode typer *returns* exit codes (typer.Exit(n), 130 after Ctrl-C) rather
        # than exiting: pass them on, or every such exit would look like success.
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            if rc == 130:
                console.print("[yellow]interrupted[/]")
            sys.exit(rc)
    except R2RError as e:
        from r2r_synth.config import scrub

        if not is_main_rank():
            sys.exit(e.exit_code)  # under torchrun every rank meets the same bad input: rank 0 says it once
        # Masked here too: a server may quote the key in an error that reaches this point unmasked.
        console.print(f"[bold red]error:[/] {escape(scrub(e.message))}", highlight=False)
        if e.hint:
            console.print(f"  [bold]fix:[/] {escape(scrub(e.hint))}", highlight=False)
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

        # typer >= 0.2x vendors click (typer._click): its usage errors derive from TyperException, not
        # from the installed click's ClickException.
        if isinstance(e, (click.ClickException, getattr(typer, "TyperException", click.ClickException))) and hasattr(
            e, "show"
        ):
            e.show()
            sys.exit(e.exit_code)
        raise

