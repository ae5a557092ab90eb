"""`r2r-synth queries`: the teacher writes the queries a corpus's documents answer (InPars,
Promptagator); a consistency filter keeps the ones BM25 finds their document for; candidates for
`generate` and `train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from r2r_synth.cli.app import _command_line, app, console
from r2r_synth.cli.generate import _GenerateProgress, _print_run_summary
from r2r_synth.cli.options import (
    ApiBaseOpt,
    ApiKeyOpt,
    JsonOpt,
    MaxRetriesOpt,
    MaxTokensOpt,
    OutOpt,
    ParseRetriesOpt,
    PriceCachedInOpt,
    PriceInOpt,
    PriceOutOpt,
    ProgramsDirOpt,
    PromptCacheOpt,
    RpmOpt,
    SeedOpt,
    TeacherConcurrencyOpt,
    TeacherOpt,
    TemperatureOpt,
    TimeoutOpt,
    TpmOpt,
)
from r2r_synth.cli.output import emit_json, reports
from r2r_synth.config import DEFAULT_PROGRAMS_DIR


@app.command()
@reports
def queries(
    corpus: Annotated[Path, typer.Option("--corpus", help="The documents: a BEIR corpus.jsonl, a TREC document "
                                         "file, or a BEIR/TREC collection directory.")],
    out: OutOpt,
    docs: Annotated[int | None, typer.Option("--docs", show_default="every document with text",
                                             help="Ask about a seeded sample of N documents (a larger N asks the "
                                             "same ones and more).")] = None,
    per_doc: Annotated[int, typer.Option("--per-doc", help="Queries asked of each document.")] = 3,
    examples: Annotated[Path | None, typer.Option("--examples", dir_okay=False,
                                                  help="Real queries of the collection (BEIR queries.jsonl or "
                                                  "a TSV), shown to the teacher as examples of style "
                                                  "(Promptagator's few-shot).")] = None,
    max_examples: Annotated[int, typer.Option("--max-examples", help="Examples shown per request (a seeded "
                                              "sample of --examples).")] = 8,
    keep_top: Annotated[int, typer.Option("--keep-top", help="Consistency filter: keep a query when BM25 over "
                                          "the corpus ranks its document in the top K.")] = 3,
    depth: Annotated[int, typer.Option("--depth", "-k", help="Candidates: the BM25 top N of each kept "
                                       "query.")] = 100,
    teacher: TeacherOpt = None,
    api_base: ApiBaseOpt = None,
    api_key: ApiKeyOpt = None,
    router: Annotated[Path | None, typer.Option("--router", exists=True, dir_okay=False,
                                                help="LiteLLM Router config: spread the run over many "
                                                "servers.")] = None,
    transport: Annotated[str, typer.Option("--transport", metavar="[auto|litellm|http]",
                                           help="As for generate.")] = "auto",
    programs_dir: ProgramsDirOpt = DEFAULT_PROGRAMS_DIR,
    temperature: TemperatureOpt = 0.0,
    max_tokens: MaxTokensOpt = None,
    concurrency: TeacherConcurrencyOpt = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    max_retries: MaxRetriesOpt = None,
    parse_retries: ParseRetriesOpt = 1,
    timeout: TimeoutOpt = None,
    max_cost: Annotated[float | None, typer.Option("--max-cost", min=0.0, metavar="USD", help="Stop cleanly at "
                                                   "this many USD (exit code 3; rerun to resume).")] = None,
    max_doc_chars: Annotated[int | None, typer.Option("--max-doc-chars", min=1, help="Show the teacher the first "
                                                      "N characters of a document.")] = 4_000,
    retry_rejects: Annotated[bool, typer.Option("--retry-rejects", help="Ask again for requests in "
                                                "rejects.jsonl.")] = False,
    batch: Annotated[bool, typer.Option("--batch", help="Submit the pending requests to the provider's batch API "
                                        "and exit 5; rerun to collect (as for generate).")] = False,
    export_batch: Annotated[Path | None, typer.Option("--export-batch", metavar="FILE", dir_okay=False,
                                                      help="Write the pending requests as OpenAI batch "
                                                      "JSONL.")] = None,
    import_batch: Annotated[Path | None, typer.Option("--import-batch", metavar="FILE", exists=True, dir_okay=False,
                                                      help="Read a batch results file back into the "
                                                      "run.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="At most this many requests per "
                                                   "batch file.")] = None,
    price_in: PriceInOpt = None,
    price_out: PriceOutOpt = None,
    price_cached_in: PriceCachedInOpt = None,
    prompt_cache: PromptCacheOpt = None,
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
) -> dict:
    """Ask a teacher LLM for the queries each document of a corpus answers (InPars, Promptagator),
    keep those whose document BM25 finds again in its top --keep-top, and write queries.jsonl,
    qrels.tsv and candidates.jsonl (the BM25 top --depth of each query) for `generate --input` and
    `train --corpus ... --qrels ... --labels gold`. Rerun the same command to resume."""
    from r2r_synth.config import QueriesConfig
    from r2r_synth.generate.queries_run import generate_queries

    config = QueriesConfig(
        corpus=corpus, out=out, docs=docs, per_doc=per_doc, examples=examples, max_examples=max_examples,
        keep_top=keep_top, depth=depth, seed=seed, teacher=teacher, api_base=api_base, api_key=api_key,
        router=router, transport=transport, programs_dir=programs_dir, temperature=temperature,
        max_tokens=max_tokens, concurrency=concurrency, rpm=rpm, tpm=tpm, max_retries=max_retries,
        parse_retries=parse_retries, timeout=timeout, max_cost=max_cost, max_doc_chars=max_doc_chars,
        retry_rejects=retry_rejects, batch=batch, export_batch=export_batch, import_batch=import_batch,
        batch_size=batch_size, price_in=price_in, price_out=price_out, price_cached_in=price_cached_in,
        prompt_cache=prompt_cache,
    )
    from r2r_synth.cli.progress import say
    from r2r_synth.errors import BatchPending, BudgetExceeded, IncompleteRun, TeacherError

    def status(message: str) -> None:
        say(console, "queries", message)

    with _GenerateProgress("queries") as bar:
        try:
            result = generate_queries(config, on_progress=bar.update, on_status=status,
                                      command=_command_line(api_key))
        except (BatchPending, BudgetExceeded, IncompleteRun, TeacherError):
            bar.stop()
            summary = _print_run_summary(out)
            if json_out:  # a script reads what this session did, and the exit code why it stopped
                emit_json(summary)
            raise
    summary = _print_run_summary(out)
    s = result.summary
    if s:
        console.print(f"queries: {s['kept']:,} of {s['written']:,} kept by the consistency filter "
                      f"({s['kept_share']:.0%}; document first for {s['top1']:,}) from {s['records']:,} documents; "
                      f"candidates in {out / 'candidates.jsonl'}, qrels in {out / 'qrels.tsv'}", highlight=False)
    return summary | {"queries": s or None}
