"""ONNX export and the ONNX Runtime backend: same numbers as torch on real faces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from faceattr.errors import FaceattrError
from faceattr.infer import AttributeModel, export, load
from faceattr.checkpoint import file_sha256, update_metadata
from faceattr.infer.backends import DEFAULT_OPSET, META_KEY, ONNX_INPUT, ONNX_OUTPUT, SOURCE_SHA256_KEY, OnnxBackend
from faceattr.infer.model import logits_to_probs

from .helpers import celeba_crops


@pytest.fixture(scope="module")
def mnv2_onnx(mnv2_ckpt: Path) -> tuple[Path, float]:
    """mobilenet_v2 exported beside its checkpoint (so backend='onnx' finds it by checkpoint)."""
    return export(mnv2_ckpt, mnv2_ckpt.with_suffix(".onnx"))


@pytest.fixture(scope="module")
def real_crops(celeba_root: Path, grace: Path, astronaut: Path) -> np.ndarray:
    """Real aligned faces: 6 CelebA crops plus the two sample portraits aligned by the pipeline."""
    crops = [c for _, c in celeba_crops(celeba_root, 6, seed=61)]
    m = load_for_alignment()
    crops += [np.asarray(m.predict(p)[0].crop) for p in (grace, astronaut)]
    return np.stack(crops)


def load_for_alignment() -> AttributeModel:
    """Any model will do to get aligned crops; build the cheapest one."""
    import tempfile

    from .helpers import build_checkpoint

    d = Path(tempfile.mkdtemp())
    return load(build_checkpoint(d / "align.safetensors", size=(32, 32)))


def test_export_writes_a_checked_graph_and_metadata(mnv2_onnx: tuple[Path, float], mnv2_ckpt: Path) -> None:
    path, diff = mnv2_onnx
    assert path.is_file() and diff < 1e-4
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert graph.opset_import[0].version == DEFAULT_OPSET
    (inp,) = graph.graph.input
    assert inp.name == ONNX_INPUT and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert inp.type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
    assert [o.name for o in graph.graph.output] == [ONNX_OUTPUT]
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["attributes"] == load(mnv2_ckpt, backend="torch").attributes
    assert meta["onnx"]["input"] == ONNX_INPUT and meta["onnx"]["opset"] == DEFAULT_OPSET
    # The same metadata and the checkpoint's sha256 inside the file, so it loads on its own and a
    # stale export is recognised.
    props = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(props[META_KEY]) == meta
    assert props[SOURCE_SHA256_KEY] == meta["onnx"]["source_sha256"] == file_sha256(mnv2_ckpt)


def test_onnxruntime_matches_torch_on_real_faces(mnv2_onnx: tuple[Path, float], mnv2_ckpt: Path, real_crops: np.ndarray) -> None:
    torch_model = load(mnv2_ckpt, backend="torch")
    onnx_model = load(mnv2_ckpt, backend="onnx")
    assert onnx_model.backend.name == "onnx" and torch_model.backend.name == "torch"
    pt = torch_model.predict_aligned(real_crops, batch_size=3)
    ox = onnx_model.predict_aligned(real_crops, batch_size=3)  # batches of 3 and a last one of 2
    assert pt.std() > 0.1  # spread-out outputs, so agreement is not trivial
    assert np.abs(pt - ox).max() < 1e-4
    # Raw logits too, one image at a time (batch axis really dynamic).
    from PIL import Image

    from faceattr.data.transforms import prepare_image

    x = np.stack([prepare_image(Image.fromarray(c), torch_model.preprocess) for c in real_crops[:3]])
    lt = torch_model.backend.logits(x, batch_size=1)
    lo = onnx_model.backend.logits(x, batch_size=1)
    assert np.abs(lt - lo).max() < 1e-4 and np.abs(lt).max() > 1
    # Flip test-time augmentation agrees as well.
    assert np.abs(torch_model.predict_aligned(real_crops[:2], flip=True) - onnx_model.predict_aligned(real_crops[:2], flip=True)).max() < 1e-4


def test_onnx_path_loads_directly_and_predicts_photos(mnv2_onnx: tuple[Path, float], mnv2_ckpt: Path, grace: Path) -> None:
    path, _ = mnv2_onnx
    m = load(path, backend="onnx")
    assert m.attributes == load(mnv2_ckpt, backend="torch").attributes and m.name == "mnv2"
    (f,) = m.predict(grace)
    (g,) = load(mnv2_ckpt, backend="torch").predict(grace)
    assert f.box == g.box
    assert np.abs(np.array(list(f.probabilities.values())) - list(g.probabilities.values())).max() < 1e-4


def _strip_metadata(src: Path, out: Path) -> Path:
    """Copy of an export without its metadata_props, as `faceattr export` wrote them before they existed."""
    graph = onnx.load(str(src))
    del graph.metadata_props[:]
    onnx.save(graph, str(out))
    return out


def test_onnx_without_metadata_or_broken(tmp_path: Path, mnv2_onnx: tuple[Path, float]) -> None:
    # An export carries its metadata: a lone copy loads as it is...
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(mnv2_onnx[0].read_bytes())
    assert load(lone).attributes == json.loads(mnv2_onnx[0].with_suffix(".json").read_text())["attributes"]
    # ...an old-style export needs its JSON beside it.
    old = _strip_metadata(mnv2_onnx[0], tmp_path / "old.onnx")
    with pytest.raises(FaceattrError, match="no metadata"):
        load(old, backend="onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    junk.with_suffix(".json").write_text(mnv2_onnx[0].with_suffix(".json").read_text())
    with pytest.raises(FaceattrError, match="not a loadable ONNX model"):
        load(junk, backend="onnx")
    with pytest.raises(FaceattrError, match="not found"):
        load(tmp_path / "absent.onnx", backend="onnx")


def test_export_refuses_a_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_ckpt: Path) -> None:
    # If ONNX Runtime disagreed with torch (a broken export), nothing may be written.
    from faceattr.infer import backends

    real = backends.OnnxBackend.logits

    def skewed(self, images, **kw):  # type: ignore[no-untyped-def]
        return real(self, images, **kw) + 0.01

    monkeypatch.setattr(backends.OnnxBackend, "logits", skewed)
    out = tmp_path / "bad.onnx"
    with pytest.raises(FaceattrError, match="does not match torch"):
        export(small_ckpt, out)
    assert not out.exists() and not list(tmp_path.glob(".bad.onnx*"))
    with pytest.raises(FaceattrError, match=r"\.onnx"):
        export(small_ckpt, tmp_path / "model.bin")


def test_torch_backend_uses_runtime_predict_logits(small_model: AttributeModel, monkeypatch: pytest.MonkeyPatch) -> None:
    # The torch path goes through faceattr.runtime (shared batching, device and flip handling).
    import faceattr.runtime as rt

    calls = []
    real = rt.predict_logits

    def spy(*a, **kw):  # type: ignore[no-untyped-def]
        calls.append(kw.get("batch_size"))
        return real(*a, **kw)

    monkeypatch.setattr(rt, "predict_logits", spy)
    small_model.predict_aligned(np.zeros((3, 218, 178, 3), np.uint8), batch_size=2)
    assert calls == [2]
    assert torch.get_num_threads() >= 1


def test_auto_takes_onnx_only_for_an_export_of_this_very_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, real_crops: np.ndarray
) -> None:
    from .helpers import build_checkpoint

    ckpt = build_checkpoint(tmp_path / "m.safetensors", size=(64, 64), seed=3)
    assert load(ckpt).backend.name == "torch"  # no export beside it
    export(ckpt, ckpt.with_suffix(".onnx"))
    auto = load(ckpt)
    assert auto.backend.name == "onnx" and auto.name == "m"
    torch_model = load(ckpt, backend="torch")
    assert torch_model.backend.name == "torch"
    assert np.abs(auto.predict_aligned(real_crops) - torch_model.predict_aligned(real_crops)).max() < 1e-4
    assert auto.meta["attributes"] == torch_model.meta["attributes"] and np.array_equal(auto.thresholds, torch_model.thresholds)

    # The checkpoint changes after the export (here: new thresholds): the export is stale.
    update_metadata(ckpt, {"thresholds": [0.3] * 40})
    with caplog.at_level("WARNING", logger="faceattr.infer.model"):
        fallback = load(ckpt)
    assert fallback.backend.name == "torch" and np.allclose(fallback.thresholds, 0.3)
    assert "exported from another version" in caplog.text
    with pytest.raises(FaceattrError, match="exported from another version of m.safetensors.*faceattr export"):
        load(ckpt, backend="onnx")
    export(ckpt, ckpt.with_suffix(".onnx"))
    assert load(ckpt).backend.name == "onnx" and np.allclose(load(ckpt).thresholds, 0.3)

    # An export from before sources were recorded: used only when asked for.
    _strip_metadata(ckpt.with_suffix(".onnx"), ckpt.with_suffix(".onnx"))
    assert load(ckpt).backend.name == "torch"
    assert load(ckpt, backend="onnx").backend.name == "onnx"


def test_auto_uses_torch_without_onnxruntime(
    mnv2_onnx: tuple[Path, float], mnv2_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert load(mnv2_ckpt).backend.name == "torch"


def test_numpy_probabilities_equal_torch_ones() -> None:
    from faceattr.runtime import logits_to_probs as torch_probs

    rng = np.random.default_rng(0)
    logits = np.concatenate([rng.normal(0, 4, (64, 41)), np.full((1, 41), 1e4), np.full((1, 41), -1e4)]).astype(np.float32)
    for output, x in (("sigmoid", logits), ("softmax", logits[:, :2])):
        ours = logits_to_probs(x, output)
        ref = torch_probs(torch.from_numpy(x), output).numpy()
        assert ours.dtype == np.float32 and ours.shape == ref.shape
        assert np.abs(ours - ref).max() < 1e-6 and np.isfinite(ours).all()


def test_set_threads_reopens_the_session(mnv2_onnx: tuple[Path, float], real_crops: np.ndarray) -> None:
    from PIL import Image

    from faceattr.data.transforms import Preprocess, prepare_image

    backend = OnnxBackend(mnv2_onnx[0])
    pre = Preprocess(size=(96, 96))
    x = np.stack([prepare_image(Image.fromarray(c), pre) for c in real_crops[:2]])
    before = backend.logits(x)
    backend.set_threads(1)
    assert backend.threads == 1 and backend.session.get_session_options().intra_op_num_threads == 1
    assert np.abs(backend.logits(x) - before).max() < 1e-5


def test_spin_off_and_back_on_reuses_the_first_session(mnv2_onnx: tuple[Path, float], real_crops: np.ndarray) -> None:
    """predict_many turns spinning off for its run and back on: the second switch takes the session already open."""
    from PIL import Image

    from faceattr.data.transforms import Preprocess, prepare_image

    def spinning(b: OnnxBackend) -> str:
        return b.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")

    backend = OnnxBackend(mnv2_onnx[0], spin=True)
    x = np.stack([prepare_image(Image.fromarray(c), Preprocess(size=(96, 96))) for c in real_crops[:2]])
    first, before = backend.session, backend.logits(x)
    backend.set_threads(0, spin=False)
    assert backend.session is not first and spinning(backend) == "0" and not backend.spin
    np.testing.assert_allclose(backend.logits(x), before, atol=1e-5)
    backend.set_threads(0, spin=True)
    assert backend.session is first and spinning(backend) == "1" and backend.spin
    backend.set_threads(1)  # a third setting: only it and the one before it stay open
    assert backend.session.get_session_options().intra_op_num_threads == 1 and len(backend._sessions) == 2
