"""`r2r-synth generate`: candidates -> a run directory of validated teacher reasoning.

- `jobs`: what a run asks (one `Job` per content-addressed request key) and the inputs it reads;
- `prompts`: the messages each request sends, formatted by the program's DSPy adapter;
- `engine`: asks concurrently under the teacher's call policy, pacing and budget, and writes each
  record or reject as it completes;
- `run`: one session: checks, the lock, the resume rule, the manifest (`generate`);
- `batch`, `batch_api`: `--batch` (a provider's batch API through LiteLLM), `--export-batch` and
  `--import-batch` (batch files for vLLM's run_batch): the same engine, a different transport;
- `ray_runner`, `ray_cluster`: `--ray`: the same requests as a Ray Data dataset asked by Ray Data LLM (an
  endpoint, or vLLM engines the cluster hosts), rounds parsed by the same engine, this process the one
  writer;
- `estimate`: `--dry-run` (with a batch plan under `--batch`);
- `merge`: shards of one job -> one run directory (`merge_runs`).

Runs are content-addressed and resumable: the key of a request is a hash of its inputs, program and
teacher, so a rerun of the same command skips what is done and never bills a finished request
twice (see `r2r_synth.rundir` for the resume rule).
"""

from r2r_synth.generate.engine import Progress, RateLimiter
from r2r_synth.generate.estimate import DryRunEstimate
from r2r_synth.generate.jobs import build_jobs, load_inputs
from r2r_synth.generate.merge import merge_runs
from r2r_synth.generate.run import GenerateResult, generate

__all__ = [
    "DryRunEstimate",
    "GenerateResult",
    "Progress",
    "RateLimiter",
    "build_jobs",
    "generate",
    "load_inputs",
    "merge_runs",
]
