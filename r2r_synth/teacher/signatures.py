"""The teacher's contracts: typed DSPy signatures for direct, comparison and listwise reasoning, and
for the queries a document answers (`r2r-synth queries`).

The instructions a teacher sees come from `r2r_synth/prompts/<name>.md` (humans edit those files,
optimizers write `programs/*.json`); the class docstrings below are only the fallback for an
installation without the prompt files. Field names are part of the data contract: `generate` maps
them one to one onto `DirectRecord` / `ComparisonRecord` / `ListwiseRecord`.

The listwise signature keeps R2R's own reply shape (Ji et al., arXiv 2410.05168, whose GPT-4 prompt
asks for JSON ``ranked_passages[{identifier, direct_reason, listwise_reason,
direct_answer_sentence}]``), so a corpus made here and R2R's release are the same shape; it adds a
graded `relevance` per passage. `repair_ranking` is the rule for a permutation that does not name
every passage exactly once (RankGPT's `receive_permutation`, also rank_llm's).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Literal

import dspy
from pydantic import BaseModel, ConfigDict, Field, RootModel, WithJsonSchema

from r2r_synth.schemas import RankingRepair

# The instruction files ship inside the package (r2r_synth/prompts/*.md), in a checkout and a wheel alike.
PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"


def read_prompt(name: str) -> str | None:
    """The instruction text of program `name` (`r2r_synth/prompts/<name>.md`), stripped, or None if absent."""
    path = PROMPTS_DIR / f"{name}.md"
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


class DirectRelevance(dspy.Signature):
    """Judge how relevant the passage is to the search query: explain, then grade 0-3 and give a
    probability of relevance."""

    query: str = dspy.InputField(desc="the searcher's query")
    document: str = dspy.InputField(desc="the passage to judge")
    reasoning: str = dspy.OutputField(desc="how the passage does or does not answer the query (2-4 sentences)")
    relevance: int = dspy.OutputField(desc="graded relevance: 0 irrelevant, 1 related, 2 highly relevant, 3 perfect")
    score: float = dspy.OutputField(desc="probability between 0 and 1 that the passage is relevant")


class Comparison(dspy.Signature):
    """Decide which of two passages better answers the search query, explain why, and say how sure
    you are."""

    query: str = dspy.InputField(desc="the searcher's query")
    document_a: str = dspy.InputField(desc="Passage A")
    document_b: str = dspy.InputField(desc="Passage B")
    reasoning: str = dspy.OutputField(desc="why one passage answers the query better than the other (2-4 sentences)")
    preferred: Literal["A", "B"] = dspy.OutputField(desc="the more relevant passage: A or B")
    confidence: float = dspy.OutputField(desc="probability between 0 and 1 that the preference is right")


#: The longest reason the listwise JSON Schema asks for. Stated in the schema the teacher is shown, and
#: a hard cap under constrained decoding (the embedded teacher: its grammar then always closes the
#: object within its reply cap); never enforced on a reply, so a remote teacher's longer reason is
#: kept whole. R2R's GPT-4 reasons are 120-130 characters at the median, about 170 at the 90th percentile.
LISTWISE_REASON_MAX_CHARS = 160


class Passage(BaseModel):
    """One passage of a listwise window as the teacher is shown it."""

    model_config = ConfigDict(extra="forbid")

    identifier: int = Field(description="the passage's number in the window (1 = shown first)")
    text: str


class RankedPassage(BaseModel):
    """One passage of the teacher's listwise ranking (R2R's fields plus a graded label)."""

    identifier: int = Field(description="the identifier of the passage as shown")
    relevance: Literal[0, 1, 2, 3] = Field(description="graded relevance: 0 irrelevant, 1 related, 2 highly "
                                           "relevant, 3 perfect")
    direct_reason: str = Field(description="how the passage on its own does or does not answer the query",
                               json_schema_extra={"maxLength": LISTWISE_REASON_MAX_CHARS})
    listwise_reason: str = Field(description="why it ranks above the passages below it and below those above it",
                                 json_schema_extra={"maxLength": LISTWISE_REASON_MAX_CHARS})
    direct_answer_sentence: str = Field(description="the passage's sentence that answers the query most directly "
                                        "(empty if none)", json_schema_extra={"maxLength": LISTWISE_REASON_MAX_CHARS})


# Each item's schema inline, not as a `$ref` into `$defs`: DSPy shows it to the teacher whole, and
# llama.cpp's grammar converter resolves references only from the root of the response schema, so a
# nested `$defs` would silently drop the embedded teacher's constrained decoding.
_ITEM = Annotated[RankedPassage, WithJsonSchema(RankedPassage.model_json_schema())]


class RankedPassages(RootModel[list[_ITEM]]):
    """The teacher's ranking: `RankedPassage`s, most relevant first, with an inline JSON Schema (see
    `_ITEM`). A model rather than a bare ``list`` annotation so that pydantic builds its validator
    once, not on every reply DSPy parses. Iterates, indexes and measures like the list it holds."""

    def __iter__(self) -> Iterator[RankedPassage]:  # type: ignore[override]
        return iter(self.root)

    def __getitem__(self, i: int) -> RankedPassage:
        return self.root[i]

    def __len__(self) -> int:
        return len(self.root)


class ListwiseRanking(dspy.Signature):
    """Rank the passages by how well they answer the search query, each named by its identifier, and say
    for every passage why: how it answers the query on its own, and why it ranks where it does."""

    query: str = dspy.InputField(desc="the searcher's query")
    passages: list[Passage] = dspy.InputField(desc="the passages to rank, each with its identifier")
    ranked_passages: RankedPassages = dspy.OutputField(
        desc="every passage exactly once, the most relevant first, each with its reasons")


#: The longest query the JSON Schema asks for (shown to the teacher; a hard cap under constrained
#: decoding, so a tiny embedded model always closes its list; never enforced on a remote teacher's reply).
QUERY_MAX_CHARS = 200

_QUERY = Annotated[str, WithJsonSchema({"type": "string", "minLength": 1, "maxLength": QUERY_MAX_CHARS})]


class DocumentQueries(dspy.Signature):
    """Write search queries that the passage answers: questions or keyword queries a searcher would
    type, each answered by this passage."""

    document: str = dspy.InputField(desc="the passage the queries must be answered by")
    example_queries: list[str] = dspy.InputField(
        desc="real queries of this collection: match their style, length and kind of need (may be empty)")
    count: int = dspy.InputField(desc="how many different queries to write")
    queries: list[_QUERY] = dspy.OutputField(desc="the queries, each answered by the passage, all different")


def repair_ranking(identifiers: Sequence[int], n: int) -> tuple[list[int], RankingRepair | None]:
    """The teacher's ranking of a window of `n` passages (identifiers 1..n) as a permutation of 1..n,
    and what was repaired (None: it already was one). RankGPT's rule (`receive_permutation`, also
    rank_llm's): identifiers outside the window are dropped, a repeated identifier counts at its first
    mention, and passages left out follow in the order they were shown."""
    seen: set[int] = set()
    order: list[int] = []
    unknown: list[int] = []
    duplicates: list[int] = []
    for i in identifiers:
        if not 1 <= i <= n:
            unknown.append(i)
        elif i in seen:
            duplicates.append(i)
        else:
            seen.add(i)
            order.append(i)
    missing = [i for i in range(1, n + 1) if i not in seen]
    if not (unknown or duplicates or missing):
        return order, None
    return order + missing, RankingRepair(unknown=unknown, duplicates=duplicates, missing=missing)


SIGNATURES: dict[str, type[dspy.Signature]] = {"direct": DirectRelevance, "comparison": Comparison,
                                               "listwise": ListwiseRanking, "queries": DocumentQueries}

# The prompt files are the source of truth for the instructions; apply them at import so that
# `DirectRelevance` used directly (e.g. in a notebook) sees the same text as `build_program`.
for _name, _sig in SIGNATURES.items():
    _text = read_prompt(_name)
    if _text:
        _sig.instructions = _text
