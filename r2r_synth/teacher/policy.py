"""The one teacher-call policy: how every command that asks a teacher retries, gives up and reports.

`generate` (its engine), `optimize` and `evaluate --system teacher:...` all send their calls through a
`CallPolicy`: the engine wraps each LM call in `CallPolicy.acall`; DSPy code (optimizers, evaluation)
gets a `dspy.LM` whose engine does the same (`r2r_synth.teacher.lm`). So one set of rules holds
everywhere:

- **Transient failures are retried** with exponential backoff and full jitter (AWS's "Exponential
  Backoff And Jitter": a random delay in ``[0, min(cap, base * 2**retry)]``): 429, 408/409/425, every
  5xx, timeouts and connection errors, up to `max_retries` retries.
- **What no retry can fix stops at once**: a bad or missing key (401/403: ``auth``), a model or
  provider the backend does not know (404, LiteLLM's "LLM Provider NOT provided": ``config``). A
  request the backend refuses for itself (another 4xx, e.g. too long for the context) is
  ``refused``.
- **A failure is never an answer.** When the retries run out the call raises `CallFailed` with its
  `cause`; callers count it as failed, never as a wrong answer, and `CallFailed.retryable` tells a
  resumable run whether the next run should ask again (transport, auth, config and aborted
  failures: yes; a refused request: no).
- **Secrets never show**: every message is masked (`mask`) with the call's API key and every
  secret-looking environment variable before it is raised or logged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from r2r_synth.config import register_secret, scrub
from r2r_synth.errors import TeacherError
from r2r_synth.schemas import RETRYABLE_CAUSES

logger = logging.getLogger(__name__)

T = TypeVar("T")

Cause = Literal["transport", "auth", "config", "refused", "aborted"]

DEFAULT_MAX_RETRIES = 5
DEFAULT_TIMEOUT_S = 120.0
#: A CPU model under load can take minutes per reply; a shorter limit would only queue it again.
EMBEDDED_TIMEOUT_S = 600.0


class CallFailed(TeacherError):
    """A teacher call that produced no reply, after the policy's retries. `cause` says why:
    ``transport`` (429/5xx/timeouts/connection errors every time), ``auth`` (401/403),
    ``config`` (unknown model or provider), ``refused`` (another 4xx for this request alone), or
    ``aborted`` (the run stopped before the call got a reply)."""

    def __init__(self, message: str, *, cause: Cause, attempts: int, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.cause = cause
        self.attempts = attempts

    @property
    def retryable(self) -> bool:
        """True when the failure is not the teacher's answer, so a later run should ask again."""
        return self.cause in RETRYABLE_CAUSES


