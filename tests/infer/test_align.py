"""faceattr.infer.align: the similarity fit, the CelebA template, and re-alignment of real faces."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceattr.infer.align import (
    FRAME_SIZE,
    TEMPLATE,
    TEMPLATE_BOX,
    align_face,
    fit_aligned,
    frame_whole_image,
    refine_landmarks,
    similarity_transform,
    transform_params,
    warp_to_frame,
)
from faceattr.infer.detect import FaceDetector

from .helpers import apply, celeba_crops, compose, noise_canvas, paste


def _similarity(scale: float, degrees: float, tx: float, ty: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)) * scale, math.sin(math.radians(degrees)) * scale
    return np.array([[c, -s, tx], [s, c, ty]])


def test_similarity_recovers_a_known_transform() -> None:
    m = _similarity(0.37, 23.0, 41.0, -12.5)
    src = np.array([[300.0, 200.0], [410.0, 190.0], [350.0, 260.0], [310.0, 320.0], [400.0, 315.0]])
    got = similarity_transform(src, apply(m, src))
    assert np.allclose(got, m, atol=1e-9)
    assert transform_params(got) == pytest.approx((0.37, 23.0, 41.0, -12.5))


def test_similarity_never_mirrors() -> None:
    # Points mirrored left-right cannot be matched by a rotation; the fit must not flip the face.
    mirrored = TEMPLATE * [-1, 1] + [178, 0]
    m = similarity_transform(mirrored, TEMPLATE)
    assert np.linalg.det(m[:, :2]) > 0
    with pytest.raises(ValueError):
        similarity_transform(np.ones((5, 2)), TEMPLATE)


def test_template_is_a_plausible_celeba_face() -> None:
    re, le, nose, rm, lm = TEMPLATE
    w = FRAME_SIZE[0]
    assert re[0] < nose[0] < le[0] and rm[0] < lm[0]
    assert re[1] < nose[1] < rm[1] and abs(re[1] - le[1]) < 2  # level eyes
    assert abs((re[0] + le[0]) / 2 - w / 2) < 3  # centred
    bx, by, bw, bh = TEMPLATE_BOX
    assert bx < re[0] and le[0] < bx + bw and by < re[1] and lm[1] < by + bh


def _padded_landmarks(detector: FaceDetector, crop: np.ndarray, pad: int = 32) -> np.ndarray:
    canvas = cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return detector.detect(canvas)[0].landmarks.astype(np.float64) - pad


def test_aligning_an_aligned_crop_is_nearly_identity(celeba_root: Path, detector: FaceDetector) -> None:
    # Other images than scripts/derive_template.py measured (it used seed 0 of a different draw).
    params, diffs, lms = [], [], []
    for _, crop in celeba_crops(celeba_root, 40, seed=7):
        lm = _padded_landmarks(detector, crop)
        lms.append(lm)
        m = similarity_transform(lm, TEMPLATE)
        params.append(transform_params(m))
        centre_shift = np.linalg.norm(apply(m, [[89.0, 109.0]])[0] - [89.0, 109.0])
        aligned, _ = align_face(crop, lm)
        diffs.append((centre_shift, np.abs(aligned.astype(int) - crop)[40:200, 30:148].mean()))
    p = np.array(params)
    d = np.array(diffs)
    assert abs(np.median(p[:, 0]) - 1) < 0.03  # scale
    assert abs(np.median(p[:, 1])) < 1.5  # degrees
    assert np.median(d[:, 0]) < 3  # px, the frame centre
    # The stored template is the mean of such landmarks (after its documented ~1% scale-up).
    mean = np.mean(lms, axis=0)
    grown = mean.mean(0) + (mean - mean.mean(0)) * 1.0119
    assert np.abs(grown - TEMPLATE).max() < 2.0


def _realign_errors(celeba_root: Path, detector: FaceDetector, seed: int) -> dict[int, np.ndarray]:
    """Paste real aligned crops rotated (+-20 deg) and scaled (0.7-1.5) into a noise scene, re-align
    them with 0 and 1 refinement passes, and compare with aligning the crop itself; returns per-face
    rows (|angle|, template-point error px, rotation error deg, pixel diff, pixel diff unrotated)."""
    rng = np.random.default_rng(seed)
    rows: dict[int, list[tuple[float, ...]]] = {0: [], 1: []}
    for _, crop in celeba_crops(celeba_root, 8, seed=100 + seed):
        angle, scale = rng.uniform(-20, 20), rng.uniform(0.7, 1.5)
        scene, m = paste(noise_canvas(rng), crop, angle=angle, scale=scale)
        faces = detector.detect(scene)
        assert len(faces) == 1
        own = similarity_transform(_padded_landmarks(detector, crop), TEMPLATE)
        # A crop that undoes scale and shift but not the rotation: what skipping alignment costs.
        unrotated = cv2.warpAffine(scene, cv2.invertAffineTransform(np.c_[np.eye(2) * scale, m[:, 2]]), FRAME_SIZE)

        def blur(x: np.ndarray) -> np.ndarray:
            return cv2.GaussianBlur(x.astype(np.float32), (0, 0), 2)[50:200, 30:148]

        for passes in (0, 1):
            lm = refine_landmarks(scene, faces[0].landmarks, detector.detect, passes=passes)
            a = similarity_transform(lm, TEMPLATE)
            crop_to_frame = compose(a, m)  # original crop -> re-aligned crop
            point_err = np.linalg.norm(apply(crop_to_frame, TEMPLATE) - apply(own, TEMPLATE), axis=1).max()
            rot_err = abs(transform_params(crop_to_frame)[1] - transform_params(own)[1])
            realigned = warp_to_frame(scene, a)
            rows[passes].append((abs(angle), point_err, rot_err, np.abs(blur(realigned) - blur(crop)).mean(),
                                 np.abs(blur(unrotated) - blur(crop)).mean()))
    return {k: np.array(v) for k, v in rows.items()}


@pytest.fixture(scope="module")
def realigned(celeba_root: Path, detector: FaceDetector) -> dict[int, np.ndarray]:
    """Re-alignment rows for 16 pasted faces (two scenes' worth of seeds), by refinement passes."""
    runs = [_realign_errors(celeba_root, detector, seed) for seed in (0, 1)]
    return {k: np.concatenate([r[k] for r in runs]) for k in (0, 1)}


def test_realigning_rotated_scaled_faces_recovers_the_crop(realigned: dict[int, np.ndarray]) -> None:
    angle, point_err, rot_err, pix, pix_unrotated = realigned[1].T
    # Template points land within a few px of where aligning the untouched crop puts them (YuNet's
    # own landmark noise on these ~90 px faces is ~3 px, even for a pure shift).
    assert np.median(point_err) < 6 and point_err.max() < 15
    # Most of the up-to-20-degree rotation is undone.
    assert np.median(rot_err) < 7 and rot_err.mean() < 0.5 * angle.mean()
    # And the pixels match the original aligned crop far better than a crop that skips alignment.
    assert np.median(pix) < 25 and pix.mean() < 0.5 * pix_unrotated.mean()


def test_refinement_reduces_the_leftover_tilt(realigned: dict[int, np.ndarray]) -> None:
    # YuNet's landmarks under-rotate on tilted faces; the second look must shrink the error.
    once, refined = realigned[0], realigned[1]
    assert refined[:, 2].mean() < once[:, 2].mean()
    assert refined[:, 1].mean() < once[:, 1].mean()


def test_warp_of_a_big_face_is_antialiased(celeba_root: Path) -> None:
    (_, crop), = celeba_crops(celeba_root, 1, seed=3)
    big = cv2.resize(crop, None, fx=5, fy=5, interpolation=cv2.INTER_CUBIC)
    m = _similarity(0.2, 0.0, 0.0, 0.0)
    out = warp_to_frame(big, m)
    assert out.shape == (218, 178, 3)
    # Downscaling a 5x upscale must give back the crop (smoothed), not an aliased sampling of it.
    assert np.abs(out.astype(int) - crop)[4:-4, 4:-4].mean() < 6
    naive = cv2.warpAffine(big, m, FRAME_SIZE, flags=cv2.INTER_LINEAR)
    assert np.abs(out.astype(int) - crop)[4:-4, 4:-4].mean() < np.abs(naive.astype(int) - crop)[4:-4, 4:-4].mean()


def test_frame_whole_image_puts_it_on_the_template_box() -> None:
    img = np.zeros((300, 240, 3), np.uint8)
    img[:, :, 1] = 255
    out, m = frame_whole_image(img)
    assert out.shape == (218, 178, 3)
    corners = apply(m, [[0, 0], [240, 300]])
    bx, by, bw, bh = TEMPLATE_BOX
    centre = corners.mean(0)
    assert np.allclose(centre, [bx + bw / 2, by + bh / 2], atol=0.01)
    area = np.prod(corners[1] - corners[0])
    assert area == pytest.approx(bw * bh, rel=1e-6)


def test_fit_aligned() -> None:
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, size=(218, 178, 3), dtype=np.uint8)
    assert np.array_equal(fit_aligned(crop), crop)
    assert np.abs(fit_aligned(cv2.resize(crop, (356, 436), interpolation=cv2.INTER_NEAREST)).astype(int) - crop).max() <= 1
    wide = np.zeros((218, 400, 3), np.uint8)
    wide[:, 111:289] = crop  # the middle 178 columns
    assert np.array_equal(fit_aligned(wide), crop)


