"""`plural(1, "query")` is ``1 query``, `plural(5, "query")` is ``5 queries``: counts in messages."""

from __future__ import annotations

#: Words whose plural is not the word + "s" (or "y" -> "ies" after a consonant).
_IRREGULAR = {"is": "are", "was": "were", "this": "these", "that": "those"}


def plural(n: int, word: str, many: str | None = None) -> str:
    """``{n} {word}``, the word in its plural form unless `n` is 1 (`many` overrides the plural)."""
    return f"{n} {word if n == 1 else many or plural_form(word)}"


def plural_form(word: str) -> str:
    """``queries`` for ``query``, ``systems`` for ``system``, ``passes`` for ``pass``."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    return word + "s"
