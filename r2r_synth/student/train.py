"""`r2r-synth train`: read the corpus into its training view, dispatch on `--student`, save the model.

Each student kind lives in its own module with `train_student(view, *, config, out_dir) -> Student`
(see `r2r_synth.student.base`). Lines of the corpus that could not be converted are written to
`<out>/rejects.jsonl`, so nothing is dropped silently.

Under `torchrun` / `accelerate launch` every process runs this; rank 0 alone writes (see
`r2r_synth.student.distributed`).

The bi-encoder and the cross-encoder train on all but a held-out share of the queries (`--holdout`,
`r2r_synth.student.heldout`), which chooses the epoch (up to `--epochs`, 3 when unset) and fits the
hybrid with the first stage that `evaluate` and `rerank` then use.
"""

from __future__ import annotations

import importlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from r2r_synth.atomic import check_dir_target, write_jsonl_atomic
from r2r_synth.config import EPOCHS_WITHOUT_HELDOUT, HELDOUT_EPOCHS, TrainConfig
from r2r_synth.errors import ConfigError, InputError
from r2r_synth.plural import plural
from r2r_synth.schemas import REJECTS_FILE, Reject, stable_hash
from r2r_synth.student import distributed
from r2r_synth.student.base import STUDENT_CLASSES, STUDENT_KINDS, Student
from r2r_synth.student.corpus import TrainingView, load_training_view
from r2r_synth.student.heldout import select
from r2r_synth.student.progress import phase

#: The kinds whose training a held-out share steers (epoch choice, hybrid fit): their held-out scoring is cheap.
HELDOUT_KINDS = ("bi-encoder", "cross-encoder")

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    student: Student
    out: Path
    view: TrainingView


def train(config: TrainConfig) -> TrainResult:
    """Train the student `config.student` on `config.corpus` into `config.out`."""
    if config.student not in STUDENT_CLASSES:
        raise ConfigError(f"unknown --student {config.student!r}", hint=f"use one of: {', '.join(STUDENT_KINDS)}")
    if config.labels not in ("teacher", "gold"):
        raise ConfigError(f"unknown --labels {config.labels!r}", hint="use 'teacher' (default) or 'gold'")
    for name in ("pointwise_weight", "pairwise_weight", "listwise_weight", "generation_weight", "distill_weight"):
        w = getattr(config, name)
        if w is not None and w < 0:
            raise ConfigError(f"--{name.replace('_', '-')} is {w}", hint="loss weights are >= 0 (0 switches it off)")
    if config.temperature is not None and not config.temperature > 0:
        raise ConfigError(f"--temperature is {config.temperature}", hint="use a value > 0 (default 0.05)")
    out = check_dir_target(config.out)  # before the corpus is read: a bad --out costs nothing
    try:
        return _train(config, out=out, world=distributed.setup(device=config.device))
    finally:
        distributed.teardown()


def _train(config: TrainConfig, *, out: Path, world: distributed.World) -> TrainResult:
    # Every rank reads the corpus itself (reading writes nothing and gives every rank the same view);
    # the examples built from it come from rank 0 (`distributed.on_main` in each student).
    phase(f"reading the corpus ({', '.join(map(str, config.corpus))})")
    view = load_training_view(config.corpus, qrels=config.qrels, depth=config.depth, split=config.split).limit(config.limit)
    log.info("training view: %s", view.summary())
    if config.labels == "teacher" and not view.has_teacher_labels:
        raise InputError(
            f"{', '.join(map(str, config.corpus))}: candidate lists judged by {config.qrels or 'their qrels'} "
            "carry human labels, not a teacher's",
            hint="add --labels gold to train on the qrels, or pass a teacher corpus (run directory, record files)",
        )
    if config.labels == "gold" and not view.has_gold:
        # Without this the cross-encoder would distil the encoder's cosines alone and call it gold.
        raise InputError(
            f"--labels gold, but no document of the {plural(len(view.queries), 'query')} read from "
            f"{', '.join(map(str, config.corpus))} carries a gold label",
            hint="train on the teacher's labels (drop --labels gold), or generate the corpus with --qrels "
            "so its records carry the gold grades",
        )
    created = world.is_main and not out.exists()
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
    try:
        if view.rejects and world.is_main:
            write_jsonl_atomic(
                out / REJECTS_FILE,
                (Reject(kind="input", key=stable_hash([where, reason]), reason=reason, cause="input",
                        inputs={"where": where}) for where, reason in view.rejects),
            )
        module = importlib.import_module(STUDENT_CLASSES[config.student][0])
        if config.student in HELDOUT_KINDS:
            train_view, selection = select(view, fraction=config.holdout, seed=config.seed, labels=config.labels)
            log.info("held out: %d queries (%s)", len(selection.queries), selection.note)
            epochs = config.epochs
            if epochs is None:
                epochs = HELDOUT_EPOCHS if selection.queries else EPOCHS_WITHOUT_HELDOUT
            student = module.train_student(train_view, config=config.model_copy(update={"epochs": epochs}),
                                           out_dir=out, selection=selection)
        else:
            epochs = EPOCHS_WITHOUT_HELDOUT if config.epochs is None else config.epochs
            student = module.train_student(view, config=config.model_copy(update={"epochs": epochs}), out_dir=out)
    except BaseException:
        # A refused or interrupted run leaves nothing half-written: the directory it created goes
        # (an existing one keeps what it held; the model is only written at the end of training).
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return TrainResult(student=student, out=out, view=view)
