"""Fuzzing image bytes: `load_rgb` (predict, index, serve) and the training decode into the image cache.

Seeds are small real encodings in every format Pillow writes here; each example damages one (flipped
bytes, a cut, inserted bytes, a header field set to 0 or 2**31-1). `load_rgb` must return an RGB
uint8 array or raise FaceattrError; the cache build must never raise and must mark what it could not
decode. Either way no other exception may reach the caller.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from faceattr.data.cache import build_cache
from faceattr.data.transforms import Preprocess, prepare_image
from faceattr.errors import FaceattrError
from faceattr.infer.image_io import load_rgb

pytestmark = pytest.mark.fuzz


def _seeds() -> dict[str, bytes]:
    """Small encodings of one random picture: every format Pillow saves here, plus EXIF, 16-bit, CMYK, palette."""
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (14, 11, 3), dtype=np.uint8))
    out: dict[str, bytes] = {}
    variants = [(fmt, img, {}) for fmt in ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "PPM", "TGA", "PCX",
                                           "DDS", "SGI", "IM", "QOI", "JPEG2000")]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: exercises the EXIF path
    variants += [("JPEG", img, {"exif": exif}), ("JPEG", img.convert("CMYK"), {}),
                 ("PNG", Image.fromarray(rng.integers(0, 65535, (9, 7), dtype=np.uint16)), {}),
                 ("PNG", img.convert("P"), {"transparency": 0}), ("PNG", img.convert("LA"), {})]
    for fmt, im, kw in variants:
        buf = io.BytesIO()
        try:
            im.save(buf, fmt, **kw)
        except (OSError, KeyError, ValueError):  # a codec this Pillow build lacks
            continue
        out[f"{fmt}-{im.mode}-{len(out)}"] = buf.getvalue()
    return out


SEEDS = _seeds()
HEADER_VALUES = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x01\x00"]


@st.composite
def damaged_images(draw: st.DrawFn) -> bytes:
    """One seed with up to six edits; the first bytes (headers) are edited most often."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(0, 6))):
        if not data:
            break
        at = draw(st.one_of(st.integers(0, min(64, len(data) - 1)), st.integers(0, len(data) - 1)))
        kind = draw(st.sampled_from(["set", "cut", "insert", "field"]))
        if kind == "set":
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data[at : at + 4] = draw(st.sampled_from(HEADER_VALUES))
    return bytes(data)


def test_every_seed_loads_untouched() -> None:
    assert len(SEEDS) >= 12, sorted(SEEDS)  # the fuzzing below covers many formats, not just one or two
    d = Path(tempfile.mkdtemp())
    try:
        for name, data in SEEDS.items():
            (d / "x").write_bytes(data)
            rgb = load_rgb(d / "x")
            assert rgb.dtype == np.uint8 and rgb.shape[2] == 3 and min(rgb.shape[:2]) >= 7, name
    finally:
        shutil.rmtree(d)


@given(damaged_images())
def test_damaged_files_load_or_give_one_line_errors(data: bytes) -> None:
    d = Path(tempfile.mkdtemp())
    try:
        path = d / "photo"
        path.write_bytes(data)
        for source in (path, "pil"):
            try:
                if source == "pil":  # an image the caller opened lazily, as the server does with uploads
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        try:
                            im = Image.open(io.BytesIO(data))
                        except Exception:  # noqa: BLE001 - not under test: the caller handles its own open()
                            continue
                    rgb = load_rgb(im)
                else:
                    rgb = load_rgb(source)
            except FaceattrError as e:
                assert "\n" not in str(e)
                continue
            assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.flags.c_contiguous
    finally:
        shutil.rmtree(d)


PRE = Preprocess(size=(16, 12))


@given(st.lists(damaged_images(), min_size=1, max_size=4))
def test_training_decode_marks_damaged_files_invalid_and_never_raises(files: list[bytes]) -> None:
    d = Path(tempfile.mkdtemp())
    try:
        good = d / "good.png"
        good.write_bytes(SEEDS[sorted(SEEDS)[0]])
        paths = [good]
        for i, data in enumerate(files):
            paths.append(d / f"{i}.img")
            paths[-1].write_bytes(data)
        cache = build_cache(paths, PRE, cache_dir=d / "cache", workers=1, progress=False)
        assert cache.images.shape == (len(paths), 16, 12, 3) and cache.valid[0]
        with Image.open(good) as im:
            np.testing.assert_array_equal(cache.images[0], prepare_image(im, PRE))
        assert not cache.images[~cache.valid].any()  # what could not be decoded stays zero
    finally:
        shutil.rmtree(d)
