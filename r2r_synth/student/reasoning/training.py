"""`train_student` for the reasoning student: R2R's combined loss through `transformers.Trainer`."""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from r2r_synth.config import TrainConfig
from r2r_synth.errors import ConfigError
from r2r_synth.student import distributed
from r2r_synth.student.base import r2r_config, training_summary
from r2r_synth.student.corpus import TrainingView
from r2r_synth.student.losses import GenerationLoss, ListNetLoss, RankNetLoss
from r2r_synth.student.progress import phase, trainer_callback
from r2r_synth.student.reasoning.bases import DEFAULT_BASE_NAME, resolve_base
from r2r_synth.student.reasoning.data import GroupCollator, GroupDataset, groups_from_view
from r2r_synth.student.reasoning.model import KIND, ReasoningStudent, VerdictModel
from r2r_synth.student.reasoning.options import ReasoningOptions, resolve_options
from r2r_synth.student.reasoning.template import Encoder, Template

logger = logging.getLogger(__name__)


def _trainer_class():
    from transformers import Trainer

    class ReasoningTrainer(Trainer):
        """`Trainer` with R2R's combined loss: generation (verdict + reasoning tokens) plus RankNet on
        the teacher's preferences plus ListNet on the teacher's order, on the verdict log-odds."""

        def __init__(self, *args, opts: ReasoningOptions, **kwargs):
            super().__init__(*args, **kwargs)
            self.opts = opts
            self.ranknet = RankNetLoss()
            self.listnet = ListNetLoss(temperature=opts.listwise_temperature)
            self.generation = GenerationLoss()
            self.tokens_seen = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        verdict_index=inputs["verdict_index"], labels=inputs["labels"])
            self.tokens_seen += int(inputs["attention_mask"].sum())
            teacher, mask, vmask = inputs["teacher"], inputs["list_mask"], inputs["value_mask"]
            scores = torch.zeros(mask.shape, dtype=out["scores"].dtype, device=out["scores"].device)
            scores = scores.flatten().index_put((inputs["slot"],), out["scores"]).view(mask.shape)
            o = self.opts
            loss = scores.new_zeros(())
            parts = {}
            if o.generation_weight and out["gen_targets"].numel():
                parts["generation"] = self.generation(out["gen_logits"], out["gen_targets"])
            if o.pairwise_weight and inputs["prefer"].any():
                parts["pairwise"] = self.ranknet(scores, inputs["prefer"], mask)
            lists = vmask.sum(dim=1) >= 2
            if o.listwise_weight and lists.any():
                parts["listwise"] = self.listnet(scores[lists], teacher[lists], vmask[lists])
            weights = {"generation": o.generation_weight, "pairwise": o.pairwise_weight, "listwise": o.listwise_weight}
            for k, v in parts.items():
                loss = loss + weights[k] * v
            if not parts:
                loss = scores.sum() * 0.0  # a batch without any label: no update, but a valid graph
            self._last_parts = {k: float(v.detach()) for k, v in parts.items()}
            return (loss, out) if return_outputs else loss

        def log(self, logs, *args, **kwargs):
            if "loss" in logs:
                logs.update({f"loss_{k}": round(v, 4) for k, v in getattr(self, "_last_parts", {}).items()})
            super().log(logs, *args, **kwargs)

    return ReasoningTrainer


def _freeze_below(model: nn.Module, train_layers: int) -> None:
    """Leave only the top `train_layers` decoder blocks and the final norm trainable."""
    decoder = model.get_decoder()
    blocks = getattr(decoder, "layers", None)
    if blocks is None:
        raise ConfigError("train_layers needs a decoder with a `layers` list (Llama-style)",
                          hint="leave train_layers unset to train every weight")
    if not 1 <= train_layers <= len(blocks):
        raise ConfigError(f"--train-layers {train_layers} but the base has {len(blocks)} decoder blocks",
                          hint=f"use a value from 1 to {len(blocks)}, or leave it unset to train every weight")
    keep = {id(p) for b in list(blocks)[-train_layers:] for p in b.parameters()}
    keep |= {id(p) for p in getattr(decoder, "norm", nn.Identity()).parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)


