"""The LM behind a teacher program: any LiteLLM model string, a LiteLLM Router, or the embedded
offline teacher.

`open_teacher(...)` is a context manager yielding a `Teacher`:

- `.name` is what provenance records (the model string or the router's model group; never a key),
- `.lm` is a `dspy.LM` for DSPy code (optimizers, notebooks: `with dspy.context(lm=t.lm, adapter=t.adapter)`),
- `.adapter` is the `dspy.Adapter` to format/parse with (None: DSPy's default ChatAdapter),
- `await .acomplete(messages)` is the engine's direct door to the same backend: one
  `litellm.acompletion` (or `router.acompletion`) with no DSPy cache and no LiteLLM retries,
  because `generate` owns caching (content-addressed request keys) and retries itself. For an
  OpenAI-compatible self-hosted endpoint (`hosted_vllm/...`, `openai/...` with `api_base`) the
  default `transport="auto"` sends the same request over one pooled httpx client instead (see
  `_HTTPTransport` for why); `transport="litellm"` always goes through `litellm.acompletion`.

Cost comes from LiteLLM's cost map (`litellm.completion_cost`); a model the map does not know
costs None, never a guess.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy

from r2r_synth.errors import ConfigError, InputError

logger = logging.getLogger(__name__)


def quiet_litellm() -> None:
    """Turn off LiteLLM's per-call extras the engine does not need (success/failure callbacks,
    message logging, its own cache, the cost-map fetch): per-call CPU is the bottleneck of a
    high-concurrency run on a small machine, and none of these change what is sent or received."""
    import litellm

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
    """One chat completion, as the engine needs it: the text, token usage and cost (None: unpriced)."""

    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None


class HTTPStatusError(Exception):
    """A non-2xx reply on the direct HTTP transport (LiteLLM's own exceptions carry `status_code` too)."""

    def __init__(self, status_code: int, message: str):
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code


# LiteLLM providers that speak the OpenAI chat-completions wire format unchanged.
OPENAI_COMPATIBLE = frozenset({"openai", "hosted_vllm", "openai_like", "custom_openai", "llamafile", "lm_studio"})
TRANSPORTS = ("auto", "litellm", "http")


class _HTTPTransport:
    """Direct OpenAI-compatible transport for a self-hosted endpoint (`--api-base`).

    Why it exists: for an OpenAI-compatible server LiteLLM only resolves the provider and forwards
    the request, but its per-call logging, cost and redaction machinery costs ~15 ms of CPU per call
    on a small machine: at 32 requests in flight that, not the server, bounds the run. LiteLLM still
    resolves the provider, wire model name and endpoint (`litellm.get_llm_provider`) and prices the
    tokens from its cost map; this class only sends the same JSON body with one pooled httpx client
    per event loop. `--transport litellm` turns it off."""

    def __init__(self, *, url: str, wire_model: str, api_key: str | None, timeout: float | None):
        self.url = url
        self.wire_model = wire_model
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout
        self.pool_size = 64  # the engine sets it to its concurrency
        self._clients: dict[Any, Any] = {}

    def _client(self) -> Any:
        import asyncio

        import httpx

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for old in [lp for lp in self._clients if lp.is_closed()]:
                self._clients.pop(old)
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout) if self.timeout else httpx.Timeout(600.0),
                # A bounded pool the size of the concurrency: httpcore scans its whole pool for every
                # request, so an unbounded pool of idle connections costs CPU on each call.
                limits=httpx.Limits(max_connections=self.pool_size, max_keepalive_connections=self.pool_size),
            )
            self._clients[loop] = client
        return client

    async def acomplete(self, messages: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        body = {"model": self.wire_model, "messages": messages,
                **{k: v for k, v in kwargs.items() if v is not None}}
        resp = await self._client().post(self.url, content=_dumps(body), headers=self.headers)
        if resp.status_code >= 400:
            try:
                err = _loads(resp.content).get("error") or {}
                msg = err.get("message") if isinstance(err, dict) else str(err)
            except ValueError:
                msg = resp.text[:300]
            raise HTTPStatusError(resp.status_code, str(msg or resp.reason_phrase))
        try:
            return _loads(resp.content)
        except ValueError:
            raise HTTPStatusError(502, f"the server sent a non-JSON body: {resp.text[:200]!r}") from None

    async def aclose(self) -> None:
        import asyncio

        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


def _dumps(obj: Any) -> bytes:
    try:
        import orjson

        return orjson.dumps(obj)
    except ImportError:
        return json.dumps(obj).encode()


def _loads(data: bytes) -> Any:
    try:
        import orjson

        return orjson.loads(data)
    except ImportError:
        return json.loads(data)


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
    _http: _HTTPTransport | None = field(default=None, repr=False)
    _prices: tuple[float, float] | None = field(default=None, repr=False)

    async def acomplete(self, messages: list[dict[str, Any]], **kwargs: Any) -> Completion:
        """One chat completion on this teacher's backend. Errors: LiteLLM's exceptions (with
        `status_code`), `HTTPStatusError`, or httpx's timeout/transport errors."""
        if self._http is not None:
            gen = {k: v for k, v in self.completion_kwargs.items() if k in ("temperature", "max_tokens")}
            data = await self._http.acomplete(messages, **{**gen, **kwargs})
            try:
                text = data["choices"][0]["message"].get("content")
            except (KeyError, IndexError, TypeError, AttributeError):
                text = None
            u = data.get("usage") or {}
            p, c = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
            cost = None if self._prices is None else p * self._prices[0] + c * self._prices[1]
            return Completion(text=text, prompt_tokens=p, completion_tokens=c, cost=cost)
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
        u = getattr(resp, "usage", None)
        return Completion(text=text, prompt_tokens=int(getattr(u, "prompt_tokens", 0) or 0),
                          completion_tokens=int(getattr(u, "completion_tokens", 0) or 0),
                          cost=completion_cost(resp, model=self.model))

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
        }


