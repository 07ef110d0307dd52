"""The one network shape every registry entry returns: a staged backbone plus an attribute head.

A backbone is a list of stages (for freezing by stage) followed by a pooling step that turns the
last feature map into a vector. The head maps that vector to one logit per attribute.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from faceattr.errors import FaceattrError

__all__ = [
    "AttributeNet",
    "StagedBackbone",
    "make_head",
    "global_pool",
    "set_trainable",
    "param_groups",
    "count_parameters",
]

logger = logging.getLogger(__name__)


def global_pool() -> nn.Module:
    """Return global average pooling + flatten: [N, C, H, W] -> [N, C] at any input size."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


class StagedBackbone(nn.Module):
    """Image [N, 3, H, W] -> features [N, F]: `stages` in order, then `pool`."""

    def __init__(self, stages: Sequence[nn.Module], pool: nn.Module) -> None:
        super().__init__()
        if not stages:
            raise ValueError("a backbone needs at least one stage")
        self.stages = nn.ModuleList(stages)
        # The pool must hold no parameters: set_trainable freezes and unfreezes stages only.
        if any(True for _ in pool.parameters()):
            raise ValueError("the backbone's pool must have no parameters; put learnable layers in a stage")
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run every stage, then pool to one feature vector per image."""
        for stage in self.stages:
            x = stage(x)
        return self.pool(x)


def make_head(num_features: int, num_outputs: int, *, hidden: int = 0, dropout: float = 0.0) -> nn.Sequential:
    """Return Dropout -> (Linear(F, hidden) -> ReLU -> Dropout if hidden) -> Linear(., num_outputs)."""
    # Dropout is kept even at p=0 so the Linear layers' state-dict keys never depend on `dropout`.
    layers: list[nn.Module] = [nn.Dropout(dropout)]
    width = num_features
    if hidden:
        layers += [nn.Linear(num_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = hidden
    layers.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*layers)


def _is_frozen(module: nn.Module) -> bool:
    """True when `module` has parameters and none of them trains."""
    params = list(module.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


class AttributeNet(nn.Module):
    """Backbone + head; `forward` returns logits [N, num_outputs] (no sigmoid)."""

    def __init__(
        self,
        backbone: StagedBackbone,
        num_features: int,
        *,
        num_outputs: int,
        hidden: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = make_head(num_features, num_outputs, hidden=hidden, dropout=dropout)
        self.num_features = num_features
        self.num_outputs = num_outputs

    @property
    def stages(self) -> list[nn.Module]:
        """Backbone stages in forward order (e.g. resnet: stem, layer1..layer4)."""
        return list(self.backbone.stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return one logit per attribute for each image."""
        return self.head(self.backbone(x))

    def train(self, mode: bool = True) -> AttributeNet:
        """Set train/eval mode, keeping frozen stages in eval so their BatchNorm statistics stay fixed."""
        super().train(mode)
        if mode:
            for stage in self.backbone.stages:
                if _is_frozen(stage):
                    stage.eval()
        return self


def set_trainable(model: AttributeNet, stages: int) -> None:
    """Train the head plus the last `stages` backbone stages (0: head only, -1: everything)."""
    if isinstance(stages, bool) or not isinstance(stages, int) or stages < -1:
        raise FaceattrError(f"trainable stages must be -1 (all), 0 (head only) or a positive count, got {stages!r}")
    all_stages = model.stages
    n = len(all_stages) if stages == -1 else min(stages, len(all_stages))
    model.backbone.requires_grad_(False)
    for stage in all_stages[len(all_stages) - n :]:
        stage.requires_grad_(True)
    model.head.requires_grad_(True)
    # Re-apply the current mode so newly frozen stages drop into eval right away.
    model.train(model.training)
    logger.debug("training the head and %d of %d backbone stages", n, len(all_stages))


def param_groups(
    model: AttributeNet, *, lr: float, backbone_lr_mult: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Optimizer groups of trainable params: head at lr, backbone at lr*mult, no decay on biases/norms."""
    if lr <= 0 or backbone_lr_mult < 0 or weight_decay < 0:
        raise FaceattrError(
            f"need lr > 0, backbone_lr_mult >= 0 and weight_decay >= 0, "
            f"got lr={lr}, backbone_lr_mult={backbone_lr_mult}, weight_decay={weight_decay}"
        )
    groups: list[dict[str, Any]] = []
    for part, part_lr in (("head", lr), ("backbone", lr * backbone_lr_mult)):
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for param in getattr(model, part).parameters():
            if not param.requires_grad:
                continue
            # Biases and norm scales are 1-d; decaying them only fights the normalisation.
            (no_decay if param.ndim <= 1 else decay).append(param)
        if decay:
            groups.append({"name": part, "params": decay, "lr": part_lr, "weight_decay": weight_decay})
        if no_decay:
            groups.append({"name": f"{part}_no_decay", "params": no_decay, "lr": part_lr, "weight_decay": 0.0})
    return groups


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements in `model` (only those with requires_grad if `trainable_only`)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
