"""`generate --dry-run`: what a run would ask and cost, without asking anybody or writing anything."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from r2r_synth.config import GenerateConfig
from r2r_synth.generate.jobs import Job
from r2r_synth.generate.prompts import PromptPlan
from r2r_synth.teacher.pricing import price


@dataclass
class DryRunEstimate:
    """What a run would ask, without asking: requests, LM calls, tokens and (if priced) cost, and
    the programs it would use (name -> program hash, prompt hash)."""

    requests: dict[str, int]
    skipped_done: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    completion_tokens_assumed_per_call: int
    cost: float | None
    teacher: str
    programs: dict[str, dict[str, str]]


def estimate(config: GenerateConfig, jobs: list[Job], done: set[str], programs: dict[str, Any],
             teacher: Any) -> DryRunEstimate:
    """Count requests and LM calls; count prompt tokens on a sample of the real prompts (the same
    messages the engine would send)."""
    todo = [j for j in jobs if j.key not in done]
    plan = PromptPlan(teacher=teacher, programs=programs)
    per_call_completion = config.max_tokens or 200
    calls = sum(1 if j.kind == "direct" else 2 for j in todo)
    sample = todo[:: max(1, len(todo) // 64)][:64]
    tok = 0
    sampled_calls = 0
    for j in sample:
        ins = j.inputs()
        fields = ({"query": ins["query"], "document": ins["document"]} if j.kind == "direct" else
                  {"query": ins["query"], "document_a": ins["document_a"], "document_b": ins["document_b"]})
        mult = 1 if j.kind == "direct" else 2
        tok += _count_tokens(teacher.model, plan.messages(j.kind, fields)) * mult
        sampled_calls += mult
    prompt_tokens = int(tok / sampled_calls * calls) if sampled_calls else 0
    completion_tokens = per_call_completion * calls
    kinds = sorted({j.kind for j in jobs}, key=["direct", "comparison"].index)
    return DryRunEstimate(
        requests={k: sum(1 for j in todo if j.kind == k) for k in kinds}, skipped_done=len(jobs) - len(todo),
        calls=calls, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        completion_tokens_assumed_per_call=per_call_completion,
        cost=price(teacher, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens), teacher=teacher.name,
        programs={k: {"program_hash": programs[k].program_hash, "prompt_hash": programs[k].prompt_hash}
                  for k in kinds})


def _count_tokens(model: str | None, messages: list[dict[str, Any]]) -> int:
    try:
        import litellm

        return int(litellm.token_counter(model=model or "gpt-4o", messages=messages))
    except Exception:  # noqa: BLE001 - an unknown tokenizer: ~4 characters a token
        return sum(len(m["content"]) for m in messages) // 4
