"""Fixtures for faceattr.infer: small checkpoints built here, the shipped samples, the default model."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import build_checkpoint


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session folder for checkpoints and exports."""
    return tmp_path_factory.mktemp("infer-ckpt")


@pytest.fixture(scope="session")
def small_ckpt(ckpt_dir: Path) -> Path:
    """A random celeb_cnn checkpoint (40 outputs, 128x128 input) with spread-out logits."""
    return build_checkpoint(ckpt_dir / "small.safetensors", "celeb_cnn")


@pytest.fixture(scope="session")
def small_model(small_ckpt: Path):
    """The small checkpoint loaded with the torch backend."""
    from faceattr.infer import load

    return load(small_ckpt)


@pytest.fixture(scope="session")
def mnv2_ckpt(ckpt_dir: Path) -> Path:
    """A random mobilenet_v2 checkpoint (the registry's default-size model, 224x224)."""
    return build_checkpoint(ckpt_dir / "mnv2.safetensors", "mobilenet_v2", seed=1)


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
    """The shipped default model; tests that need a trained model skip until it is in the build."""
    from faceattr.checkpoint import shipped_models_dir
    from faceattr.infer import load

    if not (shipped_models_dir() / "default.safetensors").is_file():
        pytest.skip("needs the shipped default model (src/faceattr/assets/models/default.safetensors), not trained into this build yet")
    return load("default")


@pytest.fixture(scope="session")
def detector():
    """One YuNet detector for the session."""
    from faceattr.infer.detect import FaceDetector

    return FaceDetector()
