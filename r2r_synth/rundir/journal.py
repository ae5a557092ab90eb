"""The run's journal (`journal.jsonl`): every teacher call as it happens, one flushed line each, so
spend, usage and sessions survive a SIGKILL and never depend on a final write.

Events (one JSON object a line, `t` names the event, `s` the session):

- ``start``: a session began (`command`, `at`);
- ``send``: attempt `n` of a call is about to go out (`key`, `call`); a result collected from a
  batch (`generate --batch`, `--import-batch`) is journaled as a ``send`` naming its `batch` (the
  upload or export it came from) followed at once by its ``reply`` or ``fail``;
- ``reply``: attempt `n` came back (`prompt_tokens`, `completion_tokens`, `cost`; `cached_tokens`,
  `cache_write_tokens` and `saved` (USD the prompt cache saved) where the provider's cache was used;
  `text` where the reply is kept so a later run can reuse it, e.g. the answered half of a comparison);
- ``fail``: attempt `n` came back with an error (a 429 or a 5xx is not billed);
- ``end``: the session ended (`status`, `wall_s`, `retries`);
- ``legacy``: the totals of sessions written before the run had a journal.

A ``send`` with neither ``reply`` nor ``fail`` was in flight when its session was killed: the
provider may have billed it, so `JournalTotals.orphan_cost` counts it at the dearest call seen, and
a budget (`--max-cost`) treats that as spent.
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
from r2r_synth.schemas import Usage

JOURNAL_FILE = "journal.jsonl"


class Journal:
    """The writer of one session's events (see the module docstring)."""

    def __init__(self, path: Path | str, *, session: str | None = None):
        self.path = Path(path)
        self.session = session or uuid.uuid4().hex[:12]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        truncate_torn_tail(self.path)
        self._fh: IO[str] = self.path.open("a", encoding="utf-8")
        self._n = 0

    def _write(self, event: str, **fields: Any) -> None:
        line = {"t": event, "s": self.session, "at": round(time.time(), 3), **fields}
        self._fh.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._fh.flush()  # in the kernel's hands: survives SIGKILL of this process

    def start(self, *, command: str) -> None:
        self._write("start", command=command, pid=os.getpid())

    def legacy(self, *, usage: Usage, cost: float | None, sessions: list[dict[str, Any]]) -> None:
        self._write("legacy", usage=usage.model_dump(), cost=cost, sessions=sessions)

    def send(self, *, key: str, call: str, batch: str | None = None) -> int:
        """Record that an attempt goes out (or, with `batch`, that a batch result for it came in);
        returns its number for `reply` / `fail`."""
        self._n += 1
        if batch is None:
            self._write("send", n=self._n, key=key, call=call)
        else:
            self._write("send", n=self._n, key=key, call=call, batch=batch)
        return self._n

    def reply(self, n: int, *, prompt_tokens: int, completion_tokens: int, cost: float | None,
              text: str | None = None, cached_tokens: int = 0, cache_write_tokens: int = 0,
              saved: float | None = None) -> None:
        fields: dict[str, Any] = {"n": n, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                  "cost": cost}
        if cached_tokens or cache_write_tokens:  # only where a cache was used: older readers see the same line
            fields |= {"cached_tokens": cached_tokens, "cache_write_tokens": cache_write_tokens, "saved": saved}
        if text is not None:
            fields["text"] = text
        self._write("reply", **fields)

    def fail(self, n: int) -> None:
        self._write("fail", n=n)

    def end(self, *, status: str, wall_s: float, retries: int) -> None:
        self._write("end", status=status, wall_s=round(wall_s, 3), retries=retries)

    def close(self) -> None:
        self._fh.close()


@dataclass
class SessionTotals:
    """One session as the journal tells it (`status` "killed" when it never wrote its end)."""

    session: str
    started_at: float
    command: str = ""
    status: str = "killed"
    wall_s: float = 0.0
    calls: int = 0
    retries: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: float | None = 0.0
    in_flight_at_end: int = 0

    def as_dict(self) -> dict[str, Any]:
        from datetime import UTC, datetime

        return {"session": self.session, "started_at": datetime.fromtimestamp(self.started_at, UTC).isoformat(),
                "command": self.command, "status": self.status, "wall_s": round(self.wall_s, 3),
                "calls": self.calls, "retries": self.retries, "usage": self.usage.model_dump(), "cost": self.cost,
                "in_flight_at_end": self.in_flight_at_end}


