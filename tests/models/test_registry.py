"""Registry contract, and every registered model training one step on real faces."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import faceattr.models as fm
from faceattr.errors import FaceattrError
from faceattr.models import registry
from faceattr.models.custom import celeb_cnn

from .conftest import ATTRS, to_batch

EXPECTED = {
    "celeb_cnn", "gender_cnn", "mobilenet_v2", "resnet18", "resnet34", "resnet50", "resnet101", "densenet121",
    "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
    "googlenet", "inception_v3", "efficientnet_lite0",
}  # fmt: skip
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Small but valid training sizes (height, width); inception_v3 needs >= 75 px.
TRAIN_SIZE = {"inception_v3": (80, 80)}


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A copy of the registry, so test registrations vanish afterwards."""
    copy = dict(registry._REGISTRY)
    monkeypatch.setattr(registry, "_REGISTRY", copy)
    return copy


def _first_conv(model: nn.Module) -> nn.Conv2d:
    """The first Conv2d in module order (the one the image meets first in every registered backbone)."""
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def test_registry_holds_exactly_the_documented_models() -> None:
    assert set(fm.list_models()) == EXPECTED
    assert fm.list_models() == sorted(fm.list_models())


@pytest.mark.parametrize("name", fm.list_models())
def test_model_trains_one_step_on_real_faces(name: str, faces) -> None:
    images, labels = faces
    torch.manual_seed(0)
    spec = fm.get_spec(name)
    model = fm.create_model(name, num_outputs=len(ATTRS), dropout=0.1)
    assert isinstance(model, fm.AttributeNet) and model.num_outputs == len(ATTRS)

    x = to_batch(images, TRAIN_SIZE.get(name, (64, 64)), spec.mean, spec.std)
    model.train()
    logits = model(x)
    assert logits.shape == (len(images), len(ATTRS))
    assert torch.isfinite(logits).all()
    loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
    loss.backward()
    grad = _first_conv(model.backbone).weight.grad
    assert grad is not None, "no gradient reached the first conv"
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0

    # The default input size must work too (one image, no grad, to keep this cheap).
    model.eval()
    with torch.no_grad():
        out = model(to_batch(images[:1], spec.input_size, spec.mean, spec.std))
    assert out.shape == (1, len(ATTRS)) and torch.isfinite(out).all()


def test_specs_carry_size_normalisation_and_tags() -> None:
    for name in EXPECTED - {"celeb_cnn", "gender_cnn", "efficientnet_lite0"}:
        spec = fm.get_spec(name)
        assert (spec.mean, spec.std, spec.pretrained_tag) == (IMAGENET_MEAN, IMAGENET_STD, "IMAGENET1K_V1"), name
        assert spec.input_size == ((299, 299) if name == "inception_v3" else (224, 224)), name
        assert spec.description
    celeb = fm.get_spec("celeb_cnn")
    assert (celeb.input_size, celeb.mean, celeb.std, celeb.pretrained_tag) == (
        (128, 128), (0.5,) * 3, (0.5,) * 3, None,
    )  # fmt: skip
    assert fm.get_spec("gender_cnn").input_size == (150, 150)
    assert fm.get_spec("gender_cnn").pretrained_tag is None
    lite = fm.get_spec("efficientnet_lite0")
    assert (lite.input_size, lite.mean, lite.std) == ((224, 224), (0.5,) * 3, (0.5,) * 3)
    assert lite.pretrained_tag is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        celeb.name = "other"  # type: ignore[misc]


def test_duplicate_name_raises(scratch_registry: dict) -> None:
    with pytest.raises(ValueError, match="already registered"):
        fm.register_model("resnet18", input_size=(8, 8), mean=(0, 0, 0), std=(1, 1, 1))
    # Checkpoint ensembles own this name (faceattr.models.ensemble).
    with pytest.raises(ValueError, match="reserved"):
        fm.register_model("ensemble", input_size=(8, 8), mean=(0, 0, 0), std=(1, 1, 1))


