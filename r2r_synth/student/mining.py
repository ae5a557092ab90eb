"""Hard negatives mined with the base, the corpus read in chunks and each document embedded once.

The semantics are those of `sentence_transformers.util.mine_hard_negatives` with
`sampling_strategy="top"`, `output_format="n-tuple"` and a `relative_margin` (NV-Retriever's
TopK-PercPos): for each query, the `range_max` corpus documents its embedding is closest to, its own
positives left out; of those, the ones that score at most `(1 - relative_margin)` x the query's lowest
positive score; the best `num_negatives` of them per (query, positive) row, a row dropped when fewer
remain. The memory is not theirs: sentence-transformers embeds the whole corpus and takes one
queries x corpus similarity matrix (3.2 GB of floats for 800 queries over 1M passages, beside the
1.5 GB of embeddings); here the corpus goes through the model `chunk` documents at a time and each
query keeps a running top `range_max` (+ its positives; BEIR's exact search does the same), so memory
is queries x (range_max + chunk) scores whatever the corpus size, and each distinct document is embedded
once (a positive's score is read as its chunk passes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from typing import Any

DEFAULT_CHUNK = 4096


def mine_negatives(*, anchors: Sequence[str], positives: Sequence[str], corpus: Iterable[str],
                   encode: Callable[[list[str]], Any], num_negatives: int, range_max: int,
                   relative_margin: float, chunk: int = DEFAULT_CHUNK) -> dict[str, list[str]]:
    """`{"anchor", "positive", "negative_1".."negative_n"}` columns for the (anchor, positive) rows,
    grouped by anchor in first-seen order (as sentence-transformers returns them). `corpus` is read
    once, `chunk` texts at a time (duplicates are skipped); the positives need not be in it. `encode`
    returns normalized embeddings (numpy or torch, one row per text)."""
    import torch

    queries = list(dict.fromkeys(anchors))
    qidx = {q: i for i, q in enumerate(queries)}
    by_query: list[list[str]] = [[] for _ in queries]
    for a, p in zip(anchors, positives):
        by_query[qidx[a]].append(p)
    owners: dict[str, list[int]] = {}  # positive text -> the queries it is a positive of
    for i, ps in enumerate(by_query):
        for p in dict.fromkeys(ps):
            owners.setdefault(p, []).append(i)
    # sentence-transformers' candidate list: the top range_max + the most positives any query has
    keep = range_max + max((len(ps) for ps in by_query), default=0)
    q_emb = torch.as_tensor(encode(queries), dtype=torch.float32)
    n = len(queries)
    top_s = torch.full((n, 0), float("-inf"))
    top_i = torch.zeros((n, 0), dtype=torch.long)
    pos_score: dict[tuple[int, str], float] = {}
    texts: list[str] = []  # the distinct corpus, in reading order (negatives are looked up here)
    seen: set[str] = set()

    def flush(batch: list[str]) -> None:
        nonlocal top_s, top_i
        start = len(texts)
        texts.extend(batch)
        sims = q_emb @ torch.as_tensor(encode(batch), dtype=torch.float32).T  # queries x chunk
        for col, t in enumerate(batch):
            for qi in owners.get(t, ()):
                pos_score[(qi, t)] = float(sims[qi, col])
        ids = torch.arange(start, start + len(batch)).expand(n, -1)
        top_s, at = torch.topk(torch.cat([top_s, sims], 1), k=min(keep, top_s.shape[1] + len(batch)), dim=1)
        top_i = torch.gather(torch.cat([top_i, ids], 1), 1, at)

    batch: list[str] = []
    for t in chain(corpus, owners):  # the positives last: a positive outside the corpus is still scored
        if t in seen:
            continue
        seen.add(t)
        batch.append(t)
        if len(batch) == chunk:
            flush(batch)
            batch = []
    if batch:
        flush(batch)

    # a query's own positives are never its negatives (they hold up to max_positives of the slots)
    for i, ps in enumerate(by_query):
        own = set(ps)
        for j in range(top_i.shape[1]):
            if texts[int(top_i[i, j])] in own:
                top_s[i, j] = float("-inf")
    floor = torch.tensor([min(pos_score[(i, p)] for p in ps) if ps else float("inf")
                          for i, ps in enumerate(by_query)])
    scores = top_s.masked_fill(top_s > (floor * (1 - relative_margin))[:, None], float("-inf"))
    scores, at = torch.sort(scores, dim=1, descending=True)
    chosen = torch.gather(top_i, 1, at)[:, :num_negatives]
    ok = torch.isfinite(scores[:, :num_negatives]).all(dim=1) & (scores.shape[1] >= num_negatives)
    cols: dict[str, list[str]] = {"anchor": [], "positive": []} | {f"negative_{k + 1}": [] for k in range(num_negatives)}
    for i, q in enumerate(queries):
        if not bool(ok[i]):
            continue
        for p in by_query[i]:
            cols["anchor"].append(q)
            cols["positive"].append(p)
            for k in range(num_negatives):
                cols[f"negative_{k + 1}"].append(texts[int(chosen[i, k])])
    return cols