def completion_cost(response: Any, *, model: str | None = None) -> float | None:
    """USD cost of a LiteLLM response, or None when LiteLLM's cost map does not price the model."""
    import litellm

    hidden = getattr(response, "_hidden_params", None) or {}
    known = hidden.get("response_cost")
    if isinstance(known, (int, float)):
        return float(known)
    try:
        cost = litellm.completion_cost(completion_response=response)
    except Exception:  # noqa: BLE001 - litellm raises a bare Exception ("model isn't mapped yet") for unknown models
        if model is None:
            return None
        try:
            cost = litellm.completion_cost(completion_response=response, model=model)
        except Exception:  # noqa: BLE001 - litellm's cost calculator raises bare Exception for unknown models
            return None
    return float(cost) if isinstance(cost, (int, float)) else None


# --------------------------------------------------------------------------- router


def read_router_config(path: Path) -> dict[str, Any]:
    """Read a LiteLLM Router config (YAML or JSON): `model_list` (with per-deployment rpm/tpm) and
    optional `router_settings` (fallbacks, num_retries, routing_strategy, ...), as in LiteLLM's
    proxy `config.yaml`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such router config", hint="pass a LiteLLM Router config (YAML or JSON)")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: not valid JSON ({e.msg})", hint="fix the router config") from None
    except Exception as e:  # noqa: BLE001 - yaml.YAMLError carries its own line/column in the message
        raise InputError(f"{path}: not valid YAML ({e})", hint="fix the router config") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_list"), list) or not data["model_list"]:
        raise ConfigError(
            f"{path}: a router config needs a non-empty `model_list`",
            hint="model_list: [{model_name: teacher, litellm_params: {model: hosted_vllm/x, api_base: ..., rpm: 60}}]",
        )
    for i, dep in enumerate(data["model_list"]):
        if not isinstance(dep, dict) or "model_name" not in dep or "model" not in (dep.get("litellm_params") or {}):
            raise ConfigError(
                f"{path}: model_list[{i}] needs `model_name` and `litellm_params.model`",
                hint="see https://docs.litellm.ai/docs/routing",
            )
    return data


def _router_model_names(data: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for dep in data["model_list"]:
        if dep["model_name"] not in names:
            names.append(dep["model_name"])
    return names


class _RouterEngine:
    """A DSPy engine (complete(Request) -> Response) that sends through a `litellm.Router`, so DSPy
    programs (optimizers, notebooks) spread over the router's deployments like `generate` does."""

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


