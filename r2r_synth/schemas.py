"""The data contract: every file r2r-synth reads or writes is a JSONL of one of these models.

All models forbid unknown fields (`extra="forbid"`), so a typo in a row is an error that names the
file and line (see `r2r_synth.io.jsonl.read_jsonl`). `r2r-synth schema KIND` prints the JSON Schema
of a record kind.

Stages meet only here and at files: `generate` writes Direct/Comparison/Listwise records (and, for
listwise windows, each query's final `RankingRecord`), `import` writes Listwise records, `publish`,
`report`, `train` and `evaluate` read them.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

Grade = Annotated[int, Field(ge=0, le=3, description="Graded relevance as in TREC DL: 0 irrelevant .. 3 perfect")]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class Strict(BaseModel):
    """Base for every record: unknown fields are errors, not silently kept."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --------------------------------------------------------------------------- inputs


class Query(Strict):
    qid: str
    text: str


class Document(Strict):
    docid: str
    text: str
    title: str | None = None

    def full_text(self) -> str:
        """Title and body as one passage (BEIR style), what the teacher and the student read."""
        return f"{self.title}. {self.text}" if self.title else self.text


class Candidates(Strict):
    """One query with its first-stage ranked documents and, where known, gold labels.

    `documents` is in first-stage order (best first); `scores` are the first-stage scores when known.
    `qrels` maps docid -> gold grade for every judged document of the query (it may name documents
    that are not among the candidates; unjudged candidates are simply absent).
    """

    query: Query
    documents: list[Document]
    scores: list[float] | None = None
    qrels: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Candidates:
        if self.scores is not None and len(self.scores) != len(self.documents):
            raise ValueError(
                f"scores has {len(self.scores)} entries but documents has {len(self.documents)}; "
                "give one first-stage score per document or none"
            )
        seen: set[str] = set()
        for d in self.documents:
            if d.docid in seen:
                raise ValueError(f"docid {d.docid!r} appears twice among the candidates of qid {self.query.qid!r}")
            seen.add(d.docid)
        return self

    def gold(self, docid: str) -> int | None:
        return self.qrels.get(docid)


# --------------------------------------------------------------------------- provenance


class Usage(Strict):
    """Token usage. `prompt_tokens` counts every input token; `cached_tokens` of them were read from
    the provider's prompt cache and `cache_write_tokens` written to it (Anthropic bills writes above
    the input rate)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )

    @property
    def cached_share(self) -> float:
        """The share of input tokens served from the provider's cache (0 when none was read)."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class Provenance(Strict):
    """Where a record came from. `cost` is in USD and None when unknown: never a guess."""

    teacher: str = Field(description="LiteLLM model string, 'embedded/smollm2-135m-instruct', or 'imported:<source>'")
    program: str = Field(description="program name, e.g. 'direct' or 'comparison'")
    program_hash: str = Field(description="content hash of the program state (instructions + demos)")
    prompt_hash: str = Field(description="hash of the instruction text the teacher saw")
    rollout_id: int = 0
    usage: Usage | None = None
    cost: float | None = None
    cache_saved: float | None = Field(default=None, description="USD the provider's prompt cache saved on this "
                                      "record's calls (the cost at full input prices minus `cost`)")
    latency_s: float | None = None
    created_at: datetime = Field(default_factory=utcnow)
    r2r_synth_version: str | None = None


# --------------------------------------------------------------------------- records


class DirectRecord(Strict):
    """Direct relevance reasoning: how one document addresses a query, with a graded label."""

    kind: Literal["direct"] = "direct"
    key: str = Field(description="content-addressed request key (see `request_key`)")
    query: Query
    document: Document
    reasoning: str
    relevance: Grade
    score: Unit = Field(description="calibrated probability that the document is relevant")
    first_stage_rank: int | None = Field(default=None, description="1-based rank in the input candidates")
    gold: int | None = Field(default=None, description="gold grade from qrels, beside the teacher's; None if unjudged")
    provenance: Provenance


class ComparisonAnswer(Strict):
    """One ordered answer of a comparison: `preferred` is in the labels of the record (A = doc_a)."""

    reasoning: str
    preferred: Literal["A", "B"]
    confidence: Unit


