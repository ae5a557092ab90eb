"""The report's plots: matplotlib figures (Agg backend, no display) as PNG bytes. A legend that would
cover data is moved below the axes (`legends_off_data`)."""

from __future__ import annotations

import io
import math
from typing import Any

from r2r_synth.plural import plural
from r2r_synth.rundir import KIND_ORDER
from r2r_synth.runstats import KindSummary

PRIMARY_MEASURE = "nDCG@10"
_COLORS = {"direct": "#4C72B0", "comparison": "#DD8452", "listwise": "#55A868", "input": "#8172B3"}


def _fig_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    legends_off_data(fig)
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return buf.getvalue()


def legend_covers_data(ax, renderer) -> bool:
    """Whether the legend of `ax` lies over any of its data: bars, lines, points, images, or the text
    labels drawn inside the axes."""
    leg = ax.get_legend()
    if leg is None:
        return False
    box = leg.get_window_extent(renderer)
    for artist in (*ax.patches, *ax.lines, *ax.collections, *ax.images, *ax.texts):
        if not artist.get_visible():
            continue
        ext = artist.get_window_extent(renderer)
        w = min(box.x1, ext.x1, ax.bbox.x1) - max(box.x0, ext.x0, ax.bbox.x0)
        h = min(box.y1, ext.y1, ax.bbox.y1) - max(box.y0, ext.y0, ax.bbox.y0)
        if w > 0.5 and h > 0.5:
            return True
    return False


