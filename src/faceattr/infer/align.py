"""Alignment like CelebA's `img_align_celeba`: a 5-point similarity onto a fixed template, 178x218 out.

CelebA's aligned crops put the eyes, nose and mouth corners at nearly fixed places in a 178x218
frame. The classifier was trained on exactly that framing, so a face from any photo is mapped there
with the similarity transform (rotation + uniform scale + shift) that best fits YuNet's 5 landmarks
onto `TEMPLATE` in the least-squares sense (Umeyama's closed form). The template was measured with
the same detector on real aligned CelebA crops, so the detector's own landmark conventions cancel out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from faceattr.data.geometry import (  # re-exported: the geometry lives with the data
    FRAME_SIZE,
    TEMPLATE,
    TEMPLATE_BOX,
    similarity_transform,
    transform_params,
    warp_to_frame,
)

__all__ = [
    "FRAME_SIZE",
    "TEMPLATE",
    "TEMPLATE_BOX",
    "similarity_transform",
    "transform_params",
    "warp_to_frame",
    "align_face",
    "refine_landmarks",
    "largest_face_landmarks",
    "frame_whole_image",
    "fit_aligned",
]



def align_face(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Align one face: RGB image + its 5 YuNet landmarks -> (178x218 RGB crop [218,178,3], 2x3 matrix)."""
    m = similarity_transform(np.asarray(landmarks, dtype=np.float64).reshape(5, 2), TEMPLATE)
    return warp_to_frame(image, m), m


class _HasLandmarks(Protocol):
    landmarks: np.ndarray


def refine_landmarks(
    image: np.ndarray,
    landmarks: np.ndarray,
    detect: Callable[[np.ndarray], Sequence[_HasLandmarks]],
    passes: int = 1,
    margin: int = 32,
) -> np.ndarray:
    """Re-detect the face in its own aligned frame (plus `margin` px) and return the 5 landmarks from
    there, mapped back to `image`.

    YuNet's landmarks lean towards an upright, mid-sized face: on a face turned 15 degrees the eye
    line comes out turned only ~8-10, so one alignment leaves part of the tilt (and some scale) in.
    Detecting again on the roughly aligned face, at the same size and framing the template was
    measured at, removes most of what is left. Keeps the input landmarks when the second look finds
    nothing.
    """
    import cv2

    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    w, h = FRAME_SIZE
    centre = np.array([w / 2 + margin, h / 2 + margin])
    for _ in range(passes):
        m = similarity_transform(lm, TEMPLATE)
        m[:, 2] += margin
        view = warp_to_frame(image, m, (w + 2 * margin, h + 2 * margin))
        found = list(detect(view))
        if not found:
            break
        best = min(found, key=lambda d: float(np.linalg.norm(np.asarray(d.landmarks).mean(0) - centre)))
        pts = np.asarray(best.landmarks, dtype=np.float64).reshape(5, 2)
        # Only accept the second look if it is the same face: near the centre of the view.
        if np.linalg.norm(pts.mean(0) - centre) > 0.25 * w:
            break
        inv = cv2.invertAffineTransform(m)
        lm = np.c_[pts, np.ones(5)] @ inv.T
    return lm


def largest_face_landmarks(
    image: np.ndarray,
    detect: Callable[[np.ndarray], Sequence[_HasLandmarks]],
    refine_passes: int = 1,
) -> np.ndarray | None:
    """The 5 landmarks `predict` aligns the largest face of `image` by (refined as predict does), or None.

    Used to frame training chips exactly as `predict` will frame them (`ChipFrame(landmarks=...)`);
    `detect` returns faces largest first, as `FaceDetector.detect` does.
    """
    found = list(detect(image))
    if not found:
        return None
    points = np.asarray(found[0].landmarks, dtype=np.float64).reshape(5, 2)
    if refine_passes > 0:
        points = refine_landmarks(image, points, detect, passes=refine_passes)
    return points


def frame_whole_image(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Treat the whole image as the face box: scale it (aspect kept, same area as the template's face
    box) and centre it on `TEMPLATE_BOX`; returns (178x218 crop, 2x3 matrix)."""
    h, w = image.shape[:2]
    bx, by, bw, bh = TEMPLATE_BOX
    s = math.sqrt(bw * bh / (w * h))
    m = np.array([[s, 0.0, bx + bw / 2 - s * w / 2], [0.0, s, by + bh / 2 - s * h / 2]])
    return warp_to_frame(image, m), m


def fit_aligned(image: np.ndarray) -> np.ndarray:
    """Take an image as an already-aligned CelebA-style crop: centre-crop to 178:218 and resize if needed."""
    import cv2

    w0, h0 = FRAME_SIZE
    h, w = image.shape[:2]
    if (w, h) == FRAME_SIZE:
        return np.ascontiguousarray(image)
    # Centre-crop to the frame's aspect ratio so nothing is stretched, then resize.
    if w * h0 > h * w0:
        cw = max(1, round(h * w0 / h0))
        x = (w - cw) // 2
        image = image[:, x : x + cw]
    else:
        ch = max(1, round(w * h0 / w0))
        y = (h - ch) // 2
        image = image[y : y + ch]
    interp = cv2.INTER_AREA if image.shape[1] > w0 else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), FRAME_SIZE, interpolation=interp)
