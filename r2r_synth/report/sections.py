"""The parts of the report page that show what the teacher said: the problems the data shows (in words,
from `r2r_synth.problems`), and one section per record kind the run has — the label distribution
beside the agreement figures that depend on it, and a sample of records with their reasoning, the
records that disagree with gold first.

HTML only (no script): the page stays one self-contained file. Long passages are cut (the cut is
said), and every cell and paragraph may break anywhere, so the page fits a narrow screen.
"""

from __future__ import annotations

import hashlib
import html
import math
from typing import Any

from r2r_synth.problems import CHECKS, Problem, agreement_rows, label_distribution, pct
from r2r_synth.rundir import KIND_ORDER, Run
from r2r_synth.runstats import KindSummary

PASSAGE_CHARS = 600  # a passage longer than this is cut on the page (the full text is in the run's files)
WINDOW_PASSAGE_CHARS = 240  # per passage of a listwise window
KIND_TITLES = {"direct": "Direct records", "comparison": "Comparison records", "listwise": "Listwise records"}

CSS = """
.problems li{margin:6px 0} .problems .advice{color:#555}
.ok{color:#2a6f2a}
.rec{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:10px 0;background:#fcfcfc}
.rec p{margin:6px 0} .rec blockquote{margin:6px 0;padding:4px 10px;border-left:3px solid #4C72B0;background:#f4f7fb}
.tag{display:inline-block;font-size:12px;padding:1px 6px;border-radius:3px;background:#eee;margin-right:4px}
.tag.bad{background:#f6d5d5;color:#7a1f1f}
.pair{display:flex;flex-wrap:wrap;gap:10px} .pair>div{flex:1 1 280px;min-width:0}
.passage{color:#333;font-size:14px} .cut{color:#888;font-style:italic}
ol.window{padding-left:22px} ol.window li{margin:6px 0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.rec code{overflow-wrap:anywhere}
"""


def esc(x: Any) -> str:
    return html.escape(str(x))


