"""Listwise windows: R2R's listwise call over RankGPT's sliding windows of each query's top K.

RankGPT (Sun et al. 2023, `sliding_windows` in rank_gpt.py) ranks a long list with a window of W
passages that starts at the bottom of the top K and moves up S positions at a time, so each window
sees the winners of the one below it and the best passages bubble to the top. `window_spans`
computes the windows as rank_llm does (the same as RankGPT's wherever RankGPT reaches the top, and
the top window is clipped at position 0 where RankGPT would leave the top positions unranked).

- `Chain`: one query (and rollout) and its windows. A window's passages and their order depend on
  the answers below it, so a query's windows are asked one after the other, each as its own request
  whose key includes the order it was shown in: a rerun finds a window done only when everything
  before it came out the same.
- `replay`: resuming. Each query's current order is rebuilt from its finished windows' records in
  the run directory, up to the window where the run stopped; only that window and the ones above it
  are asked.
- `window_record`: a reply -> a `ListwiseRecord`. The permutation must name every identifier of the
  window exactly once; a flawed one is repaired the RankGPT way (`repair_ranking`) and marked
  `repaired`, or with `--no-repair` rejected (cause ``reply``). A window whose reply is rejected as
  the teacher's answer keeps the order it was shown in, as rank_llm does, so the query goes on.
- When a query's last window is done its final ranking of all K candidates is appended to
  `rankings.jsonl` (`Chain.ranking_record`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from r2r_synth import __version__
from r2r_synth.config import GenerateConfig
from r2r_synth.errors import ConfigError, InputError
from r2r_synth.rundir import RunDir
from r2r_synth.schemas import (
    Candidates,
    Document,
    ListwiseRecord,
    ListwiseWindow,
    Provenance,
    RankingRecord,
    RankingRepair,
    Usage,
    request_key,
    stable_hash,
)
from r2r_synth.teacher.signatures import repair_ranking

#: A reply that is the teacher's answer but not a usable permutation (cause ``reply``).
FINAL_CAUSES = ("reply", "refused")


class InvalidReply(ValueError):
    """A parsed reply that breaks the listwise contract (a flawed permutation under `--no-repair`)."""


def window_spans(n: int, *, window: int, stride: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` positions (0-based, end exclusive) of the sliding windows over a list of
    `n` passages, in the order they are asked: from the bottom up, `stride` positions at a time, the
    top window clipped at 0 (rank_llm's windows; RankGPT's wherever it reaches the top)."""
    end, start = n, max(0, n - window)
    spans = [(start, end)]
    while start > 0:
        end, start = end - stride, max(0, start - stride)
        spans.append((start, end))
    return spans


def check_listwise_config(config: GenerateConfig) -> None:
    """Refuse window settings that cannot work (ConfigError, exit 2) before anything is read."""
    if not config.listwise:
        given = [flag for flag, v in (("--window", config.window), ("--stride", config.stride)) if v is not None]
        if given:
            raise ConfigError(f"{' and '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to listwise windows only",
                              hint="add --listwise, or drop " + " and ".join(given))
        return
    w, s = int(config.window or 0), int(config.stride or 0)
    if w < 2:
        raise ConfigError(f"--window {w}: a window must hold at least 2 passages to rank",
                          hint="e.g. --window 20 (RankGPT, rank_llm) or --window 5 (R2R's release)")
    if not 1 <= s < w:
        raise ConfigError(f"--stride {s} must be at least 1 and smaller than --window {w}, so that each window "
                          "overlaps the one below it and carries its winners up",
                          hint=f"e.g. --window {w} --stride {max(1, w // 2)}")
    if w > config.depth:
        raise ConfigError(f"--window {w} is larger than --depth {config.depth}: a window cannot hold more passages "
                          "than the query's top K", hint=f"raise --depth to at least {w}, or lower --window")
    if config.max_passage_words is not None and config.max_passage_words < 1:
        raise ConfigError(f"--max-passage-words {config.max_passage_words}: need at least 1",
                          hint="e.g. --max-passage-words 300 (RankGPT, R2R)")


