"""The training view of a corpus: what a student learns from, whatever files the labels came in.

`load_training_view(paths)` reads any mix of

- run directories written by `generate` or `import` (read through `r2r_synth.rundir.RunDir`; in a
  listwise run, each query's final ranking over its sliding windows, `rankings.jsonl`, is its
  permutation, at any depth, and the windows add their reasons),
- record files (one of those JSONL files on its own, records dispatched on their `kind`),
- R2R's released listwise corpus (`msmarco_500.jsonl`: `re_rank_id`, `unsorted_docs`, reasons),
- with `qrels=`, any candidate input `generate` reads (a RankGPT JSON, a JSONL of candidate lists, a
  BEIR or TREC directory with its BM25 first stage, `irds:<id>`; `r2r_synth.io.candidates`): human
  labels as the teacher, every judged candidate with its grade, at any `depth`,

and returns a `TrainingView`: per query, its documents with the teacher's scores and grades, the
teacher's preferences between pairs, the teacher's permutations (best first), and every reasoning
text. Gold labels (qrels carried in the records) sit in their own field beside the teacher's and are
never mixed into them: a student trains on teacher labels unless the caller asks for gold on purpose.

A line of an R2R file that cannot be converted is not dropped: it is kept in `view.rejects` (the
trainer writes them to `rejects.jsonl`). A malformed record file is an `InputError` naming file:line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean

from r2r_synth.errors import InputError
from r2r_synth.io.jsonl import iter_json_lines, read_jsonl
from r2r_synth.io.r2r import iter_r2r, looks_like_r2r
from r2r_synth.rundir import KIND_ORDER, RunDir
from r2r_synth.schemas import (
    RECORD_FILES,
    Candidates,
    ComparisonRecord,
    DirectRecord,
    Document,
    ListwiseRecord,
    Query,
    RankingRecord,
)

_RECORD_MODELS = {"direct": DirectRecord, "comparison": ComparisonRecord, "listwise": ListwiseRecord}


@dataclass
class ViewDoc:
    """One document of one query, with everything the teacher said about it."""

    docid: str
    text: str
    teacher_scores: list[float] = field(default_factory=list)  # direct records' calibrated scores
    teacher_grades: list[int] = field(default_factory=list)  # direct records' 0..3 grades
    reasons: list[str] = field(default_factory=list)  # direct reasoning / R2R direct_reason
    listwise_reasons: list[str] = field(default_factory=list)  # R2R listwise_reason
    answer_sentences: list[str] = field(default_factory=list)  # R2R direct_answer_sentence
    gold: int | None = None  # from qrels, never from the teacher
    first_stage: float | None = None  # the candidate list's first-stage (BM25) score, where it gave one

    @property
    def teacher_score(self) -> float | None:
        """Mean over rollouts of the teacher's calibrated score; None when no direct record."""
        return fmean(self.teacher_scores) if self.teacher_scores else None

    @property
    def teacher_grade(self) -> float | None:
        return fmean(self.teacher_grades) if self.teacher_grades else None


@dataclass
class Preference:
    """The teacher preferred `winner` over `loser` for the query (one comparison record)."""

    winner: str
    loser: str
    confidence: float | None = None
    reasoning: str | None = None
    #: False when the swapped-order answer preferred the other document (position bias); None if
    #: the pair was asked in one order only.
    consistent: bool | None = None