class ComparisonRecord(Strict):
    """Comparison reasoning: why one document beats another, asked in both orders.

    `reasoning`/`preferred`/`confidence` are the answer with doc_a shown first. `swapped` is the
    answer with the documents shown in the other order, translated back into this record's labels;
    `swap_agrees` is False when the two answers prefer different documents (position bias).
    """

    kind: Literal["comparison"] = "comparison"
    key: str
    query: Query
    doc_a: Document
    doc_b: Document
    reasoning: str
    preferred: Literal["A", "B"]
    confidence: Unit
    swapped: ComparisonAnswer | None = None
    swap_agrees: bool | None = None
    gold_a: int | None = None
    gold_b: int | None = None
    pair_strategy: str | None = Field(default=None, description="which --pairs strategy chose this pair")
    provenance: Provenance

    @model_validator(mode="after")
    def _check(self) -> ComparisonRecord:
        if self.doc_a.docid == self.doc_b.docid:
            raise ValueError(f"doc_a and doc_b are the same document ({self.doc_a.docid!r})")
        if self.swapped is not None and self.swap_agrees is None:
            self.swap_agrees = self.swapped.preferred == self.preferred
        return self


class ListwiseItem(Strict):
    docid: str
    reason: str | None = Field(default=None, description="why the document is where it is (R2R: direct_reason)")
    comparison_reason: str | None = Field(default=None, description="R2R: listwise_reason")
    answer_sentence: str | None = Field(default=None, description="R2R: direct_answer_sentence")
    relevance: Grade | None = Field(default=None, description="the teacher's graded label (0-3), where it gave one")


class ListwiseWindow(Strict):
    """Where a generated window sat among its query's sliding windows (RankGPT's order: the first
    window asked is the bottom of the top K, each next one `stride` passages higher)."""

    index: int = Field(ge=0, description="0 = the first window asked (the bottom of the list)")
    count: int = Field(ge=1, description="how many windows the query has")
    start: int = Field(ge=0, description="0-based position of the window's first passage in the query's order "
                       "when it was asked")
    window: int = Field(ge=2, description="the --window setting (the top window may be shorter)")
    stride: int = Field(ge=1, description="the --stride setting")
    depth: int = Field(ge=2, description="candidates of the query ranked by its windows (its top K)")


class RankingRepair(Strict):
    """What was wrong with a permutation the teacher gave, and how it was repaired the way RankGPT and
    rank_llm repair one: identifiers outside the window and repeated ones are dropped (the first
    mention counts), and the passages it left out are appended in the order they were shown."""

    unknown: list[int] = Field(default_factory=list, description="identifiers not in the window (dropped)")
    duplicates: list[int] = Field(default_factory=list, description="identifiers named again (dropped)")
    missing: list[int] = Field(default_factory=list, description="identifiers left out (appended in shown order)")


class ListwiseRecord(Strict):
    """Listwise reasoning (R2R's released shape): a window of documents and the teacher's order.

    Generated records also carry where the window sat (`window`), each document's first-stage rank,
    and whether the permutation had to be repaired; the query's final ranking over all its windows is
    in `rankings.jsonl` (`RankingRecord`)."""

    kind: Literal["listwise"] = "listwise"
    key: str
    query: Query
    documents: list[Document] = Field(description="the window, in the order the teacher was shown it")
    ranking: list[str] = Field(description="docids, most relevant first (a permutation of the window)")
    items: list[ListwiseItem] = Field(default_factory=list, description="per-document reasons, in ranking order")
    gold: dict[str, int] = Field(default_factory=dict)
    first_stage_ranks: list[int] | None = Field(
        default=None, description="1-based first-stage rank of each document, in the order of `documents`")
    window: ListwiseWindow | None = Field(default=None, description="the window's place in its query's sliding "
                                          "windows (None: a single window, e.g. an imported R2R row)")
    repaired: bool = Field(default=False, description="the teacher's permutation was flawed and was repaired")
    repair: RankingRepair | None = Field(default=None, description="what the repair did (when `repaired`)")
    provenance: Provenance

    @model_validator(mode="after")
    def _check(self) -> ListwiseRecord:
        window = [d.docid for d in self.documents]
        if sorted(window) != sorted(self.ranking) or len(set(window)) != len(window):
            raise ValueError(f"ranking {self.ranking} is not a permutation of the window {window}")
        if self.first_stage_ranks is not None and len(self.first_stage_ranks) != len(window):
            raise ValueError(f"first_stage_ranks has {len(self.first_stage_ranks)} entries for a window of "
                             f"{len(window)} documents; give one per document or none")
        if self.repaired != (self.repair is not None):
            raise ValueError("`repaired` and `repair` disagree: a repaired record says what the repair did")
        return self


