"""`generate --dry-run`: what a run would ask and cost, without asking anybody or writing anything."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from r2r_synth.config import GenerateConfig
from r2r_synth.generate.jobs import Job
from r2r_synth.generate.prompts import PromptPlan
from r2r_synth.generate.windows import Chain
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
             teacher: Any, *, chains: list[Chain] | None = None) -> DryRunEstimate:
    """Count requests and LM calls; count prompt tokens on a sample of the real prompts (the same
    messages the engine would send). Listwise `chains` (already walked through their finished
    windows, see `windows.replay`) count one call per window still to ask; a window's prompt is
    sampled over the query's current order, since the order later windows see depends on the answers."""
    chains = chains or []
    todo = [j for j in jobs if j.key not in done]
    plan = PromptPlan(teacher=teacher, programs=programs)
    per_call_completion = config.max_tokens or 200
    windows = [(c, i) for c in chains for i in range(c.next, len(c.spans))]
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
    if windows:
        # A window's reply has a reason per passage: LISTWISE_TOKENS_PER_PASSAGE each (unless --max-tokens).
        from r2r_synth.generate.engine import LISTWISE_TOKENS_PER_PASSAGE

        wtok, lw_completion = 0, 0
        picked = windows[:: max(1, len(windows) // 64)][:64]
        for c, i in picked:
            start, end = c.spans[i]
            docs = c.order[start:end]
            inputs = {"query": c.cand.query.text,
                      "passages": [{"identifier": n + 1, "text": d.full_text()} for n, d in enumerate(docs)]}
            wtok += _count_tokens(teacher.model, plan.messages("listwise", inputs))
        for c, i in windows:
            start, end = c.spans[i]
            lw_completion += config.max_tokens or LISTWISE_TOKENS_PER_PASSAGE * (end - start)
        prompt_tokens += int(wtok / len(picked) * len(windows))
        completion_tokens += lw_completion
        calls += len(windows)
    kinds = sorted({j.kind for j in jobs} | ({"listwise"} if chains else set()),
                   key=["direct", "comparison", "listwise"].index)
    requests = {k: sum(1 for j in todo if j.kind == k) for k in kinds}
    if chains:
        requests["listwise"] = len(windows)
    per_call = completion_tokens // calls if calls else per_call_completion
    return DryRunEstimate(
        requests=requests, skipped_done=len(jobs) - len(todo) + sum(c.next for c in chains),
        calls=calls, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        completion_tokens_assumed_per_call=per_call,
        cost=price(teacher, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens), teacher=teacher.name,
        programs={k: {"program_hash": programs[k].program_hash, "prompt_hash": programs[k].prompt_hash}
                  for k in kinds})


def _count_tokens(model: str | None, messages: list[dict[str, Any]]) -> int:
    try:
        import litellm

        return int(litellm.token_counter(model=model or "gpt-4o", messages=messages))
    except Exception:  # noqa: BLE001 - an unknown tokenizer: ~4 characters a token
        return sum(len(m["content"]) for m in messages) // 4
