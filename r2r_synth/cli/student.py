"""`r2r-synth train`, `evaluate` and `rerank`: the student stage."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from r2r_synth.cli.app import app, console, is_main_rank
from r2r_synth.cli.options import (
    ApiBaseOpt,
    ApiKeyOpt,
    ConcurrencyOpt,
    InputOpt,
    JsonOpt,
    LimitOpt,
    MaxRetriesOpt,
    OutOpt,
    ProgramsDirOpt,
    QrelsOpt,
    SeedOpt,
    SplitOpt,
    TimeoutOpt,
)
from r2r_synth.cli.output import reports
from r2r_synth.cli.progress import make_console
from r2r_synth.config import DEFAULT_PROGRAMS_DIR
from r2r_synth.plural import plural

# ----------------------------------------------------------------- train / evaluate / rerank


class StudentKind(str, Enum):
    bi_encoder = "bi-encoder"
    cross_encoder = "cross-encoder"
    reasoning = "reasoning"


class LabelSource(str, Enum):
    teacher = "teacher"
    gold = "gold"


#: Which student kinds' defaults `train --help` quotes for each knob (the values are read from the
#: option models in `r2r_synth.config`; a kind left out has no such knob, or a default that depends on
#: the data, said in words beside it).
_SHOWN: dict[str, tuple[str, ...]] = {
    "batch_size": ("bi-encoder", "cross-encoder", "reasoning"),
    "learning_rate": ("bi-encoder", "cross-encoder", "reasoning"),
    "max_length": ("cross-encoder", "reasoning"),
    "pointwise_weight": ("bi-encoder",),
    "pairwise_weight": ("bi-encoder", "reasoning"),
    "listwise_weight": ("bi-encoder", "reasoning"),
    "generation_weight": ("reasoning",),
    "negatives": ("bi-encoder", "cross-encoder", "reasoning"),
    "hard_negatives": ("bi-encoder", "cross-encoder"),
    "distill_weight": ("bi-encoder", "cross-encoder"),
    "temperature": ("cross-encoder",),
    "lexical_weight": ("cross-encoder",),
    "start_epochs": ("cross-encoder",),
    "max_reason_tokens": ("reasoning",),
}
_FIELD = {("reasoning", "max_length"): "max_doc_tokens"}  # the reasoning student counts document tokens


def train_default(kind: str, knob: str) -> float | int:
    """The default a `train` knob left unset takes for the student `kind`: its option model's."""
    from r2r_synth.config import BiEncoderOptions, CrossEncoderOptions, ReasoningOptions

    model = {"bi-encoder": BiEncoderOptions, "cross-encoder": CrossEncoderOptions, "reasoning": ReasoningOptions}[kind]
    return model.model_fields[_FIELD.get((kind, knob), knob)].default


#: The cross-encoder's teacher-label objectives while it distills an encoder's lists (its default).
_WHILE_DISTILLING = "0 cross-encoder while it distills, else 1"
_BASE_OWN = "the base's own bi-encoder"


def _by_student(knob: str, *, also: str = "") -> str:
    """``32 bi-encoder, 1 cross-encoder, 1 reasoning``: a per-student default for `train --help`."""
    return ", ".join([*(f"{train_default(kind, knob):g} {kind}" for kind in _SHOWN[knob]), *([also] if also else [])])


def _teacher_loss_weight(loss: str, labels: str) -> Any:
    """The `--<loss>-weight` option alias: a loss on the teacher's labels, on where the corpus has `labels`."""
    return Annotated[float | None, typer.Option(
        f"--{loss}-weight", min=0.0, help=f"Weight of the {loss} loss, on where the corpus has {labels}; 0 = off "
        f"(default {_by_student(f'{loss}_weight', also=_WHILE_DISTILLING)}).")]


PointwiseWeightOpt = _teacher_loss_weight("pointwise", "grades")
PairwiseWeightOpt = _teacher_loss_weight("pairwise", "preferences")
ListwiseWeightOpt = _teacher_loss_weight("listwise", "rankings")