def check_listwise_candidates(candidates: Sequence[Candidates], config: GenerateConfig) -> None:
    """Refuse (InputError, exit 2) queries with fewer candidates than `--window`, naming them."""
    w = int(config.window or 0)
    short = [(c.query.qid, len(c.documents)) for c in candidates if min(config.depth, len(c.documents)) < w]
    if short:
        shown = ", ".join(f"{qid!r} ({n})" for qid, n in short[:5]) + (" ..." if len(short) > 5 else "")
        fewest = min(n for _, n in short)
        raise InputError(f"{len(short)} quer{'y has' if len(short) == 1 else 'ies have'} fewer candidates than "
                         f"--window {w}: {shown}",
                         hint=f"lower --window to at most {max(fewest, 2)}, or leave those queries out of the input")


def cut_words(doc: Document, max_words: int | None) -> tuple[Document, bool]:
    """`doc` with title and text cut to `max_words` words together (RankGPT and R2R cut passages to
    300); whether it was cut. A passage within the limit keeps its text exactly."""
    if max_words is None:
        return doc, False
    title_words = len(doc.title.split()) if doc.title else 0
    words = doc.text.split()
    keep = max(1, max_words - title_words)
    if len(words) <= keep:
        return doc, False
    return doc.model_copy(update={"text": " ".join(words[:keep])}), True


# --------------------------------------------------------------------------- one query's windows


@dataclass
class WindowJob:
    """One window of one query: a request (its `key`) over `docs` in the order shown."""

    chain: Chain
    index: int
    start: int
    end: int
    docs: list[Document]
    key: str = ""
    kind: str = "listwise"

    @property
    def rollout(self) -> int:
        return self.chain.rollout

    @property
    def cand(self) -> Candidates:
        return self.chain.cand

    def inputs(self) -> dict[str, Any]:
        """What identifies the request (goes into the key): the passages in the order shown (each by
        its docid and a hash of the text shown), and where the window sits among the query's windows."""
        c = self.chain
        return {"qid": c.cand.query.qid, "query": c.cand.query.text, "docids": [d.docid for d in self.docs],
                "documents": [c.digests[d.docid] for d in self.docs], "start": self.start, "end": self.end,
                "depth": c.depth, "window": c.window, "stride": c.stride}

    def signature_inputs(self) -> dict[str, Any]:
        """The listwise signature's inputs: the query and the passages numbered 1..n as shown."""
        return {"query": self.chain.cand.query.text,
                "passages": [{"identifier": i + 1, "text": d.full_text()} for i, d in enumerate(self.docs)]}

    def reject_inputs(self) -> dict[str, Any]:
        """What a reject records of the request (ids, not texts)."""
        return {"qid": self.chain.cand.query.qid, "docids": [d.docid for d in self.docs], "window": self.index,
                "start": self.start, "rollout": self.rollout}


