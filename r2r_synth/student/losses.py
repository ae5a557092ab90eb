"""Loss plumbing for the cross-encoder student. The losses themselves are sentence-transformers'
(`sentence_transformers.cross_encoder.losses`); this module only weighs them, so that pointwise,
pairwise and listwise objectives can be combined with `--pointwise-weight` & co.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class WeightedLoss(nn.Module):
    """`weight * loss(...)`. Used with the trainer's multi-dataset mode (one dataset per loss), which
    sums nothing itself: each step trains one objective, scaled by its weight.

    Inputs and labels are whatever the wrapped loss takes; `model` is exposed so the trainer can swap
    in its wrapped model (DDP) as it does for any sentence-transformers loss.
    """

    def __init__(self, loss: nn.Module, weight: float):
        super().__init__()
        if not weight > 0:
            raise ValueError(f"a loss weight must be > 0, got {weight}; leave the objective out instead")
        self.loss = loss
        self.weight = float(weight)

    @property
    def model(self) -> nn.Module:
        return self.loss.model

    def forward(self, inputs: Any, labels: Any, **kwargs: Any) -> torch.Tensor:
        return self.weight * self.loss(inputs, labels, **kwargs)

    def get_config_dict(self) -> dict[str, Any]:
        inner = getattr(self.loss, "get_config_dict", dict)()
        return {"loss": type(self.loss).__name__, "weight": self.weight, **inner}
