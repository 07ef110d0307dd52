"""Face detection with YuNet (OpenCV's cv2.FaceDetectorYN): boxes, scores and 5 landmarks.

YuNet is trained on faces of about 10-300 px and degrades badly above ~500 px (it starts returning
spurious boxes), so large photos are downscaled before detection and the results mapped back. A
second, finer pass over big photos recovers small faces (a group photo) that the coarse pass shrank
below YuNet's range. The model file is vendored in `infer/assets/` (see its NOTICE); nothing is
downloaded.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceattr.errors import FaceattrError

__all__ = ["Detection", "FaceDetector", "yunet_path"]

logger = logging.getLogger(__name__)


def yunet_path() -> Path:
    """Path of the vendored YuNet ONNX file."""
    return Path(__file__).resolve().parent / "assets" / "yunet_s_640_640.onnx"


@dataclass(frozen=True)
class Detection:
    """One detected face, in the coordinates of the image passed to `FaceDetector.detect`."""

    box: tuple[float, float, float, float]  # x, y, w, h
    score: float
    # float32 [5, 2] in YuNet's order: right eye, left eye (the subject's: the right eye is on the
    # image's left), nose tip, right mouth corner, left mouth corner.
    landmarks: np.ndarray

    @property
    def size(self) -> float:
        """Face size in pixels: the shorter side of the box."""
        return float(min(self.box[2], self.box[3]))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


class FaceDetector:
    """YuNet wrapper that handles any image size; thread-safe (one cv2 detector per thread)."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
        max_side: int = 640,
        fine_max_side: int = 1280,
        fine_max_face: float = 160.0,
    ) -> None:
        """`max_side`: long side of the coarse pass; photos longer than 2x that get a finer pass at
        `fine_max_side` that only adds faces up to `fine_max_face` px (at that scale)."""
        self.model_path = Path(model_path) if model_path is not None else yunet_path()
        if not self.model_path.is_file():
            raise FaceattrError(f"face detector model not found: {self.model_path}; reinstall faceattr")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        self.fine_max_side = fine_max_side
        self.fine_max_face = fine_max_face
        self._local = threading.local()

    def _detector(self) -> Any:  # cv2.FaceDetectorYN; typed loosely because cv2 stubs vary by version
        det = getattr(self._local, "det", None)
        if det is None:
            import cv2

            # OpenCV 5 logs a harmless "setPreferableTarget ... not supported" warning on create;
            # keep it off the user's terminal, then restore whatever level was set.
            previous = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
            try:
                det = cv2.FaceDetectorYN.create(
                    str(self.model_path), "", (320, 320), self.score_threshold, self.nms_threshold, 5000
                )
            finally:
                cv2.utils.logging.setLogLevel(previous)
            self._local.det = det
        return det

    def _run(self, bgr: np.ndarray, scale: float) -> np.ndarray:
        """Detect on `bgr` resized by `scale`; returns rows [x, y, w, h, 10 landmark coords, score] in
        the coordinates of `bgr` itself."""
        import cv2

        if scale != 1.0:
            h, w = bgr.shape[:2]
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            # INTER_AREA: proper anti-aliased downscaling, so small faces keep their features.
            img = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        else:
            img = bgr
        det = self._detector()
        det.setInputSize((img.shape[1], img.shape[0]))
        _, faces = det.detect(img)
        if faces is None or len(faces) == 0:
            return np.zeros((0, 15), dtype=np.float32)
        faces = faces.astype(np.float32).copy()
        # Map back to the input's coordinates (box and points scale about the image's top-left corner;
        # the half-pixel-centre offset this ignores is < 0.5 px).
        sx = bgr.shape[1] / img.shape[1]
        sy = bgr.shape[0] / img.shape[0]
        faces[:, 0:14:2] *= sx
        faces[:, 1:14:2] *= sy
        return faces

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Find faces in an RGB uint8 image [H, W, 3]; returns them largest first."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise FaceattrError(f"detect expects an RGB uint8 image [H, W, 3], got {rgb.dtype} {tuple(rgb.shape)}")
        bgr = np.ascontiguousarray(rgb[..., ::-1])  # YuNet was trained on OpenCV's BGR order
        long_side = max(rgb.shape[:2])
        scale = min(1.0, self.max_side / long_side)
        rows = self._run(bgr, scale)
        if long_side > 2 * self.max_side and self.fine_max_side > self.max_side:
            fine_scale = min(1.0, self.fine_max_side / long_side)
            fine = self._run(bgr, fine_scale)
            # Only small faces come from the fine pass: big ones are out of YuNet's range there.
            keep = np.minimum(fine[:, 2], fine[:, 3]) * fine_scale <= self.fine_max_face
            rows = self._merge(rows, fine[keep])
        out = [
            Detection(
                box=(float(r[0]), float(r[1]), float(r[2]), float(r[3])),
                score=float(r[14]),
                landmarks=r[4:14].reshape(5, 2).copy(),
            )
            for r in rows
            if r[2] > 0 and r[3] > 0
        ]
        out.sort(key=lambda d: d.box[2] * d.box[3], reverse=True)
        logger.debug("detected %d face(s) in a %dx%d image", len(out), rgb.shape[1], rgb.shape[0])
        return out

    def _merge(self, coarse: np.ndarray, fine: np.ndarray) -> np.ndarray:
        """Add fine-pass faces that do not overlap a coarse-pass face (greedy NMS by score)."""
        if len(fine) == 0:
            return coarse
        rows = np.concatenate([coarse, fine])
        order = np.argsort(-rows[:, 14])
        kept: list[int] = []
        for i in order:
            if all(_iou(rows[i, :4], rows[j, :4]) <= self.nms_threshold for j in kept):
                kept.append(int(i))
        return rows[kept]