@dataclass
class Chain:
    """One query's (and rollout's) sliding windows: its current order, the next window to ask, and
    the windows done so far (see the module docstring)."""

    cand: Candidates
    rollout: int
    docs: list[Document]  # the top K, in first-stage order, passages cut
    window: int
    stride: int
    program_hash: str
    teacher: str
    spans: list[tuple[int, int]] = field(init=False)
    order: list[Document] = field(init=False)
    key: str = field(init=False)
    next: int = 0
    keys: list[str] = field(default_factory=list)
    # What its windows' records used (summed, not kept: a long run holds thousands of windows).
    records: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: float | None = 0.0
    latency: float = 0.0
    repaired: int = 0
    rejected: int = 0
    written: bool = False  # its ranking is in rankings.jsonl already

    def __post_init__(self) -> None:
        self.spans = window_spans(len(self.docs), window=self.window, stride=self.stride)
        self.order = list(self.docs)
        self.first_stage = {d.docid: i + 1 for i, d in enumerate(self.docs)}
        # Each passage's text as shown, hashed once: a window's key names its passages by these.
        self.digests = {d.docid: stable_hash(d.full_text(), n=32) for d in self.docs}
        q = self.cand.query
        self.key = request_key(kind="ranking", inputs={
            "qid": q.qid, "query": q.text, "docids": [d.docid for d in self.docs],
            "documents": [self.digests[d.docid] for d in self.docs], "window": self.window, "stride": self.stride},
            program_hash=self.program_hash, teacher=self.teacher, rollout_id=self.rollout)

    @property
    def depth(self) -> int:
        return len(self.docs)

    @property
    def finished(self) -> bool:
        return self.next >= len(self.spans)

    def job(self) -> WindowJob:
        """The next window, over the current order."""
        start, end = self.spans[self.next]
        job = WindowJob(chain=self, index=self.next, start=start, end=end, docs=self.order[start:end])
        job.key = request_key(kind="listwise", inputs=job.inputs(), program_hash=self.program_hash,
                              teacher=self.teacher, rollout_id=self.rollout)
        return job

    def advance(self, job: WindowJob, record: ListwiseRecord | None) -> None:
        """Apply the window's record (None: the teacher's reply was rejected: the window keeps the
        order it was shown in) and move to the next window."""
        if record is not None:
            by_id = {d.docid: d for d in job.docs}
            self.order[job.start:job.end] = [by_id[d] for d in record.ranking]
            p = record.provenance
            self.records += 1
            self.usage = self.usage + (p.usage or Usage())
            self.cost = None if self.cost is None or p.cost is None else self.cost + p.cost
            self.latency += p.latency_s or 0.0
            self.repaired += int(record.repaired)
        else:
            self.rejected += 1
        self.keys.append(job.key)
        self.next += 1

    def ranking_record(self, *, program: str, prompt_hash: str) -> RankingRecord:
        """The query's final ranking (call when `finished`); usage and cost summed over its records."""
        q = self.cand.query
        return RankingRecord(
            key=self.key, query=q, ranking=[d.docid for d in self.order], first_stage=[d.docid for d in self.docs],
            window=self.window, stride=self.stride, windows=list(self.keys), windows_repaired=self.repaired,
            windows_rejected=self.rejected,
            gold={d.docid: g for d in self.docs if (g := self.cand.qrels.get(d.docid)) is not None},
            provenance=Provenance(teacher=self.teacher, program=program, program_hash=self.program_hash,
                                  prompt_hash=prompt_hash, rollout_id=self.rollout, usage=self.usage,
                                  cost=self.cost if self.records else None, latency_s=round(self.latency, 4),
                                  r2r_synth_version=__version__))


def build_chains(candidates: Sequence[Candidates], *, config: GenerateConfig, program_hash: str,
                 teacher: str) -> tuple[list[Chain], int]:
    """One `Chain` per query and rollout over its top `--depth` candidates (passages cut to
    `--max-passage-words`), and how many passages were cut."""
    chains, cut = [], 0
    for cand in candidates:
        docs = []
        for d in cand.documents[: config.depth]:
            doc, was_cut = cut_words(d, config.max_passage_words)
            docs.append(doc)
            cut += was_cut
        for r in range(config.rollouts):
            chains.append(Chain(cand=cand, rollout=r, docs=docs, window=int(config.window or 0),
                                stride=int(config.stride or 0), program_hash=program_hash, teacher=teacher))
    return chains, cut


def replay(chains: Sequence[Chain], run: RunDir, *, retry_rejects: bool = False) -> set[str]:
    """Resume: walk each chain through its windows that the run directory holds as done (a record,
    or a reject that is the teacher's answer: the window keeps its order), rebuilding the query's
    order, and stop at the first window still to ask. Reads only. Returns the keys of every window
    walked, the next one to ask included (the keys the resume rule applies to)."""
    records = {r.key: r for r in run.records("listwise")}
    rejects = {r.key: r for r in run.rejects() if r.kind == "listwise"}
    ranked = {r.key for r in run.rankings()}
    wanted: set[str] = set()
    for chain in chains:
        while not chain.finished:
            job = chain.job()
            wanted.add(job.key)
            if job.key in records:
                chain.advance(job, records[job.key])
            elif job.key in rejects and not retry_rejects and not rejects[job.key].retryable:
                chain.advance(job, None)
            else:
                break
        chain.written = chain.finished and chain.key in ranked
    return wanted


