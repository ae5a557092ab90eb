"""The bi-encoder student: the sentence-transformers base itself (all-MiniLM-L6-v2 by default), fine-tuned
on the teacher's (or gold) labels with the library's own `SentenceTransformerTrainer` and losses.

It starts where its base stands (DESIGN.md rule 12): nothing is new, the untrained student *is* the base,
so every step moves a model that already ranks. Which objectives run is decided by what the corpus holds;
each is weighed with its `--*-weight` (0 = off):

- **listwise** (`MultipleNegativesRankingLoss`, on whenever a query has a positive): (query, positive,
  hard negative 1..n) tuples, the negatives mined as `sentence_transformers.util.mine_hard_negatives` does
  with the base among every document of the corpus (the nearest `hard_negatives` that score at least 5 %
  below the positive: NV-Retriever's TopK-PercPos, which keeps unjudged near-duplicates of a positive
  out), plus `negatives` random passages of other queries; every other passage of the batch is a
  negative too (batches hold no duplicate text). Positives: gold grades >= `positive_grade` (2 on a 0-3
  scale, 1 where the qrels are binary), the teacher's direct grades >= 2, the first document of each of
  its permutations, or a preference win-rate of at least 2/3.
- **distill** (`MarginMSELoss` on cosine, on where direct records carry the teacher's calibrated
  scores): (query, doc_i, doc_j) with label `scale * (score_i - score_j)`, pairs adjacent in the
  teacher's order plus its best against its worst; `scale` maps the teacher's margins onto the spread of
  the base's cosine margins over the same pairs, so the student is not pushed to a new scale.
- **pointwise** (`CoSENTLoss`, on where a query's grades are on a scale shared by all queries, gold
  or the teacher's direct grades, and take two or more values): (query, document, grade) for every
  graded document; CoSENT orders every pair of the batch by grade, across queries too, so grades that
  only order one query's documents (from permutations or preferences) are not used.
- **pairwise** (`MultipleNegativesRankingLoss` on (query, winner, loser), on where comparison records
  exist): the teacher's swap-consistent preferences.
- **evidence** (`MultipleNegativesRankingLoss` on (query, sentence), on where the teacher quoted the
  sentence of a positive that answers the query: R2R's `direct_answer_sentence`): the student learns
  to score that sentence high, the one `rerank --explain` shows as the evidence.

`--labels gold` trains on the qrels the records (or candidate lists given with `--qrels`) carry instead,
never a mix. The saved directory is a plain sentence-transformers model: `SentenceTransformer(DIR)`
loads it, so it reranks (`score`: cosine of query and document) and retrieves
(`SentenceTransformer(DIR).encode(corpus)`, then nearest neighbours).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from r2r_synth.config import EPOCHS_WITHOUT_HELDOUT, BiEncoderOptions, TrainConfig
from r2r_synth.errors import ConfigError, InputError
from r2r_synth.plural import plural
from r2r_synth.student import distributed
from r2r_synth.student.base import r2r_config, refuse_knobs
from r2r_synth.student.corpus import TrainingView, ViewQuery
from r2r_synth.student.cross_encoder import DEFAULT_BASE_ID, freeze_below, resolve_base, teacher_grades
from r2r_synth.student.fit import fit, shared_args
from r2r_synth.student.heldout import Selection
from r2r_synth.student.int8 import int8_device, int8_scorer
from r2r_synth.student.openvino_int8 import write_calibration
from r2r_synth.student.progress import phase
from r2r_synth.student.st_model import SentenceTransformersStudent

KIND = "bi-encoder"


_KNOBS = ("batch_size", "learning_rate", "max_length", "hard_negatives", "negatives", "listwise_weight",
          "distill_weight", "pointwise_weight", "pairwise_weight", "train_layers")


def resolve_options(config: TrainConfig) -> BiEncoderOptions:
    """Map the command's `TrainConfig` onto the bi-encoder's options (None -> defaults). Knobs of the
    other students are refused: the base itself mines and scores, there is no separate encoder."""
    refuse_knobs(config, ("generation_weight", "max_reason_tokens"), belongs_to="reasoning")
    refuse_knobs(config, ("encoder", "temperature", "lexical_weight", "start_epochs"), belongs_to="cross-encoder")
    epochs = EPOCHS_WITHOUT_HELDOUT if config.epochs is None else config.epochs
    kw: dict[str, Any] = {"base": config.base or DEFAULT_BASE_ID, "labels": config.labels, "epochs": epochs,
                          "max_steps": config.max_steps, "seed": config.seed, "device": config.device}
    kw |= {name: getattr(config, name) for name in _KNOBS if getattr(config, name) is not None}
    return BiEncoderOptions(**kw)


# ----------------------------------------------------------------------------- labels


def positive_threshold(view: TrainingView, options: BiEncoderOptions) -> float:
    """`positive_grade`, or where unset: 1 for gold labels that are binary (BEIR qrels), else 2."""
    if options.positive_grade is not None:
        return options.positive_grade
    if options.labels == "gold":
        top = max((d.gold for q in view.queries for d in q.docs.values() if d.gold is not None), default=0)
        return 2.0 if top >= 2 else 1.0
    return 2.0


def positives(q: ViewQuery, *, labels: str, threshold: float) -> list[str]:
    """The query's positive docids under `labels` (see the module docstring)."""
    if labels == "gold":
        return [d.docid for d in q.docs.values() if d.gold is not None and d.gold >= threshold]
    direct = [d for d in q.docs.values() if d.teacher_grade is not None]
    if direct:
        return [d.docid for d in direct if d.teacher_grade >= threshold]
    if q.permutations:
        return list(dict.fromkeys(p[0] for p in q.permutations if p))
    return [d for d, g in teacher_grades(q).items() if g >= 2.0]  # win-rate >= 2/3


