"""Duplicate reasoning texts: exact (after normalization) and near (MinHash LSH over word shingles,
every candidate pair verified by its true Jaccard similarity).

- `normalize`: Unicode NFKC, case folded, whitespace collapsed. Two texts are *exact* duplicates when
  their normalized forms are equal.
- `shingles`: the set of word 5-grams of the normalized text (words are `\\w+` runs, so punctuation
  does not count), each hashed to 64 bits (blake2b); a text of fewer than 5 words is one shingle.
- `MinHashIndex`: 128 MinHash values per text (universal hashing modulo the Mersenne prime 2^61 - 1,
  fixed seed), cut into `bands` bands of `rows` rows (Leskovec, Rajaraman, Ullman, *Mining of Massive
  Datasets*, ch. 3). Two texts of Jaccard similarity s share a band with probability
  1 - (1 - s^rows)^bands; `rows` is the largest that keeps the chance of missing a pair *at* the
  threshold under 1e-4, so candidates are plentiful and the exact Jaccard of the shingle sets decides.
  A pair below the threshold is never called a duplicate; a pair above it is missed with probability
  under 1e-4 (less the further above). The hash functions are fixed, so the same texts always give the
  same answer.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Hashable

import numpy as np

SHINGLE_WORDS = 5
NUM_PERM = 128
MISS_AT_THRESHOLD = 1e-4
_PRIME = np.uint64((1 << 61) - 1)
_WORD = re.compile(r"\w+")


def normalize(text: str) -> str:
    """The form two texts are compared in: NFKC, case folded, runs of whitespace as one space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def shingles(text: str) -> np.ndarray:
    """Sorted unique 64-bit hashes of the word 5-grams of `text` (empty for a text without words)."""
    words = _WORD.findall(normalize(text))
    if not words:
        return np.empty(0, dtype=np.uint64)
    grams = [" ".join(words[i:i + SHINGLE_WORDS]) for i in range(max(1, len(words) - SHINGLE_WORDS + 1))]
    hashes = [int.from_bytes(hashlib.blake2b(g.encode("utf-8"), digest_size=8).digest(), "little") for g in grams]
    return np.unique(np.array(hashes, dtype=np.uint64))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|a ∩ b| / |a ∪ b| of two sorted unique hash arrays."""
    inter = np.intersect1d(a, b, assume_unique=True).size
    union = a.size + b.size - inter
    return inter / union if union else 0.0


def band_shape(threshold: float, *, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows): the most rows per band whose chance of missing a pair of similarity `threshold`
    stays under `MISS_AT_THRESHOLD` (fewer rows: more candidates to verify, fewer misses)."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if (1.0 - threshold**rows) ** bands <= MISS_AT_THRESHOLD:
            best = (bands, rows)
    return best


class MinHashIndex:
    """Texts added one at a time; `near(text)` finds an added text whose shingle sets' Jaccard
    similarity reaches the threshold."""

    def __init__(self, threshold: float, *, num_perm: int = NUM_PERM, seed: int = 1):
        self.threshold = threshold
        self.bands, self.rows = band_shape(threshold, num_perm=num_perm)
        rng = np.random.default_rng(seed)
        # a < 2^31 and 32-bit shingle values keep a*x + b below 2^64: no overflow in uint64.
        self._a = rng.integers(1, 1 << 31, size=num_perm, dtype=np.uint64)
        self._b = rng.integers(0, (1 << 61) - 1, size=num_perm, dtype=np.uint64)
        self._buckets: list[dict[bytes, list[int]]] = [{} for _ in range(self.bands)]
        self._sets: list[np.ndarray] = []
        self._ids: list[str] = []
        self._groups: list[Hashable] = []

    def signature(self, sh: np.ndarray) -> np.ndarray:
        x = (sh & np.uint64(0xFFFFFFFF))[:, None]
        return ((x * self._a[None, :] + self._b[None, :]) % _PRIME).min(axis=0)

    def _band_keys(self, sig: np.ndarray) -> list[bytes]:
        return [sig[i * self.rows:(i + 1) * self.rows].tobytes() for i in range(self.bands)]

    def near(self, sh: np.ndarray, *, group: Hashable = None) -> tuple[str, float] | None:
        """The id of the first added text (by the order added) similar to `sh` at the threshold or
        above, and their Jaccard similarity; texts added with the same `group` (not None) do not
        count. None when there is none."""
        if not sh.size:
            return None
        found: set[int] = set()
        for band, key in zip(self._buckets, self._band_keys(self.signature(sh))):
            found.update(band.get(key, ()))
        for i in sorted(found):
            if group is not None and self._groups[i] == group:
                continue
            sim = jaccard(sh, self._sets[i])
            if sim >= self.threshold:
                return self._ids[i], sim
        return None

    def add(self, ident: str, sh: np.ndarray, *, group: Hashable = None) -> None:
        if not sh.size:
            return
        i = len(self._sets)
        self._sets.append(sh)
        self._ids.append(ident)
        self._groups.append(group)
        for band, key in zip(self._buckets, self._band_keys(self.signature(sh))):
            band.setdefault(key, []).append(i)
