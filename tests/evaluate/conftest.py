"""Fixtures for evaluation tests: one tiny model trained on real CelebA images, evaluated once."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

# The model predicts these; Young is deliberately left out so subgroup slicing by an attribute
# the model does not predict is exercised too.
MODEL_ATTRS = ["Smiling", "Eyeglasses", "Blond_Hair", "Male"]
EVAL_LIMIT = 200


@pytest.fixture(scope="session")
def trained_run(celeba_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A celeb_cnn run folder (32x32, 128 training images, 2 epochs of 4 steps): config, log, checkpoints.

    Tiny on purpose: the tests check that evaluation is right, not that the model is good, and the
    whole folder has to run in a few minutes on a shared 2-core CPU.
    """
    from faceattr.config import load_config
    from faceattr.train import fit

    out = tmp_path_factory.mktemp("evaluate") / "run"
    cfg = load_config(
        None,
        {
            "data.root": str(celeba_root),
            "data.attributes": MODEL_ATTRS,
            "data.limit": 128,
            "data.val_limit": 64,
            "data.workers": 1,
            "model.name": "celeb_cnn",
            "model.image_size": [32, 32],
            "optim.lr": 3e-3,
            "batch_size": 32,
            "epochs": 2,
            "checkpoint_every": 0,
            "progress": False,
            "out": str(out),
        },
    )
    return fit(cfg)


@pytest.fixture()
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A private copy of the run folder, for tests that change its checkpoint."""
    dst = tmp_path / "run"
    shutil.copytree(trained_run, dst)
    return dst


@pytest.fixture(scope="session")
def evaluation(trained_run: Path, celeba_root: Path) -> Any:
    """The run evaluated on 200 real valid images at threshold 0.5 (subgroups Male and Young)."""
    from faceattr.evaluate import EvalConfig, evaluate_model

    return evaluate_model(
        EvalConfig(model=str(trained_run), data_root=str(celeba_root), split="valid", limit=EVAL_LIMIT, progress=False)
    )


# What the small age models below predict: Male for gender, Wearing_Lipstick for the shortcut check.
AGE_MODEL_ATTRS = ["Smiling", "Male", "Wearing_Lipstick"]


@pytest.fixture(scope="session")
def age_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random celeb_cnn (64x64) with an age output after AGE_MODEL_ATTRS, as multi-source training writes.

    Random weights are enough: the tests check structure, counts and plumbing, not quality.
    """
    from infer.helpers import build_checkpoint  # tests/ is on sys.path (tests/infer is a package)

    path = tmp_path_factory.mktemp("age_model") / "age.safetensors"
    return build_checkpoint(path, "celeb_cnn", num_outputs=len(AGE_MODEL_ATTRS), size=(64, 64), age=True,
                            attributes=AGE_MODEL_ATTRS)
