"""The shipped .onnx beside each shipped model: exported from that very checkpoint, same numbers as
torch, and what a cold `faceattr predict` runs without ever importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faceattr.checkpoint import file_sha256, shipped_models_dir
from faceattr.infer import AttributeModel, load, sample_path
from faceattr.infer.backends import SOURCE_SHA256_KEY, OnnxBackend

from .helpers import celeba_crops

REFRESH = "regenerate it with `python scripts/export_shipped_onnx.py`"
SHIPPED = sorted(shipped_models_dir().glob("*.safetensors"))
needs_shipped = pytest.mark.skipif(not SHIPPED, reason="no shipped model in this build")


@pytest.fixture(scope="module")
def both() -> tuple[AttributeModel, AttributeModel]:
    """The shipped default with ONNX Runtime and with torch."""
    if not (shipped_models_dir() / "default.safetensors").is_file():
        pytest.skip("no shipped default model in this build")
    return load("default", backend="onnx"), load("default", backend="torch")


@needs_shipped
@pytest.mark.parametrize("ckpt", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_each_shipped_model_has_an_onnx_of_that_very_checkpoint(ckpt: Path) -> None:
    onnx_path = ckpt.with_suffix(".onnx")
    assert onnx_path.is_file(), f"{onnx_path} is missing: {REFRESH}"
    recorded = OnnxBackend(onnx_path).metadata.get(SOURCE_SHA256_KEY)
    assert recorded == file_sha256(ckpt), f"{onnx_path} is stale (exported from another {ckpt.name}): {REFRESH}"


def test_shipped_onnx_matches_torch_on_real_aligned_faces(
    both: tuple[AttributeModel, AttributeModel], request: pytest.FixtureRequest
) -> None:
    ox, pt = both
    assert (ox.backend.name, pt.backend.name) == ("onnx", "torch")
    assert ox.attributes == pt.attributes and np.array_equal(ox.thresholds, pt.thresholds)
    assert ox.predicts_age and ox.age_scale == pt.age_scale
    crops = [f.crop for name in ("grace_hopper", "astronaut") for f in pt.predict(sample_path(name))]
    try:  # real CelebA aligned crops too, when the shared subset is here
        celeba_root = request.getfixturevalue("celeba_root")
        crops += [c for _, c in celeba_crops(celeba_root, 12, seed=16)]
    except pytest.skip.Exception:
        pass
    p_ox, a_ox = ox.predict_aligned_age(list(crops), batch_size=5)
    p_pt, a_pt = pt.predict_aligned_age(list(crops), batch_size=5)
    assert p_pt.std() > 0.1 and a_pt is not None and a_ox is not None and a_pt.std() > 1  # not a trivial agreement
    assert np.abs(p_ox - p_pt).max() < 1e-4
    assert np.abs(a_ox - a_pt).max() < 1e-4


@pytest.mark.parametrize("name", ["grace_hopper", "astronaut"])
def test_both_backends_give_the_same_faces_on_the_samples(both: tuple[AttributeModel, AttributeModel], name: str) -> None:
    ox, pt = both
    (f,) = ox.predict(sample_path(name))
    (g,) = pt.predict(sample_path(name))
    assert f.box == g.box and f.present == g.present
    assert max(abs(f.probabilities[a] - g.probabilities[a]) for a in pt.attributes) < 1e-4
    assert f.age is not None and g.age is not None and abs(f.age - g.age) < 1e-4


def test_default_load_is_onnx_for_the_shipped_model(both: tuple[AttributeModel, AttributeModel]) -> None:
    import faceattr

    assert faceattr.load().backend.name == "onnx"
    assert faceattr.load(backend="torch").backend.name == "torch"


# Runs the real CLI in a fresh interpreter, then reports what it imported; the report goes to a file
# because stdout carries predict's own output.
_PROBE = """
import json, sys
from faceattr.cli import main
codes = [main(["predict", sys.argv[1], "--json"]), main(["predict", sys.argv[1]])]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "timm", "sklearn", "matplotlib"))
with open(sys.argv[2], "w") as f:
    json.dump({"codes": codes, "heavy": heavy, "onnxruntime": "onnxruntime" in sys.modules}, f)
"""


def test_cold_predict_never_imports_torch(both: tuple[AttributeModel, AttributeModel], tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    image = sample_path("grace_hopper")
    run = subprocess.run([sys.executable, "-c", _PROBE, str(image), str(report)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    got = json.loads(report.read_text())
    assert got["codes"] == [0, 0]
    assert got["heavy"] == [], f"the ONNX predict path imported {got['heavy']}"
    assert got["onnxruntime"]
    # And it printed the real thing: JSON first (one image, one face with an age), then the table.
    decoder = json.JSONDecoder()
    results, end = decoder.raw_decode(run.stdout)
    face = results[0]["faces"][0]
    assert results[0]["image"] == str(image) and face["age"] is not None
    (g,) = both[1].predict(image)
    assert max(abs(face["attributes"][a] - g.probabilities[a]) for a in g.probabilities) < 1e-4
    assert f"{image}: 1 face" in run.stdout[end:]