def legends_off_data(fig) -> None:
    """Move every legend that covers data below its axes (under the tick labels and the axis label),
    so no plot of the report hides a bar or a label behind its legend."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        if not legend_covers_data(ax, renderer):
            continue
        handles, labels = ax.get_legend_handles_labels()
        below = min(ax.bbox.y0, ax.xaxis.get_tightbbox(renderer).y0)
        y = (below - ax.bbox.y0) / ax.bbox.height - 0.02
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, y), ncol=min(3, len(labels)),
                  fontsize=8, frameon=False)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_labels(summary: dict[str, KindSummary]) -> bytes | None:
    kinds = [k for k in KIND_ORDER if k in summary and summary[k].records]
    if not kinds:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(kinds), figsize=(max(7.0, 5.0 * len(kinds)), 4.0), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        s = summary[kind]
        if kind == "direct":
            grades = [0, 1, 2, 3]
            t = [s.label_counts.get(g, 0) for g in grades]
            g = [s.gold_counts.get(x, 0) for x in grades]
            w = 0.38
            ax.bar([x - w / 2 for x in grades], t, w, label="teacher", color=_COLORS["direct"])
            if any(g):
                ax.bar([x + w / 2 for x in grades], g, w, label="gold (judged only)", color="#999999")
            ax.set_xticks(grades)
            ax.set_xlabel("relevance grade")
            ax.set_ylabel("records")
            ax.set_title(f"direct: labels ({s.records} records)")
            ax.legend(fontsize=8)
        elif kind == "comparison":
            labels = ["A", "B"]
            ax.bar(labels, [s.preferred_counts.get(x, 0) for x in labels], color=_COLORS["comparison"])
            ax.set_xlabel("preferred document (A is shown first)")
            ax.set_ylabel("pairs")
            ax.set_title(f"comparison: preferences ({s.records} pairs)")
        else:
            grid = s.position_rank or [[0]]
            n = len(grid)
            im = ax.imshow(grid, cmap="Greens")
            ax.set_xticks(range(n), [str(i + 1) for i in range(n)])
            ax.set_yticks(range(n), [str(i + 1) for i in range(n)])
            ax.set_xlabel("teacher's rank")
            ax.set_ylabel("position in the window shown")
            ax.set_title(f"listwise: position vs rank ({s.records} windows)")
            if n <= 12:
                for i in range(n):
                    for j in range(n):
                        ax.text(j, i, str(grid[i][j]), ha="center", va="center", fontsize=8)
            fig.colorbar(im, ax=ax, fraction=0.046)
    return _fig_png(fig)


def plot_confusion(s: KindSummary | None) -> bytes | None:
    if s is None or not s.confusion:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    im = ax.imshow(s.confusion, cmap="Blues", vmin=0)
    ax.set_xticks(range(4))
    ax.set_yticks(range(4))
    ax.set_xlabel("teacher grade")
    ax.set_ylabel("gold grade")
    agree = s.agreement.get("exact")
    title = f"teacher vs gold ({s.judged} judged)"
    if agree is not None and not math.isnan(agree):
        title += f": exact {agree:.2f}"
    ax.set_title(title)
    top = max(max(r) for r in s.confusion) or 1
    for i in range(4):
        for j in range(4):
            v = s.confusion[i][j]
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _fig_png(fig)


def plot_swap(s: KindSummary | None) -> bytes | None:
    if s is None or not s.swap_checked:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.0))
    agree, disagree = s.swap_agree, s.swap_checked - s.swap_agree
    ax.barh(["pairs"], [agree], color="#55A868", label=f"same document both orders ({agree})")
    ax.barh(["pairs"], [disagree], left=[agree], color="#C44E52", label=f"position-biased ({disagree})")
    ax.set_xlim(0, s.swap_checked)
    ax.set_xlabel("comparison pairs asked in both orders")
    ax.set_title(f"swap consistency: {agree / s.swap_checked:.2f}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=2, fontsize=8)
    return _fig_png(fig)


def plot_reasoning(summary: dict[str, KindSummary]) -> bytes | None:
    kinds = [k for k in KIND_ORDER if k in summary and summary[k].reasoning_words]
    if not kinds:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    top = max(max(summary[k].reasoning_words) for k in kinds)
    bins = min(40, max(5, top // 5 + 1))
    for k in kinds:
        words = summary[k].reasoning_words
        med = sorted(words)[len(words) // 2]
        ax.hist(words, bins=bins, range=(0, top + 1), alpha=0.6, color=_COLORS[k],
                label=f"{k} (n={len(words)}, median {med} words)")
    ax.set_xlabel("words per reasoning" + (" (listwise: per-passage reason)" if "listwise" in kinds else ""))
    ax.set_ylabel("count")
    ax.set_title("reasoning length")
    ax.legend(fontsize=8)
    return _fig_png(fig)


def plot_rejects(summary: dict[str, KindSummary]) -> bytes | None:
    rows = [(f"{k}: {reason}", n, k) for k, s in summary.items() for reason, n in s.reject_reasons]
    if not rows:
        return None
    rows.sort(key=lambda r: r[1])
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(rows) + 1.4))
    labels = [r[0] if len(r[0]) <= 60 else r[0][:57] + "..." for r in rows]
    ax.barh(labels, [r[1] for r in rows], color=[_COLORS.get(r[2], "#888888") for r in rows])
    for i, r in enumerate(rows):
        ax.text(r[1], i, f" {r[1]}", va="center", fontsize=8)
    ax.set_xlabel("rejected requests")
    ax.set_title("rejects by reason")
    return _fig_png(fig)


def plot_tokens(summary: dict[str, KindSummary]) -> bytes | None:
    kinds = [k for k in KIND_ORDER if k in summary and summary[k].total_tokens]
    if not kinds:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    p = [summary[k].prompt_tokens for k in kinds]
    c = [summary[k].completion_tokens for k in kinds]
    ax.bar(kinds, p, label="prompt", color="#4C72B0")
    ax.bar(kinds, c, bottom=p, label="completion", color="#DD8452")
    for i, k in enumerate(kinds):
        s = summary[k]
        cost = "cost unknown" if s.cost is None else f"${s.cost:.4f}"
        ax.text(i, p[i] + c[i], f"{s.total_tokens:,}\n{cost}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("tokens")
    ax.set_ylim(0, max(a + b for a, b in zip(p, c)) * 1.25)
    ax.set_title("tokens and cost")
    ax.legend()
    return _fig_png(fig)


def plot_listwise_ranks(rankings: list[Any]) -> bytes | None:
    """Listwise runs (`rankings.jsonl`): each candidate's final teacher rank against its first-stage
    rank over every query (the diagonal is the first stage's order kept), and what became of the
    windows: kept as the teacher ranked them, repaired, or rejected (their passages kept their order)."""
    if not rankings:
        return None
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11.0, 4.4), gridspec_kw={"width_ratios": [1.4, 1.0]})
    xs, ys = [], []
    for r in rankings:
        first = {d: i + 1 for i, d in enumerate(r.first_stage)}
        for rank, d in enumerate(r.ranking, start=1):
            xs.append(first[d])
            ys.append(rank)
    depth = max(len(r.first_stage) for r in rankings)
    im = ax.hexbin(xs, ys, gridsize=min(30, depth), cmap="Greens", mincnt=1, extent=(0.5, depth + 0.5, 0.5, depth + 0.5))
    ax.plot([1, depth], [1, depth], color="#999999", lw=0.8, ls="--")
    ax.set_xlabel("first-stage rank")
    ax.set_ylabel("teacher's final rank")
    ax.invert_yaxis()
    ax.set_title(f"teacher vs first stage ({plural(len(rankings), 'query')}, top {depth})")
    fig.colorbar(im, ax=ax, fraction=0.046, label="candidates")
    asked = sum(len(r.windows) for r in rankings)
    repaired = sum(r.windows_repaired for r in rankings)
    rejected = sum(r.windows_rejected for r in rankings)
    parts = [("as ranked", asked - repaired - rejected, "#55A868"), ("repaired", repaired, "#DD8452"),
             ("rejected", rejected, "#C44E52")]
    bx.bar([p[0] for p in parts], [p[1] for p in parts], color=[p[2] for p in parts])
    for i, (_, n, _) in enumerate(parts):
        bx.text(i, n, f"{n} ({n / asked:.1%})" if asked else "0", ha="center", va="bottom", fontsize=9)
    bx.set_ylabel("windows")
    bx.set_title(f"windows: {repaired / asked:.1%} repaired" if asked else "windows")
    bx.set_ylim(0, max(1, asked) * 1.15)
    return _fig_png(fig)


def plot_eval(table: dict[str, dict[str, float]] | None, *, measure: str = PRIMARY_MEASURE) -> bytes | None:
    if not table:
        return None
    rows = [(name, m[measure]) for name, m in table.items() if measure in m]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(rows) + 2), 3.8))
    ax.bar([r[0] for r in rows], [r[1] for r in rows], color="#4C72B0")
    for i, r in enumerate(rows):
        ax.text(i, r[1], f"{r[1]:.4f}", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel(measure)
    ax.set_ylim(0, max(1.0, max(r[1] for r in rows) * 1.15) if rows else 1)
    ax.set_title(f"{measure} by system")
    ax.tick_params(axis="x", rotation=15)
    return _fig_png(fig)
