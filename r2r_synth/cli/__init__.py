"""The `r2r-synth` command line: thin commands, one library call each, grouped by stage:
`generate` (generate, merge), `queries`, `optimize`, `data` (publish, import, report), `student` (train,
evaluate, rerank). Importing this package registers every command on `app`."""

# In pipeline order: `--help` lists the commands in the order they are registered.
from r2r_synth.cli import generate, queries, optimize, data, student  # noqa: F401, I001 - registers the commands
from r2r_synth.cli.app import app, main

__all__ = ["app", "main"]