def absolute_grades(q: ViewQuery, *, labels: str) -> dict[str, float]:
    """Docid -> grade on a scale shared by every query: gold grades, or the teacher's direct grades (0-3).
    CoSENT compares pairs across the whole batch, so grades that only order one query's documents (from a
    permutation or preferences) are left out."""
    if labels == "gold":
        return {d.docid: float(d.gold) for d in q.docs.values() if d.gold is not None}
    return {d.docid: float(d.teacher_grade) for d in q.docs.values() if d.teacher_grade is not None}


def _margin_pairs(q: ViewQuery) -> list[tuple[str, str, float]]:
    """(doc_i, doc_j, score_i - score_j) for teacher-scored documents: neighbours in the teacher's
    order and its best against its worst."""
    scored = sorted(((d.docid, d.teacher_score) for d in q.docs.values() if d.teacher_score is not None),
                    key=lambda x: -x[1])
    pairs = [(a, b, sa - sb) for (a, sa), (b, sb) in pairwise(scored) if sa != sb]
    if len(scored) > 2 and scored[0][1] != scored[-1][1]:
        pairs.append((scored[0][0], scored[-1][0], scored[0][1] - scored[-1][1]))
    return pairs


def build_datasets(view: TrainingView, *, model: Any, options: BiEncoderOptions) -> dict[str, dict[str, list]]:
    """The training columns per objective (`datasets.Dataset.from_dict` input); only objectives with
    data and a positive weight appear. `model` (the base) mines the hard negatives."""
    from r2r_synth.student.mining import mine_negatives

    o = options
    rng = random.Random(o.seed)
    out: dict[str, dict[str, list]] = {}
    threshold = positive_threshold(view, o)
    if o.listwise_weight > 0:
        anchors, pos, owners = [], [], []
        for q in view.queries:
            for d in positives(q, labels=o.labels, threshold=threshold):
                anchors.append(q.text)
                pos.append(q.docs[d].text)
                owners.append(q.qid)
        if anchors:
            cols = _mnrl_tuples(view, anchors, pos, owners, model=model, options=o, rng=rng, mine=mine_negatives)
            if cols["anchor"]:
                out["listwise"] = cols
    if o.distill_weight > 0 and o.labels == "teacher" and view.has_scores:
        cols = {"query": [], "doc_1": [], "doc_2": [], "label": []}
        for q in view.queries:
            for a, b, margin in _margin_pairs(q):
                cols["query"].append(q.text)
                cols["doc_1"].append(q.docs[a].text)
                cols["doc_2"].append(q.docs[b].text)
                cols["label"].append(margin)
        if cols["query"]:
            scale = _margin_scale(model, cols)
            cols["label"] = [m * scale for m in cols["label"]]
            out["distill"] = cols
    if o.pointwise_weight > 0:
        cols = {"query": [], "doc": [], "score": []}
        for q in view.queries:
            grades = absolute_grades(q, labels=o.labels)
            if len(set(grades.values())) < 2:
                continue  # one grade for the whole query: nothing to order
            for d, g in grades.items():
                cols["query"].append(q.text)
                cols["doc"].append(q.docs[d].text)
                cols["score"].append(float(g))
        if cols["query"]:
            out["pointwise"] = cols
    if o.evidence_weight > 0 and o.labels == "teacher":
        # The teacher's answer sentence of a positive (R2R's direct_answer_sentence): sentence-level
        # supervision, so the sentence `rerank --explain` shows is the one the teacher would quote.
        cols = {"anchor": [], "positive": []}
        for q in view.queries:
            for d in positives(q, labels=o.labels, threshold=threshold):
                for sentence in dict.fromkeys(s for s in q.docs[d].answer_sentences if s.strip()):
                    cols["anchor"].append(q.text)
                    cols["positive"].append(sentence)
        if cols["anchor"]:
            out["evidence"] = cols
    if o.pairwise_weight > 0 and o.labels == "teacher":
        cols = {"anchor": [], "positive": [], "negative": []}
        for q in view.queries:
            for p in q.preferences:
                if p.consistent is False:
                    continue
                cols["anchor"].append(q.text)
                cols["positive"].append(q.docs[p.winner].text)
                cols["negative"].append(q.docs[p.loser].text)
        if cols["anchor"]:
            out["pairwise"] = cols
    return out


