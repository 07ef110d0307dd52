"""Geometry shared by training data and inference: CelebA's aligned frame, its 5-point template,
similarity fits and the warp into the frame.

It lives in `faceattr.data` because sources that are already aligned another way (UTKFace's tight
chips) are placed in CelebA's frame when they are decoded for training, with the same warp that
`faceattr.infer.align` applies to faces found in photos; one implementation keeps both identical.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["FRAME_SIZE", "TEMPLATE", "TEMPLATE_BOX", "similarity_transform", "transform_params", "warp_to_frame"]

# (width, height) of CelebA's aligned crops.
FRAME_SIZE = (178, 218)

# Mean YuNet landmarks on aligned CelebA crops, in the 178x218 frame, YuNet's order: right eye,
# left eye (the subject's; the right eye is on the image's left), nose tip, right mouth corner,
# left mouth corner. Measured by scripts/derive_template.py (defaults: seeded sample of 2,000 images
# of shared/celeba/img_align_celeba, 1,995 with a face at score >= 0.7, padded 32 px by edge
# replication) on 2026-11-23. The mean points are scaled by 1.0119 about their centroid so that the
# median fitted scale over those crops is 1 (a least-squares fit of noisy points shrinks). Check from
# that run: re-aligning the crops themselves gives median scale 1.000 (5-95%: 0.898..1.111), rotation
# 0.02 deg (5-95%: -3.2..3.3) and shift (-0.22, 0.17) px, i.e. nearly the identity.
TEMPLATE = np.array(
    [
        [69.18, 111.60],
        [108.95, 111.98],
        [88.42, 134.88],
        [71.88, 151.56],
        [105.52, 152.28],
    ],
    dtype=np.float64,
)

# Mean YuNet face box (x, y, w, h) on the same crops (same script and run): where "the face" sits in
# the frame. Used to place a whole image that is taken to be one face (detection off).
TEMPLATE_BOX = (46.15, 68.27, 86.24, 114.95)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991, no reflection) mapping points src [N,2] onto dst [N,2]; returns a 2x3 matrix."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    var_s = (sc**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("landmarks are degenerate (all at one point)")
    cov = dc.T @ sc / len(src)
    u, s, vt = np.linalg.svd(cov)
    # Force a proper rotation: a reflection would mirror the face.
    d = np.diag([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    r = u @ d @ vt
    scale = float(np.trace(np.diag(s) @ d) / var_s)
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def transform_params(m: np.ndarray) -> tuple[float, float, float, float]:
    """Decompose a 2x3 similarity into (scale, rotation in degrees, tx, ty)."""
    scale = math.hypot(m[0, 0], m[1, 0])
    angle = math.degrees(math.atan2(m[1, 0], m[0, 0]))
    return scale, angle, float(m[0, 2]), float(m[1, 2])


def warp_to_frame(image: np.ndarray, m: np.ndarray, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """Warp an RGB uint8 image with the 2x3 matrix `m` (image -> frame) into a `size` (w, h) crop.

    When `m` shrinks the face a lot (a big face in a large photo), bilinear sampling alone would
    alias, so the region that lands in the frame is first downscaled with area averaging and the
    remaining small warp is done on that.
    """
    import cv2

    m = np.asarray(m, dtype=np.float64)
    w, h = size
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    if scale < 0.8:
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], dtype=np.float64) @ inv.T
        pad = 2.0 / scale  # a couple of output pixels of margin for the interpolation kernel
        x0 = max(0, math.floor(corners[:, 0].min() - pad))
        y0 = max(0, math.floor(corners[:, 1].min() - pad))
        x1 = min(image.shape[1], math.ceil(corners[:, 0].max() + pad))
        y1 = min(image.shape[0], math.ceil(corners[:, 1].max() + pad))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            roi = image[y0:y1, x0:x1]
            rw, rh = max(1, round(roi.shape[1] * scale)), max(1, round(roi.shape[0] * scale))
            small = cv2.resize(roi, (rw, rh), interpolation=cv2.INTER_AREA)
            # Pixel (x, y) of the small copy has its centre at ((x + 0.5) * sx - 0.5 + x0, ...) in the
            # image (sx, sy: the exact resize factors), so frame <- small is m after that map.
            sx, sy = roi.shape[1] / rw, roi.shape[0] / rh
            pre = np.array([[sx, 0.0, x0 + 0.5 * sx - 0.5], [0.0, sy, y0 + 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
            m = m @ pre
            image = small
    # BORDER_REPLICATE: CelebA's own crops that run past a photo's edge show smeared (replicated)
    # border pixels (e.g. 000060.jpg), so that is what the classifier has seen.
    return cv2.warpAffine(
        np.ascontiguousarray(image), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