@dataclass
class ViewQuery:
    qid: str
    text: str
    docs: dict[str, ViewDoc] = field(default_factory=dict)  # insertion order = first seen
    preferences: list[Preference] = field(default_factory=list)
    permutations: list[list[str]] = field(default_factory=list)  # teacher rankings, best first

    def doc(self, d: Document) -> ViewDoc:
        text = d.full_text()
        have = self.docs.get(d.docid)
        if have is None:
            have = self.docs[d.docid] = ViewDoc(docid=d.docid, text=text)
        elif have.text != text:
            raise InputError(
                f"qid {self.qid!r}: docid {d.docid!r} has two different texts across the corpus files",
                hint="a docid must name one passage; do not mix corpora that reuse ids for different passages",
            )
        return have

    def teacher_ranks(self) -> dict[str, float]:
        """Docid -> mean 0-based relative position in the teacher's permutations (0 = best, 1 =
        worst), for documents that appear in at least one permutation."""
        acc: dict[str, list[float]] = {}
        for perm in self.permutations:
            n = len(perm)
            for i, d in enumerate(perm):
                acc.setdefault(d, []).append(i / (n - 1) if n > 1 else 0.0)
        return {d: fmean(v) for d, v in acc.items()}


@dataclass
class TrainingView:
    """A whole corpus in training shape; `queries` keep the order in which they were first read."""

    queries: list[ViewQuery] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    rejects: list[tuple[str, str]] = field(default_factory=list)  # (where, reason)
    counts: dict[str, int] = field(
        default_factory=lambda: {"direct": 0, "comparison": 0, "listwise": 0, "candidates": 0})

    def __post_init__(self) -> None:
        self._by_qid = {q.qid: q for q in self.queries}

    def query(self, q: Query) -> ViewQuery:
        have = self._by_qid.get(q.qid)
        if have is None:
            have = self._by_qid[q.qid] = ViewQuery(qid=q.qid, text=q.text)
            self.queries.append(have)
        return have

    @property
    def has_scores(self) -> bool:
        return self.counts["direct"] > 0

    @property
    def has_preferences(self) -> bool:
        return self.counts["comparison"] > 0

    @property
    def has_permutations(self) -> bool:
        return self.counts["listwise"] > 0

    @property
    def has_teacher_labels(self) -> bool:
        """Whether any record of a teacher was read (candidate lists with qrels carry gold labels only)."""
        return self.has_scores or self.has_preferences or self.has_permutations

    @property
    def has_gold(self) -> bool:
        """Whether any document carries a gold label (from qrels), for `--labels gold`."""
        return any(d.gold is not None for q in self.queries for d in q.docs.values())

    def limit(self, n: int | None) -> TrainingView:
        """The first `n` queries (for pilots); the same view when `n` is None."""
        if n is None or n >= len(self.queries):
            return self
        kept = self.queries[:n]
        counts = {
            "direct": sum(len(d.teacher_scores) for q in kept for d in q.docs.values()),
            "comparison": sum(len(q.preferences) for q in kept),
            "listwise": sum(len(q.permutations) for q in kept),
            "candidates": min(self.counts.get("candidates", 0), len(kept)),
        }
        return TrainingView(queries=kept, sources=self.sources, rejects=self.rejects, counts=counts)

    def summary(self) -> dict[str, int]:
        return {
            "queries": len(self.queries),
            "documents": sum(len(q.docs) for q in self.queries),
            "direct_records": self.counts["direct"],
            "comparison_records": self.counts["comparison"],
            "listwise_records": self.counts["listwise"],
            # How deep the teacher ranked: the longest permutation of a query (a window, or a query's
            # final ranking over its sliding windows), and how many final rankings were read.
            "ranking_depth": max((len(p) for q in self.queries for p in q.permutations), default=0),
            "listwise_rankings": self.counts.get("rankings", 0),
            "candidate_lists": self.counts.get("candidates", 0),
            "preferences": sum(len(q.preferences) for q in self.queries),
            "rejects": len(self.rejects),
        }

    # ------------------------------------------------------------------ adding records

    def add(self, rec: DirectRecord | ComparisonRecord | ListwiseRecord, *, permutation: bool = True) -> None:
        """Add one record. `permutation=False`: a listwise window whose query's final ranking is added
        instead (`add_ranking`), so its reasons count but its order within the window does not."""
        if isinstance(rec, DirectRecord):
            q = self.query(rec.query)
            d = q.doc(rec.document)
            d.teacher_scores.append(rec.score)
            d.teacher_grades.append(rec.relevance)
            d.reasons.append(rec.reasoning)
            if rec.gold is not None:
                d.gold = rec.gold
            self.counts["direct"] += 1
        elif isinstance(rec, ComparisonRecord):
            q = self.query(rec.query)
            a, b = q.doc(rec.doc_a), q.doc(rec.doc_b)
            if rec.gold_a is not None:
                a.gold = rec.gold_a
            if rec.gold_b is not None:
                b.gold = rec.gold_b
            win, lose = (a, b) if rec.preferred == "A" else (b, a)
            q.preferences.append(
                Preference(winner=win.docid, loser=lose.docid, confidence=rec.confidence,
                           reasoning=rec.reasoning, consistent=rec.swap_agrees)
            )
            self.counts["comparison"] += 1
        elif isinstance(rec, ListwiseRecord):
            q = self.query(rec.query)
            for d in rec.documents:
                vd = q.doc(d)
                if d.docid in rec.gold:
                    vd.gold = rec.gold[d.docid]
            if permutation:
                q.permutations.append(list(rec.ranking))
            for item in rec.items:
                vd = q.docs[item.docid]
                if item.reason:
                    vd.reasons.append(item.reason)
                if item.comparison_reason:
                    vd.listwise_reasons.append(item.comparison_reason)
                if item.answer_sentence:
                    vd.answer_sentences.append(item.answer_sentence)
            self.counts["listwise"] += 1
        else:  # pragma: no cover - the readers only yield the three kinds
            raise TypeError(type(rec).__name__)

    def add_ranking(self, rec: RankingRecord) -> None:
        """A query's final ranking over its sliding windows (`rankings.jsonl`) as one permutation of its
        documents. Add it after the window records, which carry the passages' texts: a docid whose
        window record is not in the corpus (e.g. filtered out) is left out of the permutation."""
        q = self.query(rec.query)
        perm = [d for d in rec.ranking if d in q.docs]
        for d, g in rec.gold.items():
            if d in q.docs:
                q.docs[d].gold = g
        if len(perm) > 1:
            q.permutations.append(perm)
        self.counts["rankings"] = self.counts.get("rankings", 0) + 1

    def add_candidates(self, cands: Candidates) -> None:
        """One query's candidate list with its qrels: every candidate becomes a document, a judged one
        with its gold grade (an unjudged one keeps `gold=None`). Judged documents that are not among
        the candidates are not seen (their text is not in the list): a deeper `depth` reaches them."""
        q = self.query(cands.query)
        for i, d in enumerate(cands.documents):
            vd = q.doc(d)
            if cands.scores is not None:
                vd.first_stage = cands.scores[i]
            grade = cands.qrels.get(d.docid)
            if grade is not None:
                vd.gold = grade
        self.counts["candidates"] = self.counts.get("candidates", 0) + 1