def _mnrl_tuples(view: TrainingView, anchors: list[str], pos: list[str], owners: list[str], *, model: Any,
                 options: BiEncoderOptions, rng: random.Random, mine: Any) -> dict[str, list]:
    """(anchor, positive, negative_1..n) columns: `hard_negatives` mined, `negatives` random."""
    o = options
    cols: dict[str, list] = {"anchor": list(anchors), "positive": list(pos)}
    if o.hard_negatives > 0:
        # Every passage of the view, read in chunks and embedded once (`mining`); a text shared by
        # many queries' candidate lists is one document.
        corpus = (d.text for q in view.queries for d in q.docs.values())
        cols = mine(anchors=anchors, positives=pos, corpus=corpus, num_negatives=o.hard_negatives,
                    relative_margin=o.relative_margin, range_max=max(30, 3 * o.hard_negatives),
                    encode=lambda texts: _encode(model, texts))
        # Rows the miner could not fill are dropped by it: keep the columns it returns.
        owner_of = {}
        for a, qid in zip(anchors, owners):
            owner_of.setdefault(a, qid)
        owners = [owner_of[a] for a in cols["anchor"]]
    if o.negatives > 0:
        pool = [(q.qid, d.text) for q in view.queries for d in q.docs.values()]
        extra: list[list[str]] = []
        for qid in owners:
            picks: list[str] = []
            while len(picks) < o.negatives and len(pool) > 1:
                other, text = pool[rng.randrange(len(pool))]
                if other != qid:
                    picks.append(text)
            extra.append(picks)
        start = len(cols) - 1
        for k in range(o.negatives):
            cols[f"negative_{start + k}"] = [e[k] for e in extra]
    return cols


