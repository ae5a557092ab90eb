"""The Ray side of `generate --ray` (see `r2r_synth.generate.ray_runner`): checking a --ray command,
joining the cluster (or starting Ray here), and asking a round's calls through Ray Data LLM — an
endpoint through `HttpRequestProcessorConfig`, or vLLM engines the cluster hosts through
`vLLMEngineProcessorConfig` — yielding each reply or failure as its row streams back."""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from r2r_synth.config import GenerateConfig, env
from r2r_synth.errors import ConfigError
from r2r_synth.generate.batch import Call, Outcome, completion_outcome
from r2r_synth.teacher.policy import CallFailed

EXTRA_HINT = "install the extra: pip install 'r2r-synth[ray]'"
#: `--teacher vllm/<id>`: a model Ray hosts in the cluster through vLLM.
HOSTED_PREFIX = "vllm/"
#: Where `openai/<model>` goes when no --api-base is given.
OPENAI_BASE = "https://api.openai.com/v1"
#: Requests one HTTP actor keeps in flight at most by default (`--replicas` unset): an actor waits on
#: the network, so one process carries `--concurrency` up to this many.
IN_FLIGHT_PER_ACTOR = 64
#: A block (one Ray task, one batch of Ray's HTTP stage) holds this many times an actor's requests
#: in flight: the actor's gate stays full while the block's replies come back, and an actor runs one
#: block at a time, so its gate drains once a block (8 x: 1.26-1.38 x online's session in
#: benchmarks/bench_ray.py, against 1.32 x at 4 x).
BLOCK_PER_IN_FLIGHT = 8
#: CPUs Ray reserves for an actor that asks an endpoint (it waits on the network).
ACTOR_CPUS = 0.25
#: Seconds to wait for a TCP connection to a cluster's address before calling it unreachable.
CONNECT_TIMEOUT_S = 5.0


def hosted_model(teacher: str | None) -> str | None:
    """The Hugging Face id of a `vllm/<id>` teacher (hosted in the cluster), else None."""
    if teacher and teacher.startswith(HOSTED_PREFIX):
        return teacher[len(HOSTED_PREFIX):] or None
    return None


def endpoints(api_base: str | None) -> list[str]:
    """`--api-base` under --ray: one URL or several, comma-separated."""
    return [u.strip().rstrip("/") for u in (api_base or "").split(",") if u.strip()]


def check_ray_config(config: GenerateConfig) -> None:
    """Refuse (ConfigError, exit 2) a --ray command that cannot work, before anything is read: no
    teacher, a router, a teacher that is neither an endpoint nor a model Ray can host, GPU options
    without a hosted model, Ray not installed."""
    import importlib

    from r2r_synth.teacher.transport import OPENAI_COMPATIBLE

    if config.teacher is None:
        raise ConfigError("--ray needs --teacher: the embedded teacher runs on this machine only",
                          hint="give an endpoint (e.g. --teacher hosted_vllm/Qwen/Qwen2.5-7B-Instruct --api-base "
                               "http://host:8000/v1) or a model for the cluster to host (--teacher "
                               "vllm/Qwen/Qwen2.5-7B-Instruct)")
    if config.router is not None:
        raise ConfigError("--ray spreads requests over endpoints itself; a --router does the same in this process",
                          hint="drop --router and give the endpoints as --api-base URL1,URL2")
    model = hosted_model(config.teacher)
    if model is None and config.tensor_parallel is not None:
        raise ConfigError(f"--tensor-parallel applies to a model the cluster hosts; {config.teacher!r} is an "
                          "endpoint", hint="drop --tensor-parallel, or host the model in the cluster with --teacher "
                                           "vllm/<Hugging Face id>")
    if model is not None and config.api_base:
        raise ConfigError(f"--teacher {config.teacher} is hosted by vLLM inside the Ray cluster; --api-base names "
                          "an endpoint", hint="drop --api-base, or ask a running server with --teacher "
                                              f"hosted_vllm/{model} --api-base URL")
    if model is None:
        import litellm

        try:
            provider = litellm.get_llm_provider(config.teacher, api_base=(endpoints(config.api_base) or [None])[0])[1]
        except Exception:  # noqa: BLE001 - LiteLLM raises BadRequestError for a model string it cannot route
            provider = None
        if provider not in OPENAI_COMPATIBLE or (provider != "openai" and not config.api_base):
            raise ConfigError(
                f"--ray asks an OpenAI-compatible endpoint or hosts a vLLM model; --teacher {config.teacher!r}"
                + ("" if config.api_base else " without --api-base") + " is neither",
                hint="give --teacher hosted_vllm/<model> --api-base http://host:8000/v1 (any OpenAI-compatible "
                     "server, several comma-separated), openai/<model>, or vllm/<Hugging Face id> for the cluster "
                     "to host; other providers: run without --ray")
    try:
        importlib.import_module("ray")
    except ImportError as e:
        raise ConfigError(f"--ray needs Ray (ray[data] >= 2.60), which is not installed ({e})", hint=EXTRA_HINT) from None


