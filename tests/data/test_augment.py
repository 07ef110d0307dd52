"""faceattr.data.augment: shapes, determinism, exact flips, geometry that respects the pixel aspect."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from faceattr.config import AugmentConfig
from faceattr.data.augment import CONTEXT_BAND, CONTEXT_LABELS, augment_batch, context_columns, swap_context
from faceattr.data.transforms import Preprocess, prepare_image, to_tensor_batch
from faceattr.errors import FaceattrError

OFF = {"hflip": False, "crop_scale": 1.0, "rotate": 0.0, "scale": 0.0, "color": 0.0}


@pytest.fixture
def faces(real_images) -> torch.Tensor:
    """16 real faces, uint8 [16, 3, 218, 178]."""
    pre = Preprocess(size=(218, 178))
    return to_tensor_batch(np.stack([prepare_image(Image.open(p), pre) for p in real_images(16)]))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shapes_range_and_determinism(faces: torch.Tensor) -> None:
    cfg = AugmentConfig()  # the training defaults: everything on
    a = augment_batch(faces, cfg, _gen(0))
    b = augment_batch(faces, cfg, _gen(0))
    c = augment_batch(faces, cfg, _gen(1))
    assert a.shape == faces.shape and a.dtype == torch.float32
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, faces.float() / 255, atol=0.05)  # it did change the images
    assert faces.dtype == torch.uint8  # input untouched
    g = _gen(0)
    assert not torch.equal(augment_batch(faces, cfg, g), augment_batch(faces, cfg, g))  # the stream advances


def test_everything_off_is_exact_identity(faces: torch.Tensor) -> None:
    out = augment_batch(faces, AugmentConfig(**OFF), _gen(0))
    assert torch.equal(out, faces.float() / 255)


def test_hflip_only_equals_torch_flip(faces: torch.Tensor) -> None:
    out = augment_batch(faces, AugmentConfig(**{**OFF, "hflip": True}), _gen(3))
    x = faces.float() / 255
    flipped = [torch.equal(o, torch.flip(xi, dims=[2])) for o, xi in zip(out, x)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 0 < sum(flipped) < len(flipped)  # a coin per image, not per batch


def test_flip_inside_the_affine_path_mirrors_the_same_images(faces: torch.Tensor) -> None:
    """With a negligible rotation the resampling path runs; its flips must match the exact path's."""
    exact = augment_batch(faces, AugmentConfig(**{**OFF, "hflip": True}), _gen(3))
    resampled = augment_batch(faces, AugmentConfig(**{**OFF, "hflip": True, "rotate": 1e-6}), _gen(3))
    torch.testing.assert_close(resampled, exact, atol=1e-3, rtol=0)