@app.command()
@reports
def train(
    corpus: Annotated[
        list[Path],
        typer.Option("--corpus",
                     help="Run directories of `generate`, direct/comparison/listwise JSONL files, or R2R-format "
                     "files (msmarco_500.jsonl); with --qrels also any input `generate` reads (RankGPT JSON, "
                     "candidates JSONL, BEIR or TREC directory, irds:<id>). Repeat to combine."),
    ],
    out: OutOpt,
    student: Annotated[StudentKind, typer.Option("--student", help="Which student to train.")] = StudentKind.bi_encoder,
    base: Annotated[str | None, typer.Option("--base", help="Base model: local directory or HF id. "
                                             "Default: all-MiniLM-L6-v2 (bi-encoder, cross-encoder) / "
                                             "SmolLM2-135M-Instruct (reasoning), both shipped on PyPI. A "
                                             "cross-encoder base keeps its trained head.")] = None,
    qrels: Annotated[Path | None, typer.Option("--qrels", exists=True, dir_okay=False,
                                               help="Human labels (TREC or BEIR qrels) for the candidate inputs of "
                                               "--corpus: train on them with --labels gold.")] = None,
    split: SplitOpt = None,
    depth: Annotated[int | None, typer.Option("--depth", min=1, help="Candidate inputs: the top K candidates per "
                                              "query (BM25 depth for BEIR/TREC directories; default 100).")] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", min=0.0, show_default=False, help=(
        "Passes over the corpus; bi-encoder and cross-encoder: the most, the best epoch on the held-out "
        "queries kept (default 3; 1 with nothing held out).")),
    ] = None,
    holdout: Annotated[float, typer.Option("--holdout", min=0.0, max=0.9, help=(
        "Bi-encoder and cross-encoder: share of the training queries held out (by query, seeded) to choose the "
        "epoch and fit the hybrid with the first stage that evaluate and rerank use; 0 = none.")),
    ] = 0.2,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after N optimizer steps "
                                                  "(default: when --epochs are done).")] = None,
    max_minutes: Annotated[float | None, typer.Option("--max-minutes", min=0.01, help="Wall-clock budget: the "
                                                      "learning rate decays to 0 by it (when it binds), training "
                                                      "stops after the first step past it, the model is saved "
                                                      "(default: none).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help=(
        "Queries (or examples) per step and process: N processes under torchrun take N x this a step "
        f"(default {_by_student('batch_size')}).")),
    ] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr", min=0.0, help=(
        f"Learning rate (default {_by_student('learning_rate', also='2e-04 reasoning with LoRA')}).")),
    ] = None,
    max_length: Annotated[int | None, typer.Option("--max-length", min=8, help=(
        f"Tokens per (query, document) (default {_by_student('max_length', also=_BASE_OWN)}).")),
    ] = None,
    limit: LimitOpt = None,
    labels: Annotated[LabelSource, typer.Option("--labels", help="Learn the teacher's labels or the gold qrels the "
                                                "records carry; never a mix.")] = LabelSource.teacher,
    pointwise_weight: PointwiseWeightOpt = None,
    pairwise_weight: PairwiseWeightOpt = None,
    listwise_weight: ListwiseWeightOpt = None,
    generation_weight: Annotated[float | None, typer.Option("--generation-weight", min=0.0, help=(
        f"Reasoning student: weight of the generation loss (default {_by_student('generation_weight')}).")),
    ] = None,
    negatives: Annotated[int | None, typer.Option("--negatives", min=0, help=(
        "Random passages of other queries per query, as not relevant (default "
        f"{_by_student('negatives')}).")),
    ] = None,
    encoder: Annotated[str | None, typer.Option("--encoder", help="Cross-encoder: the bi-encoder (directory or HF "
                                                "id) that mines hard negatives and scores the distillation lists "
                                                "(default all-MiniLM-L6-v2); 'none' trains on teacher labels "
                                                "alone.")] = None,
    hard_negatives: Annotated[int | None, typer.Option("--hard-negatives", min=0, help=(
        "Bi-encoder: negatives mined per positive (mine_hard_negatives); cross-encoder: the encoder's nearest "
        f"passages of other queries per list (default {_by_student('hard_negatives')}).")),
    ] = None,
    distill_weight: Annotated[float | None, typer.Option("--distill-weight", min=0.0, help=(
        "Weight of the distillation loss (bi-encoder: MarginMSE on the teacher's scores; cross-encoder: ListNet "
        f"on the encoder's lists); 0 = off (default {_by_student('distill_weight')}).")),
    ] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help=(
        f"Cross-encoder: distillation labels are cosine / temperature (default {_by_student('temperature')}).")),
    ] = None,
    lexical_weight: Annotated[float | None, typer.Option("--lexical-weight", min=0.0, max=1.0, help=(
        "Cross-encoder: share of BM25 in the distillation labels, 0 = encoder only (default "
        f"{_by_student('lexical_weight')}).")),
    ] = None,
    start_epochs: Annotated[float | None, typer.Option("--start-epochs", min=0.0, help=(
        "Cross-encoder on a bi-encoder base: first N epochs on the base's own ranking (the encoder's lists in "
        "its own order), so the new head starts where the base stands; then the objectives train on (default "
        f"{_by_student('start_epochs')}).")),
    ] = None,
    train_layers: Annotated[int | None, typer.Option("--train-layers", min=1, help="Train only the top N "
                                                     "transformer layers/blocks, for CPU budgets (default: "
                                                     "every layer).")] = None,
    max_reason_tokens: Annotated[int | None, typer.Option("--max-reason-tokens", min=1, help=(
        f"Reasoning student: reasoning tokens learned per example (default {_by_student('max_reason_tokens')}).")),
    ] = None,
    lora: Annotated[bool | None, typer.Option("--lora/--no-lora", show_default=False,
                                              help="Reasoning student: LoRA adapters (default: on when the base "
                                              "is large).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1, mps (default: the best "
                                               "available).")] = None,
    seed: SeedOpt = 42,
    json_out: JsonOpt = False,
) -> dict:
    """Train a student reranker on a teacher corpus, or on candidates + qrels (several GPUs: `torchrun --nproc-per-node N -m r2r_synth.cli train ...`)."""
    from r2r_synth.config import TrainConfig
    from r2r_synth.student.train import train as run_train

    config = TrainConfig(
        student=student.value, corpus=corpus, out=out, base=base, qrels=qrels, split=split, depth=depth,
        epochs=epochs, holdout=holdout,
        max_steps=max_steps,
        max_minutes=max_minutes,
        batch_size=batch_size, learning_rate=learning_rate, max_length=max_length, limit=limit,
        labels=labels.value, pointwise_weight=pointwise_weight, pairwise_weight=pairwise_weight,
        listwise_weight=listwise_weight, generation_weight=generation_weight, negatives=negatives, lora=lora,
        encoder=encoder, hard_negatives=hard_negatives, distill_weight=distill_weight, temperature=temperature,
        lexical_weight=lexical_weight, start_epochs=start_epochs,
        train_layers=train_layers, max_reason_tokens=max_reason_tokens, device=device, seed=seed,
    )
    from r2r_synth.cli.progress import heartbeat
    from r2r_synth.student.progress import listening

    console.quiet = not is_main_rank()  # several processes (torchrun): rank 0 reports for all
    with heartbeat(console, "train") as step:
        step(f"training the {student.value} student (details with -v)")
        with listening(lambda message, minor=False: step(message, line=not minor)):
            result = run_train(config)
    summary = result.view.summary()
    rejected = f", {plural(summary['rejects'], 'rejected line')} in rejects.jsonl" if summary["rejects"] else ""
    console.print(f"[bold green]saved[/] {result.out}  ({plural(summary['queries'], 'query')}, "
                  f"{plural(summary['documents'], 'document')}{rejected})")
    meta = result.student.meta
    if meta.heldout is not None and meta.heldout.chosen is not None:
        ho = meta.heldout
        console.print(f"held out {plural(len(ho.qids), 'query')}: nDCG@10 after each epoch "
                      + ", ".join(f"{e.epoch:g}: {e.ndcg_at_10:.4f}" for e in ho.epochs)
                      + f"; kept epoch {ho.chosen.epoch:g}")
    if meta.hybrid is not None:
        console.print(f"hybrid: {escape(meta.hybrid.reason)}")
    return {"out": result.out, "student": student.value, "corpus": summary, "r2r_config": meta}


