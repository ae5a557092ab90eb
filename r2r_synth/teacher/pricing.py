"""What a teacher costs, from LiteLLM's cost map (the map bundled with the installed LiteLLM; see
`r2r_synth.teacher`). A model the map does not know costs None, never a guess."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from r2r_synth.teacher.lm import Teacher


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
    """USD for that many tokens on this teacher from LiteLLM's cost map (with `batch`, at its batch
    prices); None when not priced (the embedded teacher, local servers, models the map does not
    know, routers over several)."""
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
