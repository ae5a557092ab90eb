"""The few exceptions r2r-synth raises. Library code raises; only `cli.main` prints and exits.

Every message says what happened, what was expected, and the fix (the `hf` CLI's `_errors.py`
and DSPy's `predict.py` are the models).
"""

from __future__ import annotations


class R2RError(Exception):
    """Base class. `exit_code` is what the CLI exits with; `hint` is the fix, shown on its own line."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  fix: {self.hint}"


class InputError(R2RError):
    """Bad user input: a malformed file or line, a bad flag value, a missing path. Exit code 2."""

    exit_code = 2


class ConfigError(InputError):
    """A configuration that cannot work (incompatible flags, an unknown teacher, a bad router file)."""


class TeacherError(R2RError):
    """The teacher could not be reached or keeps failing after its retries (not a single bad reply:
    those become rejects)."""


class ProviderUsageError(TeacherError):
    """A reply whose token usage cannot be true (more cached input tokens than input tokens): a
    provider or proxy bug. The reply is not kept and the run stops, since every figure priced from
    it would be wrong. Exit code 2."""

    exit_code = 2


class IncompleteRun(R2RError):
    """A run ended with requests that got no answer (transport, key or configuration failures after
    their retries). They are in rejects.jsonl as retryable: rerunning the same command asks them
    again. Exit code 4."""

    exit_code = 4


class BudgetExceeded(R2RError):
    """`--max-cost` was reached. The run stopped cleanly; rerunning with a larger budget resumes it."""

    exit_code = 3


class BatchPending(R2RError):
    """`generate --batch` submitted requests, or found them still running, in provider batches (the
    manifest says `pending`). Rerun the same command later to collect them: it submits nothing twice.
    Exit code 5."""

    exit_code = 5
