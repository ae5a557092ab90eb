"""What a run asks: one `Job` per request key, in a deterministic order (query by query), and the
candidates it is asked over (read, validated, sharded, and cut to `--max-doc-chars`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from r2r_synth.config import GenerateConfig
from r2r_synth.errors import ConfigError
from r2r_synth.pairs import PairStrategy, in_shard, parse_shard, select_documents, select_pairs
from r2r_synth.schemas import Candidates, Document, request_key

logger = logging.getLogger(__name__)


@dataclass
class Job:
    """One request key: a direct judgment, or a comparison (asked in both orders)."""

    kind: str
    key: str
    rollout: int
    cand: Candidates
    doc: Document
    rank: int | None = None
    doc_b: Document | None = None
    strategy: str | None = None

    def inputs(self) -> dict[str, Any]:
        """What identifies the request (goes into the key)."""
        q = {"qid": self.cand.query.qid, "query": self.cand.query.text}
        if self.kind == "direct":
            return {**q, "docid": self.doc.docid, "document": self.doc.full_text()}
        assert self.doc_b is not None
        return {**q, "docid_a": self.doc.docid, "document_a": self.doc.full_text(),
                "docid_b": self.doc_b.docid, "document_b": self.doc_b.full_text()}

    def reject_inputs(self) -> dict[str, Any]:
        """What a reject records of the request (ids, not texts)."""
        if self.kind == "direct":
            return {"qid": self.cand.query.qid, "docid": self.doc.docid, "rollout": self.rollout}
        return {"qid": self.cand.query.qid, "docid_a": self.doc.docid,
                "docid_b": self.doc_b.docid if self.doc_b else None, "rollout": self.rollout}


def build_jobs(candidates: list[Candidates], *, config: GenerateConfig, program_hashes: dict[str, str],
               teacher: str) -> list[Job]:
    """Every request of the run, in a deterministic order (query by query)."""
    jobs: list[Job] = []
    for cand in candidates:
        for r in range(config.rollouts):
            if config.direct:
                for rank, doc in select_documents(cand, depth=config.depth):
                    job = Job("direct", "", r, cand, doc, rank=rank)
                    job.key = request_key(kind="direct", inputs=job.inputs(), program_hash=program_hashes["direct"],
                                          teacher=teacher, rollout_id=r)
                    jobs.append(job)
            for a, b in select_pairs(cand, strategy=config.pairs, depth=config.depth,
                                     max_pairs=config.max_pairs_per_query):
                job = Job("comparison", "", r, cand, a, doc_b=b, strategy=str(config.pairs))
                job.key = request_key(kind="comparison", inputs=job.inputs(),
                                      program_hash=program_hashes["comparison"], teacher=teacher, rollout_id=r)
                jobs.append(job)
    return jobs


def check_config(config: GenerateConfig) -> None:
    """Refuse a config that cannot work before anything is read or asked."""
    if config.rollouts > 1 and config.temperature == 0:
        raise ConfigError(
            f"--rollouts {config.rollouts} at --temperature 0 would ask the same question {config.rollouts} times",
            hint="set --temperature above 0 (e.g. 0.7) to sample different rollouts",
        )
    if config.depth < 1:
        raise ConfigError(f"--depth {config.depth}: need at least 1", hint="e.g. --depth 10")
    if config.max_doc_chars is not None and config.max_doc_chars < 1:
        raise ConfigError(f"--max-doc-chars {config.max_doc_chars}: need at least 1", hint="e.g. --max-doc-chars 20000")
    if not config.direct and PairStrategy(config.pairs) is PairStrategy.none and not config.listwise:
        raise ConfigError("nothing to ask: --no-direct with --pairs none", hint="drop --no-direct, choose --pairs "
                          "or add --listwise")
    from r2r_synth.generate.windows import check_listwise_config

    check_listwise_config(config)


@dataclass
class CutReport:
    """Documents longer than `--max-doc-chars`, cut before they were asked about."""

    max_doc_chars: int | None
    count: int = 0
    longest_chars: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"max_doc_chars": self.max_doc_chars, "count": self.count, "longest_chars": self.longest_chars}


def cut_documents(candidates: list[Candidates], max_chars: int | None) -> tuple[list[Candidates], CutReport]:
    """Cut every document's text to `max_chars` characters (None: no cut). A teacher sees, and a
    record keeps, the cut text; the manifest counts the cuts, so nothing changes silently."""
    report = CutReport(max_doc_chars=max_chars)
    if max_chars is None:
        return candidates, report
    out = []
    for c in candidates:
        long = [d for d in c.documents if len(d.text) > max_chars]
        if not long:
            out.append(c)
            continue
        report.count += len(long)
        report.longest_chars = max([report.longest_chars, *(len(d.text) for d in long)])
        docs = [d.model_copy(update={"text": d.text[:max_chars]}) if len(d.text) > max_chars else d
                for d in c.documents]
        out.append(c.model_copy(update={"documents": docs}))
    if report.count:
        logger.warning("%d documents longer than --max-doc-chars %d (the longest %d) were cut to it",
                       report.count, max_chars, report.longest_chars)
    return out, report


def load_inputs(config: GenerateConfig) -> list[Candidates]:
    """The candidates of this run (validated, limited, sharded). Raises InputError on a bad line."""
    from r2r_synth.io.candidates import load_candidates

    cands = load_candidates(config.input, qrels=config.qrels, limit=config.limit, depth=config.depth,
                            split=config.split)
    shard = parse_shard(config.shard)
    return [c for c in cands if in_shard(c.query.qid, shard)]
