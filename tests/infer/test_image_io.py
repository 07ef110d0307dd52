"""faceattr.infer.image_io: every odd kind of input becomes upright RGB uint8, or one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceattr.errors import FaceattrError
from faceattr.infer.image_io import load_rgb

from .helpers import png_header_only


@pytest.fixture(scope="module")
def portrait(grace: Path) -> np.ndarray:
    """The grace_hopper sample as RGB."""
    return np.asarray(Image.open(grace).convert("RGB"))


def test_path_pil_and_array_agree(grace: Path, portrait: np.ndarray) -> None:
    a = load_rgb(grace)
    assert a.dtype == np.uint8 and a.shape == (600, 512, 3) and a.flags.c_contiguous
    assert np.array_equal(a, portrait)
    assert np.array_equal(load_rgb(Image.open(grace)), portrait)
    assert np.array_equal(load_rgb(portrait), portrait)
    assert np.array_equal(load_rgb(str(grace)), portrait)


def test_exif_orientation_is_applied(tmp_path: Path, portrait: np.ndarray) -> None:
    # Stored sideways (as a phone does) with Orientation=6, "rotate 90 degrees clockwise to view".
    sideways = Image.fromarray(portrait).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "rotated.jpg"
    sideways.save(p, quality=95, exif=exif)
    assert Image.open(p).size == (600, 512)  # really stored sideways
    a = load_rgb(p)
    assert a.shape == portrait.shape
    assert np.abs(a.astype(int) - portrait).mean() < 4  # upright again (JPEG noise only)


def test_grayscale(tmp_path: Path, portrait: np.ndarray) -> None:
    p = tmp_path / "gray.png"
    gray = Image.fromarray(portrait).convert("L")
    gray.save(p)
    a = load_rgb(p)
    assert a.shape == (600, 512, 3)
    g = np.asarray(gray)
    assert all(np.array_equal(a[..., c], g) for c in range(3))


def test_is_grayscale_tells_black_and_white_photos_from_colour_ones(tmp_path: Path, portrait: np.ndarray) -> None:
    from faceattr.infer.image_io import is_grayscale

    assert not is_grayscale(portrait)
    gray = Image.fromarray(portrait).convert("L").convert("RGB")
    assert is_grayscale(np.asarray(gray))
    # A black-and-white photo saved as a colour JPEG drifts by a level or two between channels.
    p = tmp_path / "bw.jpg"
    gray.save(p, quality=80)
    assert is_grayscale(load_rgb(p))
    # A faint sepia tint is colour.
    sepia = np.asarray(gray).astype(int) + np.array([12, 4, -8])
    assert not is_grayscale(np.clip(sepia, 0, 255).astype(np.uint8))


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :10, 3] = 0  # transparent: must become white, not black or red
    rgba[:, 10:20, 3] = 128  # half: a blend
    rgba[:, 20:, 3] = 255
    p = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(p)
    a = load_rgb(p)
    assert a.shape == (20, 30, 3)
    assert (a[:, :10] == 255).all()
    assert np.allclose(a[0, 15], [228, 127, 127], atol=2)
    assert (a[:, 20:] == [200, 0, 0]).all()
    # The same for an array with an alpha channel.
    assert np.abs(load_rgb(rgba).astype(int) - a).max() <= 1


def test_palette_with_and_without_transparency(tmp_path: Path, portrait: np.ndarray) -> None:
    pal = Image.fromarray(portrait).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    p = tmp_path / "pal.png"
    pal.save(p)
    a = load_rgb(p)
    assert a.shape == (600, 512, 3)
    assert np.abs(a.astype(int) - portrait).mean() < 12
    # GIF-style palette transparency: transparent index becomes white.
    small = Image.new("P", (4, 4), 1)
    small.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    small.putpixel((0, 0), 0)
    q = tmp_path / "t.gif"
    small.save(q, transparency=0)
    b = load_rgb(q)
    assert tuple(b[0, 0]) == (255, 255, 255) and tuple(b[1, 1]) == (255, 0, 0)


def test_16bit_png(tmp_path: Path) -> None:
    ramp = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(ramp).save(p)
    assert Image.open(p).mode.startswith("I")
    a = load_rgb(p)
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8
    expect = np.round(ramp / 257.0)
    assert np.abs(a[..., 0].astype(int) - expect).max() <= 1
    assert a[..., 0].max() > 200  # scaled from 16 bits, not clipped or truncated to the low byte


def test_cmyk_jpeg(tmp_path: Path, portrait: np.ndarray) -> None:
    p = tmp_path / "cmyk.jpg"
    Image.fromarray(portrait).convert("CMYK").save(p, quality=95)
    assert Image.open(p).mode == "CMYK"
    a = load_rgb(p)
    assert a.shape == (600, 512, 3)
    assert np.abs(a.astype(int) - portrait).mean() < 6


def test_float_and_uint16_arrays() -> None:
    f = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    a = load_rgb(f)
    assert a.shape == (3, 4, 3) and a[0, 0, 0] == 0 and a[-1, -1, 0] == 255
    u = np.full((2, 2, 3), 65535, np.uint16)
    assert (load_rgb(u) == 255).all()
    with pytest.raises(FaceattrError, match="expected an image array"):
        load_rgb(np.zeros((4, 4, 2), np.uint8))


def test_pixel_limit_checked_from_header_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 9000 x 9000 = 81 MP: under Pillow's own bomb warning (89 MP), over our 50 MP limit.
    p = png_header_only(tmp_path / "huge.png", 9000, 9000)
    assert p.stat().st_size < 200

    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("the image was decoded before its size was checked")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(FaceattrError) as e:
        load_rgb(p)
    msg = str(e.value)
    assert "huge.png" in msg and "81.0 MP" in msg and "50 MP" in msg and "\n" not in msg


def test_decompression_bomb_refused(tmp_path: Path) -> None:
    # 30000 x 30000 = 900 MP: Pillow itself raises DecompressionBombError at open.
    p = png_header_only(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(FaceattrError, match="bomb.png"):
        load_rgb(p)


def test_custom_pixel_limit(grace: Path) -> None:
    with pytest.raises(FaceattrError, match="above the"):
        load_rgb(grace, max_pixels=100_000)
    with pytest.raises(FaceattrError, match="above the"):
        load_rgb(np.zeros((400, 400, 3), np.uint8), max_pixels=100_000)


@pytest.mark.parametrize(
    "name, content, pattern",
    [
        ("notes.jpg", b"this is a text file, not a JPEG\n", "not an image"),
        ("empty.png", b"", r"empty.png: empty file \(0 bytes\)"),  # an interrupted download, say
    ],
)
def test_non_images(tmp_path: Path, name: str, content: bytes, pattern: str) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(FaceattrError, match=pattern) as e:
        load_rgb(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_truncated_jpeg(tmp_path: Path, grace: Path) -> None:
    data = grace.read_bytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(FaceattrError, match="corrupt or truncated") as e:
        load_rgb(p)
    assert str(p) in str(e.value)


def test_corrupt_png(tmp_path: Path, grace: Path) -> None:
    p = tmp_path / "bad.png"
    Image.open(grace).save(p)
    data = bytearray(p.read_bytes())
    data[200:260] = b"\x00" * 60  # smash the start of the image data (CRC and zlib stream)
    p.write_bytes(bytes(data))
    with pytest.raises(FaceattrError, match="bad.png"):
        load_rgb(p)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(FaceattrError, match="no such file"):
        load_rgb(tmp_path / "nope.jpg")
    with pytest.raises(FaceattrError, match="not a file"):
        load_rgb(tmp_path)


def test_lazily_opened_broken_pil_image(tmp_path: Path, grace: Path) -> None:
    p = tmp_path / "half.jpg"
    p.write_bytes(grace.read_bytes()[:5000])
    im = Image.open(p)  # only the header is read here
    with pytest.raises(FaceattrError, match="corrupt or truncated"):
        load_rgb(im)
