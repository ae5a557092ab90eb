"""The LM behind a teacher program: any LiteLLM model string, a LiteLLM Router, or the embedded
offline teacher.

`open_teacher(...)` is a context manager yielding a `Teacher`:

- `.name` is what provenance records (the model string or the router's model group; never a key),
- `.lm` is a `PolicyLM` (a `dspy.LM`) for DSPy code (optimizers, evaluation, notebooks:
  `with dspy.context(lm=t.lm, adapter=t.adapter)`); every call it makes follows `.policy`, so DSPy
  code retries, gives up and masks keys exactly as `generate` does,
- `.adapter` is the `dspy.Adapter` to format/parse with (None: DSPy's default ChatAdapter),
- `.policy` is the `CallPolicy` (retries, timeout, masking) every caller applies,
- `await .acomplete(messages)` is the engine's direct door to the same backend: one attempt, no
  DSPy cache (`generate` owns caching through content-addressed request keys and applies the policy
  itself). For an OpenAI-compatible self-hosted endpoint (`hosted_vllm/...`, `openai/...` with
  `api_base`) the default `transport="auto"` sends the same request over one pooled httpx client
  (`r2r_synth.teacher.transport`); `transport="litellm"` always goes through `litellm.acompletion`.

A model string LiteLLM cannot route is a `ConfigError` here, before anything is asked.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy
from dspy.utils.callback import with_callbacks

from r2r_synth.errors import ConfigError
from r2r_synth.teacher.caching import mark_prefix
from r2r_synth.teacher.policy import CallPolicy
from r2r_synth.teacher.pricing import Prices, completion_cost, map_prices
from r2r_synth.teacher.transport import OPENAI_COMPATIBLE, TRANSPORTS, HTTPTransport
from r2r_synth.teacher.usage import TokenCounts, read_usage

logger = logging.getLogger(__name__)


_QUIETED = False


def quiet_litellm() -> None:
    """Turn off LiteLLM's per-call extras the engine does not need (success/failure callbacks,
    message logging, its own cache, the cost-map fetch): per-call CPU is the bottleneck of a
    high-concurrency run on a small machine, and none of these change what is sent or received."""
    global _QUIETED
    import litellm

    _QUIETED = True
    litellm.telemetry = False
    litellm.turn_off_message_logging = True
    litellm.suppress_debug_info = True
    litellm.drop_params = True  # providers that lack a parameter (e.g. seed) get the rest
    for name in ("success_callback", "failure_callback", "_async_success_callback", "_async_failure_callback",
                 "callbacks", "input_callback", "service_callback"):
        if isinstance(getattr(litellm, name, None), list):
            setattr(litellm, name, [])
    logging.getLogger("LiteLLM").setLevel(logging.WARNING)
    logging.getLogger("LiteLLM Router").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


@dataclass
class Completion:
    """One chat completion, as the engine needs it: the text, token usage and cost (None: unpriced).
    `prompt_tokens` counts every input token; `cached_tokens` of them were read from the provider's
    prompt cache and `cache_write_tokens` written to it; `saved` is what the cache saved in USD
    (the cost at full input prices minus `cost`; None where unpriced)."""

    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    saved: float | None = None


# --------------------------------------------------------------------------- the DSPy LM


def _unwrapped(method: Callable[..., Any]) -> Callable[..., Any]:
    return getattr(method, "__wrapped__", method)


class PolicyLM(dspy.LM):
    """A `dspy.LM` whose every call follows a `CallPolicy`: DSPy code (optimizers, evaluation,
    notebooks) retries, gives up and masks keys exactly as `generate` does.

    The policy wraps the LM's call inside DSPy's callback layer, so callbacks and history see one
    call however many attempts it took, and DSPy's response cache answers before any attempt. The
    LM is built with `num_retries=0`: no call is retried twice over. Requests go through DSPy's own
    LiteLLM engine (a model string) or a router engine, which carry every provider argument as is
    (e.g. llama.cpp's `response_format` with a `schema`)."""

    def __init__(self, model: str, *, policy: CallPolicy, **kwargs: Any):
        super().__init__(model, num_retries=0, **kwargs)
        self.policy = policy

    @with_callbacks
    def __call__(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
        if not _QUIETED:  # a teacher opened without LiteLLM (a lean start) imports it on its first DSPy call
            quiet_litellm()
        call = _unwrapped(dspy.LM.__call__)
        return self.policy.call(lambda: call(self, prompt, messages=messages, **kwargs))

    @with_callbacks
    async def acall(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
        if not _QUIETED:
            quiet_litellm()
        call = _unwrapped(dspy.LM.acall)
        return await self.policy.acall(lambda: call(self, prompt, messages=messages, **kwargs))


class RouterEngine:
    """A DSPy engine (`complete(Request) -> Response`) that sends through a `litellm.Router`, so DSPy
    programs spread over the router's deployments like `generate` does (the policy is `PolicyLM`'s)."""

    def __init__(self, router: Any, *, defaults: dict[str, Any]):
        self.router = router
        self.defaults = defaults

    def _data(self, request: Any) -> dict[str, Any]:
        from dspy.clients.lm15_boundary import request_kwargs

        data = request_kwargs(request, "chat")
        return {**self.defaults, **{k: v for k, v in data.items() if v is not None}}

    def complete(self, request: Any) -> Any:
        from dspy.clients.lm15_boundary import response_value

        raw = self.router.completion(model=request.model, **self._data(request))
        return response_value(raw, "chat", request)

    def close(self) -> None:
        pass


class AsyncRouterEngine(RouterEngine):
    async def complete(self, request: Any) -> Any:  # type: ignore[override]
        from dspy.clients.lm15_boundary import response_value

        raw = await self.router.acompletion(model=request.model, **self._data(request))
        return response_value(raw, "chat", request)

    async def aclose(self) -> None:
        pass


# --------------------------------------------------------------------------- the teacher


@dataclass
class Teacher:
    """An opened teacher. Use `.lm`/`.adapter` from DSPy code and `acomplete` from the engine."""

    name: str
    lm: dspy.BaseLM
    adapter: dspy.Adapter | None = None
    model: str | None = None
    router: Any = None
    completion_kwargs: dict[str, Any] = field(default_factory=dict, repr=False)
    embedded: bool = False
    transport: str = "litellm"
    policy: CallPolicy = field(default_factory=CallPolicy)
    #: The prices given for the run (`--price-in` / `--price-out`): they win over LiteLLM's cost map.
    prices: Prices | None = None
    #: Whether requests mark their static prefix for the provider's cache (`r2r_synth.teacher.caching`).
    cache_marking: bool = False
    _http: HTTPTransport | None = field(default=None, repr=False)
    #: The prices the direct transport computes costs with (given, or the cost map's).
    _prices: Prices | None = field(default=None, repr=False)
    _map_prices: Any = field(default=False, repr=False)  # False: not looked up yet

    def wire_messages(self, messages: list[dict[str, Any]], *, prefix: int) -> list[dict[str, Any]]:
        """`messages` as sent: the last of the `prefix` static messages (instructions and demos)
        marked for the provider's cache where this teacher marks (see `cache_marking`)."""
        return mark_prefix(messages, prefix) if self.cache_marking else messages

    def _completion(self, text: str | None, counts: TokenCounts, cost: float | None,
                    prices: Prices | None) -> Completion:
        saved = None
        if cost is not None and prices is not None:
            full = prices.uncached_cost(prompt_tokens=counts.prompt, completion_tokens=counts.completion)
            saved = round(full - cost, 12)
        return Completion(text=text, prompt_tokens=counts.prompt, completion_tokens=counts.completion, cost=cost,
                          cached_tokens=counts.cached, cache_write_tokens=counts.cache_write, saved=saved)

    def _cost_map_prices(self) -> Prices | None:
        if self._map_prices is False:
            self._map_prices = None if self.router is not None or self.embedded else map_prices(self.model)
        return self._map_prices

    async def acomplete(self, messages: list[dict[str, Any]], **kwargs: Any) -> Completion:
        """One attempt at a chat completion on this teacher's backend (callers apply `.policy`).
        Errors: LiteLLM's exceptions (with `status_code`), `HTTPStatusError`, httpx's
        timeout/transport errors, or `ProviderUsageError` for a usage that cannot be true."""
        if self._http is not None:
            gen = {k: v for k, v in self.completion_kwargs.items() if k in ("temperature", "max_tokens")}
            data = await self._http.acomplete(messages, **{**gen, **kwargs})
            try:
                text = data["choices"][0]["message"].get("content")
            except (KeyError, IndexError, TypeError, AttributeError):
                text = None
            counts = read_usage(data.get("usage") or {}, teacher=self.name)
            cost = None if self._prices is None else self._prices.cost(
                prompt_tokens=counts.prompt, completion_tokens=counts.completion, cached_tokens=counts.cached,
                cache_write_tokens=counts.cache_write)
            return self._completion(text, counts, cost, self._prices)
        args = {**self.completion_kwargs, **kwargs}
        if self.router is not None:
            resp = await self.router.acompletion(model=self.name, messages=messages, **args)
        else:
            import litellm

            resp = await litellm.acompletion(model=self.model, messages=messages, num_retries=0, **args)
        try:
            text = resp.choices[0].message.content
        except (AttributeError, IndexError):
            text = None
        counts = read_usage(getattr(resp, "usage", None), teacher=self.name)
        if self.prices is not None:
            prices: Prices | None = self.prices
            cost: float | None = self.prices.cost(prompt_tokens=counts.prompt, completion_tokens=counts.completion,
                                                  cached_tokens=counts.cached, cache_write_tokens=counts.cache_write)
        else:  # LiteLLM prices cached reads and cache writes at the map's cached-input rates itself
            prices, cost = self._cost_map_prices(), completion_cost(resp, model=self.model)
        return self._completion(text, counts, cost, prices)

    def set_pool_size(self, n: int) -> None:
        """Connections the direct transport keeps (the engine passes its concurrency)."""
        if self._http is not None:
            self._http.pool_size = max(1, n)

    async def aclose(self) -> None:
        """Close this event loop's connections (the direct transport's pool)."""
        if self._http is not None:
            await self._http.aclose()

    def public_dict(self) -> dict[str, Any]:
        """What may be recorded about this teacher (no key, no headers)."""
        return {
            "name": self.name,
            "model": self.model,
            "router": self.router is not None,
            "embedded": self.embedded,
            "transport": self.transport,
            "api_base": self.completion_kwargs.get("api_base"),
            "temperature": self.completion_kwargs.get("temperature"),
            "max_tokens": self.completion_kwargs.get("max_tokens"),
            "timeout": self.policy.timeout,
            "max_retries": self.policy.max_retries,
            "prices": None if self.prices is None else self.prices.public_dict(),
            "prompt_cache_marking": self.cache_marking,
        }


# --------------------------------------------------------------------------- open


@contextmanager
def open_teacher(
    teacher: str | None,
    *,
    api_base: str | None = None,
    api_key: str | None = None,
    temperature: float = 0.0,
    max_tokens: int | None = None,
    router: Path | None = None,
    policy: CallPolicy | None = None,
    transport: str = "auto",
    prices: Prices | None = None,
    prompt_cache: bool | None = None,
) -> Iterator[Teacher]:
    """Open a teacher for the duration of a `with` block.

    `teacher` is any LiteLLM model string (`gpt-4o`, `anthropic/claude-...`, `ollama_chat/llama3.1`,
    `hosted_vllm/<name>` with `api_base`), or with `router` a model group of the router config; None
    starts the embedded offline teacher (SmolLM2-135M behind llama.cpp's OpenAI-compatible server,
    reached through LiteLLM) and stops it on exit. `api_key` is passed to LiteLLM, masked in every
    message and never recorded. `policy` governs every call (default: `command_policy`'s for this
    teacher). `prices` (the run's `--price-in` / `--price-out`) win over LiteLLM's cost map;
    `prompt_cache` is `--prompt-cache` / `--no-prompt-cache` (None: mark where the provider needs it;
    see `r2r_synth.teacher.caching.check_prompt_cache`).

    A self-hosted OpenAI-compatible teacher on the direct transport is opened without importing
    LiteLLM (see `make_teacher`); every other teacher imports it.
    """
    from r2r_synth.teacher.caching import check_prompt_cache

    if router is not None:
        from r2r_synth.teacher.router import open_router

        quiet_litellm()
        t = open_router(teacher, router=router, temperature=temperature, max_tokens=max_tokens,
                        policy=policy or CallPolicy())
        t.prices = prices
        t.cache_marking = check_prompt_cache(prompt_cache, model=t.model, teacher=t.name, router=True)
        yield t
        return
    if teacher is None:
        from r2r_synth.teacher import embedded

        check_prompt_cache(prompt_cache, model=None, teacher=embedded.EMBEDDED_NAME, embedded=True)
        quiet_litellm()
        with embedded.open_embedded_teacher(temperature=temperature, max_tokens=max_tokens, policy=policy) as t:
            t.prices = prices
            yield t
        return
    if not teacher.strip():
        raise ConfigError("--teacher is empty", hint="give a LiteLLM model string such as gpt-4o, or omit --teacher")
    yield make_teacher(teacher, api_base=api_base, api_key=api_key, temperature=temperature,
                       max_tokens=max_tokens, policy=policy, transport=transport, prices=prices,
                       prompt_cache=prompt_cache)


def make_teacher(
    model: str,
    *,
    name: str | None = None,
    api_base: str | None = None,
    api_key: str | None = None,
    temperature: float = 0.0,
    max_tokens: int | None = None,
    policy: CallPolicy | None = None,
    adapter: dspy.Adapter | None = None,
    extra: dict[str, Any] | None = None,
    embedded: bool = False,
    transport: str = "auto",
    prices: Prices | None = None,
    prompt_cache: bool | None = None,
) -> Teacher:
    """A `Teacher` for a LiteLLM model string (no server lifecycle: see `open_teacher`). Raises
    `ConfigError` when LiteLLM cannot route `model`, the transport does not fit it, or `prompt_cache`
    is asked of a teacher that cannot cache.

    A lean start: an OpenAI-compatible model string with `api_base` on the direct transport
    (`openai/...`, `hosted_vllm/...`) is resolved here without LiteLLM, and LiteLLM is imported only
    when something needs it: pricing from its cost map (an `openai/` model without `prices`), or
    DSPy code calling `.lm`. Importing LiteLLM takes seconds on a small machine, longer than a
    thousand loopback requests' own client work."""
    from r2r_synth.teacher.caching import check_prompt_cache

    if transport not in TRANSPORTS:
        raise ConfigError(f"--transport {transport!r} is not one of {', '.join(TRANSPORTS)}")
    policy = policy or CallPolicy()
    if api_key:
        policy = dataclasses.replace(policy, secrets=(*policy.secrets, api_key))
    route = None if transport == "litellm" or embedded else direct_route(model, api_base)
    if route is not None:
        wire_model, provider = route
        provider_key, resolved_base = None, api_base
    else:
        import litellm

        quiet_litellm()
        try:
            wire_model, provider, provider_key, resolved_base = litellm.get_llm_provider(model, api_base=api_base)
        except Exception as e:  # noqa: BLE001 - LiteLLM raises BadRequestError for a model string it cannot route
            raise ConfigError(f"LiteLLM does not know how to reach {model!r}: {policy.describe(e)}",
                              hint="use a LiteLLM model string such as gpt-4o, anthropic/claude-..., "
                                   "hosted_vllm/<name> with --api-base") from None
    marking = check_prompt_cache(prompt_cache, model=model, teacher=name or model, embedded=embedded)
    client: dict[str, Any] = {}
    if api_base:
        client["api_base"] = api_base
    if api_key is None and api_base and provider in OPENAI_COMPATIBLE and not _provider_env_key(provider):
        # A self-hosted OpenAI-compatible server (vLLM, llama.cpp, TGI) usually takes no key, but
        # LiteLLM's OpenAI client refuses to send a request without one (and reports it as a 500).
        api_key = "EMPTY"
    if api_key:
        client["api_key"] = api_key
    if policy.timeout is not None:
        client["timeout"] = policy.timeout
    gen: dict[str, Any] = {"temperature": temperature}
    if max_tokens is not None:
        gen["max_tokens"] = max_tokens
    gen.update(extra or {})

    # engine="litellm": every teacher goes through LiteLLM, the same door `generate` uses.
    lm = PolicyLM(model, policy=policy, engine="litellm", cache=False, **gen, **client)
    teacher = Teacher(name=name or model, lm=lm, adapter=adapter, model=model, completion_kwargs={**gen, **client},
                      embedded=embedded, policy=policy, prices=prices, cache_marking=marking)
    direct = bool(api_base) and provider in OPENAI_COMPATIBLE
    if transport == "http" and not direct:
        raise ConfigError(
            f"--transport http needs an OpenAI-compatible model string and --api-base; {model!r} is "
            f"provider {provider!r}" + ("" if api_base else " without --api-base"),
            hint="use --transport auto (LiteLLM picks) or litellm",
        )
    if direct and transport != "litellm" and not embedded:
        # The same key LiteLLM would send: --api-key, else the provider's own environment variable.
        key = api_key if api_key not in (None, "EMPTY") else (provider_key or _provider_env_key(provider))
        teacher.transport = "http"
        teacher._http = HTTPTransport(url=(resolved_base or api_base).rstrip("/") + "/chat/completions",
                                      wire_model=wire_model, api_key=key, timeout=policy.timeout)
        # The cost map prices no self-hosted model (hosted_vllm/, openai_like/, ...): it is asked only
        # for an `openai/` model string (e.g. openai/gpt-4o behind a proxy), and only without --price-in.
        teacher._prices = prices or (map_prices(model) if provider == "openai" else None)
    return teacher


def direct_route(model: str, api_base: str | None) -> tuple[str, str] | None:
    """(wire model, provider) of an OpenAI-compatible `provider/name` with `api_base`, read without
    LiteLLM (what `litellm.get_llm_provider` returns for these), or None for any other model."""
    provider, sep, wire = model.partition("/")
    if not api_base or not sep or not wire or provider not in OPENAI_COMPATIBLE:
        return None
    return wire, provider


def _provider_env_key(provider: str) -> str | None:
    """The provider's API key variable as LiteLLM reads it (e.g. OPENAI_API_KEY for `openai/`)."""
    from r2r_synth.config import env

    return env(f"{provider.upper()}_API_KEY")