class _AsyncRouterEngine(_RouterEngine):
    async def complete(self, request: Any) -> Any:  # type: ignore[override]
        from dspy.clients.lm15_boundary import response_value

        raw = await self.router.acompletion(model=request.model, **self._data(request))
        return response_value(raw, "chat", request)

    async def aclose(self) -> None:
        pass


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
    num_retries: int = 0,
    timeout: float | None = None,
    transport: str = "auto",
) -> Iterator[Teacher]:
    """Open a teacher for the duration of a `with` block.

    `teacher` is any LiteLLM model string (`gpt-4o`, `anthropic/claude-...`, `ollama_chat/llama3.1`,
    `hosted_vllm/<name>` with `api_base`), or with `router` a model group of the router config; None
    starts the embedded offline teacher (SmolLM2-135M behind llama.cpp's OpenAI-compatible server,
    reached through LiteLLM) and stops it on exit. `api_key` is passed to LiteLLM and never recorded.
    """
    quiet_litellm()
    if router is not None:
        yield _open_router(teacher, router=router, temperature=temperature, max_tokens=max_tokens,
                           num_retries=num_retries, timeout=timeout)
        return
    if teacher is None:
        from r2r_synth.teacher import embedded

        with embedded.open_embedded_teacher(temperature=temperature, max_tokens=max_tokens, timeout=timeout) as t:
            yield t
        return
    if not teacher.strip():
        raise ConfigError("--teacher is empty", hint="give a LiteLLM model string such as gpt-4o, or omit --teacher")
    yield make_teacher(teacher, api_base=api_base, api_key=api_key, temperature=temperature,
                       max_tokens=max_tokens, num_retries=num_retries, timeout=timeout, transport=transport)


def make_teacher(
    model: str,
    *,
    name: str | None = None,
    api_base: str | None = None,
    api_key: str | None = None,
    temperature: float = 0.0,
    max_tokens: int | None = None,
    num_retries: int = 0,
    timeout: float | None = None,
    adapter: dspy.Adapter | None = None,
    extra: dict[str, Any] | None = None,
    embedded: bool = False,
    transport: str = "auto",
) -> Teacher:
    """A `Teacher` for a LiteLLM model string (no server lifecycle: see `open_teacher`)."""
    client: dict[str, Any] = {}
    if api_base:
        client["api_base"] = api_base
    if api_key is None and api_base and _needs_placeholder_key(model):
        # A self-hosted OpenAI-compatible server (vLLM, llama.cpp, TGI) usually takes no key, but
        # LiteLLM's OpenAI client refuses to send a request without one (and reports it as a 500).
        api_key = "EMPTY"
    if api_key:
        client["api_key"] = api_key
    if timeout is not None:
        client["timeout"] = timeout
    gen: dict[str, Any] = {"temperature": temperature}
    if max_tokens is not None:
        gen["max_tokens"] = max_tokens
    gen.update(extra or {})
    # engine="litellm": every teacher goes through LiteLLM, the same door `generate` uses.
    lm = dspy.LM(model, engine="litellm", num_retries=num_retries, cache=False, **gen, **client)
    teacher = Teacher(name=name or model, lm=lm, adapter=adapter, model=model,
                      completion_kwargs={**gen, **client}, embedded=embedded)
    if transport not in TRANSPORTS:
        raise ConfigError(f"--transport {transport!r} is not one of {', '.join(TRANSPORTS)}")
    if transport != "litellm" and not embedded:
        import litellm

        try:
            wire_model, provider, _, resolved_base = litellm.get_llm_provider(model, api_base=api_base)
        except Exception as e:  # noqa: BLE001 - LiteLLM raises BadRequestError for a model string it cannot route
            raise ConfigError(f"LiteLLM does not know how to reach {model!r}: {e}",
                              hint="use a LiteLLM model string such as gpt-4o, anthropic/claude-..., "
                                   "hosted_vllm/<name> with --api-base") from None
        direct = bool(api_base) and provider in OPENAI_COMPATIBLE
        if transport == "http" and not direct:
            raise ConfigError(
                f"--transport http needs an OpenAI-compatible model string and --api-base; {model!r} is "
                f"provider {provider!r}" + ("" if api_base else " without --api-base"),
                hint="use --transport auto (LiteLLM picks) or litellm",
            )
        if direct:
            teacher.transport = "http"
            teacher._http = _HTTPTransport(url=(resolved_base or api_base).rstrip("/") + "/chat/completions",
                                           wire_model=wire_model, api_key=api_key, timeout=timeout)
            teacher._prices = _per_token_prices(model)
    return teacher


