"""The reasoning student's options: a pydantic model with every default, resolved from the command's
`TrainConfig` (knobs left None take the defaults; knobs of the cross-encoder are refused)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from r2r_synth.config import EPOCHS_WITHOUT_HELDOUT, TrainConfig
from r2r_synth.errors import ConfigError
from r2r_synth.student.base import refuse_knobs


class ReasoningOptions(BaseModel):
    """Everything the reasoning student's training resolved to; saved in `r2r_config.json`."""

    model_config = ConfigDict(extra="forbid")

    base: str
    lora: bool
    lora_threshold: int = 1_000_000_000
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    pairwise_weight: float = 0.4
    listwise_weight: float = 0.4
    generation_weight: float = 0.2
    listwise_temperature: float = 0.25
    labels: str = "teacher"
    #: R2R's lists are 5 BM25 passages with one answer as a rule: the teacher's top quarter (at
    #: least one) gets the verdict "yes" where no graded label exists.
    yes_top_fraction: float = 0.25
    negatives: int = 2
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 1  # queries per device per step (each brings all its documents)
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    seed: int = 42
    max_query_tokens: int = 64
    max_doc_tokens: int = 192
    max_reason_tokens: int = 96
    #: Train only the top N transformer blocks (and the final norm); None = every weight. A knob for
    #: small CPU budgets: frozen lower blocks need no backward pass and no optimizer state.
    train_layers: int | None = None
    device: str | None = None


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
