"""faceattr.infer.model: load(), AttributeModel.predict / predict_aligned / predict_many, Face, ImageResult."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import faceattr
from faceattr.errors import FaceattrError
from faceattr.infer import AttributeModel, Face, ImageResult, load, sample_path
from faceattr.infer.image_io import load_rgb

from .helpers import ATTRS, build_checkpoint, celeba_crops, noise_canvas, paste


def test_load_exposes_metadata(small_model: AttributeModel, small_ckpt: Path) -> None:
    assert small_model.name == "small"
    assert small_model.attributes == ATTRS
    assert small_model.thresholds.dtype == np.float32 and (small_model.thresholds == 0.5).all()
    assert small_model.preprocess.size == (64, 64) and small_model.preprocess.crop == (25, 45, 153, 173)
    assert small_model.meta["model"]["name"] == "celeb_cnn"
    assert "celeb_cnn" in repr(small_model)


def test_top_level_load_delegates(small_ckpt: Path) -> None:
    m = faceattr.load(str(small_ckpt))
    assert isinstance(m, AttributeModel) and m.attributes == ATTRS


def test_missing_default_or_bad_names_are_clear_errors(tmp_path: Path, small_ckpt: Path) -> None:
    from faceattr.checkpoint import shipped_models_dir

    if not (shipped_models_dir() / "default.safetensors").is_file():
        with pytest.raises(FaceattrError, match="no shipped model named 'default'"):
            load("default")
    with pytest.raises(FaceattrError, match="checkpoint not found"):
        load(tmp_path / "missing.safetensors")
    with pytest.raises(FaceattrError, match="unknown backend"):
        load(small_ckpt, backend="tensorrt")
    with pytest.raises(FaceattrError, match="backend='onnx'"):
        load(tmp_path / "model.onnx", backend="torch")
    with pytest.raises(FaceattrError, match="ONNX model not found"):
        load(tmp_path / "model.onnx")
    with pytest.raises(FaceattrError, match="no ONNX export"):
        load(small_ckpt, backend="onnx")


def test_thresholds_from_metadata(tmp_path: Path) -> None:
    th = [0.1 * (i % 10) for i in range(40)]
    m = load(build_checkpoint(tmp_path / "th.safetensors", thresholds=th, size=(64, 64)))
    assert np.allclose(m.thresholds, th)
    faces = m.predict(sample_path("grace_hopper"))
    probs = faces[0].probabilities
    expect = [a for a, t in zip(m.attributes, th) if probs[a] >= t]
    assert sorted(faces[0].present) == sorted(expect)


def test_predict_aligned_matches_a_manual_forward_pass(small_model: AttributeModel, small_ckpt: Path, celeba_root: Path) -> None:
    from faceattr.checkpoint import load_checkpoint
    from faceattr.data.transforms import normalize_batch, prepare_image

    crops = [c for _, c in celeba_crops(celeba_root, 5, seed=1)]
    probs = small_model.predict_aligned(np.stack(crops))
    assert probs.shape == (5, 40) and probs.dtype == np.float32
    net, _ = load_checkpoint(small_ckpt)
    x = np.stack([prepare_image(Image.fromarray(c), small_model.preprocess) for c in crops])
    with torch.no_grad():
        ref = torch.sigmoid(net(normalize_batch(torch.from_numpy(x).permute(0, 3, 1, 2), small_model.preprocess))).numpy()
    assert np.abs(probs - ref).max() < 1e-5
    assert probs.std() > 0.1  # the test checkpoint really discriminates, so the comparison means something
    # PIL input, batch splitting and a single crop all give the same numbers.
    assert np.abs(small_model.predict_aligned([Image.fromarray(c) for c in crops], batch_size=2) - probs).max() < 1e-5
    assert np.abs(small_model.predict_aligned(crops[0]) - probs[:1]).max() < 1e-5
    # Flip averages the logits of the crop and its mirror.
    flipped = small_model.predict_aligned(np.stack(crops), flip=True)
    with torch.no_grad():
        xt = normalize_batch(torch.from_numpy(x).permute(0, 3, 1, 2), small_model.preprocess)
        ref_flip = torch.sigmoid((net(xt) + net(torch.flip(xt, dims=[3]))) / 2).numpy()
    assert np.abs(flipped - ref_flip).max() < 1e-5


def test_predict_on_a_sample_portrait(small_model: AttributeModel, grace: Path) -> None:
    faces = small_model.predict(grace)
    assert len(faces) == 1
    f = faces[0]
    assert isinstance(f, Face)
    assert np.allclose(f.box, (182.9, 120.5, 170.3, 212.5), atol=1.0)
    assert len(f.landmarks) == 5 and f.score is not None and f.score > 0.9
    assert list(f.probabilities) == small_model.attributes
    assert f.crop is not None and f.crop.size == (178, 218)
    # Probabilities are those of the aligned crop; present = over threshold, most probable first.
    again = small_model.predict_aligned([f.crop])[0]
    assert np.allclose([f.probabilities[a] for a in small_model.attributes], again, atol=1e-6)
    assert f.present == sorted((a for a, p in f.probabilities.items() if p >= 0.5), key=lambda a: -f.probabilities[a])
    assert 0 < len(f.present) < 40
    d = f.to_dict()
    assert set(d) == {"box", "score", "landmarks", "attributes", "present", "age"}
    assert json.loads(json.dumps(d))["present"] == f.present
    # PIL and array inputs give the same answer as the path.
    same = small_model.predict(Image.open(grace))[0]
    assert same.box == f.box and same.probabilities == f.probabilities
    assert small_model.predict(load_rgb(grace))[0].probabilities == f.probabilities


def test_exif_rotated_photo_is_detected_upright(small_model: AttributeModel, grace: Path, tmp_path: Path) -> None:
    sideways = Image.open(grace).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "phone.jpg"
    sideways.save(p, quality=95, exif=exif)
    faces = small_model.predict(p)
    assert len(faces) == 1
    assert np.allclose(faces[0].box, (182.9, 120.5, 170.3, 212.5), atol=4)  # in upright coordinates


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_odd_modes_still_find_the_face(small_model: AttributeModel, grace: Path, tmp_path: Path, mode: str) -> None:
    im = Image.open(grace)
    if mode == "I;16":
        im = Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257)
    elif mode == "RGBA":
        im = im.convert("RGBA")
        im.putalpha(200)
    else:
        im = im.convert(mode)
    p = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    im.save(p)
    faces = small_model.predict(p)
    assert len(faces) == 1 and np.allclose(faces[0].box, (182.9, 120.5, 170.3, 212.5), atol=8)


def _group_scene(celeba_root: Path) -> tuple[np.ndarray, list[float]]:
    rng = np.random.default_rng(4)
    scene = noise_canvas(rng, 480, 900)
    centres = [150.0, 440.0, 740.0]
    for (_, crop), scale, cx in zip(celeba_crops(celeba_root, 3, seed=11), (0.8, 1.6, 1.15), centres):
        scene, _ = paste(scene, crop, scale=scale, center=(cx, 240))
    return scene, [440.0, 740.0, 150.0]  # x centres, largest face first


def test_several_faces_sorted_and_limited(small_model: AttributeModel, celeba_root: Path) -> None:
    scene, order = _group_scene(celeba_root)
    faces = small_model.predict(scene)
    assert len(faces) == 3
    assert [f.box[2] * f.box[3] for f in faces] == sorted((f.box[2] * f.box[3] for f in faces), reverse=True)
    for f, cx in zip(faces, order):
        assert abs(f.box[0] + f.box[2] / 2 - cx) < 40
    # Different faces, different answers.
    assert np.abs(np.array(list(faces[0].probabilities.values())) - list(faces[1].probabilities.values())).max() > 0.05
    two = small_model.predict(scene, max_faces=2)
    assert [f.box for f in two] == [f.box for f in faces[:2]]
    assert two[0].probabilities == pytest.approx(faces[0].probabilities, abs=1e-6)


def test_tiny_face_is_reported_not_guessed(small_model: AttributeModel, celeba_root: Path) -> None:
    rng = np.random.default_rng(6)
    (_, crop), = celeba_crops(celeba_root, 1, seed=31)
    scene, _ = paste(noise_canvas(rng, 240, 320), crop, scale=0.33)  # a face ~30 px wide, ~20 px box side
    found = small_model.predict(scene, min_face=1)
    assert len(found) == 1 and found[0].probabilities and not found[0].too_small
    size = min(found[0].box[2], found[0].box[3])
    faces = small_model.predict(scene, min_face=int(size) + 5)
    assert len(faces) == 1
    f = faces[0]
    assert f.too_small and f.probabilities == {} and f.present == [] and f.crop is None
    assert f.to_dict()["too_small"] is True
    assert f.box == found[0].box  # still located, just not classified


def test_no_face_gives_empty_list(small_model: AttributeModel) -> None:
    assert small_model.predict(np.full((400, 300, 3), 200, np.uint8)) == []


def test_no_detect_treats_the_whole_image_as_the_face(small_model: AttributeModel, grace: Path) -> None:
    # A tight face crop (no margin): --no-detect places it on the template's face box.
    rgb = load_rgb(grace)
    x, y, w, h = (183, 120, 170, 212)
    tight = rgb[y : y + h, x : x + w]
    faces = small_model.predict(tight, detect=False)
    assert len(faces) == 1
    f = faces[0]
    assert f.box == (0.0, 0.0, 170.0, 212.0) and f.score is None and f.landmarks == []
    assert f.crop is not None and f.crop.size == (178, 218)
    assert f.to_dict()["score"] is None
    # Works on an image YuNet finds nothing in.
    blank = np.full((100, 80, 3), 90, np.uint8)
    assert small_model.predict(blank) == [] and len(small_model.predict(blank, detect=False)) == 1


def test_no_align_takes_the_input_as_the_aligned_crop(small_model: AttributeModel, celeba_root: Path) -> None:
    (_, crop), = celeba_crops(celeba_root, 1, seed=41)
    faces = small_model.predict(crop, align=False)
    assert len(faces) == 1
    assert np.array_equal(np.asarray(faces[0].crop), crop)
    direct = small_model.predict_aligned(crop[None])[0]
    assert np.allclose([faces[0].probabilities[a] for a in small_model.attributes], direct, atol=1e-6)


def test_softmax_checkpoint(tmp_path: Path, grace: Path) -> None:
    m = load(build_checkpoint(tmp_path / "smile.safetensors", num_outputs=2, output="softmax", size=(64, 64)))
    assert m.attributes == ["Smiling"]
    f = m.predict(grace)[0]
    assert list(f.probabilities) == ["Smiling"] and 0 <= f.probabilities["Smiling"] <= 1


def test_predict_many_batches_across_images_and_survives_bad_files(
    small_model: AttributeModel, tmp_path: Path, grace: Path, astronaut: Path, celeba_root: Path
) -> None:
    scene, _ = _group_scene(celeba_root)
    group = tmp_path / "group.png"
    Image.fromarray(scene).save(group)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), (10, 10, 10)).save(blank)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(grace.read_bytes()[:3000])
    paths = [grace, text, group, blank, cut, astronaut]
    results = list(small_model.predict_many(paths, batch_size=2))
    assert [r.image for r in results] == [str(p) for p in paths]
    assert all(isinstance(r, ImageResult) for r in results)
    assert [len(r.faces) for r in results] == [1, 0, 3, 0, 0, 1]
    assert [r.error is not None for r in results] == [False, True, False, False, True, False]
    assert "notes.jpg" in results[1].error and "cut.jpg" in results[4].error
    # Batching across images changes nothing: same numbers as one predict() per image.
    for r, p in zip(results, paths):
        if r.faces:
            single = small_model.predict(p)
            for a, b in zip(r.faces, single):
                assert a.box == b.box
                assert np.allclose(list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-5)
    d = results[1].to_dict()
    assert d == {"image": str(text), "faces": [], "error": results[1].error}
    assert "error" not in results[0].to_dict()


def test_predict_many_is_lazy(small_model: AttributeModel, grace: Path) -> None:
    seen: list[int] = []

    def paths():
        for i in range(100):
            seen.append(i)
            yield grace

    it = small_model.predict_many(paths(), batch_size=2, prefetch=2)
    first = next(it)
    assert len(first.faces) == 1
    assert len(seen) <= 5  # one batch (2) plus the prefetch window (2): not the whole input


def test_pasted_faces_keep_their_probabilities(default_model: AttributeModel, celeba_root: Path) -> None:
    """With the trained default model: a CelebA face rotated/scaled into a scene gets nearly the
    probabilities of its original aligned crop. Skips until the default model is shipped."""
    rng = np.random.default_rng(9)
    diffs = []
    for _, crop in celeba_crops(celeba_root, 10, seed=51):
        scene, _ = paste(noise_canvas(rng), crop, angle=rng.uniform(-20, 20), scale=rng.uniform(0.7, 1.5))
        faces = default_model.predict(scene)
        assert faces
        # Some CelebA crops show a second person at their edge; take the face at the paste centre.
        face = min(faces, key=lambda f: abs(f.box[0] + f.box[2] / 2 - 320) + abs(f.box[1] + f.box[3] / 2 - 240))
        assert abs(face.box[0] + face.box[2] / 2 - 320) < 40
        got = np.array([face.probabilities[a] for a in default_model.attributes])
        ref = default_model.predict_aligned(crop[None])[0]
        diffs.append(np.abs(got - ref).mean())
    # A 2-epoch mobilenet_v2 (3,000 images) gave medians 0.025-0.039 and maxima 0.059-0.071 here.
    assert np.median(diffs) < 0.07 and max(diffs) < 0.15


def test_default_model_on_the_samples(default_model: AttributeModel) -> None:
    """With the trained default model, the sample portraits get the attributes anyone sees in them
    (only unambiguous ones). Skips until the default model is shipped."""
    g = default_model.predict(sample_path("grace_hopper"))
    a = default_model.predict(sample_path("astronaut"))
    assert len(g) == 1 and len(a) == 1
    gp, ap = g[0].probabilities, a[0].probabilities
    # Only the unmistakable ones: Grace Hopper wears glasses; Eileen Collins smiles, without glasses.
    checks = [(gp, "Eyeglasses", True), (ap, "Smiling", True), (ap, "Eyeglasses", False)]
    for probs, name, expected in checks:
        if name in probs:
            assert (probs[name] >= 0.5) is expected, (name, probs[name])


def test_detector_settings_are_used(small_model: AttributeModel, grace: Path) -> None:
    from faceattr.infer.detect import FaceDetector

    assert isinstance(small_model.detector, FaceDetector)
    original = small_model.detector
    try:
        small_model.detector = FaceDetector(score_threshold=0.99)  # grace_hopper scores 0.94
        assert small_model.predict(grace) == []
    finally:
        small_model.detector = original
    assert len(small_model.predict(grace)) == 1


def test_predict_many_same_with_and_without_prefetch(small_model: AttributeModel, grace: Path, astronaut: Path, tmp_path: Path) -> None:
    text = tmp_path / "x.jpg"
    text.write_text("nope")
    paths = [grace, text, astronaut, grace, astronaut]
    a = [r.to_dict() for r in small_model.predict_many(paths, batch_size=3, prefetch=0)]
    b = [r.to_dict() for r in small_model.predict_many(paths, batch_size=3, prefetch=3)]
    assert a == b and [len(r["faces"]) for r in a] == [1, 0, 1, 1, 1]


def test_predicting_with_the_shipped_model_imports_no_celeba_training_code() -> None:
    # Imports point downstream: infer uses data.transforms and data.geometry only, never the loaders, cache or augmentation.
    import subprocess
    import sys

    code = ("import sys, faceattr; from faceattr.infer import sample_path; "
            "faces = faceattr.load('default').predict(sample_path('grace_hopper')); "
            "print(len(faces), sorted(m for m in sys.modules if m.startswith(('faceattr.data', 'faceattr.train', 'sklearn'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(None, 1)
    assert out[0] == "1"
    assert out[1].strip() == "['faceattr.data', 'faceattr.data.geometry', 'faceattr.data.transforms']"