def _address(config: GenerateConfig) -> str | None:
    """The cluster to join: --ray-address, else RAY_ADDRESS; None (or "local"): a Ray on this machine."""
    address = config.ray_address if config.ray_address is not None else env("RAY_ADDRESS")
    return None if not address or address == "local" else address


def _check_reachable(address: str) -> None:
    """A TCP connection to the address's host and port, so an unreachable cluster is an error in
    seconds (Ray itself retries for a minute), and nothing is written."""
    if address == "auto":
        return  # a cluster started on this machine: ray.init finds it (or says there is none)
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r} is not HOST:PORT or ray://HOST:PORT",
                          hint="e.g. --ray-address 10.0.0.5:6379 (the head's GCS) or ray://10.0.0.5:10001")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise ConfigError(f"cannot reach a Ray cluster at {address}: {e}",
                          hint="start it with `ray start --head` there, check the host and port (GCS 6379, Ray "
                               "Client ray://...:10001) and the firewall, or leave --ray-address and RAY_ADDRESS "
                               "unset to run Ray on this machine") from None


@dataclass
class RaySession:
    """A connection to a Ray cluster (or a Ray started here) and how it asks the teacher."""

    address: str | None
    started: bool
    cpus: float
    gpus: float
    config: GenerateConfig
    urls: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    model: str | None = None  # the hosted model (vLLM), else None
    retries: int = 3
    timeout: float | None = None

    @property
    def where(self) -> str:
        return (f"the Ray cluster at {self.address}" if self.address
                else f"a local Ray on this machine ({self.cpus:g} CPUs)")

    @property
    def replicas(self) -> int:
        return replicas(self.config, n_urls=len(self.urls))

    def close(self) -> None:
        """Disconnect (and stop the Ray this session started)."""
        if self.started:
            import ray

            ray.shutdown()

    def ask(self, calls: list[Call]) -> Iterator[Outcome]:
        """Ask `calls` through Ray Data LLM; yields each outcome as its row streams back (a reply or
        the endpoint's error). Rows of a block that failed for good never come back."""
        import ray.data

        block = block_size(self.config, n=len(calls), replicas=self.replicas)
        ctx = ray.data.DataContext.get_current()
        ctx.max_errored_blocks = -1  # a failed block is a transport reject per request, not a failed run
        ctx.enable_progress_bars = False  # progress is the driver's to show (on stderr, one line a round)
        ctx.print_on_execution_start = False
        if self.model is not None:
            yield from self._ask_vllm(calls, block)
            return
        from ray.data.llm import HttpRequestProcessorConfig, build_processor

        shares = [calls[i::len(self.urls)] for i in range(len(self.urls))]
        datasets = []
        per_url = max(1, self.replicas // len(self.urls))
        factory = _session_factory(self.timeout, in_flight(self.config, replicas=self.replicas))
        for url, share in zip(self.urls, shares, strict=True):
            if not share:
                continue
            rows = [{"cid": c.cid, "payload": c.body} for c in share]
            ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / block)))
            # One batch per block (the stage opens a session per batch), a fixed pool of actors (an
            # autoscaling one starts at one), each a fraction of a CPU: it waits on the network.
            proc = build_processor(HttpRequestProcessorConfig(
                url=url + "/chat/completions", headers=self.headers, batch_size=block,
                concurrency=(per_url, per_url), http_request_stage={"num_cpus": ACTOR_CPUS},
                max_retries=self.retries, base_retry_wait_time_in_s=0.5, session_factory=factory))
            datasets.append(proc(ds))
        ds = datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]
        for row in ds.iter_rows():
            yield http_outcome(row["cid"], row.get("http_response"))

    def _ask_vllm(self, calls: list[Call], block: int) -> Iterator[Outcome]:
        import ray.data

        rows = [{"cid": c.cid, "messages": c.body["messages"], "sampling_params": sampling_params(c.body)}
                for c in calls]
        ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / block)))
        from ray.data.llm import build_processor

        proc = build_processor(vllm_config(self.config, model=self.model or "", batch_size=block))
        for row in proc(ds).iter_rows():
            err = row.get("__inference_error__") or ""
            if err:
                yield Outcome(cid=row["cid"], failure=CallFailed(
                    f"vLLM failed on this request: {str(err)[:300]}", cause="transport", attempts=1))
                continue
            yield Outcome(cid=row["cid"], text=row.get("generated_text") or "",
                          prompt_tokens=int(row.get("num_input_tokens") or 0),
                          completion_tokens=int(row.get("num_generated_tokens") or 0))


