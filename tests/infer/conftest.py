"""Fixtures for faceattr.infer: small checkpoints built here, the shipped samples, the default model."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import build_checkpoint


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread():
    """Run these tests' tiny forward passes on one intra-op thread, restored afterwards.

    On the shared 2-core test machine, two spinning OpenMP threads competing with other jobs made a
    batch-2 MobileNet forward pass 5-10x slower than one thread; the numbers are identical either way.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session folder for checkpoints and exports."""
    return tmp_path_factory.mktemp("infer-ckpt")


@pytest.fixture(scope="session")
def small_ckpt(ckpt_dir: Path) -> Path:
    """A random celeb_cnn checkpoint (40 outputs) with spread-out logits, fed 64x64 crops of the
    face region (x 25..153, y 45..173 of the aligned frame) so the crop path is exercised too."""
    return build_checkpoint(ckpt_dir / "small.safetensors", "celeb_cnn", size=(64, 64), crop=[25, 45, 153, 173])


@pytest.fixture(scope="session")
def small_model(small_ckpt: Path):
    """The small checkpoint loaded with the torch backend."""
    from faceattr.infer import load

    return load(small_ckpt)


@pytest.fixture(scope="session")
def mnv2_ckpt(ckpt_dir: Path) -> Path:
    """A random mobilenet_v2 checkpoint (depthwise convs, batch norm: what ONNX export must get right),
    fed 96x96 inputs instead of 224x224 to keep the suite fast on a shared CPU."""
    return build_checkpoint(ckpt_dir / "mnv2.safetensors", "mobilenet_v2", seed=1, size=(96, 96))


@pytest.fixture(scope="session")
def grace() -> Path:
    """The shipped grace_hopper.jpg sample."""
    from faceattr.infer import sample_path

    return sample_path("grace_hopper")


@pytest.fixture(scope="session")
def astronaut() -> Path:
    """The shipped astronaut.jpg sample."""
    from faceattr.infer import sample_path

    return sample_path("astronaut")


@pytest.fixture(scope="session")
def default_model():
    """The shipped default model, or the checkpoint named by FACEATTR_TEST_MODEL; tests that need a
    trained model skip when neither is there."""
    import os

    from faceattr.checkpoint import shipped_models_dir
    from faceattr.infer import load

    override = os.environ.get("FACEATTR_TEST_MODEL")
    if override:
        return load(override)
    if not (shipped_models_dir() / "default.safetensors").is_file():
        pytest.skip(
            "needs a trained model: the shipped default (src/faceattr/assets/models/default.safetensors) "
            "is not in this build yet; or set FACEATTR_TEST_MODEL to a checkpoint"
        )
    return load("default")


@pytest.fixture(scope="session")
def detector():
    """One YuNet detector for the session."""
    from faceattr.infer.detect import FaceDetector

    return FaceDetector()
