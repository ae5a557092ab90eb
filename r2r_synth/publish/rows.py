"""What goes into the Parquet files: the split of each query, one flat row per record, a fixed schema
per record kind, and the shards a split is cut into."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from r2r_synth.errors import InputError

SPLIT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
DEFAULT_SHARD_ROWS = 100_000


# ----------------------------------------------------------------------------- splits


def parse_split(spec: str) -> dict[str, float]:
    """Parse `train=0.9,test=0.1` into {'train': 0.9, 'test': 0.1}; fractions must be > 0 and sum to 1."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, sep, frac = part.partition("=")
        name = name.strip()
        if not sep or not SPLIT_NAME.match(name):
            raise InputError(f"--split {spec!r}: {part!r} is not NAME=FRACTION",
                             hint="e.g. --split train=0.9,test=0.1 (names: letters, digits, underscores)")
        try:
            value = float(frac)
        except ValueError:
            raise InputError(f"--split {spec!r}: {frac!r} is not a number", hint="e.g. --split train=0.9,test=0.1") from None
        if not 0.0 < value <= 1.0:
            raise InputError(f"--split {spec!r}: fraction of {name!r} is {value}; it must be in (0, 1]",
                             hint="e.g. --split train=0.9,test=0.1")
        if name in out:
            raise InputError(f"--split {spec!r}: split {name!r} is named twice", hint="name each split once")
        out[name] = value
    if not out:
        raise InputError("--split is empty", hint="e.g. --split train=0.9,test=0.1, or train=1 for a single split")
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise InputError(f"--split {spec!r}: fractions sum to {total:g}, not 1", hint="e.g. --split train=0.9,test=0.1")
    return out


def split_of(qid: str, *, splits: dict[str, float], seed: int) -> str:
    """The split of a query: a uniform number from a hash of (seed, qid), cut by the fractions in order.
    Depends on nothing else, so every kind and every run put the same query on the same side."""
    h = hashlib.sha256(f"{seed}\x00{qid}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    acc = 0.0
    names = list(splits)
    for name in names:
        acc += splits[name]
        if u < acc:
            return name
    return names[-1]


# ----------------------------------------------------------------------------- rows


def parquet_schemas():
    """The Arrow schema of each record kind (fixed, so every shard of a config has the same columns)."""
    import pyarrow as pa

    prov = [
        ("teacher", pa.string()), ("program", pa.string()), ("program_hash", pa.string()),
        ("prompt_hash", pa.string()), ("rollout_id", pa.int64()), ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()), ("total_tokens", pa.int64()), ("cached_tokens", pa.int64()),
        ("cost", pa.float64()), ("cache_saved", pa.float64()), ("latency_s", pa.float64()), ("created_at", pa.timestamp("us", tz="UTC")),
        ("r2r_synth_version", pa.string()),
    ]
    doc = pa.struct([("docid", pa.string()), ("title", pa.string()), ("text", pa.string())])
    item = pa.struct([("docid", pa.string()), ("reason", pa.string()), ("comparison_reason", pa.string()),
                      ("answer_sentence", pa.string()), ("relevance", pa.int64())])
    window = pa.struct([(name, pa.int64()) for name in ("index", "count", "start", "window", "stride", "depth")])
    repair = pa.struct([(name, pa.list_(pa.int64())) for name in ("unknown", "duplicates", "missing")])
    grade = pa.struct([("docid", pa.string()), ("grade", pa.int64())])
    s = pa.string
    return {
        "direct": pa.schema([
            ("key", s()), ("qid", s()), ("query", s()), ("docid", s()), ("title", s()), ("document", s()),
            ("reasoning", s()), ("relevance", pa.int64()), ("score", pa.float64()),
            ("first_stage_rank", pa.int64()), ("gold", pa.int64()), *prov,
        ]),
        "comparison": pa.schema([
            ("key", s()), ("qid", s()), ("query", s()),
            ("doc_a_id", s()), ("doc_a_title", s()), ("doc_a", s()),
            ("doc_b_id", s()), ("doc_b_title", s()), ("doc_b", s()),
            ("reasoning", s()), ("preferred", s()), ("confidence", pa.float64()),
            ("swapped_reasoning", s()), ("swapped_preferred", s()), ("swapped_confidence", pa.float64()),
            ("swap_agrees", pa.bool_()), ("gold_a", pa.int64()), ("gold_b", pa.int64()), ("pair_strategy", s()),
            *prov,
        ]),
        "listwise": pa.schema([
            ("key", s()), ("qid", s()), ("query", s()), ("documents", pa.list_(doc)), ("ranking", pa.list_(s())),
            ("items", pa.list_(item)), ("gold", pa.list_(grade)), ("first_stage_ranks", pa.list_(pa.int64())),
            ("window", window), ("repaired", pa.bool_()), ("repair", repair), *prov,
        ]),
    }


