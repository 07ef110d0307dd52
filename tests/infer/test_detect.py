"""faceattr.infer.detect: YuNet on real photos, at any size, with several or no faces."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from faceattr.errors import FaceattrError
from faceattr.infer.detect import FaceDetector, yunet_path
from faceattr.infer.image_io import load_rgb

from .helpers import celeba_crops, noise_canvas, paste

# Reference numbers from shared/weights/README.md (YuNet section), measured with plain cv2 on the
# original files; astronaut.jpg here is a JPEG re-encode of skimage's PNG, hence a looser tolerance.
REFERENCE = {
    "grace": ((182.9, 120.5, 170.3, 212.5), 0.9432, 1.0),
    "astronaut": ((178.2, 62.9, 89.9, 113.3), 0.9323, 3.0),
}


def test_vendored_model_is_the_documented_file() -> None:
    import hashlib

    digest = hashlib.sha256(yunet_path().read_bytes()).hexdigest()
    assert digest == "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
    folder = yunet_path().parent
    for notice in ("LICENSE", "LICENSE.opencv_zoo-MIT", "NOTICE"):
        assert (folder / notice).is_file()
    assert digest in (folder / "NOTICE").read_text()


@pytest.mark.parametrize("name", ["grace", "astronaut"])
def test_sample_portraits_one_face(name: str, request: pytest.FixtureRequest, detector: FaceDetector) -> None:
    path: Path = request.getfixturevalue(name)
    faces = detector.detect(load_rgb(path))
    assert len(faces) == 1
    f = faces[0]
    box, score, tol = REFERENCE[name]
    assert np.allclose(f.box, box, atol=tol)
    assert f.score == pytest.approx(score, abs=0.01)
    x, y, w, h = f.box
    assert f.landmarks.shape == (5, 2)
    assert ((f.landmarks[:, 0] > x) & (f.landmarks[:, 0] < x + w)).all()
    assert ((f.landmarks[:, 1] > y) & (f.landmarks[:, 1] < y + h)).all()
    # YuNet's order: the subject's right eye is on the image's left, the nose between the eyes.
    re, le, nose, rm, lm = f.landmarks
    assert re[0] < nose[0] < le[0] and rm[0] < lm[0] and nose[1] < (rm[1] + lm[1]) / 2


def test_large_image_is_downscaled_and_mapped_back(grace: Path, detector: FaceDetector) -> None:
    rgb = load_rgb(grace)
    # 3x: the face becomes ~510 px, where YuNet on the full image degrades (spurious boxes, low
    # scores); detection must run on a downscaled copy and map the box back to these pixels.
    big = cv2.resize(rgb, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    faces = detector.detect(big)
    assert len(faces) == 1
    ref = detector.detect(rgb)[0]
    assert np.allclose(np.array(faces[0].box) / 3, ref.box, atol=6)
    assert np.abs(faces[0].landmarks / 3 - ref.landmarks).max() < 6
    assert faces[0].score > 0.85


def test_several_faces_sorted_by_size(celeba_root: Path, detector: FaceDetector) -> None:
    rng = np.random.default_rng(3)
    canvas = noise_canvas(rng, 480, 900)
    crops = celeba_crops(celeba_root, 3, seed=11)
    for (_, crop), scale, cx in zip(crops, (0.8, 1.6, 1.15), (150, 440, 740)):
        canvas, _ = paste(canvas, crop, scale=scale, center=(cx, 240))
    faces = detector.detect(canvas)
    assert len(faces) == 3
    areas = [f.box[2] * f.box[3] for f in faces]
    assert areas == sorted(areas, reverse=True)
    centres = [f.box[0] + f.box[2] / 2 for f in faces]
    assert abs(centres[0] - 440) < 40 and abs(centres[1] - 740) < 40 and abs(centres[2] - 150) < 40


def test_small_faces_in_a_big_photo_need_the_fine_pass(celeba_root: Path, detector: FaceDetector) -> None:
    # A 2600 px wide "group photo" with faces ~55 px wide: at the coarse scale (640 px) they are
    # ~13 px, below what YuNet finds reliably; the finer pass (1280 px) must recover them.
    rng = np.random.default_rng(5)
    canvas = noise_canvas(rng, 1300, 2600)
    centres = [(400, 500), (1300, 700), (2200, 500)]
    for (_, crop), c in zip(celeba_crops(celeba_root, 3, seed=21), centres):
        canvas, _ = paste(canvas, crop, scale=0.6, center=c)
    coarse_only = FaceDetector(fine_max_side=0)
    assert len(coarse_only.detect(canvas)) < 3
    faces = detector.detect(canvas)
    assert len(faces) == 3
    found = sorted((f.box[0] + f.box[2] / 2, f.box[1] + f.box[3] / 2) for f in faces)
    for (fx, fy), (cx, cy) in zip(found, centres):
        assert abs(fx - cx) < 30 and abs(fy - cy) < 40


def test_no_face(detector: FaceDetector) -> None:
    rng = np.random.default_rng(0)
    assert detector.detect(np.full((300, 400, 3), 128, np.uint8)) == []
    assert detector.detect(noise_canvas(rng)) == []


def test_rejects_wrong_input(detector: FaceDetector) -> None:
    with pytest.raises(FaceattrError, match="RGB uint8"):
        detector.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(FaceattrError, match="not found"):
        FaceDetector("/nonexistent/yunet.onnx")
