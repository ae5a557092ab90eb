"""What a teacher costs: the prices given for the run (`--price-in` / `--price-out` /
`--price-cached-in`, USD per million tokens), else LiteLLM's cost map (the map bundled with the
installed LiteLLM). A model neither prices costs None, never a guess.

Cached input tokens (a provider's prompt cache) are priced at the cached-input rate: the map's
`cache_read_input_token_cost` (and `cache_creation_input_token_cost` for Anthropic's cache writes),
or `--price-cached-in`; where no cached rate is known they cost the full input rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from r2r_synth.errors import ConfigError

if TYPE_CHECKING:
    from r2r_synth.teacher.lm import Teacher

PER_MILLION = 1_000_000


@dataclass(frozen=True)
class Prices:
    """USD per token: input, output, cached input read (None: the input rate) and cache writes
    (None: the input rate). `source` says where they came from (``command line`` or ``litellm``)."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    source: str = "litellm"

    def cost(self, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
             cache_write_tokens: int = 0) -> float:
        """USD of one call: `prompt_tokens` counts every input token, cached or not."""
        fresh = prompt_tokens - cached_tokens - cache_write_tokens
        read = self.input if self.cached_input is None else self.cached_input
        write = self.input if self.cache_write is None else self.cache_write
        return fresh * self.input + cached_tokens * read + cache_write_tokens * write + completion_tokens * self.output

    def uncached_cost(self, *, prompt_tokens: int, completion_tokens: int) -> float:
        """What the same call would cost with no prompt cache (every input token at the full rate)."""
        return prompt_tokens * self.input + completion_tokens * self.output

    def public_dict(self) -> dict[str, Any]:
        """The prices per million tokens, as recorded in a run's config and manifest."""
        def m(x: float | None) -> float | None:
            return None if x is None else round(x * PER_MILLION, 6)

        return {"input": m(self.input), "output": m(self.output), "cached_input": m(self.cached_input),
                "cache_write": m(self.cache_write), "per": "USD per million tokens", "source": self.source}


def command_line_prices(*, price_in: float | None, price_out: float | None,
                        price_cached_in: float | None) -> Prices | None:
    """The prices given for the run (USD per million tokens), or None when none was given. Both
    `--price-in` and `--price-out` are needed; `--price-cached-in` alone is refused."""
    given = {"--price-in": price_in, "--price-out": price_out, "--price-cached-in": price_cached_in}
    if all(v is None for v in given.values()):
        return None
    for flag, v in given.items():
        if v is not None and v < 0:
            raise ConfigError(f"{flag} {v}: a price cannot be negative", hint=f"give {flag} in USD per million tokens")
    if price_in is None or price_out is None:
        missing = "--price-in" if price_in is None else "--price-out"
        raise ConfigError(f"{missing} is missing: a teacher's prices need both --price-in and --price-out",
                          hint="give both, in USD per million tokens, e.g. --price-in 0.5 --price-out 1.5")
    if price_cached_in is not None and price_cached_in > price_in:
        raise ConfigError(f"--price-cached-in {price_cached_in} is above --price-in {price_in}",
                          hint="cached input costs at most the input price; omit --price-cached-in when unsure")
    return Prices(input=price_in / PER_MILLION, output=price_out / PER_MILLION,
                  cached_input=None if price_cached_in is None else price_cached_in / PER_MILLION,
                  source="command line")


def cost_map_entry(model: str | None) -> dict[str, Any] | None:
    """LiteLLM's cost-map entry for `model` (prices, caching support), or None where it has none."""
    if not model:
        return None
    import litellm

    try:
        return dict(litellm.get_model_info(model))
    except Exception:  # noqa: BLE001 - the cost map raises bare Exception for an unknown model
        return None


def map_prices(model: str | None) -> Prices | None:
    """Online prices from LiteLLM's cost map (with the cached-input rates it lists), or None."""
    info = cost_map_entry(model)
    if info is None:
        return None
    p, c = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    if not (isinstance(p, (int, float)) and isinstance(c, (int, float))):
        return None
    read, write = info.get("cache_read_input_token_cost"), info.get("cache_creation_input_token_cost")
    return Prices(input=float(p), output=float(c),
                  cached_input=float(read) if isinstance(read, (int, float)) else None,
                  cache_write=float(write) if isinstance(write, (int, float)) else None)


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


def per_token_prices(model: str | None, *, batch: bool = False) -> tuple[float, float] | None:
    """(input, output) USD per token from LiteLLM's cost map, or None when the map lacks the model.
    With `batch`, a provider's batch API prices (`input_cost_per_token_batches`,
    `output_cost_per_token_batches`), or None where the map gives none: a batch result is then
    unpriced (null), never priced at the online rate as a guess."""
    import litellm

    if not model:
        return None
    try:
        info = litellm.get_model_info(model)
    except Exception:  # noqa: BLE001 - the cost map raises bare Exception for an unknown model
        return None
    suffix = "_batches" if batch else ""
    p, c = info.get(f"input_cost_per_token{suffix}"), info.get(f"output_cost_per_token{suffix}")
    return (float(p), float(c)) if isinstance(p, (int, float)) and isinstance(c, (int, float)) else None


def batch_prices(model: str | None) -> tuple[float, float] | None:
    """(input, output) USD per token of the provider's batch API (see `per_token_prices`)."""
    return per_token_prices(model, batch=True)


def _models_of(teacher: Teacher) -> list[str]:
    if teacher.router is not None:
        return []
    return [teacher.model] if teacher.model else []


def price(teacher: Teacher, *, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float | None:
    """USD for that many tokens (none of them cached) on this teacher: at the prices given for the
    run, else from LiteLLM's cost map (with `batch`, at its batch prices); None when not priced (the embedded teacher, local servers, models the map does not
    know, routers over several)."""
    given = getattr(teacher, "prices", None)
    if given is not None:
        return given.cost(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    import litellm

    models = _models_of(teacher)
    if not models or teacher.embedded:
        return None
    if batch:
        prices = batch_prices(models[0])
        return None if prices is None else prompt_tokens * prices[0] + completion_tokens * prices[1]
    try:
        p, c = litellm.cost_per_token(model=models[0], prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    except Exception:  # noqa: BLE001 - "model isn't mapped yet"
        return None
    return float(p + c)


def is_priced(teacher: Teacher, *, batch: bool = False) -> bool:
    """Whether LiteLLM's cost map prices this teacher (what `--max-cost` needs); with `batch`, at
    its batch prices."""
    if getattr(teacher, "prices", None) is not None:
        return True
    if batch:
        return price(teacher, prompt_tokens=1000, completion_tokens=1000, batch=True) is not None
    if teacher.router is not None:
        import litellm

        try:
            return all(
                litellm.cost_per_token(model=d["litellm_params"]["model"], prompt_tokens=1, completion_tokens=1)
                for d in teacher.router.model_list if d.get("model_name") == teacher.name)
        except Exception:  # noqa: BLE001 - an unpriced deployment
            return False
    return price(teacher, prompt_tokens=1000, completion_tokens=1000) is not None