def _first_object(path: Path) -> dict | None:
    for _line, obj in iter_json_lines(path):
        return obj
    return None


def _read_file(path: Path, view: TrainingView) -> None:
    first = _first_object(path)
    if first is None:
        raise InputError(f"{path}: empty corpus file", hint="pass a non-empty record file or run directory")
    if looks_like_r2r(first):
        for line, rec, err in iter_r2r(path):
            if rec is None:
                view.rejects.append((f"{path}:{line}", err or "unconvertible R2R row"))
            else:
                view.add(rec)
        return
    kind = first.get("kind")
    if kind not in _RECORD_MODELS:
        raise InputError(
            f"{path}:1: not a record r2r-synth can train on (kind={kind!r})",
            hint="--corpus takes run directories, direct/comparison/listwise JSONL files, or R2R-format "
            "files (with re_rank_id and unsorted_docs); candidate lists train with --qrels FILE --labels gold",
        )
    for line, obj in iter_json_lines(path):
        k = obj.get("kind")
        if k != kind:
            raise InputError(
                f"{path}:{line}: a {k!r} record in a file of {kind!r} records",
                hint="keep one record kind per file, as `generate` writes them",
            )
    for rec in read_jsonl(path, _RECORD_MODELS[kind]):
        view.add(rec)


