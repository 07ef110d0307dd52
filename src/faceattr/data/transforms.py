"""Model input preparation shared by training and inference: crop, resize, batch, normalise.

Nothing here is CelebA-specific: the inference code feeds faces aligned to the same 178x218 frame
from any photo through `prepare_image`, so training and serving see identically prepared pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from faceattr.errors import FaceattrError

if TYPE_CHECKING:  # imported where used, so inference with ONNX Runtime never loads torch
    import torch

__all__ = [
    "ALIGNED_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Preprocess",
    "prepare_image",
    "to_tensor_batch",
    "normalize_batch",
    "grayscale_images",
]

ALIGNED_SIZE = (218, 178)  # (height, width) of CelebA's aligned frame, in which `Preprocess.crop` is given
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _numbers(value: Any, n: int, kind: type, what: str) -> tuple[Any, ...]:
    """Coerce `value` to a tuple of `n` numbers of `kind`, or raise a one-line error."""
    try:
        items = tuple(value)
    except TypeError:
        items = ()
    if len(items) != n or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in items):
        raise FaceattrError(f"preprocess {what} must be {n} numbers, got {value!r}")
    if kind is int and any(float(v) != int(v) for v in items):
        raise FaceattrError(f"preprocess {what} must be whole numbers, got {value!r}")
    return tuple(kind(v) for v in items)


@dataclass(frozen=True)
class Preprocess:
    """How an aligned face becomes model input: optional crop, resize to `size`, then normalise."""

    size: tuple[int, int]  # (height, width) fed to the model
    crop: tuple[int, int, int, int] | None = None  # (x0, y0, x1, y1) in the aligned 178x218 frame
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        # Configs and checkpoints hand over JSON lists; store tuples so the object stays hashable.
        size = _numbers(self.size, 2, int, "size (height, width)")
        if min(size) <= 0:
            raise FaceattrError(f"preprocess size must be positive, got {size}")
        crop = None
        if self.crop is not None and len(tuple(self.crop)) > 0:
            crop = _numbers(self.crop, 4, int, "crop (x0, y0, x1, y1)")
            x0, y0, x1, y1 = crop
            height, width = ALIGNED_SIZE
            if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
                raise FaceattrError(
                    f"preprocess crop {crop} must satisfy 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height} "
                    "(a box in the aligned 178x218 frame)"
                )
        mean = _numbers(self.mean, 3, float, "mean")
        std = _numbers(self.std, 3, float, "std")
        if min(std) <= 0:
            raise FaceattrError(f"preprocess std must be positive, got {std}")
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "crop", crop)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (lists and floats) for checkpoints and configs."""
        return {
            "size": list(self.size),
            "crop": None if self.crop is None else list(self.crop),
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        """Rebuild from `to_dict` output; unknown or missing keys raise FaceattrError."""
        if not isinstance(d, dict):
            raise FaceattrError(f"preprocess must be a dict, got {type(d).__name__}")
        known = {"size", "crop", "mean", "std"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FaceattrError(f"preprocess has unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}")
        if "size" not in d:
            raise FaceattrError("preprocess dict has no 'size' (height, width)")
        return cls(
            size=d["size"],
            crop=d.get("crop"),
            mean=d.get("mean", IMAGENET_MEAN),
            std=d.get("std", IMAGENET_STD),
        )


def _source_box(pre: Preprocess, width: int, height: int) -> tuple[float, float, float, float]:
    """The crop box in this image's pixels; a frame other than 178x218 gets the box scaled to it."""
    if pre.crop is None:
        return (0.0, 0.0, float(width), float(height))
    sy, sx = height / ALIGNED_SIZE[0], width / ALIGNED_SIZE[1]
    x0, y0, x1, y1 = pre.crop
    return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)


def prepare_image(img: Image.Image, pre: Preprocess) -> np.ndarray:
    """Convert to RGB, crop and resize (antialiased) to pre.size; returns uint8 [H, W, 3].

    An image opened from a JPEG file and not yet loaded is decoded at a reduced DCT scale (PIL
    `draft`) when the output is at most half its size; the result is deterministic either way.
    Errors from decoding (truncated or corrupt files) propagate.
    """
    out_h, out_w = pre.size
    width, height = img.size
    box = _source_box(pre, width, height)
    # draft() only acts on a JPEG not decoded yet, and picks the smallest 1/2, 1/4, 1/8 scale that
    # still leaves the crop at least as large as the output, so no detail the output needs is lost.
    want = (math.ceil(out_w * width / (box[2] - box[0])), math.ceil(out_h * height / (box[3] - box[1])))
    drafted = img.draft("RGB", want) if img.format == "JPEG" else None
    if drafted is not None:
        scale = drafted[1][2] / width  # returned box: the full original frame in the reduced image
        box = tuple(v * scale for v in box)  # type: ignore[assignment]
    img.load()  # decode now, so a truncated file raises here rather than somewhere later
    if img.mode != "RGB":
        img = img.convert("RGB")
    # Pillow's resize filters widen their support when downscaling, i.e. they are antialiased; with
    # box= the crop may be fractional (after draft) and edge pixels are filtered with their true
    # neighbours outside the box instead of a replicated border.
    resized = img.resize((out_w, out_h), Image.Resampling.BILINEAR, box=box)
    return np.array(resized, dtype=np.uint8)  # a copy: never a view into PIL's buffer


def to_tensor_batch(images: np.ndarray) -> torch.Tensor:
    """Turn uint8 images [N, H, W, 3] into a contiguous uint8 tensor [N, 3, H, W]."""
    import torch

    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images [N, H, W, 3], got {images.dtype} {tuple(images.shape)}")
    # One copy into a fresh array: works for read-only memmap slices and gives torch its own memory.
    out = np.empty((images.shape[0], 3, images.shape[1], images.shape[2]), dtype=np.uint8)
    np.copyto(out, images.transpose(0, 3, 1, 2))
    return torch.from_numpy(out)


def normalize_batch(x: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """Normalise images [N, 3, H, W] (uint8 0..255 or float 0..1) with pre.mean/std; returns float32."""
    import torch

    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images [N, 3, H, W], got {tuple(x.shape)}")
    mean = torch.tensor(pre.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0).sub_(mean).div_(std)  # a new tensor: in place is safe
    return (x.to(torch.float32) - mean) / std


def grayscale_images(images: np.ndarray, *, chunk: int = 1024) -> np.ndarray:
    """uint8 images [N, H, W, 3] -> new uint8 array of their ITU-R 601 luma in all three channels.

    PIL's own fixed-point weights (``convert("L")``), so it equals a black-and-white photo decoded to RGB.
    Works in chunks, so a memory-mapped cache is never converted to float as a whole.
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images [N, H, W, 3], got {images.dtype} {tuple(images.shape)}")
    out = np.empty_like(images)
    weights = np.array([19595, 38470, 7471], dtype=np.uint32)  # 0.299, 0.587, 0.114 in 1/65536ths
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].astype(np.uint32)
        luma = ((part @ weights + 0x8000) >> 16).astype(np.uint8)
        out[start : start + chunk] = luma[..., None]
    return out
