"""Fixtures for tests on real data: CelebA labels and the shipped default model (shared with tests/serve)."""

from __future__ import annotations

from pathlib import Path

import pytest


def _celeba_labels(root: Path) -> tuple[list[str], dict[str, list[int]]]:
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    names = lines[1].split()
    rows = {}
    for line in lines[2:]:
        parts = line.split()
        if parts:
            rows[parts[0]] = [1 if v == "1" else 0 for v in parts[1:]]
    return names, rows


@pytest.fixture(scope="session")
def celeba_labels(celeba_root: Path) -> tuple[list[str], dict[str, list[int]]]:
    """(attribute names, file name -> 0/1 labels) from list_attr_celeba.txt."""
    return _celeba_labels(celeba_root)


@pytest.fixture(scope="session")
def default_model() -> object:
    """The shipped default model (FACEATTR_TEST_MODEL may name another checkpoint); skips when none is shipped."""
    import os

    from faceattr.checkpoint import shipped_models_dir

    name = os.environ.get("FACEATTR_TEST_MODEL", "default")
    if name == "default" and not (shipped_models_dir() / "default.safetensors").is_file():
        pytest.skip(
            f"no shipped default model ({shipped_models_dir() / 'default.safetensors'} is missing); "
            "train it with `faceattr train --config configs/default.toml` and ship it"
        )
    import faceattr

    return faceattr.load(name)
