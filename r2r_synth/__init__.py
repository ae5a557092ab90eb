"""r2r-synth: distill an LLM's reasoning about relevance into a small, explainable reranker."""

import os as _os

__version__ = "0.1.0"

# LiteLLM fetches its cost map from GitHub at import unless told otherwise: that is network at run
# time (and seconds of retries offline). The map bundled with the installed LiteLLM is the one we
# price with, so a run's cost is reproducible from its recorded litellm version. Set here, before
# any module of the package (or a caller importing it first) imports LiteLLM.
_os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
