"""A tiny model without BatchNorm or dropout for the torchrun tests (imported by them and their launcher).

Without BatchNorm (statistics per rank) and dropout (masks drawn per rank), a 2-rank step computes
the same gradient as one process on the whole batch, up to the order of float additions.
"""

from __future__ import annotations

from torch import nn

from faceattr.models.net import AttributeNet, StagedBackbone, global_pool
from faceattr.models.registry import list_models, register_model

NAME = "ddp_test_net"


def register() -> str:
    """Register the model once per process; returns its name."""
    if NAME in list_models():
        return NAME

    @register_model(NAME, input_size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                    description="test only: two strided convs, no BatchNorm, no dropout")
    def ddp_test_net(*, num_outputs: int, pretrained: bool, hidden: int, dropout: float) -> AttributeNet:
        del pretrained
        stages = [nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU()),
                  nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())]
        return AttributeNet(StagedBackbone(stages, global_pool()), 16, num_outputs=num_outputs, hidden=hidden,
                            dropout=dropout)

    return NAME