class RankingRecord(Strict):
    """The teacher's final ranking of one query's top K after all its sliding windows (one line of
    `rankings.jsonl` per query and rollout, written when its last window is done). Its `key` is the
    content address of the query's whole window run; `windows` are the keys of its windows'
    records (or rejects), in the order they were asked."""

    kind: Literal["ranking"] = "ranking"
    key: str
    query: Query
    ranking: list[str] = Field(description="docids of the top K, most relevant first")
    first_stage: list[str] = Field(description="the same docids in first-stage order")
    window: int
    stride: int
    windows: list[str] = Field(description="keys of the query's windows, in the order asked")
    windows_repaired: int = Field(default=0, description="windows whose permutation was repaired")
    windows_rejected: int = Field(default=0, description="windows whose reply was unusable or refused (rejects.jsonl): "
                                  "their passages kept the order they were shown in")
    gold: dict[str, int] = Field(default_factory=dict)
    provenance: Provenance = Field(description="the listwise program and teacher; usage and cost summed over the "
                                   "windows' records")

    @model_validator(mode="after")
    def _check(self) -> RankingRecord:
        if sorted(self.ranking) != sorted(self.first_stage) or len(set(self.ranking)) != len(self.ranking):
            raise ValueError(f"qid {self.query.qid!r}: the final ranking is not a permutation of its "
                             f"{len(self.first_stage)} candidates")
        return self


class QueriesRecord(Strict):
    """The queries the teacher wrote for one document (`r2r-synth queries`; one line of
    `generated_queries.jsonl` per document), before the consistency filter."""

    kind: Literal["queries"] = "queries"
    key: str = Field(description="content-addressed request key (see `request_key`)")
    document: Document = Field(description="the document as the teacher was shown it")
    queries: list[str] = Field(min_length=1, description="the queries it answers, as written, duplicates removed")
    examples: int = Field(default=0, description="real queries shown to the teacher as examples of style")
    provenance: Provenance


class SyntheticQuery(Strict):
    """One query the teacher wrote, after the consistency filter (`consistency.jsonl`): kept when BM25
    over the whole corpus finds its source document in the top `keep_top`."""

    qid: str
    text: str
    docid: str = Field(description="the source document: the query's one judged relevant document")
    key: str = Field(description="the request key of the `QueriesRecord` it came from")
    rank: int | None = Field(description="the source document's rank in BM25's results for the query (1 = first); "
                             "None: not in the top `keep_top`")
    kept: bool


RejectCause = Literal["reply", "refused", "input", "transport", "auth", "config", "aborted"]
RETRYABLE_CAUSES = frozenset({"transport", "auth", "config", "aborted"})


class Reject(Strict):
    """A request that did not become a record, with why. Nothing is ever silently dropped."""

    kind: Literal["direct", "comparison", "listwise", "queries", "input"]
    key: str
    reason: str = Field(description="the error, e.g. 'unparseable reply: ...' or 'validation: ...'")
    cause: RejectCause | None = Field(
        default=None,
        description="'reply': the teacher's reply was unusable (its answer); 'refused': the backend refused "
        "this request; 'input': a line that could not be read; 'transport', 'auth', 'config', 'aborted': no "
        "answer came (the next run asks again)")
    attempts: int = 1
    inputs: dict[str, Any] = Field(default_factory=dict, description="what was asked (qid, docids)")
    raw: str | None = Field(default=None, description="the teacher's raw reply, when there was one")
    teacher: str | None = None
    program_hash: str | None = None
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def retryable(self) -> bool:
        """True when this is not the teacher's answer (a failure of the transport, the key, the
        configuration or the run), so a resumed run asks again. Rejects written before `cause`
        existed say so in their reason."""
        if self.cause is not None:
            return self.cause in RETRYABLE_CAUSES
        return self.reason.startswith("transient: ") or self.reason == "run aborted"


FilterRule = Literal["swap-consistent", "gold-distance", "min-confidence", "length", "listwise-ndcg",
                     "exact-duplicate", "near-duplicate", "self-consistency"]
FILTER_RULES: tuple[str, ...] = get_args(FilterRule)  # the order `r2r-synth filter` applies them in


