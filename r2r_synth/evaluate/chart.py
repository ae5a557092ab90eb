"""`evaluation.png`: one group of bars per measure, one bar per system, each bar labelled with its
value. The legend sits outside the axes, right of them, so it never covers a bar or its label."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def chart(report: dict[str, Any]) -> Any:
    """The matplotlib `Figure` of an `evaluation.json` report (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(report["systems"])
    measures = list(report["measures"])
    unchanged = set(report.get("unchanged_by_reranking", {}).get("measures", []))
    width = 0.8 / max(len(systems), 1)
    # ~0.4 inch a bar (its 3-decimal label fits above it), and room on the right for the legend
    fig, ax = plt.subplots(figsize=(max(5.0, 0.4 * len(measures) * len(systems) + 0.8 * len(measures)) + 2.0, 4.2))
    for i, name in enumerate(systems):
        vals = [report["systems"][name].get(m) or 0.0 for m in measures]
        xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(measures))]
        bars = ax.bar(xs, vals, width=width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90 if len(systems) > 4 else 0, padding=2)
    ax.set_xticks(range(len(measures)), [f"{m}\n(same for all)" if m in unchanged else m for m in measures])
    top = max((report["systems"][n].get(m) or 0.0 for n in systems for m in measures), default=1.0)
    ax.set_ylim(0, max(1.0, top) * (1.25 if len(systems) > 4 else 1.12))  # room for the labels above the bars
    ax.set_ylabel("score")
    depth = report.get("depth")
    ax.set_title(f"{Path(report['input']).name}: {report['judged_queries']} judged queries"
                 + (f", top {depth} reranked" if depth else ""), fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    fig.tight_layout()
    return fig


def plot(report: dict[str, Any], path: Path) -> Path:
    """Save `chart(report)` as a PNG at `path` (the legend kept inside the image)."""
    import matplotlib.pyplot as plt

    from r2r_synth.atomic import atomic_open

    fig = chart(report)
    try:
        with atomic_open(path) as fh:  # a text handle; the PNG's bytes go to the file beneath it
            fig.savefig(fh.buffer, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)
