"""evaluate_utkface on real UTKFace chips: predict's detect-and-align path, missed faces counted, never dropped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from faceattr.errors import FaceattrError
from faceattr.evaluate.schema import EVAL_SCHEMA


def _valid(doc: dict) -> None:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    jsonschema_rs.validator_for(EVAL_SCHEMA).validate(json.loads(json.dumps(doc, allow_nan=False)))


def test_numbers_come_from_predict_and_add_up(age_checkpoint: Path, utkface_root: Path) -> None:
    import faceattr.infer as fi
    from faceattr.data.utkface import load_utkface
    from faceattr.evaluate import UtkEvalConfig, evaluate_utkface

    ev = evaluate_utkface(UtkEvalConfig(model=str(age_checkpoint), data_root=str(utkface_root), limit=24,
                                        device="cpu", progress=False))
    r = ev.result
    _valid(r)
    split = load_utkface(utkface_root, "test", seed=0, limit=24)
    assert ev.filenames == split.filenames and r["split"] == "test" and r["seed"] == 0
    assert r["n_detected"] + r["n_missed"] == r["n_images"] == 24
    assert sum(r["missed"].values()) == r["n_missed"] == len(ev.missed)
    # Independently: the largest face that `predict` finds in each photo.
    model = fi.load(str(age_checkpoint), device="cpu")
    for i in range(0, 24, 6):
        faces = model.predict(split.paths[i])
        if not faces or faces[0].too_small:
            assert not ev.detected[i]
            continue
        assert ev.male_prob[i] == pytest.approx(faces[0].probabilities["Male"], abs=1e-5)
        assert ev.age_pred is not None and ev.age_pred[i] == pytest.approx(faces[0].age, abs=1e-3)
    found = ev.detected
    called = ev.male_prob[found] >= r["male_threshold"]
    o = r["groups"]["overall"]
    assert o["gender_accuracy"] == pytest.approx(float((called == (ev.male[found] > 0.5)).mean()))
    assert o["age_mae"] == pytest.approx(float(np.abs(ev.age_pred[found] - ev.age[found]).mean()), rel=1e-5)
    assert r["predicts_age"] is True and r["male_threshold"] == 0.5
    assert r["warnings"] == []  # the test blocks of the training seed (0: the checkpoint records none)


def test_missed_and_unreadable_images_are_counted_per_group(age_checkpoint: Path, utkface_root: Path,
                                                            tmp_path: Path) -> None:
    from PIL import Image

    from faceattr.data.utkface import load_utkface
    from faceattr.evaluate import UtkEvalConfig, evaluate_utkface

    real = load_utkface(utkface_root, "test", seed=0, limit=5)
    folder = tmp_path / "utk" / "UTKFace"
    folder.mkdir(parents=True)
    for p in real.paths:
        (folder / p.name).symlink_to(p.resolve())
    # A flat grey chip (no face: a 30-year-old White man by its name) and a file that is not an image.
    Image.new("RGB", (200, 200), (128, 128, 128)).save(folder / "30_0_0_20990101000000001.jpg.chip.jpg")
    (folder / "40_1_1_20990101000000002.jpg.chip.jpg").write_bytes(b"not a jpeg")
    ev = evaluate_utkface(UtkEvalConfig(model=str(age_checkpoint), data_root=str(tmp_path / "utk"), split="all",
                                        device="cpu", progress=False))
    r = ev.result
    _valid(r)
    assert r["n_images"] == 7
    assert ev.missed["30_0_0_20990101000000001.jpg.chip.jpg"] == "no_face"
    assert ev.missed["40_1_1_20990101000000002.jpg.chip.jpg"] == "unreadable"
    assert r["missed"]["no_face"] >= 1 and r["missed"]["unreadable"] == 1
    assert "30_0_0_20990101000000001.jpg.chip.jpg" in r["missed_examples"]
    g = r["groups"]
    assert g["overall"]["n_missed"] == r["n_missed"] and g["overall"]["n"] == r["n_detected"]
    assert g["race"]["White"]["n_missed"] >= 1 and g["race"]["Black"]["n_missed"] >= 1
    assert sum(s["n_missed"] for s in g["age_band"].values()) == r["n_missed"]


def test_bad_model_or_split_is_refused_before_any_work(age_checkpoint: Path, utkface_root: Path,
                                                       tmp_path: Path) -> None:
    from infer.helpers import build_checkpoint

    from faceattr.evaluate import UtkEvalConfig, evaluate_utkface

    ckpt = build_checkpoint(tmp_path / "no_male.safetensors", "celeb_cnn", num_outputs=2, size=(32, 32),
                            attributes=["Smiling", "Eyeglasses"])
    with pytest.raises(FaceattrError, match="does not predict Male"):
        evaluate_utkface(UtkEvalConfig(model=str(ckpt), data_root=str(utkface_root), progress=False))
    with pytest.raises(FaceattrError, match="unknown UTKFace split 'holdout'"):
        evaluate_utkface(UtkEvalConfig(model=str(age_checkpoint), data_root=str(utkface_root), split="holdout",
                                       progress=False))


def test_overlap_warnings() -> None:
    from faceattr.evaluate.utk import _overlap_warnings

    age_meta = {"age": {"mean": 35.0, "std": 20.0}, "config": {"seed": 0}}
    assert "training images" in _overlap_warnings(age_meta, "train", 0)[0]
    assert "--seed 0" in _overlap_warnings(age_meta, "test", 3)[0]
    assert "best epoch" in _overlap_warnings(age_meta, "valid", 0)[0]
    assert _overlap_warnings(age_meta, "test", 0) == []
    assert _overlap_warnings({"config": {"data": {"sources": []}}}, "train", 0) == []  # never saw UTKFace
