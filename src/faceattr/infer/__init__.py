"""Inference: detect faces in any photo, align them like CelebA, and predict their attributes.

    >>> import faceattr.infer as fi
    >>> model = fi.load("default")                       # or a checkpoint path; ONNX Runtime where it can
    >>> faces = model.predict("photo.jpg")               # list[Face], largest first
    >>> faces[0].present, faces[0].probabilities["Smiling"]

Parts: `image_io` (robust image reading), `detect` (YuNet), `align` (5-point similarity onto the
CelebA template), `backends` (torch / ONNX Runtime, ONNX export), `model` (the API below), `explain`
(occlusion: which parts of the face drive an attribute), `cli`. Predicting with the ONNX backend
never imports torch.
"""

from __future__ import annotations

from faceattr.infer.model import (
    BACKENDS,
    AttributeModel,
    Face,
    ImageResult,
    export,
    load,
    sample_path,
    samples_dir,
)

__all__ = [
    "load",
    "export",
    "AttributeModel",
    "Face",
    "ImageResult",
    "BACKENDS",
    "sample_path",
    "samples_dir",
]