def _encode(model: Any, texts: list[str]) -> Any:
    import torch

    with torch.inference_mode():
        return model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)


def _margin_scale(model: Any, cols: dict[str, list]) -> float:
    """Std of the base's cosine margins over the pairs / std of the teacher's margins (1 where flat)."""
    import numpy as np

    kw = {"normalize_embeddings": True, "convert_to_numpy": True, "show_progress_bar": False, "batch_size": 64}
    q = model.encode(cols["query"], **kw)
    m = (q * model.encode(cols["doc_1"], **kw)).sum(1) - (q * model.encode(cols["doc_2"], **kw)).sum(1)
    teacher = np.asarray(cols["label"], dtype=np.float64)
    return float(m.std() / teacher.std()) if teacher.std() > 0 and m.std() > 0 else 1.0


# ----------------------------------------------------------------------------- the student


class BiEncoderStudent(SentenceTransformersStudent):
    """A sentence-transformers `SentenceTransformer` behind the `Student` interface: the score of a
    document is its embedding's cosine with the query's."""

    kind = KIND

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> Any:
        """Normalized embeddings (numpy, one row per text)."""
        if self.onnx is not None:
            return self.onnx.embed(texts, batch_size=batch_size)
        import torch

        with torch.inference_mode():
            return self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)

    def score(self, query: str, documents: Sequence[str], *, batch_size: int = 32) -> list[float]:
        if not documents:
            return []
        q = self.embed([query], batch_size=batch_size)[0]
        return [float(x) for x in self.embed(documents, batch_size=batch_size) @ q]

    @classmethod
    def load(cls, path: Path, *, device: str | None = None, int8: bool = False) -> BiEncoderStudent:
        """`int8=True`: int8 on the CPU through OpenVINO or ONNX Runtime (`int8`)."""
        from sentence_transformers import SentenceTransformer

        meta = cls.read_own_config(path)
        model = SentenceTransformer(str(path), device=int8_device(device) if int8 else device, local_files_only=True)
        onnx = _int8_scorer(model, Path(path)) if int8 else None
        return cls(model, meta=meta, path=Path(path), onnx=onnx)


def _int8_scorer(model: Any, path: Path) -> Any:
    names = [type(m).__name__ for m in model]
    if names[:2] != ["Transformer", "Pooling"] or any(n not in ("Transformer", "Pooling", "Normalize") for n in names):
        raise ConfigError(f"{path}: int8 export handles Transformer + Pooling (+ Normalize) models; this one is "
                          f"{' + '.join(names)}", hint="drop --int8 / student-int8: for this model")
    mode = model[1].pooling_mode
    if mode not in ("mean", "cls"):
        raise ConfigError(f"{path}: int8 export handles mean or CLS pooling, not {mode!r}", hint="drop --int8")
    return int8_scorer(model, path, pooling=mode)


def build_model(base: str, *, device: str | None = None, max_length: int | None = None, what: str = "the base model",
                why: str = "", hint: str = "pass --base with a local sentence-transformers / transformers directory or "
                "an HF id you can download") -> Any:
    """`base` as a `SentenceTransformer` (a plain transformers directory gets mean pooling); an
    `InputError` naming `what` (and `why` it is loaded) with `hint` when it cannot be loaded."""
    from sentence_transformers import SentenceTransformer

    path = resolve_base(base)
    try:
        model = SentenceTransformer(path, device=device, local_files_only=Path(path).exists())
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load {what} {base!r}{why}: {e}", hint=hint) from None
    if max_length:
        model.max_seq_length = max_length
    return model


def heldout_scores(model: Any, queries: list[Any]) -> dict[str, list[float]]:
    """Cosines of every held-out query with its documents, each distinct text embedded once (`heldout.ScoreFn`)."""
    import torch

    kw = {"normalize_embeddings": True, "convert_to_numpy": True, "show_progress_bar": False, "batch_size": 32}
    texts = list(dict.fromkeys(t for q in queries for t in q.texts))
    with torch.inference_mode():
        docs = dict(zip(texts, model.encode(texts, **kw)))
        qs = model.encode([q.text for q in queries], **kw)
    return {q.qid: [float(docs[t] @ v) for t in q.texts] for q, v in zip(queries, qs)}


