"""The problems a run's data shows, in words: what `report` puts at the top of its page and `publish`
writes into the dataset card, from the same `r2r_synth.runstats` summary.

Each check looks at one figure and names the problem only when the figure is far from what a teacher
that reads the passages would give, so a clean run shows none:

- **constant label**: one grade for (nearly) every direct record; agreement with gold then measures how
  often gold happens to be that grade, not the teacher;
- **position bias**: the teacher prefers the passage shown first (or second) far beyond chance, and its
  answers flip when the order is swapped; for listwise windows, its ranks follow the order shown;
- **keeps the order shown**: listwise rankings that repeat the window's order;
- **high reject rate**, **repeated reasoning** (the same text for many records), **short reasoning**,
  and **no better than a constant** (gold agreement that a constant grade matches).

`agreement_rows` gives every agreement figure beside the figure a constant teacher would get, and
`label_distribution` the distribution it depends on, so neither the page nor the card quotes
"binary accuracy 1.000" for a teacher that graded every passage 3 without saying so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from r2r_synth.runstats import KindSummary, binomial_p

CONSTANT_SHARE = 0.9  # one grade for at least this share of direct records
MIN_RECORDS = 5  # fewer records than this say too little to name a problem
BIAS_SHARE = 0.15  # preferring the first (or second) shown passage this far from one half ...
BIAS_P = 0.01  # ... with a binomial p value below this
LOW_SWAP = 0.6  # swap consistency below this (a teacher guessing at random scores 0.5)
KEEPS_ORDER_SHARE = 0.5  # listwise windows returned in the order shown
TAU_BIAS = 0.2  # mean Kendall tau of position vs rank at least this far from 0 ...
TAU_Z = 3.0  # ... and this many standard errors
REJECT_SHARE = 0.10
REPEATED_SHARE = 0.2
SHORT_WORDS = 5  # median words of reasoning below this

CHECKS = {
    "constant label": f"one grade for at least {CONSTANT_SHARE:.0%} of the direct records",
    "position bias": "comparisons preferring the passage shown first or second beyond chance, answers that flip "
                     "when the order is swapped, listwise ranks that follow the order shown",
    "keeps the order shown": f"at least {KEEPS_ORDER_SHARE:.0%} of listwise windows ranked exactly as shown",
    "high reject rate": f"at least {REJECT_SHARE:.0%} of the requests of a kind rejected",
    "unreadable input": "input lines that could not be read (rejects of kind 'input')",
    "repeated reasoning": f"at least {REPEATED_SHARE:.0%} of the reasoning texts repeated word for word",
    "short reasoning": f"a median under {SHORT_WORDS} words of reasoning",
    "no better than a constant": "agreement with gold that answering one grade for every passage matches",
}

AGREEMENT_NAMES = {
    "exact": "exact grade agreement",
    "within_one": "within one grade",
    "binary_accuracy": "binary accuracy (grade ≥ 2 = relevant)",
    "preference_accuracy": "preference accuracy (pairs whose gold grades differ)",
    "swap_consistency": "swap consistency (same passage preferred in both orders)",
}


@dataclass(frozen=True)
class Problem:
    """One problem of one record kind: `check` names it (a key of `CHECKS`), `text` states it with its
    figures, `advice` says what to do about it."""

    kind: str
    check: str
    text: str
    advice: str


def pct(n: int, total: int) -> str:
    return f"{n / total:.0%}" if total else "n/a"


def label_distribution(s: KindSummary) -> str:
    """`3: 14, 1: 1` style counts of the teacher's grades, with the share of the most common one."""
    labels = ", ".join(f"{g}: {n}" for g, n in sorted(s.label_counts.items()))
    if s.top_label is None or not s.records:
        return labels
    g, n = s.top_label
    return f"{labels} (grade {g} for {n} of {s.records}, {pct(n, s.records)})"


def is_constant(s: KindSummary) -> bool:
    """Whether one grade covers at least `CONSTANT_SHARE` of the direct records (and they are enough to say)."""
    return bool(s.kind == "direct" and s.top_label and s.records >= MIN_RECORDS
                and s.top_label[1] / s.records >= CONSTANT_SHARE)


def agreement_rows(s: KindSummary) -> list[tuple[str, float | None, str]]:
    """(readable measure name, value, what it is to be read against) for every agreement figure of `s`.
    Direct figures come with the score of a teacher answering its most common grade for every passage."""
    rows = []
    for key, value in s.agreement.items():
        v = None if value is None or (isinstance(value, float) and math.isnan(value)) else value
        name = AGREEMENT_NAMES.get(key, key)
        if key in s.baselines and s.top_label is not None:
            ref = f"a constant grade {s.top_label[0]} scores {s.baselines[key]:.3f}"
        elif key == "swap_consistency":
            ref = "a teacher guessing at random scores 0.5; one that always picks the first shown scores 0"
        elif key in s.baselines and s.preferred_counts:
            top = max(s.preferred_counts, key=s.preferred_counts.get)
            ref = f"always answering {top} scores {s.baselines[key]:.3f}; guessing at random 0.5"
        else:
            ref = ""
        rows.append((name, v, ref))
    return rows


