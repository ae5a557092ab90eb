"""`r2r-synth import`: bring corpora that others released in R2R's listwise format into a run directory.

R2R's release (Ji et al., arXiv 2410.05168; e.g. `msmarco_500.jsonl`) holds, per query, a window of
BM25 passages, GPT-4's permutation of them and a reason per passage. Each good row becomes one
`ListwiseRecord` whose provenance says it was imported (`teacher="imported:<name>"`,
`program="r2r-listwise"`). The record kind stays *listwise*: the release has no graded labels and no
pairwise answers, so deriving direct or comparison records from it would invent labels the teacher
never gave. The trainer reads listwise records directly (and its per-passage `reason` as the
explanation text).

The result is an ordinary run directory — `listwise.jsonl`, `rejects.jsonl`, `manifest.json`,
`config.json` — so `publish`, `report` and `train` treat it like a generated one. A row that cannot
be read (a torn line too) or converted goes to `rejects.jsonl` with the file, line and a one-line
reason; a file without one usable row is refused (exit 2) and nothing is written; a row that repeats an earlier one
(same query, window and ranking — R2R's `msmarco_100.jsonl` is a subset of `msmarco_500.jsonl`) is
rejected as a duplicate, naming the line it repeats. Nothing is dropped silently.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from r2r_synth import __version__
from r2r_synth.errors import InputError
from r2r_synth.io.r2r import IMPORTED_TEACHER, iter_r2r
from r2r_synth.io.text import read_text
from r2r_synth.rundir import RunDir, reject_key
from r2r_synth.schemas import Counts, Manifest, Reject, Usage, package_versions, stable_hash

log = logging.getLogger(__name__)

@dataclass
class ImportResult:
    """What `import_r2r` wrote: the run directory and how many rows became records or rejects."""

    out: Path
    records: int
    rejects: int
    queries: int
    files: list[dict[str, Any]] = field(default_factory=list)
    reject_reasons: dict[str, int] = field(default_factory=dict)


def _file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_r2r(
    paths: list[Path],
    *,
    out: Path,
    name: str = IMPORTED_TEACHER,
    overwrite: bool = False,
    command: str = "r2r-synth import",
    config: dict[str, Any] | None = None,
) -> ImportResult:
    """Convert R2R listwise files into the run directory `out`.

    `name` is the provenance teacher string of every record (it must start with ``imported:`` so no
    reader mistakes an imported corpus for one this toolkit generated). `command` and `config` are
    recorded in the manifest as given (the CLI passes them with secrets removed). Files are written
    to temporary names and renamed at the end, so a failure leaves no half-written run directory.
    """
    if not paths:
        raise InputError("no input files given", hint="pass one or more R2R .jsonl files, e.g. msmarco_500.jsonl")
    if not name.startswith("imported:"):
        raise InputError(f"--name {name!r} must start with 'imported:'",
                         hint="e.g. --name imported:r2r-gpt4, so readers see the corpus was not generated here")
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise InputError(f"{p}: no such file", hint="check the path (relative paths start in the current directory)")
    # Every file is read and converted before anything is written: a file without one usable row
    # (a foreign file, an empty one) is refused whole and leaves no run behind.
    read = [(path, _read_file(path, name=name)) for path in paths]
    run = RunDir(out).check_writable()
    existing = [f.name for f in run.run_files()]
    if existing and not overwrite:
        raise InputError(
            f"{run.path} already holds a run ({', '.join(existing)})",
            hint="choose a new --out, or pass --overwrite to replace that run",
        )

    started = datetime.now(UTC)
    t0 = time.monotonic()
    n_rec = n_rej = 0
    qids: set[str] = set()
    reasons: dict[str, int] = {}
    seen: dict[str, str] = {}  # content hash -> "file:line" of its first occurrence
    files: list[dict[str, Any]] = []
    program_hash = prompt_hash = None
    with run.lock(command=command):
        if overwrite:
            run.clear()
        with run.records_writer("listwise") as fr, run.records_writer("reject") as fj:
            for path, rows in read:
                raw_lines = read_text(path).splitlines()
                n_file = n_file_rej = 0
                for line, rec, err in rows:
                    where = f"{path}:{line}"
                    if rec is not None:
                        # Same query, same passages, same order: the same teacher output seen twice.
                        content = stable_hash(
                            {"q": rec.query.text, "qid": rec.query.qid,
                             "docs": [d.text for d in rec.documents], "ranking": rec.ranking}
                        )
                        if content in seen:
                            err = f"duplicate: same query, window and ranking as {seen[content]}"
                        else:
                            seen[content] = where
                    if err is not None:
                        category = "duplicate" if err.startswith("duplicate") else "invalid R2R row"
                        reasons[category] = reasons.get(category, 0) + 1
                        raw = raw_lines[line - 1] if line - 1 < len(raw_lines) else None
                        fj.write(Reject(
                            kind="listwise",
                            key=reject_key(path.name, line),
                            # `iter_r2r` already names path:line in its errors; duplicates need it added.
                            reason=err if err.startswith(str(path)) else f"{where}: {err}",
                            cause="input",
                            inputs={"file": str(path), "line": line, "qid": _qid_of(raw)},
                            raw=raw,
                            teacher=name,
                        ))
                        n_rej += 1
                        n_file_rej += 1
                        continue
                    fr.write(rec)
                    program_hash, prompt_hash = rec.provenance.program_hash, rec.provenance.prompt_hash
                    qids.add(rec.query.qid)
                    n_rec += 1
                    n_file += 1
                files.append({"path": str(path), "sha256": _file_sha256(path), "records": n_file,
                              "rejects": n_file_rej})
                log.info("%s: %d records, %d rejects", path, n_file, n_file_rej)
        finished = datetime.now(UTC)
        manifest = Manifest(
            r2r_synth_version=__version__,
            command=command,
            config=config or {"paths": [str(p) for p in paths], "out": str(run.path), "name": name},
            teacher=name,
            programs={"r2r-listwise": program_hash} if program_hash else {},
            prompts={"r2r-listwise": prompt_hash} if prompt_hash else {},
            counts={"listwise": Counts(requested=n_rec + n_rej, records=n_rec, rejects=n_rej)},
            usage=Usage(),
            cost=None,  # what the original teacher cost is unknown; never a guess
            versions=package_versions("pydantic"),
            started_at=started,
            finished_at=finished,
            wall_s=round(time.monotonic() - t0, 3),
            status="complete",
            extra={"provenance": "imported", "format": "r2r-listwise", "sources": files,
                   "reject_reasons": reasons, "queries": len(qids)},
        )
        run.write_config(manifest.config)
        run.write_manifest(manifest)
    return ImportResult(out=run.path, records=n_rec, rejects=n_rej, queries=len(qids), files=files,
                        reject_reasons=reasons)


def _read_file(path: Path, *, name: str) -> list[tuple[int, Any, str | None]]:
    """Every row of one R2R file as `iter_r2r` yields it; an InputError when no row is usable (the
    file is empty, or not an R2R corpus), naming the file and its first problem."""
    rows = list(iter_r2r(path, teacher=name))
    if not any(rec is not None for _, rec, _ in rows):
        first = next((err for _, _, err in rows if err), None)
        what = f"none of its {len(rows)} lines is an R2R listwise row (the first: {first})" if rows else "the file is empty"
        raise InputError(f"{path}: {what}; nothing was imported",
                         hint="pass R2R's listwise files (msmarco_500.jsonl: query, qid, unsorted_docs, re_rank_id, "
                         "reason per line)")
    return rows


def _qid_of(raw: str | None) -> str | None:
    try:
        qid = json.loads(raw).get("qid") if raw else None
    except (ValueError, AttributeError):
        return None
    return None if qid is None else str(qid)
