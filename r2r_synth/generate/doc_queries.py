"""What a `queries` run asks: one `QueryJob` per document, over a corpus read and checked here.

Queries from the corpus follow InPars (Bonifacio et al. 2022) and Promptagator (Dai et al. 2022): the
teacher is shown a document and writes the queries it answers; with real queries of the collection
(`--examples`), it is shown a fixed, seeded handful of them as examples of style, as Promptagator's
few-shot prompt is (8 examples, the same for every document). What comes back is filtered later for
consistency (`r2r_synth.generate.queries_run`).

- Which documents: every document with text, or a seeded sample of `--docs N` chosen by a hash of
  (seed, docid), so a larger N asks the same documents and more (a pilot grown into the full run).
- A request key is the content address of what the teacher is shown (the document's text as cut to
  `--max-doc-chars`, the examples, the count), the program and the teacher, as for every request.
- A reply is the teacher's answer when it names at least one query; queries are stripped, blank ones
  dropped, repeats (case-insensitive) kept once, and at most `count` kept.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r2r_synth.config import QueriesConfig
from r2r_synth.errors import ConfigError, InputError
from r2r_synth.generate.jobs import CutReport
from r2r_synth.schemas import Document, Provenance, QueriesRecord, request_key, stable_hash

#: Reply tokens the embedded teacher may use per query asked (a query is at most 200 characters),
#: when --max-tokens is not given.
EMBEDDED_TOKENS_PER_QUERY = 64
#: Reply tokens a request is assumed to take per query before its usage is known (pacing, budget).
TOKENS_PER_QUERY = 40


class InvalidQueries(ValueError):
    """A parsed reply that names no usable query (rejected as the teacher's answer, cause ``reply``)."""


@dataclass
class QueryJob:
    """One document: a request (its `key`) for `count` queries, shown `examples`."""

    doc: Document  # as the teacher is shown it (cut to --max-doc-chars)
    examples: list[str]
    count: int
    key: str = ""
    kind: str = "queries"
    rollout: int = 0

    def inputs(self) -> dict[str, Any]:
        """What identifies the request (goes into the key)."""
        return {"docid": self.doc.docid, "document": self.doc.full_text(), "examples": self.examples,
                "count": self.count}

    def signature_inputs(self) -> dict[str, Any]:
        """The `DocumentQueries` signature's inputs."""
        return {"document": self.doc.full_text(), "example_queries": self.examples, "count": self.count}

    def reject_inputs(self) -> dict[str, Any]:
        """What a reject records of the request (ids, not texts)."""
        return {"docid": self.doc.docid, "count": self.count, "rollout": self.rollout}

    def record(self, queries: Sequence[Any], *, provenance: Provenance) -> QueriesRecord:
        """The record of this job from the parsed `queries` field (see the module docstring). Raises
        `InvalidQueries` when no query is left."""
        kept: list[str] = []
        seen: set[str] = set()
        for q in queries:
            text = " ".join(str(q).split())
            if text and text.casefold() not in seen:
                seen.add(text.casefold())
                kept.append(text)
        if not kept:
            raise InvalidQueries(f"the reply names no query (got {list(queries)[:3]!r})")
        return QueriesRecord(key=self.key, document=self.doc, queries=kept[: self.count],
                             examples=len(self.examples), provenance=provenance)


def check_queries_config(config: QueriesConfig) -> None:
    """Refuse settings that cannot work (ConfigError or InputError, exit 2) before anything is read."""
    if config.docs is not None and config.docs < 1:
        raise InputError(f"--docs {config.docs}: a queries run with zero documents asks nothing",
                         hint="give --docs 1 or more, or leave it out to ask every document")
    for flag, value in (("--per-doc", config.per_doc), ("--keep-top", config.keep_top), ("--depth", config.depth),
                        ("--max-examples", config.max_examples), ("--max-doc-chars", config.max_doc_chars or 1)):
        if value < 1:
            raise ConfigError(f"{flag} {value}: need at least 1", hint=f"e.g. {flag} 3")
    if config.keep_top > config.depth:
        raise ConfigError(f"--keep-top {config.keep_top} is deeper than --depth {config.depth}: a kept query's "
                          "document must be among its candidates", hint=f"raise --depth to at least {config.keep_top}")
    if config.temperature < 0:
        raise ConfigError(f"--temperature {config.temperature}: need 0 or more", hint="e.g. --temperature 0.7")


def read_documents(path: Path) -> tuple[dict[str, Document], int]:
    """The corpus at `path` (a BEIR corpus.jsonl, a TREC SGML file, or a collection directory) and how
    many of its documents have no text (neither title nor body). A corpus where no document has text
    is an `InputError`: there is nothing to write queries about."""
    from r2r_synth.io.beir import read_any_corpus

    if not path.exists():
        raise InputError(f"--corpus {path}: no such file or directory",
                         hint="give a BEIR corpus.jsonl, a TREC document file or a BEIR/TREC collection directory")
    docs = read_any_corpus(path)
    empty = sum(1 for d in docs.values() if not _has_text(d))
    if empty == len(docs):
        raise InputError(f"--corpus {path}: none of its {len(docs)} documents has any text (every title and "
                         "text is empty)", hint="check the corpus file: queries are written from a document's text")
    return docs, empty


def _has_text(doc: Document) -> bool:
    return bool(doc.text.strip() or (doc.title or "").strip())


def sample_documents(docs: dict[str, Document], *, n: int | None, seed: int) -> list[Document]:
    """Every document with text (corpus order), or `n` of them chosen by a hash of (seed, docid),
    returned in corpus order (see the module docstring)."""
    with_text = [d for d in docs.values() if _has_text(d)]
    if n is None or n >= len(with_text):
        return with_text
    chosen = set(sorted((d.docid for d in with_text), key=lambda i: stable_hash([seed, i], n=16))[:n])
    return [d for d in with_text if d.docid in chosen]


def read_examples(path: Path, *, limit: int, seed: int) -> list[str]:
    """Up to `limit` real queries from `path` (a BEIR queries.jsonl, a TSV or TREC topics file), a
    seeded sample in file order. A file that is not a queries file is an `InputError` naming it."""
    from r2r_synth.io.beir import read_any_queries
    from r2r_synth.io.jsonl import iter_json_lines
    from r2r_synth.io.text import first_line

    hint = ("--examples takes real queries: a BEIR queries.jsonl ({\"_id\", \"text\"} per line) or a TSV of "
            "qid<TAB>query")
    if not path.is_file():
        raise InputError(f"--examples {path}: no such file", hint=hint)
    if first_line(path).lstrip().startswith("{"):
        for line, obj in iter_json_lines(path):
            other = sorted(set(obj) - {"_id", "text", "metadata"})
            if other:
                what = ("a corpus document" if "title" in obj else "a candidate list" if "documents" in obj
                        else "not a query")
                raise InputError(f"--examples {path}:{line}: {what}, not a query (fields {', '.join(other)} beside "
                                 "_id and text)", hint=hint)
    try:
        queries = read_any_queries(path)
    except InputError as e:
        raise InputError(f"--examples {path}: not a queries file: {e.message}", hint=hint) from None
    texts = [t.strip() for t in queries.values() if t.strip()]
    if len(texts) <= limit:
        return texts
    keep = set(sorted(range(len(texts)), key=lambda i: stable_hash([seed, texts[i]], n=16))[:limit])
    return [t for i, t in enumerate(texts) if i in keep]


def build_query_jobs(docs: Sequence[Document], *, config: QueriesConfig, examples: list[str], program_hash: str,
                     teacher: str) -> tuple[list[QueryJob], CutReport]:
    """One job per document (its text cut to `--max-doc-chars`), and the cut report for the manifest."""
    jobs: list[QueryJob] = []
    limit = config.max_doc_chars
    cuts = CutReport(max_doc_chars=limit)
    for d in docs:
        shown = d
        if limit is not None and len(d.text) > limit:
            cuts.count += 1
            cuts.longest_chars = max(cuts.longest_chars, len(d.text))
            shown = d.model_copy(update={"text": d.text[:limit]})
        job = QueryJob(doc=shown, examples=examples, count=config.per_doc)
        job.key = request_key(kind="queries", inputs=job.inputs(), program_hash=program_hash, teacher=teacher)
        jobs.append(job)
    return jobs, cuts


def queries_response_format(extra: dict[str, Any], count: int) -> dict[str, Any]:
    """The adapter's request arguments for `count` queries: where it asks for constrained JSON
    decoding (the embedded teacher), the schema's list is narrowed to exactly `count` queries, so a
    small model neither stops at one nor runs on. Other arguments are returned as they are."""
    fmt = extra.get("response_format")
    schema = fmt.get("schema") if isinstance(fmt, dict) else None
    arr = (schema or {}).get("properties", {}).get("queries")
    if not isinstance(arr, dict) or arr.get("type") != "array":
        return extra
    out = copy.deepcopy(extra)
    q = out["response_format"]["schema"]["properties"]["queries"]
    q["minItems"] = q["maxItems"] = count
    return out