def _embedded(s: KindSummary) -> str:
    if any(t.startswith("embedded/") for t in s.teachers):
        return (" The embedded teacher (SmolLM2-135M) is there to try the toolkit offline: its judgements are "
                "close to noise; use a real teacher (--teacher) for data you train on.")
    return ""


def find_problems(summary: dict[str, KindSummary]) -> list[Problem]:
    """Every problem the summary shows, kind by kind, in the order of `CHECKS`."""
    out: list[Problem] = []
    for kind, s in summary.items():
        if kind == "direct" and s.records:
            out += _direct(s)
        if kind == "comparison" and s.records:
            out += _comparison(s)
        if kind == "listwise" and s.records:
            out += _listwise(s)
        out += _common(s)
    order = list(CHECKS)
    return sorted(out, key=lambda p: order.index(p.check) if p.check in order else len(order))


def _direct(s: KindSummary) -> list[Problem]:
    out = []
    if is_constant(s):
        g, n = s.top_label
        gold_n = s.gold_counts.get(g, 0)
        gold_total = sum(s.gold_counts.values())
        gold = (f" Gold labels give grade {g} to {gold_n} of {gold_total} ({pct(gold_n, gold_total)})."
                if gold_total else "")
        what = "every passage" if n == s.records else f"{n} of {s.records} passages ({pct(n, s.records)})"
        agree = ""
        if s.judged:
            figures = [f"{AGREEMENT_NAMES.get(k, k)} {v:.3f} (a constant {g}: {s.baselines[k]:.3f})"
                       for k, v in s.agreement.items() if v is not None and not math.isnan(v) and k in s.baselines]
            agree = (f" Agreement with gold then measures how many gold labels happen to match grade {g}, not "
                     "the teacher's judgement: " + ", ".join(figures) + ".")
        out.append(Problem("direct", "constant label",
                           f"Constant label: the teacher gave grade {g} to {what}.{gold}{agree} "
                           "A label that does not vary carries no signal for a student to learn.",
                           "Read some records by hand; use a stronger teacher or a better prompt." + _embedded(s)))
    elif s.judged >= 10 and s.baselines.get("binary_accuracy") is not None:
        acc, base = s.agreement.get("binary_accuracy"), s.baselines["binary_accuracy"]
        if acc is not None and not math.isnan(acc) and acc <= base:
            out.append(Problem("direct", "no better than a constant",
                               f"No better than a constant: binary accuracy {acc:.3f} against gold, while grading "
                               f"every passage {s.top_label[0]} scores {base:.3f} on the same "
                               f"{s.judged} judged records.",
                               "Read the records that disagree with gold; use a stronger teacher or a better prompt."
                               + _embedded(s)))
    return out


def _comparison(s: KindSummary) -> list[Problem]:
    if s.answers < MIN_RECORDS:
        return []
    share = s.first_shown / s.answers
    p = binomial_p(s.first_shown, s.answers)
    swapped = s.swap_checked >= MIN_RECORDS
    low_swap = swapped and s.swap_agree / s.swap_checked < LOW_SWAP
    biased = abs(share - 0.5) >= BIAS_SHARE and p < BIAS_P
    if not swapped:
        # Asked in one order only, "first shown" is also the first stage's better passage in most pair
        # strategies: only an extreme share is named, and the two causes are not told apart.
        if share >= 1 - BIAS_SHARE / 1.5 or share <= BIAS_SHARE / 1.5:
            return [Problem("comparison", "position bias",
                            f"Position bias (possible): the teacher preferred the passage shown first in "
                            f"{s.first_shown} of {s.answers} pairs ({pct(s.first_shown, s.answers)}); the pairs "
                            "were asked in one order only, so this cannot be told apart from the first stage's order.",
                            "Ask every pair in both orders (the default of generate) to measure position bias.")]
        return []
    if not (biased or low_swap):
        return []
    side = "first" if share >= 0.5 else "second"
    n_side = s.first_shown if side == "first" else s.answers - s.first_shown
    pv = f"{p:.1e}" if p < 0.001 else f"{p:.3f}"
    flips = s.swap_checked - s.swap_agree
    text = (f"Position bias: in {n_side} of {s.answers} answers ({pct(n_side, s.answers)}) the teacher preferred the "
            f"passage shown {side} (chance: 50%, binomial p = {pv}); {flips} of {s.swap_checked} pairs changed "
            f"their preference when the order was swapped (swap consistency {s.swap_agree / s.swap_checked:.2f}). "
            "Such comparisons say which passage came first, not which is more relevant.")
    return [Problem("comparison", "position bias", text,
                    "Train only on the pairs whose two orders agree (swap_agrees is true), and use a stronger "
                    "teacher." + _embedded(s))]


