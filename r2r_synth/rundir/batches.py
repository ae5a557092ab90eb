"""The run's batch log (`batches.jsonl`): every batch file and provider batch of `generate --batch`,
`--export-batch` and `--import-batch`, written the moment its id exists, one flushed and fsynced line
each, so a session killed at any point leaves enough to never submit the same requests twice.

Events (one JSON object a line, `t` names the event):

- ``upload``: a batch input file was uploaded (`upload`: our id for it, `file_id`: the provider's,
  `provider`, `items`: its ``[custom_id, request key]`` pairs, `requests`, `bytes`, `est_cost`: the
  estimate `--max-cost` counts until its results are collected);
- ``creating``: the batch of upload `upload` is about to be created (a crash after this line and
  before ``batch`` is resolved by listing the provider's batches for the file before creating one);
- ``batch``: the provider's batch exists (`batch_id`);
- ``collected``: its results were downloaded and journaled (`status`: the batch's final status,
  `ok`, `failed`);
- ``export``: `--export-batch` wrote `items` to `path` (`export`: its id);
- ``import``: `--import-batch` read `path` (`counts`).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from r2r_synth.io.jsonl import iter_json_lines, truncate_torn_tail

BATCHES_FILE = "batches.jsonl"


def new_id() -> str:
    """A fresh id for an upload or an export."""
    return uuid.uuid4().hex[:16]


class BatchLog:
    """The writer of `batches.jsonl` (see the module docstring)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        truncate_torn_tail(self.path)
        self._fh: IO[str] = self.path.open("a", encoding="utf-8")

    def _write(self, event: str, **fields: Any) -> None:
        line = {"t": event, "at": round(time.time(), 3), **fields}
        self._fh.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())  # an id the provider holds must outlive even a power cut

    def upload(self, *, upload: str, file_id: str, provider: str, items: list[tuple[str, str]], size: int,
               est_cost: float | None) -> None:
        self._write("upload", upload=upload, file_id=file_id, provider=provider, requests=len(items), bytes=size,
                    est_cost=est_cost, items=[list(i) for i in items])

    def creating(self, *, upload: str, file_id: str) -> None:
        self._write("creating", upload=upload, file_id=file_id)

    def batch(self, *, upload: str, batch_id: str, status: str) -> None:
        self._write("batch", upload=upload, batch_id=batch_id, status=status)

    def collected(self, *, upload: str, batch_id: str, status: str, ok: int, failed: int) -> None:
        self._write("collected", upload=upload, batch_id=batch_id, status=status, ok=ok, failed=failed)

    def exported(self, *, export: str, path: str, items: list[tuple[str, str]]) -> None:
        self._write("export", export=export, path=path, requests=len(items), items=[list(i) for i in items])

    def imported(self, *, path: str, counts: dict[str, int]) -> None:
        self._write("import", path=path, counts=counts)

    def close(self) -> None:
        self._fh.close()


@dataclass
class Upload:
    """One uploaded batch file and what became of it."""

    upload: str
    file_id: str
    provider: str
    items: list[tuple[str, str]]
    size: int = 0
    est_cost: float | None = None
    at: float = 0.0
    creating: bool = False
    batch_id: str | None = None
    status: str | None = None  # the final status, once collected

    @property
    def collected(self) -> bool:
        return self.status is not None


@dataclass
class BatchState:
    """What `batches.jsonl` adds up to."""

    uploads: dict[str, Upload] = field(default_factory=dict)
    exports: list[dict[str, Any]] = field(default_factory=list)
    imports: list[dict[str, Any]] = field(default_factory=list)

    @property
    def outstanding(self) -> list[Upload]:
        """Uploads whose results are not collected yet (in flight, or never turned into a batch)."""
        return [u for u in self.uploads.values() if not u.collected]

    def outstanding_calls(self) -> dict[str, str]:
        """custom_id -> request key of every request in an outstanding upload."""
        return {cid: key for u in self.outstanding for cid, key in u.items}

    def exported_calls(self) -> dict[str, tuple[str, str]]:
        """custom_id -> (request key, id of the latest export that wrote it)."""
        out: dict[str, tuple[str, str]] = {}
        for e in self.exports:
            for cid, key in e["items"]:
                out[cid] = (key, e["export"])
        return out

    def summary(self) -> dict[str, Any]:
        """The manifest's `extra.batches`: each batch with its state, and the exports and imports."""
        return {"batches": [{"batch_id": u.batch_id, "file_id": u.file_id, "provider": u.provider,
                             "requests": len(u.items), "status": u.status or "in flight"}
                            for u in self.uploads.values()],
                "outstanding_requests": sum(len(u.items) for u in self.outstanding),
                "exports": [{"path": e["path"], "requests": e["requests"]} for e in self.exports],
                "imports": [{"path": i["path"], **i["counts"]} for i in self.imports]}


def read_batches(path: Path | str) -> BatchState:
    """Add up `batches.jsonl` (absent: nothing). A torn last line (a crash mid-write) is skipped."""
    path = Path(path)
    state = BatchState()
    if not path.exists():
        return state
    for _, ev in iter_json_lines(path, tolerate_torn_tail=True):
        t = ev.get("t")
        u = state.uploads.get(str(ev.get("upload")))
        if t == "upload":
            state.uploads[ev["upload"]] = Upload(
                upload=ev["upload"], file_id=ev["file_id"], provider=ev.get("provider", ""),
                items=[(str(c), str(k)) for c, k in ev.get("items") or []], size=int(ev.get("bytes") or 0),
                est_cost=ev.get("est_cost"), at=float(ev.get("at") or 0.0))
        elif t == "creating" and u is not None:
            u.creating = True
        elif t == "batch" and u is not None:
            u.batch_id = ev["batch_id"]
        elif t == "collected" and u is not None:
            u.status = str(ev.get("status"))
        elif t == "export":
            state.exports.append(ev)
        elif t == "import":
            state.imports.append(ev)
    return state
