"""Token cross-entropy on the teacher's verdict and reasoning (the reasoning student's generation objective)."""

from __future__ import annotations

import torch
from torch import nn


class GenerationLoss(nn.Module):
    """Cross-entropy of the student's next-token logits on the target tokens: the verdict (" yes" /
    " no") and the teacher's reasoning after it; the mean over target tokens. The reasoning student
    weighs it 0.2, as R2R does (`generation_weight`).

    Only the positions that predict a target are passed in (the caller applies the vocabulary
    projection there alone), so the inputs are flat: T target tokens of the whole batch.

    References:
        - Ji et al., Reason-to-Rank, the generation term of the student's loss: https://arxiv.org/abs/2410.05168

    Requirements:
        1. One row of logits per target token, in the order of the targets.
        2. At least one target token in the batch.

    Inputs:
        +---------------------------------------------+----------------------------------+
        | Logits                                      | Labels                           |
        +=============================================+==================================+
        | (T, vocab) float: at the positions that     | (T,) long: the target token ids  |
        | predict each target                         |                                  |
        +---------------------------------------------+----------------------------------+

    Raises `ValueError` on mismatched shapes or when there is no target at all.

    Example:
        ::

            logits = torch.zeros(3, 7)  # uniform over a vocabulary of 7
            loss = GenerationLoss()(logits, torch.tensor([1, 2, 3]))  # log(7)
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 2 or targets.dim() != 1 or logits.shape[0] != targets.shape[0]:
            raise ValueError(
                f"GenerationLoss: logits must be (T, vocab) and targets (T,); got {tuple(logits.shape)} "
                f"and {tuple(targets.shape)}"
            )
        if targets.numel() == 0:
            raise ValueError("GenerationLoss: no target tokens in the batch (set generation_weight=0)")
        return nn.functional.cross_entropy(logits.float(), targets)
