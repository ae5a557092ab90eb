"""The curation rules of `r2r-synth filter` and the funnel that applies them.

A rule judges the records of one kind and names those it drops, each with a detail in words. Most
rules judge a record by itself; `exact-duplicate`, `near-duplicate` and `self-consistency` judge it
among the others (the first text kept, the majority answer of a request's rollouts).

The funnel applies the rules in the fixed order of `FILTER_RULES`, each to what the rules before it
kept, so a record is dropped by exactly one rule: the first that drops it. The set rules come last,
duplicates before self-consistency, which makes the funnel idempotent: what it keeps, it keeps again
(a rule that ran earlier on a larger set could otherwise break a majority that later rules relied
on). `also` names the other rules that drop the record when each is applied alone to the whole input.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from r2r_synth import metrics
from r2r_synth.filter.neardup import MinHashIndex, normalize, shingles
from r2r_synth.schemas import FILTER_RULES, ComparisonRecord, DirectRecord, Filtered, ListwiseRecord

Record = DirectRecord | ComparisonRecord | ListwiseRecord
ALL_KINDS = ("direct", "comparison", "listwise")


def reasoning_texts(rec: Record) -> list[tuple[str, str]]:
    """(what, text) of every reasoning text a record carries: direct `reasoning`; comparison
    `reasoning` and the swapped answer's; listwise each document's `reason` and `comparison_reason`."""
    if isinstance(rec, DirectRecord):
        return [("reasoning", rec.reasoning)]
    if isinstance(rec, ComparisonRecord):
        out = [("reasoning", rec.reasoning)]
        return out + ([("swapped reasoning", rec.swapped.reasoning)] if rec.swapped is not None else [])
    return [(f"{label} of {it.docid}", text) for it in rec.items
            for label, text in (("reason", it.reason), ("comparison reason", it.comparison_reason)) if text]


def request_group(rec: Record) -> Hashable:
    """What the rollouts of one request share: kind, query, documents, teacher, program and prompt
    (they differ only by `provenance.rollout_id`)."""
    if isinstance(rec, DirectRecord):
        docs: tuple[str, ...] = (rec.document.docid,)
    elif isinstance(rec, ComparisonRecord):
        docs = (rec.doc_a.docid, rec.doc_b.docid)
    else:
        docs = tuple(d.docid for d in rec.documents)
    p = rec.provenance
    return (rec.kind, rec.query.qid, docs, p.teacher, p.program_hash, p.prompt_hash)


def answer(rec: Record) -> Hashable:
    """The answer rollouts vote on: a direct grade, a comparison's preferred document, a listwise
    ranking (the whole permutation)."""
    if isinstance(rec, DirectRecord):
        return rec.relevance
    if isinstance(rec, ComparisonRecord):
        return rec.preferred
    return tuple(rec.ranking)


def _say(ans: Hashable) -> str:
    if isinstance(ans, int):
        return f"grade {ans}"
    if isinstance(ans, str):
        return f"preferred {ans}"
    return "ranking " + ">".join(ans)


@dataclass
class Rule:
    """One rule. `check` judges a record by itself (None: kept, or the rule does not apply to it);
    set rules override `judge`."""

    name: str
    params: dict[str, Any]
    kinds: tuple[str, ...] = ALL_KINDS

    def applies(self, rec: Record) -> bool:
        return rec.kind in self.kinds

    def check(self, rec: Record) -> str | None:
        raise NotImplementedError

    def judge(self, recs: list[Record]) -> dict[str, str]:
        """key -> detail of each record of `recs` (one kind, file order) the rule drops."""
        out = {}
        for r in recs:
            if self.applies(r) and (why := self.check(r)) is not None:
                out[r.key] = why
        return out


class SwapConsistent(Rule):
    def __init__(self):
        super().__init__("swap-consistent", {}, ("comparison",))

    def check(self, rec: ComparisonRecord) -> str | None:
        if rec.swapped is None:
            return "asked in one order only: swap consistency unknown"
        if not rec.swap_agrees:
            return (f"position-biased: preferred {rec.preferred} with A shown first, "
                    f"{rec.swapped.preferred} with B shown first")
        return None


class GoldDistance(Rule):
    def __init__(self, max_distance: int):
        super().__init__("gold-distance", {"max_distance": max_distance}, ("direct",))
        self.max_distance = max_distance

    def applies(self, rec: Record) -> bool:
        return isinstance(rec, DirectRecord) and rec.gold is not None

    def check(self, rec: DirectRecord) -> str | None:
        d = abs(rec.relevance - rec.gold)
        return f"grade {rec.relevance}, gold {rec.gold}: {d} apart (> {self.max_distance})" \
            if d > self.max_distance else None


def confidence(rec: Record) -> float | None:
    """Direct: max(score, 1 - score), how sure the teacher is of its relevant / not relevant verdict
    (0.5: not at all); comparison: the lower `confidence` of its two orders; listwise: None."""
    if isinstance(rec, DirectRecord):
        return max(rec.score, 1.0 - rec.score)
    if isinstance(rec, ComparisonRecord):
        return min(rec.confidence, rec.swapped.confidence) if rec.swapped is not None else rec.confidence
    return None


class MinConfidence(Rule):
    def __init__(self, threshold: float):
        super().__init__("min-confidence", {"min_confidence": threshold}, ("direct", "comparison"))
        self.threshold = threshold

    def check(self, rec: Record) -> str | None:
        c = confidence(rec)
        return f"confidence {c:.3g} < {self.threshold:g}" if c is not None and c < self.threshold else None


class Length(Rule):
    def __init__(self, min_words: int | None, max_words: int | None):
        super().__init__("length", {"min_words": min_words, "max_words": max_words})
        self.lo, self.hi = min_words, max_words

    def applies(self, rec: Record) -> bool:
        return bool(reasoning_texts(rec))

    def check(self, rec: Record) -> str | None:
        for what, text in reasoning_texts(rec):
            n = len(text.split())
            if self.lo is not None and n < self.lo:
                return f"{what}: {n} words (< {self.lo})"
            if self.hi is not None and n > self.hi:
                return f"{what}: {n} words (> {self.hi})"
        return None


def window_ndcg(rec: ListwiseRecord, *, k: int = 10) -> float:
    """nDCG@k of the teacher's ranking against the gold grades of the window's documents (trec_eval's
    definition, the ideal built from the window); NaN when no document of the window is relevant."""
    gold = {d.docid: rec.gold[d.docid] for d in rec.documents if d.docid in rec.gold}
    scores = {d: float(len(rec.ranking) - i) for i, d in enumerate(rec.ranking)}
    return metrics.ndcg_at_k(gold, scores, k=k)


class ListwiseNdcg(Rule):
    def __init__(self, threshold: float):
        super().__init__("listwise-ndcg", {"min_ndcg": threshold}, ("listwise",))
        self.threshold = threshold

    def applies(self, rec: Record) -> bool:
        return isinstance(rec, ListwiseRecord) and not math.isnan(window_ndcg(rec))

    def check(self, rec: ListwiseRecord) -> str | None:
        v = window_ndcg(rec)
        return f"nDCG@10 {v:.3f} < {self.threshold:g}" if v < self.threshold else None


def _joined(rec: Record) -> str:
    return "\n".join(text for _, text in reasoning_texts(rec))


class ExactDuplicate(Rule):
    """The same normalized reasoning as a record kept before it (rollouts of one request excepted:
    their agreement is what `self-consistency` counts)."""

    def __init__(self):
        super().__init__("exact-duplicate", {"normalization": "NFKC, case folded, whitespace collapsed"})

    def applies(self, rec: Record) -> bool:
        return bool(normalize(_joined(rec)))

    def judge(self, recs: list[Record]) -> dict[str, str]:
        first: dict[str, dict[Hashable, str]] = {}  # text -> group -> first key kept
        out = {}
        for r in recs:
            text = normalize(_joined(r))
            if not text:
                continue
            group, seen = request_group(r), first.setdefault(text, {})
            other = next((k for g, k in seen.items() if g != group), None)
            if other is not None:
                out[r.key] = f"the same reasoning as {other}"
            else:
                seen.setdefault(group, r.key)
        return out


class NearDuplicate(Rule):
    def __init__(self, threshold: float):
        super().__init__("near-duplicate", {"jaccard": threshold, "shingle_words": 5, "method": "MinHash LSH, "
                                            "128 permutations, verified by exact Jaccard"})
        self.threshold = threshold

    def applies(self, rec: Record) -> bool:
        return bool(shingles(_joined(rec)).size)

    def judge(self, recs: list[Record]) -> dict[str, str]:
        index, out = MinHashIndex(self.threshold), {}
        for r in recs:
            sh, group = shingles(_joined(r)), request_group(r)
            hit = index.near(sh, group=group)
            if hit is not None:
                out[r.key] = f"Jaccard {hit[1]:.2f} (>= {self.threshold:g}) with {hit[0]}"
            else:
                index.add(r.key, sh, group=group)
        return out


class SelfConsistency(Rule):
    def __init__(self, min_agree: int):
        super().__init__("self-consistency", {"min_agree": min_agree})
        self.min_agree = min_agree

    def judge(self, recs: list[Record]) -> dict[str, str]:
        groups: dict[Hashable, list[Record]] = {}
        for r in recs:
            groups.setdefault(request_group(r), []).append(r)
        out = {}
        for members in groups.values():
            votes = Counter(answer(r) for r in members).most_common()
            top, n = votes[0]
            unique = len(votes) == 1 or votes[1][1] < n
            for r in members:
                if not unique or n < self.min_agree:
                    tally = ", ".join(f"{_say(a)} x{c}" for a, c in votes)
                    out[r.key] = f"no answer has {self.min_agree} of {len(members)} rollouts ({tally})"
                elif answer(r) != top:
                    out[r.key] = f"minority {_say(answer(r))}: {_say(top)} has {n} of {len(members)} rollouts"
        return out


@dataclass
class RuleCount:
    applies: int = 0  # records of the input the rule can judge
    dropped: int = 0  # dropped by this rule in the funnel (the first rule to drop them)
    flagged: int = 0  # dropped by this rule applied alone to the whole input


@dataclass
class Funnel:
    kept: dict[str, list[Record]] = field(default_factory=dict)
    filtered: list[Filtered] = field(default_factory=list)
    counts: dict[str, dict[str, RuleCount]] = field(default_factory=dict)  # kind -> rule -> counts


def run_funnel(records: dict[str, list[Record]], rules: list[Rule]) -> Funnel:
    """Apply `rules` (in `FILTER_RULES` order) to the records of each kind (see the module docstring)."""
    rules = sorted(rules, key=lambda r: FILTER_RULES.index(r.name))
    funnel = Funnel()
    for kind, recs in records.items():
        mine = [rule for rule in rules if kind in rule.kinds]
        alone = {rule.name: rule.judge(recs) for rule in mine}
        survivors, dropped_by = recs, {}
        counts = funnel.counts[kind] = {}
        for rule in mine:
            flagged = alone[rule.name] if len(survivors) == len(recs) else rule.judge(survivors)
            counts[rule.name] = RuleCount(applies=sum(1 for r in recs if rule.applies(r)),
                                          dropped=len(flagged), flagged=len(alone[rule.name]))
            for key, why in flagged.items():
                dropped_by[key] = (rule.name, why)
            survivors = [r for r in survivors if r.key not in flagged]
        funnel.kept[kind] = survivors
        for r in recs:
            if r.key in dropped_by:
                name, why = dropped_by[r.key]
                also = [x.name for x in mine if x.name != name and r.key in alone[x.name]]
                funnel.filtered.append(Filtered(kind=r.kind, key=r.key, rule=name, detail=why, also=also, record=r))
    return funnel