def test_rotation_keeps_a_disc_round_on_a_non_square_image() -> None:
    """Rotating in normalised coordinates would shear non-square images; a disc must stay a disc."""
    h, w, r = 96, 64, 12
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    disc = (((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < r * r).to(torch.uint8) * 255
    images = disc.expand(32, 3, h, w).contiguous()
    out = augment_batch(images, AugmentConfig(**{**OFF, "rotate": 45.0}), _gen(0))[:, 0]
    mass = out.sum(dim=(1, 2))
    cy = (out * yy).sum(dim=(1, 2)) / mass
    cx = (out * xx).sum(dim=(1, 2)) / mass
    var_y = (out * (yy - cy[:, None, None]) ** 2).sum(dim=(1, 2)) / mass
    var_x = (out * (xx - cx[:, None, None]) ** 2).sum(dim=(1, 2)) / mass
    area = float(disc.float().sum() / 255)
    torch.testing.assert_close(mass, torch.full_like(mass, area), rtol=0.03, atol=0)
    torch.testing.assert_close(cy, torch.full_like(cy, h / 2), atol=0.2, rtol=0)
    torch.testing.assert_close(cx, torch.full_like(cx, w / 2), atol=0.2, rtol=0)
    assert float((var_y / var_x - 1).abs().max()) < 0.05


def test_crop_and_zoom_enlarge_content() -> None:
    """Crop keeps at most the given share: a full-width ramp spans less of 0..1 after cropping."""
    ramp = torch.linspace(0, 255, 200).round().to(torch.uint8)
    images = ramp.view(1, 1, 1, 200).expand(8, 3, 100, 200).contiguous()
    out = augment_batch(images, AugmentConfig(**{**OFF, "crop_scale": 0.5}), _gen(0))
    span = out[:, 0, 50].amax(dim=1) - out[:, 0, 50].amin(dim=1)
    assert (span < 1.0 + 1e-6).all() and (span > 0.45).all() and (span < 0.98).any()
    zoomed = augment_batch(images, AugmentConfig(**{**OFF, "scale": 0.3}), _gen(0))
    assert zoomed.shape == images.shape and not torch.equal(zoomed, images.float() / 255)


def test_color_jitter_scales_brightness_within_bounds() -> None:
    images = torch.full((16, 3, 8, 8), 100, dtype=torch.uint8)
    images[:, :, :4] = 120  # some contrast to stretch
    out = augment_batch(images, AugmentConfig(**{**OFF, "color": 0.2}), _gen(0))
    ratio = out.mean(dim=(1, 2, 3)) / (images.float().mean(dim=(1, 2, 3)) / 255)
    assert ((ratio > 0.8 - 1e-4) & (ratio < 1.2 + 1e-4)).all()
    assert float(ratio.std()) > 0.01  # per image, not one factor for the batch


def test_bad_input_and_config() -> None:
    x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8 images"):
        augment_batch(x.float(), AugmentConfig(), _gen(0))
    with pytest.raises(FaceattrError, match="crop_scale"):
        augment_batch(x, AugmentConfig(crop_scale=1.5), _gen(0))
    with pytest.raises(FaceattrError, match="rotate"):
        augment_batch(x, AugmentConfig(rotate=-1.0), _gen(0))
    assert augment_batch(x[:0], AugmentConfig(), _gen(0)).shape == (0, 3, 8, 8)


def test_erase_replaces_one_rectangle_per_chosen_image_and_leaves_the_rest(faces: torch.Tensor) -> None:
    base = AugmentConfig(**{**OFF, "color": 0.2})
    kept = augment_batch(faces, base, _gen(5))
    erased = augment_batch(faces, AugmentConfig(**{**OFF, "color": 0.2, "erase": 0.5}), _gen(5))
    # Erasing draws after everything else, so the other steps see the same random numbers.
    changed = (erased != kept).any(dim=1)  # [N, H, W]
    hit = changed.flatten(1).any(dim=1)
    assert 0 < int(hit.sum()) < len(faces)  # a coin per image
    _, height, width = changed.shape
    for mask in changed[hit]:
        rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        # A solid rectangle of noise (a noise pixel equal to the original is vanishingly rare).
        assert box.float().mean() > 0.99
        assert 0.015 <= box.numel() / (height * width) <= 0.34
    assert torch.equal(erased[~hit], kept[~hit])
    assert 0.0 <= float(erased.min()) and float(erased.max()) <= 1.0
    every = augment_batch(faces, AugmentConfig(**{**OFF, "erase": 1.0}), _gen(6))
    assert bool((every != faces.float() / 255).flatten(1).any(dim=1).all())


def test_erase_must_be_a_probability(faces: torch.Tensor) -> None:
    for bad in (-0.1, 1.5):
        with pytest.raises(FaceattrError, match="augment.erase"):
            augment_batch(faces, AugmentConfig(erase=bad), _gen(0))


def test_gray_turns_chosen_images_to_luma_and_leaves_the_others_and_the_stream_alone(faces: torch.Tensor) -> None:
    base = {**OFF, "color": 0.2, "erase": 0.5}
    kept = augment_batch(faces, AugmentConfig(**base), _gen(7))
    grayed = augment_batch(faces, AugmentConfig(**{**base, "gray": 0.5}), _gen(7))
    # Grayscale draws last, so colour jitter and erasing see the same random numbers as without it.
    is_gray = (grayed[:, 0] == grayed[:, 1]).flatten(1).all(dim=1) & (grayed[:, 1] == grayed[:, 2]).flatten(1).all(dim=1)
    assert 0 < int(is_gray.sum()) < len(faces)  # a coin per image; real colour faces are never gray
    assert torch.equal(grayed[~is_gray], kept[~is_gray])
    luma = (kept[is_gray] * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(dim=1)
    assert torch.allclose(grayed[is_gray][:, 0], luma, atol=1e-6)
    every = augment_batch(faces, AugmentConfig(**{**OFF, "gray": 1.0}), _gen(8))
    assert bool((every[:, 0] == every[:, 2]).all())


def test_gray_must_be_a_probability(faces: torch.Tensor) -> None:
    for bad in (-0.1, 1.5):
        with pytest.raises(FaceattrError, match="augment.gray"):
            augment_batch(faces, AugmentConfig(gray=bad), _gen(0))


def _sharpness(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between horizontal neighbours, per image."""
    return (x[..., 1:] - x[..., :-1]).abs().flatten(1).mean(dim=1)


def test_lowres_blurs_chosen_images_only_and_leaves_the_stream_alone(faces: torch.Tensor) -> None:
    base = {**OFF, "color": 0.2, "erase": 0.3, "gray": 0.3}
    kept = augment_batch(faces, AugmentConfig(**base), _gen(9))
    low = augment_batch(faces, AugmentConfig(**{**base, "lowres": 0.5}), _gen(9))
    hit = (low != kept).flatten(1).any(dim=1)
    assert 0 < int(hit.sum()) < len(faces)  # a coin per image
    assert torch.equal(low[~hit], kept[~hit])  # drawn last: the other steps are unchanged
    assert bool((_sharpness(low[hit]) < _sharpness(kept[hit])).all())  # fewer pixels, less detail
    assert low.shape == faces.shape and 0.0 <= float(low.min()) and float(low.max()) <= 1.0
    # Blurring keeps the picture: the mean colour of each image hardly moves.
    assert torch.allclose(low.mean(dim=(2, 3)), kept.mean(dim=(2, 3)), atol=0.02)
    with pytest.raises(FaceattrError, match="augment.lowres"):
        augment_batch(faces, AugmentConfig(lowres=2.0), _gen(0))


@pytest.fixture
def labelled_faces(celeba_root) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """64 real training faces, uint8 [64, 3, 218, 178], with their 0/1 labels and attribute names."""
    from faceattr.data import load_celeba

    data = load_celeba(celeba_root, split="train", limit=64, seed=0)
    pre = Preprocess(size=(218, 178))
    x = to_tensor_batch(np.stack([prepare_image(Image.open(p), pre) for p in data.paths]))
    return x, np.asarray(data.labels, dtype=np.float32), list(data.attributes)


def test_context_swap_pastes_an_opposite_sex_band_below_the_chin(labelled_faces) -> None:
    x, labels, attrs = labelled_faces
    male, keep = context_columns(attrs)
    assert attrs[male] == "Male" and [attrs[k] for k in keep] == list(CONTEXT_LABELS)
    for pair_on in ((), keep):  # training pairs on sex only; evaluation also on the band's labels
        y, swapped = swap_context(x, labels, 1.0, _gen(3), male=male, keep=pair_on)
        assert y.shape == x.shape and y.dtype == torch.uint8
        height = x.shape[2]
        top, bottom = round(CONTEXT_BAND[0] * height), round(CONTEXT_BAND[1] * height)
        changed = (y != x).flatten(1).any(dim=1)
        assert torch.equal(changed, swapped)
        assert torch.equal(y[:, :, :top], x[:, :, :top])  # the face above the band is never touched
        for i in torch.nonzero(changed).flatten().tolist():
            rows = torch.nonzero((y[i] != x[i]).any(dim=0).any(dim=1)).flatten()
            start = int(rows.min())
            assert top <= start <= bottom
            # The pasted rows are one donor's, from `start` to the bottom, and that donor is a valid partner.
            donors = [j for j in range(len(x)) if j != i and torch.equal(y[i, :, start:], x[j, :, start:])]
            assert donors, f"image {i}: pasted rows match no other image"
            assert any(labels[j, male] != labels[i, male]
                       and np.array_equal(labels[j, pair_on], labels[i, pair_on]) for j in donors)
        if not pair_on:
            assert bool(swapped.all())  # a batch of 64 real faces holds both sexes: everyone has a donor
        else:
            assert len(x) // 3 < int(swapped.sum()) < len(x)  # matching the band's labels too leaves some without
    # An image with no valid partner is left as it is: women among women keep their band.
    women = np.nonzero(labels[:, male] == 0)[0][:8]
    y, swapped = swap_context(x[women], labels[women], 1.0, _gen(3), male=male)
    assert torch.equal(y, x[women]) and not bool(swapped.any())


def test_context_swap_chance_determinism_and_errors(labelled_faces) -> None:
    x, labels, attrs = labelled_faces
    male, _ = context_columns(attrs)
    assert torch.equal(swap_context(x, labels, 0.0, _gen(1), male=male)[0], x)
    a, sa = swap_context(x, labels, 0.5, _gen(1), male=male)
    b, sb = swap_context(x, labels, 0.5, _gen(1), male=male)
    assert torch.equal(a, b) and torch.equal(sa, sb)
    assert 0 < int(sa.sum()) < len(x)  # a coin per image
    # Without Male among the attributes any other image is a donor.
    assert context_columns(["Smiling", "Wearing_Necktie"]) == (None, [1])
    with pytest.raises(ValueError, match="label rows"):
        swap_context(x, labels[:10], 1.0, _gen(1), male=male)
    with pytest.raises(FaceattrError, match="augment.context_swap"):
        augment_batch(x, AugmentConfig(context_swap=1.5), _gen(0))
