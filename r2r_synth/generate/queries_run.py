"""`generate_queries(config)`: a corpus -> the queries its documents answer -> candidates to train on.

The session is `generate`'s (`r2r_synth.generate.run._session`): one engine, one call policy, one run
directory with its lock, journal, resume rule, budget and batches; only the jobs differ (one request
per document, `r2r_synth.generate.doc_queries`). A rerun asks no finished key again.

When every document has its answer, the **consistency filter** runs (Promptagator, Dai et al. 2022;
InPars-v2, Jeronymo et al. 2023): each query is searched with BM25 over the whole corpus and kept
only when its source document comes back in the top `--keep-top`, so a query its document does not
answer, or one a hundred documents answer as well, is left out. Then the outputs, each written whole
and atomically (a rerun rewrites them from the records, so they are the same however often the run
was interrupted):

- `consistency.jsonl`: every query written, with its source document's rank and whether it was kept
  (`SyntheticQuery`), so no query is dropped silently;
- `queries.jsonl` (BEIR: `{"_id", "text"}`) and `qrels.tsv` (BEIR: `query-id corpus-id score`, the
  source document judged 1) of the kept queries;
- `candidates.jsonl`: each kept query with its BM25 top `--depth` and their scores, the source
  judged 1 (`Candidates`): `generate --input` reads it as it is, and `train --corpus candidates.jsonl
  --qrels qrels.tsv --labels gold` trains on it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r2r_synth.atomic import write_jsonl_atomic, write_text_atomic
from r2r_synth.config import QueriesConfig, scrub
from r2r_synth.errors import TeacherError
from r2r_synth.generate.batch import check_batch_config, make_broker
from r2r_synth.generate.doc_queries import (
    QueryJob,
    build_query_jobs,
    check_queries_config,
    read_documents,
    read_examples,
    sample_documents,
)
from r2r_synth.generate.engine import Progress
from r2r_synth.generate.run import _session
from r2r_synth.rundir import RunDir
from r2r_synth.schemas import Candidates, Document, QueriesRecord, Query, SyntheticQuery

logger = logging.getLogger(__name__)

QUERIES_FILE = "queries.jsonl"
QRELS_FILE = "qrels.tsv"
CANDIDATES_FILE = "candidates.jsonl"
CONSISTENCY_FILE = "consistency.jsonl"


@dataclass
class QueriesResult:
    """What a `queries` session wrote: the run directory, its manifest, and the filter's counts."""

    run_dir: Path
    progress: Progress | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def generate_queries(config: QueriesConfig, *, on_progress: Callable[[Progress], None] | None = None,
                     on_status: Callable[[str], None] | None = None, command: str = "", teacher: Any = None,
                     backoff_base: float = 0.5, backoff_cap: float = 30.0) -> QueriesResult:
    """Run `config` (see the module docstring). `teacher` (an opened `Teacher`) skips `open_teacher`
    and its preflight (tests, benchmarks). Raises InputError/ConfigError before anything is asked or
    written, BudgetExceeded (exit 3) after a clean stop at `max_cost`, IncompleteRun when requests got
    no answer (rerun to ask them), TeacherError when the teacher fails or no query passes the filter."""
    say = on_status or logger.info
    check_queries_config(config)
    mode = check_batch_config(config)  # type: ignore[arg-type]  # the batch fields are generate's
    RunDir(config.out).check_writable()
    say(f"reading {config.corpus}")
    corpus, textless = read_documents(config.corpus)
    docs = sample_documents(corpus, n=config.docs, seed=config.seed)
    examples = read_examples(config.examples, limit=config.max_examples, seed=config.seed) if config.examples else []

    from r2r_synth.teacher.programs import load_program

    programs = {"queries": load_program("queries", programs_dir=config.programs_dir)}
    args = (config, corpus, docs, examples, textless, programs, on_progress, command, say)
    from r2r_synth.teacher.pricing import command_line_prices

    prices = command_line_prices(price_in=config.price_in, price_out=config.price_out,
                                 price_cached_in=config.price_cached_in)
    if teacher is not None:
        if prices is not None:
            teacher.prices = prices
        return _with_teacher(*args, teacher)

    from r2r_synth.teacher.lm import open_teacher
    from r2r_synth.teacher.policy import command_policy
    from r2r_synth.teacher.preflight import preflight

    embedded = config.teacher is None and config.router is None
    policy = command_policy(embedded=embedded, timeout=config.timeout, max_retries=config.max_retries,
                            api_key=config.api_key, backoff_base=backoff_base, backoff_cap=backoff_cap)
    say("starting the embedded teacher (SmolLM2-135M under llama.cpp)" if embedded
        else f"opening the teacher {config.teacher or config.router}: checking its key and endpoint")
    with open_teacher(config.teacher, api_base=config.api_base, api_key=config.api_key,
                      temperature=config.temperature, max_tokens=config.max_tokens, router=config.router,
                      policy=policy, transport=config.transport, prices=prices,
                      prompt_cache=config.prompt_cache) as t:
        if mode == "batch":
            from r2r_synth.generate.batch_api import check_provider

            check_provider(t)
        if mode not in ("export", "import"):  # a batch file reaches no endpoint
            say(f"preflight: {preflight(t).describe()}")
        return _with_teacher(*args, t)


