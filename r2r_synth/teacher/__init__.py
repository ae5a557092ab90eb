"""The teacher: DSPy signatures (the contract), programs (load/save/hash), and the LM behind them.

`signatures` and `programs` are light; `lm.open_teacher` opens a LiteLLM-backed teacher (or the
embedded offline one). Import the submodules directly.
"""

import os as _os

# LiteLLM fetches its cost map from GitHub at import unless told otherwise: that is network at run
# time (and seconds of retries offline). The map bundled with the installed LiteLLM is the one we
# price with, so a run's cost is reproducible from its recorded litellm version.
_os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
