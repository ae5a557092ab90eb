"""The run directory, where every stage meets, and the one module that reads and writes it.

A run directory holds:

- `direct.jsonl`, `comparison.jsonl`, `listwise.jsonl`: records, one validated JSON object a line,
  appended and flushed one at a time as requests finish (`RunDir.appender`);
- `rejects.jsonl`: every request that did not become a record, with its reason and `cause`;
- `generated_queries.jsonl` (`r2r-synth queries`): the queries the teacher wrote per document
  (`QueriesRecord`), beside that command's outputs (see `r2r_synth.generate.doc_queries`);
- `rankings.jsonl` (listwise runs): each query's final ranking of its top K after its sliding
  windows (`RankingRecord`), appended when the query's last window is done (`RunDir.rankings`);
- `filtered.jsonl` (a run written by `filter`): every record of the parent run that a curation rule
  dropped, whole, with the rule (`Filtered`);
- `journal.jsonl`: every teacher call as it happens (`r2r_synth.rundir.journal`), so spend and usage
  survive a SIGKILL;
- `batches.jsonl` (`generate --batch`, `--export-batch`, `--import-batch`): every batch file and
  provider batch, written the moment its id exists (`r2r_synth.rundir.batches`), so a crash after
  submitting never submits twice;
- `manifest.json`: provenance and totals, rewritten at the end of every session from the files and
  the journal (never the only place a number lives);
- `config.json`: the resolved config of the last command, secrets masked;
- `programs/<name>-<program hash>.json`: the instruction text and program state the run used,
  written when a session starts, so a card shows the prompt even after `prompts/` changes;
- `.lock`: held by the one process writing the run (`r2r_synth.rundir.lock`).

**The resume rule** (`RunDir.done_keys`): a request key is done when it has a record, or a reject
that is the teacher's answer (an unusable reply, a refused request). A reject that is not the
teacher's answer (transport, auth, config, aborted: `Reject.retryable`) is removed and asked again by
the next run; `--retry-rejects` asks every reject again. A key in `filtered.jsonl` is done too: a
curation rule decided about its answer.

`generate`, `import`, `merge` and `filter` write runs, and `report`, `publish` and `train` read them, only
through `RunDir`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from r2r_synth.atomic import (
    atomic_jsonl,
    check_dir_target,
    write_json_atomic,
    write_jsonl_atomic,
    write_text_atomic,
)
from r2r_synth.errors import InputError
from r2r_synth.io.jsonl import (
    JsonlAppender,
    describe_validation,
    iter_json_lines,
    read_jsonl,
    truncate_torn_tail,
)
from r2r_synth.rundir.batches import BATCHES_FILE, BatchLog, BatchState, read_batches
from r2r_synth.rundir.journal import JOURNAL_FILE, Journal, JournalTotals, read_journal
from r2r_synth.rundir.lock import LOCK_FILE, RunLock
from r2r_synth.schemas import (
    FILTERED_FILE,
    MANIFEST_FILE,
    QUERIES_RECORDS_FILE,
    RANKINGS_FILE,
    RECORD_FILES,
    REJECTS_FILE,
    ComparisonRecord,
    Counts,
    DirectRecord,
    Filtered,
    ListwiseRecord,
    Manifest,
    QueriesRecord,
    RankingRecord,
    Reject,
    Strict,
    stable_hash,
)

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
PROGRAMS_DIR = "programs"
KIND_MODELS: dict[str, type[Strict]] = {"direct": DirectRecord, "comparison": ComparisonRecord,
                                        "listwise": ListwiseRecord}
KIND_ORDER = tuple(RECORD_FILES)  # direct, comparison, listwise


@dataclass
class Run:
    """A run directory read into memory: its manifest (None when absent), records per kind, rejects."""

    path: Path
    manifest: Manifest | None
    records: dict[str, list[Any]]
    rejects: list[Reject]

    @property
    def kinds(self) -> list[str]:
        """Record kinds with at least one record, in the canonical order."""
        return [k for k in KIND_ORDER if self.records.get(k)]


@dataclass
class ProgramSnapshot:
    """What a run's teacher was shown for one program: instructions and the full DSPy state."""

    name: str
    program_hash: str
    prompt_hash: str
    instructions: str
    state: dict[str, Any]


