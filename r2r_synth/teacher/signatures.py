"""The teacher's contracts: typed DSPy signatures for direct and comparison reasoning.

The instructions a teacher sees come from `r2r_synth/prompts/direct.md` and `.../comparison.md`
(humans edit those files, optimizers write `programs/*.json`); the class docstrings below are only the
fallback for an installation without the prompt files. Field names are part of the data contract:
`generate` maps them one to one onto `DirectRecord` / `ComparisonRecord`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import dspy

# The instruction files ship inside the package (r2r_synth/prompts/*.md), in a checkout and a wheel alike.
PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"


def read_prompt(name: str) -> str | None:
    """The instruction text of program `name` (`r2r_synth/prompts/<name>.md`), stripped, or None if absent."""
    path = PROMPTS_DIR / f"{name}.md"
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


class DirectRelevance(dspy.Signature):
    """Judge how relevant the passage is to the search query: explain, then grade 0-3 and give a
    probability of relevance."""

    query: str = dspy.InputField(desc="the searcher's query")
    document: str = dspy.InputField(desc="the passage to judge")
    reasoning: str = dspy.OutputField(desc="how the passage does or does not answer the query (2-4 sentences)")
    relevance: int = dspy.OutputField(desc="graded relevance: 0 irrelevant, 1 related, 2 highly relevant, 3 perfect")
    score: float = dspy.OutputField(desc="probability between 0 and 1 that the passage is relevant")


class Comparison(dspy.Signature):
    """Decide which of two passages better answers the search query, explain why, and say how sure
    you are."""

    query: str = dspy.InputField(desc="the searcher's query")
    document_a: str = dspy.InputField(desc="Passage A")
    document_b: str = dspy.InputField(desc="Passage B")
    reasoning: str = dspy.OutputField(desc="why one passage answers the query better than the other (2-4 sentences)")
    preferred: Literal["A", "B"] = dspy.OutputField(desc="the more relevant passage: A or B")
    confidence: float = dspy.OutputField(desc="probability between 0 and 1 that the preference is right")


SIGNATURES: dict[str, type[dspy.Signature]] = {"direct": DirectRelevance, "comparison": Comparison}

# The prompt files are the source of truth for the instructions; apply them at import so that
# `DirectRelevance` used directly (e.g. in a notebook) sees the same text as `build_program`.
for _name, _sig in SIGNATURES.items():
    _text = read_prompt(_name)
    if _text:
        _sig.instructions = _text
