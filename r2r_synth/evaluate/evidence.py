"""Evidence for a ranking: the sentence of a document its reranker scores highest against the query.

A bi-encoder or cross-encoder student scores a whole document; `rerank --explain` shows, beside each
result, the one sentence that the same model scores highest against the query: the student's own
sentence scores, nothing generated, so the evidence is always a verbatim span of that document (a
student trained on R2R's corpus has also learned from the teacher's `direct_answer_sentence`, the
sentence the teacher quoted as the answer). The reasoning student keeps its generated explanation.

Sentences are cut by `split_sentences`: at a line break, or after `.`, `!` or `?` (and any closing
quote or bracket) followed by white space and a capital, a digit or an opening quote or bracket,
except after a common abbreviation ("e.g.", "et al.", "Fig."). Each sentence is a slice of the
document with its outer white space stripped, so `sentence in document` always holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

_BOUNDARY = re.compile(r"""[.!?]+["'\u201d\u2019)\]]*\s+(?=["'\u201c\u2018(\[]?[A-Z0-9])|\n+""")
_ABBREVIATIONS = frozenset({"e.g", "i.e", "al", "etc", "fig", "figs", "eq", "vs", "cf", "dr", "mr", "mrs", "ms",
                            "prof", "st", "vol", "approx", "ca", "resp", "ref", "refs", "sec"})
#: Only a document's first sentences are candidates: a bound on the work per result (a long web page
#: would otherwise cost thousands of model calls).
MAX_SENTENCES = 64


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, in order, each a verbatim slice of it (see the module docstring); a
    text with no boundary is one sentence; an all-white-space text has none."""
    out: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        if m.group().strip():  # a full stop (not a line break): is it an abbreviation's?
            words = text[start:m.start()].split()
            if words and words[-1].lower().rstrip(".") in _ABBREVIATIONS:
                continue
        piece = text[start:m.end()].strip()
        if piece:
            out.append(piece)
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def evidence_sentences(score: Callable[[str, list[str]], Sequence[float | None]], query: str,
                       documents: Sequence[str], *, max_sentences: int = MAX_SENTENCES) -> list[str | None]:
    """For each document, its sentence that `score(query, sentences)` ranks highest (None for an empty
    document). All documents' sentences are scored in one call, so a batching model sees one batch;
    only the first `max_sentences` sentences of a document are candidates."""
    pieces = [split_sentences(d)[:max_sentences] for d in documents]
    flat = [s for ps in pieces for s in ps]
    scores = list(score(query, flat)) if flat else []
    if len(scores) != len(flat):
        raise RuntimeError(f"the scorer returned {len(scores)} scores for {len(flat)} sentences")
    out: list[str | None] = []
    at = 0
    for ps in pieces:
        own = scores[at:at + len(ps)]
        at += len(ps)
        if not ps:
            out.append(None)
            continue
        best = max(range(len(ps)), key=lambda i: float("-inf") if own[i] is None else own[i])
        out.append(ps[best])
    return out