class SignificanceTest(str, Enum):
    randomization = "randomization"
    t_test = "t-test"


def _p_cell(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"


@app.command()
@reports
def evaluate(
    input: InputOpt,
    system: Annotated[
        list[str],
        typer.Option("--system", "-s", metavar="SPEC",
                     help="bm25 | bi-encoder[:PATH] | cross-encoder:PATH_OR_HUB_ID | teacher:<LiteLLM model> | a "
                     "directory from `train` (student-int8:DIR) | run:FILE (a TREC run) | fuse:[rrf|combsum:]A+B "
                     "(systems named before it; A*0.7 weights one); NAME=SPEC names it. Repeat; the first is "
                     "the baseline of the paired tests."),
    ],
    qrels: QrelsOpt = None,
    split: SplitOpt = None,
    out: OutOpt = Path("outputs/evaluation"),
    limit: LimitOpt = None,
    depth: Annotated[int, typer.Option("--depth", min=1, help="Rerank the top K candidates of each query; the "
                                       "rest follow in first-stage order.")] = 100,
    measure: Annotated[list[str] | None, typer.Option("--measure", "-m", metavar="NAME",
                                                      help="ir-measures name (repeat); default nDCG@10, RR@10.",
                                                      show_default=False)] = None,
    test: Annotated[SignificanceTest, typer.Option("--test", help="The paired test whose p-values the table "
                                                   "shows (both go into evaluation.json).")
                    ] = SignificanceTest.randomization,
    permutations: Annotated[int, typer.Option("--permutations", min=100, help="Randomization test: sign "
                                              "assignments sampled.")] = 10_000,
    seed: Annotated[int, typer.Option("--seed", help="Randomization test: sampling seed.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Pairs per model call.")] = 32,
    api_base: ApiBaseOpt = None,
    api_key: ApiKeyOpt = None,
    timeout: TimeoutOpt = None,
    max_retries: MaxRetriesOpt = None,
    programs_dir: ProgramsDirOpt = DEFAULT_PROGRAMS_DIR,
    concurrency: ConcurrencyOpt = 8,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, ... (default: best available).")] = None,
    hybrid: Annotated[bool, typer.Option("--hybrid/--no-hybrid", help="A student ranks fused with the candidates' "
                                         "first-stage scores as its r2r_config.json's hybrid says (fitted on "
                                         "held-out training queries); --no-hybrid: the student alone.")] = True,
    json_out: JsonOpt = False,
) -> dict:
    """Rerank the top K with each system (the rest in first-stage order); ir-measures per query, paired tests
    against the first system, TREC runs, JSON and a chart."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from r2r_synth.cli.progress import Throttle, say
    from r2r_synth.config import EvaluateConfig
    from r2r_synth.evaluate import CHART_FILE, EVALUATION_FILE, PER_QUERY_FILE
    from r2r_synth.evaluate import evaluate as run_evaluate

    config = EvaluateConfig(input=input, qrels=qrels, split=split, systems=system, out=out, limit=limit, depth=depth,
                            test=test.value, permutations=permutations, seed=seed,
                            batch_size=batch_size, api_base=api_base, api_key=api_key, timeout=timeout,
                            max_retries=max_retries, programs_dir=programs_dir, concurrency=concurrency, device=device,
                            hybrid=hybrid,
                            **({"measures": measure} if measure else {}))
    tasks: dict[str, int] = {}
    counts: dict[str, int] = {}
    log_line = Throttle(lambda line: say(console, "evaluate", line))

    def reranked(name: str) -> str:
        return f"{name}: {plural(counts[name], 'query')} reranked"

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as progress:
        def on_query(name: str) -> None:
            if counts and name not in counts and not console.is_terminal:
                log_line(reranked(list(counts)[-1]), force=True)  # the system before is done: its final count
            counts[name] = counts.get(name, 0) + 1
            if console.is_terminal:
                if name not in tasks:
                    tasks[name] = progress.add_task(name, total=None)
                progress.advance(tasks[name])
            else:  # a log: a line when a system starts and every interval, not a bar nobody sees
                log_line(reranked(name), force=counts[name] == 1)

        say(console, "evaluate", f"reading {input} and opening {plural(len(system), 'system')}")
        ev = run_evaluate(config, on_query=on_query)
    # The final count of every system (the bar is gone on a terminal; a log has the last system's to come).
    for name in list(counts) if console.is_terminal else list(counts)[-1:]:
        say(console, "evaluate", reranked(name))
    rep = ev.report
    if rep.get("split"):  # a BEIR directory: which split was scored, and from which files
        default = "" if split else ", the default: --split chooses another"
        say(console, "evaluate", f"scored split {rep['split']}{default} (qrels {rep['qrels']}; queries "
            f"{', '.join(rep['queries_files'])})")
    rows = rep["systems"]
    sig = rep["significance"]
    unchanged = rep["unchanged_by_reranking"]["measures"]
    table = Table(title=f"{plural(rep['judged_queries'], 'judged query', 'judged queries')}, top {depth} reranked; "
                  f"p: paired {test.value} "
                  f"test against {escape(sig['baseline'])}")
    table.add_column("system", overflow="fold")
    num = {"justify": "right", "no_wrap": True}
    for m in config.measures:
        table.add_column(escape(m) + (" *" if m in unchanged else ""), **num)
        if m in sig["measures"] and len(rows) > 1:
            table.add_column("p", **num)
    table.add_column("pairs/s", **num)
    table.add_column("s/query", **num)  # the median
    # A teacher's failed calls are never scored: their queries leave that system's run (listed in the JSON).
    teachers = any(row["failed_calls"] or row["spec"].startswith("teacher:") for row in rows.values())
    if teachers:
        table.add_column("failed calls", **num)
        table.add_column("queries left out", **num)
    run_files = any("not_in_run" in row for row in rows.values())
    if run_files:
        table.add_column("not in run", **num)
    for name, row in rows.items():
        cells = []
        for m in config.measures:
            cells.append(f"{row[m]:.4f}")
            if m in sig["measures"] and len(rows) > 1:
                cells.append(_p_cell(sig["systems"][name][m][test.value]) if name in sig["systems"] else "")
        table.add_row(escape(name), *cells, f"{row['pairs_per_s']}", f"{row['median_query_s']}",
                      *([f"{row['failed_calls']}", f"{row['queries_left_out']}"] if teachers else []),
                      *([f"{row.get('not_in_run', '')}"] if run_files else []))
    # On a terminal the table fits it; in a log or a pipe it keeps its natural width rather than 80 columns.
    make_console(stderr=False).print(table)
    if unchanged:
        console.print(f"* {escape(', '.join(unchanged))}: the same for every system (set-based at a cutoff at or "
                      f"past the depth: every system holds the same top-{depth} documents and the same tail)")
    for name, row in rows.items():
        if row.get("not_in_run"):
            console.print(f"[yellow]{escape(name)}[/]: {row['not_in_run']} reranked candidates are not in the run "
                          f"({plural(row['queries_not_in_run'], 'query')} not at all): ranked below its documents, in "
                          "first-stage order")
        if row["left_out_qids"]:
            qids = row["left_out_qids"]
            console.print(f"[yellow]{escape(name)}[/]: {len(qids)} quer{'y' if len(qids) == 1 else 'ies'} left "
                          f"out (a teacher call failed after its retries): {escape(', '.join(qids[:20]))}"
                          + (" ..." if len(qids) > 20 else ""))
    console.print(f"wrote {ev.out / EVALUATION_FILE}, {ev.out / PER_QUERY_FILE}, {ev.out / CHART_FILE} and one "
                  "TREC run per system")
    return {"out": ev.out, "files": {"evaluation": ev.out / EVALUATION_FILE, "per_query": ev.out / PER_QUERY_FILE,
                                     "chart": ev.out / CHART_FILE}, **rep}


@app.command()
def rerank(
    model: Annotated[str, typer.Option("--model", metavar="MODEL", help="A directory from `train`, or "
                                       "cross-encoder:PATH_OR_HUB_ID, or bi-encoder[:PATH].")],
    query: Annotated[str, typer.Option("--query", "-q", help="Your query.")],
    docs: Annotated[str, typer.Option("--docs", "-d", help="Documents: JSONL ({\"text\", \"docid\"?, \"title\"?}) or "
                                      "plain text, one per line; - reads stdin.")] = "-",
    top: Annotated[int | None, typer.Option("--top", min=1, help="Show only the best N.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="Say why: each result's evidence sentence (the one "
                                          "the model scores highest), or the reasoning student's reasoning.")] = False,
    explain_top: Annotated[int, typer.Option("--explain-top", min=1, help="How many results the reasoning student "
                                             "explains.")] = 3,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, ... (default: best available).")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="A student in int8 on the CPU, through OpenVINO or ONNX "
                                       "Runtime (R2R_INT8_BACKEND chooses): faster, scores shift slightly.")] = False,
    hybrid: Annotated[bool, typer.Option("--hybrid/--no-hybrid", help="A student with a hybrid ranks fused with "
                                         "BM25 computed over the given documents; --no-hybrid: the student "
                                         "alone.")] = True,
) -> None:
    """Rank your own documents for a query with a trained student or any cross-encoder."""
    from rich.table import Table

    from r2r_synth.evaluate import model_spec, read_documents, rerank_documents

    model_spec(model, int8=int8)  # a bad --model is an error before stdin is read
    documents = read_documents("<stdin>", sys.stdin.read()) if docs == "-" else read_documents(docs)
    ranked = rerank_documents(model=model, query=query, documents=documents, device=device,
                              explain=explain, explain_top=explain_top, int8=int8, hybrid=hybrid)
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
        if r.evidence:
            text += f"\n[italic]evidence:[/] {escape(r.evidence)}"
        table.add_row(str(r.rank), f"{r.score:.4f}", escape(r.docid), text)
    make_console(stderr=False).print(table)