def fmt(v: Any, digits: int = 3) -> str:
    """Integers as integers, other numbers with `digits` decimals, None and NaN as 'n/a'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def table(rows: list[list[Any]], header: list[str] | None = None, *, digits: int = 3) -> str:
    """An HTML table; numbers are formatted by `fmt` (floats with `digits` decimals) and right-aligned."""
    def cell(tag: str, c: Any) -> str:
        num = isinstance(c, (int, float)) and not isinstance(c, bool)
        return f"<{tag}{' class=num' if num else ''}>{esc(fmt(c, digits))}</{tag}>"

    head = "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(cell("td", c) for c in r) + "</tr>" for r in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def problems_html(problems: list[Problem], summary: dict[str, KindSummary]) -> str:
    """The 'Problems the data shows' section: each problem in words, or what was checked and found clean."""
    if not problems:
        checked = "; ".join(f"{k} ({v})" for k, v in CHECKS.items())
        return ("<h2>Problems the data shows</h2><p class='ok'>None found. Checked: " + esc(checked) + ".</p>")
    items = "".join(f"<li><b>{esc(p.kind)}</b>: {esc(p.text)}<br><span class='advice'>What to do: {esc(p.advice)}"
                    "</span></li>" for p in problems)
    return f"<h2>Problems the data shows</h2><ul class='problems'>{items}</ul>"


# ----------------------------------------------------------------------------- per kind


def kind_sections(run: Run, summary: dict[str, KindSummary], *, samples: int) -> str:
    """One section per record kind with records: figures, then `samples` example records."""
    out = []
    for kind in KIND_ORDER:
        s = summary.get(kind)
        recs = run.records.get(kind) or []
        if s is None or not recs:
            continue
        figures = {"direct": _direct_figures, "comparison": _comparison_figures, "listwise": _listwise_figures}[kind](s)
        picked = pick_examples(kind, recs, samples)
        shown = ""
        if picked:
            n_bad = sum(1 for _, why in picked if why)
            lead = (f"{len(picked)} of {len(recs)} records" + (f", the {n_bad} that disagree most with gold first"
                                                               if n_bad else "") + ":")
            render = {"direct": _direct_rec, "comparison": _comparison_rec, "listwise": _listwise_rec}[kind]
            shown = f"<h3>Examples</h3><p>{esc(lead)}</p>" + "".join(render(r, why) for r, why in picked)
        out.append(f"<section id='{kind}'><h2>{esc(KIND_TITLES[kind])}</h2>{figures}{shown}</section>")
    return "\n".join(out)


def _agreement_table(s: KindSummary) -> str:
    rows = agreement_rows(s)
    if not rows:
        return ""
    return table([[name, v, ref] for name, v, ref in rows], ["measure", "value", "read it against"])


def _direct_figures(s: KindSummary) -> str:
    gold_total = sum(s.gold_counts.values())
    rows = [[g, s.label_counts.get(g, 0), pct(s.label_counts.get(g, 0), s.records)]
            + ([s.gold_counts.get(g, 0), pct(s.gold_counts.get(g, 0), gold_total)] if gold_total else [])
            for g in range(4)]
    header = ["grade", "teacher", "share"] + (["gold", "share"] if gold_total else [])
    parts = [f"<p>Labels of the {s.records} records: {esc(label_distribution(s))}."
             + (f" {s.judged} have a gold grade." if s.judged else " None has a gold grade.") + "</p>",
             table(rows, header), _agreement_table(s)]
    if s.top_score is not None and s.records >= 5 and s.top_score[1] / s.records >= 0.9:
        parts.append(f"<p>Score {s.top_score[0]:g} for {s.top_score[1]} of {s.records} records: the scores do not "
                     "rank these passages.</p>")
    return "".join(parts)


def _comparison_figures(s: KindSummary) -> str:
    rows = [["pairs", s.records], ["answers (both orders)", s.answers],
            ["preferred A (as asked)", s.preferred_counts.get("A", 0)],
            ["preferred B (as asked)", s.preferred_counts.get("B", 0)],
            ["answers preferring the passage shown first", s.first_shown],
            ["share preferring the passage shown first", pct(s.first_shown, s.answers)]]
    if s.swap_checked:
        rows.append(["pairs with the same preference in both orders", f"{s.swap_agree} of {s.swap_checked}"])
    return table(rows, ["figure", "value"]) + _agreement_table(s)


def _listwise_figures(s: KindSummary) -> str:
    n = len(s.position_rank or [])
    rows = [["windows", s.records], ["window size (largest)", n],
            ["windows ranked exactly as shown", f"{s.keeps_order} ({pct(s.keeps_order, s.records)}; chance "
                                                f"{1 / math.factorial(n):.1%})" if n else s.keeps_order],
            ["passages kept at their position", f"{s.same_position} of {s.window_docs} "
                                                f"({pct(s.same_position, s.window_docs)}; chance {1 / n:.0%})" if n else ""],
            ["mean Kendall tau, position vs rank", s.mean_tau],
            ["windows with gold labels", s.judged]]
    return table(rows, ["figure", "value"])


# ----------------------------------------------------------------------------- which records


def _spread(key: str) -> str:
    # A stable order that does not follow the file (which is grouped by query).
    return hashlib.sha256(key.encode()).hexdigest()


def _gap(kind: str, r: Any) -> tuple[int, str | None]:
    """How far a record disagrees with gold (0: agrees, or no gold), and the words that say so."""
    if kind == "direct":
        if r.gold is None or r.gold == r.relevance:
            return 0, None
        return abs(r.gold - r.relevance), f"disagrees with gold: teacher {r.relevance}, gold {r.gold}"
    if kind == "comparison":
        if r.gold_a is not None and r.gold_b is not None and r.gold_a != r.gold_b:
            want = "A" if r.gold_a > r.gold_b else "B"
            if r.preferred != want:
                return 2 + abs(r.gold_a - r.gold_b), (f"disagrees with gold: preferred {r.preferred}, gold grades "
                                                      f"A {r.gold_a}, B {r.gold_b}")
        if r.swapped is not None and not r.swap_agrees:
            return 1, "position-biased: the preference changed when the order was swapped"
        return 0, None
    top = r.ranking[0]
    if top in r.gold and r.gold:
        best = max(r.gold.values())
        if r.gold[top] < best:
            return best - r.gold[top], (f"disagrees with gold: ranked first a passage of gold grade {r.gold[top]}, "
                                        f"the window has grade {best}")
    return 0, None


def pick_examples(kind: str, records: list[Any], n: int) -> list[tuple[Any, str | None]]:
    """Up to `n` records of `kind`: those that disagree with gold first (largest gap first), then a
    spread of the rest; each with why it is shown first (None for the rest)."""
    scored = [(*_gap(kind, r), r) for r in records]
    bad = sorted((x for x in scored if x[0]), key=lambda x: (-x[0], _spread(x[2].key)))
    rest = sorted((x for x in scored if not x[0]), key=lambda x: _spread(x[2].key))
    return [(r, why) for _, why, r in (bad + rest)[:max(0, n)]]


# ----------------------------------------------------------------------------- one record


def _passage(text: str, limit: int) -> str:
    if len(text) <= limit:
        return esc(text)
    return esc(text[:limit].rstrip()) + f"… <span class='cut'>(cut: {len(text):,} characters in all)</span>"


def _doc(d: Any, limit: int = PASSAGE_CHARS) -> str:
    title = f"<b>{esc(d.title)}</b> " if d.title else ""
    return f"<code>{esc(d.docid)}</code> {title}<span class='passage'>{_passage(d.text, limit)}</span>"


def _head(r: Any, why: str | None) -> str:
    tag = f"<span class='tag bad'>{esc(why)}</span>" if why else ""
    return f"<div class='rec'>{tag}<p><b>Query</b> <code>{esc(r.query.qid)}</code> {esc(r.query.text)}</p>"


def _direct_rec(r: Any, why: str | None) -> str:
    rank = f" (first-stage rank {r.first_stage_rank})" if r.first_stage_rank is not None else ""
    gold = f" · gold <b>{r.gold}</b>" if r.gold is not None else ""
    return (_head(r, why) + f"<p><b>Passage</b>{esc(rank)} {_doc(r.document)}</p>"
            f"<blockquote>{esc(r.reasoning)}</blockquote>"
            f"<p>teacher grade <b>{r.relevance}</b> · score {r.score:.2f}{gold}</p></div>")


def _shown(first: bool) -> str:
    return f" <span class='cut'>(the one shown {'first' if first else 'second'})</span>"


def _comparison_rec(r: Any, why: str | None) -> str:
    def side(label: str, d: Any, g: int | None) -> str:
        gold = f" · gold {g}" if g is not None else ""
        return f"<div><p><b>{label}</b>{gold}: {_doc(d, PASSAGE_CHARS // 2)}</p></div>"

    body = (f"<div class='pair'>{side('A', r.doc_a, r.gold_a)}{side('B', r.doc_b, r.gold_b)}</div>"
            f"<p>Asked with A first: preferred <b>{r.preferred}</b>{_shown(r.preferred == 'A')} "
            f"(confidence {r.confidence:.2f})</p><blockquote>{esc(r.reasoning)}</blockquote>")
    if r.swapped is not None:
        body += (f"<p>Asked with B first: preferred <b>{r.swapped.preferred}</b>{_shown(r.swapped.preferred == 'B')} "
                 f"(confidence {r.swapped.confidence:.2f})</p><blockquote>{esc(r.swapped.reasoning)}</blockquote>")
    return _head(r, why) + body + "</div>"


def _listwise_rec(r: Any, why: str | None) -> str:
    shown = {d.docid: i + 1 for i, d in enumerate(r.documents)}
    docs = {d.docid: d for d in r.documents}
    items = {i.docid: i for i in r.items}
    lis = []
    for docid in r.ranking:
        it = items.get(docid)
        gold = f" · gold {r.gold[docid]}" if docid in r.gold else ""
        reason = "".join(f"<br>{esc(x)}" for x in ((it.reason, it.comparison_reason) if it else ()) if x)
        lis.append(f"<li>(shown {shown[docid]}){gold} {_doc(docs[docid], WINDOW_PASSAGE_CHARS)}"
                   f"<blockquote>{reason[4:] if reason else '<i>no reason given</i>'}</blockquote></li>")
    return (_head(r, why) + f"<p>The teacher's ranking of the {len(r.documents)} passages (with the position each "
            f"was shown at):</p><ol class='window'>{''.join(lis)}</ol></div>")
