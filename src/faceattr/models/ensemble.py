"""Several trained attribute networks as one: each normalises the shared input its own way, logits averaged.

An ensemble is not a registry entry (it has no builder and no pretrained weights): it is rebuilt
from a checkpoint whose ``model`` block lists its members, each with the registry name, kwargs and
normalisation it was trained with::

    {"name": "ensemble", "members": [{"name": "mobilenet_v2", "kwargs": {...},
                                      "mean": [3], "std": [3]}, ...]}

The ensemble's own preprocessing resizes and crops like every member (they must agree) and leaves
pixels in 0..1 (mean 0, std 1); each member then applies its own mean/std inside the graph, so one
ONNX file holds the whole thing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from faceattr.errors import FaceattrError
from faceattr.models.registry import ENSEMBLE, create_model

__all__ = ["ENSEMBLE", "EnsembleNet", "ensemble_from_spec"]


class EnsembleNet(nn.Module):
    """Input 0..1 RGB [N, 3, H, W] -> mean of the members' logits, each member fed its own normalisation."""

    def __init__(
        self,
        members: Sequence[nn.Module],
        means: Sequence[Sequence[float]],
        stds: Sequence[Sequence[float]],
    ) -> None:
        super().__init__()
        if len(members) < 2:
            raise FaceattrError(f"an ensemble needs at least 2 members, got {len(members)}")
        if not len(members) == len(means) == len(stds):
            raise FaceattrError("an ensemble needs one mean and one std per member")
        self.members = nn.ModuleList(members)
        # Not persistent: they are rebuilt from the checkpoint's metadata, so the weights file holds
        # only the members' own tensors.
        for i, (mean, std) in enumerate(zip(means, stds, strict=True)):
            self.register_buffer(f"mean_{i}", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
            self.register_buffer(f"std_{i}", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the members' logits averaged (same shape as one member's output)."""
        total: torch.Tensor | None = None
        for i, member in enumerate(self.members):
            logits = member((x - getattr(self, f"mean_{i}")) / getattr(self, f"std_{i}"))
            total = logits if total is None else total + logits
        assert total is not None  # at least two members, checked in __init__
        return total / len(self.members)


def _member_error(i: int, why: str) -> FaceattrError:
    return FaceattrError(f"ensemble member {i} in the checkpoint metadata is invalid ({why}); rebuild it with `faceattr ensemble`")


def ensemble_from_spec(spec: Mapping[str, Any]) -> EnsembleNet:
    """Build an untrained EnsembleNet from a checkpoint's ``model`` block (name 'ensemble')."""
    members = spec.get("members")
    if not isinstance(members, list) or len(members) < 2:
        raise FaceattrError("ensemble checkpoint metadata lists fewer than 2 members; rebuild it with `faceattr ensemble`")
    nets: list[nn.Module] = []
    means: list[list[float]] = []
    stds: list[list[float]] = []
    for i, m in enumerate(members):
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not isinstance(m.get("kwargs"), dict):
            raise _member_error(i, "needs 'name' and 'kwargs'")
        if m["name"] == ENSEMBLE:
            raise _member_error(i, "an ensemble cannot nest another ensemble")
        mean, std = m.get("mean"), m.get("std")
        if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == 3 and len(std) == 3):
            raise _member_error(i, "needs 3-value 'mean' and 'std'")
        nets.append(create_model(m["name"], pretrained=False, **m["kwargs"]))
        means.append([float(v) for v in mean])
        stds.append([float(v) for v in std])
    return EnsembleNet(nets, means, stds)
