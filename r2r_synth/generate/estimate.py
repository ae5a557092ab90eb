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
    #: With --batch / --export-batch: the plan of the next submission (see `batch_plan`).
    batch: dict[str, Any] | None = None
    #: Tokens of each kind's static prefix (instructions and demos), which every call of it repeats.
    prefix_tokens: dict[str, int] | None = None
    #: Prompt tokens a provider's prompt cache would serve, and write (see `cache_estimate`).
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    #: The cost with those tokens at the cached-input price (None: unpriced).
    cost_with_cache: float | None = None
    #: Why nothing would be cached, where nothing would (a prefix below the providers' minimum, ...).
    cache_note: str | None = None


def estimate(config: GenerateConfig, jobs: list[Job], done: set[str], programs: dict[str, Any],
             teacher: Any, *, chains: list[Chain] | None = None, batch: str | None = None,
             in_flight: list[Any] | None = None) -> DryRunEstimate:
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
    line_bytes: list[int] = []  # sampled batch lines (--batch, --export-batch)
    for j in sample:
        ins = j.inputs()
        fields = ({"query": ins["query"], "document": ins["document"]} if j.kind == "direct" else
                  {"query": ins["query"], "document_a": ins["document_a"], "document_b": ins["document_b"]})
        mult = 1 if j.kind == "direct" else 2
        messages = plan.messages(j.kind, fields)
        tok += _count_tokens(teacher.model, messages) * mult
        sampled_calls += mult
        if batch:
            line_bytes.append(_line_bytes(teacher, messages, plan.extra[j.kind]))
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
            messages = plan.messages("listwise", inputs)
            wtok += _count_tokens(teacher.model, messages)
            if batch:
                line_bytes.append(_line_bytes(teacher, messages, plan.extra["listwise"]))
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
    calls_by_kind = {"direct": sum(1 for j in todo if j.kind == "direct"),
                     "comparison": 2 * sum(1 for j in todo if j.kind == "comparison"), "listwise": len(windows)}
    prefix_tokens = {k: (_count_tokens(teacher.model, plan.prefix[k]) if plan.prefix_len(k) else 0)
                     for k in kinds_of(jobs, chains)}
    cost = price(teacher, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    cached, write, cost_cached, note = cache_estimate(
        teacher, prefix_tokens=prefix_tokens, calls=calls_by_kind, prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens, cost=cost)
    plan_out = None
    if batch:
        first_round = (calls - len(windows)) + len({id(c) for c, _ in windows})
        plan_out = batch_plan(config, teacher, mode=batch, calls=first_round, line_bytes=line_bytes,
                              rounds=max((len(c.spans) - c.next for c in chains if not c.finished), default=1),
                              prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                              in_flight=in_flight or [])
    return DryRunEstimate(
        requests=requests, skipped_done=len(jobs) - len(todo) + sum(c.next for c in chains),
        calls=calls, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        completion_tokens_assumed_per_call=per_call,
        cost=cost, teacher=teacher.name,
        programs={k: {"program_hash": programs[k].program_hash, "prompt_hash": programs[k].prompt_hash}
                  for k in kinds}, batch=plan_out, prefix_tokens=prefix_tokens, cached_tokens=cached, cache_write_tokens=write,
        cost_with_cache=cost_cached, cache_note=note)


def kinds_of(jobs: list[Job], chains: list[Chain]) -> list[str]:
    """The kinds a job list asks, in the usual order."""
    return sorted({j.kind for j in jobs} | ({"listwise"} if chains else set()),
                  key=["direct", "comparison", "listwise"].index)


#: The shortest prefix OpenAI and Anthropic cache (Anthropic's Haiku models need 2,048).
MIN_CACHED_PREFIX = 1024


def cache_estimate(teacher: Any, *, prefix_tokens: dict[str, int], calls: dict[str, int], prompt_tokens: int,
                   completion_tokens: int, cost: float | None) -> tuple[int, int, float | None, str | None]:
    """(cached tokens, cache-written tokens, cost with caching, note) of a job whose calls of each
    kind repeat that kind's static prefix. The estimate assumes the cache lives through the job (the
    engine sends a query's requests together, one after the other): every call of a kind but its
    first reads the prefix from the cache, and the first writes it where the provider bills writes
    (Anthropic). A prefix shorter than `MIN_CACHED_PREFIX` is not cached; the query's share of the
    prompt (cached by OpenAI beyond 1,024 tokens) is left out, so the estimate errs high."""
    from r2r_synth.teacher.caching import needs_marking
    from r2r_synth.teacher.pricing import map_prices

    marked = bool(getattr(teacher, "cache_marking", False))
    if needs_marking(teacher.model) and not marked:
        return 0, 0, cost, "--no-prompt-cache: the provider caches only marked prompts"
    cacheable = {k: t for k, t in prefix_tokens.items() if t >= MIN_CACHED_PREFIX and calls.get(k)}
    if not cacheable:
        longest = max(prefix_tokens.values(), default=0)
        return 0, 0, cost, (f"the static prefix ({longest:,} tokens) is below the {MIN_CACHED_PREFIX:,} tokens "
                            "providers cache")
    cached = sum(t * (calls[k] - 1) for k, t in cacheable.items())
    write = sum(cacheable.values()) if marked else 0
    prices = getattr(teacher, "prices", None) or (None if getattr(teacher, "embedded", False)
                                                   else map_prices(teacher.model))
    if cost is None or prices is None:
        return cached, write, None, None
    with_cache = prices.cost(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                             cached_tokens=cached, cache_write_tokens=write)
    note = None if prices.cached_input is not None else "no cached-input price is known: cached tokens at full price"
    return cached, write, with_cache, note


def _line_bytes(teacher: Any, messages: list[dict[str, Any]], extra: dict[str, Any]) -> int:
    """Bytes of one batch input line for these messages (what `generate.batch.Call.line` writes)."""
    from r2r_synth.generate.batch import Call, request_body, wire_model

    return len(Call(cid="x" * 24, key="", body=request_body(wire_model(teacher), teacher, messages, extra),
                    reply_tokens=0).encoded)


def batch_plan(config: GenerateConfig, teacher: Any, *, mode: str, calls: int, line_bytes: list[int], rounds: int,
               prompt_tokens: int, completion_tokens: int, in_flight: list[Any]) -> dict[str, Any]:
    """The next submission of --batch (or the next --export-batch file): the calls of its first
    round (every direct and comparison call, one window per listwise query), the files they split
    into at the provider's limits, the rounds listwise windows take (one window per query per batch),
    and the whole job's cost at batch prices (None where LiteLLM does not price them)."""
    import math

    from r2r_synth.generate.batch_api import DEFAULT_LIMITS, LIMITS, MB
    from r2r_synth.teacher.pricing import price

    calls = max(0, calls - sum(len(u.items) for u in in_flight))  # those are submitted already
    provider = "file"
    max_n, max_bytes = calls or 1, 0
    avg = sum(line_bytes) / len(line_bytes) if line_bytes else 0.0
    if mode == "batch":
        from r2r_synth.generate.batch_api import check_provider

        provider = check_provider(teacher)
        max_n, max_bytes = LIMITS.get(provider, DEFAULT_LIMITS)
        max_n = min(max_n, config.batch_size or max_n)
    files = max(math.ceil(calls / max_n), math.ceil(calls * avg / max_bytes) if max_bytes else 0) if calls else 0
    per_file = [calls // files + (1 if i < calls % files else 0) for i in range(files)] if files else []
    return {"mode": mode, "provider": provider, "calls": calls, "files": files, "requests_per_file": per_file,
            "bytes": int(calls * avg), "max_requests_per_file": max_n if mode == "batch" else None,
            "max_mb_per_file": max_bytes // MB if max_bytes else None, "rounds": rounds if calls else 0,
            "cost": price(teacher, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, batch=True),
            "in_flight_requests": sum(len(u.items) for u in in_flight), "in_flight_batches": len(in_flight)}


def _count_tokens(model: str | None, messages: list[dict[str, Any]]) -> int:
    try:
        import litellm

        return int(litellm.token_counter(model=model or "gpt-4o", messages=messages))
    except Exception:  # noqa: BLE001 - an unknown tokenizer: ~4 characters a token
        return sum(len(m["content"]) for m in messages) // 4
