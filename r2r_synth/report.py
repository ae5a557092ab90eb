"""`r2r-synth report`: one self-contained HTML page about a run directory, for people to look at before
they train on it or publish it.

It opens with the problems the data shows, in words (`r2r_synth.problems`: a constant label, position
bias, a high reject rate, ...), then one section per record kind the run has: the label distribution
beside the agreement figures that depend on it, and example records with the teacher's reasoning, those
that disagree with gold first (`r2r_synth.report_kinds`). Sections of kinds the run does not hold are
left out, not shown empty.

The page (`report.html`) embeds its plots as base64 PNGs, so it can be mailed or attached as one file;
the same PNGs are written beside it in `plots/`. Plots are made with matplotlib's Agg backend (no
display needed):

- label distribution: the teacher's grades beside the gold grades (direct), A/B preferences
  (comparison), and first-stage position against the teacher's rank (listwise: position bias shows
  as a bright diagonal);
- teacher-vs-gold confusion matrix (direct records with a gold grade);
- swap consistency (comparison pairs asked in both orders);
- reasoning length in words, per kind;
- rejects by reason;
- tokens and cost per kind;
- listwise runs with final rankings (`rankings.jsonl`): each candidate's final teacher rank against its
  first-stage rank, and the share of windows repaired or rejected;
- nDCG@10 per system, when an `evaluate` result JSON is given (`--evaluation`).

Numbers come from `r2r_synth.runstats`, the same summary the dataset card is written from.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from r2r_synth import __version__
from r2r_synth.atomic import check_dir_target, write_text_atomic
from r2r_synth.errors import InputError
from r2r_synth.problems import Problem, agreement_rows, find_problems
from r2r_synth.report_kinds import CSS as KINDS_CSS
from r2r_synth.report_kinds import esc as _e
from r2r_synth.report_kinds import kind_sections, problems_html
from r2r_synth.report_kinds import table as _table
from r2r_synth.rundir import KIND_ORDER, Run, RunDir
from r2r_synth.runstats import KindSummary, summarize

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
PRIMARY_MEASURE = "nDCG@10"
WIDE_PLOTS = {"labels", "listwise_ranks"}  # several panels: get the page's full width
PLOT_KINDS = {"confusion": "direct", "swap": "comparison"}  # a plot of one kind: left out of runs without it
DEFAULT_SAMPLES = 5  # example records shown per kind
_COLORS = {"direct": "#4C72B0", "comparison": "#DD8452", "listwise": "#55A868", "input": "#8172B3"}


# ----------------------------------------------------------------------------- evaluation results


def read_evaluation(path: Path) -> dict[str, dict[str, float]]:
    """Read an `evaluate` result as ``{system: {measure: value}}``.

    Accepted shapes (the reader is tolerant; the error says what it expected):
    ``{system: {measure: value}}``; the same under a top-level ``"systems"``, ``"results"`` or
    ``"metrics"`` key (other top-level keys such as ``"config"`` are ignored); or a list of
    ``{"system": name, measure: value, ...}`` rows. Non-numeric values are skipped, and when the file
    lists its ``"measures"`` (as `evaluate` does) only those are kept.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file", hint="pass the JSON that `r2r-synth evaluate` wrote")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise InputError(f"{path}: not valid JSON ({e})", hint="pass the JSON that `r2r-synth evaluate` wrote") from None
    expected = ('expected {"system": {"nDCG@10": 0.5, ...}, ...}, the same under "systems"/"results"/"metrics", '
                'or a list of {"system": ..., "nDCG@10": ...} rows')

    def numeric(d: dict[str, Any]) -> dict[str, float]:
        # An integer stays one (a count is shown as 43, not 43.0000).
        return {str(k): v if isinstance(v, int) else float(v) for k, v in d.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}

    table: dict[str, dict[str, float]] = {}
    # `evaluate` lists its measures; other numbers of a system (pairs, seconds, ...) are not measures.
    measures = data.get("measures") if isinstance(data, dict) and isinstance(data.get("measures"), list) else None
    if isinstance(data, dict):
        for key in ("systems", "results", "metrics"):
            if isinstance(data.get(key), (dict, list)):
                data = data[key]
                break
    if isinstance(data, list):
        for i, row in enumerate(data):
            if not isinstance(row, dict) or not isinstance(row.get("system", row.get("name")), str):
                raise InputError(f"{path}: row {i} has no 'system' name", hint=expected)
            name = row.get("system", row.get("name"))
            inner = row.get("measures") if isinstance(row.get("measures"), dict) else row
            table[name] = numeric(inner)
    elif isinstance(data, dict):
        for name, values in data.items():
            if isinstance(values, dict):
                vals = numeric(values)
                if vals:
                    table[str(name)] = vals
    if measures:
        table = {name: {m: v for m, v in vals.items() if m in measures} for name, vals in table.items()}
    if not any(table.values()):
        raise InputError(f"{path}: found no system with numeric measures", hint=expected)
    return table


