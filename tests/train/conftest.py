"""Fixtures for training tests: small, fast configs on the real subset."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceattr.config import TrainConfig, load_config


@pytest.fixture()
def tiny_cfg(celeba_root: Path, tmp_path: Path) -> TrainConfig:
    """celeb_cnn at 64x64 on 256 real images, 5 attributes: seconds on a 2-core CPU."""
    return load_config(
        None,
        {
            "data.root": str(celeba_root),
            "data.attributes": ["Male", "Smiling", "Eyeglasses", "Blond_Hair", "Young"],
            "data.limit": 256,
            "data.val_limit": 128,
            "data.workers": 1,
            "model.name": "celeb_cnn",
            "model.image_size": [64, 64],
            "batch_size": 32,
            "epochs": 2,
            "checkpoint_every": 3,
            "threads": 2,
            "progress": False,
            "out": str(tmp_path / "run"),
        },
    )
