"""A weight on a sentence-transformers cross-encoder loss, so the cross-encoder's objectives can be mixed."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class WeightedLoss(nn.Module):
    """``weight * loss(inputs, labels)`` for a sentence-transformers cross-encoder loss.

    The cross-encoder student trains one dataset per objective (distill, listwise, pointwise,
    pairwise) with the trainer's multi-dataset mode, which sums nothing itself: each step trains one
    objective. This wrapper scales that objective by its `--*-weight`. `model` is the wrapped loss's
    model, so the trainer can swap in its wrapped model (DDP) as it does for any sentence-transformers
    loss.

    Args:
        loss: a loss of `sentence_transformers.cross_encoder.losses` (anything with a `model`).
        weight: the objective's weight; must be > 0 (leave an objective out instead of weighing it 0).

    References:
        - sentence-transformers, training a cross-encoder with several datasets and losses:
          https://sbert.net/docs/cross_encoder/training_overview.html

    Requirements:
        1. Whatever the wrapped loss requires.

    Inputs:
        +--------------------------------------+-----------------------------------+
        | Inputs                               | Labels                            |
        +======================================+===================================+
        | those of the wrapped loss            | those of the wrapped loss         |
        +--------------------------------------+-----------------------------------+

    Raises `ValueError` when `loss` has no `model` or `weight` is not > 0.

    Example:
        ::

            from sentence_transformers.cross_encoder import CrossEncoder, losses

            model = CrossEncoder("cross-encoder/ms-marco-MiniLM-L6-v2")
            loss = WeightedLoss(losses.LambdaLoss(model), weight=0.5)
    """

    def __init__(self, loss: nn.Module, *, weight: float):
        super().__init__()
        if not hasattr(loss, "model"):
            raise ValueError(
                f"WeightedLoss wraps a sentence-transformers cross-encoder loss (one with a `model`); "
                f"got {type(loss).__name__}"
            )
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
