"""torchvision ImageNet backbones, cut into stages, with the classifier replaced by the attribute head.

Each family has a `*_backbone(tv_model)` that reuses the torchvision model's own modules, so the
features equal torchvision's forward up to its classifier (VGG: see below). Pretrained weights go
through torchvision's weights API (`weights.load_torchvision_model`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from faceattr.models.net import AttributeNet, StagedBackbone, global_pool
from faceattr.models.registry import register_model
from faceattr.models.weights import load_torchvision_model

__all__ = [
    "resnet_backbone",
    "mobilenet_v2_backbone",
    "densenet_backbone",
    "vgg_backbone",
    "googlenet_backbone",
    "inception_v3_backbone",
    "TransformInput",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TAG = "IMAGENET1K_V1"

# (backbone, number of features) from a torchvision model
Extractor = Callable[[Any], tuple[StagedBackbone, int]]


def _build_tv(name: str, pretrained: bool, random_kwargs: dict[str, object]) -> nn.Module:
    """A torchvision model, with ImageNet weights through torch.hub when `pretrained`."""
    if pretrained:
        # With weights, torchvision picks its own build options (and refuses conflicting ones).
        return load_torchvision_model(name, TAG)
    import torchvision

    return torchvision.models.get_model(name, weights=None, **random_kwargs)


def resnet_backbone(m: Any) -> tuple[StagedBackbone, int]:
    """Stages: stem (conv1, bn1, relu, maxpool), layer1..layer4; features = fc.in_features."""
    stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
    return StagedBackbone([stem, m.layer1, m.layer2, m.layer3, m.layer4], global_pool()), m.fc.in_features


def mobilenet_v2_backbone(m: Any) -> tuple[StagedBackbone, int]:
    """Stages split where the stride doubles: /2, /4, /8, /16, /32 (the last ends with the 1280 conv)."""
    f = m.features
    bounds = (0, 2, 4, 7, 14, len(f))
    stages = [nn.Sequential(*f[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return StagedBackbone(stages, global_pool()), m.last_channel


def densenet_backbone(m: Any) -> tuple[StagedBackbone, int]:
    """Stages: stem, then each dense block with its transition; the last ends with norm5 + ReLU."""
    f = m.features
    stages = [
        nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0),
        nn.Sequential(f.denseblock1, f.transition1),
        nn.Sequential(f.denseblock2, f.transition2),
        nn.Sequential(f.denseblock3, f.transition3),
        # torchvision applies F.relu after norm5 in forward(); it is a module here.
        nn.Sequential(f.denseblock4, f.norm5, nn.ReLU(inplace=True)),
    ]
    return StagedBackbone(stages, global_pool()), m.classifier.in_features


def vgg_backbone(features: nn.Sequential) -> tuple[StagedBackbone, int]:
    """Stages end at each max-pool (5 of them); global average pool to 512 features.

    The pretrained 4096-wide classifier is dropped: global pooling costs no parameters (vs ~100M for
    flattening 512x7x7) and works at inputs below 224.
    """
    stages: list[nn.Module] = []
    current: list[nn.Module] = []
    for layer in features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            stages.append(nn.Sequential(*current))
            current = []
    if current:
        stages.append(nn.Sequential(*current))
    return StagedBackbone(stages, global_pool()), 512


class TransformInput(nn.Module):
    """Map an ImageNet-normalised image to the (x - 0.5) / 0.5 input the ported Google weights expect.

    torchvision does this inside GoogLeNet/Inception3 when `transform_input=True`, which it forces on
    with pretrained weights. It is always applied here so a model built without weights and loaded
    from a checkpoint behaves exactly like one built with them.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rescale each channel from ImageNet mean/std to mean/std 0.5."""
        scale = x.new_tensor([s / 0.5 for s in IMAGENET_STD]).view(1, 3, 1, 1)
        shift = x.new_tensor([(m - 0.5) / 0.5 for m in IMAGENET_MEAN]).view(1, 3, 1, 1)
        return x * scale + shift


def googlenet_backbone(m: Any) -> tuple[StagedBackbone, int]:
    """Stages: stem (to /8), inception3 (/16), inception4 (/32), inception5; aux heads dropped."""
    stages = [
        nn.Sequential(TransformInput(), m.conv1, m.maxpool1, m.conv2, m.conv3, m.maxpool2),
        nn.Sequential(m.inception3a, m.inception3b, m.maxpool3),
        nn.Sequential(m.inception4a, m.inception4b, m.inception4c, m.inception4d, m.inception4e, m.maxpool4),
        nn.Sequential(m.inception5a, m.inception5b),
    ]
    return StagedBackbone(stages, global_pool()), m.fc.in_features


def inception_v3_backbone(m: Any) -> tuple[StagedBackbone, int]:
    """Stages: stem, conv 3b/4a, Mixed_5*, Mixed_6*, Mixed_7*; aux logits dropped."""
    stages = [
        nn.Sequential(TransformInput(), m.Conv2d_1a_3x3, m.Conv2d_2a_3x3, m.Conv2d_2b_3x3, m.maxpool1),
        nn.Sequential(m.Conv2d_3b_1x1, m.Conv2d_4a_3x3, m.maxpool2),
        nn.Sequential(m.Mixed_5b, m.Mixed_5c, m.Mixed_5d),
        nn.Sequential(m.Mixed_6a, m.Mixed_6b, m.Mixed_6c, m.Mixed_6d, m.Mixed_6e),
        nn.Sequential(m.Mixed_7a, m.Mixed_7b, m.Mixed_7c),
    ]
    return StagedBackbone(stages, global_pool()), m.fc.in_features


def _register_tv(
    name: str,
    extract: Extractor,
    description: str,
    input_size: tuple[int, int] = (224, 224),
    random_kwargs: dict[str, object] | None = None,
) -> None:
    """Register torchvision model `name`, cut by `extract`; `random_kwargs` apply when built without weights."""

    def build(*, num_outputs: int, pretrained: bool, hidden: int, dropout: float) -> AttributeNet:
        backbone, num_features = extract(_build_tv(name, pretrained, random_kwargs or {}))
        return AttributeNet(backbone, num_features, num_outputs=num_outputs, hidden=hidden, dropout=dropout)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"Build {name} ({description}) with an attribute head."
    register_model(
        name, input_size=input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, pretrained_tag=TAG, description=description
    )(build)


# VGG cfgs as in torchvision.models.vgg (A, B, D, E): conv widths, "M" = max-pool.
_VGG_CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def vgg_features(cfg: list[int | str], batch_norm: bool) -> nn.Sequential:
    """torchvision's VGG `features` layout (same module indices, so pretrained keys load) with its init."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        assert isinstance(v, int)
        conv = nn.Conv2d(c_in, v, kernel_size=3, padding=1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)  # type: ignore[arg-type]  # Conv2d(bias=True) always has one
        layers.append(conv)
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        c_in = v
    return nn.Sequential(*layers)


