"""`export --half`: an fp16 checkpoint's ONNX export stores its weights in fp16, with the same outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from faceattr.infer import export, load

from .helpers import build_checkpoint, celeba_crops


@pytest.fixture(scope="module")
def half_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mobilenet_v2 checkpoint saved in half precision, as the shipped models are."""
    from faceattr.checkpoint import load_checkpoint, save_checkpoint

    d = tmp_path_factory.mktemp("half")
    full = build_checkpoint(d / "full.safetensors", "mobilenet_v2", seed=3, size=(96, 96))
    model, meta = load_checkpoint(full)
    return save_checkpoint(d / "half.safetensors", model, meta, half=True)


def test_half_export_is_half_the_size_with_the_same_outputs(half_ckpt: Path, celeba_root: Path, tmp_path: Path) -> None:
    plain, d_plain = export(half_ckpt, tmp_path / "plain.onnx")
    half, d_half = export(half_ckpt, tmp_path / "half.onnx", half_weights=True)
    assert d_plain < 1e-4 and d_half < 1e-4
    assert half.stat().st_size < 0.6 * plain.stat().st_size
    graph = onnx.load(str(half))
    onnx.checker.check_model(graph)
    # Every convolution and linear weight is stored in fp16 and cast back inside the graph.
    big = [i for i in graph.graph.initializer if numpy_helper.to_array(i).size > 1000]
    assert big and all(i.data_type == onnx.TensorProto.FLOAT16 for i in big)
    casts = {n.output[0] for n in graph.graph.node if n.op_type == "Cast"}
    assert {i.name.removesuffix("__fp16") for i in big} <= casts
    # On real faces both exports give the torch backend's probabilities, and each other's.
    crops = np.stack([c for _, c in celeba_crops(celeba_root, 6, seed=5)])
    reference = load(half_ckpt, backend="torch").predict_aligned(crops)
    for path in (plain, half):
        # Loaded by file, as `faceattr predict --model X.onnx` does.
        got = load(path, backend="onnx").predict_aligned(crops)
        assert reference.std() > 0.1 and np.abs(got - reference).max() < 1e-4


def test_half_export_of_an_fp32_checkpoint_keeps_what_fp16_cannot_hold(tmp_path: Path) -> None:
    # A float32 checkpoint's weights are not fp16 numbers: --half must not round them.
    full = build_checkpoint(tmp_path / "full.safetensors", "celeb_cnn", size=(32, 32))
    path, diff = export(full, tmp_path / "full.onnx", half_weights=True)
    assert diff < 1e-4
    graph = onnx.load(str(path))
    big = [i for i in graph.graph.initializer if numpy_helper.to_array(i).size > 1000]
    assert big and all(i.data_type == onnx.TensorProto.FLOAT for i in big)
