"""A LiteLLM Router as the teacher: one model group spread over many deployments (LiteLLM's proxy
`config.yaml` format: `model_list` with per-deployment rpm/tpm, `router_settings` with fallbacks and
routing strategy)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r2r_synth.config import register_secret
from r2r_synth.errors import ConfigError, InputError
from r2r_synth.teacher.policy import CallPolicy

if TYPE_CHECKING:
    from r2r_synth.teacher.lm import Teacher

logger = logging.getLogger(__name__)


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


def router_model_names(data: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for dep in data["model_list"]:
        if dep["model_name"] not in names:
            names.append(dep["model_name"])
    return names


def open_router(teacher: str | None, *, router: Path, temperature: float, max_tokens: int | None,
                policy: CallPolicy) -> Teacher:
    """A `Teacher` for model group `teacher` (default: the first) of the router config `router`.

    The router's own retries are switched off (`num_retries: 0`): `policy` retries every call, so a
    call is never retried twice over; the router keeps its fallbacks and routing strategy."""
    import litellm

    from r2r_synth.teacher.lm import AsyncRouterEngine, PolicyLM, RouterEngine, Teacher

    data = read_router_config(router)
    names = router_model_names(data)
    name = teacher or names[0]
    if name not in names:
        raise ConfigError(
            f"--teacher {name!r} is not a model_name in {router} (it has: {', '.join(names)})",
            hint="pass --teacher with one of the router's model_name values, or omit it to use the first",
        )
    settings = dict(data.get("router_settings") or {})
    if settings.get("num_retries"):
        logger.warning("%s: router_settings.num_retries is replaced by --max-retries (%d)", router,
                       policy.max_retries)
    settings["num_retries"] = 0
    if policy.timeout is not None:
        settings.setdefault("timeout", policy.timeout)
    for dep in data["model_list"]:
        key = (dep.get("litellm_params") or {}).get("api_key")
        if isinstance(key, str) and not key.startswith("os.environ/"):
            register_secret(key)
    try:
        r = litellm.Router(model_list=data["model_list"], **settings)
    except Exception as e:  # noqa: BLE001 - LiteLLM's Router validates with many exception types
        raise ConfigError(f"{router}: LiteLLM could not build a Router from it ({policy.describe(e)})",
                          hint="see https://docs.litellm.ai/docs/routing for the config format") from None
    gen: dict[str, Any] = {"temperature": temperature}
    if max_tokens is not None:
        gen["max_tokens"] = max_tokens

    lm = PolicyLM(name, policy=policy, cache=False, engine=RouterEngine(r, defaults=gen),
                  async_engine=AsyncRouterEngine(r, defaults=gen))
    models = sorted({d["litellm_params"]["model"] for d in data["model_list"] if d["model_name"] == name})
    return Teacher(name=name, lm=lm, adapter=None, model=models[0] if len(models) == 1 else None,
                   router=r, completion_kwargs=gen, policy=policy)
