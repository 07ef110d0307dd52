"""Small networks trained from scratch: a multi-label CelebA CNN and the classic Keras-style gender net."""

from __future__ import annotations

from torch import nn

from faceattr.models.net import AttributeNet, StagedBackbone, global_pool
from faceattr.models.registry import register_model

__all__ = ["celeb_cnn", "gender_cnn"]

# Spatial dropout inside the conv blocks; fixed so the `dropout` option means the head alone.
_BLOCK_DROPOUT = 0.1
_CELEB_WIDTHS = (32, 64, 128, 256, 512)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Conv3x3 -> BN -> ReLU -> MaxPool2 -> Dropout2d: halves the resolution."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Dropout2d(_BLOCK_DROPOUT),
    )


def _init_convnet(module: nn.Module) -> None:
    """He init for convs/linears (ReLU nets), identity BatchNorm."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register_model(
    "celeb_cnn",
    input_size=(128, 128),
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    description="small CNN from scratch: 5 conv/BN/ReLU/pool/dropout blocks, global pool, 512 features",
)
def celeb_cnn(*, num_outputs: int, pretrained: bool, hidden: int, dropout: float) -> AttributeNet:
    """Build the small multi-label CelebA CNN (128x128 by default; any size >= 32 works)."""
    del pretrained  # create_model refuses pretrained=True for entries without a tag
    widths = (3, *_CELEB_WIDTHS)
    stages = [_conv_block(widths[i], widths[i + 1]) for i in range(len(_CELEB_WIDTHS))]
    # Global pooling instead of flatten keeps the net usable at any input size.
    backbone = StagedBackbone(stages, global_pool())
    _init_convnet(backbone)
    return AttributeNet(backbone, _CELEB_WIDTHS[-1], num_outputs=num_outputs, hidden=hidden, dropout=dropout)


def _keras_block(c_in: int, c_out: int) -> nn.Sequential:
    """Keras Conv2D(3x3, 'valid') -> ReLU -> MaxPooling2D(2)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=3), nn.ReLU(inplace=True), nn.MaxPool2d(2))


@register_model(
    "gender_cnn",
    input_size=(150, 150),
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    description="classic Keras-style binary CNN: 4 conv/pool blocks (32-64-128-128), dropout, dense 512",
)
def gender_cnn(*, num_outputs: int, pretrained: bool, hidden: int, dropout: float) -> AttributeNet:
    """Build the classic 150x150 gender net (conv blocks + Dropout(0.5) + Dense(512)); usually num_outputs=1."""
    del pretrained
    stages: list[nn.Module] = [
        _keras_block(3, 32),
        _keras_block(32, 64),
        _keras_block(64, 128),
        _keras_block(128, 128),
        nn.Sequential(
            # At 150x150 the map is already 7x7, so this is the classic Flatten; it also admits other sizes.
            nn.AdaptiveAvgPool2d(7),
            nn.Flatten(1),
            nn.Dropout(0.5),
            nn.Linear(128 * 7 * 7, 512),
            nn.ReLU(inplace=True),
        ),
    ]
    backbone = StagedBackbone(stages, nn.Identity())
    _init_convnet(backbone)
    return AttributeNet(backbone, 512, num_outputs=num_outputs, hidden=hidden, dropout=dropout)
