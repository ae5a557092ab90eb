"""Summarize a run directory: what `publish` writes into the dataset card and what `report` plots.
Both stages read runs through `r2r_synth.rundir` and summarize them here, so the card and the report
never disagree.
"""

from __future__ import annotations

import logging
import math
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
    cached_tokens: int = 0  # prompt tokens served from the provider's prompt cache
    cache_saved: float = 0.0  # USD that cache saved (priced records)
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
    # figures the problem checks (r2r_synth.problems) read
    has_usage: bool = False  # some record carries token usage (imported corpora carry none)
    repeated_reasoning: int = 0  # reasoning texts that occur more than once, counted per occurrence
    reasoning_texts: int = 0
    baselines: dict[str, float] = field(default_factory=dict)  # agreement of a constant teacher (see _direct)
    top_label: tuple[int, int] | None = None  # direct: (most common grade, its records)
    top_score: tuple[float, int] | None = None  # direct: (most common score, its records)
    answers: int = 0  # comparison: answers in either order
    first_shown: int = 0  # comparison: answers preferring the document shown first
    keeps_order: int = 0  # listwise: windows ranked exactly in the order shown
    same_position: int = 0  # listwise: documents whose rank is their position in the window
    window_docs: int = 0
    mean_tau: float | None = None  # listwise: mean Kendall tau of shown position vs the teacher's rank
    tau_z: float | None = None  # its z score against random orders


def cache_line(kinds: list[KindSummary]) -> str | None:
    """`62.5 % of input tokens served from cache, $0.0123 saved` over these kinds (None: nothing cached)."""
    prompt, cached = sum(s.prompt_tokens for s in kinds), sum(s.cached_tokens for s in kinds)
    if not cached or not prompt:
        return None
    priced = any(s.cost is not None for s in kinds)
    saved = f"${sum(s.cache_saved for s in kinds):.4f} saved" if priced else "savings unknown (unpriced)"
    return f"{100 * cached / prompt:.1f} % of input tokens served from cache ({cached:,} of {prompt:,}), {saved}"


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
                s.cached_tokens += p.usage.cached_tokens
            if p.cache_saved is not None:
                s.cache_saved += p.cache_saved
            if p.cost is None:
                s.cost_unknown += 1
            else:
                costs.append(p.cost)
        s.teachers = list(teachers)
        s.cost = sum(costs) if costs else None
        s.has_usage = any(r.provenance.usage is not None and r.provenance.usage.total_tokens for r in recs)
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


def _repeats(s: KindSummary, texts: list[str]) -> None:
    counts = Counter(" ".join(t.split()).lower() for t in texts if t and t.strip())
    s.reasoning_texts = sum(counts.values())
    s.repeated_reasoning = sum(n for n in counts.values() if n > 1)


def _direct(s: KindSummary, recs: list[DirectRecord]) -> None:
    s.label_counts = dict(sorted(Counter(r.relevance for r in recs).items()))
    s.gold_counts = dict(sorted(Counter(r.gold for r in recs if r.gold is not None).items()))
    s.reasoning_words = [_words(r.reasoning) for r in recs]
    _repeats(s, [r.reasoning for r in recs])
    s.top_label = max(s.label_counts.items(), key=lambda kv: (kv[1], -kv[0]))
    s.top_score = Counter(round(r.score, 3) for r in recs).most_common(1)[0]
    judged = [r for r in recs if r.gold is not None]
    s.judged = len(judged)
    if judged:
        conf = [[0] * 4 for _ in range(4)]
        for r in judged:
            conf[r.gold][r.relevance] += 1
        s.confusion = conf
        gold = [r.gold for r in judged]
        s.agreement = direct_agreement([r.relevance for r in judged], gold)
        # What a teacher answering its most common grade for every passage would score: an agreement
        # figure means something only beside it (a constant 3 scores the share of gold >= 2 in binary
        # accuracy).
        s.baselines = direct_agreement([s.top_label[0]] * len(gold), gold)


def _comparison(s: KindSummary, recs: list[ComparisonRecord]) -> None:
    s.preferred_counts = dict(sorted(Counter(r.preferred for r in recs).items()))
    s.reasoning_words = [_words(r.reasoning) for r in recs] + [_words(r.swapped.reasoning) for r in recs if r.swapped]
    _repeats(s, [r.reasoning for r in recs] + [r.swapped.reasoning for r in recs if r.swapped])
    # The document shown first is A in the record's own order and B in the swapped one (whose answer
    # is stored translated back into the record's labels).
    s.answers = len(recs) + sum(1 for r in recs if r.swapped)
    s.first_shown = sum(r.preferred == "A" for r in recs) + sum(r.swapped.preferred == "B" for r in recs if r.swapped)
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
        # A teacher answering its most common label for every pair (always "A": the first stage's order
        # in most pair strategies) scores the share of pairs gold orders that way.
        from r2r_synth import metrics

        top = max(s.preferred_counts, key=s.preferred_counts.get)
        gold = ["A" if r.gold_a > r.gold_b else "B" for r in judged]
        s.baselines["preference_accuracy"] = metrics.preference_accuracy(gold, [top] * len(gold))


def _listwise(s: KindSummary, recs: list[ListwiseRecord]) -> None:
    s.reasoning_words = [_words(i.reason) for r in recs for i in r.items if i.reason]
    _repeats(s, [i.reason for r in recs for i in r.items if i.reason])
    if not recs:  # rejects only: no window to count
        return
    from r2r_synth import metrics

    n = max(len(r.documents) for r in recs)
    grid = [[0] * n for _ in range(n)]
    taus, var = [], 0.0
    for r in recs:
        rank = {d: i for i, d in enumerate(r.ranking)}
        ranks = [rank[d.docid] for d in r.documents]
        for pos, d in enumerate(r.documents):
            grid[pos][rank[d.docid]] += 1
        s.keeps_order += ranks == sorted(ranks)
        s.same_position += sum(pos == k for pos, k in enumerate(ranks))
        s.window_docs += len(ranks)
        m = len(ranks)
        if m >= 2:
            # Kendall's tau between the window's order and the teacher's: 1 kept, -1 reversed.
            taus.append(metrics.kendall_tau({str(i): i for i in range(m)}, {str(i): k for i, k in enumerate(ranks)}))
            var += 2 * (2 * m + 5) / (9 * m * (m - 1))  # variance of tau over random orders of m items
    s.position_rank = grid
    s.judged = sum(1 for r in recs if r.gold)
    if taus:
        s.mean_tau = sum(taus) / len(taus)
        s.tau_z = s.mean_tau / (math.sqrt(var) / len(taus))


def binomial_p(k: int, n: int) -> float:
    """Two-sided p value of `k` successes in `n` fair coin flips (exact)."""
    if n == 0:
        return 1.0
    tail = max(k, n - k)
    p = 2 * sum(math.comb(n, i) for i in range(tail, n + 1)) / 2**n
    return min(1.0, p)


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