# ----------------------------------------------------------------------------- plots


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
    ax.set_title(f"teacher vs first stage ({len(rankings)} queries, top {depth})")
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


# ----------------------------------------------------------------------------- html


@dataclass
class ReportResult:
    html: Path
    plots: dict[str, Path] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # plot -> why it is not there
    problems: list[Problem] = field(default_factory=list)  # what the page names in words


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;
padding:0 16px;overflow-wrap:break-word}
h1{font-size:1.6em;margin-bottom:0} .sub{color:#666;margin-top:4px}
h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0;max-width:100%}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;font-size:14px}
th{background:#f4f4f4} code{background:#f4f4f4;padding:1px 4px;border-radius:3px}
img{max-width:100%;height:auto;border:1px solid #eee;box-sizing:border-box} .note{color:#666;font-style:italic}
.grid{display:flex;flex-wrap:wrap;gap:16px} .grid>div{flex:1 1 520px;min-width:0} .grid>div.wide{flex-basis:100%}
@media (max-width:600px){body{padding:0 8px} td,th{padding:3px 4px;font-size:13px}}
""" + KINDS_CSS


def build_report(run_dir: Path, *, out: Path | None = None, evaluation: Path | None = None,
                 samples: int = DEFAULT_SAMPLES) -> ReportResult:
    """Write `report.html` (+ `plots/*.png`) about `run_dir` into `out` (default: `run_dir/report`), with
    `samples` example records per kind."""
    if samples < 0:
        raise InputError(f"--samples {samples}: must be 0 or more", hint="e.g. --samples 5 (0 shows no example)")
    out = check_dir_target(Path(out) if out is not None else Path(run_dir) / "report")
    run = RunDir(run_dir).load(require_manifest=False)
    table = read_evaluation(evaluation) if evaluation is not None else None
    summary = summarize(run)
    plots: dict[str, tuple[str, bytes | None, str]] = {
        "labels": ("Label distribution", plot_labels(summary), "no records"),
        "confusion": ("Teacher vs gold (direct)", plot_confusion(summary.get("direct")),
                      "no direct record has a gold grade (run with --qrels or a judged input to see this)"),
        "swap": ("Swap consistency (comparison)", plot_swap(summary.get("comparison")),
                 "no comparison pair was asked in both orders"),
        "reasoning_length": ("Reasoning length", plot_reasoning(summary), "no reasoning text"),
        "rejects": ("Rejects by reason", plot_rejects(summary), "nothing was rejected"),
        "tokens": ("Tokens and cost", plot_tokens(summary),
                   "no token usage recorded (imported corpora carry none)"),
    }
    if evaluation is not None:
        plots["ndcg"] = (f"{PRIMARY_MEASURE} by system", plot_eval(table),
                         f"{evaluation} has no {PRIMARY_MEASURE} value")
    rankings = RunDir(run_dir).rankings()  # listwise runs: each query's final ranking over its windows
    if rankings:
        plots["listwise_ranks"] = ("Teacher rank vs first-stage rank (listwise)",
                                   plot_listwise_ranks(rankings),
                                   "no final ranking in rankings.jsonl")
    # Only the sections the run has: no empty panel of a kind it holds no record of, and no token plot
    # for records that carry no usage (an imported corpus).
    present = set(run.kinds)
    plots = {name: v for name, v in plots.items() if name not in PLOT_KINDS or PLOT_KINDS[name] in present}
    if not any(s.has_usage for s in summary.values()):
        plots.pop("tokens", None)
    out.mkdir(parents=True, exist_ok=True)
    pdir = out / PLOTS_DIR
    pdir.mkdir(exist_ok=True)
    result = ReportResult(html=out / REPORT_FILE)
    sections = []
    for name, (title, png, why) in plots.items():
        if png is None:
            result.missing[name] = why
            sections.append(f'<div><h2>{_e(title)}</h2><p class="note">{_e(why)}</p></div>')
            continue
        path = pdir / f"{name}.png"
        _write_png(path, png)
        result.plots[name] = path
        b64 = base64.b64encode(png).decode("ascii")
        caption = _caption(name, summary, table)
        wide = ' class="wide"' if name in WIDE_PLOTS else ""
        sections.append(f'<div{wide}><h2>{_e(title)}</h2><img alt="{_e(title)}" src="data:image/png;base64,{b64}">'
                        f"{caption}</div>")
    result.problems = find_problems(summary)
    details = problems_html(result.problems, summary) + kind_sections(run, summary, samples=samples)
    page = _page(run, summary, table, sections, details=details)
    write_text_atomic(result.html, page)
    log.info("wrote %s with %d plots", result.html, len(result.plots))
    return result


def _write_png(path: Path, png: bytes) -> None:
    # `r2r_synth.atomic` writes text; a plot is bytes: the same temporary file and rename, so a reader
    # (or a crash) never sees half a PNG.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(png)
    os.replace(tmp, path)


def _caption(name: str, summary: dict[str, KindSummary], table: dict[str, dict[str, float]] | None) -> str:
    if name == "confusion" and "direct" in summary:
        rows = agreement_rows(summary["direct"])
        return "<p>" + _e("; ".join(f"{n} {v:.3f} ({ref})" for n, v, ref in rows if v is not None)) + "</p>"
    if name == "ndcg" and table:
        measures = sorted({m for v in table.values() for m in v})
        rows = [[sys_] + [v.get(m, "") for m in measures] for sys_, v in table.items()]
        return _table(rows, ["system", *measures], digits=4)
    return ""


def _filter_funnel(m) -> list[str]:
    """A run written by `r2r-synth filter` (manifest `extra["filter"]`): its parent, what that cost, and
    per kind the records in, dropped by each rule in the order applied, and kept."""
    f = m.extra.get("filter") if m is not None else None
    if not f:
        return []
    p = f["parent"]
    rules = [r["rule"] for r in f["rules"]]
    rows = [[kind, per["input"], *(f"−{per['rules'][r]['dropped']}" if r in per["rules"] else "" for r in rules),
             per["kept"]] for kind, per in f["kinds"].items()]
    cost = "cost unknown" if p.get("cost") is None else f"${p['cost']:.4f}"
    about = (f"<p>Filtered from <code>{_e(p['dir'])}</code> (<code>{_e(p['command'])}</code>, status "
             f"{_e(p['status'])}; its teacher spend: {p['usage']['total_tokens']:,} tokens, {_e(cost)}). Each rule "
             "drops what the rules before it kept; the dropped records, with their rule, are in "
             "<code>filtered.jsonl</code>.</p>")
    return ["<h2>Filter funnel</h2>", about, _table(rows, ["kind", "input", *rules, "kept"])]


def _page(run: Run, summary: dict[str, KindSummary], table, sections: list[str], *, details: str = "") -> str:
    m = run.manifest
    info: list[list[Any]] = [["run directory", str(run.path)]]
    if m is not None:
        info += [
            ["teacher", m.teacher], ["status", m.status], ["command", m.command],
            ["r2r-synth", m.r2r_synth_version],
            ["programs", ", ".join(f"{k} ({v})" for k, v in m.programs.items()) or "none"],
            ["started", f"{m.started_at:%Y-%m-%d %H:%M:%S} UTC"],
            ["wall time", f"{m.wall_s:.1f} s" if m.wall_s is not None else "unknown"],
        ]
    # Tokens and cost are summed over the records on disk: a manifest counts the sessions it saw, and a
    # session killed without a clean stop never reaches it.
    kinds = [s for s in summary.values() if s.records]
    prompt, completion = sum(s.prompt_tokens for s in kinds), sum(s.completion_tokens for s in kinds)
    costs = [s.cost for s in kinds if s.cost is not None]
    unknown = sum(s.cost_unknown for s in kinds)
    if any(s.has_usage for s in kinds):
        info.append(["tokens (all records)",
                     f"{prompt:,} prompt + {completion:,} completion = {prompt + completion:,}"])
    else:
        info.append(["tokens", "not recorded (the records carry no token usage, as imported corpora do not)"])
    info.append(["cost (all records)", (f"${sum(costs):.4f}" if costs else "unknown")
                 + (f" ({unknown} records with unknown cost)" if costs and unknown else "")])
    if m is not None and m.usage.total_tokens != sum(s.total_tokens for s in kinds):
        info.append(["tokens (manifest)", f"{m.usage.total_tokens:,} (the sessions the manifest recorded)"])
    if m is not None:
        if m.extra.get("provenance") == "imported":
            info.append(["imported from", ", ".join(x["path"] for x in m.extra.get("sources", []))])
    else:
        info.append(["manifest", "missing: the run did not finish cleanly; figures cover what is on disk"])
    counts = []
    for k, s in summary.items():
        if m is not None and k in m.counts:
            c = m.counts[k]
            counts.append([k, s.records, s.queries, s.rejects, c.requested, c.skipped_done])
        else:
            counts.append([k, s.records, s.queries, s.rejects, "", ""])
    now = datetime.now(UTC)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>r2r-synth report: {_e(run.path.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>r2r-synth report: {_e(run.path.name)}</h1>",
        f"<p class='sub'>made by r2r-synth {_e(__version__)} on {now:%Y-%m-%d %H:%M} UTC</p>",
        "<h2>Run</h2>", _table(info),
        "<h2>Counts</h2>",
        _table(counts, ["kind", "records", "queries", "rejects", "requests", "done before"]),
    ]
    parts += _filter_funnel(m)
    parts += [details, "<h2>Plots</h2>", "<div class='grid'>", *sections, "</div>", "</body></html>"]
    return "\n".join(parts)