def _session_factory(timeout: float | None, limit: int) -> Callable[[], Any]:
    """`EagerSession`s (a batch's requests in flight together, `limit` at once per actor) with the
    teacher's per-request timeout; its module is pickled by value, so workers need no r2r-synth."""
    import functools

    import ray.cloudpickle

    from r2r_synth.generate import ray_http

    ray.cloudpickle.register_pickle_by_value(ray_http)
    return functools.partial(ray_http.EagerSession, timeout=timeout, limit=limit)


def replicas(config: GenerateConfig, *, n_urls: int = 1) -> int:
    """vLLM engines (--replicas, default 1), or actors asking the endpoints: --replicas, else one
    per IN_FLIGHT_PER_ACTOR of --concurrency; at least one per endpoint."""
    if hosted_model(config.teacher) is not None:
        return config.replicas or 1
    default = math.ceil(_concurrency(config) / IN_FLIGHT_PER_ACTOR)
    return max(config.replicas or default, n_urls)


def _concurrency(config: GenerateConfig) -> int:
    from r2r_synth.generate.engine import DEFAULT_CONCURRENCY

    return config.concurrency or DEFAULT_CONCURRENCY


def in_flight(config: GenerateConfig, *, replicas: int) -> int:
    """Requests one HTTP actor keeps in flight: --concurrency shared by the actors."""
    return max(1, math.ceil(_concurrency(config) / max(1, replicas)))


def block_size(config: GenerateConfig, *, n: int, replicas: int) -> int:
    """Requests per Ray Data block (one task; a block whose task fails for good is asked again by
    the next run; replies stream back to the driver block by block): --batch-size, else 64 for a
    vLLM engine (it batches itself), else BLOCK_PER_IN_FLIGHT x an actor's requests in flight."""
    if config.batch_size:
        return config.batch_size
    if hosted_model(config.teacher) is not None:
        return 64
    return BLOCK_PER_IN_FLIGHT * in_flight(config, replicas=replicas)


def sampling_params(body: dict[str, Any]) -> dict[str, Any]:
    """vLLM's SamplingParams for a chat-completion body: temperature, reply cap, seed, and a JSON
    schema response_format as structured output."""
    out = {k: body[k] for k in ("temperature", "max_tokens", "seed") if body.get(k) is not None}
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        out["structured_outputs"] = {"json": (fmt.get("json_schema") or {}).get("schema") or {}}
    elif fmt.get("type") == "json_object":
        out["structured_outputs"] = {"json_object": True}
    return out