def _needs_placeholder_key(model: str) -> bool:
    """An OpenAI-compatible provider whose key variable is unset (e.g. OPENAI_API_KEY for `openai/`)."""
    from r2r_synth.config import env

    provider = model.split("/", 1)[0] if "/" in model else "openai"
    if provider not in OPENAI_COMPATIBLE:
        return False
    return not env(f"{provider.upper()}_API_KEY")


def _per_token_prices(model: str) -> tuple[float, float] | None:
    """(input, output) USD per token from LiteLLM's cost map, or None when the map lacks the model."""
    import litellm

    try:
        info = litellm.get_model_info(model)
    except Exception:  # noqa: BLE001 - the cost map raises bare Exception for an unknown model
        return None
    p, c = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    return (float(p), float(c)) if isinstance(p, (int, float)) and isinstance(c, (int, float)) else None


def _open_router(teacher: str | None, *, router: Path, temperature: float, max_tokens: int | None,
                 num_retries: int, timeout: float | None) -> Teacher:
    import litellm

    data = read_router_config(router)
    names = _router_model_names(data)
    name = teacher or names[0]
    if name not in names:
        raise ConfigError(
            f"--teacher {name!r} is not a model_name in {router} (it has: {', '.join(names)})",
            hint="pass --teacher with one of the router's model_name values, or omit it to use the first",
        )
    settings = dict(data.get("router_settings") or {})
    settings.setdefault("num_retries", num_retries)
    if timeout is not None:
        settings.setdefault("timeout", timeout)
    try:
        r = litellm.Router(model_list=data["model_list"], **settings)
    except Exception as e:  # noqa: BLE001 - LiteLLM's Router validates with many exception types
        raise ConfigError(f"{router}: LiteLLM could not build a Router from it ({e})",
                          hint="see https://docs.litellm.ai/docs/routing for the config format") from None
    gen: dict[str, Any] = {"temperature": temperature}
    if max_tokens is not None:
        gen["max_tokens"] = max_tokens
    lm = dspy.LM(name, cache=False, num_retries=0, engine=_RouterEngine(r, defaults=gen),
                 async_engine=_AsyncRouterEngine(r, defaults=gen))
    models = sorted({d["litellm_params"]["model"] for d in data["model_list"] if d["model_name"] == name})
    return Teacher(name=name, lm=lm, adapter=None, model=models[0] if len(models) == 1 else None,
                   router=r, completion_kwargs=gen)


# --------------------------------------------------------------------------- pricing


def _models_of(teacher: Teacher) -> list[str]:
    if teacher.router is not None:
        return []
    return [teacher.model] if teacher.model else []


def price(teacher: Teacher, *, prompt_tokens: int, completion_tokens: int) -> float | None:
    """USD for that many tokens on this teacher from LiteLLM's cost map; None when not priced
    (the embedded teacher, local servers, models the map does not know, routers over several)."""
    import litellm

    models = _models_of(teacher)
    if not models or teacher.embedded:
        return None
    try:
        p, c = litellm.cost_per_token(model=models[0], prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    except Exception:  # noqa: BLE001 - "model isn't mapped yet"
        return None
    return float(p + c)


def is_priced(teacher: Teacher) -> bool:
    """Whether LiteLLM's cost map prices this teacher (what `--max-cost` needs)."""
    if teacher.router is not None:
        import litellm

        try:
            return all(
                litellm.cost_per_token(model=d["litellm_params"]["model"], prompt_tokens=1, completion_tokens=1)
                for d in teacher.router.model_list if d.get("model_name") == teacher.name)
        except Exception:  # noqa: BLE001 - an unpriced deployment
            return False
    return price(teacher, prompt_tokens=1000, completion_tokens=1000) is not None