def window_response_format(extra: dict[str, Any], n: int) -> dict[str, Any]:
    """The adapter's request arguments for one window of `n` passages. Where the adapter asks for
    constrained JSON decoding (a `response_format` with a JSON Schema, as the embedded teacher's
    does), the schema is narrowed to this window: exactly `n` ranked passages, each identifier one of
    1..n, so the grammar cannot invent passages or run on past the window (it cannot forbid a repeat:
    the repair still catches those). Other arguments are returned as they are."""
    import copy

    fmt = extra.get("response_format")
    schema = fmt.get("schema") if isinstance(fmt, dict) else None
    ranked = (schema or {}).get("properties", {}).get("ranked_passages")
    if not isinstance(ranked, dict) or ranked.get("type") != "array":
        return extra
    out = copy.deepcopy(extra)
    arr = out["response_format"]["schema"]["properties"]["ranked_passages"]
    arr["minItems"] = arr["maxItems"] = n
    arr["items"]["properties"]["identifier"] = {"type": "integer", "enum": list(range(1, n + 1))}
    return out


# --------------------------------------------------------------------------- a reply -> a record


def _describe(fix: RankingRepair) -> str:
    parts = [f"{name} {values}" for name, values in (("unknown identifiers", fix.unknown),
                                                     ("repeated", fix.duplicates), ("missing", fix.missing)) if values]
    return "; ".join(parts)


def window_record(job: WindowJob, ranked: Sequence[Any], *, repair: bool, provenance: Provenance) -> ListwiseRecord:
    """The record of `job` from the parsed `ranked_passages` (most relevant first). Raises
    `InvalidReply` when no identifier of the window is named, or, without `repair`, when the
    permutation is flawed."""
    n = len(job.docs)
    ids = [int(p.identifier) for p in ranked]
    if not any(1 <= i <= n for i in ids):
        raise InvalidReply(f"the ranking names none of the window's {n} passages (identifiers {ids[:10]})")
    order, fix = repair_ranking(ids, n)
    if fix is not None and not repair:
        raise InvalidReply(f"not a permutation of the window's {n} passages: {_describe(fix)}")
    items, seen = [], set()
    for p in ranked:
        i = int(p.identifier)
        if 1 <= i <= n and i not in seen:  # the first mention of a passage counts, as in the ranking
            seen.add(i)
            items.append({"docid": job.docs[i - 1].docid, "reason": p.direct_reason,
                          "comparison_reason": p.listwise_reason, "answer_sentence": p.direct_answer_sentence,
                          "relevance": p.relevance})  # validated with the record, in one pass
    c = job.chain
    return ListwiseRecord(
        key=job.key, query=c.cand.query, documents=job.docs, ranking=[job.docs[i - 1].docid for i in order],
        items=items, gold={d.docid: g for d in job.docs if (g := c.cand.qrels.get(d.docid)) is not None},
        first_stage_ranks=[c.first_stage[d.docid] for d in job.docs],
        window=ListwiseWindow(index=job.index, count=len(c.spans), start=job.start, window=c.window,
                              stride=c.stride, depth=c.depth),
        repaired=fix is not None, repair=fix, provenance=provenance)


def listwise_summary(config: GenerateConfig, chains: Sequence[Chain], run: RunDir, *, passages_cut: int) -> dict:
    """The manifest's `extra.listwise`: the window settings, the queries ranked so far (lines of
    rankings.jsonl), and the windows of their window runs that were repaired or rejected."""
    return {"window": config.window, "stride": config.stride, "depth": config.depth,
            "max_passage_words": config.max_passage_words, "repair": config.repair,
            "queries": len({(c.cand.query.qid, c.rollout) for c in chains}),
            "windows_per_query": sorted({len(c.spans) for c in chains}),
            "rankings": sum(1 for _ in run.iter_lines("ranking")),
            "windows_repaired": sum(c.repaired for c in chains), "windows_rejected": sum(c.rejected for c in chains),
            "passages_cut": passages_cut}