def vllm_config(config: GenerateConfig, *, model: str, batch_size: int) -> Any:
    """The `vLLMEngineProcessorConfig` of a hosted teacher: --replicas engines of --tensor-parallel
    GPUs each; failed rows come back with their error (rejected, asked again by the next run)."""
    from ray.data.llm import vLLMEngineProcessorConfig

    return vLLMEngineProcessorConfig(
        model_source=model, engine_kwargs={"tensor_parallel_size": config.tensor_parallel or 1},
        concurrency=config.replicas or 1, batch_size=batch_size, should_continue_on_error=True)


def http_outcome(cid: str, body: Any) -> Outcome:
    """An endpoint's JSON reply as an `Outcome`: the assistant text and usage, or the error it sent
    (a key refused stops the run as online; anything else is asked again by the next run)."""
    if isinstance(body, dict) and body.get("choices"):
        return completion_outcome(cid, body)
    err = body.get("error") if isinstance(body, dict) else None
    err = err if isinstance(err, dict) else {"message": str(err or body)[:300]}
    what = f"{err.get('type') or err.get('code') or 'error'}: {err.get('message') or ''}".strip()
    auth = any(s in what.lower() for s in ("api key", "api_key", "authentication", "unauthorized", "permission"))
    return Outcome(cid=cid, failure=CallFailed(f"the endpoint answered with an error: {what[:300]}",
                                               cause="auth" if auth else "transport", attempts=1))


def connect(config: GenerateConfig, teacher: Any, *, say: Callable[[str], None]) -> RaySession:
    """Join the cluster (`--ray-address`, RAY_ADDRESS) or start Ray on this machine's CPUs, and check
    that it can host what is asked (GPUs for a vLLM teacher). Raises ConfigError (exit 2) before
    anything is written: Ray missing, an unreachable address, too few GPUs."""
    try:
        import ray
        import ray.data.llm
    except ImportError as e:
        raise ConfigError(f"--ray needs Ray Data LLM (ray[data] >= 2.60): {e}", hint=EXTRA_HINT) from None
    address = _address(config)
    if address is not None:
        _check_reachable(address)
    started = False
    if not ray.is_initialized():  # else: a Ray this process already joined (a notebook, a benchmark)
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": False}
        if address is None:
            say(f"starting Ray on this machine ({os.cpu_count()} CPUs)")
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **quiet)
        else:
            say(f"joining the Ray cluster at {address}")
            try:
                ray.init(address=address, **quiet)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ConfigError(f"cannot join the Ray cluster at {address}: {str(e).splitlines()[0][:300]}",
                                  hint="check that the address is the head's (ray status there prints it) and that "
                                       "this machine runs the same Ray and Python versions") from None
        started = True
    _quiet_ray()
    try:
        res = ray.cluster_resources()
        session = RaySession(address=address, started=started, cpus=float(res.get("CPU", 0)),
                             gpus=float(res.get("GPU", 0)), config=config,
                             retries=teacher.policy.max_retries, timeout=teacher.policy.timeout)
        session.model = hosted_model(config.teacher)
        if session.model is not None:
            need = (config.tensor_parallel or 1) * (config.replicas or 1)
            if session.gpus < need:
                raise ConfigError(
                    f"--teacher {config.teacher} with {config.replicas or 1} replica(s) of --tensor-parallel "
                    f"{config.tensor_parallel or 1} needs {need} GPU(s); {session.where} has {session.gpus:g}",
                    hint="join a cluster with GPUs (--ray-address), lower --replicas / --tensor-parallel, or ask "
                         "a running server instead (--teacher hosted_vllm/<model> --api-base URL)")
        else:
            session.urls = endpoints(config.api_base) or [OPENAI_BASE]
            key = teacher.completion_kwargs.get("api_key")
            if not key or key == "EMPTY":
                key = env("OPENAI_API_KEY") if not config.api_base else None
            session.headers = {"Authorization": f"Bearer {key}"} if key else {}
    except BaseException:
        if started:
            ray.shutdown()
        raise
    return session


def _quiet_ray() -> None:
    """Ray Data's own log lines off the terminal: the driver reports each round on stderr, a failed
    block becomes rejects with their cause, and Ray's logs keep the details (/tmp/ray/session_latest)."""
    for name in ("ray", "ray.data", "ray.llm"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
