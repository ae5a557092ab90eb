"""R2R's released listwise corpus (Ji et al., arXiv 2410.05168), e.g. `msmarco_500.jsonl`.

Each line: `query`, `qid`, `unsorted_docs` (the window as shown to the teacher), `sorted_docids`
(undocumented; not used), `re_rank_id` (the teacher's permutation, 1-based
over `unsorted_docs`, best first) and `reason.ranked_passages[]` with `identifier` (1-based),
`direct_reason`, `listwise_reason`, `direct_answer_sentence`. `scores` comes along undocumented and is
not used either.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from r2r_synth.errors import InputError
from r2r_synth.io.jsonl import iter_json_lines
from r2r_synth.schemas import (
    Document,
    ListwiseItem,
    ListwiseRecord,
    Provenance,
    Query,
    stable_hash,
)

IMPORTED_TEACHER = "imported:r2r-gpt4"


class _Passage(BaseModel):
    model_config = ConfigDict(extra="allow")
    identifier: int
    direct_reason: str | None = None
    listwise_reason: str | None = None
    direct_answer_sentence: str | None = None


class _Reason(BaseModel):
    model_config = ConfigDict(extra="allow")
    ranked_passages: list[_Passage]


class R2RRow(BaseModel):
    """One line of R2R's release, as released (extra fields such as `scores` are tolerated)."""

    model_config = ConfigDict(extra="allow")
    query: str
    qid: str | int
    unsorted_docs: list[str]
    sorted_docids: list[str | int] | None = None
    re_rank_id: list[int]
    reason: _Reason | None = None


def _convert(row: R2RRow, where: str, *, teacher: str) -> ListwiseRecord:
    n = len(row.unsorted_docs)
    qid = str(row.qid)
    # Passages are addressed by position (`<qid>-<1-based index into unsorted_docs>`): the release's
    # `sorted_docids` is undocumented (its order is ambiguous and it holds ids such as "0" and "2"),
    # so we do not risk attaching a reason to the wrong passage.
    docids = [f"{qid}-{i + 1}" for i in range(n)]
    if sorted(row.re_rank_id) != list(range(1, n + 1)):
        raise ValueError(f"re_rank_id {row.re_rank_id} is not a 1-based permutation of the {n} passages")
    ranking = [docids[i - 1] for i in row.re_rank_id]
    items: list[ListwiseItem] = []
    if row.reason is not None:
        for p in row.reason.ranked_passages:
            if not 1 <= p.identifier <= n:
                raise ValueError(f"ranked_passages identifier {p.identifier} is outside 1..{n}")
            items.append(
                ListwiseItem(
                    docid=docids[p.identifier - 1],
                    reason=p.direct_reason,
                    comparison_reason=p.listwise_reason,
                    answer_sentence=p.direct_answer_sentence,
                )
            )
    documents = [Document(docid=d, text=t) for d, t in zip(docids, row.unsorted_docs)]
    content = {"qid": qid, "docs": docids, "ranking": ranking}
    return ListwiseRecord(
        key=stable_hash({"source": where.split(":")[0], **content}, n=24),
        query=Query(qid=qid, text=row.query),
        documents=documents,
        ranking=ranking,
        items=items,
        provenance=Provenance(
            teacher=teacher,
            program="r2r-listwise",
            program_hash=stable_hash("r2r-listwise-release"),
            prompt_hash=stable_hash("r2r-listwise-release"),
        ),
    )


def iter_r2r(path: Path | str, *, teacher: str = IMPORTED_TEACHER) -> Iterator[tuple[int, ListwiseRecord | None, str | None]]:
    """Yield (line, record, None) for each good line and (line, None, reason) for each line that
    cannot be converted, so the caller can write rejects; nothing is dropped silently. A line that is
    not JSON at all is an InputError (the file is not an R2R corpus)."""
    path = Path(path)
    for line, obj in iter_json_lines(path):
        try:
            row = R2RRow.model_validate(obj)
            yield line, _convert(row, f"{path.name}:{line}", teacher=teacher), None
        except (ValidationError, ValueError) as e:
            yield line, None, f"{path}:{line}: not a valid R2R listwise row: {e}"


def read_r2r(path: Path | str) -> list[ListwiseRecord]:
    """Strict reader: every line must convert, else InputError naming `path:line`."""
    out = []
    for _line, rec, err in iter_r2r(path):
        if err:
            raise InputError(err, hint="R2R rows need query, qid, unsorted_docs and a 1-based re_rank_id permutation")
        out.append(rec)
    return out


def looks_like_r2r(obj: dict[str, Any]) -> bool:
    return "re_rank_id" in obj and "unsorted_docs" in obj
