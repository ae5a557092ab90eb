"""The optimizers `optimize` drives: BootstrapFewShot (random search with ``--candidates``), MIPROv2
and GEPA, each fitted to a budget of teacher calls (``--max-calls``) or a preset (``--auto``).

They see the training examples only. Within their own search DSPy scores a program that raised
(e.g. a call that failed after the policy's retries) with its failure score, 0; the before/after
scoring of the report never does (`r2r_synth.optimize.scoring`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import dspy

from r2r_synth import metrics as M
from r2r_synth.config import OptimizeConfig
from r2r_synth.errors import ConfigError
from r2r_synth.optimize.labeled import train_dev

logger = logging.getLogger(__name__)

OPTIMIZERS = ("bootstrap", "mipro", "gepa")
AUTO_PRESETS = ("light", "medium", "heavy")


def _metric_for(name: str) -> Callable[..., Any]:
    from r2r_synth.optimize.listwise import listwise_metric

    return {"direct": M.direct_metric, "comparison": M.comparison_metric, "listwise": listwise_metric}[name]


def _feedback_metric_for(name: str) -> Callable[..., Any]:
    from r2r_synth.optimize.listwise import listwise_feedback_metric

    return {"direct": M.direct_feedback_metric, "comparison": M.comparison_feedback_metric,
            "listwise": listwise_feedback_metric}[name]


def _bootstrap(module: dspy.Module, train: list[dspy.Example], *, metric: Callable[..., Any],
               cfg: OptimizeConfig) -> tuple[dspy.Module, dict[str, Any]]:
    inner, dev = train_dev(train, seed=cfg.seed)
    per_candidate = len(inner) + len(dev)
    candidates = cfg.candidates
    settings: dict[str, Any] = {}
    if candidates and cfg.max_calls is not None:
        # Random search: zero-shot and labeled-only cost one dev evaluation each, every other
        # candidate one bootstrap pass plus one dev evaluation.
        affordable = (cfg.max_calls - 2 * len(dev)) // max(1, per_candidate) - 1
        candidates = max(0, min(candidates, affordable))
        if candidates < cfg.candidates:
            logger.warning("--max-calls %d affords %d random-search candidates, not %d",
                           cfg.max_calls, candidates, cfg.candidates)
    if candidates > 0:
        opt = dspy.BootstrapFewShotWithRandomSearch(
            metric=metric, max_bootstrapped_demos=cfg.max_demos, max_labeled_demos=cfg.labeled_demos,
            num_candidate_programs=candidates, num_threads=cfg.concurrency,
        )
        settings.update(kind="BootstrapFewShotWithRandomSearch", num_candidate_programs=candidates,
                        train_examples=len(inner), dev_examples=len(dev))
        compiled = opt.compile(module, trainset=inner, valset=dev)
    else:
        if cfg.max_calls is not None:
            # One call per training example at most (max_rounds=1), and bootstrapping stops as
            # soon as max_demos demos passed the strict metric.
            train = train[: cfg.max_calls]
        opt = dspy.BootstrapFewShot(
            metric=metric, max_bootstrapped_demos=cfg.max_demos, max_labeled_demos=cfg.labeled_demos,
            max_rounds=1,
        )
        settings.update(kind="BootstrapFewShot", train_examples=len(train))
        compiled = opt.compile(module, trainset=train)
    settings.update(max_bootstrapped_demos=cfg.max_demos, max_labeled_demos=cfg.labeled_demos)
    return compiled, settings


def _mipro(module: dspy.Module, train: list[dspy.Example], *, metric: Callable[..., Any], cfg: OptimizeConfig,
           lm: Any, prompt_lm: Any) -> tuple[dspy.Module, dict[str, Any]]:
    inner, dev = train_dev(train, seed=cfg.seed)
    kwargs: dict[str, Any] = {}
    compile_kwargs: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    if cfg.max_calls is not None:
        # Budget -> explicit settings: bootstrapping costs up to n x |train| teacher calls, each
        # trial one full evaluation of the dev slice (no minibatches on small sets).
        n = 3
        trials = max(1, (cfg.max_calls - n * len(inner)) // max(1, len(dev)))
        kwargs.update(auto=None, num_candidates=n)
        compile_kwargs.update(num_trials=trials, minibatch=False)
        settings.update(num_candidates=n, num_trials=trials)
    else:
        kwargs.update(auto=cfg.auto or "light")
        compile_kwargs.update(minibatch_size=min(35, len(dev)))
        settings.update(auto=kwargs["auto"])
    opt = dspy.MIPROv2(
        metric=metric, prompt_model=prompt_lm, task_model=lm, max_bootstrapped_demos=cfg.max_demos,
        max_labeled_demos=cfg.labeled_demos, num_threads=cfg.concurrency, seed=cfg.seed, verbose=False,
        track_stats=False, **kwargs,
    )
    settings.update(kind="MIPROv2", train_examples=len(inner), dev_examples=len(dev),
                    max_bootstrapped_demos=cfg.max_demos, max_labeled_demos=cfg.labeled_demos)
    return opt.compile(module, trainset=inner, valset=dev, **compile_kwargs), settings


def _gepa(module: dspy.Module, train: list[dspy.Example], *, name: str, cfg: OptimizeConfig,
          prompt_lm: Any) -> tuple[dspy.Module, dict[str, Any]]:
    inner, dev = train_dev(train, seed=cfg.seed)
    budget = {"max_metric_calls": cfg.max_calls} if cfg.max_calls is not None else {"auto": cfg.auto or "light"}
    opt = dspy.GEPA(
        metric=_feedback_metric_for(name), reflection_lm=prompt_lm, num_threads=cfg.concurrency,
        seed=cfg.seed, track_stats=False, **budget,
    )
    settings = {"kind": "GEPA", "train_examples": len(inner), "dev_examples": len(dev), **budget}
    return opt.compile(module, trainset=inner, valset=dev), settings


def compile_program(
    name: str,
    module: dspy.Module,
    *,
    trainset: list[dspy.Example],
    config: OptimizeConfig,
    lm: Any,
    prompt_lm: Any,
) -> tuple[dspy.Module, dict[str, Any]]:
    """Run the configured optimizer on `module` with `trainset` (validation examples never come
    here). Returns the compiled module and the optimizer settings actually used (for the meta file).
    The teacher LM and adapter come from the surrounding `dspy.context`."""
    cfg = config
    train = list(trainset)
    # BootstrapFewShot walks the trainset in order: shuffle so demos do not all come from one query.
    random.Random(cfg.seed).shuffle(train)
    if cfg.optimizer == "bootstrap":
        compiled, settings = _bootstrap(module, train, metric=_metric_for(name), cfg=cfg)
    elif cfg.optimizer == "mipro":
        compiled, settings = _mipro(module, train, metric=_metric_for(name), cfg=cfg, lm=lm, prompt_lm=prompt_lm)
    elif cfg.optimizer == "gepa":
        compiled, settings = _gepa(module, train, name=name, cfg=cfg, prompt_lm=prompt_lm)
    else:
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r}", hint=f"choose one of {', '.join(OPTIMIZERS)}")
    return compiled, {"optimizer": cfg.optimizer, **settings}
