"""A tampered, damaged or foreign .onnx beside a checkpoint, and a full disk during `faceattr export` (issue 17).

`--backend onnx` refuses such a file with one line; `auto` (the default) warns and predicts with torch
from the checkpoint instead, so a broken export never stops predict nor predicts garbage.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx.external_data_helper import set_external_data

from faceattr.cli import main
from faceattr.errors import FaceattrError
from faceattr.infer import export, load
from faceattr.infer.backends import CONTENT_SHA256_KEY, META_KEY, content_sha256

from .helpers import build_checkpoint

CROPS = np.random.default_rng(0).integers(0, 256, size=(2, 218, 178, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A small checkpoint and the bytes of its verified export."""
    ckpt = build_checkpoint(tmp_path_factory.mktemp("tamper") / "m.safetensors", size=(32, 32), seed=5)
    export(ckpt, ckpt.with_suffix(".onnx"))
    return ckpt, ckpt.with_suffix(".onnx").read_bytes()


@pytest.fixture
def ckpt(exported: tuple[Path, bytes], tmp_path: Path) -> Path:
    """A private copy of the checkpoint with its export beside it."""
    src, data = exported
    dst = tmp_path / "m.safetensors"
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    dst.with_suffix(".onnx").write_bytes(data)
    return dst


def _expect_refused_then_torch(ckpt: Path, caplog: pytest.LogCaptureFixture, *needles: str) -> None:
    """backend='onnx' refuses with one line; 'auto' warns the same and gives torch's very numbers."""
    with pytest.raises(FaceattrError) as info:
        load(ckpt, backend="onnx")
    msg = str(info.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    with caplog.at_level("WARNING", logger="faceattr.infer.model"):
        auto = load(ckpt)
    assert auto.backend.name == "torch" and all(n in caplog.text for n in needles), caplog.text
    np.testing.assert_array_equal(auto.predict_aligned(CROPS), load(ckpt, backend="torch").predict_aligned(CROPS))


def test_the_untouched_export_is_used(ckpt: Path) -> None:
    assert load(ckpt).backend.name == "onnx"
    meta = load(ckpt).backend.metadata
    assert meta[CONTENT_SHA256_KEY] == content_sha256(ckpt.with_suffix(".onnx").read_bytes())


def test_a_flipped_weight_byte_is_caught_by_the_content_digest(ckpt: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = ckpt.with_suffix(".onnx")
    data = bytearray(path.read_bytes())
    weights = max(onnx.load_from_string(bytes(data)).graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    at = bytes(data).find(weights[:64]) + 100
    data[at] ^= 0x40
    path.write_bytes(bytes(data))
    onnx.load(str(path))  # still a well-formed model: only the digest can tell
    _expect_refused_then_torch(ckpt, caplog, "changed or damaged after `faceattr export`")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickle"])
def test_a_broken_file_is_refused(ckpt: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    path = ckpt.with_suffix(".onnx")
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00" * 64,
                      "pickle": b"\x80\x04\x95" + data[:32]}[damage])
    _expect_refused_then_torch(ckpt, caplog, "not a loadable ONNX model")


def _resave(path: Path, model: onnx.ModelProto, digest: bool = False) -> None:
    """Write `model`, dropping the content digest (as an editor that does not know it would) unless kept."""
    if not digest:
        props = [(p.key, p.value) for p in model.metadata_props if p.key != CONTENT_SHA256_KEY]
        del model.metadata_props[:]
        for k, v in props:
            entry = model.metadata_props.add()
            entry.key, entry.value = k, v
    path.write_bytes(model.SerializeToString())


def test_a_foreign_graph_under_this_metadata_is_refused(ckpt: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    other = build_checkpoint(tmp_path / "other.safetensors", size=(48, 48), seed=6)
    export(other, other.with_suffix(".onnx"))
    foreign = onnx.load(str(other.with_suffix(".onnx")))
    ours = onnx.load(str(ckpt.with_suffix(".onnx")))
    del foreign.metadata_props[:]
    foreign.metadata_props.extend(ours.metadata_props)  # the metadata (and source sha256) of our checkpoint
    _resave(ckpt.with_suffix(".onnx"), foreign)
    _expect_refused_then_torch(ckpt, caplog, "takes tensor(uint8) ['batch', 3, 48, 48]", "uint8 [N, 3, 32, 32]")


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda m: {**m, "attributes": "Male"}, "attributes must be a non-empty list"),
        (lambda m: {**m, "preprocess": {**m["preprocess"], "size": [32]}}, "size (height, width) must be 2 numbers"),
        (lambda m: {**m, "thresholds": [2.0] * len(m["attributes"])}, "thresholds must be one probability"),
    ],
)
def test_edited_metadata_inside_the_file_is_refused(ckpt: Path, caplog: pytest.LogCaptureFixture, edit: Any,
                                                    needle: str) -> None:
    model = onnx.load(str(ckpt.with_suffix(".onnx")))
    for p in model.metadata_props:
        if p.key == META_KEY:
            p.value = json.dumps(edit(json.loads(p.value)))
    _resave(ckpt.with_suffix(".onnx"), model, digest=True)  # the digest does not cover the metadata
    _expect_refused_then_torch(ckpt, caplog, "invalid faceattr model metadata", needle)


def test_external_data_pointing_outside_the_folder_is_refused(ckpt: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = onnx.load(str(ckpt.with_suffix(".onnx")))
    init = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init), init.name))
    set_external_data(init, location="../../../../../../../../etc/hostname", offset=0, length=len(init.raw_data))
    init.data_location = onnx.TensorProto.EXTERNAL
    init.ClearField("raw_data")
    _resave(ckpt.with_suffix(".onnx"), model)
    _expect_refused_then_torch(ckpt, caplog, "not a loadable ONNX model")


@pytest.mark.parametrize("budget", [0, 20_000])
def test_disk_full_during_export_keeps_the_previous_export(ckpt: Path, disk_full: Any, budget: int,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    before = {p.name: p.read_bytes() for p in ckpt.parent.iterdir()}
    disk_full(ckpt.parent, budget=budget)
    code = main(["export", str(ckpt), "--onnx", str(ckpt.with_suffix(".onnx"))])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("faceattr: error:")]
    assert code == 2 and len(lines) == 1 and "no space left on the disk" in lines[0], err
    assert {p.name: p.read_bytes() for p in ckpt.parent.iterdir()} == before  # no temp file, nothing half-written
    assert load(ckpt, backend="onnx").backend.name == "onnx"
