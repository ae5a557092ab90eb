"""`run_optimize`: the command behind `r2r-synth optimize` (see the package docstring for the steps)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dspy

from r2r_synth.atomic import check_dir_target, check_file_target, write_json_atomic
from r2r_synth.config import OptimizeConfig
from r2r_synth.errors import ConfigError, InputError, TeacherError
from r2r_synth.optimize.labeled import DEFAULT_VAL_FRACTION, Split, build_labeled_set, gold_qrels
from r2r_synth.optimize.optimizers import AUTO_PRESETS, OPTIMIZERS, compile_program
from r2r_synth.optimize.report import REPORT_FILE, OptimizeReport, ProgramReport, nan_to_none
from r2r_synth.optimize.scoring import (
    CallCounter,
    delta,
    evaluate_comparison,
    evaluate_direct,
    evaluate_listwise,
    first_stage_direct,
)
from r2r_synth.schemas import Candidates, utcnow
from r2r_synth.teacher.policy import call_failure

logger = logging.getLogger(__name__)

PROGRAM_CHOICES = ("direct", "comparison", "listwise", "both")
PRIMARY_METRIC = {"direct": "metric", "comparison": "preference_accuracy", "listwise": "nDCG@10"}

Progress = Callable[[str], None]


# --------------------------------------------------------------------------- checks (before any call)


def _program_names(program: str) -> list[str]:
    if program not in PROGRAM_CHOICES:
        raise ConfigError(f"unknown --program {program!r}", hint=f"choose one of {', '.join(PROGRAM_CHOICES)}")
    return ["direct", "comparison"] if program == "both" else [program]


def _validate(cfg: OptimizeConfig) -> None:
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown --optimizer {cfg.optimizer!r}", hint=f"choose one of {', '.join(OPTIMIZERS)}")
    if cfg.auto is not None and cfg.auto not in AUTO_PRESETS:
        raise ConfigError(f"unknown --auto {cfg.auto!r}", hint=f"choose one of {', '.join(AUTO_PRESETS)}")
    if cfg.auto is not None and cfg.max_calls is not None:
        raise ConfigError("--auto and --max-calls both set the budget", hint="give one of them")
    if cfg.auto is not None and cfg.optimizer == "bootstrap":
        raise ConfigError("--auto is a preset of mipro and gepa, not of bootstrap",
                          hint="use --max-calls (and --candidates for random search) with bootstrap")
    if cfg.max_calls is not None and cfg.max_calls < 1:
        raise ConfigError(f"--max-calls must be at least 1, not {cfg.max_calls}", hint="e.g. --max-calls 50")
    _program_names(cfg.program)
    # Where the programs and the report go, checked before the first call rather than after the
    # calls were spent.
    check_dir_target(cfg.programs_dir, what="--programs-dir")
    if cfg.report is not None:
        check_file_target(cfg.report, what="--report")


def resolved_val_fraction(cfg: OptimizeConfig) -> float:
    """`--val-fraction`, or its default: 0.25 to optimize; 1.0 (no training split) to evaluate only."""
    if cfg.val_fraction is not None:
        return cfg.val_fraction
    return 1.0 if cfg.evaluate_only else DEFAULT_VAL_FRACTION


# --------------------------------------------------------------------------- the command


def run_optimize(
    config: OptimizeConfig,
    *,
    candidates: Sequence[Candidates] | None = None,
    lm: Any = None,
    adapter: Any = None,
    prompt_lm: Any = None,
    progress: Progress | None = None,
) -> OptimizeReport:
    """Optimize (or with ``config.evaluate_only`` just score) the teacher programs; see the package doc.

    `candidates` defaults to ``load_candidates(config.input, ...)``. `lm`/`adapter` default to the
    teacher opened from ``config.teacher`` (the embedded one when None) and `prompt_lm` to
    ``config.prompt_model`` (else the teacher), both under the command's `CallPolicy`
    (``--timeout``, ``--max-retries``); pass them to drive the optimizer with any `dspy.LM` (e.g.
    DSPy's `DummyLM` in tests: only an LM built by `r2r_synth.teacher.lm` tells a failed call from a
    bad reply). Writes the programs (unless evaluating only) and the report.
    """
    from r2r_synth.teacher.lm import make_teacher, open_teacher
    from r2r_synth.teacher.policy import command_policy

    cfg = config
    _validate(cfg)
    say = progress or (lambda msg: logger.info(msg))
    if candidates is None:
        from r2r_synth.io.candidates import load_candidates

        say(f"loading {cfg.input}")
        candidates = load_candidates(cfg.input, qrels=cfg.qrels, limit=cfg.limit, depth=cfg.depth,
                                     split=cfg.split)
    examples, split, summary = build_labeled_set(
        candidates, seed=cfg.seed, val_fraction=resolved_val_fraction(cfg),
        max_pairs_per_query=cfg.max_pairs_per_query,
    )
    run = _Run(cfg, examples, split, summary, gold_qrels(candidates), say=say)
    if lm is not None:
        return run(lm=lm, adapter=adapter, prompt_lm=prompt_lm, teacher_name=getattr(lm, "model", "custom"),
                   prompt_name=getattr(prompt_lm, "model", None))
    from r2r_synth.teacher.preflight import preflight

    say("starting the embedded teacher (SmolLM2-135M under llama.cpp)" if cfg.teacher is None
        else f"opening the teacher {cfg.teacher}: checking its key and endpoint")
    policy = command_policy(embedded=cfg.teacher is None, timeout=cfg.timeout, max_retries=cfg.max_retries,
                            api_key=cfg.api_key)
    with open_teacher(cfg.teacher, api_base=cfg.api_base, api_key=cfg.api_key, temperature=cfg.temperature,
                      max_tokens=cfg.max_tokens, policy=policy) as teacher:
        say(f"preflight: {preflight(teacher).describe()}")
        task_lm = teacher.lm
        if cfg.cache:
            # DSPy's request cache: rerunning the same optimization (or the before-evaluation of
            # the next one) costs no calls. generate keeps its own content-addressed cache.
            try:
                task_lm = task_lm.copy(cache=True)
            except (TypeError, ValueError) as e:
                logger.warning("the teacher LM cannot cache (%s); every call goes out", e)
        p_lm, p_name = task_lm, None
        if cfg.prompt_model:
            p_policy = command_policy(embedded=False, timeout=cfg.timeout, max_retries=cfg.max_retries,
                                      api_key=cfg.api_key)
            pt = make_teacher(cfg.prompt_model, api_base=cfg.prompt_api_base, temperature=1.0,
                              max_tokens=cfg.max_tokens, policy=p_policy)
            say(f"preflight of the prompt model: {preflight(pt).describe()}")
            p_lm, p_name = pt.lm, pt.name
        return run(lm=task_lm, adapter=teacher.adapter, prompt_lm=p_lm, teacher_name=teacher.name,
                   prompt_name=p_name)


class _Run:
    """One optimize run over its labeled set: per program, score / optimize / save / score again,
    with the calls (and failed calls) of each phase counted."""

    def __init__(self, cfg: OptimizeConfig, examples: dict[str, list[dspy.Example]], split: Split,
                 summary: dict[str, Any], qrels: dict[str, dict[str, int]], *, say: Progress):
        self.cfg, self.examples, self.split, self.summary, self.qrels, self.say = (
            cfg, examples, split, summary, qrels, say)

    def __call__(self, *, lm: Any, adapter: Any, prompt_lm: Any, teacher_name: str,
                 prompt_name: str | None) -> OptimizeReport:
        cfg = self.cfg
        self.lm, self.prompt_lm = lm, prompt_lm if prompt_lm is not None else lm
        self.teacher_name, self.prompt_name = teacher_name, prompt_name
        self.counter = CallCounter(self.prompt_lm if self.prompt_lm is not lm else None)
        reports: dict[str, ProgramReport] = {}
        with dspy.context(lm=lm, adapter=adapter, callbacks=[self.counter]):
            for name in _program_names(cfg.program):
                train, val = self._split(name)
                if not val or (not train and not cfg.evaluate_only):
                    raise InputError(
                        f"the {name} labeled set has {len(train)} training and {len(val)} validation examples",
                        hint=("optimizing needs training queries: lower --val-fraction, or " if not train and val
                              else "") + "raise --limit or --depth (comparison needs two judged candidates of "
                        "different grades in a query, listwise a relevant judged one among its top --depth)",
                    )
                one = self._evaluate_only if cfg.evaluate_only else self._optimize
                reports[name] = one(name, train, val)
        report = OptimizeReport(
            evaluate_only=cfg.evaluate_only,
            optimizer=None if cfg.evaluate_only else cfg.optimizer,
            teacher=teacher_name,
            prompt_model=None if cfg.evaluate_only else (prompt_name or teacher_name),
            labeled_set=self.summary,
            split=self.split.summary(),
            programs=reports,
            config={**cfg.public_dict(), "val_fraction": resolved_val_fraction(cfg)},
            dspy_version=dspy.__version__,
            created_at=utcnow().isoformat(),
        )
        # --evaluate-only changes nothing unless asked: its report is written only to --report.
        report.path = cfg.report if cfg.evaluate_only else cfg.report or Path(cfg.programs_dir) / REPORT_FILE
        if report.path is not None:
            write_json_atomic(report.path, report.to_dict())
        return report

    def _split(self, name: str) -> tuple[list[dspy.Example], list[dspy.Example]]:
        """The training and validation examples of program `name`. `--evaluate-only` without
        `--val-fraction` validates on every labeled query the current program was not trained on (its
        `.meta.json` names them; all queries for a prompt program)."""
        examples = self.examples[name]
        if not (self.cfg.evaluate_only and self.cfg.val_fraction is None):
            return self.split.of(examples)
        from r2r_synth.teacher.programs import load_program

        trained = set((load_program(name, programs_dir=self.cfg.programs_dir).meta.get("split") or {})
                      .get("train_qids") or [])
        return [e for e in examples if e.qid in trained], [e for e in examples if e.qid not in trained]

    # ------------------------------------------------------------------ phases

    def _phase(self, calls: dict[str, Any], failed: dict[str, int], phase: str, fn: Callable[[], Any]) -> Any:
        """Run `fn`, and book what it cost under `phase`: teacher calls (and the prompt model's, for
        the optimizer) and the calls that failed after their retries."""
        c0 = self.counter.snapshot()
        out = fn()
        d = delta(self.counter.snapshot(), c0)
        calls[phase] = ({"teacher": d["teacher"], "prompt_model": d["prompt_model"]} if phase == "optimize"
                        else d["teacher"])
        failed[phase] = d["teacher_failed"] + d["prompt_model_failed"]
        return out

    def _score(self, name: str, module: dspy.Module, val: list[dspy.Example]) -> dict[str, float]:
        if name == "direct":
            return evaluate_direct(module, val, qrels=self.qrels, num_threads=self.cfg.concurrency)
        if name == "listwise":
            return evaluate_listwise(module, val, num_threads=self.cfg.concurrency)
        return evaluate_comparison(module, val, swap=self.cfg.swap, num_threads=self.cfg.concurrency)

    def _first_stage(self, name: str, val: list[dspy.Example]) -> dict[str, float] | None:
        """The first stage's ranking metrics on the same validation examples (direct, listwise)."""
        if name == "direct":
            return first_stage_direct(val, qrels=self.qrels)
        if name == "listwise":
            from r2r_synth.optimize.listwise import first_stage_listwise

            return first_stage_listwise(val)
        return None

    def _evaluate_only(self, name: str, train: list[dspy.Example], val: list[dspy.Example]) -> ProgramReport:
        from r2r_synth.teacher.programs import build_program, load_program, program_hash

        cfg, t0 = self.cfg, time.perf_counter()
        current = load_program(name, programs_dir=cfg.programs_dir)
        before_module = build_program(name) if current.optimized else current.module
        calls: dict[str, Any] = {}
        failed: dict[str, int] = {}
        if current.optimized:
            self.say(f"{name}: scoring the fresh prompt program on {len(val)} validation examples")
            before = self._phase(calls, failed, "evaluate_fresh", lambda: self._score(name, before_module, val))
            self.say(f"{name}: scoring {current.path} on {len(val)} validation examples")
            after = self._phase(calls, failed, "evaluate_current", lambda: self._score(name, current.module, val))
        else:
            self.say(f"{name}: scoring the prompt program (no {name}.json in {cfg.programs_dir})")
            before = self._phase(calls, failed, "evaluate_current", lambda: self._score(name, current.module, val))
            after = None
        return ProgramReport(
            name=name, before=before, after=after,
            first_stage=self._first_stage(name, val),
            primary_metric=PRIMARY_METRIC[name], calls=calls, failed_calls=failed,
            program_hash_before=program_hash(before_module),
            program_hash_after=current.program_hash if current.optimized else None,
            path=str(current.path) if current.path else None, train_examples=len(train),
            val_examples=len(val), demos=len(current.predictor.demos),
            wall_s=round(time.perf_counter() - t0, 2),
        )

    def _compile(self, name: str, start: dspy.Module, train: list[dspy.Example]) -> tuple[dspy.Module, dict]:
        """The optimizer's run; a failed call that stops it, or one that leaves it nothing to learn
        from (every call failed), is a `TeacherError` (or the `CallFailed` of a bad key / model)
        before anything is saved."""
        cfg = self.cfg
        c0 = self.counter.snapshot()
        try:
            out = compile_program(name, start, trainset=train, config=cfg, lm=self.lm, prompt_lm=self.prompt_lm)
        except Exception as e:  # DSPy re-raises the failure that stopped it, wrapped
            cf = call_failure(e)
            if cf is None:
                raise
            if cf.cause in ("auth", "config"):
                raise cf from None
            raise TeacherError(f"{name}: the {cfg.optimizer} optimizer stopped on a teacher call that failed after "
                               f"its retries; {cfg.programs_dir / f'{name}.json'} is unchanged. {cf.message}",
                               hint=cf.hint) from None
        d = delta(self.counter.snapshot(), c0)
        if d["teacher"] and d["teacher_failed"] == d["teacher"]:
            raise TeacherError(f"{name}: every one of the {d['teacher']} teacher calls of the {cfg.optimizer} "
                               f"optimizer failed after its retries; nothing was learned and "
                               f"{cfg.programs_dir / f'{name}.json'} is unchanged",
                               hint="check the teacher (see the warnings above), then rerun the same command")
        return out

    def _optimize(self, name: str, train: list[dspy.Example], val: list[dspy.Example]) -> ProgramReport:
        from r2r_synth.teacher.programs import build_program, load_program, save_program

        cfg, t0 = self.cfg, time.perf_counter()
        current = load_program(name, programs_dir=cfg.programs_dir)
        # Optimize from the human prompt, not from a previous optimization's demos: each run is
        # reproducible from prompts/ + the labeled set, and "before" is the program generate would
        # use right now.
        start = build_program(name)
        calls: dict[str, Any] = {}
        failed: dict[str, int] = {}
        self.say(f"{name}: scoring the current program on {len(val)} validation examples (before)")
        before = self._phase(calls, failed, "evaluate_before", lambda: self._score(name, current.module, val))
        self.say(f"{name}: {cfg.optimizer} on {len(train)} training examples")
        compiled, settings = self._phase(calls, failed, "optimize", lambda: self._compile(name, start, train))
        meta = {
            "optimizer": cfg.optimizer,
            "optimizer_settings": settings,
            "teacher": self.teacher_name,
            "prompt_model": self.prompt_name or self.teacher_name,
            "labeled_set": {**self.summary, "program": name, "train_examples": len(train), "val_examples": len(val)},
            "split": self.split.summary(),
            "metric": PRIMARY_METRIC[name],
            "metric_before": nan_to_none(before),
            "program_hash_before": current.program_hash,
            "config": cfg.public_dict(),
        }
        path = save_program(compiled, name, programs_dir=cfg.programs_dir, meta=meta)
        # Score what generate will load, not the object in memory: this is also the round trip.
        saved = load_program(name, programs_dir=cfg.programs_dir)
        self.say(f"{name}: scoring the optimized program on {len(val)} validation examples (after)")
        after = self._phase(calls, failed, "evaluate_after", lambda: self._score(name, saved.module, val))
        # The meta file also carries the after-metric, so a program explains itself.
        meta_path = path.with_name(f"{name}.meta.json")
        full_meta = json.loads(meta_path.read_text(encoding="utf-8"))
        full_meta.update(metric_after=nan_to_none(after), calls=calls, failed_calls=failed)
        write_json_atomic(meta_path, full_meta)
        report = ProgramReport(
            name=name, before=before, after=after,
            first_stage=self._first_stage(name, val),
            primary_metric=PRIMARY_METRIC[name], calls=calls, failed_calls=failed,
            program_hash_before=current.program_hash, program_hash_after=saved.program_hash, path=str(path),
            train_examples=len(train), val_examples=len(val), demos=len(saved.predictor.demos),
            instructions_changed=saved.predictor.signature.instructions
            != start.predictors()[0].signature.instructions,
            optimizer_settings=settings, wall_s=round(time.perf_counter() - t0, 2),
        )
        if not report.improved:
            metric = PRIMARY_METRIC[name]
            logger.warning("%s: the validation %s went from %.3f to %.3f", name, metric, before[metric], after[metric])
        return report