@dataclass
class JournalTotals:
    """What the journal adds up to over every session."""

    usage: Usage = field(default_factory=Usage)
    #: USD over every reply; None when some reply could not be priced (unknown, never a guess).
    cost: float | None = 0.0
    #: USD the provider's prompt cache saved over every priced reply.
    saved: float = 0.0
    calls: int = 0
    #: Attempts sent but never answered in the journal: in flight when their session was killed.
    orphans: int = 0
    #: What those may have cost, at the dearest call seen (0 when nothing was priced).
    orphan_cost: float = 0.0
    sessions: list[SessionTotals] = field(default_factory=list)
    legacy_sessions: list[dict[str, Any]] = field(default_factory=list)
    #: Kept replies by call hash (for `replies_for` keys only): text, tokens and cost.
    replies: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: (batch, call) of every batch result already journaled (a reply or a failure), so a batch
    #: collected again after a crash is not counted twice.
    batch_items: set[tuple[str, str]] = field(default_factory=set)

    @property
    def spent(self) -> float:
        """What a budget counts as spent: priced replies plus the orphans' estimate."""
        return (self.cost or 0.0) + self.orphan_cost


def _add_cost(total: float | None, cost: float | None, tokens: int) -> float | None:
    if total is None or (cost is None and tokens > 0):
        return None
    return total + (cost or 0.0)


def read_journal(path: Path | str, *, replies_for: set[str] | None = None) -> JournalTotals:
    """Add up `journal.jsonl` (absent: zeros). `replies_for`: request keys whose kept reply texts to
    return (only requests still to do need them)."""
    path = Path(path)
    out = JournalTotals()
    if not path.exists():
        return out
    by_session: dict[str, SessionTotals] = {}
    pending: dict[tuple[str, int], dict[str, Any]] = {}
    dearest = 0.0
    for _, ev in iter_json_lines(path, tolerate_torn_tail=True):
        t, sid = ev.get("t"), str(ev.get("s", ""))
        s = by_session.get(sid)
        if s is None:
            s = by_session[sid] = SessionTotals(session=sid, started_at=float(ev.get("at") or 0.0))
            out.sessions.append(s)
        if t == "start":
            s.command = str(ev.get("command") or "")
        elif t == "legacy":
            u = Usage.model_validate(ev.get("usage") or {})
            out.usage = out.usage + u
            out.cost = _add_cost(out.cost, ev.get("cost"), u.total_tokens)
            out.legacy_sessions += list(ev.get("sessions") or [])
            out.sessions.remove(s)
        elif t == "send":
            pending[(sid, int(ev["n"]))] = ev
        elif t == "fail":
            sent = pending.pop((sid, int(ev["n"])), {})
            if "batch" in sent:
                out.batch_items.add((str(sent["batch"]), str(sent.get("call"))))
        elif t == "reply":
            sent = pending.pop((sid, int(ev["n"])), {})
            if "batch" in sent:
                out.batch_items.add((str(sent["batch"]), str(sent.get("call"))))
            p, c = int(ev.get("prompt_tokens") or 0), int(ev.get("completion_tokens") or 0)
            cached, written = int(ev.get("cached_tokens") or 0), int(ev.get("cache_write_tokens") or 0)
            u = Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c, cached_tokens=cached,
                      cache_write_tokens=written)
            cost = ev.get("cost")
            if isinstance(ev.get("saved"), (int, float)):
                out.saved += float(ev["saved"])
            out.usage, s.usage = out.usage + u, s.usage + u
            out.cost, s.cost = _add_cost(out.cost, cost, p + c), _add_cost(s.cost, cost, p + c)
            out.calls += 1
            s.calls += 1
            if isinstance(cost, (int, float)):
                dearest = max(dearest, float(cost))
            if replies_for is not None and "text" in ev and sent.get("key") in replies_for:
                out.replies[str(sent.get("call"))] = {"text": ev["text"], "prompt_tokens": p,
                                                      "completion_tokens": c, "cost": cost, "cached_tokens": cached,
                                                      "cache_write_tokens": written, "saved": ev.get("saved")}
        elif t == "end":
            s.status, s.wall_s, s.retries = str(ev.get("status")), float(ev.get("wall_s") or 0.0), int(
                ev.get("retries") or 0)
        if t != "legacy" and s.status == "killed":
            s.wall_s = max(s.wall_s, float(ev.get("at") or 0.0) - s.started_at)
    for sid, _n in pending:
        by_session[sid].in_flight_at_end += 1
    out.orphans = len(pending)
    out.orphan_cost = out.orphans * dearest
    return out