_PROV_DOCS = {
    "teacher": "the model that wrote the row: a LiteLLM model string, `embedded/...` or `imported:<source>`",
    "program": "the r2r-synth program (prompt program) that asked the teacher",
    "program_hash": "content hash of that program's state (instructions and demos)",
    "prompt_hash": "hash of the instruction text the teacher was shown",
    "rollout_id": "which sample of the same request (samples differ at temperature > 0)",
    "prompt_tokens": "tokens of the request (null when the backend reported none)",
    "completion_tokens": "tokens of the reply (null when the backend reported none)",
    "total_tokens": "prompt + completion tokens",
    "cached_tokens": "prompt tokens the provider served from its prompt cache (billed at its cached-input price)",
    "cost": "USD the request cost, from the backend's price (null when unknown: never a guess)",
    "cache_saved": "USD the provider's prompt cache saved on the request (null when nothing was cached or unpriced)",
    "latency_s": "seconds the request took",
    "created_at": "when the row was written (UTC)",
    "r2r_synth_version": "the r2r-synth version that wrote the row",
}
COLUMN_DOCS: dict[str, dict[str, str]] = {
    "direct": {
        "key": "content-addressed request key (a hash of the inputs, program and teacher)",
        "qid": "query id", "query": "query text", "docid": "document id", "title": "document title (null when none)",
        "document": "document text as the teacher saw it",
        "reasoning": "the teacher's reasoning: how the document does or does not address the query",
        "relevance": "the teacher's graded label, 0 (not relevant) to 3 (perfectly relevant), as in TREC DL",
        "score": "the teacher's probability that the document is relevant, in [0, 1]",
        "first_stage_rank": "1-based rank of the document in the first-stage candidates (null when unknown)",
        "gold": "the gold grade 0-3 from qrels, beside the teacher's (null when unjudged)",
        **_PROV_DOCS,
    },
    "comparison": {
        "key": "content-addressed request key (a hash of the inputs, program and teacher)",
        "qid": "query id", "query": "query text",
        "doc_a_id": "id of document A (shown first as asked)", "doc_a_title": "title of A (null when none)",
        "doc_a": "text of document A", "doc_b_id": "id of document B", "doc_b_title": "title of B (null when none)",
        "doc_b": "text of document B",
        "reasoning": "the teacher's reasoning with A shown first: why one document is more relevant",
        "preferred": "the document the teacher preferred with A shown first: `A` or `B`",
        "confidence": "the teacher's confidence in that preference, in [0, 1]",
        "swapped_reasoning": "the reasoning with B shown first (null when asked in one order only)",
        "swapped_preferred": "the preference with B shown first, in this row's labels (A = doc_a)",
        "swapped_confidence": "the confidence with B shown first",
        "swap_agrees": "whether both orders prefer the same document (false: position-biased; null: one order)",
        "gold_a": "gold grade of A (null when unjudged)", "gold_b": "gold grade of B (null when unjudged)",
        "pair_strategy": "how the pair was chosen (`--pairs`: adjacent, gold, topk)",
        **_PROV_DOCS,
    },
    "listwise": {
        "key": "content-addressed request key (a hash of the inputs, program and teacher)",
        "qid": "query id", "query": "query text",
        "documents": "the window of documents, in the order the teacher was shown it",
        "ranking": "the teacher's ranking of the window: docids, most relevant first",
        "items": "a reason per document, in ranking order (R2R: direct_reason, listwise_reason, "
                 "direct_answer_sentence) and the teacher's grade 0-3 where it gave one",
        "gold": "gold grades 0-3 of the window's judged documents",
        "first_stage_ranks": "1-based first-stage rank of each document, in the order of `documents` (null: "
                             "imported)",
        "window": "where the window sat among its query's sliding windows: index (0 = asked first, the bottom), "
                  "count, start, window, stride, depth (null: a single window, e.g. an imported R2R row)",
        "repaired": "whether the teacher's permutation was flawed and repaired the RankGPT way",
        "repair": "what the repair did: unknown and repeated identifiers dropped, missing ones appended",
        **_PROV_DOCS,
    },
}


