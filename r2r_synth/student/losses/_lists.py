"""The shape checks the list losses share: a batch of padded lists of student scores."""

from __future__ import annotations

import torch


def check_lists(name: str, scores: torch.Tensor, mask: torch.Tensor, **others: torch.Tensor) -> None:
    """`ValueError` unless `scores` is (lists, documents), `mask` is a bool tensor of that shape, and
    every tensor in `others` has that shape too; `name` is the loss the message names."""
    if scores.dim() != 2:
        raise ValueError(
            f"{name}: scores must be (lists, documents), one row per query; got shape {tuple(scores.shape)}"
        )
    for key, t in {"mask": mask, **others}.items():
        if t.shape != scores.shape:
            raise ValueError(
                f"{name}: {key} must have the shape of scores {tuple(scores.shape)}; got {tuple(t.shape)}"
            )
    if mask.dtype != torch.bool:
        raise ValueError(f"{name}: mask must be a bool tensor (True = a real document); got {mask.dtype}")