def _with_teacher(config: QueriesConfig, corpus: dict[str, Document], docs: list[Document], examples: list[str],
                  textless: int, programs: dict[str, Any], on_progress: Callable[[Progress], None] | None,
                  command: str, say: Callable[[str], None], teacher: Any) -> QueriesResult:
    mode = check_batch_config(config)  # type: ignore[arg-type]
    prog = programs["queries"]
    jobs, cuts = build_query_jobs(docs, config=config, examples=examples, program_hash=prog.program_hash,
                                  teacher=teacher.name)
    if config.max_cost is not None:
        from r2r_synth.errors import ConfigError
        from r2r_synth.teacher.pricing import is_priced

        if not is_priced(teacher, batch=mode == "batch"):
            raise ConfigError(f"--max-cost needs a teacher LiteLLM can price; {teacher.name!r} is not priced",
                              hint="drop --max-cost, or register the model's prices with litellm.register_model")
    run = RunDir(config.out)
    command = scrub(command, [config.api_key or ""])
    with run.lock(command=command):
        broker = make_broker(mode, teacher=teacher, config=config, run=run, say=say) if mode else None  # type: ignore[arg-type]
        try:
            # BudgetExceeded, IncompleteRun, BatchPending and TeacherError leave the outputs unwritten:
            # they are written from the records once every document has its answer.
            result = _session(config, run, jobs, programs, cuts, on_progress, command, teacher, [], 0,  # type: ignore[arg-type]
                              broker, kinds=["queries"])
        finally:
            if broker is not None:
                broker.close()
        if result.manifest is not None and result.manifest.status == "pending":
            return QueriesResult(run_dir=run.path, progress=result.progress)
        say(f"consistency filter: BM25 over {len(corpus):,} documents, keeping a query whose document is in its "
            f"top {config.keep_top}")
        summary = write_outputs(run, jobs, corpus, config=config)
        summary |= {"documents": len(docs), "documents_without_text": textless, "examples": len(examples),
                    "corpus_documents": len(corpus)}
        manifest = run.read_manifest()
        if manifest is not None:
            manifest.extra["queries"] = summary
            run.write_manifest(manifest)
    if not summary["kept"]:
        raise TeacherError(
            f"none of the {summary['written']} queries the teacher wrote passed the consistency filter (its "
            f"document in BM25's top {config.keep_top}); no candidates were written (see consistency.jsonl)",
            hint="raise --keep-top, show real queries with --examples, or use a stronger --teacher")
    return QueriesResult(run_dir=run.path, progress=result.progress, summary=summary)


def consistency(records: list[QueriesRecord], corpus: dict[str, Document], *, keep_top: int,
                depth: int) -> tuple[list[SyntheticQuery], list[Candidates]]:
    """The consistency filter and the candidates (see the module docstring): every query with its
    source document's BM25 rank, and each kept query's BM25 top `depth` with the source judged 1."""
    from r2r_synth.io.first_stage import BM25Index

    rows: list[tuple[QueriesRecord, int, str]] = [(r, i, q) for r in records for i, q in enumerate(r.queries)]
    index = BM25Index.build(corpus)
    hits = index.search([q for _, _, q in rows], k=max(depth, keep_top)) if rows else []
    out: list[SyntheticQuery] = []
    cands: list[Candidates] = []
    for (rec, i, text), ranked in zip(rows, hits):
        docid = rec.document.docid
        qid = f"{docid}-q{i + 1}"
        top = [d for d, _ in ranked[:keep_top]]
        rank = top.index(docid) + 1 if docid in top else None
        out.append(SyntheticQuery(qid=qid, text=text, docid=docid, key=rec.key, rank=rank, kept=rank is not None))
        if rank is not None:
            ranked = ranked[:depth]
            cands.append(Candidates(query=Query(qid=qid, text=text), documents=[corpus[d] for d, _ in ranked],
                                    scores=[round(s, 6) for _, s in ranked], qrels={docid: 1}))
    return out, cands


def write_outputs(run: RunDir, jobs: list[QueryJob], corpus: dict[str, Document], *,
                  config: QueriesConfig) -> dict[str, Any]:
    """Filter the records of this run's `jobs` (records of other settings in the same directory are
    not mixed in) and write the outputs, each atomically; the filter's counts."""
    by_key = {r.key: r for r in run.generated_queries()}
    records = [by_key[j.key] for j in jobs if j.key in by_key]
    rows, cands = consistency(records, corpus, keep_top=config.keep_top, depth=config.depth)
    unanswered = {j.key for j in jobs} - {r.key for r in records}
    rejected = sum(1 for r in run.rejects() if r.kind == "queries" and r.key in unanswered)
    kept = [r for r in rows if r.kept]
    write_jsonl_atomic(run.path / CONSISTENCY_FILE, rows)
    if kept:
        write_text_atomic(run.path / QUERIES_FILE, "".join(json.dumps({"_id": r.qid, "text": r.text},
                                                                       ensure_ascii=False) + "\n" for r in kept))
        write_text_atomic(run.path / QRELS_FILE, "query-id\tcorpus-id\tscore\n"
                          + "".join(f"{r.qid}\t{r.docid}\t1\n" for r in kept))
        write_jsonl_atomic(run.path / CANDIDATES_FILE, cands)
    return {"records": len(records), "documents_rejected": rejected, "written": len(rows), "kept": len(kept),
            "kept_share": round(len(kept) / len(rows), 4) if rows else 0.0,
            "top1": sum(1 for r in kept if r.rank == 1), "keep_top": config.keep_top, "depth": config.depth}