def _type_name(t) -> str:
    """An Arrow type as a short name: `string`, `int64`, `list<struct<docid: string, grade: int64>>`."""
    import pyarrow as pa

    if pa.types.is_list(t):
        return f"list<{_type_name(t.value_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ", ".join(f"{t.field(i).name}: {_type_name(t.field(i).type)}" for i in range(t.num_fields)) + ">"
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit}, {t.tz}]" if t.tz else f"timestamp[{t.unit}]"
    return str(t)


def columns_markdown(kind: str) -> str:
    """The columns of `kind` as published (the Parquet schema), each with its type and meaning, as a
    markdown table."""
    schema = parquet_schemas()[kind]
    docs = COLUMN_DOCS[kind]
    rows = [f"| `{f.name}` | `{_type_name(f.type)}` | {docs[f.name]} |" for f in schema]
    return "\n".join(["| column | type | meaning |", "|---|---|---|", *rows])


def _prov(p) -> dict[str, Any]:
    u = p.usage
    return {
        "teacher": p.teacher, "program": p.program, "program_hash": p.program_hash, "prompt_hash": p.prompt_hash,
        "rollout_id": p.rollout_id, "prompt_tokens": u.prompt_tokens if u else None,
        "completion_tokens": u.completion_tokens if u else None, "total_tokens": u.total_tokens if u else None,
        "cached_tokens": u.cached_tokens if u else None, "cost": p.cost, "cache_saved": p.cache_saved, "latency_s": p.latency_s, "created_at": p.created_at, "r2r_synth_version": p.r2r_synth_version,
    }


def record_row(rec) -> dict[str, Any]:
    """One record as a flat row (the Hub's viewer shows columns, not nested JSON). Listwise windows stay
    lists of structs; `gold` maps become lists of {docid, grade} so the Parquet schema is fixed."""
    if rec.kind == "direct":
        return {"key": rec.key, "qid": rec.query.qid, "query": rec.query.text, "docid": rec.document.docid,
                "title": rec.document.title, "document": rec.document.text, "reasoning": rec.reasoning,
                "relevance": rec.relevance, "score": rec.score, "first_stage_rank": rec.first_stage_rank,
                "gold": rec.gold, **_prov(rec.provenance)}
    if rec.kind == "comparison":
        sw = rec.swapped
        return {"key": rec.key, "qid": rec.query.qid, "query": rec.query.text,
                "doc_a_id": rec.doc_a.docid, "doc_a_title": rec.doc_a.title, "doc_a": rec.doc_a.text,
                "doc_b_id": rec.doc_b.docid, "doc_b_title": rec.doc_b.title, "doc_b": rec.doc_b.text,
                "reasoning": rec.reasoning, "preferred": rec.preferred, "confidence": rec.confidence,
                "swapped_reasoning": sw.reasoning if sw else None, "swapped_preferred": sw.preferred if sw else None,
                "swapped_confidence": sw.confidence if sw else None, "swap_agrees": rec.swap_agrees,
                "gold_a": rec.gold_a, "gold_b": rec.gold_b, "pair_strategy": rec.pair_strategy,
                **_prov(rec.provenance)}
    return {"key": rec.key, "qid": rec.query.qid, "query": rec.query.text,
            "documents": [{"docid": d.docid, "title": d.title, "text": d.text} for d in rec.documents],
            "ranking": list(rec.ranking),
            "items": [i.model_dump() for i in rec.items],
            "gold": [{"docid": d, "grade": g} for d, g in rec.gold.items()],
            "first_stage_ranks": rec.first_stage_ranks,
            "window": rec.window.model_dump() if rec.window else None, "repaired": rec.repaired,
            "repair": rec.repair.model_dump() if rec.repair else None,
            **_prov(rec.provenance)}


# ----------------------------------------------------------------------------- shards


def write_shards(rows: list[dict[str, Any]], *, schema, folder: Path, kind: str, split: str,
                 shard_rows: int) -> list[str]:
    """Write `rows` as `data/<kind>/<split>-0000i-of-0000N.parquet` under `folder`; their paths in the repo."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = max(1, -(-len(rows) // shard_rows))
    out = []
    for i in range(n):
        chunk = rows[i * shard_rows:(i + 1) * shard_rows]
        rel = f"data/{kind}/{split}-{i:05d}-of-{n:05d}.parquet"
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(chunk, schema=schema), path)
        out.append(rel)
    return out
