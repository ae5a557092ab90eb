"""Preflight: a missing key, a wrong key and a dead endpoint are configuration errors (exit 2) found
before the first request, with nothing written; against the real loopback server (`guard_models`:
its /models checks the key as OpenAI's and vLLM's do) and a port nobody listens on."""

from __future__ import annotations

import socket
import sys

import litellm
import pytest
from openai_server import OpenAIServer
from test_generate import SAMPLE

from r2r_synth.errors import ConfigError
from r2r_synth.teacher.lm import make_teacher
from r2r_synth.teacher.policy import CallFailed, CallPolicy, classify
from r2r_synth.teacher.preflight import preflight

GOOD = "sk-good-0123456789abcdef"
BAD = "sk-bad-0123456789abcdef"
FAST = CallPolicy(max_retries=2, timeout=5, backoff_base=0.01, backoff_cap=0.02)


def dead_url() -> str:
    """The api_base of a loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# --------------------------------------------------------------------------- classify


def test_missing_credentials_are_auth_not_transient(monkeypatch):
    """The OpenAI SDK's "Missing credentials" reaches LiteLLM's callers as a 500; it is never retried."""
    from dspy.utils.exceptions import LMUnexpectedError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(Exception) as ei:
        litellm.completion(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], num_retries=0)
    assert "Missing credentials" in str(ei.value) and classify(ei.value) == "auth"
    try:
        raise LMUnexpectedError("[gpt-4o] wrapped") from ei.value
    except LMUnexpectedError as wrapped:
        assert classify(wrapped) == "auth"
    calls = []

    def no_key():
        calls.append(1)
        raise ei.value

    with pytest.raises(CallFailed, match="Missing credentials") as failed:
        CallPolicy(max_retries=5, backoff_base=0.001).call(no_key)
    assert failed.value.cause == "auth" and len(calls) == 1


# --------------------------------------------------------------------------- the library


def test_a_good_key_passes_with_one_models_request_and_no_completion():
    with OpenAIServer(require_key=GOOD, guard_models=True) as srv:
        t = make_teacher("openai/loopback", api_base=srv.url, api_key=GOOD, policy=FAST)
        res = preflight(t)
        assert res.method == "models" and res.listed is True and res.models == ["loopback"]
        assert srv.behaviour.model_requests == 1 and srv.requests == []
        assert res.describe().startswith(f"openai/loopback at {srv.url}: GET /models answered in ")


def test_a_wrong_key_is_a_configuration_error_and_masked():
    with OpenAIServer(require_key=GOOD, guard_models=True) as srv:
        t = make_teacher("openai/loopback", api_base=srv.url, api_key=BAD, policy=FAST)
        with pytest.raises(ConfigError, match=r"preflight: the teacher 'openai/loopback' at .* refused the key") as ei:
            preflight(t)
        assert srv.behaviour.model_requests == 1  # 401 is never retried
        assert srv.requests == [] and BAD not in str(ei.value) and "--api-key" in ei.value.hint


def test_the_providers_env_key_is_the_one_checked(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", GOOD)
    with OpenAIServer(require_key=GOOD, guard_models=True) as srv:
        assert preflight(make_teacher("openai/loopback", api_base=srv.url, policy=FAST)).method == "models"


def test_a_dead_endpoint_is_a_configuration_error_after_the_policys_retries():
    url = dead_url()
    t = make_teacher("openai/loopback", api_base=url, api_key=GOOD, policy=FAST)
    with pytest.raises(ConfigError, match=r"at http://127\.0\.0\.1:\d+/v1 did not answer .*gave up after 3 attempts"
                       ) as ei:
        preflight(t)
    assert "check that the server is up at " + url in ei.value.hint


def test_a_server_that_is_down_is_a_configuration_error():
    with OpenAIServer(guard_models=True) as srv:
        srv.behaviour.down = True
        with pytest.raises(ConfigError, match="did not answer .* the teacher is down"):
            preflight(make_teacher("openai/loopback", api_base=srv.url, api_key=GOOD, policy=FAST))
        assert srv.behaviour.model_requests == 3  # the first try and the policy's 2 retries


def test_a_missing_key_is_found_before_any_request(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="the teacher 'gpt-4o' needs OPENAI_API_KEY, and it is not set") as ei:
        preflight(make_teacher("gpt-4o", policy=FAST))
    assert ei.value.hint.startswith("export OPENAI_API_KEY=")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="needs ANTHROPIC_API_KEY"):
        preflight(make_teacher("anthropic/claude-sonnet-4-5", policy=FAST))


def test_a_router_is_checked_with_a_one_token_completion(tmp_path):
    import json

    from r2r_synth.teacher.router import open_router

    with OpenAIServer() as srv:
        router = tmp_path / "router.json"
        router.write_text(json.dumps({"model_list": [
            {"model_name": "teacher", "litellm_params": {"model": "openai/replica-preflight", "api_base": srv.url,
                                                         "api_key": GOOD}}]}))
        t = open_router(None, router=router, temperature=0.0, max_tokens=None, policy=FAST)
        assert preflight(t).method == "completion"
        assert len(srv.requests) == 1
        # A request the backend refuses for itself (a 400) still proves the endpoint and the key.
        srv.script("Reply with OK.", {"status": 400, "message": "max_tokens is too small"})
        assert preflight(t).method == "completion"
        srv.script("Reply with OK.", {"status": 401, "message": "Incorrect API key provided."})
        with pytest.raises(ConfigError, match="preflight: the teacher 'teacher' refused the key"):
            preflight(t)


# --------------------------------------------------------------------------- evaluate's teacher systems


def test_cli_evaluate_with_a_wrong_key_exits_2_before_any_request(tmp_path, monkeypatch, capsys):
    from r2r_synth import cli as cli_mod

    out = tmp_path / "ev"
    with OpenAIServer(require_key=GOOD, guard_models=True) as srv:
        monkeypatch.setattr(sys, "argv", ["r2r-synth", "evaluate", "-i", str(SAMPLE), "-s", "teacher:openai/loopback",
                                          "--api-base", srv.url, "--api-key", BAD, "--out", str(out),
                                          "--max-retries", "0"])
        monkeypatch.setenv("COLUMNS", "200")
        with pytest.raises(SystemExit) as ei:
            cli_mod.main()
        assert srv.requests == []
    err = " ".join(capsys.readouterr().err.split())
    assert ei.value.code == 2 and "refused the key" in err and BAD not in err
    assert not out.exists()
