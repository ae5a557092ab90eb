"""`r2r-synth optimize`: tune the teacher programs against labeled data."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from r2r_synth.cli.app import app, console
from r2r_synth.cli.options import (
    ApiBaseOpt,
    ApiKeyOpt,
    ConcurrencyOpt,
    InputOpt,
    JsonOpt,
    LimitOpt,
    MaxRetriesOpt,
    ProgramsDirOpt,
    QrelsOpt,
    SeedOpt,
    SplitOpt,
    TeacherOpt,
    TimeoutOpt,
)
from r2r_synth.cli.output import reports
from r2r_synth.cli.progress import make_console
from r2r_synth.config import DEFAULT_PROGRAMS_DIR

# ----------------------------------------------------------------- optimize


class OptimizerChoice(str, Enum):
    bootstrap = "bootstrap"
    mipro = "mipro"
    gepa = "gepa"


class AutoChoice(str, Enum):
    light = "light"
    medium = "medium"
    heavy = "heavy"


class ProgramChoice(str, Enum):
    direct = "direct"
    comparison = "comparison"
    listwise = "listwise"
    both = "both"


@app.command()
@reports
def optimize(
    input: InputOpt,
    qrels: QrelsOpt = None,
    split: SplitOpt = None,
    limit: LimitOpt = None,
    depth: Annotated[int, typer.Option("--depth", min=1, help="Top K candidates per query form the labeled set.")] = 10,
    teacher: TeacherOpt = None,
    api_base: ApiBaseOpt = None,
    api_key: ApiKeyOpt = None,
    prompt_model: Annotated[
        str | None,
        typer.Option("--prompt-model", help="LiteLLM model that writes instructions (MIPROv2's prompt model, "
                     "GEPA's reflection LM). Default: the teacher."),
    ] = None,
    prompt_api_base: Annotated[
        str | None, typer.Option("--prompt-api-base", help="Base URL for --prompt-model.")
    ] = None,
    optimizer: Annotated[
        OptimizerChoice, typer.Option("--optimizer", help="bootstrap: BootstrapFewShot (random search with "
                                      "--candidates); mipro: MIPROv2; gepa: GEPA with textual feedback.")
    ] = OptimizerChoice.bootstrap,
    auto: Annotated[
        AutoChoice | None, typer.Option("--auto", help="MIPROv2/GEPA budget preset (default light).")
    ] = None,
    max_calls: Annotated[
        int | None, typer.Option("--max-calls", min=1, help="Teacher calls the optimizer may spend (the "
                                 "before/after validation scoring comes on top).")
    ] = None,
    max_demos: Annotated[int, typer.Option("--max-demos", min=0, help="Bootstrapped demos per program.")] = 4,
    labeled_demos: Annotated[
        int, typer.Option("--labeled-demos", min=0, help="Raw labeled examples as demos (no reasoning in them).")
    ] = 0,
    candidates: Annotated[
        int, typer.Option("--candidates", min=0, help="bootstrap: random search over N candidate programs.")
    ] = 0,
    program: Annotated[ProgramChoice, typer.Option("--program", help="Which program(s) to optimize (both: direct and comparison; "
                                                   "listwise: one window of the top --depth per query, scored by "
                                                   "nDCG@10).")] = (
        ProgramChoice.both
    ),
    programs_dir: ProgramsDirOpt = DEFAULT_PROGRAMS_DIR,
    report_path: Annotated[
        Path | None, typer.Option("--report", help="Report JSON (default: <programs-dir>/optimize_report.json; "
                                  "with --evaluate-only none is written unless this is given).", dir_okay=False)
    ] = None,
    seed: SeedOpt = 0,
    val_fraction: Annotated[
        float | None, typer.Option("--val-fraction", min=0.0, max=1.0, show_default=False,
                                   help="Share of queries held out for validation (default 0.25; with "
                                   "--evaluate-only: every query the current programs were not trained on, and "
                                   "1.0 scores every query).")
    ] = None,
    max_pairs_per_query: Annotated[
        int, typer.Option("--max-pairs-per-query", min=1, help="Comparison examples per query.")
    ] = 10,
    no_swap: Annotated[
        bool, typer.Option("--no-swap", help="Score comparisons in one order only (halves their calls).")
    ] = False,
    concurrency: ConcurrencyOpt = 4,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Cap on each reply.")] = None,
    timeout: TimeoutOpt = None,
    max_retries: MaxRetriesOpt = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use DSPy's request cache.")] = False,
    evaluate_only: Annotated[
        bool, typer.Option("--evaluate-only", help="Score the current programs (and the prompt programs beside "
                           "optimized ones) on the queries they were not trained on; write nothing unless "
                           "--report.")
    ] = False,
    json_out: JsonOpt = False,
) -> dict:
    """Tune the teacher programs against labeled data (qrels); writes programs/<name>.json + .meta.json."""
    import math

    from rich.table import Table

    from r2r_synth.config import OptimizeConfig
    from r2r_synth.optimize import COUNTS, run_optimize

    cfg = OptimizeConfig(
        input=input, qrels=qrels, split=split, limit=limit, depth=depth, teacher=teacher, api_base=api_base, api_key=api_key,
        prompt_model=prompt_model, prompt_api_base=prompt_api_base, optimizer=optimizer.value,
        auto=auto.value if auto else None, max_calls=max_calls, max_demos=max_demos, labeled_demos=labeled_demos,
        candidates=candidates, program=program.value, programs_dir=programs_dir, report=report_path, seed=seed,
        val_fraction=val_fraction, max_pairs_per_query=max_pairs_per_query, swap=not no_swap,
        concurrency=concurrency, max_tokens=max_tokens, timeout=timeout, max_retries=max_retries, cache=not no_cache,
        evaluate_only=evaluate_only,
    )
    from r2r_synth.cli.progress import heartbeat

    with heartbeat(console, "optimize") as step:
        rep = run_optimize(cfg, progress=step)
    out = make_console(stderr=False)
    left, right = ("fresh", "current") if rep.evaluate_only else ("before", "after")
    for name, pr in rep.programs.items():
        table = Table(title=f"{name}: validation split ({pr.val_examples} examples, {len(rep.split['val_qids'])} "
                      f"queries)", title_justify="left")
        table.add_column("metric")
        table.add_column(left if pr.after is not None else "current", justify="right")
        if pr.after is not None:
            table.add_column(right, justify="right")
            table.add_column("Δ", justify="right")
        if pr.first_stage:
            table.add_column("first stage", justify="right")

        def fmt(v: float | None) -> str:
            return "-" if v is None or math.isnan(v) else f"{v:.3f}"

        for metric, b in pr.before.items():
            if metric in COUNTS:
                continue
            row = [metric + (" *" if metric == pr.primary_metric else ""), fmt(b)]
            if pr.after is not None:
                a = pr.after.get(metric)
                row += [fmt(a), "-" if a is None or math.isnan(a) or math.isnan(b) else f"{a - b:+.3f}"]
            if pr.first_stage:
                row.append(fmt(pr.first_stage.get(metric)))
            table.add_row(*row)
        # Counts, not metrics: what was graded, and what left the metrics because its call failed.
        table.add_section()
        for key, label in zip(COUNTS, ("examples graded", "failed calls", "queries left out")):
            if key in pr.before:
                cells = [pr.before[key]] + ([pr.after.get(key)] if pr.after is not None else [])
                row = [label, *("-" if v is None else str(int(v)) for v in cells)]
                table.add_row(*row, *[""] * (len(table.columns) - len(row)))
        out.print(table)
        out.print(f"  teacher calls: {_calls_line(pr.calls, pr.failed_calls)}")
        if pr.path:
            out.print(f"  {pr.path} ({pr.demos} demos, hash {pr.program_hash_after})")
        if pr.improved is False and not rep.evaluate_only:
            out.print(f"  [yellow]the validation {pr.primary_metric} dropped[/]: delete {pr.path} to keep the "
                      "prompt program, or rerun with a larger budget / a stronger teacher")
    if rep.failed_calls:
        out.print(f"[yellow]{rep.failed_calls} teacher calls failed after their retries[/]: they are left out of the "
                  "metrics, not scored as wrong answers (counts above; rerun when the teacher is healthy)")
    out.print(f"report: {rep.path}" if rep.path else "report: not written (--report PATH keeps it)")
    return {"report_path": rep.path, **rep.to_dict()}


def _calls_line(calls: dict[str, Any], failed: dict[str, int]) -> str:
    """``evaluate before 10, optimize 8 (+3 prompt model) (2 failed), ...``: the calls of each phase."""
    parts = []
    for k, v in calls.items():
        n = (f"{v['teacher']}" + (f" (+{v['prompt_model']} prompt model)" if v["prompt_model"] else "")
             if isinstance(v, dict) else f"{v}")
        parts.append(f"{k.replace('_', ' ')} {n}" + (f" ([red]{failed[k]} failed[/])" if failed.get(k) else ""))
    return ", ".join(parts)
