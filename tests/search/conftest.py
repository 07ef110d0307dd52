"""Fixtures for search tests: synthetic folders the fake model reads exactly, and the real default model."""

from __future__ import annotations

from pathlib import Path

import pytest

from .fakes import FakeModel, make_dataset
from .realdata import celeba_labels, default_model  # noqa: F401  (fixtures, shared with tests/serve)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ray: needs Ray (pip install 'faceattr[ray]'); skipped without it")


@pytest.fixture
def fake_model() -> FakeModel:
    """A fresh fake model (records which files it was asked about)."""
    return FakeModel()


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, dict]:
    """A folder of 40 synthetic images (some with no face, some with two, one unreadable) and its answers."""
    root = tmp_path / "photos"
    truth = make_dataset(root, 40)
    return root, truth

