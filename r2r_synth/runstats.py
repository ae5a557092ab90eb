"""Summarize a run directory: what `publish` writes into the dataset card and what `report` plots.
Both stages read runs through `r2r_synth.rundir` and summarize them here, so the card and the report
never disagree.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from r2r_synth.rundir import KIND_ORDER, Run
from r2r_synth.schemas import ComparisonRecord, DirectRecord, ListwiseRecord

log = logging.getLogger(__name__)


def reason_category(reason: str) -> str:
    """A short, countable category for a reject reason: its text up to the first ': ' after any
    leading `file:line:` location (e.g. 'validation', 'unparseable reply', 'duplicate')."""
    text = reason.strip()
    parts = [p.strip() for p in text.split(": ")]
    # Skip a leading "path:line" location, which rejects from readers carry.
    while len(parts) > 1 and (":" in parts[0] and parts[0].rsplit(":", 1)[-1].isdigit()):
        parts = parts[1:]
    head = parts[0] if parts else text
    return head[:80] or "(no reason given)"


def _words(text: str | None) -> int:
    return len(text.split()) if text else 0


@dataclass
class KindSummary:
    """Counts and quality figures of one record kind."""

    kind: str
    records: int = 0
    queries: int = 0
    rejects: int = 0
    reject_reasons: list[tuple[str, int]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None
    cost_unknown: int = 0
    teachers: list[str] = field(default_factory=list)
    programs: dict[str, str] = field(default_factory=dict)  # program name -> program hash
    prompts: dict[str, list[str]] = field(default_factory=dict)  # program name -> its prompt hashes, first seen first
    reasoning_words: list[int] = field(default_factory=list)
    # direct
    label_counts: dict[int, int] = field(default_factory=dict)
    gold_counts: dict[int, int] = field(default_factory=dict)
    confusion: list[list[int]] | None = None  # [gold][teacher], 4x4, judged records only
    judged: int = 0
    agreement: dict[str, float] = field(default_factory=dict)
    # comparison
    preferred_counts: dict[str, int] = field(default_factory=dict)
    swap_checked: int = 0
    swap_agree: int = 0
    # listwise: rows = first-stage position in the window, columns = the teacher's rank
    position_rank: list[list[int]] | None = None


def summarize(run: Run, *, top_reasons: int = 5) -> dict[str, KindSummary]:
    """One `KindSummary` per kind that has records or rejects."""
    out: dict[str, KindSummary] = {}
    rejects_by_kind: dict[str, Counter] = {}
    for r in run.rejects:
        rejects_by_kind.setdefault(r.kind, Counter())[reason_category(r.reason)] += 1
    for kind in KIND_ORDER:
        recs = run.records.get(kind, [])
        rej = rejects_by_kind.get(kind, Counter())
        if not recs and not rej:
            continue
        s = KindSummary(kind=kind, records=len(recs), queries=len({r.query.qid for r in recs}),
                        rejects=sum(rej.values()), reject_reasons=rej.most_common(top_reasons))
        teachers: dict[str, None] = {}
        costs = []
        for r in recs:
            p = r.provenance
            teachers[p.teacher] = None
            s.programs[p.program] = p.program_hash
            if p.prompt_hash not in s.prompts.setdefault(p.program, []):
                s.prompts[p.program].append(p.prompt_hash)
            if p.usage is not None:
                s.prompt_tokens += p.usage.prompt_tokens
                s.completion_tokens += p.usage.completion_tokens
                s.total_tokens += p.usage.total_tokens
            if p.cost is None:
                s.cost_unknown += 1
            else:
                costs.append(p.cost)
        s.teachers = list(teachers)
        s.cost = sum(costs) if costs else None
        if kind == "direct":
            _direct(s, recs)
        elif kind == "comparison":
            _comparison(s, recs)
        elif kind == "listwise":
            _listwise(s, recs)
        out[kind] = s
    # Rejects of kinds outside the three record kinds (e.g. 'input') still count.
    for kind, rej in rejects_by_kind.items():
        if kind not in out:
            out[kind] = KindSummary(kind=kind, rejects=sum(rej.values()), reject_reasons=rej.most_common(top_reasons))
    return out


def _direct(s: KindSummary, recs: list[DirectRecord]) -> None:
    s.label_counts = dict(sorted(Counter(r.relevance for r in recs).items()))
    s.gold_counts = dict(sorted(Counter(r.gold for r in recs if r.gold is not None).items()))
    s.reasoning_words = [_words(r.reasoning) for r in recs]
    judged = [r for r in recs if r.gold is not None]
    s.judged = len(judged)
    if judged:
        conf = [[0] * 4 for _ in range(4)]
        for r in judged:
            conf[r.gold][r.relevance] += 1
        s.confusion = conf
        s.agreement = direct_agreement([r.relevance for r in judged], [r.gold for r in judged])


def _comparison(s: KindSummary, recs: list[ComparisonRecord]) -> None:
    s.preferred_counts = dict(sorted(Counter(r.preferred for r in recs).items()))
    s.reasoning_words = [_words(r.reasoning) for r in recs] + [_words(r.swapped.reasoning) for r in recs if r.swapped]
    checked = [r for r in recs if r.swapped is not None]
    s.swap_checked = len(checked)
    s.swap_agree = sum(1 for r in checked if r.swap_agrees)
    if checked:
        from r2r_synth import metrics

        s.agreement["swap_consistency"] = metrics.swap_consistency(
            [(r.preferred, r.swapped.preferred) for r in checked], frame="record")
    judged = [r for r in recs if r.gold_a is not None and r.gold_b is not None and r.gold_a != r.gold_b]
    s.judged = len(judged)
    if judged:
        s.agreement.update(comparison_agreement(judged))


def _listwise(s: KindSummary, recs: list[ListwiseRecord]) -> None:
    s.reasoning_words = [_words(i.reason) for r in recs for i in r.items if i.reason]
    n = max(len(r.documents) for r in recs)
    grid = [[0] * n for _ in range(n)]
    for r in recs:
        rank = {d: i for i, d in enumerate(r.ranking)}
        for pos, d in enumerate(r.documents):
            grid[pos][rank[d.docid]] += 1
    s.position_rank = grid
    s.judged = sum(1 for r in recs if r.gold)


def direct_agreement(teacher: list[int], gold: list[int]) -> dict[str, float]:
    """Agreement of the teacher's graded labels with gold labels (judged records only)."""
    from r2r_synth import metrics

    return {
        "exact": metrics.exact_agreement(gold, teacher),
        "within_one": metrics.within_one_agreement(gold, teacher),
        "binary_accuracy": metrics.binary_accuracy(gold, teacher),
    }


def comparison_agreement(recs: list[ComparisonRecord]) -> dict[str, float]:
    """Preference accuracy against gold, over pairs whose gold grades differ."""
    from r2r_synth import metrics

    gold = ["A" if r.gold_a > r.gold_b else "B" for r in recs]
    return {"preference_accuracy": metrics.preference_accuracy(gold, [r.preferred for r in recs])}
