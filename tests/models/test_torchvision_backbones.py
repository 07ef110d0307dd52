"""The torchvision entries: stage cuts keep torchvision's features, and the weights path builds offline."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models._api import WeightsEnum

import faceattr.models as fm
from faceattr.models import torchvision_backbones as tvb

GOOGLE_KWARGS = {"aux_logits": False, "init_weights": True, "transform_input": True}


def _classifier_input(model: nn.Module, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The features torchvision feeds its classifier `head` for input `x` (eval mode)."""
    seen: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        model.eval()(x)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize(
    ("name", "extract", "kwargs", "size"),
    [
        ("resnet18", tvb.resnet_backbone, {}, 48),
        ("mobilenet_v2", tvb.mobilenet_v2_backbone, {}, 48),
        ("densenet121", tvb.densenet_backbone, {}, 48),
        # transform_input=True is what torchvision uses with its pretrained weights.
        ("googlenet", tvb.googlenet_backbone, GOOGLE_KWARGS, 48),
        ("inception_v3", tvb.inception_v3_backbone, GOOGLE_KWARGS, 80),
    ],
)  # fmt: skip
def test_features_equal_torchvision_up_to_its_classifier(name: str, extract, kwargs: dict, size: int) -> None:
    torch.manual_seed(0)
    tv = torchvision.models.get_model(name, weights=None, **kwargs)
    # Activations of order 1 (GoogLeNet's own init shrinks them to ~1e-12, where any cut would pass)
    # and non-trivial BN statistics, so eval mode really uses them.
    for m in tv.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, size, size)
    head = tv.fc if hasattr(tv, "fc") else tv.classifier
    expected = _classifier_input(tv, head, x)
    assert expected.abs().mean() > 1e-2
    # Computed before the cut: the backbone reuses (moves) torchvision's modules.
    backbone, num_features = extract(tv)
    with torch.no_grad():
        got = backbone.eval()(x)
    assert got.shape == (1, num_features)
    torch.testing.assert_close(got, expected.flatten(1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["vgg11", "vgg13", "vgg16", "vgg19"])
@pytest.mark.parametrize("bn", [False, True])
def test_vgg_features_match_torchvision_layout(name: str, bn: bool) -> None:
    # torchvision's own VGG feature builder; pretrained `features.N.*` keys must load into ours.
    from torchvision.models.vgg import cfgs, make_layers

    cfg_key = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}[name]
    theirs = make_layers(cfgs[cfg_key], batch_norm=bn).state_dict()
    ours = tvb.vgg_features(tvb._VGG_CFGS[name], bn).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_vgg_is_five_pooled_stages_then_global_average_pool() -> None:
    torch.manual_seed(0)
    features = tvb.vgg_features(tvb._VGG_CFGS["vgg11"], True).eval()
    backbone, num_features = tvb.vgg_backbone(copy.deepcopy(features))
    assert len(backbone.stages) == 5 and num_features == 512
    assert all(isinstance(s[-1], nn.MaxPool2d) for s in backbone.stages)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone.eval()(x), features(x).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    ("name", "full_kwargs"),
    [
        ("googlenet", {"aux_logits": True, "init_weights": False, "transform_input": True}),
        ("inception_v3", {"aux_logits": True, "init_weights": False, "transform_input": True}),
        ("resnet18", {}),
    ],
)
def test_pretrained_path_builds_and_loads_via_torchvision(
    name: str, full_kwargs: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchvision's weights path (forced aux_logits/transform_input) with a stand-in checkpoint, offline."""
    torch.manual_seed(1)
    full = torchvision.models.get_model(name, weights=None, num_classes=1000, **full_kwargs)
    for m in full.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 1.5)  # so a fresh init (all ones) cannot pass for loaded stats
    fake_checkpoint = full.state_dict()
    calls: list[str] = []

    def fake_get_state_dict(self: WeightsEnum, *args: object, **kwargs: object) -> dict:
        calls.append(self.url)
        return copy.deepcopy(fake_checkpoint)

    monkeypatch.setattr(WeightsEnum, "get_state_dict", fake_get_state_dict)
    model = fm.create_model(name, num_outputs=2, pretrained=True)
    assert len(calls) == 1 and calls[0].startswith("https://download.pytorch.org/models/")
    # The backbone holds the checkpoint's tensors, and no aux head survived.
    assert not any(k.startswith(("aux", "AuxLogits")) for k in model.state_dict())
    first_conv = next(m for m in model.backbone.modules() if isinstance(m, nn.Conv2d))
    conv_key = next(k for k in fake_checkpoint if k.endswith("weight") and fake_checkpoint[k].dim() == 4)
    torch.testing.assert_close(first_conv.weight, fake_checkpoint[conv_key])
    last_bn = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)][-1]
    bn_key = [k for k in fake_checkpoint if k.endswith("running_var") and not k.startswith(("aux", "AuxLogits"))][-1]
    torch.testing.assert_close(last_bn.running_var, fake_checkpoint[bn_key])
    n_backbone = sum(p.numel() for p in model.backbone.parameters())
    n_expected = sum(
        v.numel()
        for k, v in full.named_parameters()
        if not k.startswith(("fc.", "aux", "AuxLogits", "classifier."))
    )
    assert n_backbone == n_expected
    # Same layout as a model built without weights, so checkpoints load into either.
    scratch = fm.create_model(name, num_outputs=2)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in scratch.state_dict().items()}
