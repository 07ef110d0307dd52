"""Checkpoints: self-describing, safe to load, atomic, fp16 shipping, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from faceattr.checkpoint import (
    load_checkpoint,
    read_metadata,
    resolve_checkpoint,
    save_checkpoint,
    update_metadata,
)
from faceattr.errors import FaceattrError
from faceattr.models import create_model


def _meta() -> dict:
    return {"model": {"name": "celeb_cnn", "kwargs": {"num_outputs": 3, "hidden": 0, "dropout": 0.0}},
            "attributes": ["Male", "Smiling", "Young"], "output": "sigmoid",
            "preprocess": {"size": [64, 64], "crop": None, "mean": [0.5] * 3, "std": [0.5] * 3},
            "thresholds": None}


@pytest.mark.parametrize("half", [False, True])
def test_save_then_rebuild_gives_the_same_outputs(tmp_path: Path, half: bool) -> None:
    torch.manual_seed(0)
    model = create_model("celeb_cnn", num_outputs=3).eval()
    path = save_checkpoint(tmp_path / "m.safetensors", model, _meta(), half=half)
    rebuilt, meta = load_checkpoint(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), atol=5e-2 if half else 1e-6, rtol=1e-2 if half else 1e-6)
    assert meta["attributes"] == ["Male", "Smiling", "Young"] and meta["versions"]["torch"] == torch.__version__
    assert json.loads(path.with_suffix(".json").read_text())["model"]["name"] == "celeb_cnn"
    assert not list(tmp_path.glob(".*tmp*"))  # temp files were renamed away


def test_update_metadata_keeps_weights(tmp_path: Path) -> None:
    model = create_model("celeb_cnn", num_outputs=3)
    path = save_checkpoint(tmp_path / "m.safetensors", model, _meta())
    update_metadata(path, {"thresholds": [0.3, 0.5, 0.7]})
    assert read_metadata(path)["thresholds"] == [0.3, 0.5, 0.7]
    load_checkpoint(path)


def test_corrupt_and_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    model = create_model("celeb_cnn", num_outputs=3)
    good = save_checkpoint(tmp_path / "m.safetensors", model, _meta())
    torn = tmp_path / "torn.safetensors"
    torn.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(FaceattrError, match="not a readable faceattr checkpoint"):
        load_checkpoint(torn)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(FaceattrError, match="no faceattr metadata"):
        read_metadata(tmp_path / "foreign.safetensors")
    with pytest.raises(FaceattrError, match="checkpoint not found"):
        read_metadata(tmp_path / "missing.safetensors")


def test_names_resolve_to_shipped_models() -> None:
    assert resolve_checkpoint("default").name == "default.safetensors"
    with pytest.raises(FaceattrError, match="did you mean default"):
        resolve_checkpoint("defualt")
