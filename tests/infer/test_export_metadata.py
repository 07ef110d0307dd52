"""Metadata-only changes to a checkpoint (calibrated thresholds, an age mapping) keep its ONNX export current.

Before, `faceattr evaluate --calibrate` rewrote the checkpoint, the export beside it recorded the old
file's sha256, and every later `predict` warned and fell back to torch until someone re-exported.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from faceattr.checkpoint import file_sha256, read_metadata
from faceattr.errors import FaceattrError
from faceattr.infer import export, load
from faceattr.infer.backends import (
    CONTENT_SHA256_KEY,
    META_KEY,
    SOURCE_SHA256_KEY,
    content_sha256,
    export_metadata,
    rewrite_export_metadata,
)
from faceattr.infer.model import update_metadata

from .helpers import build_checkpoint

CROPS = np.random.default_rng(1).integers(0, 256, size=(3, 218, 178, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small checkpoint with a verified export beside it."""
    ckpt = build_checkpoint(tmp_path_factory.mktemp("meta") / "m.safetensors", size=(32, 32), seed=3)
    export(ckpt, ckpt.with_suffix(".onnx"), sidecar_json=False)
    return ckpt


@pytest.fixture
def ckpt(exported: Path, tmp_path: Path) -> Path:
    """A private copy of the checkpoint, its JSON and its export."""
    for suffix in (".safetensors", ".json", ".onnx"):
        shutil.copy(exported.with_suffix(suffix), tmp_path / f"m{suffix}")
    return tmp_path / "m.safetensors"


def test_export_metadata_reads_what_onnx_runtime_reads(ckpt: Path) -> None:
    onnx_path = ckpt.with_suffix(".onnx")
    ours = export_metadata(onnx_path.read_bytes())
    theirs = dict(ort.InferenceSession(str(onnx_path)).get_modelmeta().custom_metadata_map)
    assert ours == theirs and set(ours) >= {META_KEY, SOURCE_SHA256_KEY, CONTENT_SHA256_KEY}


def test_new_thresholds_reach_the_export_and_onnx_runtime_keeps_running_it(ckpt: Path) -> None:
    onnx_path = ckpt.with_suffix(".onnx")
    before = onnx_path.read_bytes()
    n = len(read_metadata(ckpt)["attributes"])
    thresholds = [round(0.3 + 0.01 * i, 2) for i in range(n)]
    update_metadata(ckpt, {"thresholds": thresholds})

    after = onnx_path.read_bytes()
    assert content_sha256(after) == content_sha256(before)  # the graph and weights are the same bytes
    props = export_metadata(after)
    assert props[SOURCE_SHA256_KEY] == file_sha256(ckpt)
    inner = json.loads(props[META_KEY])
    assert inner["thresholds"] == thresholds
    assert inner["onnx"]["source_sha256"] == file_sha256(ckpt)  # the export's own block is kept, brought up to date

    model = load(ckpt)  # auto: the export is current again, so ONNX Runtime runs it
    assert model.backend.name == "onnx"
    np.testing.assert_allclose(model.thresholds, thresholds, atol=1e-6)
    torch_model = load(ckpt, backend="torch")
    np.testing.assert_allclose(model.predict_aligned(CROPS), torch_model.predict_aligned(CROPS), atol=1e-4)


def test_a_stale_export_stays_stale(ckpt: Path) -> None:
    other = build_checkpoint(ckpt.parent / "other.safetensors", size=(32, 32), seed=4)
    shutil.copy(other, ckpt)  # another checkpoint under this name: the export beside is now someone else's
    shutil.copy(other.with_suffix(".json"), ckpt.with_suffix(".json"))
    update_metadata(ckpt, {"thresholds": [0.4] * len(read_metadata(ckpt)["attributes"])})
    with pytest.raises(FaceattrError, match="exported from another version"):
        load(ckpt, backend="onnx")


def test_a_damaged_export_is_not_blessed(ckpt: Path, caplog: pytest.LogCaptureFixture) -> None:
    onnx_path = ckpt.with_suffix(".onnx")
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 3] ^= 0x01  # a weight byte, far from the metadata at the end
    onnx_path.write_bytes(bytes(data))
    with pytest.raises(FaceattrError, match="changed or damaged"):
        rewrite_export_metadata(onnx_path, read_metadata(ckpt), file_sha256(ckpt))
    assert onnx_path.read_bytes() == bytes(data)  # refused before anything was written
