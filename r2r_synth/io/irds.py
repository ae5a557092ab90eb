"""ir_datasets ids as inputs: `irds:msmarco-passage/trec-dl-2019/judged`, `irds:beir/scifact/test`, ...

Queries (in the dataset's order) and qrels come from the dataset. Candidates come from the dataset's
`scoreddocs` (its official first-stage run) when it has them, with texts from its `docs_store`;
otherwise BM25 (`r2r_synth.io.first_stage`) ranks all of its documents, held in memory (fine for
collections up to a few million short passages; for MS MARCO-sized ones pick a subset that has
scoreddocs, e.g. `msmarco-passage/trec-dl-2019/judged`). ir_datasets downloads a
dataset the first time it is used (into `IR_DATASETS_HOME`, default `~/.ir_datasets`); offline, it
must already be there. A dataset registered in code (`ir_datasets.registry.register(name,
ir_datasets.create_dataset(...))`) works the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from r2r_synth.errors import InputError
from r2r_synth.io.trec import Qrels
from r2r_synth.schemas import Candidates, Document, Query

log = logging.getLogger(__name__)

T = TypeVar("T")

CATALOGUE = "see https://ir-datasets.com for the ids (e.g. irds:msmarco-passage/trec-dl-2019/judged)"


def _guard(dataset_id: str, what: str, fn: Callable[[], T]) -> T:
    """Run an ir_datasets call; its failures (a download refused offline, a corrupt cache) become an
    InputError that names the dataset and what was being read."""
    try:
        return fn()
    except InputError:
        raise
    except Exception as e:  # ir_datasets raises many kinds (IOError, HTTP errors, RuntimeError...)
        raise InputError(
            f"irds:{dataset_id}: could not read its {what}: {type(e).__name__}: {e}",
            hint="ir_datasets downloads data on first use: run once with network access, or put the files "
            "in IR_DATASETS_HOME (default ~/.ir_datasets)",
        ) from e


def _document(doc: Any) -> Document:
    fields = getattr(doc, "_fields", ())
    if "title" in fields and "text" in fields:
        return Document(docid=str(doc.doc_id), text=str(doc.text), title=str(doc.title) or None)
    text = doc.default_text() if hasattr(doc, "default_text") else str(doc.text)
    return Document(docid=str(doc.doc_id), text=text)


def _query_text(q: Any) -> str:
    return q.default_text() if hasattr(q, "default_text") else str(q.text)


def load_dataset(dataset_id: str) -> Any:
    """`ir_datasets.load(dataset_id)`, with an unknown id as an InputError."""
    import ir_datasets

    if not dataset_id:
        raise InputError("irds: needs a dataset id after the colon", hint=CATALOGUE)
    try:
        return ir_datasets.load(dataset_id)
    except KeyError:
        raise InputError(f"irds:{dataset_id}: not a known ir_datasets id", hint=CATALOGUE) from None


def _queries(dataset_id: str, ds: Any, limit: int | None) -> dict[str, str]:
    if not ds.has_queries():
        raise InputError(f"irds:{dataset_id}: the dataset has no queries",
                         hint="pick a subset with queries, e.g. .../dev or .../test; " + CATALOGUE)

    def read() -> dict[str, str]:
        out: dict[str, str] = {}
        for q in ds.queries_iter():
            out[str(q.query_id)] = _query_text(q)
            if limit is not None and len(out) >= limit:
                break
        return out

    queries = _guard(dataset_id, "queries", read)
    if not queries:
        raise InputError(f"irds:{dataset_id}: the dataset's query list is empty", hint=CATALOGUE)
    return queries


def _qrels(dataset_id: str, ds: Any, qids: set[str]) -> Qrels:
    if not ds.has_qrels():
        log.warning("irds:%s has no qrels; the candidates carry no gold labels", dataset_id)
        return {}

    def read() -> Qrels:
        out: Qrels = {}
        for r in ds.qrels_iter():
            if str(r.query_id) in qids:
                out.setdefault(str(r.query_id), {})[str(r.doc_id)] = int(r.relevance)
        return out

    return _guard(dataset_id, "qrels", read)


def _scored(dataset_id: str, ds: Any, qids: set[str], depth: int) -> dict[str, list[tuple[str, float]]]:
    def read() -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for sd in ds.scoreddocs_iter():
            qid = str(sd.query_id)
            if qid in qids:
                out.setdefault(qid, {})[str(sd.doc_id)] = float(sd.score)
        return out

    scored = _guard(dataset_id, "scoreddocs", read)
    # Best first; ties by docid so the order does not depend on the file's.
    return {q: sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))[:depth] for q, d in scored.items()}


def _iter_docs(ds: Any) -> Iterator[Document]:
    for doc in ds.docs_iter():
        yield _document(doc)


def _lookup(dataset_id: str, ds: Any, docids: list[str]) -> dict[str, Document]:
    def read() -> dict[str, Document]:
        try:
            store = ds.docs_store()
        except NotImplementedError:
            store = None
        if store is not None:
            return {str(k): _document(v) for k, v in store.get_many(docids).items()}
        wanted = set(docids)
        return {d.docid: d for d in _iter_docs(ds) if d.docid in wanted}

    return _guard(dataset_id, "documents", read)


def load_irds(dataset_id: str, *, limit: int | None = None, depth: int = 100) -> list[Candidates]:
    """Candidates for the first `limit` queries of an ir_datasets dataset (see the module docstring)."""
    ds = load_dataset(dataset_id)
    if not ds.has_docs():
        raise InputError(f"irds:{dataset_id}: the dataset has no documents", hint=CATALOGUE)
    queries = _queries(dataset_id, ds, limit)
    qids = set(queries)
    qrels = _qrels(dataset_id, ds, qids)

    if ds.has_scoreddocs():
        ranked = _scored(dataset_id, ds, qids, depth)
        docs = _lookup(dataset_id, ds, sorted({d for hits in ranked.values() for d, _ in hits}))
        out = []
        for qid, text in queries.items():
            hits = ranked.get(qid, [])
            missing = [d for d, _ in hits if d not in docs]
            if missing:
                raise InputError(
                    f"irds:{dataset_id}: scoreddocs of query {qid} name documents the docs store lacks "
                    f"({', '.join(missing[:5])})",
                    hint="the dataset's scoreddocs and docs disagree; check the ir_datasets cache",
                )
            out.append(Candidates(query=Query(qid=qid, text=text), documents=[docs[d] for d, _ in hits],
                                  scores=[s for _, s in hits], qrels=dict(qrels.get(qid, {}))))
        return out

    from r2r_synth.io.beir import rank_collection

    log.info("irds:%s has no scoreddocs; ranking its documents with BM25", dataset_id)
    docs: dict[str, Document] = {}
    for d in _guard(dataset_id, "documents", lambda: list(_iter_docs(ds))):
        docs[d.docid] = d
    return rank_collection(docs, queries, qrels, limit=None, depth=depth)
