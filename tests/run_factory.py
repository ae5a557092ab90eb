"""Build real run directories (the files `generate` writes, written through `RunDir`) from the pydantic
models, for the publish and report tests. Contents are varied on purpose: gold labels on some records
only, swapped answers that disagree, usage and cost, rejects of several reasons."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from r2r_synth.rundir import ProgramSnapshot, RunDir
from r2r_synth.schemas import (
    ComparisonAnswer,
    ComparisonRecord,
    Counts,
    DirectRecord,
    Document,
    ListwiseItem,
    ListwiseRecord,
    Manifest,
    Provenance,
    Query,
    Reject,
    Usage,
    request_key,
)

TEACHER = "openai/gpt-4o-mini"


def _prov(program: str, i: int, *, teacher: str = TEACHER) -> Provenance:
    return Provenance(
        teacher=teacher, program=program, program_hash=f"{program}-ph0123456789", prompt_hash=f"{program}-pr0123",
        usage=Usage(prompt_tokens=100 + i, completion_tokens=40 + i % 7, total_tokens=140 + i + i % 7),
        cost=0.0001 * (1 + i % 3), latency_s=0.5, created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        r2r_synth_version="0.1.0",
    )


def make_run(
    root: Path,
    *,
    queries: int = 12,
    docs: int = 4,
    kinds: tuple[str, ...] = ("direct", "comparison"),
    teacher: str = TEACHER,
    qid_prefix: str = "q",
    rejects: bool = True,
    prompt_texts: dict[str, str] | None = None,
    label: int | None = None,
    prefer_first: bool = False,
    distinct_reasoning: bool = False,
) -> Path:
    """Write a run directory with `queries` queries of `docs` documents each and return its path.
    `prompt_texts` (program name -> instruction text) become the run's program snapshots. The rest
    shape a teacher: `label` gives every direct record that grade (a constant teacher), `prefer_first`
    makes every comparison answer prefer the passage shown first (A as asked, B swapped: position bias),
    `distinct_reasoning` writes reasoning that names its record (no text repeats)."""
    run = RunDir(root)
    direct, comp, lw, rej = [], [], [], []
    for q in range(queries):
        query = Query(qid=f"{qid_prefix}{q}", text=f"what is topic number {q} about?")
        documents = [Document(docid=f"d{q}-{j}", text=f"passage {j} about topic {q}. " * (3 + j),
                              title=f"Title {j}" if j % 2 else None) for j in range(docs)]
        gold = {d.docid: (j * 2 + q) % 4 for j, d in enumerate(documents) if (q + j) % 3}
        for j, d in enumerate(documents):
            i = q * docs + j
            direct.append(DirectRecord(
                key=request_key(kind="direct", inputs={"q": query.qid, "d": d.docid}, program_hash="p", teacher=teacher),
                query=query, document=d, reasoning=" ".join(["because"] * (5 + i % 11))
                + (f" passage {d.docid} speaks of topic {q}" if distinct_reasoning else ""),
                relevance=(i + q) % 4 if label is None else label, score=((i + q) % 4) / 3, first_stage_rank=j + 1, gold=gold.get(d.docid), provenance=_prov("direct", i,
                                                                                                         teacher=teacher)))
        for j in range(docs - 1):
            a, b = documents[j], documents[j + 1]
            first = "A" if (q + j) % 2 or prefer_first else "B"
            second = first if (q + j) % 5 else ("B" if first == "A" else "A")
            if prefer_first:
                second = "B"  # B is shown first in the swapped order
            comp.append(ComparisonRecord(
                key=request_key(kind="comparison", inputs={"q": query.qid, "a": a.docid, "b": b.docid},
                                program_hash="p", teacher=teacher),
                query=query, doc_a=a, doc_b=b, reasoning="A says more. " * (1 + j)
                + (f"{a.docid} against {b.docid}." if distinct_reasoning else ""), preferred=first, confidence=0.7,
                swapped=ComparisonAnswer(reasoning="B is shown first now."
                                         + (f" {b.docid} against {a.docid}." if distinct_reasoning else ""),
                                         preferred=second, confidence=0.6),
                gold_a=gold.get(a.docid), gold_b=gold.get(b.docid), pair_strategy="adjacent",
                provenance=_prov("comparison", q * docs + j, teacher=teacher)))
        ranking = [d.docid for d in reversed(documents)]
        lw.append(ListwiseRecord(
            key=request_key(kind="listwise", inputs={"q": query.qid}, program_hash="p", teacher=teacher),
            query=query, documents=documents, ranking=ranking,
            items=[ListwiseItem(docid=d, reason=f"reason for {d}", comparison_reason="better than the next")
                   for d in ranking],
            gold=gold, provenance=_prov("listwise", q, teacher=teacher)))
        if rejects and q % 4 == 0:
            rej.append(Reject(kind="direct", key=f"rej-d-{q}", reason="unparseable reply: no JSON object found",
                              inputs={"qid": query.qid, "docid": "x"}, raw="I think it is relevant", teacher=teacher))
        if rejects and q % 6 == 1:
            rej.append(Reject(kind="comparison", key=f"rej-c-{q}", reason="validation: confidence must be <= 1",
                              inputs={"qid": query.qid}, teacher=teacher))
    data = {"direct": direct, "comparison": comp, "listwise": lw}
    counts = {}
    for kind in kinds:
        run.write_records(kind, data[kind])
        n_rej = sum(1 for r in rej if r.kind == kind)
        counts[kind] = Counts(requested=len(data[kind]) + n_rej, records=len(data[kind]), rejects=n_rej)
    run.write_records("reject", [r for r in rej if r.kind in kinds])
    usage = Usage()
    cost = 0.0
    for kind in kinds:
        for r in data[kind]:
            usage = usage + r.provenance.usage
            cost += r.provenance.cost
    manifest = Manifest(
        r2r_synth_version="0.1.0",
        command=f"r2r-synth generate --input dl19.json --teacher {teacher} --out {root.name}",
        config={"teacher": teacher, "api_key": "***"},
        teacher=teacher,
        programs={k: f"{k}-ph0123456789" for k in kinds},
        prompts={k: f"{k}-pr0123" for k in kinds},
        counts=counts, usage=usage, cost=cost, versions={"dspy": "3.0"},
        started_at=datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC),
        finished_at=datetime(2026, 1, 2, 3, 10, 0, tzinfo=UTC), wall_s=600.0,
    )
    run.write_manifest(manifest)
    run.write_config(manifest.config)
    for name, text in (prompt_texts or {}).items():
        run.snapshot_program(ProgramSnapshot(name=name, program_hash=f"{name}-ph0123456789",
                                             prompt_hash=f"{name}-pr0123", instructions=text, state={}))
    return root
