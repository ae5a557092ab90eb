"""Each distinct document embedded once: the memory a bi-encoder scores from at corpus scale.

A bi-encoder's score of (query, document) is a dot product of two normalized embeddings, and a
document's embedding does not depend on the query. `evaluate` and `rerank` therefore keep one
`EmbeddingCache` per call: a query's candidates that were embedded for an earlier query are looked
up, only the new ones go through the model (in batches), and the query's scores are one matrix-vector
product. SciFact's 809 training claims x 100 BM25 candidates hold 5,183 distinct abstracts: 5,183
documents are embedded instead of 80,900. This is how sentence-transformers' own retrieval evaluator
and BEIR's exact search work (the corpus embedded once, queries scored against it in chunks), kept
lazy here so that a query is scored as soon as its own candidates are in.

Rows are keyed by a 16-byte BLAKE2b hash of the document's text, not its docid: the text is what was
embedded, so two ids for one text share a row and one id with two texts (two corpora) cannot.

`int8=True` stores each row as int8 with its own scale (symmetric absmax per vector, the scheme of
sentence-transformers' `quantize_embeddings` without its calibration set, which a lazy cache cannot
have up front): a quarter of the memory (dim + 4 bytes a row instead of 4 x dim), the score off by at
most `scale / 254` per component (|dot error| <= ~0.005 for a 384-dimension MiniLM embedding).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: Texts handed to the model at once when the cache fills (the model batches them again).
DEFAULT_CHUNK = 1024


def text_key(text: str) -> bytes:
    """The cache key of a document: a 16-byte hash of its text (collisions: ~2^-64 at 1e10 texts)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class EmbeddingCache:
    """Normalized document embeddings, each distinct text embedded once (see the module docstring).

    `encode(texts)` must return one normalized float row per text (a numpy array, shape (n, dim)).
    `encoded` counts the texts that went through it; `hits` the lookups served from the cache.
    """

    def __init__(self, encode: Callable[[list[str]], Any], *, int8: bool = False, chunk: int = DEFAULT_CHUNK):
        self._encode = encode
        self.int8 = int8
        self.chunk = chunk
        self._index: dict[bytes, int] = {}
        self._rows: np.ndarray | None = None  # grown by doubling, like a list: amortised O(1) appends
        self._scales: np.ndarray | None = None  # int8: one float32 scale per row
        self.encoded = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._index)

    @property
    def nbytes(self) -> int:
        """Bytes held by the embedding rows in use (the index's keys not counted)."""
        if self._rows is None:
            return 0
        n = len(self._index)
        return n * self._rows.shape[1] * self._rows.itemsize + (n * 4 if self.int8 else 0)

    def add(self, texts: Sequence[str]) -> None:
        """Embed the texts not cached yet, `chunk` at a time (a text given twice is embedded once)."""
        missing: dict[bytes, str] = {}
        for t in texts:
            k = text_key(t)
            if k not in self._index and k not in missing:
                missing[k] = t
        keys, todo = list(missing), list(missing.values())
        for start in range(0, len(todo), self.chunk):
            emb = np.asarray(self._encode(todo[start:start + self.chunk]), dtype=np.float32)
            if emb.ndim != 2 or len(emb) != len(todo[start:start + self.chunk]):
                raise RuntimeError(f"the encoder returned shape {emb.shape} for {len(todo[start:start + self.chunk])} "
                                   "texts")
            self.encoded += len(emb)
            self._append(keys[start:start + len(emb)], emb)

    def get(self, texts: Sequence[str]) -> np.ndarray:
        """The embeddings of `texts` (float32, one row each, in order), embedding those not cached yet."""
        self.add(texts)
        if not texts or self._rows is None:
            return np.zeros((0, 0 if self._rows is None else self._rows.shape[1]), dtype=np.float32)
        idx = np.fromiter((self._index[text_key(t)] for t in texts), dtype=np.int64, count=len(texts))
        self.hits += len(texts)
        rows = self._rows[idx]
        if self._scales is None:
            return rows
        return rows.astype(np.float32) * self._scales[idx, None]

    def scores(self, query_embedding: Any, texts: Sequence[str]) -> list[float]:
        """Dot products of one normalized query embedding with the documents `texts` (cosines)."""
        if not texts:
            return []
        q = np.asarray(query_embedding, dtype=np.float32).reshape(-1)
        return [float(x) for x in self.get(texts) @ q]

    def _append(self, keys: list[bytes], emb: np.ndarray) -> None:
        n, dim = len(self._index), emb.shape[1]
        if self._rows is None:
            cap = max(len(emb), 1024)
            self._rows = np.empty((cap, dim), dtype=np.int8 if self.int8 else np.float32)
            self._scales = np.empty(cap, dtype=np.float32) if self.int8 else None
        elif self._rows.shape[1] != dim:
            raise RuntimeError(f"the encoder returned {dim}-dimension rows after {self._rows.shape[1]}-dimension ones")
        if n + len(emb) > len(self._rows):
            cap = max(2 * len(self._rows), n + len(emb))
            self._rows = _grow(self._rows, cap)
            if self._scales is not None:
                self._scales = _grow(self._scales, cap)
        if self.int8:
            scale = np.abs(emb).max(axis=1) / 127.0
            scale[scale == 0] = 1.0
            self._rows[n:n + len(emb)] = np.clip(np.rint(emb / scale[:, None]), -127, 127).astype(np.int8)
            self._scales[n:n + len(emb)] = scale
        else:
            self._rows[n:n + len(emb)] = emb
        for i, k in enumerate(keys):
            self._index[k] = n + i


def _grow(a: np.ndarray, cap: int) -> np.ndarray:
    out = np.empty((cap, *a.shape[1:]), dtype=a.dtype)
    out[:len(a)] = a
    return out