def _register_vgg(name: str) -> None:
    """Register VGG `name` (vgg11..vgg19, optional _bn) with global average pooling."""
    base = name.removesuffix("_bn")
    batch_norm = name.endswith("_bn")

    def build(*, num_outputs: int, pretrained: bool, hidden: int, dropout: float) -> AttributeNet:
        if pretrained:
            features = cast(nn.Sequential, load_torchvision_model(name, TAG).features)
        else:
            # torchvision's VGG always allocates its ~120M-parameter classifier, which is thrown
            # away here; building only `features` is ~10x faster.
            features = vgg_features(_VGG_CFGS[base], batch_norm)
        backbone, num_features = vgg_backbone(features)
        return AttributeNet(backbone, num_features, num_outputs=num_outputs, hidden=hidden, dropout=dropout)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"Build {name} (global-average-pooled conv features) with an attribute head."
    bn_note = " with BatchNorm" if batch_norm else ""
    description = f"{name}: VGG conv features{bn_note}, global average pool, 512 features"
    register_model(
        name, input_size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, pretrained_tag=TAG, description=description
    )(build)


_register_tv("mobilenet_v2", mobilenet_v2_backbone, "MobileNetV2, 1280 features")
for _depth, _width in ((18, 512), (34, 512), (50, 2048), (101, 2048)):
    _register_tv(f"resnet{_depth}", resnet_backbone, f"ResNet-{_depth}, {_width} features")
_register_tv("densenet121", densenet_backbone, "DenseNet-121, 1024 features")
for _vgg in ("vgg11", "vgg13", "vgg16", "vgg19"):
    _register_vgg(_vgg)
    _register_vgg(f"{_vgg}_bn")
# With weights, torchvision forces transform_input=True (TransformInput above always applies it)
# and aux_logits=True to load the checkpoint, then drops the aux heads because we did not ask for
# them. Without weights the aux heads are never built; init_weights=True silences its FutureWarning.
_NO_AUX: dict[str, object] = {"aux_logits": False, "init_weights": True}
_register_tv("googlenet", googlenet_backbone, "GoogLeNet (Inception v1), 1024 features", random_kwargs=_NO_AUX)
_register_tv(
    "inception_v3",
    inception_v3_backbone,
    "Inception v3, 2048 features, input >= 75 px",
    input_size=(299, 299),
    random_kwargs=_NO_AUX,
)
