"""The reasoning student's options: a pydantic model with every default, resolved from the command's
`TrainConfig` (knobs left None take the defaults; knobs of the cross-encoder are refused)."""

from __future__ import annotations

from typing import Any

from r2r_synth.config import EPOCHS_WITHOUT_HELDOUT, ReasoningOptions, TrainConfig
from r2r_synth.errors import ConfigError
from r2r_synth.student.base import refuse_knobs


def resolve_options(config: TrainConfig, *, base: str, n_params: int | None = None,
                    **overrides: Any) -> ReasoningOptions:
    """Map the command's `TrainConfig` onto the reasoning student's knobs (None -> defaults)."""
    if config.pointwise_weight:
        raise ConfigError(
            "--pointwise-weight does not apply to the reasoning student: its verdict token is learned by "
            "the generation loss",
            hint="drop --pointwise-weight, or set --generation-weight",
        )
    if config.labels not in ("teacher", "gold"):
        raise ConfigError(f"labels must be 'teacher' or 'gold'; got {config.labels!r}")
    defaults = ReasoningOptions.model_fields
    threshold = defaults["lora_threshold"].default
    lora = config.lora if config.lora is not None else bool(n_params and n_params > threshold)
    kw: dict[str, Any] = {
        "base": base,
        "lora": lora,
        "labels": config.labels,
        "epochs": EPOCHS_WITHOUT_HELDOUT if config.epochs is None else config.epochs,
        "max_steps": config.max_steps,
        "seed": config.seed,
        "device": config.device,
        "learning_rate": config.learning_rate or (2e-4 if lora else 5e-5),
    }
    refuse_knobs(config, ("encoder", "hard_negatives", "distill_weight", "temperature",
                          "lexical_weight", "start_epochs"), belongs_to="cross-encoder")
    for name in ("pairwise_weight", "listwise_weight", "generation_weight", "negatives", "batch_size",
                 "train_layers", "max_reason_tokens"):
        if getattr(config, name) is not None:
            kw[name] = getattr(config, name)
    if config.max_length is not None:
        kw["max_doc_tokens"] = config.max_length
    opts = ReasoningOptions(**(kw | overrides))
    if min(opts.pairwise_weight, opts.listwise_weight, opts.generation_weight) < 0:
        raise ConfigError("loss weights must be >= 0")
    if opts.pairwise_weight + opts.listwise_weight + opts.generation_weight == 0:
        raise ConfigError("all loss weights are 0: nothing to train", hint="set at least one weight above 0")
    return opts
