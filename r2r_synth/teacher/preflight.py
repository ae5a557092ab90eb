"""Preflight: confirm the teacher's key and endpoint before a command asks its first question.

`preflight(teacher)` runs once per command that calls a teacher (`generate`, `optimize`, `evaluate`'s
`teacher:` systems), after `open_teacher` and before anything is written:

1. **The key.** For a provider that needs one, LiteLLM says which environment variables it reads
   (`litellm.validate_environment`); when neither `--api-key` nor those variables hold a credential,
   it is a `ConfigError` naming the variable. A self-hosted OpenAI-compatible server given by
   `--api-base` (vLLM, llama.cpp, TGI) may take no key, so none is required there.
2. **One cheap call, under the teacher's `CallPolicy`** (its retries, timeout and masking):
   - an OpenAI-compatible endpoint (OpenAI itself, or `openai/`, `hosted_vllm/`, ... with
     `--api-base`): `GET <base>/models` with the key the requests will carry. It costs nothing and
     answers 401 for a wrong key on OpenAI and vLLM. A server whose model list does not name the
     model is logged (llama.cpp answers any name; vLLM would refuse the first request);
   - any other provider, and a LiteLLM Router: a chat completion of one token, through LiteLLM, which
     maps every provider's errors onto the exceptions `classify` reads. It is not counted in the
     run's cost.
   The request is sent directly rather than through LiteLLM's model-listing helpers, because those
   swallow failures (`get_valid_models` returns `[]`) or drop the status code (OpenAI's raises a bare
   `Exception`), and the status is what tells a wrong key from a dead server.
3. **A failure is a `ConfigError`** (exit 2) with the cause and the fix: a missing or wrong key
   (401/403), an unknown model or endpoint (404), or no answer after the policy's retries (a dead
   port, a server that keeps failing). A request the backend refused for itself (another 4xx, e.g. a
   reasoning model that cannot stop after one token) still proves the endpoint and the key.

The embedded teacher needs none of this: its preflight is its own server start, which waits until
`/v1/models` answers (`r2r_synth.teacher.embedded.serve_embedded`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from r2r_synth.config import env
from r2r_synth.errors import ConfigError
from r2r_synth.teacher.policy import CallFailed
from r2r_synth.teacher.transport import OPENAI_COMPATIBLE, HTTPStatusError

if TYPE_CHECKING:
    from r2r_synth.teacher.lm import Teacher

logger = logging.getLogger(__name__)

OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"
#: A model list is small and quick: a server that takes longer than this to list is not healthy.
MODELS_TIMEOUT_S = 30.0
#: The environment variables `litellm.validate_environment` names that hold credentials (the others
#: it may name, such as OLLAMA_API_BASE or VERTEXAI_LOCATION, have defaults or are checked by the call).
_CREDENTIAL_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET", "_KEY_ID")


@dataclass
class PreflightResult:
    """What the preflight confirmed: `method` is ``models`` (GET /models), ``completion`` (one token)
    or ``embedded`` (the server start); `endpoint` is where it asked; `models` what the server lists."""

    teacher: str
    method: str
    endpoint: str | None = None
    seconds: float = 0.0
    models: list[str] = field(default_factory=list)
    listed: bool | None = None

    def describe(self) -> str:
        """One line for the console, e.g. ``gpt-4o at https://api.openai.com/v1: GET /models 200 in 0.31 s``."""
        if self.method == "embedded":
            return f"{self.teacher}: the embedded server answered"
        what = "GET /models" if self.method == "models" else "a 1-token completion"
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"{self.teacher}{where}: {what} answered in {self.seconds:.2f} s"


def preflight(teacher: Teacher) -> PreflightResult:
    """Confirm `teacher`'s key and endpoint with one cheap call (see the module docstring). Raises
    `ConfigError` (exit 2) when the key is missing or wrong, the model or endpoint unknown, or the
    endpoint does not answer after the policy's retries."""
    if teacher.embedded:
        return PreflightResult(teacher=teacher.name, method="embedded",
                               endpoint=teacher.completion_kwargs.get("api_base"))
    if teacher.router is not None:
        return _completion(teacher, endpoint=None)
    from r2r_synth.teacher.lm import direct_route

    model = teacher.model or teacher.name
    api_base = teacher.completion_kwargs.get("api_base")
    api_key = teacher.completion_kwargs.get("api_key")
    route = direct_route(model, api_base)
    if route is not None:  # a self-hosted OpenAI-compatible endpoint: no LiteLLM needed (a lean start)
        (wire, provider), provider_key, resolved_base = route, None, api_base
    else:
        import litellm

        wire, provider, provider_key, resolved_base = litellm.get_llm_provider(model, api_base=api_base)
    self_hosted = bool(api_base) and provider in OPENAI_COMPATIBLE
    if not self_hosted:
        _check_key(teacher, model=model, api_key=api_key, api_base=api_base)
    if provider in OPENAI_COMPATIBLE and (api_base or provider == "openai"):
        base = resolved_base or api_base or env("OPENAI_BASE_URL") or env("OPENAI_API_BASE") or OPENAI_DEFAULT_BASE
        key = api_key if api_key not in (None, "EMPTY") else (provider_key or env(f"{provider.upper()}_API_KEY"))
        return _models(teacher, base=base.rstrip("/"), key=key, wire_model=wire)
    return _completion(teacher, endpoint=api_base)


