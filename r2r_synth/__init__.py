"""r2r-synth: distill an LLM's reasoning about relevance into a small, explainable reranker."""

__version__ = "0.1.0"
