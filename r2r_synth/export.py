"""`r2r-synth export RUN --format r2r --out FILE`: a run's listwise records in another toolkit's format.

`--format r2r` writes R2R's own training format (the shape of its released `msmarco_500.jsonl`, see
`r2r_synth.io.r2r`): one line per listwise record, i.e. per window the teacher ranked, with the
query, the passages as shown, the permutation (`re_rank_id`) and each passage's direct and
listwise reasons, so R2R's trainer can consume a corpus made here (or an imported one, extended).
`r2r-synth import FILE` reads it back into the same records, provenance aside: an imported record
says it was imported, and what R2R's format has no field for (gold labels, the window's position,
`repaired`, token usage) stays in the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from r2r_synth.atomic import check_file_target
from r2r_synth.errors import InputError
from r2r_synth.rundir import RunDir

FORMATS = ("r2r",)


@dataclass
class ExportResult:
    """What `export_run` wrote: rows, the queries they cover, and the file."""

    out: Path
    rows: int
    queries: int
    repaired: int


def export_run(run_dir: Path | str, *, out: Path | str, fmt: str = "r2r", overwrite: bool = False) -> ExportResult:
    """Write the listwise records of `run_dir` to `out` in `fmt` (see the module docstring).

    Raises `InputError` (nothing written) for an unknown format, a directory that holds no listwise
    records, or an `out` that exists (unless `overwrite`) or cannot be a file. The file appears whole
    or not at all."""
    if fmt not in FORMATS:
        raise InputError(f"unknown --format {fmt!r}", hint=f"choose one of {', '.join(FORMATS)}")
    out = check_file_target(out, what="--out")
    if out.exists() and not overwrite:
        raise InputError(f"--out {out} already exists", hint="choose a new --out, or pass --overwrite to replace it")
    run = RunDir(run_dir)
    if not run.exists():
        raise InputError(f"{run.path}: not a directory", hint="pass the run directory of `generate` or `import`")
    records = run.records("listwise")
    if not records:
        raise InputError(
            f"{run.path} holds no listwise records ({run.records_path('listwise').name} is "
            f"{'empty' if run.records_path('listwise').exists() else 'absent'}); R2R's format is listwise",
            hint="export a run made by `r2r-synth generate --listwise` or `r2r-synth import`")
    from r2r_synth.io.r2r import write_r2r

    n = write_r2r(records, out)
    return ExportResult(out=out, rows=n, queries=len({r.query.qid for r in records}),
                        repaired=sum(1 for r in records if r.repaired))
