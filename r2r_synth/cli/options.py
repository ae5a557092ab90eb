"""Option definitions shared by the commands (`Annotated` aliases, as huggingface_hub's CLI does)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# ----------------------------------------------------------------- shared option aliases

Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print what the command did as one JSON object on stdout "
                                       "(messages and tables go to stderr).")]
InputOpt = Annotated[
    str,
    typer.Option(
        "--input",
        "-i",
        help="Candidates: RankGPT JSON, JSONL of candidate lists, a BEIR directory, a TREC collection "
        "directory, an ir_datasets id (e.g. irds:msmarco-passage/trec-dl-2019/judged), or BRIGHT (bright:DOMAIN).",
    ),
]
QrelsOpt = Annotated[
    Path | None,
    typer.Option("--qrels", help="TREC qrels (qid Q0 docid grade) or BEIR qrels TSV, when labels come separately.",
                 exists=True, dir_okay=False),
]
SplitOpt = Annotated[
    str | None,
    typer.Option("--split", metavar="NAME", show_default="test, else the only split",
                 help="The split of a BEIR directory (its qrels/NAME.tsv), or the domain of a local BRIGHT copy. "
                 "Several splits and no --split is refused; splits are never mixed."),
]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, show_default="every query",
                                              help="Only the first N queries.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory.")]
TeacherOpt = Annotated[
    str | None,
    typer.Option(
        "--teacher",
        "-t",
        metavar="MODEL",
        help="Any LiteLLM model string (gpt-4o, anthropic/claude-..., ollama_chat/llama3.1, hosted_vllm/<name>). "
        "Omit it to use the embedded offline teacher (SmolLM2-135M: for trying the toolkit, not for quality).",
    ),
]
ApiBaseOpt = Annotated[str | None, typer.Option("--api-base", metavar="URL",
                                                 help="Base URL of an OpenAI-compatible server.")]
ProgramsDirOpt = Annotated[
    Path, typer.Option("--programs-dir", help="Where optimized teacher programs live (programs/<name>.json).")
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar="R2R_API_KEY", show_default=False, metavar="KEY",
                 help="API key for the teacher (default: the provider's own environment variable, e.g. "
                 "OPENAI_API_KEY). Masked in every message; never recorded."),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option("--timeout", min=0.1, metavar="SECONDS", help="Seconds per teacher request (default 120; 600 for the embedded teacher)."),
]
MaxRetriesOpt = Annotated[
    int | None,
    typer.Option("--max-retries", min=0, help="Retries of a teacher call on 429/5xx/timeouts (exponential "
                 "backoff with jitter; default 5). A call that still fails counts as failed, never as an answer."),
]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Requests in flight at once.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]

# How a run asks the teacher (generate, queries: one engine, one call policy).
TemperatureOpt = Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature.")]
MaxTokensOpt = Annotated[int | None, typer.Option("--max-tokens", min=1, help="Cap on reply tokens.")]
TeacherConcurrencyOpt = Annotated[int | None, typer.Option(
    "--concurrency", "-c", min=1, help="Requests in flight at once (default 16; 2 for the embedded teacher).")]
RpmOpt = Annotated[int | None, typer.Option("--rpm", min=1, help="Requests per minute, at most.")]
TpmOpt = Annotated[int | None, typer.Option("--tpm", min=1, help="Tokens per minute, at most.")]
ParseRetriesOpt = Annotated[int, typer.Option(
    "--parse-retries", min=0, help="Asks again after an unparseable or invalid reply before it is rejected.")]

# The teacher's prices and its prompt cache (generate, queries): see r2r_synth.teacher.pricing / caching.
PriceInOpt = Annotated[float | None, typer.Option(
    "--price-in", min=0.0, metavar="USD", help="The teacher's input price, USD per million tokens (with "
    "--price-out; recorded in config.json): prices a teacher LiteLLM's cost map does not know, for "
    "--max-cost, --dry-run, reports and cards.")]
PriceOutOpt = Annotated[float | None, typer.Option(
    "--price-out", min=0.0, metavar="USD", help="The teacher's output price, USD per million tokens.")]
PriceCachedInOpt = Annotated[float | None, typer.Option(
    "--price-cached-in", min=0.0, metavar="USD", help="The teacher's price of cached input, USD per million "
    "tokens (default: --price-in).")]
PromptCacheOpt = Annotated[bool | None, typer.Option(
    "--prompt-cache/--no-prompt-cache", show_default=False, help="Mark the static prompt prefix "
    "(instructions, demos) for the provider's cache where it needs marking (Anthropic); on by default. "
    "Cached input tokens are counted and priced either way.")]

RunDirArg = Annotated[
    Path, typer.Argument(help="A run directory written by `generate` or `import`.", exists=True, file_okay=False)
]

