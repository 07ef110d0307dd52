"""faceattr.data.transforms: Preprocess round trips, prepare_image on real faces, batching, normalising."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from faceattr.data.transforms import Preprocess, normalize_batch, prepare_image, to_tensor_batch
from faceattr.errors import FaceattrError


def test_preprocess_round_trip_is_json_safe() -> None:
    pre = Preprocess(size=[160, 128], crop=[25, 50, 153, 178], mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    assert pre.size == (160, 128) and pre.crop == (25, 50, 153, 178)  # lists from JSON become tuples
    d = json.loads(json.dumps(pre.to_dict()))
    assert d == {"size": [160, 128], "crop": [25, 50, 153, 178], "mean": [0.5] * 3, "std": [0.25] * 3}
    assert Preprocess.from_dict(d) == pre
    assert hash(Preprocess.from_dict(d)) == hash(pre)
    whole = Preprocess(size=(224, 224))
    assert whole.crop is None and Preprocess.from_dict(whole.to_dict()) == whole
    assert Preprocess(size=(64, 64), crop=[]).crop is None  # config's empty list means 'no crop'


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"size": (0, 64)}, "size must be positive"),
        ({"size": (64,)}, "size .* must be 2 numbers"),
        ({"size": (64.5, 64)}, "whole numbers"),
        ({"size": (64, 64), "crop": (10, 10, 5, 50)}, "0 <= x0 < x1 <= 178"),
        ({"size": (64, 64), "crop": (0, 0, 178, 219)}, "0 <= y0 < y1 <= 218"),
        ({"size": (64, 64), "std": (1.0, 0.0, 1.0)}, "std must be positive"),
        ({"size": (64, 64), "mean": (0.5, 0.5)}, "mean must be 3 numbers"),
    ],
)
def test_preprocess_rejects_bad_values(kwargs: dict, pattern: str) -> None:
    with pytest.raises(FaceattrError, match=pattern):
        Preprocess(**kwargs)


def test_preprocess_from_dict_rejects_unknown_or_missing_keys() -> None:
    with pytest.raises(FaceattrError, match="unknown key.*interpolation"):
        Preprocess.from_dict({"size": [64, 64], "interpolation": "bicubic"})
    with pytest.raises(FaceattrError, match="no 'size'"):
        Preprocess.from_dict({"crop": None})


def test_prepare_image_identity_and_exact_crop(real_images) -> None:
    path = real_images(1)[0]
    raw = np.asarray(Image.open(path).convert("RGB"))
    assert raw.shape == (218, 178, 3)
    same = prepare_image(Image.open(path), Preprocess(size=(218, 178)))
    assert same.dtype == np.uint8 and same.shape == (218, 178, 3)
    np.testing.assert_array_equal(same, raw)
    box = (25, 50, 153, 178)
    cropped = prepare_image(Image.open(path), Preprocess(size=(128, 128), crop=box))
    np.testing.assert_array_equal(cropped, raw[50:178, 25:153])


def test_prepare_image_downscales_like_pil_and_deterministically(real_images) -> None:
    pre = Preprocess(size=(160, 128), crop=(9, 29, 169, 189))
    for path in real_images(5):
        img = Image.open(path)
        got = prepare_image(img, pre)
        ref = np.asarray(
            Image.open(path).convert("RGB").resize((128, 160), Image.Resampling.BILINEAR, box=(9, 29, 169, 189))
        )
        np.testing.assert_array_equal(got, ref)  # no draft here: under a 2x reduction
        np.testing.assert_array_equal(prepare_image(Image.open(path), pre), got)


def test_prepare_image_draft_is_close_and_deterministic(real_images) -> None:
    """A 4x reduction decodes the JPEG at reduced scale: same picture, reproducible bytes."""
    pre = Preprocess(size=(48, 40))
    for path in real_images(5):
        fast = prepare_image(Image.open(path), pre)
        again = prepare_image(Image.open(path), pre)
        full = prepare_image(Image.open(path).convert("RGB"), pre)  # already decoded: no draft possible
        np.testing.assert_array_equal(fast, again)
        assert fast.shape == (48, 40, 3)
        assert np.abs(fast.astype(int) - full.astype(int)).mean() < 3.0


def test_prepare_image_converts_modes_and_scales_crop_to_other_frames() -> None:
    gray = Image.new("L", (178, 218), 90)
    out = prepare_image(gray, Preprocess(size=(20, 10)))
    assert out.shape == (20, 10, 3) and (out == 90).all()
    rgba = Image.new("RGBA", (178, 218), (10, 20, 30, 128))
    assert (prepare_image(rgba, Preprocess(size=(8, 8))) == [10, 20, 30]).all()
    # A 2x frame (356x436): the crop box scales with it to (50, 100, 250, 300), inside the red square
    # with a margin for the antialiasing filter (which, as Pillow's resize(box=) does, reads past the box).
    # Unscaled, the box would take rows 50-150 and catch the black border.
    big = np.zeros((436, 356, 3), dtype=np.uint8)
    big[70:330, 20:280] = (255, 0, 0)
    out = prepare_image(Image.fromarray(big), Preprocess(size=(16, 16), crop=(25, 50, 125, 150)))
    assert (out == [255, 0, 0]).all()


def test_to_tensor_batch_layout_and_read_only_input() -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(4, 6, 5, 3), dtype=np.uint8)
    images.setflags(write=False)  # like a slice of the read-only cache memmap
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns on non-writable arrays; we must copy first
        x = to_tensor_batch(images)
    assert x.dtype == torch.uint8 and x.shape == (4, 3, 6, 5) and x.is_contiguous()
    np.testing.assert_array_equal(x.numpy(), images.transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="uint8 images"):
        to_tensor_batch(images[0])


def test_normalize_batch_uint8_and_float_agree() -> None:
    pre = Preprocess(size=(4, 4), mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    ref = (x.double() / 255 - torch.tensor(pre.mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        pre.std, dtype=torch.float64
    ).view(1, 3, 1, 1)
    a = normalize_batch(x, pre)
    xf = x.float() / 255
    before = xf.clone()
    b = normalize_batch(xf, pre)
    assert a.dtype == torch.float32 and b.dtype == torch.float32
    torch.testing.assert_close(a.double(), ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert torch.equal(xf, before)  # float input is not modified in place


def test_grayscale_images_equal_pil_black_and_white_photos(real_images) -> None:
    from faceattr.data.transforms import grayscale_images

    photos = [np.array(Image.open(p).convert("RGB")) for p in real_images(4)]
    gray = grayscale_images(np.stack(photos), chunk=3)  # a chunk boundary inside the batch
    for rgb, g in zip(photos, gray):
        expected = np.array(Image.fromarray(rgb).convert("L").convert("RGB"))
        assert np.array_equal(g, expected)
    assert gray.dtype == np.uint8 and (gray[..., 0] == gray[..., 2]).all()
    with pytest.raises(ValueError, match="uint8 images"):
        grayscale_images(np.zeros((2, 8, 8), dtype=np.uint8))
