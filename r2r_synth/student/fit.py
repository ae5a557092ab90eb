"""The training loop both sentence-transformers students share: their `TrainingArguments`, the
trainer run under the `--max-minutes` budget, and what training measured.

The bi-encoder (`SentenceTransformerTrainer`) and the cross-encoder (`CrossEncoderTrainer`) differ in
their datasets, losses and a few arguments (the bi-encoder's no-duplicates batches, the cross-encoder's
head learning rate); everything else is the same Hugging Face Trainer run, written once here. Under
`torchrun` / `accelerate launch` the Trainer runs DistributedDataParallel itself; `--batch-size` is per
process and what training measured says how it ran (`distributed.describe`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r2r_synth.student import distributed
from r2r_synth.student.base import training_summary
from r2r_synth.student.budget import time_budget
from r2r_synth.student.progress import trainer_callback


def shared_args(opts: Any, *, out_dir: Path) -> dict[str, Any]:
    """Keyword arguments of the students' `...TrainingArguments` taken from their options: epochs,
    steps, batch, learning rate, warm-up ratio, weight decay, seed; no checkpoints, no reporting."""
    import torch

    return {
        "output_dir": str(Path(out_dir) / "checkpoints"),
        "num_train_epochs": opts.epochs,
        "max_steps": opts.max_steps if opts.max_steps else -1,
        "per_device_train_batch_size": opts.batch_size,
        "learning_rate": opts.learning_rate,
        "warmup_steps": opts.warmup_ratio,  # a float is a ratio of the total steps (transformers v5)
        "weight_decay": opts.weight_decay,
        "multi_dataset_batch_sampler": "proportional",
        "logging_steps": 10,
        "save_strategy": "no",
        "report_to": "none",
        "seed": opts.seed,
        "data_seed": opts.seed,
        "use_cpu": (opts.device == "cpu") or not torch.cuda.is_available(),
        "disable_tqdm": True,
    }


def fit(trainer_cls: Any, *, model: Any, args: Any, datasets: dict[str, Any], losses: dict[str, Any],
        max_minutes: float | None, started: float, label: str = "", tracker: Any = None) -> dict[str, Any]:
    """Train `model` with `trainer_cls` on one dataset per objective (the multi-dataset mode when there
    are several) under the wall-clock budget counted from `started`; return what training measured
    (`base.training_summary`). The empty checkpoints folder the trainer leaves is removed. Epochs and
    steps are reported as `progress.phase`s (prefixed with `label`). A `tracker` (`heldout.Tracker`)
    measures the held-out queries after each epoch; the best epoch's weights are loaded back into
    `model` at the end."""
    import time

    from transformers.trainer_callback import PrinterCallback

    distributed.check_global_batch(sum(len(d) for d in datasets.values()), per_device=args.per_device_train_batch_size,
                                   accumulation=args.gradient_accumulation_steps)
    budget = time_budget(max_minutes, started=started) if max_minutes else None
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=datasets if len(datasets) > 1 else next(iter(datasets.values())),
        loss=losses if len(losses) > 1 else next(iter(losses.values())),
        callbacks=[trainer_callback(label), *(c for c in (budget, tracker.callback(model) if tracker else None) if c)],
    )
    trainer.remove_callback(PrinterCallback)  # it prints the loss dicts on stdout; they go to the log anyway
    result = trainer.train()
    if tracker is not None:
        tracker.restore(model)
    ckpt = Path(args.output_dir)
    if distributed.world().is_main and ckpt.is_dir() and not any(ckpt.iterdir()):
        ckpt.rmdir()  # save_strategy="no" leaves the trainer's output_dir empty
    return training_summary(result, wall_s=time.perf_counter() - started, budget=budget) | {
        "distributed": distributed.describe(per_device=args.per_device_train_batch_size,
                                            accumulation=args.gradient_accumulation_steps)}
