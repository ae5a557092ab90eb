"""The one teacher-call policy on its own: what it retries, what it stops at, what it masks, and the
same verdicts whether LiteLLM's exception arrives bare (generate's engine) or wrapped by DSPy (optimize,
evaluate)."""

from __future__ import annotations

import asyncio

import httpx
import litellm
import pytest

from r2r_synth.config import scrub
from r2r_synth.teacher.policy import CallFailed, CallPolicy, call_failure, classify

FAST = {"backoff_base": 0.001, "backoff_cap": 0.002}


def _err(cls, status: int, message: str = "boom"):
    resp = httpx.Response(status, request=httpx.Request("POST", "http://x/v1/chat/completions"))
    if cls is litellm.BadRequestError:
        return cls(message, model="m", llm_provider="openai", response=resp)
    return cls(message, llm_provider="openai", model="m", response=resp)


@pytest.mark.parametrize(("exc", "verdict"), [
    (_err(litellm.RateLimitError, 429), "retry"),
    (_err(litellm.InternalServerError, 500), "retry"),
    (litellm.Timeout("slow", model="m", llm_provider="openai"), "retry"),
    (httpx.ConnectError("refused"), "retry"),
    (_err(litellm.AuthenticationError, 401), "auth"),
    (_err(litellm.NotFoundError, 404), "config"),
    (_err(litellm.BadRequestError, 400, "context length exceeded"), "refused"),
    (litellm.BadRequestError("LLM Provider NOT provided", model="m", llm_provider=""), "config"),
])
def test_verdicts_bare_and_wrapped_by_dspy(exc, verdict):
    from dspy.utils.exceptions import LMUnexpectedError

    assert classify(exc) == verdict
    try:
        raise LMUnexpectedError("[m] wrapped") from exc
    except LMUnexpectedError as wrapped:
        assert classify(wrapped) == verdict


def test_transient_failures_are_retried_then_the_answer_returned():
    seen = []
    failures = [_err(litellm.RateLimitError, 429), _err(litellm.InternalServerError, 503)]

    def call():
        if failures:
            raise failures.pop(0)
        return "answer"

    out = CallPolicy(max_retries=2, **FAST).call(call, on_retry=lambda n, msg: seen.append(n))
    assert out == "answer" and seen == [1, 2]


def test_retries_run_out_as_a_transport_failure_with_its_attempts():
    async def call():
        raise _err(litellm.RateLimitError, 429)

    with pytest.raises(CallFailed, match="gave up after 3 attempts") as ei:
        asyncio.run(CallPolicy(max_retries=2, **FAST).acall(call))
    assert ei.value.cause == "transport" and ei.value.attempts == 3 and ei.value.retryable


def test_a_bad_key_stops_at_once_and_is_masked():
    key = "sk-secret-abcdef0123456789"
    calls = []

    def call():
        calls.append(1)
        raise _err(litellm.AuthenticationError, 401, f"Incorrect API key provided: {key}")

    with pytest.raises(CallFailed, match=r"Incorrect API key provided: \*\*\*") as ei:
        CallPolicy(max_retries=5, secrets=(key,), **FAST).call(call)
    assert len(calls) == 1 and ei.value.cause == "auth" and ei.value.retryable
    assert key not in str(ei.value) and scrub(f"later {key}") == "later ***"  # registered for the CLI too


def test_a_refused_request_is_the_final_answer_and_call_failure_finds_it_under_wrappers():
    def call():
        raise _err(litellm.BadRequestError, 400, "too long")

    with pytest.raises(CallFailed) as ei:
        CallPolicy(**FAST).call(call)
    assert ei.value.cause == "refused" and not ei.value.retryable
    try:
        raise RuntimeError("dspy says") from ei.value
    except RuntimeError as wrapped:
        assert call_failure(wrapped) is ei.value
    assert call_failure(ValueError("an unparseable reply")) is None
