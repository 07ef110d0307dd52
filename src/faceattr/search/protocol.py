"""The part of `faceattr.infer.AttributeModel` that search and serve rely on, as a structural type.

Any object with these members works (the shipped AttributeModel, an ONNX-backed one, a test double).
Age is optional: a model with `predicts_age = True` gives each face an `age` in years; one without
the member is taken to predict no age.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = ["Predictor"]


class Predictor(Protocol):
    """A face-attribute model: detects, aligns and classifies; `faceattr.load()` returns one."""

    name: str
    attributes: list[str]
    thresholds: np.ndarray
    meta: dict[str, Any]

    def predict(self, image: Any, *, detect: bool = ..., align: bool = ..., max_faces: int = ..., min_face: int = ...) -> Sequence[Any]:
        """Faces (box, score, landmarks, probabilities, present, to_dict()) of one image."""
        ...

    def predict_many(
        self, images: Iterable[str | Path], *, batch_size: int = ..., detect: bool = ..., align: bool = ..., max_faces: int = ...
    ) -> Iterator[Any]:
        """One result (image, faces, error, to_dict()) per image file, in order; unreadable files carry `error`."""
        ...
