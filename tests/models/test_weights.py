"""Pretrained torchvision weights: offline load through torch.hub's cache, and clear errors without them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

import faceattr.models as fm
from faceattr.errors import FaceattrError
from faceattr.models.weights import find_weights_file, hub_checkpoint_path

from .conftest import imagenet_eval_batch, to_batch

MOBILENET_FILE = "mobilenet_v2-b0353104.pth"


@pytest.fixture
def shared_torch_home(weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TORCH_HOME pointed at the shared offline weights."""
    home = weights_dir / "torch_home"
    if not (home / "hub" / "checkpoints" / MOBILENET_FILE).is_file():
        pytest.skip(f"{MOBILENET_FILE} not in {home}")
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def test_hub_checkpoint_path_follows_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.url
    assert hub_checkpoint_path(url) == tmp_path / "hub" / "checkpoints" / MOBILENET_FILE


def test_mobilenet_v2_pretrained_loads_offline(shared_torch_home: Path, no_network: list[str], faces) -> None:
    spec = fm.get_spec("mobilenet_v2")
    x = to_batch(faces[0], (96, 96), spec.mean, spec.std)
    model = fm.create_model("mobilenet_v2", num_outputs=2, pretrained=True).eval()
    assert no_network == [], "the cached file should have been used without touching the network"

    reference = torchvision.models.mobilenet_v2()
    state = torch.load(shared_torch_home / "hub" / "checkpoints" / MOBILENET_FILE, weights_only=True)
    reference.load_state_dict(state, strict=True)
    reference.eval()
    torch.manual_seed(0)
    random_model = fm.create_model("mobilenet_v2", num_outputs=2).eval()
    with torch.no_grad():
        feats = model.backbone(x)
        expected = reference.features(x).mean(dim=(2, 3))
        random_feats = random_model.backbone(x)
    torch.testing.assert_close(feats, expected, rtol=1e-4, atol=1e-5)
    assert (feats - random_feats).abs().mean() > 0.1 * feats.abs().mean()


def test_mobilenet_v2_pretrained_features_classify_imagenet(shared_torch_home: Path, grace_hopper: Path) -> None:
    """The loaded backbone + the file's own ImageNet classifier give the README's top-1 (457 bow tie)."""
    spec = fm.get_spec("mobilenet_v2")
    model = fm.create_model("mobilenet_v2", num_outputs=1, pretrained=True).eval()
    state = torch.load(shared_torch_home / "hub" / "checkpoints" / MOBILENET_FILE, weights_only=True)
    x = imagenet_eval_batch(grace_hopper, spec.mean, spec.std, Image.BILINEAR)
    with torch.no_grad():
        logits = torch.nn.functional.linear(model.backbone(x), state["classifier.1.weight"], state["classifier.1.bias"])
    probs, top5 = logits.softmax(dim=1)[0].topk(5)
    # README: 457 bow tie 0.508, 652 military uniform 0.180, 667 mortarboard, 834 suit, 400 academic gown.
    assert top5.tolist() == [457, 652, 667, 834, 400]
    assert probs[:2].tolist() == pytest.approx([0.508, 0.180], abs=0.02)


def test_missing_weights_offline_raise_faceattr_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[str]
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FaceattrError) as info:
        fm.create_model("mobilenet_v2", num_outputs=2, pretrained=True)
    msg = str(info.value)
    expected = tmp_path / "hub" / "checkpoints" / MOBILENET_FILE
    assert str(expected) in msg
    assert "https://download.pytorch.org/models/" + MOBILENET_FILE in msg  # how to get it
    assert "TORCH_HOME" in msg
    # The real download path was tried (and hit the blocked network), not short-circuited.
    assert no_network, "torchvision's download path was never attempted"
    assert isinstance(info.value.__cause__, OSError)
    assert not expected.exists()


def test_corrupt_cached_file_raises_faceattr_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    bad = tmp_path / "hub" / "checkpoints" / MOBILENET_FILE
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(FaceattrError, match="corrupt") as info:
        fm.create_model("mobilenet_v2", num_outputs=2, pretrained=True)
    assert str(bad) in str(info.value)


def test_find_weights_file_order_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights_root, torch_home = tmp_path / "w", tmp_path / "th"
    monkeypatch.setenv("FACEATTR_WEIGHTS_DIR", str(weights_root))
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    with pytest.raises(FaceattrError) as info:
        find_weights_file("x-abc.pth", "sub", how_to_get="ask Bob")
    msg = str(info.value)
    assert str(weights_root / "sub" / "x-abc.pth") in msg
    assert str(torch_home / "hub" / "checkpoints" / "x-abc.pth") in msg
    assert "ask Bob" in msg

    in_hub = torch_home / "hub" / "checkpoints" / "x-abc.pth"
    in_hub.parent.mkdir(parents=True)
    in_hub.write_bytes(b"hub")
    assert find_weights_file("x-abc.pth", "sub") == in_hub
    in_root = weights_root / "sub" / "x-abc.pth"
    in_root.parent.mkdir(parents=True)
    in_root.write_bytes(b"root")
    assert find_weights_file("x-abc.pth", "sub") == in_root  # FACEATTR_WEIGHTS_DIR wins

    import hashlib

    good_prefix = hashlib.sha256(b"root").hexdigest()[:8]
    assert find_weights_file("x-abc.pth", "sub", sha256_prefix=good_prefix) == in_root
    with pytest.raises(FaceattrError, match="sha256"):
        find_weights_file("x-abc.pth", "sub", sha256_prefix="00000000" if good_prefix != "00000000" else "11111111")
