"""`r2r-synth rerank`: rank a user's own documents for one query with a model: a student directory
from `train`, or any sentence-transformers `cross-encoder:PATH_OR_HUB_ID` / `bi-encoder[:PATH]`.

A student that records a hybrid (`r2r_synth.hybrid`: fitted by `train` on held-out queries) ranks as
it was chosen: fused with BM25. A user's documents come without a first stage, so BM25 is computed
over the given documents themselves (bm25s, the first stage's tokenizer and parameters; its IDF is
that of these documents); `hybrid=False` (`--no-hybrid`) ranks by the student alone. The score shown
is then the fused one, and `student_score` the student's own."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from r2r_synth.errors import ConfigError, InputError
from r2r_synth.evaluate.systems import (
    MODEL_KINDS,
    SystemSpec,
    can_explain,
    open_bi_encoder,
    open_cross_encoder,
    open_student,
    parse_spec,
    student_hybrid,
)


@dataclass
class Ranked:
    rank: int
    docid: str
    score: float
    text: str
    explanation: str | None = None  # the reasoning student's generated reasoning (--explain)
    evidence: str | None = None  # the document's sentence the model scores highest (--explain, other models)
    student_score: float | None = None  # a hybrid's student score beside the fused `score`


def read_documents(path: Path | str, text: str | None = None) -> list[tuple[str, str]]:
    """A user's documents: JSONL (`{"text": ..., "docid"?: ..., "title"?: ...}` per line) or plain
    text, one document per line. `text` is the content when it came from stdin (`path` is then a
    label for messages). Returns (docid, text); docids default to the 1-based line number."""
    src = str(path)
    if text is None:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: no such documents file", hint="pass a JSONL or text file, or - for stdin")
        from r2r_synth.io.text import read_text

        text = read_text(p)  # not UTF-8 (a binary file): an InputError naming path:line
    docs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{src}:{n}: not valid JSON ({e.msg})",
                                 hint="one JSON object per line with a \"text\" field, or plain text lines") from None
            body = obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(body, str) or not body.strip():
                raise InputError(f"{src}:{n}: a JSON document needs a non-empty \"text\" field",
                                 hint='e.g. {"docid": "d1", "text": "..."}')
            title = obj.get("title")
            body = f"{title}. {body}" if title else body
            docid = str(obj.get("docid", obj.get("_id", obj.get("id", n))))
        else:
            docid, body = str(n), line.strip()
        if docid in seen:
            raise InputError(f"{src}:{n}: docid {docid!r} appears twice", hint="give each document its own docid")
        seen.add(docid)
        docs.append((docid, body))
    if not docs:
        raise InputError(f"{src}: no documents", hint="give one document per line")
    return docs


def model_spec(model: str, *, int8: bool = False) -> SystemSpec:
    """`--model` as a `SystemSpec` of a model kind (a student directory, `student-int8:DIR`,
    `cross-encoder:PATH_OR_HUB_ID`, `bi-encoder[:PATH]`); `int8` asks for a student's int8 weights."""
    spec = parse_spec(model, flag="--model")
    if spec.kind not in MODEL_KINDS:
        raise ConfigError(f"--model {model!r}: rerank ranks with a model, not with a {spec.kind} system",
                          hint="give a directory from `r2r-synth train`, cross-encoder:PATH_OR_HUB_ID or "
                          "bi-encoder[:PATH]")
    if int8 and spec.kind == "student":
        return SystemSpec(spec.name, "student-int8", spec.arg, f"student-int8:{spec.arg}")
    if int8 and spec.kind != "student-int8":
        raise ConfigError(f"--int8 applies to a student directory, not to {model!r}",
                          hint="drop --int8, or give a directory from `r2r-synth train`")
    return spec


def rerank_documents(*, model: str, query: str, documents: list[tuple[str, str]], device: str | None = None,
                     explain: bool = False, explain_top: int = 3, batch_size: int = 32,
                     int8: bool = False, hybrid: bool = True) -> list[Ranked]:
    """Rank a user's `documents` for `query` with `model` (see `model_spec`). With `explain`, a
    reasoning student generates its reasoning for the top `explain_top`; any other model gives every
    result its evidence: the document's sentence the model scores highest against the query, verbatim
    (`r2r_synth.evaluate.evidence`). A student's hybrid fuses it with BM25 over `documents` unless
    `hybrid` is False (see the module docstring)."""
    from r2r_synth.evaluate.evidence import evidence_sentences

    if not query.strip():
        raise InputError("the query is empty", hint='pass --query "your question"')
    spec = model_spec(model, int8=int8)
    reasons = explain and can_explain(spec)  # read from r2r_config.json, before any model loads
    fused = student_hybrid(spec) if hybrid else None
    opener = {"bi-encoder": open_bi_encoder, "cross-encoder": open_cross_encoder}.get(spec.kind, open_student)
    system = opener(spec, device=device, batch_size=batch_size)
    try:
        own = system.score(query, [t for _, t in documents])
        scores = own
        if fused is not None:
            from r2r_synth.hybrid import fuse_with
            from r2r_synth.io.first_stage import score_documents

            scores = fuse_with(fused, own, score_documents(query, [t for _, t in documents]))
        order = sorted(range(len(documents)), key=lambda i: scores[i], reverse=True)
        texts = [documents[i][1] for i in order]
        evidence = evidence_sentences(system.score, query, texts) if explain and not reasons else [None] * len(order)
        out = []
        for r, (i, ev) in enumerate(zip(order, evidence), start=1):
            docid, text = documents[i]
            why = system.explain(query, text) if reasons and system.explain and r <= explain_top else None
            out.append(Ranked(rank=r, docid=docid, score=scores[i], text=text, explanation=why, evidence=ev,
                              student_score=own[i] if fused is not None else None))
    finally:
        system.close()
    return out
