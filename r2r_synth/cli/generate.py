"""`r2r-synth generate` and `r2r-synth merge`: ask a teacher, merge shards."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from r2r_synth.cli.app import _command_line, app, console, on_interrupt
from r2r_synth.cli.options import (
    ApiBaseOpt,
    ApiKeyOpt,
    InputOpt,
    JsonOpt,
    LimitOpt,
    MaxRetriesOpt,
    MaxTokensOpt,
    OutOpt,
    ParseRetriesOpt,
    PriceCachedInOpt,
    PriceInOpt,
    PriceOutOpt,
    ProgramsDirOpt,
    PromptCacheOpt,
    QrelsOpt,
    RpmOpt,
    SeedOpt,
    SplitOpt,
    TeacherConcurrencyOpt,
    TeacherOpt,
    TemperatureOpt,
    TimeoutOpt,
    TpmOpt,
)
from r2r_synth.cli.output import emit_json, jsonable, reports
from r2r_synth.config import DEFAULT_PROGRAMS_DIR

# ----------------------------------------------------------------- generate / merge


class PairsChoice(str, Enum):
    adjacent = "adjacent"
    gold = "gold"
    topk = "topk"
    none = "none"


@app.command()
@reports
def generate(
    input: InputOpt,
    out: OutOpt,
    qrels: QrelsOpt = None,
    split: SplitOpt = None,
    limit: LimitOpt = None,
    teacher: TeacherOpt = None,
    api_base: ApiBaseOpt = None,
    api_key: ApiKeyOpt = None,
    router: Annotated[Path | None, typer.Option("--router", exists=True, dir_okay=False,
                                                help="LiteLLM Router config (YAML/JSON model_list with rpm/tpm, "
                                                "fallbacks): spread the run over many servers.")] = None,
    transport: Annotated[str, typer.Option("--transport", metavar="[auto|litellm|http]", help="auto: a direct pooled HTTP client for "
                                           "OpenAI-compatible servers given by --api-base, LiteLLM otherwise; "
                                           "litellm: always litellm.acompletion; http: always direct.")] = "auto",
    programs_dir: ProgramsDirOpt = DEFAULT_PROGRAMS_DIR,
    depth: Annotated[int, typer.Option("--depth", "-k", min=1, help="Top K candidates per query get direct "
                                       "reasoning; pairs are chosen within them; --listwise windows rank "
                                       "them.")] = 10,
    direct: Annotated[bool | None, typer.Option("--direct/--no-direct", show_default=False,
                                                help="Ask for direct reasoning (default: on, off with "
                                                "--listwise).")] = None,
    pairs: Annotated[PairsChoice | None, typer.Option("--pairs", show_default=False,
                                                      help="Which pairs to compare (each asked in both orders): "
                                                      "adjacent ranks, gold-labelled vs lower, all in top K, or "
                                                      "none (default: adjacent; none with --listwise).")] = None,
    listwise: Annotated[bool, typer.Option("--listwise", help="Ask R2R's listwise call (a ranking with a direct "
                                           "and a comparative reason per passage) over RankGPT's sliding windows "
                                           "of the top --depth, instead of direct and comparison requests "
                                           "(--direct / --pairs add those back).")] = False,
    window: Annotated[int | None, typer.Option("--window", help="--listwise: passages per window (default 20; "
                                               "at least 2, at most --depth).")] = None,
    stride: Annotated[int | None, typer.Option("--stride", help="--listwise: positions each window moves up "
                                               "(default 10; smaller than --window).")] = None,
    repair: Annotated[bool, typer.Option("--repair/--no-repair", help="--listwise: repair a permutation that "
                                         "misses, repeats or invents passages the way RankGPT does (marked "
                                         "repaired), or reject it.")] = True,
    max_passage_words: Annotated[int | None, typer.Option("--max-passage-words", min=1,
                                                          help="--listwise: cut passages to this many words "
                                                          "(RankGPT and R2R: 300).")] = 300,
    max_pairs_per_query: Annotated[int | None, typer.Option("--max-pairs-per-query", min=1,
                                                            help="Cap on comparisons per query.")] = 10,
    rollouts: Annotated[int, typer.Option("--rollouts", min=1, help="Samples per request (needs "
                                          "--temperature > 0).")] = 1,
    temperature: TemperatureOpt = 0.0,
    max_tokens: MaxTokensOpt = None,
    concurrency: TeacherConcurrencyOpt = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    max_retries: MaxRetriesOpt = None,
    parse_retries: ParseRetriesOpt = 1,
    timeout: TimeoutOpt = None,
    max_cost: Annotated[float | None, typer.Option("--max-cost", min=0.0, metavar="USD", help="Stop cleanly at this many USD "
                                                   "(the run dir's total; exit code 3; rerun to resume).")] = None,
    price_in: PriceInOpt = None,
    price_out: PriceOutOpt = None,
    price_cached_in: PriceCachedInOpt = None,
    prompt_cache: PromptCacheOpt = None,
    max_doc_chars: Annotated[int | None, typer.Option("--max-doc-chars", min=1, help="Cut longer documents to "
                                                      "this many characters before asking (counted in the "
                                                      "manifest).")] = 20_000,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Estimate requests, tokens and cost; ask "
                                          "nobody, write nothing.")] = False,
    shard: Annotated[str | None, typer.Option("--shard", metavar="I/N", help="I/N: this machine's share of the queries "
                                              "(0-based, by qid hash); merge the run dirs with `merge`.")] = None,
    retry_rejects: Annotated[bool, typer.Option("--retry-rejects", help="Ask again for requests in "
                                                "rejects.jsonl.")] = False,
    batch: Annotated[bool, typer.Option("--batch", help="Submit the pending requests to the provider's batch API "
                                        "(OpenAI, Azure, Vertex, Bedrock, Mistral, vLLM, ... through LiteLLM; half "
                                        "the price where the provider discounts batches) and exit 5; rerun the same "
                                        "command to collect the results (nothing is submitted twice). Listwise: one "
                                        "round of windows per batch.")] = False,
    export_batch: Annotated[Path | None, typer.Option("--export-batch", metavar="FILE", dir_okay=False,
                                                      help="Write the pending requests as OpenAI batch JSONL (for "
                                                      "vLLM's run_batch or any compatible runner) and record them; "
                                                      "read the results back with --import-batch.")] = None,
    import_batch: Annotated[Path | None, typer.Option("--import-batch", metavar="FILE", exists=True, dir_okay=False,
                                                      help="Read a batch results file (custom_id, response) back "
                                                      "into the run: records and rejects as online; unknown "
                                                      "custom_ids and malformed lines are rejects with their line "
                                                      "numbers.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="At most this many requests per "
                                                   "batch file (default: the provider's limit; OpenAI 50,000 or "
                                                   "200 MB); with --ray, per block.")] = None,
    ray: Annotated[bool, typer.Option("--ray", help="Ask through Ray Data LLM: an OpenAI-compatible --api-base (several "
                                      "comma-separated) or, with --teacher vllm/<HF id>, vLLM engines the cluster "
                                      "hosts; this process writes the run. Without --ray-address, a Ray on this "
                                      "machine.")] = False,
    ray_address: Annotated[str | None, typer.Option("--ray-address", metavar="ADDRESS",
                                                    help="--ray: the cluster to join (HOST:PORT, ray://HOST:PORT, "
                                                    "auto; default: RAY_ADDRESS, else a Ray on this machine).")] = None,
    replicas: Annotated[int | None, typer.Option("--replicas", min=1, help="--ray: actors asking the endpoints (default: one per "
                                                 "64 of --concurrency, at least one per endpoint), or vLLM engines "
                                                 "(default 1).")] = None,
    tensor_parallel: Annotated[int | None, typer.Option("--tensor-parallel", min=1, help="--ray with --teacher "
                                                        "vllm/<HF id>: GPUs per vLLM engine (default 1).")] = None,
    extend: Annotated[bool, typer.Option("--extend", help="Rerun an existing run directory with flags that change "
                                         "what it asks (--depth, --pairs, --teacher, ...), adding the new "
                                         "requests to it; refused without this flag.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Write into --out even when it is a non-empty directory "
                                        "that holds no run (refused without it).")] = False,
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
) -> dict:
    """Ask a teacher LLM for direct and comparison reasoning over candidates, or with --listwise for
    rankings with reasons over sliding windows; write a run directory (direct.jsonl, comparison.jsonl,
    listwise.jsonl + rankings.jsonl, rejects.jsonl, manifest.json). Rerun the same command to resume.
    With --batch, the requests go to the provider's batch API (exit 5 while they run; rerun to collect);
    with --export-batch / --import-batch, through a batch file and any OpenAI-batch runner."""
    from r2r_synth.config import GenerateConfig
    from r2r_synth.generate import generate as run_generate

    config = GenerateConfig(
        input=input, out=out, qrels=qrels, split=split, limit=limit, teacher=teacher, api_base=api_base, api_key=api_key,
        router=router, transport=transport, programs_dir=programs_dir, depth=depth, direct=direct,
        pairs=pairs.value if pairs is not None else None, listwise=listwise, window=window, stride=stride,
        repair=repair, max_passage_words=max_passage_words,
        max_pairs_per_query=max_pairs_per_query, rollouts=rollouts, temperature=temperature, max_tokens=max_tokens,
        concurrency=concurrency, rpm=rpm, tpm=tpm, max_retries=max_retries, parse_retries=parse_retries,
        timeout=timeout, max_cost=max_cost, price_in=price_in, price_out=price_out, price_cached_in=price_cached_in,
        prompt_cache=prompt_cache, max_doc_chars=max_doc_chars, dry_run=dry_run, shard=shard,
        retry_rejects=retry_rejects, extend=extend, force=force, seed=seed, batch=batch, export_batch=export_batch,
        import_batch=import_batch, batch_size=batch_size, ray=ray, ray_address=ray_address, replicas=replicas,
        tensor_parallel=tensor_parallel,
    )
    from r2r_synth.cli.progress import say

    def status(message: str) -> None:
        say(console, "generate", message)

    if dry_run:
        result = run_generate(config, command=_command_line(api_key), on_status=status)
        _print_estimate(result.estimate)
        return {"dry_run": True, **jsonable(result.estimate)}
    from r2r_synth.errors import BatchPending, BudgetExceeded, IncompleteRun, TeacherError

    on_interrupt(f"what was answered is saved in {out}; rerun the same command to resume (nothing is asked twice)")
    with _GenerateProgress() as bar:
        try:
            run_generate(config, on_progress=bar.update, on_status=status, command=_command_line(api_key))
        except (BatchPending, BudgetExceeded, IncompleteRun, TeacherError):
            # The session ran: show what it wrote before the error says why it stopped.
            bar.stop()
            summary = _print_run_summary(out)
            if json_out:  # a script reads what this session did, and the exit code why it stopped
                emit_json(summary)
            raise
    return _print_run_summary(out)


class _GenerateProgress:
    """`generate`'s progress: done / rejected / cost / rate / ETA (the library only calls back). A rich
    bar on a terminal; in a log, one line every few seconds (`r2r_synth.cli.progress`)."""

    def __init__(self, label: str = "generate") -> None:
        from r2r_synth.cli.progress import Throttle

        self.label = label
        self._log = None if console.is_terminal else Throttle(lambda line: console.print(line, highlight=False, soft_wrap=True))
        self._last = None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._p = Progress(
            TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[green]{task.fields[done]} ok[/] [red]{task.fields[rejected]} rejected[/]"),
            TextColumn("{task.fields[cost]}"), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        )
        self._task = None
        self._stopped = False

    def __enter__(self) -> _GenerateProgress:  # noqa: PYI034
        if self._log is None:
            self._p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._stopped:
            if self._log is None:
                self._p.stop()
            elif self._last is not None:
                self._log(self._line(self._last), force=True)
            self._stopped = True

    def _line(self, pr) -> str:
        from r2r_synth.cli.progress import clock

        done = pr.skipped + pr.finished
        left = pr.total - done
        eta = f", ~{clock(left / pr.rate)} left" if left and pr.rate > 0 else ""
        cost = "cost n/a" if pr.cost is None else f"${pr.cost:.4f}"
        waiting = f", {pr.deferred} waiting for a batch" if pr.deferred else ""
        return (f"{self.label}: {done}/{pr.total} requests ({pr.skipped} done before), {pr.done} ok, {pr.rejected} "
                f"rejected{waiting}, {pr.in_flight} in flight, {cost}, {pr.rate:.1f} req/s, {clock(pr.elapsed)} "
                f"elapsed{eta}")

    def update(self, pr) -> None:  # r2r_synth.generate.Progress
        if self._log is not None:
            self._last = pr
            self._log(self._line(pr))
            return
        fields = {"done": pr.done, "rejected": pr.rejected,
                  "cost": "cost n/a" if pr.cost is None else f"${pr.cost:.4f}", "rate": f"{pr.rate:.1f} req/s"}
        if self._task is None:
            self._task = self._p.add_task(self.label, total=pr.total, completed=pr.skipped + pr.finished, **fields)
        else:
            self._p.update(self._task, completed=pr.skipped + pr.finished, **fields)


def _print_run_summary(run_dir: Path) -> dict:
    """Print the run's counts, usage and notes (stderr; its path on stdout); return `--json`'s object:
    ``{"run_dir": ..., "manifest": <manifest.json>}``."""
    from rich.table import Table

    from r2r_synth.rundir import RunDir

    m = RunDir(run_dir).read_manifest()
    if m is None:
        return {"run_dir": str(run_dir), "manifest": None}
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
    cache_line = prompt_cache_line(m.usage, m.extra.get("prompt_cache"))
    if cache_line:
        console.print(cache_line, highlight=False)
    cut = m.extra.get("documents_cut") or {}
    if cut.get("count"):
        console.print(f"{cut['count']} documents were cut to --max-doc-chars {cut['max_doc_chars']} "
                      f"(the longest had {cut['longest_chars']:,})", highlight=False)
    _print_batches(m.extra.get("batches"))
    gold = m.extra.get("gold_pairs") or {}
    if gold.get("queries_unjudged_as_0"):
        n = gold["queries_unjudged_as_0"]
        console.print(f"--pairs gold: {gold['candidates_unjudged_as_0']} unjudged candidates of {n} "
                      f"quer{'y' if n == 1 else 'ies'} with positive-only qrels counted as grade 0",
                      highlight=False, soft_wrap=True)
    lw = m.extra.get("listwise")
    if lw:
        c = m.counts.get("listwise")
        console.print(f"listwise: {lw['rankings']} of {lw['queries']} queries ranked (rankings.jsonl), windows "
                      f"{lw['window']} / stride {lw['stride']} over the top {lw['depth']}, "
                      f"{lw['windows_repaired']} of {c.records if c else 0} windows repaired"
                      + (f", {lw['passages_cut']} passages cut to {lw['max_passage_words']} words"
                         if lw.get("passages_cut") else ""), highlight=False)
    typer.echo(str(run_dir))
    return {"run_dir": str(run_dir), "manifest": jsonable(m)}


def prompt_cache_line(usage, summary: dict | None) -> str | None:  # usage: r2r_synth.schemas.Usage
    """`prompt cache: 62.5 % of input tokens served from cache, $0.0123 saved` (None: nothing cached)."""
    if not usage.cached_tokens and not usage.cache_write_tokens:
        return None
    saved = (summary or {}).get("saved")
    money = "savings unknown (unpriced)" if saved is None else f"${saved:.4f} saved"
    written = f", {usage.cache_write_tokens:,} written to it" if usage.cache_write_tokens else ""
    return (f"prompt cache: {100 * usage.cached_share:.1f} % of input tokens served from cache "
            f"({usage.cached_tokens:,} of {usage.prompt_tokens:,}{written}), {money}")


def _print_batches(b: dict | None) -> None:
    """The batches of a run (the manifest's `extra.batches`): each with its state, the exports, the last import."""
    if not b:
        return
    from rich.table import Table

    if b.get("batches"):
        t = Table(title="batches")
        for col in ("batch", "requests", "status"):
            t.add_column(col, justify="right" if col == "requests" else "left")
        live = {x["batch_id"]: x for x in b.get("in_flight", [])}
        new = {x["batch_id"] for x in b.get("submitted", [])}
        for x in b["batches"]:
            state = live.get(x["batch_id"])
            status = (f"{state['status']} ({state['completed']}/{state['requests']} done, {state['failed']} failed)"
                      if state else "submitted now" if x["batch_id"] in new else x["status"])
            t.add_row(str(x["batch_id"]), str(x["requests"]), status)
        console.print(t)
    if b.get("waiting"):
        console.print(f"{b['waiting']} requests wait in provider batches: rerun the same command to collect them",
                      highlight=False)
    if b.get("mode") == "export":
        last = (b.get("exports") or [{}])[-1]
        console.print(f"exported {last.get('requests', 0)} requests to {last.get('path')}", highlight=False)
    imp = b.get("import")
    if imp:
        console.print("import: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in imp.items()), highlight=False)


def _print_estimate(est) -> None:  # r2r_synth.generate.DryRunEstimate
    from rich.table import Table

    t = Table(title=f"dry run: teacher {est.teacher} (nothing was asked or written)")
    t.add_column("what")
    t.add_column("estimate", justify="right")
    for kind, n in est.requests.items():
        t.add_row(f"{kind} requests", f"{n:,}")
    t.add_row("already done (skipped)", f"{est.skipped_done:,}")
    t.add_row("LM calls (comparisons ask both orders; one per listwise window)", f"{est.calls:,}")
    t.add_row("prompt tokens", f"{est.prompt_tokens:,}")
    t.add_row(f"completion tokens (assumed {est.completion_tokens_assumed_per_call}/call)", f"{est.completion_tokens:,}")
    t.add_row("cost", "unknown (not in LiteLLM's cost map)" if est.cost is None else f"${est.cost:.4f}")
    if est.prefix_tokens:
        t.add_row("static prefix per call (instructions + demos)",
                  ", ".join(f"{k} {n:,} tokens" for k, n in est.prefix_tokens.items()))
        t.add_row("prompt tokens served from cache", f"{est.cached_tokens:,}"
                  + (f" ({100 * est.cached_tokens / est.prompt_tokens:.1f} %)" if est.prompt_tokens else ""))
        t.add_row("cost with prompt caching", ("unknown" if est.cost_with_cache is None else
                                               f"${est.cost_with_cache:.4f}")
                  + (f" ({est.cache_note})" if est.cache_note else ""))
    for kind, h in est.programs.items():
        t.add_row(f"{kind} program / prompt hash", f"{h['program_hash']} / {h['prompt_hash']}")
    b = est.batch
    if b and b["mode"] == "ray":
        where = f"the Ray cluster at {b['address']}" if b["address"] != "local" else "a Ray on this machine"
        teacher = (f"vLLM hosting {b['hosted_model']} (--tensor-parallel {b['tensor_parallel'] or 1})"
                   if b["hosted_model"] else f"{max(1, b['endpoints'])} endpoint(s)")
        t.add_row(f"first round on {where}", f"{b['calls']:,} requests in {b['blocks']:,} blocks of {b['block_size']:,}")
        t.add_row(f"replicas ({teacher})", str(b["replicas"]))
        t.add_row("rounds (one listwise window per query per round)", str(b["rounds"]))
    elif b:
        where = "a batch file" if b["mode"] == "export" else f"{b['provider']} batches"
        t.add_row(f"next submission ({where})", f"{b['calls']:,} requests in {b['files']} file(s)")
        if b["files"]:
            t.add_row("requests per file", ", ".join(f"{n:,}" for n in b["requests_per_file"]))
            t.add_row("size", f"{b['bytes'] / 1e6:,.1f} MB" + (f" (files cut at {b['max_requests_per_file']:,} "
                                                                 f"requests or {b['max_mb_per_file']} MB)"
                                                                 if b["max_requests_per_file"] else ""))
        t.add_row("rounds (one listwise window per query per batch)", str(b["rounds"]))
        if b["in_flight_batches"]:
            t.add_row("in flight already", f"{b['in_flight_requests']:,} requests in {b['in_flight_batches']} batch(es)")
        t.add_row("cost at batch prices (every round)",
                  "unknown (LiteLLM gives no batch prices)" if b["cost"] is None else f"${b['cost']:.4f}")
    console.print(t)


@app.command()
@reports
def merge(
    out: Annotated[Path, typer.Argument(help="The merged run directory (created).")],
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories to merge (e.g. one per --shard).",
                                                   exists=True, file_okay=False)],
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it already holds records.")] = False,
    mixed_teachers: Annotated[bool, typer.Option("--mixed-teachers", help="Merge runs of different teachers "
                                                 "(refused without it; each record keeps its own teacher).")] = False,
    json_out: JsonOpt = False,
) -> dict:
    """Merge run directories (e.g. shards) into one corpus; fails on conflicting records for one key or
    on runs of different teachers, and warns about missing shards and questions answered twice."""
    from r2r_synth.generate import merge_runs

    manifest = merge_runs(out, run_dirs, command=_command_line(), force=force, mixed_teachers=mixed_teachers)
    for warning in manifest.extra.get("warnings") or []:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    return _print_run_summary(out)