class RunDir:
    """The run directory at `path` (see the module docstring)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ----------------------------------------------------------------- paths

    def records_path(self, kind: str) -> Path:
        return self.path / RECORD_FILES[kind]

    def _file(self, kind: str) -> Path:
        """The file of `kind`: a record kind, 'reject' (rejects.jsonl), 'filtered' (filtered.jsonl),
        'ranking' (rankings.jsonl) or 'queries' (generated_queries.jsonl, `r2r-synth queries`)."""
        return ({"reject": self.rejects_path, "filtered": self.filtered_path, "ranking": self.rankings_path,
                 "queries": self.path / QUERIES_RECORDS_FILE}.get(kind) or self.records_path(kind))

    @property
    def rejects_path(self) -> Path:
        return self.path / REJECTS_FILE

    @property
    def filtered_path(self) -> Path:
        return self.path / FILTERED_FILE

    @property
    def rankings_path(self) -> Path:
        return self.path / RANKINGS_FILE

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_FILE

    @property
    def journal_path(self) -> Path:
        return self.path / JOURNAL_FILE

    @property
    def batches_path(self) -> Path:
        return self.path / BATCHES_FILE

    def exists(self) -> bool:
        return self.path.is_dir()

    def holds_records(self) -> bool:
        """Whether any record or reject file is present (the directory holds a run)."""
        return any(p.exists() for p in (*map(self.records_path, RECORD_FILES), self.rejects_path))

    def run_files(self) -> list[Path]:
        """The files (and the programs folder) that make up the run, where present."""
        names = (*RECORD_FILES.values(), QUERIES_RECORDS_FILE, REJECTS_FILE, FILTERED_FILE, RANKINGS_FILE,
                 MANIFEST_FILE, JOURNAL_FILE,
                 BATCHES_FILE, CONFIG_FILE, PROGRAMS_DIR)
        return [self.path / n for n in names if (self.path / n).exists()]

    def clear(self) -> None:
        """Remove the run's files (a writer replacing the run; call it holding the lock)."""
        import shutil

        for p in self.run_files():
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    def check_writable(self, *, what: str = "--out") -> RunDir:
        """An `InputError` (exit 2) when the path is a file: checked before anything is asked."""
        check_dir_target(self.path, what=what)
        return self

    def check_run_or_empty(self, *, what: str = "--out", force: bool = False) -> RunDir:
        """An `InputError` (exit 2) when the path is a directory that holds files but no run (a user's
        folder given by mistake: a run written into it would mix with what it holds), unless `force`."""
        if force or not self.path.is_dir() or self.run_files() or (self.path / LOCK_FILE).exists():
            return self
        held = sorted(p.name + ("/" if p.is_dir() else "") for p in self.path.iterdir())
        if held:
            shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
            raise InputError(f"{what} {self.path} is not empty and holds no run ({shown})",
                             hint=f"give {what} a new or empty directory, or pass --force to write the run into it")
        return self

    # ----------------------------------------------------------------- writing

    def lock(self, *, command: str = "") -> RunLock:
        """The exclusive writer's lock (`with run.lock(command=...):`); a second writer exits 2."""
        self.path.mkdir(parents=True, exist_ok=True)
        return RunLock(self.path, command=command)

    def appender(self, kind: str) -> JsonlAppender:
        """Append records of `kind` ('reject', 'filtered', 'ranking' as in `_file`), one flushed line each."""
        return JsonlAppender(self._file(kind))

    def journal(self, *, command: str) -> Journal:
        """Open this session's journal and record its start."""
        j = Journal(self.journal_path)
        j.start(command=command)
        return j

    def batch_log(self) -> BatchLog:
        """Open `batches.jsonl` for appending (see `r2r_synth.rundir.batches`)."""
        return BatchLog(self.batches_path)

    def write_records(self, kind: str, records: Iterable[BaseModel]) -> int:
        """Replace the records of `kind` ('reject' for rejects.jsonl, 'filtered' for filtered.jsonl) at
        once, atomically."""
        return write_jsonl_atomic(self._file(kind), records)

    def records_writer(self, kind: str):
        """`with run.records_writer(kind) as w: w.write(rec)`: the file appears only on success."""
        return atomic_jsonl(self._file(kind))

    def write_config(self, config: dict[str, Any]) -> None:
        write_json_atomic(self.path / CONFIG_FILE, config)

    def write_manifest(self, manifest: Manifest) -> None:
        write_text_atomic(self.manifest_path, manifest.model_dump_json(indent=2) + "\n")

    def snapshot_program(self, snap: ProgramSnapshot) -> Path:
        """Keep what the teacher is shown for one program (once per program hash)."""
        path = self.path / PROGRAMS_DIR / f"{snap.name}-{snap.program_hash}.json"
        if not path.exists():
            write_json_atomic(path, {"name": snap.name, "program_hash": snap.program_hash,
                                     "prompt_hash": snap.prompt_hash, "instructions": snap.instructions,
                                     "state": snap.state})
        return path

    # ----------------------------------------------------------------- reading

    def iter_lines(self, kind: str, *, repair: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line, object) of every line of `kind`'s file ('reject', 'filtered' as above), each with a
        string `key` (a line without one is an `InputError` naming file:line). With `repair` a torn
        last line (a crash mid-write) is cut off the file; without, it is skipped."""
        path = self._file(kind)
        if not path.exists():
            return
        if repair:
            truncate_torn_tail(path)
        for line, obj in iter_json_lines(path, tolerate_torn_tail=True):
            if not isinstance(obj.get("key"), str):
                raise InputError(f"{path}:{line}: a line without a \"key\" (every record and reject has one)",
                                 hint="remove that line; the next run asks its request again")
            yield line, obj

    def rejects(self) -> list[Reject]:
        """Every reject, validated (a malformed line is an `InputError` naming file:line)."""
        out = []
        for line, obj in self.iter_lines("reject"):
            try:
                out.append(Reject.model_validate(obj))
            except ValidationError as e:
                raise InputError(f"{self.rejects_path}:{line}: not a valid reject: {describe_validation(e)}",
                                 hint="remove that line; the next run asks its request again") from None
        return out

    def filtered(self) -> list[Filtered]:
        """Every record a `filter` rule dropped, validated (a bad line is an `InputError` naming file:line)."""
        path = self.filtered_path
        return list(read_jsonl(path, Filtered, tolerate_torn_tail=True)) if path.exists() else []

    def rankings(self) -> list[RankingRecord]:
        """Every final ranking of a listwise run (`rankings.jsonl`; [] when absent), validated (a bad
        line is an `InputError` naming file:line; a torn last line is skipped)."""
        path = self.rankings_path
        return list(read_jsonl(path, RankingRecord, tolerate_torn_tail=True)) if path.exists() else []

    def generated_queries(self) -> list[QueriesRecord]:
        """Every `QueriesRecord` of a `queries` run (`generated_queries.jsonl`; [] when absent),
        validated (a bad line is an `InputError` naming file:line; a torn last line is skipped)."""
        path = self._file("queries")
        return list(read_jsonl(path, QueriesRecord, tolerate_torn_tail=True)) if path.exists() else []

    def records(self, kind: str) -> list[Any]:
        """Every record of `kind`, validated (a bad line is an `InputError` naming file:line)."""
        path = self.records_path(kind)
        return list(read_jsonl(path, KIND_MODELS[kind], tolerate_torn_tail=True)) if path.exists() else []

    def done_keys(self, *, wanted: set[str] | None = None, retry_rejects: bool = False,
                  prune: bool = True) -> set[str]:
        """The resume rule (see the module docstring). With `prune` (a writer), torn tails are cut
        and rejects that will be asked again leave rejects.jsonl now, so every key ends up in exactly
        one file; without it (a dry run) nothing is touched."""
        done: set[str] = set()
        for kind in (*RECORD_FILES, "filtered", "queries"):
            done.update(obj["key"] for _, obj in self.iter_lines(kind, repair=prune))
        if prune and self.rejects_path.exists():
            truncate_torn_tail(self.rejects_path)
        keep: list[Reject] = []
        dropped = False
        for rej in self.rejects():
            again = (wanted is None or rej.key in wanted) and (retry_rejects or rej.retryable)
            if rej.key in done or again:  # a reject whose key later succeeded is stale
                dropped = True
                continue
            keep.append(rej)
            done.add(rej.key)
        if dropped and prune:
            self.write_records("reject", keep)
        return done

    def line_counts(self, kinds: Iterable[str] = KIND_ORDER) -> dict[str, Counts]:
        """Records and rejects per kind, counted from the files."""
        counts = {k: Counts() for k in kinds}
        for kind, c in counts.items():
            c.records = sum(1 for _ in self.iter_lines(kind))
        for _, obj in self.iter_lines("reject"):
            if obj.get("kind") in counts:
                counts[obj["kind"]].rejects += 1
        return counts

    def read_manifest(self, *, strict: bool = False) -> Manifest | None:
        """The manifest, or None when absent (or, unless `strict`, unreadable: the journal and the
        files hold every number it has, so the next write rebuilds it)."""
        if not self.manifest_path.exists():
            return None
        try:
            return Manifest.model_validate_json(self.manifest_path.read_text(encoding="utf-8"))
        except (ValidationError, ValueError) as e:
            if strict:
                raise InputError(f"{self.manifest_path}: not a valid manifest: {e}",
                                 hint="rerun the command that wrote this run directory; it rewrites "
                                      "manifest.json") from None
            log.warning("%s is not a valid manifest; it is rebuilt from the journal", self.manifest_path)
            return None

    def journal_totals(self, *, replies_for: set[str] | None = None) -> JournalTotals:
        return read_journal(self.journal_path, replies_for=replies_for)

    def batch_state(self) -> BatchState:
        """The run's batches, exports and imports (`batches.jsonl`; empty when absent)."""
        return read_batches(self.batches_path)

    def program_snapshots(self) -> list[ProgramSnapshot]:
        """Every program snapshot the run kept (see `snapshot_program`)."""
        out = []
        for p in sorted((self.path / PROGRAMS_DIR).glob("*.json")):
            try:
                import json

                d = json.loads(p.read_text(encoding="utf-8"))
                out.append(ProgramSnapshot(name=d["name"], program_hash=d["program_hash"],
                                           prompt_hash=d["prompt_hash"], instructions=d["instructions"],
                                           state=d.get("state") or {}))
            except (ValueError, KeyError, TypeError) as e:
                raise InputError(f"{p}: not a program snapshot ({type(e).__name__}: {e})",
                                 hint="restore it, or delete it (the card then shows only the prompt hash)") from None
        return out

    def prompt_texts(self) -> dict[tuple[str, str], str]:
        """(program name, prompt hash) -> the instruction text the teacher saw, from the snapshots."""
        return {(s.name, s.prompt_hash): s.instructions for s in self.program_snapshots()}

    def load(self, *, require_manifest: bool = True) -> Run:
        """Read the whole run. Raises `InputError` when it is not one (no record file at all), when
        `manifest.json` is missing and required, or on the first invalid line of any file."""
        if not self.path.is_dir():
            raise InputError(f"{self.path}: not a directory",
                             hint="pass the run directory that `generate` or `import` wrote")
        present = [k for k in RECORD_FILES if self.records_path(k).exists()]
        if not present:
            raise InputError(
                f"{self.path} holds none of {', '.join(RECORD_FILES.values())}: not a run directory",
                hint="run `r2r-synth generate --out DIR` or `r2r-synth import FILE --out DIR` first",
            )
        manifest = self.read_manifest(strict=True)
        if manifest is None and require_manifest:
            raise InputError(
                f"{self.manifest_path}: missing (the run never finished cleanly, so its provenance is unknown)",
                hint="rerun the same `r2r-synth generate` command: it resumes and writes manifest.json",
            )
        return Run(path=self.path, manifest=manifest, records={k: self.records(k) for k in present},
                   rejects=self.rejects())


def reject_key(*parts: Any) -> str:
    """A key for a reject that has no request key (an input line that could not be read)."""
    return stable_hash(list(parts), n=24)


__all__ = [
    "BATCHES_FILE",
    "CONFIG_FILE",
    "JOURNAL_FILE",
    "KIND_MODELS",
    "KIND_ORDER",
    "LOCK_FILE",
    "BatchLog",
    "BatchState",
    "Journal",
    "JournalTotals",
    "ProgramSnapshot",
    "Run",
    "RunDir",
    "reject_key",
]