def _listwise(s: KindSummary) -> list[Problem]:
    out = []
    if s.records < MIN_RECORDS or not s.window_docs:
        return out
    n_max = len(s.position_rank or [])
    chance_same = 1 / n_max if n_max else 0.0
    chance_keep = 1 / math.factorial(n_max) if n_max else 0.0
    keeps = (f"{s.keeps_order} of {s.records} windows ({pct(s.keeps_order, s.records)}) were returned in the order "
             f"shown (chance: {chance_keep:.1%})")
    if s.keeps_order / s.records >= KEEPS_ORDER_SHARE:
        out.append(Problem("listwise", "keeps the order shown",
                           f"Keeps the order shown: {keeps}; such rankings repeat the first stage instead of "
                           "judging the passages.",
                           "Shuffle the window before asking, or use a stronger teacher." + _embedded(s)))
    elif s.mean_tau is not None and abs(s.mean_tau) >= TAU_BIAS and abs(s.tau_z or 0) >= TAU_Z:
        direction = "follow" if s.mean_tau > 0 else "reverse"
        out.append(Problem(
            "listwise", "position bias",
            f"Position bias: the teacher's ranks {direction} the order it was shown: mean Kendall tau "
            f"{s.mean_tau:+.2f} between a passage's position in the window and its rank (random orders: 0, "
            f"z = {s.tau_z:.1f}); {s.same_position} of {s.window_docs} passages ({pct(s.same_position, s.window_docs)}) "
            f"kept their position (chance: {chance_same:.0%}) and {keeps}. This is the bright diagonal of the "
            "position-vs-rank heat map. Where the window is in the first stage's order, part of it can be that "
            "order's own signal" + (": compare with the gold labels." if s.judged else
                                    "; without gold labels the two cannot be told apart."),
            "Shuffle the window before asking (or ask each window in two orders) and compare the rankings."))
    return out


def _common(s: KindSummary) -> list[Problem]:
    out = []
    if s.kind == "input":
        if s.rejects:
            top = f" (most often: {s.reject_reasons[0][0]}, {s.reject_reasons[0][1]})" if s.reject_reasons else ""
            out.append(Problem("input", "unreadable input", f"Unreadable input: {s.rejects} input "
                               f"line{'s' if s.rejects != 1 else ''} could not be read and "
                               f"{'were' if s.rejects != 1 else 'was'} asked nothing{top}.", "Read rejects.jsonl (kind 'input'): each names "
                               "its file and line; fix them and run again."))
        return out
    asked = s.records + s.rejects
    if asked >= MIN_RECORDS and s.rejects / asked >= REJECT_SHARE:
        top = f" (most often: {s.reject_reasons[0][0]}, {s.reject_reasons[0][1]})" if s.reject_reasons else ""
        out.append(Problem(s.kind, "high reject rate",
                           f"High reject rate: {s.rejects} of {asked} {s.kind} requests ({pct(s.rejects, asked)}) "
                           f"were rejected{top}.",
                           "Read rejects.jsonl: an unparseable reply calls for a stronger teacher or more "
                           "--max-tokens; a transport failure is asked again by rerunning the command."))
    if s.reasoning_texts >= MIN_RECORDS and s.repeated_reasoning / s.reasoning_texts >= REPEATED_SHARE:
        out.append(Problem(s.kind, "repeated reasoning",
                           f"Repeated reasoning: {s.repeated_reasoning} of {s.reasoning_texts} reasoning texts "
                           f"({pct(s.repeated_reasoning, s.reasoning_texts)}) occur more than once, word for word: "
                           "boilerplate that does not speak of the passage.",
                           "A stronger teacher or a better prompt writes reasoning about each passage."))
    words = sorted(s.reasoning_words)
    if len(words) >= MIN_RECORDS and words[len(words) // 2] < SHORT_WORDS:
        out.append(Problem(s.kind, "short reasoning",
                           f"Short reasoning: the median {s.kind} reasoning has {words[len(words) // 2]} words.",
                           "A reasoning student learns little from a few words; ask for an explanation in the "
                           "prompt or use a stronger teacher."))
    return out