def test_antialiased_warp_lands_where_the_plain_warp_does(celeba_root: Path) -> None:
    # The shrink-first path works on a cropped, downscaled copy; its coordinate bookkeeping must put
    # every pixel where a plain warp of a pre-blurred image puts it (a half-pixel slip would show).
    (_, crop), = celeba_crops(celeba_root, 1, seed=4)
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 256, size=(1400, 1600, 3), dtype=np.uint8)
    scene[300:300 + 218 * 4, 500:500 + 178 * 4] = cv2.resize(crop, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    m = _similarity(0.25, 7.0, 0.0, 0.0)
    m[:, 2] = -apply(m, [[500.0 + 40, 300.0 + 30]])[0]  # move the pasted region into the frame
    fast = warp_to_frame(scene, m).astype(np.float32)
    smooth = cv2.GaussianBlur(scene, (0, 0), 1.6)
    inner = (slice(10, 150), slice(10, 120))

    def diff_to_plain(dx: float, dy: float) -> float:
        shifted = m.copy()
        shifted[:, 2] += (dx, dy)
        plain = cv2.warpAffine(smooth, shifted, FRAME_SIZE, flags=cv2.INTER_LINEAR).astype(np.float32)
        return float(np.abs(fast - plain)[inner].mean())

    exact = diff_to_plain(0, 0)
    assert exact < 2
    # A quarter-pixel slip either way already doubles the difference.
    assert all(exact < diff_to_plain(dx, dy) for dx, dy in ((0.25, 0), (-0.25, 0), (0, 0.25), (0, -0.25)))


def test_largest_face_landmarks_align_a_photo_as_predict_does(small_model, grace: Path, astronaut: Path) -> None:
    # scripts/utk_landmarks.py frames training chips by these points: the crop they give must be the
    # crop predict classifies, pixel for pixel.
    from faceattr.infer.align import largest_face_landmarks
    from faceattr.infer.image_io import load_rgb

    for photo in (grace, astronaut):
        rgb = load_rgb(photo)
        pts = largest_face_landmarks(rgb, small_model.detector.detect, refine_passes=small_model.refine_passes)
        assert pts is not None and pts.shape == (5, 2)
        crop, _ = align_face(rgb, pts)
        face = small_model.predict(photo)[0]
        assert np.array_equal(crop, np.asarray(face.crop))
        raw = np.asarray(face.landmarks)  # the detector's first look, before refinement
        assert 0 < np.abs(pts - raw).max() < 0.1 * face.box[2]  # a correction, not another face
    assert largest_face_landmarks(np.full((120, 100, 3), 127, np.uint8), small_model.detector.detect) is None
