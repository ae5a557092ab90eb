"""`r2r-synth optimize`: tune the teacher's prompt programs against human relevance labels.

The pipeline (`run_optimize`, in `command`):

1. **Labeled set** (`labeled`). Any input `generate` reads that comes with qrels becomes DSPy
   examples (`direct_examples`, `comparison_examples`).
2. **Split by query** (`split_by_query`): no query is on both sides. The optimizer never sees the
   validation queries: optimizers that select among candidates (random search, MIPROv2, GEPA) get a
   second by-query slice of the *training* queries.
3. **Before**: the current program (`programs/<name>.json` if present, else `prompts/<name>.md`) is
   scored on the validation split with every metric of `r2r_synth.metrics` (`scoring`).
4. **Optimize** with BootstrapFewShot (or random search), MIPROv2 or GEPA, within a budget
   (`optimizers`).
5. **Save** `programs/<name>.json` + `.meta.json` (`teacher.programs.save_program`), **reload** it
   the way `generate` will, and score the reloaded program on the same validation split (**after**).
6. **Report**: every metric before and after, the calls each phase cost and how many failed, the
   split, the hashes (`report`: `OptimizeReport`, saved as JSON).

Every teacher call goes through the command's `CallPolicy` (``--timeout``, ``--max-retries``). A
call that fails after its retries is counted and shown as failed, never scored as a wrong answer: the
example leaves the graded metrics and its query the ranking metrics (`scoring`). A phase whose every
call failed raises `TeacherError` (or the `CallFailed` of a bad key or an unknown model), and output
paths are checked before the first call.

`run_optimize(config, evaluate_only=True)` (the CLI's `--evaluate-only`) scores the current
programs (and, when they are optimized, the fresh prompt programs beside them) without changing
anything. The library returns data and never prints; the CLI renders the table.
"""

from r2r_synth.optimize.command import PRIMARY_METRIC, PROGRAM_CHOICES, Progress, run_optimize
from r2r_synth.optimize.labeled import (
    Split,
    build_labeled_set,
    comparison_examples,
    direct_examples,
    gold_qrels,
    labeled_set_hash,
    split_by_query,
)
from r2r_synth.optimize.optimizers import AUTO_PRESETS, OPTIMIZERS, compile_program
from r2r_synth.optimize.report import REPORT_FILE, OptimizeReport, ProgramReport
from r2r_synth.optimize.scoring import (
    COUNTS,
    CallCounter,
    evaluate_comparison,
    evaluate_direct,
    first_stage_direct,
)

__all__ = [
    "AUTO_PRESETS",
    "COUNTS",
    "OPTIMIZERS",
    "PRIMARY_METRIC",
    "PROGRAM_CHOICES",
    "REPORT_FILE",
    "CallCounter",
    "OptimizeReport",
    "ProgramReport",
    "Progress",
    "Split",
    "build_labeled_set",
    "comparison_examples",
    "compile_program",
    "direct_examples",
    "evaluate_comparison",
    "evaluate_direct",
    "first_stage_direct",
    "gold_qrels",
    "labeled_set_hash",
    "run_optimize",
    "split_by_query",
]
