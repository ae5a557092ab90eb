"""The `r2r-synth` application object, the shared console, and the one place errors become exit
codes (library code raises `R2RError`; `main` prints it, masked, and exits). Help is formatted
by `r2r_synth.cli.help` (plain, at most 80 columns, short metavars)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from r2r_synth.cli.help import App
from r2r_synth.cli.options import Verbose
from r2r_synth.cli.progress import make_console
from r2r_synth.errors import R2RError

app = App(
    name="r2r-synth",
    help="Distill an LLM's reasoning about relevance into a small, explainable reranker (Reason-to-Rank).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console: Console = make_console(stderr=True)


class _MaskSecrets(logging.Filter):
    """Masks every known secret (API keys, tokens) in log lines, whoever logs them (LiteLLM quotes a
    key when a server does)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from r2r_synth.config import scrub

        record.msg, record.args = scrub(record.getMessage()), None
        return True


def _print_version(value: bool) -> None:
    if value:
        from r2r_synth import __version__

        typer.echo(f"r2r-synth {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Verbose = False,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    # -v also works after the command (`r2r-synth train ... -v`): every command takes it too (cli.help).
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
    queries = "queries"
    synthetic_query = "synthetic-query"
    manifest = "manifest"


@app.command()
def schema(kind: Annotated[SchemaKind, typer.Argument(
        metavar="KIND", help=f"Record kind, or `manifest` (a run's manifest.json): "
                             f"{', '.join(k.value for k in SchemaKind)}.")]) -> None:
    """Print the JSON Schema of a record kind or of a run's manifest.json."""
    from r2r_synth.schemas import RECORD_KINDS, Manifest

    model = Manifest if kind is SchemaKind.manifest else RECORD_KINDS[kind.value]
    typer.echo(json.dumps(model.model_json_schema(), indent=2))


def _command_line(*secrets: str | None) -> str:
    """The command as typed, with secret values (API keys, --token) replaced by '***' and absolute
    paths made portable (`r2r_synth.paths`: relative to the current directory, else `.../<name>`)."""
    import shlex

    from r2r_synth.config import scrub
    from r2r_synth.paths import portable_arg

    return scrub(shlex.join(["r2r-synth", *map(portable_arg, sys.argv[1:])]), extra=[s for s in secrets if s])


# ----------------------------------------------------------------- entry point

#: What `main` adds to "interrupted" after Ctrl-C or SIGTERM: a command that can resume says how.
_interrupt_hint: list[str] = []


def on_interrupt(hint: str) -> None:
    """Say `hint` (e.g. how to resume) beside "interrupted" if this command is stopped."""
    _interrupt_hint[:] = [hint]


def _print_interrupted() -> None:
    hint = f": {escape(_interrupt_hint[0])}" if _interrupt_hint else ""
    console.print(f"[yellow]interrupted[/]{hint}", highlight=False)


def _terminate_as_interrupt(signum, frame) -> None:
    # `timeout`, schedulers and `kill` send SIGTERM. Turned into KeyboardInterrupt, it runs the same
    # cleanup as Ctrl-C: generate writes its manifest (status "interrupted"), servers are stopped.
    raise KeyboardInterrupt


@contextmanager
def _quiet_third_party_bars() -> Iterator[None]:
    """Hugging Face's and tqdm's progress bars redraw one line with a carriage return: in a log or a
    pipe that is one endless line of noise, and the command's own progress lines say the same. Off
    unless stderr is a terminal: the libraries' switches are set (an explicit setting of these
    variables wins), and the bars a library forces on (sentence-transformers' hard-negative mining) are
    dropped from stderr. Both are undone at the end (`main` also runs in-process, in tests)."""
    import os

    from r2r_synth.cli.progress import NoRedraws

    if sys.stderr.isatty() or isinstance(sys.stderr, NoRedraws):
        yield
        return
    switches = ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")
    set_here = [var for var in switches if var not in os.environ]
    os.environ.update(dict.fromkeys(set_here, "1"))
    stderr, sys.stderr = sys.stderr, NoRedraws(sys.stderr)
    try:
        yield
    finally:
        sys.stderr = stderr
        for var in set_here:
            os.environ.pop(var, None)


def is_main_rank() -> bool:
    """False in the processes other than rank 0 that torchrun / accelerate launch start: they stay quiet."""
    import os

    return os.environ.get("RANK", "0") in ("", "0")


def main() -> None:
    """The `r2r-synth` console script."""
    _interrupt_hint.clear()
    with _quiet_third_party_bars():
        _main()


def _main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        # Outside standalone mode typer *returns* exit codes (typer.Exit(n), 130 after Ctrl-C) rather
        # than exiting: pass them on, or every such exit would look like success.
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            if rc == 130:
                _print_interrupted()
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
        _print_interrupted()
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