class Filtered(Strict):
    """A record `r2r-synth filter` dropped (a line of the child run's `filtered.jsonl`), whole, with the
    rule that dropped it: kept records + filtered records = the parent's records."""

    kind: Literal["direct", "comparison", "listwise"]
    key: str
    rule: FilterRule = Field(description="the rule that dropped the record: the first, in the fixed order, "
                             "that drops it when the rules are applied one after another")
    detail: str = Field(description="why, in words, e.g. 'grade 3, gold 0: 3 apart (> 1)'")
    also: list[FilterRule] = Field(default_factory=list, description="the other rules that drop this record "
                                   "when each is applied alone to the whole input")
    record: Annotated[DirectRecord | ComparisonRecord | ListwiseRecord, Field(discriminator="kind")]

    @model_validator(mode="after")
    def _check(self) -> Filtered:
        if (self.kind, self.key) != (self.record.kind, self.record.key):
            raise ValueError(f"kind/key ({self.kind}, {self.key}) differ from the record's "
                             f"({self.record.kind}, {self.record.key})")
        return self


RECORD_KINDS: dict[str, type[Strict]] = {
    "direct": DirectRecord,
    "comparison": ComparisonRecord,
    "listwise": ListwiseRecord,
    "reject": Reject,
    "ranking": RankingRecord,
    "filtered": Filtered,
    "candidates": Candidates,
    "queries": QueriesRecord,
    "synthetic-query": SyntheticQuery,
}

RECORD_FILES = {"direct": "direct.jsonl", "comparison": "comparison.jsonl", "listwise": "listwise.jsonl"}
REJECTS_FILE = "rejects.jsonl"
RANKINGS_FILE = "rankings.jsonl"
FILTERED_FILE = "filtered.jsonl"
QUERIES_RECORDS_FILE = "generated_queries.jsonl"
MANIFEST_FILE = "manifest.json"


# --------------------------------------------------------------------------- manifest


class Counts(Strict):
    requested: int = 0
    records: int = 0
    rejects: int = 0
    skipped_done: int = Field(default=0, description="already in the run directory; not asked again")


class Manifest(Strict):
    """Provenance of a run directory, rewritten at the end of every run (and on a clean stop)."""

    r2r_synth_version: str
    command: str = Field(description="the command line that produced the run, with secrets removed")
    config: dict[str, Any] = Field(description="the resolved config of the command")
    teacher: str
    programs: dict[str, str] = Field(default_factory=dict, description="program name -> program hash")
    prompts: dict[str, str] = Field(default_factory=dict, description="program name -> prompt hash")
    counts: dict[str, Counts] = Field(default_factory=dict, description="per record kind")
    usage: Usage = Field(default_factory=Usage)
    cost: float | None = None
    versions: dict[str, str] = Field(default_factory=dict, description="dspy, litellm, python, ...")
    started_at: datetime
    finished_at: datetime | None = None
    wall_s: float | None = None
    status: Literal["complete", "incomplete", "pending", "stopped_budget", "interrupted", "failed"] = Field(
        default="complete",
        description="complete: every request is a record or the teacher's reject; incomplete: some got no "
        "answer (retryable rejects: rerun to ask them again); pending: requests wait in provider batches or "
        "an exported batch file (rerun, or --import-batch the results, to collect them); stopped_budget; "
        "interrupted; failed")
    shard: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


# --------------------------------------------------------------------------- keys


def package_versions(*dists: str) -> dict[str, str]:
    """Python, r2r-synth and each installed distribution's version, for a Manifest's `versions`."""
    import platform
    from importlib import metadata

    from r2r_synth import __version__

    out = {"python": platform.python_version(), "r2r-synth": __version__}
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def stable_hash(obj: Any, n: int = 16) -> str:
    """sha256 of the canonical JSON of `obj`, truncated to `n` hex digits."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:n]


def request_key(*, kind: str, inputs: dict[str, Any], program_hash: str, teacher: str, rollout_id: int = 0) -> str:
    """The content address of one request (curator's fingerprint): same inputs, program, teacher and
    rollout -> same key, so a rerun finds it done and never bills the teacher twice."""
    return stable_hash(
        {"kind": kind, "inputs": inputs, "program": program_hash, "teacher": teacher, "rollout": rollout_id}, n=24
    )
