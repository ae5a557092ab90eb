"""Provider prompt caching: which teachers need the prompt marked, and the marking.

Every request of a run starts with the same static prefix: the program's instructions (the system
message DSPy's adapter writes) and its demos; then the query; then the document or window (the
signatures put `query` first, so a query's requests share that much too). Providers cache such
prefixes in one of two ways:

- **on their own** (OpenAI and Azure for prefixes of 1,024 tokens or more, DeepSeek, Gemini's
  implicit cache, vLLM's automatic prefix caching): nothing to mark; the cached tokens are read from
  each reply's usage (`r2r_synth.teacher.usage`);
- **when asked** (Anthropic's `cache_control`, also for Claude on Bedrock and Vertex AI): the last
  message of the static prefix carries `{"cache_control": {"type": "ephemeral"}}`, which LiteLLM
  passes on to the provider (https://docs.litellm.ai/docs/completion/prompt_caching).

`generate` marks by default where marking is needed; `--no-prompt-cache` marks nothing;
`--prompt-cache` given for a teacher that cannot cache is refused (`check_prompt_cache`).
"""

from __future__ import annotations

from typing import Any

from r2r_synth.errors import ConfigError
from r2r_synth.teacher.pricing import cost_map_entry

CACHE_CONTROL = {"type": "ephemeral"}
#: Providers whose cache is used only where the prompt is marked (Claude on any of them).
MARKING_PROVIDERS = frozenset({"anthropic"})
_CLAUDE_HOSTS = frozenset({"bedrock", "bedrock_converse", "vertex_ai", "vertex_ai_beta"})


def provider_of(model: str | None) -> str:
    """The LiteLLM provider prefix of a model string (``gpt-4o`` has none: OpenAI)."""
    if not model:
        return ""
    head, sep, _ = model.partition("/")
    return head if sep else ("anthropic" if model.startswith("claude") else "openai")


def needs_marking(model: str | None) -> bool:
    """Whether this teacher's provider caches only what a request marks (Anthropic's Claude)."""
    provider = provider_of(model)
    return provider in MARKING_PROVIDERS or (provider in _CLAUDE_HOSTS and "claude" in (model or "").lower())


def can_cache(model: str | None) -> bool:
    """Whether the model's provider caches prompts: a model whose cache is marked, or one LiteLLM's
    cost map lists as supporting prompt caching or prices cached input for (OpenAI's models carry a
    `cache_read_input_token_cost` without the flag)."""
    if needs_marking(model):
        return True
    info = cost_map_entry(model)
    if info is None:
        return False
    return bool(info.get("supports_prompt_caching")) or isinstance(info.get("cache_read_input_token_cost"),
                                                                   (int, float))


def check_prompt_cache(flag: bool | None, *, model: str | None, teacher: str, embedded: bool = False,
                       router: bool = False) -> bool:
    """Whether requests are marked for the provider's cache: `flag` None (the default) marks where
    the provider needs marking; False never. `flag` True (asked for explicitly) is refused with a
    `ConfigError` for a teacher that cannot cache: the embedded one, a router over several models, or
    a model LiteLLM's cost map neither lists as caching nor prices cached input for."""
    if flag is False:
        return False
    if flag and (embedded or router or not can_cache(model)):
        what = ("the embedded teacher" if embedded else f"the router group {teacher!r}" if router
                else f"{teacher!r} (LiteLLM's cost map does not list it as supporting prompt caching)")
        raise ConfigError(
            f"--prompt-cache: {what} cannot cache prompts",
            hint="drop --prompt-cache: a self-hosted server that caches by itself (vLLM's prefix caching) needs no "
                 "flag, its cached tokens are counted from each reply without it")
    return needs_marking(model)


def mark_prefix(messages: list[dict[str, Any]], prefix: int) -> list[dict[str, Any]]:
    """A copy of `messages` whose last static-prefix message (the `prefix` leading messages: the
    instructions and demos) carries `cache_control`, as a text content block."""
    if prefix < 1 or prefix > len(messages):
        return messages
    out = list(messages)
    last = dict(out[prefix - 1])
    content = last.get("content")
    if isinstance(content, str):
        last["content"] = [{"type": "text", "text": content, "cache_control": dict(CACHE_CONTROL)}]
    elif isinstance(content, list) and content:
        blocks = [dict(b) for b in content]
        blocks[-1]["cache_control"] = dict(CACHE_CONTROL)
        last["content"] = blocks
    out[prefix - 1] = last
    return out
