"""Shared fixtures: the real CelebA subset and offline weights beside the checkout, when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEATTR_SHARED", REPO.parent / "shared"))
CELEBA = SHARED / "celeba"
UTKFACE = SHARED / "utkface"
TORCH_HOME = SHARED / "weights" / "torch_home"


def pytest_configure(config: pytest.Config) -> None:
    """Keep tests offline and out of the user's cache before anything imports torch."""
    if TORCH_HOME.is_dir():
        os.environ.setdefault("TORCH_HOME", str(TORCH_HOME))
    os.environ.setdefault("FACEATTR_WEIGHTS_DIR", str(SHARED / "weights"))


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point faceattr's decode cache at a per-session temp folder."""
    d = tmp_path_factory.mktemp("faceattr-cache")
    os.environ["FACEATTR_CACHE"] = str(d)
    return d


@pytest.fixture(scope="session")
def celeba_root() -> Path:
    """The real CelebA subset (official layout); tests that need it skip when it is absent."""
    if not (CELEBA / "list_attr_celeba.txt").is_file() or not (CELEBA / "img_align_celeba").is_dir():
        pytest.skip(f"real CelebA subset not found at {CELEBA} (set FACEATTR_SHARED to the folder holding celeba/)")
    return CELEBA


@pytest.fixture(scope="session")
def utkface_root() -> Path:
    """The real UTKFace subset (official UTKFace/ folder); tests that need it skip when it is absent."""
    if not (UTKFACE / "UTKFace").is_dir():
        pytest.skip(f"real UTKFace subset not found at {UTKFACE} (set FACEATTR_SHARED to the folder holding utkface/)")
    return UTKFACE


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    """Offline pretrained weights (shared/weights); tests that need them skip when absent."""
    d = SHARED / "weights"
    if not (d / "torch_home").is_dir():
        pytest.skip(f"offline weights not found at {d}")
    return d
