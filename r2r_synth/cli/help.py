"""`--help` that fits a terminal and a log.

typer's rich panels squeeze a long flag or a long word into a narrow column and cut it with "…"
(`--max-pairs-per…`, `irds:msmarco-pas…`), label values with Python types (`<int range>`,
`<list[Path]>`, `<bool>` on plain flags), and draw boxes that a log file shows as noise. The app uses
click's plain formatter instead, with three changes:

- every value has a short metavar, as click's own commands do: `N`, `FLOAT`, `TEXT`, `PATH`, `FILE`,
  `DIR`, `[a|b|c]` for a choice, none on a flag; an option that sets `metavar=` keeps its own;
- an argument is listed by its name (`RUN_DIRS...`), with its choices when it has some;
- text wraps at spaces only: never inside a word, a flag or an id (`bi-encoder`,
  `irds:msmarco-passage/trec-dl-2019/judged`), and the command list shows each command's whole first
  paragraph (click cuts it at about 45 characters, or at the first "e.g.").

The width is the terminal's, at most 80 columns (click's default).

Every command also takes the global `-v/--verbose` after its name (`r2r-synth train ... -v`), as
users of git or pip expect; the app takes it before the command too.
"""

from __future__ import annotations

import inspect
import logging
import textwrap
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

#: typer's type labels (`<int range>`, `<list[Path]>`) as click-style metavars.
METAVARS = {"str": "TEXT", "int": "N", "int range": "N", "float": "FLOAT", "float range": "FLOAT",
            "path": "PATH", "file": "FILE", "dir": "DIR"}


def _wrap(text: str, width: int) -> list[str]:
    """`text` wrapped to `width` at spaces only (a longer word stays whole on its own line); blank
    lines separate paragraphs."""
    lines: list[str] = []
    for i, para in enumerate(p for p in text.split("\n\n") if p.strip()):
        if i:
            lines.append("")
        lines += textwrap.wrap(" ".join(para.split()), max(width, 10), break_on_hyphens=False,
                               break_long_words=False)
    return lines


class Formatter(typer.Context.formatter_class):  # type: ignore[misc, name-defined]
    """click's `HelpFormatter`, wrapping at spaces only."""

    def write_text(self, text: str) -> None:
        indent = " " * self.current_indent
        for line in _wrap(text, self.width - self.current_indent):
            self.write(f"{indent}{line}\n" if line else "\n")

    def write_dl(self, rows: Any, col_max: int = 30, col_spacing: int = 2) -> None:
        rows = list(rows)
        first_col = min(max((len(first) for first, _ in rows), default=0), col_max) + col_spacing
        pad = " " * (first_col + self.current_indent)
        for first, second in rows:
            self.write(f"{'':>{self.current_indent}}{first}")
            if not second:
                self.write("\n")
                continue
            if len(first) <= first_col - col_spacing:
                self.write(" " * (first_col - len(first)))
            else:
                self.write("\n" + pad)
            lines = _wrap(second, self.width - first_col - self.current_indent) or [""]
            self.write(f"{lines[0]}\n")
            for line in lines[1:]:
                self.write(f"{pad}{line}\n" if line else "\n")


class Context(typer.Context):
    formatter_class = Formatter


def _metavar(param: Any, ctx: typer.Context) -> str:
    label = param.display_type(ctx).strip("<>")
    if label.startswith("list["):
        label = label.removeprefix("list[").removesuffix("]")
    return f"[{label}]" if "|" in label else METAVARS.get(label.lower(), label.upper())


def _verbose(value: bool) -> bool:
    # The app's callback has set up logging (at WARNING unless -v came before the command) by now.
    if value:
        logging.getLogger().setLevel(logging.DEBUG)
    return value


def _verbose_probe(verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", expose_value=False, callback=_verbose,
        help="Log debug messages (also accepted before the command).")] = False) -> None:
    """A one-option command typer turns into the `-v` every command takes (see `verbose_option`)."""


def verbose_option() -> Any:
    """`-v/--verbose` as a command's own option, not passed to the command's function. Built by typer
    itself from `_verbose_probe` (typer's parameter classes change their constructors between
    releases; its decorators do not)."""
    import typer.main

    probe = typer.Typer()
    probe.command()(_verbose_probe)
    return next(p for p in typer.main.get_command(probe).params if p.name == "verbose")


class Command(TyperCommand):
    """A command with short metavars and its arguments listed by name (see the module docstring)."""

    context_class = Context

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not any("--verbose" in getattr(p, "opts", ()) for p in self.params):
            self.params.append(verbose_option())
        ctx = Context(self)
        self._choices: dict[str, str] = {}
        for param in self.params:
            if param.metavar is not None or getattr(param, "is_flag", False):
                continue
            if param.param_type_name == "argument":
                kind = _metavar(param, ctx)
                if kind.startswith("["):
                    self._choices[param.name or ""] = kind
                param.metavar = (param.name or "value").upper()
            else:
                param.metavar = _metavar(param, ctx)

    def format_options(self, ctx: typer.Context, formatter: Any) -> None:
        args, opts = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                name = f"{param.metavar}{'...' if param.nargs != 1 else ''}"
                choices = self._choices.get(param.name or "")
                args.append((f"{name} {choices}" if choices else name, record[1]))
            else:
                opts.append(record)
        for title, rows in (("Arguments", args), ("Options", opts)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class Group(TyperGroup):
    """The app's group: the command list shows each command's whole first paragraph, wrapped."""

    context_class = Context

    def format_commands(self, ctx: typer.Context, formatter: Any) -> None:
        rows = [(name, inspect.cleandoc(cmd.help or "").split("\n\n")[0])
                for name in self.list_commands(ctx)
                if (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class App(typer.Typer):
    """A typer app whose commands are `Command`s and whose help is click's plain formatter."""

    def __init__(self, **kwargs: Any):
        super().__init__(cls=Group, rich_markup_mode=None, **kwargs)

    def command(self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or Command, **kwargs)
