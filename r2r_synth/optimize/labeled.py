"""The labeled set of `optimize`: judged candidates become DSPy examples, split by query.

- A judged candidate is a direct example ``(query, document) -> gold grade`` (`direct_examples`).
- Two judged candidates of one query with different grades are a comparison example whose gold
  preference is the higher grade, shown as A or B at random so "always A" scores 50%
  (`comparison_examples`).
- The split is a seeded shuffle of the qids, never of rows, so no query is on both sides
  (`split_by_query`); optimizers that select among candidates get a second by-query slice of the
  *training* queries (`train_dev`), so the validation queries stay unseen.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dspy

from r2r_synth.errors import ConfigError, InputError
from r2r_synth.plural import plural
from r2r_synth.schemas import Candidates, stable_hash


def grade(value: int) -> int:
    """A gold label on the signatures' 0..3 scale (TREC DL); other collections use -1/-2 for junk
    or 4 for "key"."""
    return max(0, min(3, int(value)))


def gold_qrels(candidates: Sequence[Candidates]) -> dict[str, dict[str, int]]:
    """``{qid: {docid: grade}}`` of every query, on the 0..3 scale (the ideal ranking of nDCG@10)."""
    return {c.query.qid: {d: grade(g) for d, g in c.qrels.items()} for c in candidates}


def direct_examples(candidates: Sequence[Candidates]) -> list[dspy.Example]:
    """One example per judged candidate: inputs ``query``, ``document``; labels ``gold`` (the grade)
    and ``relevance`` (the same grade under the signature's field name, so a labeled demo shows it),
    plus ``qid``/``docid``/``rank`` to group by query. Unjudged candidates have no label and are left out."""
    out = []
    for c in candidates:
        for rank, doc in enumerate(c.documents, start=1):
            g = c.qrels.get(doc.docid)
            if g is None:
                continue
            out.append(
                dspy.Example(
                    qid=c.query.qid,
                    docid=doc.docid,
                    rank=rank,
                    first_stage_score=c.scores[rank - 1] if c.scores is not None else None,
                    query=c.query.text,
                    document=doc.full_text(),
                    gold=grade(g),
                    relevance=grade(g),
                ).with_inputs("query", "document")
            )
    return out


def comparison_examples(
    candidates: Sequence[Candidates], *, seed: int = 0, max_pairs_per_query: int | None = 10
) -> list[dspy.Example]:
    """Pairs of judged candidates of one query whose grades differ; ``gold``/``preferred`` is the
    label ("A"/"B") of the higher grade. Which document is A is a seeded coin flip per pair, and at
    most `max_pairs_per_query` pairs are kept per query (a seeded sample), so the set stays small and
    position-balanced."""
    out = []
    for c in candidates:
        judged = [(d, grade(c.qrels[d.docid])) for d in c.documents if d.docid in c.qrels]
        pairs = [(a, b) for i, a in enumerate(judged) for b in judged[i + 1 :] if a[1] != b[1]]
        # A per-query generator: the pairs of one query do not change when another query is added.
        rng = random.Random(f"{seed}:{c.query.qid}")
        rng.shuffle(pairs)
        if max_pairs_per_query is not None:
            pairs = pairs[:max_pairs_per_query]
        for (da, ga), (db, gb) in pairs:
            if rng.random() < 0.5:
                (da, ga), (db, gb) = (db, gb), (da, ga)
            label = "A" if ga > gb else "B"
            out.append(
                dspy.Example(
                    qid=c.query.qid,
                    docid_a=da.docid,
                    docid_b=db.docid,
                    query=c.query.text,
                    document_a=da.full_text(),
                    document_b=db.full_text(),
                    gold=label,
                    preferred=label,
                    gold_a=ga,
                    gold_b=gb,
                ).with_inputs("query", "document_a", "document_b")
            )
    return out


def labeled_set_hash(examples: Sequence[dspy.Example]) -> str:
    """Content hash of a labeled set (what was asked and the gold labels, in order)."""
    rows = [{k: v for k, v in ex.toDict().items() if k != "first_stage_score"} for ex in examples]
    return stable_hash(rows, n=16)


@dataclass
class Split:
    """Which queries train and which validate. Disjoint by construction."""

    train: list[str]
    val: list[str]
    seed: int
    val_fraction: float

    def of(self, examples: Sequence[dspy.Example]) -> tuple[list[dspy.Example], list[dspy.Example]]:
        """The examples of the train and the validation queries (input order kept)."""
        train, val = set(self.train), set(self.val)
        return [e for e in examples if e.qid in train], [e for e in examples if e.qid in val]

    def summary(self) -> dict[str, Any]:
        """What reports and meta files record of the split."""
        return {"seed": self.seed, "val_fraction": self.val_fraction, "train_qids": self.train, "val_qids": self.val}


#: The share of queries `optimize` holds out for validation unless told otherwise.
DEFAULT_VAL_FRACTION = 0.25


def split_by_query(qids: Sequence[str], *, val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0) -> Split:
    """A deterministic split of `qids` into train and validation queries: sort, shuffle with `seed`,
    the first ``round(n * val_fraction)`` (at least 1, at most n - 1) validate. `val_fraction=1.0`
    validates on every query and trains on none (scoring a program needs no training split)."""
    if not 0.0 < val_fraction <= 1.0:
        raise ConfigError(f"--val-fraction must be above 0 and at most 1, not {val_fraction}",
                          hint="e.g. --val-fraction 0.25 (1.0 with --evaluate-only: score every query)")
    unique = sorted(set(map(str, qids)))
    if val_fraction == 1.0 and unique:
        return Split(train=[], val=unique, seed=seed, val_fraction=val_fraction)
    if len(unique) < 2:
        raise InputError(
            f"the labeled set has {len(unique)} quer{'y' if len(unique) == 1 else 'ies'} with judged candidates; "
            "a train/validation split by query needs at least 2",
            hint="raise --limit or --depth, or pass qrels that judge more of the candidates",
        )
    random.Random(seed).shuffle(unique)
    n_val = min(len(unique) - 1, max(1, round(len(unique) * val_fraction)))
    return Split(train=sorted(unique[n_val:]), val=sorted(unique[:n_val]), seed=seed, val_fraction=val_fraction)


def train_dev(train: list[dspy.Example], *, seed: int) -> tuple[list[dspy.Example], list[dspy.Example]]:
    """A by-query slice of the training examples for optimizers that select among candidates (the
    validation split stays unseen). With one training query, it selects on the training examples."""
    qids = sorted({e.qid for e in train})
    if len(qids) < 2:
        return train, train
    return split_by_query(qids, val_fraction=0.25, seed=seed + 1).of(train)


def build_labeled_set(
    candidates: Sequence[Candidates], *, seed: int, val_fraction: float | None, max_pairs_per_query: int | None
) -> tuple[dict[str, list[dspy.Example]], Split, dict[str, Any]]:
    """The examples of both programs, their by-query split (`val_fraction` None: the default,
    `DEFAULT_VAL_FRACTION`), and a summary (hash, counts) for reports."""
    if not any(c.qrels for c in candidates):
        raise InputError(
            f"none of the {plural(len(candidates), 'query')} has gold labels: optimize needs qrels",
            hint="pass --qrels (TREC: qid Q0 docid grade, or BEIR qrels TSV), or an input that carries them",
        )
    from r2r_synth.optimize.listwise import listwise_examples

    examples = {
        "direct": direct_examples(candidates),
        "comparison": comparison_examples(candidates, seed=seed, max_pairs_per_query=max_pairs_per_query),
        "listwise": listwise_examples(candidates),
    }
    split = split_by_query([e.qid for e in examples["direct"]], seed=seed,
                           val_fraction=DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction)
    total = sum(len(c.documents) for c in candidates)
    summary = {
        "hash": labeled_set_hash(examples["direct"] + examples["comparison"]),
        "queries": len({e.qid for e in examples["direct"]}),
        "direct_examples": len(examples["direct"]),
        "comparison_examples": len(examples["comparison"]),
        "listwise_examples": len(examples["listwise"]),
        "unjudged_candidates": total - len(examples["direct"]),
    }
    return examples, split, summary
