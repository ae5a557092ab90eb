"""RankNet on the teacher's pairwise preferences (the reasoning student's pairwise objective)."""

from __future__ import annotations

import torch
from torch import nn

from r2r_synth.student.losses._lists import check_lists


class RankNetLoss(nn.Module):
    """Pairwise RankNet loss on a batch of padded lists of student scores.

    For every pair (i, j) of one list that the teacher orders i above j it computes
    ``softplus(-(s_i - s_j)) = -log sigmoid(s_i - s_j)``, and returns the mean over all such pairs of
    the batch. The reasoning student weighs it 0.4, as R2R does (`pairwise_weight`).

    Args:
        scores: (B, n) float, the student's scores (the log-odds of " yes" at the verdict position).
        prefer: (B, n, n) bool, ``prefer[b, i, j]``: the teacher ranks document i above document j.
        mask: (B, n) bool, True for the real documents of each list (lists are padded to n).

    References:
        - Burges et al., Learning to Rank using Gradient Descent (ICML 2005):
          https://www.microsoft.com/en-us/research/publication/learning-to-rank-using-gradient-descent/
        - Ji et al., Reason-to-Rank, the pairwise term of the student's loss: https://arxiv.org/abs/2410.05168

    Requirements:
        1. One row per query: scores of that query's documents, padded to the longest list.
        2. At least one teacher preference in the batch, between two real documents of one list.

    Inputs:
        +--------------------------------------+--------------------------------------+---------------------+
        | Scores                               | Labels                               | Mask                |
        +======================================+======================================+=====================+
        | (B, n) float: one score per document | (B, n, n) bool: i preferred over j   | (B, n) bool         |
        +--------------------------------------+--------------------------------------+---------------------+

    Raises `ValueError` when shapes or dtypes disagree, a preference names a padded slot, or the batch
    holds no preference at all (a pairwise loss of nothing would silently train nothing).

    Example:
        ::

            scores = torch.tensor([[2.0, 0.0, 1.0]])
            prefer = torch.zeros(1, 3, 3, dtype=torch.bool)
            prefer[0, 0, 1] = prefer[0, 2, 1] = True  # documents 0 and 2 above document 1
            loss = RankNetLoss()(scores, prefer, torch.ones(1, 3, dtype=torch.bool))
    """

    def forward(self, scores: torch.Tensor, prefer: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        check_lists("RankNetLoss", scores, mask)
        b, n = scores.shape
        if prefer.shape != (b, n, n) or prefer.dtype != torch.bool:
            raise ValueError(
                f"RankNetLoss: prefer must be a bool tensor of shape {(b, n, n)}; "
                f"got {prefer.dtype} {tuple(prefer.shape)}"
            )
        valid_pairs = mask.unsqueeze(2) & mask.unsqueeze(1)
        if (prefer & ~valid_pairs).any():
            raise ValueError("RankNetLoss: a preference names a padded document slot (mask is False there)")
        if not prefer.any():
            raise ValueError(
                "RankNetLoss: no teacher preference in the batch; each list needs at least 2 documents "
                "the teacher ordered (set pairwise_weight=0 for corpora without preferences)"
            )
        diff = scores.unsqueeze(2) - scores.unsqueeze(1)  # [b, i, j] = s_i - s_j
        return nn.functional.softplus(-diff[prefer]).mean()