def _starts_with_object(p: Path) -> bool:
    with p.open("rb") as f:
        return f.read(64).lstrip()[:1] == b"{"


def _is_teacher_corpus(p: Path) -> bool:
    """A run directory with record files, a record file or an R2R file (else: a candidate input)."""
    if p.is_dir():
        return any(RunDir(p).records_path(k).exists() for k in KIND_ORDER)
    if not p.is_file():
        return False
    if not _starts_with_object(p):
        return False  # a RankGPT JSON list, or not JSON at all
    first = _first_object(p)
    return first is not None and (looks_like_r2r(first) or first.get("kind") in _RECORD_MODELS)


def _carries_qrels(p: Path) -> bool:
    """A BEIR directory or a local BRIGHT copy: a candidate input with its own gold labels."""
    from r2r_synth.io.beir import is_beir_dir
    from r2r_synth.io.bright import is_bright_dir

    return p.is_dir() and (is_beir_dir(p) or is_bright_dir(p))


def load_training_view(paths: list[Path | str], *, qrels: Path | None = None,
                       depth: int | None = None, split: str | None = None) -> TrainingView:
    """Read every corpus path into one `TrainingView` (see the module docstring). With `qrels`,
    paths that are not teacher corpora are read as candidate inputs (`load_candidates`, the top
    `depth` of each query) whose judged documents carry the qrels' grades."""
    if not paths:
        raise InputError("no corpus given", hint="pass --corpus with a run directory, a record file or an R2R file")
    view = TrainingView()
    for raw in paths:
        p = Path(raw)
        irds = str(raw).startswith(("irds:", "bright:"))
        # irds:, BRIGHT and BEIR directories carry their own qrels (a --qrels file replaces them)
        if irds or (p.exists() and not _is_teacher_corpus(p) and (qrels is not None or _carries_qrels(p))):
            from r2r_synth.io.candidates import load_candidates

            for cands in load_candidates(str(raw) if irds else p, qrels=qrels, depth=depth,
                                         split=split if not str(raw).startswith("irds:") else None):
                view.add_candidates(cands)
        elif p.is_dir():
            run = RunDir(p)
            kinds = [k for k in KIND_ORDER if run.records_path(k).exists()]
            if not kinds:
                raise InputError(
                    f"{p}: a directory without {', '.join(RECORD_FILES.values())}",
                    hint="pass the --out directory of `r2r-synth generate`, or the record files themselves; "
                    "to train on human labels over a candidate input (BEIR, TREC, ...) add --qrels FILE --labels gold",
                )
            # A listwise run's final rankings (all K candidates of a query) are the teacher's order;
            # the windows they were built from add their reasons only.
            rankings = run.rankings()
            chained = {k for r in rankings for k in r.windows}
            for kind in kinds:
                for rec in run.records(kind):
                    view.add(rec, permutation=rec.key not in chained)
            for r in rankings:
                view.add_ranking(r)
        elif p.exists():
            if not _is_teacher_corpus(p) and not _starts_with_object(p):
                raise InputError(
                    f"{p}: not a teacher corpus (no direct/comparison/listwise records, not an R2R file)",
                    hint="a candidate list (RankGPT JSON, ...) trains on human labels: add --qrels FILE --labels gold",
                )
            _read_file(p, view)
        else:
            raise InputError(f"{p}: no such corpus file or directory", hint="check the --corpus path")
        view.sources.append(str(raw))
    if not view.queries:
        raise InputError(
            f"no usable records in {', '.join(map(str, paths))} ({len(view.rejects)} rejected)",
            hint="check the files; rejected lines and why are listed in rejects.jsonl of the output",
        )
    return view
