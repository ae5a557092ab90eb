"""The BM25 first stage: rank a corpus for each query when only a corpus is given.

Built on bm25s (https://github.com/xhluca/bm25s): Lucene's BM25 variant (k1=0.9, b=0.4, Anserini's
defaults, which the published BM25 baselines of MS MARCO, BEIR and TREC DL use), English stopwords
and the Snowball English stemmer (PyStemmer, a dependency; no download needed). Documents are indexed
as `title. text` (BEIR style). Retrieval is batched over all queries at once, so a few thousand
documents and hundreds of queries take seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from r2r_synth.errors import InputError
from r2r_synth.schemas import Document

log = logging.getLogger(__name__)

K1 = 0.9
B = 0.4


def _import_bm25s() -> Any:
    import bm25s

    # bm25s sets its own logger to DEBUG on import, which makes every index build print a debug line
    # whatever level the application chose; hand the level back to the application's logging config.
    bm25s_log = logging.getLogger("bm25s")
    if bm25s_log.level == logging.DEBUG:
        bm25s_log.setLevel(logging.NOTSET)
    return bm25s


def _tokenizer() -> Any:
    import Stemmer
    from bm25s.tokenization import Tokenizer

    return Tokenizer(lower=True, stopwords="en", stemmer=Stemmer.Stemmer("english"))


@dataclass
class BM25Index:
    """A BM25 index over a fixed list of documents. Build it with `BM25Index.build(docs)`."""

    docids: list[str]
    retriever: Any
    tokenizer: Any

    @classmethod
    def build(cls, docs: Mapping[str, Document] | Iterable[Document], *, k1: float = K1, b: float = B) -> BM25Index:
        """Index `docs` (a mapping docid -> Document, or Documents) by their `full_text()`."""
        bm25s = _import_bm25s()
        documents = list(docs.values()) if isinstance(docs, Mapping) else list(docs)
        if not documents:
            raise InputError("cannot build a BM25 index over an empty corpus", hint="give a corpus with documents")
        tokenizer = _tokenizer()
        tokens = tokenizer.tokenize([d.full_text() for d in documents], return_as="tuple", show_progress=False)
        retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        retriever.index(tokens, show_progress=False)
        log.debug("BM25 index: %d documents, %d terms", len(documents), len(tokens.vocab))
        return cls(docids=[d.docid for d in documents], retriever=retriever, tokenizer=tokenizer)

    def search(self, queries: Sequence[str], *, k: int = 100) -> list[list[tuple[str, float]]]:
        """The top `k` (docid, score) of each query, best first. Documents that share no term with the
        query (score 0) are not candidates, so a query may get fewer than `k`, or none."""
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}", hint="ask for a positive number of candidates")
        if not queries:
            return []
        # update_vocab=False (in _search_idx): query words the corpus never saw cannot match anything;
        # they are dropped (a query with none left becomes the empty token and scores 0 everywhere).
        out: list[list[tuple[str, float]]] = []
        for hits in self._search_idx(queries, k=min(k, len(self.docids))):
            # Re-sort with the document's position as tie-break so equal scores come out in a stable order.
            out.append([(self.docids[i], s) for i, s in sorted(hits, key=lambda t: (-t[1], t[0]))])
        return out

    def score_all(self, queries: Sequence[str]) -> Any:
        """BM25 of every query against every indexed document: a numpy array, queries x documents
        (0 where a document shares no term with the query)."""
        import numpy as np

        out = np.zeros((len(queries), len(self.docids)), dtype=np.float32)
        for row, hits in enumerate(self._search_idx(queries, k=len(self.docids))):
            for i, score in hits:
                out[row, i] = score
        return out

    def _search_idx(self, queries: Sequence[str], *, k: int) -> list[list[tuple[int, float]]]:
        ids = self.tokenizer.tokenize(list(queries), update_vocab=False, return_as="ids", show_progress=False)
        idx, scores = self.retriever.retrieve(ids, k=k, show_progress=False, n_threads=0)
        return [[(i, float(s)) for i, s in zip(r_idx, r_scores) if s > 0]
                for r_idx, r_scores in zip(idx.tolist(), scores.tolist())]


def bm25_run(
    docs: Mapping[str, Document] | Iterable[Document], queries: Mapping[str, str], *, k: int = 100
) -> dict[str, dict[str, float]]:
    """A BM25 run `{qid: {docid: score}}` (for `r2r_synth.io.trec.write_run` or ir-measures)."""
    index = BM25Index.build(docs)
    qids = list(queries)
    return {qid: dict(hits) for qid, hits in zip(qids, index.search([queries[q] for q in qids], k=k))}


def score_documents(query: str, texts: Sequence[str]) -> list[float]:
    """BM25 of `query` against each of `texts`, indexed on their own (0 where a text shares no term
    with the query): the first stage of documents that came without one (`rerank --docs`)."""
    index = BM25Index.build([Document(docid=str(i), text=t) for i, t in enumerate(texts)])
    return [float(x) for x in index.score_all([query])[0]]