def _check_key(teacher: Teacher, *, model: str, api_key: str | None, api_base: str | None) -> None:
    import litellm

    found = litellm.validate_environment(model=model, api_key=api_key or None, api_base=api_base)
    missing = [k for k in found.get("missing_keys") or [] if k.upper().endswith(_CREDENTIAL_SUFFIXES)]
    if missing:
        names = " and ".join(missing)
        raise ConfigError(
            f"the teacher {teacher.name!r} needs {names}, and {'it is' if len(missing) == 1 else 'they are'} not "
            "set (nothing was asked or written)",
            hint=f"export {missing[0]}=..., or pass --api-key (or set R2R_API_KEY)",
        )


def _models(teacher: Teacher, *, base: str, key: str | None, wire_model: str) -> PreflightResult:
    """`GET <base>/models` under the teacher's policy; the listed ids come back."""
    import httpx

    url = f"{base}/models"
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    timeout = min(teacher.policy.timeout or MODELS_TIMEOUT_S, MODELS_TIMEOUT_S)

    def get() -> list[str]:
        resp = httpx.get(url, headers=headers, timeout=timeout)
        if resp.status_code >= 400:
            raise HTTPStatusError(resp.status_code, _error_text(resp))
        try:
            data = resp.json().get("data") or []
            return [str(m.get("id")) for m in data if isinstance(m, dict)]
        except (ValueError, AttributeError):
            # Answered, but not an OpenAI model list: the endpoint is up and took the key.
            return []

    t0 = time.perf_counter()
    ids = _under_policy(teacher, get, endpoint=base)
    listed = wire_model in ids if ids else None
    if listed is False:
        shown = ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
        logger.warning("the server at %s does not list the model %r (it lists: %s); the first request will show "
                       "whether it serves it", base, wire_model, shown)
    return PreflightResult(teacher=teacher.name, method="models", endpoint=base,
                           seconds=time.perf_counter() - t0, models=ids, listed=listed)


def _completion(teacher: Teacher, *, endpoint: str | None) -> PreflightResult:
    """A chat completion of one token under the teacher's policy (a refusal of this one request
    still proves the endpoint and the key)."""
    messages = [{"role": "user", "content": "Reply with OK."}]
    args: dict[str, Any] = {**teacher.completion_kwargs, "max_tokens": 1}

    def ask() -> Any:
        if teacher.router is not None:
            return teacher.router.completion(model=teacher.name, messages=messages, **args)
        import litellm

        return litellm.completion(model=teacher.model, messages=messages, num_retries=0, **args)

    t0 = time.perf_counter()
    _under_policy(teacher, ask, endpoint=endpoint, refused_ok=True)
    return PreflightResult(teacher=teacher.name, method="completion", endpoint=endpoint,
                           seconds=time.perf_counter() - t0)


def _under_policy(teacher: Teacher, fn: Any, *, endpoint: str | None, refused_ok: bool = False) -> Any:
    where = f" at {endpoint}" if endpoint else ""
    try:
        return teacher.policy.call(fn)
    except CallFailed as e:
        if refused_ok and e.cause == "refused":
            logger.info("preflight: %s refused a 1-token request (%s); the endpoint and key work", teacher.name,
                        e.message)
            return None
        what = {
            "auth": "refused the key",
            "config": "does not know the model or the endpoint",
            "transport": "did not answer",
            "refused": "refused the preflight request",
        }.get(e.cause, "failed")
        raise ConfigError(
            f"preflight: the teacher {teacher.name!r}{where} {what} (nothing was asked or written): {e.message}",
            hint=_hint(e.cause, endpoint, e.hint),
        ) from None


def _hint(cause: str, endpoint: str | None, default: str | None) -> str | None:
    if cause == "transport":
        return (f"check that the server is up{' at ' + endpoint if endpoint else ''} and --api-base is right, "
                "then rerun (--timeout and --max-retries give a slow server more room)")
    return default


def _error_text(resp: Any) -> str:
    try:
        err = resp.json().get("error") or {}
        msg = err.get("message") if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        msg = resp.text[:300]
    return str(msg or resp.reason_phrase)


__all__ = ["PreflightResult", "preflight"]
