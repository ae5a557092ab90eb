"""The students' losses, one per file, each documented and checking its inputs.

The reasoning student's R2R objective is `RankNetLoss` (pairwise) + `ListNetLoss` (listwise) on its
verdict scores + `GenerationLoss` on the verdict and reasoning tokens. The cross-encoder trains with
sentence-transformers' own losses, each scaled by `WeightedLoss`.
"""

from r2r_synth.student.losses.generation import GenerationLoss
from r2r_synth.student.losses.listnet import ListNetLoss
from r2r_synth.student.losses.ranknet import RankNetLoss
from r2r_synth.student.losses.weighted import WeightedLoss

__all__ = ["GenerationLoss", "ListNetLoss", "RankNetLoss", "WeightedLoss"]
