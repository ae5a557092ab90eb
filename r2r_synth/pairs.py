"""Which documents the teacher is asked about, and which pairs it compares.

`--depth K` takes the top K candidates of each query (first-stage order) for direct reasoning, and
the pair strategies choose comparisons among the same top K:

- `adjacent`: neighbours in the first-stage order (1-2, 2-3, ...): the swaps a reranker must get right;
- `gold`: a judged document against one judged lower (needs qrels), largest grade gap first. Where a
  query's qrels list only relevant documents (no grade 0: BEIR's and BRIGHT's positive-only or binary
  qrels), its unjudged candidates of the top K count as grade 0, as ir-measures and BEIR score them;
  qrels that judge some documents 0 (TREC pools) leave unjudged candidates out of the pairs. A gold
  pair's record carries the grades it was chosen on (`gold_a`, `gold_b`; 0 for such a candidate);
- `topk`: every pair within the top K, nearest ranks first;
- `none`: no comparisons.

`--max-pairs-per-query` caps each query's pairs (taken in the order above). Document A of a pair is
the one ranked higher by the first stage; every pair is asked in both orders by `generate`, so the
order shown carries no label. Sharding (`--shard I/N`) is by a hash of the qid, so N machines
running the same command split a job without talking to each other.
"""

from __future__ import annotations

import hashlib
from enum import Enum

from r2r_synth.errors import ConfigError
from r2r_synth.schemas import Candidates, Document


class PairStrategy(str, Enum):
    adjacent = "adjacent"
    gold = "gold"
    topk = "topk"
    none = "none"


def select_documents(candidates: Candidates, *, depth: int | None) -> list[tuple[int, Document]]:
    """The (1-based first-stage rank, document) pairs that get direct reasoning: the top `depth`."""
    docs = candidates.documents if depth is None else candidates.documents[:depth]
    return [(i + 1, d) for i, d in enumerate(docs)]


def select_pairs(
    candidates: Candidates,
    *,
    strategy: PairStrategy | str,
    depth: int | None,
    max_pairs: int | None = None,
) -> list[tuple[Document, Document]]:
    """Pairs (doc_a, doc_b) to compare for one query; doc_a is the higher first-stage rank."""
    strategy = PairStrategy(strategy)
    top = [d for _, d in select_documents(candidates, depth=depth)]
    idx: list[tuple[int, int]]
    if strategy is PairStrategy.none or len(top) < 2:
        return []
    if strategy is PairStrategy.adjacent:
        idx = [(i, i + 1) for i in range(len(top) - 1)]
    elif strategy is PairStrategy.topk:
        idx = sorted(((i, j) for i in range(len(top)) for j in range(i + 1, len(top))), key=lambda p: (p[1] - p[0], p[0]))
    else:  # gold
        grades = gold_grades(candidates, top)
        judged = [(i, g) for i, g in enumerate(grades) if g is not None]
        idx = [(i, j) for a, (i, gi) in enumerate(judged) for (j, gj) in judged[a + 1:] if gi != gj]
        idx.sort(key=lambda p: (-abs(grades[p[0]] - grades[p[1]]), p[0], p[1]))  # type: ignore[operator]
    if max_pairs is not None:
        idx = idx[:max_pairs]
    return [(top[i], top[j]) for i, j in idx]


def positive_only(candidates: Candidates) -> bool:
    """Whether the query's qrels list only relevant documents (none judged 0), so an unjudged
    candidate is taken as not relevant (grade 0)."""
    return bool(candidates.qrels) and min(candidates.qrels.values()) > 0


def gold_grades(candidates: Candidates, top: list[Document]) -> list[int | None]:
    """The gold grade of each of `top`: from the qrels; 0 for an unjudged one where the qrels are
    positive-only (`positive_only`), else None (unknown)."""
    unjudged = 0 if positive_only(candidates) else None
    return [candidates.qrels.get(d.docid, unjudged) for d in top]


def gold_pairs_summary(all_candidates: list[Candidates], *, depth: int | None) -> dict[str, int | str]:
    """What `--pairs gold` took as gold, for the run's manifest and summary: queries whose unjudged
    candidates of the top K counted as grade 0 (positive-only qrels), and how many candidates that was."""
    queries = [c for c in all_candidates if positive_only(c)]
    unjudged = sum(sum(d.docid not in c.qrels for _, d in select_documents(c, depth=depth)) for c in queries)
    return {"queries_unjudged_as_0": len(queries), "candidates_unjudged_as_0": unjudged,
            "rule": "where a query's qrels judge no document 0 (positive-only, as BEIR's), its unjudged candidates "
                    "of the top --depth count as grade 0"}


def check_pairs_possible(all_candidates: list[Candidates], strategy: PairStrategy | str, *,
                         depth: int | None = None, max_pairs: int | None = None) -> None:
    """`gold` pairs need qrels, and at least one query with two grades among its top K: fail before
    any request rather than run a job without the comparisons asked for."""
    if PairStrategy(strategy) is not PairStrategy.gold:
        return
    if not any(c.qrels for c in all_candidates):
        raise ConfigError(
            "--pairs gold needs gold labels, and none of the input queries has qrels",
            hint="pass --qrels FILE (TREC qrels), or choose --pairs adjacent / topk",
        )
    if not any(select_pairs(c, strategy=strategy, depth=depth, max_pairs=max_pairs) for c in all_candidates):
        raise ConfigError(
            f"--pairs gold finds no pair to compare: no query of the {len(all_candidates)} has two candidates "
            f"of different gold grades in its top {depth}",
            hint="raise --depth so relevant and non-relevant candidates meet, or choose --pairs adjacent / topk",
        )


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """`"I/N"` -> (I, N): shard I (counted from 0) of N, so 0 <= I < N; None -> None."""
    if spec is None:
        return None
    example = "e.g. --shard 0/4, 1/4, 2/4 and 3/4 on four machines (or leave --shard out to run every query)"
    try:
        i_s, n_s = spec.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise ConfigError(f"--shard {spec!r} is not of the form I/N (two whole numbers)", hint=example) from None
    if n < 1:
        raise ConfigError(f"--shard {spec!r}: N, the number of shards, must be at least 1, got {n}", hint=example)
    if not 0 <= i < n:
        raise ConfigError(
            f"--shard {spec!r}: I, the shard to run, must be from 0 to N-1 = {n - 1}, got {i}",
            hint=f"the {n} shards are numbered from 0: --shard 0/{n} ... --shard {n - 1}/{n}" if n > 1
            else "with N = 1 the only shard is 0/1, the whole job (the same as leaving --shard out)",
        )
    return i, n


def shard_of(qid: str, n: int) -> int:
    """The shard (0..n-1) a query belongs to: a stable hash, the same on every machine."""
    return int(hashlib.sha256(qid.encode("utf-8")).hexdigest()[:12], 16) % n


def in_shard(qid: str, shard: tuple[int, int] | None) -> bool:
    return shard is None or shard_of(qid, shard[1]) == shard[0]