def _status_of(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def _classify_dspy(exc: BaseException) -> str | None:
    from dspy.utils import exceptions as dx

    if isinstance(exc, (dx.LMRateLimitError, dx.LMServerError, dx.LMTimeoutError, dx.LMTransportError)):
        return "retry"
    if isinstance(exc, (dx.LMAuthError, dx.LMBillingError)):
        return "auth"
    if isinstance(exc, (dx.LMInvalidRequestError, dx.ContextWindowExceededError)):
        return "refused"
    if isinstance(exc, dx.LMError):
        return "config"
    return None


#: A client that refused to send for want of a key (the OpenAI SDK: "Missing credentials. Please pass
#: an `api_key`..."; LiteLLM's providers: "Missing Anthropic API Key", "no key is set", ...).
_MISSING_KEY = re.compile(r"missing credentials|api_key client option must be set|missing [\w ]{0,30}api key"
                          r"|no (api )?key is set|api key (is )?(missing|not set|not provided)", re.IGNORECASE)


def classify(exc: BaseException) -> Literal["retry", "auth", "config", "refused"]:
    """What a failed call means: ``retry`` (transient), ``auth``, ``config`` or ``refused``.

    The chain of causes is read from the innermost out, so the provider's own error decides under
    DSPy's wrappers, and an httpx error decides over the httpcore error it was raised from."""
    if isinstance(exc, CallFailed):
        return "retry" if exc.cause in ("transport", "aborted") else exc.cause  # type: ignore[return-value]
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and all(cur is not seen for seen in chain):
        chain.append(cur)
        cur = cur.__cause__
    for link in reversed(chain):
        if isinstance(link, CallFailed):
            continue
        verdict = _verdict(link)
        if verdict is not None:
            return verdict
    dspy_verdict = _classify_dspy(exc)
    if dspy_verdict is not None:
        return dspy_verdict  # type: ignore[return-value]
    # An exception no provider mapping knows (a bug in a custom engine, an SDK change): not the
    # teacher's answer, and retrying blindly could hammer a server, so it stops the call as config.
    return "config"


def _verdict(exc: BaseException) -> Literal["retry", "auth", "config", "refused"] | None:
    """The verdict of one exception by its type, status code or message; None when none applies."""
    import httpx
    import litellm

    if isinstance(exc, (litellm.AuthenticationError, litellm.PermissionDeniedError)):
        return "auth"
    if _MISSING_KEY.search(str(exc)):
        # The OpenAI SDK's "Missing credentials" reaches us as LiteLLM's InternalServerError (500):
        # no retry brings a key into the environment.
        return "auth"
    if isinstance(exc, (litellm.Timeout, litellm.APIConnectionError, litellm.RateLimitError,
                        litellm.InternalServerError, litellm.ServiceUnavailableError, asyncio.TimeoutError,
                        TimeoutError, ConnectionError, httpx.TimeoutException, httpx.TransportError)):
        return "retry"
    status = _status_of(exc)
    if status in (408, 409, 425, 429) or (status is not None and status >= 500):
        return "retry"
    if status in (401, 403):
        return "auth"
    if isinstance(exc, litellm.NotFoundError) or status == 404 or "LLM Provider NOT provided" in str(exc):
        return "config"
    if isinstance(exc, litellm.BadRequestError) or (status is not None and 400 <= status < 500):
        return "refused"
    return None


_HINTS = {
    "auth": "check the API key: --api-key, or the provider's environment variable (e.g. OPENAI_API_KEY)",
    "config": "check --teacher (a LiteLLM model string such as gpt-4o, anthropic/claude-..., "
              "hosted_vllm/<name> with --api-base) and --api-base",
    "transport": "the teacher looks down or overloaded: check it, lower --concurrency, raise --max-retries "
                 "or --timeout, then rerun the same command",
    "refused": "the backend refused this request itself (e.g. longer than the model's context); "
               "see the message",
}


@dataclass(frozen=True)
class CallPolicy:
    """Retries, backoff, timeout and masking for teacher calls (see the module docstring).

    `timeout` is the per-request limit the transport enforces (seconds; None: the transport's own);
    `secrets` are masked in every message (the API key given on the command line; secret-looking
    environment variables are always masked). Creating a policy registers its secrets, so the CLI
    masks them in any error it prints."""

    max_retries: int = DEFAULT_MAX_RETRIES
    timeout: float | None = DEFAULT_TIMEOUT_S
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        for s in self.secrets:
            register_secret(s)

    def mask(self, text: str) -> str:
        """`text` with every known secret replaced by ``***``."""
        return scrub(text, list(self.secrets))

    def describe(self, exc: BaseException) -> str:
        """`Type: message` of a failure, masked and cut to one readable length."""
        return self.mask(f"{type(exc).__name__}: {exc}")[:500]

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1-based): full jitter."""
        return random.uniform(0.0, min(self.backoff_cap, self.backoff_base * 2 ** (retry - 1)))

    def _failed(self, exc: BaseException, verdict: str, attempts: int) -> CallFailed:
        msg = self.describe(exc)
        if verdict == "retry":
            return CallFailed(f"gave up after {attempts} attempts: {msg}", cause="transport", attempts=attempts,
                              hint=_HINTS["transport"])
        return CallFailed(msg, cause=verdict, attempts=attempts, hint=_HINTS[verdict])  # type: ignore[arg-type]

    def _after_failure(self, exc: BaseException, retry: int,
                       on_retry: Callable[[int, str], None] | None) -> float:
        """Raise `CallFailed` when `exc` ends the call; else count retry number `retry + 1` and
        return how long to wait before it."""
        verdict = classify(exc)
        if verdict != "retry" or retry >= self.max_retries:
            raise self._failed(exc, verdict, retry + 1) from None
        msg = self.describe(exc)
        if on_retry is not None:
            on_retry(retry + 1, msg)
        delay = self.backoff(retry + 1)
        logger.debug("retry %d in %.2fs after %s", retry + 1, delay, msg)
        return delay

    async def acall(self, fn: Callable[[], Awaitable[T]], *,
                    on_retry: Callable[[int, str], None] | None = None) -> T:
        """Await `fn()` under the policy. `on_retry(retry, message)` is called before each retry
        (the engine counts retries with it). Raises `CallFailed`; cancellation passes through."""
        retry = 0
        while True:
            try:
                return await fn()
            except (asyncio.CancelledError, CallFailed):
                raise
            except Exception as e:  # noqa: BLE001 - LiteLLM maps every provider error onto its exception classes
                delay = self._after_failure(e, retry, on_retry)
            retry += 1
            await asyncio.sleep(delay)

    def call(self, fn: Callable[[], T], *, on_retry: Callable[[int, str], None] | None = None) -> T:
        """`fn()` under the policy, for synchronous callers (DSPy's threads). See `acall`."""
        retry = 0
        while True:
            try:
                return fn()
            except CallFailed:
                raise
            except Exception as e:  # noqa: BLE001 - LiteLLM maps every provider error onto its exception classes
                delay = self._after_failure(e, retry, on_retry)
            retry += 1
            time.sleep(delay)


def command_policy(*, embedded: bool, timeout: float | None = None, max_retries: int | None = None,
                   api_key: str | None = None, backoff_base: float = 0.5, backoff_cap: float = 30.0) -> CallPolicy:
    """The policy of one command from its `--timeout`, `--max-retries` and `--api-key` (None: the
    defaults: 120 s per request, 600 s for the embedded teacher; 5 retries)."""
    return CallPolicy(
        max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
        timeout=timeout or (EMBEDDED_TIMEOUT_S if embedded else DEFAULT_TIMEOUT_S),
        backoff_base=backoff_base,
        backoff_cap=backoff_cap,
        secrets=(api_key,) if api_key else (),
    )


def call_failure(exc: BaseException) -> CallFailed | None:
    """The `CallFailed` behind `exc` (DSPy wraps what an engine raises in its own LM errors), or None
    when `exc` is not a failed call (e.g. an unparseable reply: that is the teacher's answer)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, CallFailed):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None
