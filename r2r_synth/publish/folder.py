"""The dataset folder: the Parquet shards of every config this run publishes, and the card beside them.
It is what `--dry-run --out DIR` leaves in DIR and what a push commits, byte for byte."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r2r_synth.atomic import write_text_atomic
from r2r_synth.config import scrub
from r2r_synth.errors import InputError
from r2r_synth.publish.card import build_card
from r2r_synth.publish.rows import DEFAULT_SHARD_ROWS, parquet_schemas, record_row, split_of, write_shards
from r2r_synth.rundir import Run

log = logging.getLogger(__name__)


@dataclass
class PublishResult:
    """What was (or, with `dry_run`, would be) pushed."""

    repo_id: str
    folder: Path
    files: list[str]
    deleted: list[str] = field(default_factory=list)
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> split -> rows
    commit_url: str | None = None
    dry_run: bool = False
    language: list[str] = field(default_factory=list)  # the card's `language`
    source_datasets: list[str] = field(default_factory=list)  # the card's `source_datasets` from this run
    optimize_report: Path | None = None  # the optimize report quoted in the card
    optimize_note: str | None = None  # why an optimize report was left out of the card


def build_folder(
    run: Run,
    *,
    folder: Path,
    repo_id: str,
    license: str,
    splits: dict[str, float],
    seed: int,
    existing_card: str | None,
    command: str,
    optimize_report: Path | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    secrets: list[str] | None = None,
    prompt_texts: dict[tuple[str, str], str] | None = None,
    language: list[str] | None = None,
    source_datasets: list[str] | None = None,
) -> PublishResult:
    """Write the dataset folder (Parquet shards + README.md card) for `run` into `folder`.

    Existing `data/<kind>/` folders of the kinds this run publishes are replaced; other kinds are left.
    `existing_card` (the repository's current README.md, if any) is merged, not overwritten.
    """
    kinds = run.kinds
    if not kinds:
        raise InputError(f"{run.path}: every record file is empty; nothing to publish",
                         hint="generate some records first (rejects alone are not published)")
    schemas = parquet_schemas()
    files: list[str] = []
    rows_per: dict[str, dict[str, int]] = {}
    for kind in kinds:
        by_split: dict[str, list[dict[str, Any]]] = {name: [] for name in splits}
        for rec in run.records[kind]:
            by_split[split_of(rec.query.qid, splits=splits, seed=seed)].append(record_row(rec))
        kdir = folder / "data" / kind
        if kdir.exists():
            shutil.rmtree(kdir)
        rows_per[kind] = {}
        for name, rows in by_split.items():
            if not rows:
                # An empty split is left out of the config rather than shipped as an empty file.
                log.warning("%s: split %r gets no query of this run; it is left out of the config", kind, name)
                continue
            files += write_shards(rows, schema=schemas[kind], folder=folder, kind=kind, split=name,
                                  shard_rows=shard_rows)
            rows_per[kind][name] = len(rows)
    card = build_card(run, repo_id=repo_id, license=license, splits=splits, seed=seed, rows=rows_per,
                      existing_card=existing_card, command=command, optimize_report=optimize_report,
                      prompt_texts=prompt_texts, language=language, source_datasets=source_datasets)
    write_text_atomic(folder / "README.md", scrub(str(card), extra=secrets))
    files.append("README.md")
    return PublishResult(repo_id=repo_id, folder=folder, files=files, rows=rows_per, language=list(language or []),
                         source_datasets=list(source_datasets or []), optimize_report=optimize_report)
