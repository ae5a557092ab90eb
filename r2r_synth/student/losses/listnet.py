"""ListNet on the teacher's order of a list (the reasoning student's listwise objective)."""

from __future__ import annotations

import torch
from torch import nn

from r2r_synth.student.losses._lists import check_lists


class ListNetLoss(nn.Module):
    """Listwise ListNet loss, top-one form, on a batch of padded lists of student scores.

    It computes the cross-entropy between the teacher's distribution over each list,
    ``softmax(teacher / temperature)``, and the student's ``softmax(scores)``, and returns the mean
    over lists. The teacher's permutation enters as values (higher = ranked higher, e.g.
    ``1 - relative rank``), so a list of n documents puts most of its mass on the teacher's first
    ones. The reasoning student weighs it 0.4, as R2R does (`listwise_weight`).

    Args:
        temperature: divides the teacher's values before the softmax; below 1 sharpens the teacher's
            distribution towards its first documents (the reasoning student uses 0.25). Must be > 0.

    References:
        - Cao et al., Learning to Rank: From Pairwise Approach to Listwise Approach (ICML 2007):
          https://www.microsoft.com/en-us/research/publication/learning-to-rank-from-pairwise-approach-to-listwise-approach/
        - Ji et al., Reason-to-Rank, the listwise term of the student's loss: https://arxiv.org/abs/2410.05168

    Requirements:
        1. One row per query: scores of that query's documents, padded to the longest list.
        2. At least 2 documents per list where mask is True (a one-document softmax is constant).
        3. A finite teacher value for every document where mask is True.

    Inputs:
        +--------------------------------------+------------------------------------------+---------------------+
        | Scores                               | Labels                                   | Mask                |
        +======================================+==========================================+=====================+
        | (B, n) float: one score per document | (B, n) float: teacher values, higher is  | (B, n) bool         |
        |                                      | better                                   |                     |
        +--------------------------------------+------------------------------------------+---------------------+

    Raises `ValueError` on shape or dtype mismatches, a non-finite teacher value, a list with fewer
    than 2 documents, or a temperature that is not > 0.

    Example:
        ::

            scores = torch.tensor([[1.0, 0.0, 5.0]])
            teacher = torch.tensor([[1.0, 0.0, 0.0]])
            mask = torch.tensor([[True, True, False]])  # the third slot is padding
            loss = ListNetLoss(temperature=0.5)(scores, teacher, mask)
    """

    def __init__(self, *, temperature: float = 1.0):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"ListNetLoss: temperature must be > 0; got {temperature}")
        self.temperature = temperature

    def forward(self, scores: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        check_lists("ListNetLoss", scores, mask, teacher=teacher)
        per_list = mask.sum(dim=1)
        if (per_list < 2).any():
            bad = int((per_list < 2).nonzero()[0, 0])
            raise ValueError(
                f"ListNetLoss: list {bad} has {int(per_list[bad])} document(s); a listwise loss needs at "
                "least 2 per list"
            )
        if not torch.isfinite(teacher[mask]).all():
            raise ValueError("ListNetLoss: teacher values must be finite wherever mask is True")
        neg = torch.finfo(scores.dtype).min
        target = torch.softmax((teacher / self.temperature).masked_fill(~mask, neg), dim=1)
        log_p = torch.log_softmax(scores.masked_fill(~mask, neg), dim=1)
        return -(target * log_p).masked_fill(~mask, 0.0).sum(dim=1).mean()
