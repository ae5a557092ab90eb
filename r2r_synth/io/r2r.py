"""R2R's released listwise corpus (Ji et al., arXiv 2410.05168), e.g. `msmarco_500.jsonl`: read
(`iter_r2r`, `read_r2r`) and written (`r2r_row`, `write_r2r`).

Each line: `query`, `qid`, `unsorted_docs` (the window as shown to the teacher), `sorted_docids`
(undocumented; not used), `re_rank_id` (the teacher's permutation, 1-based
over `unsorted_docs`, best first) and `reason.ranked_passages[]` with `identifier` (1-based),
`direct_reason`, `listwise_reason`, `direct_answer_sentence`. `scores` comes along undocumented and is
not used either. R2R's own trainer (`scripts/train/multi_task_load_data.py`) reads `query`,
`unsorted_docs`, `re_rank_id` and the reasons of `ranked_passages` by `identifier`.

Rows r2r-synth writes carry two more keys, which R2R's trainer ignores: `docids` (the docid of each
passage of `unsorted_docs`; read back instead of positional ids) and a `relevance` grade in each
ranked passage where the teacher gave one. `sorted_docids` is written as the docids best first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from r2r_synth.atomic import atomic_open
from r2r_synth.errors import InputError
from r2r_synth.io.jsonl import describe_validation, iter_json_rows
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
    relevance: int | None = None  # written by r2r-synth; not in R2R's release


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
    docids: list[str] | None = None  # written by r2r-synth; not in R2R's release


def _convert(row: R2RRow, *, teacher: str) -> ListwiseRecord:
    n = len(row.unsorted_docs)
    qid = str(row.qid)
    # Passages are addressed by position (`<qid>-<1-based index into unsorted_docs>`): the release's
    # `sorted_docids` is undocumented (its order is ambiguous and it holds ids such as "0" and "2"),
    # so we do not risk attaching a reason to the wrong passage. A row r2r-synth wrote names them.
    docids = [f"{qid}-{i + 1}" for i in range(n)]
    if row.docids is not None:
        if len(row.docids) != n or len(set(row.docids)) != n:
            raise ValueError(f"docids has {len(row.docids)} entries ({len(set(row.docids))} distinct) for "
                             f"{n} passages; give one distinct docid per passage of unsorted_docs")
        docids = [str(d) for d in row.docids]
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
                    relevance=p.relevance,
                )
            )
    documents = [Document(docid=d, text=t) for d, t in zip(docids, row.unsorted_docs)]
    # The content address of the row (the same window and ranking in any file has the same key, so a
    # corpus exported and imported again keeps its keys).
    content = {"qid": qid, "query": row.query, "docs": row.unsorted_docs, "docids": docids,
               "ranking": row.re_rank_id}
    return ListwiseRecord(
        key=stable_hash(content, n=24),
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
    cannot be read or converted (a torn JSON line too), so the caller can write rejects; nothing is
    dropped silently. Each reason is one line: `path:line: what is wrong`."""
    path = Path(path)
    for line, obj, err in iter_json_rows(path):
        if err is not None:
            yield line, None, err
            continue
        try:
            row = R2RRow.model_validate(obj)
            yield line, _convert(row, teacher=teacher), None
        except ValidationError as e:
            yield line, None, f"{path}:{line}: not a valid R2R listwise row: {describe_validation(e)}"
        except ValueError as e:
            yield line, None, f"{path}:{line}: not a valid R2R listwise row: {' '.join(str(e).split())}"


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


def r2r_row(rec: ListwiseRecord) -> dict[str, Any]:
    """One listwise record as a line of R2R's format (see the module docstring): the window as shown,
    the ranking as 1-based positions into it, and each reason under the passage's position."""
    position = {d.docid: i + 1 for i, d in enumerate(rec.documents)}
    passages = []
    for item in rec.items:
        p: dict[str, Any] = {"identifier": position[item.docid], "direct_reason": item.reason,
                             "listwise_reason": item.comparison_reason,
                             "direct_answer_sentence": item.answer_sentence}
        if item.relevance is not None:
            p["relevance"] = item.relevance
        passages.append(p)
    return {"query": rec.query.text, "qid": rec.query.qid, "sorted_docids": list(rec.ranking),
            "re_rank_id": [position[d] for d in rec.ranking], "unsorted_docs": [d.full_text() for d in rec.documents],
            "reason": {"ranked_passages": passages}, "docids": [d.docid for d in rec.documents]}


def write_r2r(records: Iterable[ListwiseRecord], path: Path | str) -> int:
    """Write `records` to `path` as R2R-format JSONL, atomically; returns how many rows."""
    import json

    n = 0
    with atomic_open(path) as fh:
        for rec in records:
            # ASCII, as R2R's release is: no raw U+2028 or U+0085 for a line-splitting reader to break on.
            fh.write(json.dumps(r2r_row(rec)) + "\n")
            n += 1
    return n
