"""`r2r-synth report`: one self-contained HTML page about a run directory, for people to look at before
they train on it or publish it.

It opens with the problems the data shows, in words (`r2r_synth.problems`: a constant label, position
bias, a high reject rate, ...), then one section per record kind the run has: the label distribution
beside the agreement figures that depend on it, and example records with the teacher's reasoning, those
that disagree with gold first (`r2r_synth.report.sections`). Sections of kinds the run does not hold are
left out, not shown empty.

The page (`report.html`, `r2r_synth.report.page`) embeds its plots (`r2r_synth.report.plots`) as base64 PNGs, so it can be mailed or attached as one file;
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
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from r2r_synth import __version__
from r2r_synth.atomic import check_dir_target, write_text_atomic
from r2r_synth.errors import InputError
from r2r_synth.plural import plural
from r2r_synth.problems import Problem, agreement_rows, find_problems
from r2r_synth.report.plots import (
    PRIMARY_MEASURE,
    plot_confusion,
    plot_eval,
    plot_labels,
    plot_listwise_ranks,
    plot_reasoning,
    plot_rejects,
    plot_swap,
    plot_tokens,
)
from r2r_synth.report.sections import CSS as KINDS_CSS
from r2r_synth.report.sections import esc as _e
from r2r_synth.report.sections import kind_sections, problems_html
from r2r_synth.report.sections import table as _table
from r2r_synth.rundir import Run, RunDir
from r2r_synth.runstats import KindSummary, cache_line, summarize

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
WIDE_PLOTS = {"labels", "listwise_ranks"}  # several panels: get the page's full width
PLOT_KINDS = {"confusion": "direct", "swap": "comparison"}  # a plot of one kind: left out of runs without it
DEFAULT_SAMPLES = 5  # example records shown per kind


# ----------------------------------------------------------------------------- evaluation results


def read_evaluation(path: Path) -> dict[str, dict[str, float]]:
    """An `evaluate` result as ``{system: {measure: value}}`` (read by `r2r_synth.artifacts.read_evaluation`,
    which also takes a plainer table of another tool; the error says what it expected)."""
    from r2r_synth.artifacts import read_evaluation as read

    return read(path).table()




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
    if not any(s.records or s.rejects for s in summary.values()):
        raise InputError(f"{run_dir}: the run holds no record and no reject, so there is nothing to report",
                         hint="report a run that `generate`, `import` or `filter` wrote records into")
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
                 + (f" ({plural(unknown, 'record')} with unknown cost)" if costs and unknown else "")])
    cached = cache_line(kinds)
    if cached:
        info.append(["prompt cache (all records)", cached])
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