def train_student(view: TrainingView, *, config: TrainConfig, out_dir: Path,
                  callbacks: list[Any] | None = None, **options: Any) -> ReasoningStudent:
    """Train a reasoning student on `view` and save it into `out_dir` (see `r2r_synth.student.reasoning`).

    `options` override `ReasoningOptions` fields that `TrainConfig` does not carry (e.g.
    `train_layers`, `max_reason_tokens`, `lora_r`). The saved directory holds the full model (LoRA
    merged), the tokenizer and `r2r_config.json` (`base.R2RConfig`: the resolved options, the template
    and what training measured, its loss log included)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments, set_seed

    out_dir = Path(out_dir)
    src = resolve_base(config.base)
    phase(f"loading the base model {src}")
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    opts = resolve_options(config, base=config.base or f"gguf:{DEFAULT_BASE_NAME}", n_params=n_params, **options)
    set_seed(opts.seed)
    template = Template.for_tokenizer(tok, max_query_tokens=opts.max_query_tokens,
                                      max_doc_tokens=opts.max_doc_tokens, max_reason_tokens=opts.max_reason_tokens)
    encoder = Encoder(tok, template)
    groups = groups_from_view(view, opts)  # no model involved: the same on every rank
    distributed.check_global_batch(len(groups), per_device=opts.batch_size)
    if opts.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha,
                                                 lora_dropout=opts.lora_dropout,
                                                 target_modules=opts.lora_target_modules, task_type="CAUSAL_LM"))
    elif opts.train_layers is not None:
        _freeze_below(model, opts.train_layers)
    wrapped = VerdictModel(model, yes_id=encoder.yes_id, no_id=encoder.no_id)
    pad = tok.pad_token_id if tok.pad_token_id is not None else encoder.eos_id
    dev = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args = TrainingArguments(
        output_dir=str(out_dir / "_trainer"),
        per_device_train_batch_size=opts.batch_size,
        num_train_epochs=opts.epochs,
        max_steps=opts.max_steps if opts.max_steps is not None else -1,
        learning_rate=opts.learning_rate,
        warmup_steps=opts.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=opts.weight_decay,
        lr_scheduler_type="linear",
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,  # the collator's list structure is not a model argument
        dataloader_num_workers=0,
        seed=opts.seed,
        use_cpu=dev == "cpu",
        disable_tqdm=True,  # library code does not print; progress goes through callbacks/logging
    )
    trainer = _trainer_class()(
        model=wrapped,
        args=args,
        train_dataset=GroupDataset(groups, negatives=opts.negatives, seed=opts.seed),
        data_collator=GroupCollator(encoder, pad_id=pad),
        callbacks=[trainer_callback(), *(callbacks or [])],
        opts=opts,
    )
    from transformers.trainer_callback import PrinterCallback, TrainerCallback

    class LogCallback(TrainerCallback):
        """Trainer logs go to `logging` (INFO), not stdout; a caller adds its own progress through `callbacks`."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            logger.info("step %d/%d %s", state.global_step, state.max_steps, logs)

    trainer.remove_callback(PrinterCallback)  # library code does not print
    trainer.add_callback(LogCallback())
    t0 = time.perf_counter()
    budget = None
    if config.max_minutes:
        from r2r_synth.student.budget import time_budget

        budget = time_budget(config.max_minutes, started=t0)
        trainer.add_callback(budget)
    result = trainer.train()
    wall = time.perf_counter() - t0
    model = wrapped.lm
    if opts.lora:
        model = model.merge_and_unload()  # plain weights: loads without peft
    model = model.to("cpu").eval()
    main = distributed.world().is_main
    if main:
        shutil.rmtree(out_dir / "_trainer", ignore_errors=True)  # Trainer's scratch dir; we save ourselves
    history = [h for h in trainer.state.log_history if "loss" in h]
    training = training_summary(result, wall_s=wall, budget=budget) | {
        "tokens": trainer.tokens_seen,
        "tokens_per_s": round(trainer.tokens_seen / wall, 1) if wall > 0 else None,
        "parameters": n_params,
        "queries": len(groups),
        "first_loss": history[0]["loss"] if history else None,
        "last_loss": history[-1]["loss"] if history else None,
        "log": history,
        "distributed": distributed.describe(per_device=opts.batch_size),
    }
    meta = r2r_config(KIND, base=opts.base, options=opts, config=config, view=view, training=training)
    student = ReasoningStudent(model, tok, template, meta=meta)
    if not main:
        return student  # one writer (rank 0); DDP kept every rank's weights the same
    out_dir.mkdir(parents=True, exist_ok=True)
    phase(f"saving the model to {out_dir}")
    student.save(out_dir)
    if not math.isfinite(result.training_loss):
        logger.warning("training loss is not finite (%s); lower --learning-rate", result.training_loss)
    return ReasoningStudent.load(out_dir, device=opts.device)
