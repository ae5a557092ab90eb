"""Token usage as a provider reports it, cached input included.

Providers report prompt-cache hits in different places; LiteLLM maps most of them onto OpenAI's
shape, and the direct transport reads OpenAI's shape itself:

- OpenAI (and vLLM, DeepSeek, Gemini through LiteLLM): `usage.prompt_tokens_details.cached_tokens`;
- Anthropic through LiteLLM: `usage.cache_read_input_tokens` (reads) and
  `usage.cache_creation_input_tokens` (writes, billed above the input rate), both counted in
  `prompt_tokens`.

`read_usage` is the one place a reply's usage is read, so it is also where an impossible count is
caught: cached (read + written) input tokens above the prompt's tokens is a `ProviderUsageError`
naming the teacher and the counts, raised before anything is priced or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from r2r_synth.errors import ProviderUsageError


@dataclass(frozen=True)
class TokenCounts:
    """One reply's tokens: `prompt` counts every input token; `cached` of them were read from the
    provider's prompt cache and `cache_write` were written to it."""

    prompt: int = 0
    completion: int = 0
    cached: int = 0
    cache_write: int = 0


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def read_usage(usage: Any, *, teacher: str) -> TokenCounts:
    """The counts of a reply's `usage` (a dict from the wire, or LiteLLM's `Usage`). Raises
    `ProviderUsageError` when the cached counts exceed the prompt (see the module docstring)."""
    details = _get(usage, "prompt_tokens_details")
    prompt, completion = _int(_get(usage, "prompt_tokens")), _int(_get(usage, "completion_tokens"))
    cached = _int(_get(details, "cached_tokens")) or _int(_get(usage, "cache_read_input_tokens"))
    write = _int(_get(usage, "cache_creation_input_tokens")) or _int(_get(details, "cache_creation_tokens"))
    if cached < 0 or write < 0 or cached + write > prompt:
        raise ProviderUsageError(
            f"the teacher {teacher!r} reported {cached:,} cached + {write:,} cache-written input tokens for a prompt "
            f"of {prompt:,} tokens: a provider or proxy bug (nothing from this reply was kept, since its cost "
            "cannot be computed)",
            hint="report it to the provider (or the proxy in front of it); once its usage is right, rerun the same "
                 "command to resume")
    return TokenCounts(prompt=prompt, completion=completion, cached=cached, cache_write=write)
