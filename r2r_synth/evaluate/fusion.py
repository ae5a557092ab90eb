"""Systems that rank by document id rather than by text: a TREC run file (`run:FILE`) and a fusion
of systems ranked before it (`fuse:...`).

**run:FILE.** The run's scores order the top `--depth` candidates of each query; candidates the run
lacks follow them in first-stage order (counted: `not_in_run`), a query the run lacks keeps its
first-stage order (`queries_not_in_run`), and the run's documents that are no candidate of their
query are not used (`outside_candidates`). Every count is in `evaluation.json`; the table shows the first.

**fuse:[METHOD:]A[*W]+B[*W]...** fuses the reranked tops of systems named before it in `--system`:

- `rrf` (the default): reciprocal rank fusion, ``sum_s W_s / (60 + rank_s(d))`` (Cormack, Clarke &
  Buettcher, SIGIR 2009; k = 60 as there and in ranx);
- `combsum`: ``sum_s W_s * minmax_s(d)``, each system's own scores min-max normalized over the
  query's top `--depth` candidates (Fox & Shaw 1994; a document a run file lacks counts 0). `bm25`'s
  scores are the first stage's: BM25's real scores for a corpus-only input (the input's `scores`
  otherwise; minus the rank only for an input without scores).

Weights (`*W`, default 1) are fixed on the command line; none is fitted on the evaluated queries.
A query any member left out (a failed teacher call) leaves the fusion too. Ties fall back to the
first-stage order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from r2r_synth.errors import ConfigError, InputError
from r2r_synth.evaluate.systems import System, SystemSpec, TopK
from r2r_synth.plural import plural
from r2r_synth.schemas import Candidates, Document

RRF_K = 60
METHODS = ("rrf", "combsum")
FUSE_HINT = "write fuse:[rrf|combsum:]A+B, optionally weighted (fuse:combsum:ce*0.7+bm25*0.3), naming systems " \
            "given before it in --system"


@dataclass(frozen=True)
class Fusion:
    method: str
    members: tuple[tuple[str, float], ...]  # (system name, weight)


def parse_fusion(spec: str, *, known: list[str]) -> Fusion:
    """`fuse:[rrf|combsum:]A[*W]+B[*W]...` -> a `Fusion`; every member must be in `known`."""
    body = spec.split(":", 1)[1]
    method = "rrf"
    head, sep, rest = body.partition(":")
    if sep and head in METHODS:
        method, body = head, rest
    members: list[tuple[str, float]] = []
    for part in body.split("+"):
        name, star, weight = part.strip().rpartition("*") if "*" in part else (part.strip(), "", "")
        name = name.strip()
        w = 1.0
        if star:
            try:
                w = float(weight)
            except ValueError:
                w = math.nan
            if not math.isfinite(w) or w <= 0:
                raise ConfigError(f"--system {spec!r}: weight {weight!r} of {name!r} is not a positive number",
                                  hint=FUSE_HINT)
        if name not in known:
            raise ConfigError(f"--system {spec!r}: {name!r} is not a system given before it "
                              f"(given so far: {', '.join(known) or 'none'})", hint=FUSE_HINT)
        members.append((name, w))
    if len(members) < 2 or len({n for n, _ in members}) != len(members):
        raise ConfigError(f"--system {spec!r}: a fusion needs two or more different systems", hint=FUSE_HINT)
    return Fusion(method=method, members=tuple(members))


def order_by_score(docs: list[Document], scores: list[float | None]) -> TopK:
    """`docs` best first by score; ties and missing scores (None, NaN: last) keep the given order."""
    def key(i: int) -> tuple[int, float, int]:
        s = scores[i]
        bad = s is None or math.isnan(s)
        return (1 if bad else 0, 0.0 if bad else -s, i)

    return [(docs[i].docid, scores[i]) for i in sorted(range(len(docs)), key=key)]


def _minmax(values: Mapping[str, float | None]) -> dict[str, float]:
    real = [v for v in values.values() if v is not None and math.isfinite(v)]
    lo, hi = (min(real), max(real)) if real else (0.0, 0.0)
    return {d: ((v - lo) / (hi - lo) if hi > lo else 0.0) if v is not None and math.isfinite(v) else 0.0
            for d, v in values.items()}


def fuse(fusion: Fusion, tops: list[TopK], docs: list[Document]) -> TopK:
    """Fuse the members' tops of one query (in `fusion.members` order) over its top documents `docs`."""
    total = {d.docid: 0.0 for d in docs}
    for (_, weight), top in zip(fusion.members, tops):
        if fusion.method == "rrf":
            for rank, (docid, _) in enumerate(top, start=1):
                if docid in total:
                    total[docid] += weight / (RRF_K + rank)
        else:
            for docid, value in _minmax(dict(top)).items():
                if docid in total:
                    total[docid] += weight * value
    return order_by_score(docs, [total[d.docid] for d in docs])


def fusion_system(spec: SystemSpec, *, ranked: Mapping[str, Mapping[str, TopK]]) -> System:
    """A `System` fusing the tops in `ranked` (``{system name: {qid: top}}``) of the members of `spec`."""
    fusion = parse_fusion(spec.spec, known=list(ranked))

    def order(c: Candidates, docs: list[Document]) -> TopK | None:
        tops = [ranked[name].get(c.query.qid) for name, _ in fusion.members]
        if any(t is None for t in tops):
            return None  # a member left the query out
        return fuse(fusion, tops, docs)

    return System(name=spec.name, spec=spec.spec, order=order, components=tuple(n for n, _ in fusion.members))


def run_file_system(spec: SystemSpec, run: Mapping[str, Mapping[str, float]]) -> System:
    """The TREC run `run` (read from `spec.arg` by `read_run_file`) as a system: see the module docstring."""
    system = System(name=spec.name, spec=spec.spec,
                    counts={"not_in_run": 0, "queries_not_in_run": 0, "outside_candidates": 0})

    def order(c: Candidates, docs: list[Document]) -> TopK:
        scores = run.get(c.query.qid)
        if scores is None:
            system.counts["queries_not_in_run"] += 1
            system.counts["not_in_run"] += len(docs)
            return [(d.docid, None) for d in docs]
        candidates = {d.docid for d in c.documents}
        system.counts["outside_candidates"] += sum(d not in candidates for d in scores)
        system.counts["not_in_run"] += sum(d.docid not in scores for d in docs)
        return order_by_score(docs, [scores.get(d.docid) for d in docs])

    system.order = order
    return system


def read_run_file(spec: SystemSpec, qids: list[str]) -> dict[str, dict[str, float]]:
    """Read the run of `run:FILE`; one that ranks none of the input's queries `qids` is for another
    collection (or spells qids apart): an `InputError`."""
    from r2r_synth.io.trec import read_run

    run = read_run(spec.arg)
    if not set(run) & set(qids):
        raise InputError(
            f"{spec.arg}: the run ranks none of the {plural(len(qids), 'input query', 'input queries')} (its qids start "
            f"{', '.join(list(run)[:3])}; the input's {', '.join(qids[:3])})",
            hint="give a run over the same queries as --input (check the qid spelling on both sides)",
        )
    return run