def test_register_new_model_round_trip(scratch_registry: dict) -> None:
    @fm.register_model("tiny_test", input_size=(16, 24), mean=(0.1, 0.2, 0.3), std=(1, 2, 3), description="t")
    def tiny(*, num_outputs: int, pretrained: bool, hidden: int, dropout: float) -> fm.AttributeNet:
        from faceattr.models.net import StagedBackbone, global_pool

        backbone = StagedBackbone([nn.Conv2d(3, 4, 3)], global_pool())
        return fm.AttributeNet(backbone, 4, num_outputs=num_outputs, hidden=hidden, dropout=dropout)

    assert "tiny_test" in fm.list_models()
    assert fm.get_spec("tiny_test") == fm.ModelSpec("tiny_test", (16, 24), (0.1, 0.2, 0.3), (1.0, 2.0, 3.0), None, "t")
    assert fm.create_model("tiny_test", num_outputs=2)(torch.zeros(1, 3, 16, 24)).shape == (1, 2)
    # The decorator hands the builder back unchanged, and a second registration of the name fails.
    with pytest.raises(ValueError):
        fm.register_model("tiny_test", input_size=(1, 1), mean=(0, 0, 0), std=(1, 1, 1))(tiny)


@pytest.mark.parametrize(
    "bad",
    [
        lambda *, num_outputs, pretrained, hidden, dropout, **kwargs: None,
        lambda num_outputs, pretrained, hidden, dropout: None,
        lambda *, num_outputs, pretrained, hidden: None,
        lambda *, num_outputs, pretrained, hidden, dropout, width=4: None,
    ],
    ids=["var-kwargs", "positional", "missing-dropout", "extra-option"],
)
def test_builders_must_take_exactly_the_explicit_keywords(scratch_registry: dict, bad) -> None:
    with pytest.raises(TypeError, match="keyword-only"):
        fm.register_model("bad_builder", input_size=(8, 8), mean=(0, 0, 0), std=(1, 1, 1))(bad)
    assert "bad_builder" not in fm.list_models()


def test_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        fm.create_model("celeb_cnn", num_outputs=2, widht=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        celeb_cnn(num_outputs=2, pretrained=False, hidden=0, dropout=0.0, widht=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        fm.create_model("celeb_cnn", 2)  # type: ignore[misc]


def test_unknown_name_suggests_and_lists() -> None:
    with pytest.raises(FaceattrError) as info:
        fm.get_spec("mobilenetv2")
    msg = str(info.value)
    assert "did you mean mobilenet_v2?" in msg
    assert all(name in msg for name in EXPECTED)
    with pytest.raises(FaceattrError, match="did you mean resnet18"):
        fm.create_model("resnet81", num_outputs=1)


def test_names_are_case_insensitive() -> None:
    assert fm.get_spec("ResNet18").name == "resnet18"


def test_pretrained_without_weights_raises() -> None:
    with pytest.raises(FaceattrError, match="celeb_cnn' has no pretrained weights"):
        fm.create_model("celeb_cnn", num_outputs=1, pretrained=True)


@pytest.mark.parametrize(
    "kwargs", [{"num_outputs": 0}, {"num_outputs": 2.0}, {"num_outputs": True}, {"num_outputs": 1, "hidden": -1},
               {"num_outputs": 1, "dropout": 1.0}, {"num_outputs": 1, "dropout": -0.1}],
)  # fmt: skip
def test_bad_options_raise_faceattr_error(kwargs: dict) -> None:
    with pytest.raises(FaceattrError):
        fm.create_model("celeb_cnn", **kwargs)


def test_public_api() -> None:
    assert set(fm.__all__) == {
        "ModelSpec", "register_model", "list_models", "get_spec", "create_model", "AttributeNet",
        "set_trainable", "param_groups", "count_parameters",
    }  # fmt: skip


def test_import_loads_no_heavy_libraries() -> None:
    import subprocess
    import sys

    code = "import sys, faceattr.models; print('torchvision' in sys.modules, 'timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
