"""Robust image input: a path, a PIL image or an array in, an upright RGB uint8 array out.

Photos from the wild come in every mode Pillow knows (grayscale, RGBA, palette, 16-bit PNG, CMYK
JPEG), carry an EXIF orientation that phones rely on, and are sometimes truncated, not images at all,
or decompression bombs. Every one of those cases either becomes a plain RGB array or a one-line
FaceattrError that names the file, so a batch can report it and go on.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from faceattr.errors import FaceattrError

__all__ = ["MAX_PIXELS", "ImageSource", "load_rgb", "pil_to_rgb", "array_to_rgb", "describe", "is_grayscale"]

logger = logging.getLogger(__name__)

# The one pixel limit of the package: predict, index, the library and the server (`faceattr serve`
# takes it as its --max-pixels default) all refuse larger images from the header. 50 MP covers every
# current phone and most DSLRs; above that a decoded RGB copy alone is >150 MB, and one limit means a
# photo the CLI reads is never refused by the server.
MAX_PIXELS = 50_000_000

ImageSource = str | Path | Image.Image | np.ndarray


def describe(source: object) -> str:
    """Short name of an image source for messages: the path, or the object's type."""
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"array{tuple(source.shape)}"
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or f"PIL image {source.size[0]}x{source.size[1]} {source.mode}"
    return type(source).__name__


def _check_pixels(name: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise FaceattrError(
            f"{name}: {width}x{height} pixels ({width * height / 1e6:.1f} MP) is above the "
            f"{max_pixels / 1e6:g} MP limit; downscale the image first"
        )
    if width <= 0 or height <= 0:
        raise FaceattrError(f"{name}: image has no pixels ({width}x{height})")


def load_rgb(source: ImageSource, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a path / PIL image / array into an upright (EXIF-corrected) RGB uint8 array [H, W, 3]."""
    if isinstance(source, np.ndarray):
        return array_to_rgb(source, max_pixels=max_pixels)
    if isinstance(source, Image.Image):
        name = describe(source)
        _check_pixels(name, *source.size, max_pixels)
        try:
            return pil_to_rgb(source, name=name)
        except Exception as e:  # a lazily opened, broken file: Pillow's codecs raise many types (see below)
            raise FaceattrError(f"{name}: corrupt or truncated image ({_reason(e)})") from None
    if not isinstance(source, (str, Path)):
        raise FaceattrError(f"cannot read an image from a {type(source).__name__}; pass a path, a PIL image or an array")
    path = Path(source)
    if not path.exists():
        raise FaceattrError(f"{path}: no such file")
    if not path.is_file():
        raise FaceattrError(f"{path}: not a file")
    if path.stat().st_size == 0:  # e.g. an interrupted download or copy; Pillow would call it an unknown format
        raise FaceattrError(f"{path}: empty file (0 bytes)")
    try:
        # Pillow warns above its own MAX_IMAGE_PIXELS and raises above twice that, at open time.
        # We apply our (lower) limit from the header ourselves, so silence the warning and turn the
        # error into the same message.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                # Image.open reads only the header: the size is known before any pixel is decoded.
                _check_pixels(str(path), *im.size, max_pixels)
                im.load()
                return pil_to_rgb(im, name=str(path))
    except FaceattrError:
        raise
    except Image.DecompressionBombError as e:
        raise FaceattrError(f"{path}: refused as a possible decompression bomb ({e})") from None
    except UnidentifiedImageError:
        raise FaceattrError(f"{path}: not an image file (unknown or unsupported format)") from None
    except Exception as e:
        # Pillow reports truncated/corrupt data as OSError or SyntaxError depending on the codec, and its
        # format plugins raise other types on damaged headers (NotImplementedError from a DDS one, found
        # by tests/infer/test_image_io_fuzz.py): whatever the type, the file is unusable.
        raise FaceattrError(f"{path}: corrupt or truncated image ({_reason(e)})") from None


def _reason(e: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(e)
    return text.splitlines()[0] if text.strip() else type(e).__name__


def _composite_on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _wide_to_uint8(a: np.ndarray) -> np.ndarray:
    """Map 16/32-bit integer or float gray levels to 0..255 (16-bit data spans 0..65535)."""
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float64))
        top = 1.0 if a.size and a.max() <= 1.0 else 255.0
        return np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    a = a.astype(np.int64)
    top = int(a.max()) if a.size else 0
    if top <= 255:
        return np.clip(a, 0, 255).astype(np.uint8)
    if top <= 65535:
        return ((np.clip(a, 0, 65535) + 128) // 257).astype(np.uint8)
    return np.clip(a * 255 // top, 0, 255).astype(np.uint8)


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    """CMYK -> RGB through the embedded ICC profile when there is one, else Pillow's plain formula."""
    icc = im.info.get("icc_profile")
    if icc:
        try:
            import io

            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            out = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
            if out is not None:
                return out
        except Exception as e:  # a broken profile must not lose the image
            logger.debug("ICC conversion failed (%s); using the plain CMYK formula", e)
    return im.convert("RGB")


def pil_to_rgb(im: Image.Image, *, name: str = "image") -> np.ndarray:
    """Convert any PIL image to an upright RGB uint8 array (EXIF orientation applied, alpha on white)."""
    try:
        upright = ImageOps.exif_transpose(im)
        im = upright if upright is not None else im
    except Exception as e:  # malformed EXIF is common; orientation is a nicety, not a reason to fail
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", name, e)
    mode = im.mode
    if mode == "RGB":
        rgb = im
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgb = _composite_on_white(im)
    elif mode == "CMYK":
        rgb = _cmyk_to_rgb(im)
    elif mode.startswith("I") or mode == "F":
        gray = _wide_to_uint8(np.asarray(im))
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    else:  # L, 1, P, YCbCr, LAB, HSV, ...
        rgb = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def array_to_rgb(a: np.ndarray, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Validate an RGB(A)/gray array ([H, W], [H, W, 1|3|4]; uint8, uint16 or float in 0..1) as RGB uint8."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise FaceattrError(f"expected an image array [H, W], [H, W, 3] or [H, W, 4], got shape {tuple(a.shape)}")
    _check_pixels(describe(a), a.shape[1], a.shape[0], max_pixels)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        a = _wide_to_uint8(a)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    elif a.shape[2] == 4:
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        a = (a[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a)


def is_grayscale(rgb: np.ndarray, *, tolerance: int = 2) -> bool:
    """Whether an RGB uint8 image [H, W, 3] is black and white (its channels agree within `tolerance`).

    Checks every 4th pixel of every 4th row: enough to catch colour, and cheap on a 12-MP photo. The
    tolerance absorbs the rounding of grayscale photos saved as colour JPEGs.
    """
    sample = rgb[::4, ::4].astype(np.int16)
    if sample.size == 0:
        return False
    return bool(np.abs(sample[..., 0] - sample[..., 1]).max() <= tolerance
                and np.abs(sample[..., 1] - sample[..., 2]).max() <= tolerance)