def train_student(view: TrainingView, *, config: TrainConfig, out_dir: Path,
                  selection: Selection | None = None) -> BiEncoderStudent:
    """Fine-tune the base on `view` and save it to `out_dir` (see the module docstring); the held-out
    `selection` chooses the epoch and the hybrid."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.util import pairwise_cos_sim

    from r2r_synth.student.losses import WeightedLoss

    opts = resolve_options(config)
    torch.manual_seed(opts.seed)
    started = time.perf_counter()  # mining counts as training time
    phase(f"loading the base model {opts.base}")
    model = build_model(opts.base, device=opts.device, max_length=opts.max_length)
    if opts.train_layers:
        freeze_below(model.transformers_model, opts.train_layers)
    phase(f"building the training examples (mining {plural(opts.hard_negatives, 'hard negative')} per positive)"
          if opts.hard_negatives and opts.listwise_weight > 0 else "building the training examples")
    # rank 0 mines and sends the examples to every other rank (one dataset, mined once)
    columns = distributed.on_main(lambda: build_datasets(view, model=model, options=opts))
    if not columns:
        raise InputError(
            f"the corpus gives the bi-encoder nothing to learn from: no positive (grade >= "
            f"{positive_threshold(view, opts):g}), teacher score, graded list or preference with a positive loss weight",
            hint="check --labels and the --*-weight options; with --labels gold the qrels must judge some candidates",
        )
    # Several processes: in-batch negatives span the global batch (every process's passages), as they
    # would in one process with that batch; without it each process ranks against its own share only.
    gather = distributed.world().distributed
    makers = {
        # The in-batch losses through GradCache: the same loss and gradients as
        # MultipleNegativesRankingLoss (dropout replayed), activations for `mini_batch_size` texts at a
        # time, so memory no longer grows with --batch-size x passage length.
        "listwise": lambda: losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=opts.mini_batch_size,
                                                                   gather_across_devices=gather),
        "distill": lambda: losses.MarginMSELoss(model, similarity_fct=pairwise_cos_sim),
        "pointwise": lambda: losses.CoSENTLoss(model),
        "pairwise": lambda: losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=opts.mini_batch_size,
                                                                   gather_across_devices=gather),
        "evidence": lambda: losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=opts.mini_batch_size,
                                                                   gather_across_devices=gather),
    }
    datasets = {name: Dataset.from_dict(cols) for name, cols in columns.items()}
    loss_fns = {name: WeightedLoss(makers[name](), weight=getattr(opts, f"{name}_weight")) for name in columns}

    args = SentenceTransformerTrainingArguments(
        **shared_args(opts, out_dir=Path(out_dir)),
        # in-batch negatives: one text twice in a batch would be its own negative
        batch_sampler=BatchSamplers.NO_DUPLICATES,
    )
    tracker = selection.tracker(heldout_scores) if selection else None
    training = fit(SentenceTransformerTrainer, model=model, args=args, datasets=datasets, losses=loss_fns,
                   max_minutes=config.max_minutes, started=started, tracker=tracker)
    training["examples"] = {k: len(next(iter(v.values()))) for k, v in columns.items()}
    training["positive_grade"] = positive_threshold(view, opts)
    hybrid, heldout = selection.finish(tracker) if selection else (None, None)
    meta = r2r_config(KIND, base=opts.base, options=opts, config=config, view=view, training=training,
                      hybrid=hybrid, heldout=heldout)
    student = BiEncoderStudent(model, meta=meta)
    phase(f"saving the model to {out_dir}")
    if distributed.world().is_main:  # one writer; DDP kept every rank's weights the same
        student.save(Path(out_dir))
        write_calibration(Path(out_dir), view)  # for the int8 path's static quantization
    return student
