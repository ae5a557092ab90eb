"""RankGPT-style candidate files (the layout of RankGPT, rank_llm and R2R's `bm25_top100.json`).

One JSON array, one entry per query, hits in first-stage order:

    [{"query": "how long is life cycle of flea",
      "hits": [{"content": "...", "qid": 19335, "docid": "1017759", "score": 17.4}, ...]}, ...]

The same entries one per line (JSONL) are read too; a `.json` file holding a single entry object
instead of an array is an error (see `refuse_single_entry`).

The qid lives on each hit (the entry has none of its own), so an entry with no hits cannot say
which query it is: that is an error naming the entry, not a silently dropped query. Labels come
from a separate TREC qrels file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from r2r_synth.errors import InputError
from r2r_synth.io.jsonl import parse_json
from r2r_synth.io.text import read_text
from r2r_synth.io.trec import Qrels
from r2r_synth.schemas import Candidates, Document, Query

HINT = 'each entry is {"query": str, "hits": [{"qid", "docid", "content", "score"}, ...]} (RankGPT layout)'


def parse_entry(entry: Any, *, where: str, qrels: Qrels | None = None) -> Candidates:
    """One RankGPT entry as `Candidates`; `where` (e.g. `file.json: entry 3` or `file.jsonl:4`)
    starts every error message."""
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected an object, got {type(entry).__name__}", hint=HINT)
    query = entry.get("query")
    hits = entry.get("hits")
    if not isinstance(query, str) or not query.strip():
        raise InputError(f"{where}: missing or empty \"query\" text", hint=HINT)
    if not isinstance(hits, list):
        raise InputError(f"{where}: \"hits\" must be a list, got {type(hits).__name__}", hint=HINT)
    if not hits:
        raise InputError(
            f"{where}: query {query[:60]!r} has no hits, so its qid is unknown",
            hint="give the entry at least one hit (each hit carries the qid), or remove the entry",
        )
    qid: str | None = None
    docs: list[Document] = []
    scores: list[float] | None = []
    for h, hit in enumerate(hits):
        if not isinstance(hit, dict):
            raise InputError(f"{where}, hit {h}: expected an object, got {type(hit).__name__}", hint=HINT)
        missing = [k for k in ("qid", "docid", "content") if hit.get(k) is None]
        if missing:
            raise InputError(f"{where}, hit {h}: missing {', '.join(missing)}", hint=HINT)
        for key in ("qid", "docid"):
            if isinstance(hit[key], bool) or not isinstance(hit[key], (str, int)):
                raise InputError(
                    f"{where}, hit {h}: \"{key}\" must be a string or an integer, got {type(hit[key]).__name__}",
                    hint=HINT,
                )
        hit_qid = str(hit["qid"])
        if qid is None:
            qid = hit_qid
        elif hit_qid != qid:
            raise InputError(
                f"{where}, hit {h}: qid {hit_qid} differs from the entry's first hit ({qid})",
                hint="all hits of one entry belong to one query",
            )
        if not isinstance(hit["content"], str):
            raise InputError(f"{where}, hit {h}: \"content\" must be a string", hint=HINT)
        docs.append(Document(docid=str(hit["docid"]), text=hit["content"]))
        score = hit.get("score")
        if score is None or scores is None:
            scores = None  # scores are all or nothing
        elif isinstance(score, bool) or not isinstance(score, (int, float)):
            raise InputError(f"{where}, hit {h}: score {score!r} is not a number", hint=HINT)
        else:
            scores.append(float(score))
    assert qid is not None
    try:
        return Candidates(
            query=Query(qid=qid, text=query),
            documents=docs,
            scores=scores,
            qrels=dict(qrels.get(qid, {})) if qrels else {},
        )
    except ValidationError as e:
        msg = "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors()[:3])
        raise InputError(f"{where}: {msg}", hint=HINT) from None


def read_rankgpt(path: Path | str, *, qrels: Qrels | None = None) -> list[Candidates]:
    """Read a RankGPT-style JSON file into `Candidates`, in file order, with gold labels from `qrels`.

    Every malformed entry is an `InputError` naming `path: entry N` (0-based, as in the array);
    malformed JSON names `path:line`. A qid that appears in two entries is an error too.
    """
    path = Path(path)
    data = parse_json(read_text(path), path=path, hint="the file must be one JSON array of RankGPT entries")
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON array of entries, got a {type(data).__name__}", hint=HINT)
    out: list[Candidates] = []
    first_entry: dict[str, int] = {}
    for n, entry in enumerate(data):
        c = parse_entry(entry, where=f"{path}: entry {n}", qrels=qrels)
        if c.query.qid in first_entry:
            raise InputError(
                f"{path}: entry {n}: qid {c.query.qid} already appeared in entry {first_entry[c.query.qid]}",
                hint="give each query one entry (merge their hits)",
            )
        first_entry[c.query.qid] = n
        out.append(c)
    return out


def refuse_single_entry(path: Path) -> None:
    """Refuse a `.json` file whose whole content is one RankGPT entry: a `.json` candidates file is a
    list of entries (RankGPT's layout), so a lone object is an InputError rather than a silent run
    over one query. Entries one per line in a `.jsonl` file are fine, even a single line."""
    try:
        data = json.loads(read_text(path))
    except (json.JSONDecodeError, RecursionError):
        return  # not one JSON value: JSON lines, read (and checked) line by line
    if isinstance(data, dict) and "query" in data and "hits" in data:
        raise InputError(
            f"{path}: expected a JSON list of RankGPT entries, got a single entry (one object)",
            hint="wrap the object in [ ] to make a list of one entry, or save the entries one object per line "
            "in a .jsonl file",
        )
