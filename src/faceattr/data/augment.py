"""Batched training augmentation on uint8 image tensors (CPU or GPU).

Crop, zoom, rotation and horizontal flip are folded into one affine matrix per image and applied
with a single `affine_grid` + `grid_sample` call for the whole batch, so augmentation costs one
resampling pass instead of a Python loop over PIL images. Random erasing and grayscale are one
masked `where` each; lowering the resolution is two `interpolate` calls per chosen image.
`swap_context` (before the rest, as it needs the labels) pastes the band below the chin from
another image of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from faceattr.config import AugmentConfig
from faceattr.errors import FaceattrError

__all__ = ["COLLAR_ROW", "CONTEXT_BAND", "CONTEXT_LABELS", "augment_batch", "context_columns", "swap_collars", "swap_context"]

# Columns of the per-image uniform draws. Every call draws all of them, whatever is switched on,
# so a generator advances the same amount per batch and toggling one option leaves the others' draws alone.
_FLIP, _CROP, _SHIFT_X, _SHIFT_Y, _ZOOM, _ANGLE, _BRIGHT, _CONTRAST = range(8)
_N_DRAWS = 8
_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's adjust_contrast uses
# Random erasing draws its own columns, only when it is on, so runs without it keep their stream.
_ERASE, _AREA, _RATIO, _TOP, _LEFT = range(5)
_ERASE_AREA = (0.02, 0.33)  # share of the image, as torchvision's RandomErasing
_ERASE_RATIO = (0.3, 3.3)  # height / width of the rectangle, log-uniform
_LOWRES_SIDE = (0.25, 1.0)  # share of each side kept when the resolution is lowered, uniform
# Where the swapped band starts, as a share of the height, uniform: in CelebA's aligned 178x218
# frame the chin sits near rows 180-195, so the band (rows 183-205) holds neck, collar and shoulders.
CONTEXT_BAND = (0.84, 0.94)
# Where evaluation swaps (`faceattr evaluate --swap-clothes`): rows 190-217 of the 218, neck and
# collar only, below every chin, so what changes is clothing and never the face.
COLLAR_ROW = 190
# Labels that live in that band (or reach into it): the band of another image makes them unknown,
# so training leaves them out of the loss of a pasted image.
CONTEXT_LABELS = ("Wearing_Necktie", "Wearing_Necklace", "No_Beard", "Goatee", "Mustache")


def _check(cfg: AugmentConfig) -> None:
    """Reject settings outside the ranges the sampling formulas assume."""
    if not 0.0 < cfg.crop_scale <= 1.0:
        raise FaceattrError(f"augment.crop_scale must be in (0, 1] (1: no crop), got {cfg.crop_scale}")
    if not 0.0 <= cfg.scale < 1.0:
        raise FaceattrError(f"augment.scale must be in [0, 1) (0: no zoom), got {cfg.scale}")
    if cfg.rotate < 0.0:
        raise FaceattrError(f"augment.rotate must be >= 0 degrees, got {cfg.rotate}")
    if not 0.0 <= cfg.color <= 1.0:
        raise FaceattrError(f"augment.color must be in [0, 1] (0: off), got {cfg.color}")
    if not 0.0 <= cfg.erase <= 1.0:
        raise FaceattrError(f"augment.erase must be a probability in [0, 1] (0: off), got {cfg.erase}")
    if not 0.0 <= cfg.gray <= 1.0:
        raise FaceattrError(f"augment.gray must be a probability in [0, 1] (0: off), got {cfg.gray}")
    if not 0.0 <= cfg.lowres <= 1.0:
        raise FaceattrError(f"augment.lowres must be a probability in [0, 1] (0: off), got {cfg.lowres}")
    if not 0.0 <= cfg.context_swap <= 1.0:
        raise FaceattrError(f"augment.context_swap must be a probability in [0, 1] (0: off), got {cfg.context_swap}")


def context_columns(attributes: Sequence[str]) -> tuple[int | None, list[int]]:
    """Columns `swap_context` works with: (Male or None when not trained, the CONTEXT_LABELS present)."""
    names = list(attributes)
    male = names.index("Male") if "Male" in names else None
    return male, [names.index(a) for a in CONTEXT_LABELS if a in names]


def swap_context(
    images: torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    p: float,
    generator: torch.Generator,
    *,
    male: int | None,
    keep: Sequence[int] = (),
    band: tuple[float, float] = CONTEXT_BAND,
) -> tuple[torch.Tensor, torch.Tensor]:
    """With chance `p` per image, paste another batch image's rows below a random start in `band`.

    Returns (a copy of the images, bool [N]: which ones were pasted into). The donor is drawn
    uniformly among the images whose label in column `male` differs (if given) and whose labels in
    `keep` are equal; an image without such a donor is left as it is. Donors give their original
    rows, never rows pasted into them. Training passes no `keep` and ignores the CONTEXT_LABELS of
    pasted images instead: pairing on them would make the chance of a swap depend on those labels,
    and the model would learn that an untouched band means, e.g., a necklace. Evaluation passes
    them, so every label of a pasted image stays true.
    """
    if images.dim() != 4:
        raise ValueError(f"expected images [N, C, H, W], got {tuple(images.shape)}")
    n, height = images.shape[0], images.shape[2]
    if not 0.0 <= band[0] <= band[1] <= 1.0:
        raise ValueError(f"band must satisfy 0 <= start <= end <= 1, got {band}")
    u = torch.rand(n, 3, generator=generator, device=generator.device, dtype=torch.float64).cpu()
    lab = torch.as_tensor(np.asarray(labels)) > 0.5
    if lab.shape[0] != n:
        raise ValueError(f"got {n} images but {lab.shape[0]} label rows")
    out = images.clone()
    swapped = torch.zeros(n, dtype=torch.bool)
    keep = list(keep)
    for i in torch.nonzero(u[:, 0] < p).flatten().tolist():
        ok = torch.ones(n, dtype=torch.bool)
        ok[i] = False
        if male is not None:
            ok &= lab[:, male] != lab[i, male]
        if keep:
            ok &= (lab[:, keep] == lab[i, keep]).all(dim=1)
        donors = torch.nonzero(ok).flatten()
        if len(donors) == 0:
            continue
        j = int(donors[min(len(donors) - 1, int(float(u[i, 1]) * len(donors)))])
        start = round(height * (band[0] + (band[1] - band[0]) * float(u[i, 2])))
        out[i, :, start:] = images[j, :, start:]
        swapped[i] = True
    return out, swapped


def swap_collars(images: np.ndarray, labels: np.ndarray, start: float, *, male: int, keep: Sequence[int],
                 seed: int = 0) -> tuple[np.ndarray, int]:
    """Evaluation's swap: every uint8 [N, H, W, 3] image gets the rows from `start` (a share of H) down of an
    opposite-sex image with the same `keep` labels (seeded); returns (new images, how many were changed)."""
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)  # a writable copy (a cache may be read-only)
    out, swapped = swap_context(x, labels, 1.0, torch.Generator().manual_seed(seed), male=male, keep=keep,
                                band=(start, start))
    return np.ascontiguousarray(out.permute(0, 2, 3, 1).numpy()), int(swapped.sum())


def _geometric(cfg: AugmentConfig) -> bool:
    """Whether any crop, zoom, rotation or flip is on (else resampling is skipped: it would be an identity)."""
    return cfg.hflip or cfg.crop_scale < 1.0 or cfg.scale > 0.0 or cfg.rotate > 0.0


def _flip_only(cfg: AugmentConfig) -> bool:
    """Whether a horizontal flip is the only geometric change."""
    return cfg.hflip and cfg.crop_scale == 1.0 and cfg.scale == 0.0 and cfg.rotate == 0.0


def _affine(u: torch.Tensor, cfg: AugmentConfig, height: int, width: int) -> torch.Tensor:
    """Per-image [N, 2, 3] matrices mapping output to input coordinates (affine_grid's normalised [-1, 1])."""
    flip = 1.0 - 2.0 * ((u[:, _FLIP] < 0.5) & cfg.hflip).to(u.dtype)  # -1 mirrors x
    share = cfg.crop_scale + (1.0 - cfg.crop_scale) * u[:, _CROP]  # side share of the crop window
    shift_x = (1.0 - share) * (2.0 * u[:, _SHIFT_X] - 1.0)  # window centre, kept inside the image
    shift_y = (1.0 - share) * (2.0 * u[:, _SHIFT_Y] - 1.0)
    zoom = 1.0 + cfg.scale * (2.0 * u[:, _ZOOM] - 1.0)
    angle = torch.deg2rad(cfg.rotate * (2.0 * u[:, _ANGLE] - 1.0))
    extent = share / zoom  # zooming in samples a smaller window
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Normalised coordinates stretch x and y differently on a non-square image; a rotation in pixel
    # space is diag(1/W, 1/H) R diag(W, H) there, which keeps faces from shearing.
    aspect = height / width
    theta = torch.stack(
        [
            torch.stack([extent * cos * flip, -extent * sin * aspect, shift_x], dim=1),
            torch.stack([extent * sin / aspect * flip, extent * cos, shift_y], dim=1),
        ],
        dim=1,
    )
    return theta


def _erase_mask(v: torch.Tensor, p: float, height: int, width: int) -> torch.Tensor:
    """Bool [N, 1, H, W]: one rectangle per image chosen with probability `p`, from the draws `v` [N, 5]."""
    n = v.shape[0]
    area = (_ERASE_AREA[0] + (_ERASE_AREA[1] - _ERASE_AREA[0]) * v[:, _AREA]) * height * width
    lo, hi = math.log(_ERASE_RATIO[0]), math.log(_ERASE_RATIO[1])
    ratio = torch.exp(lo + (hi - lo) * v[:, _RATIO])
    h = torch.sqrt(area * ratio).round().clamp(1, height)
    w = torch.sqrt(area / ratio).round().clamp(1, width)
    top = ((height - h + 1) * v[:, _TOP]).floor().clamp(max=height - h)
    left = ((width - w + 1) * v[:, _LEFT]).floor().clamp(max=width - w)
    ys = torch.arange(height, device=v.device, dtype=v.dtype).view(1, height, 1)
    xs = torch.arange(width, device=v.device, dtype=v.dtype).view(1, 1, width)
    inside = ((ys >= top.view(n, 1, 1)) & (ys < (top + h).view(n, 1, 1))
              & (xs >= left.view(n, 1, 1)) & (xs < (left + w).view(n, 1, 1)))
    return (inside & (v[:, _ERASE] < p).view(n, 1, 1)).unsqueeze(1)


def augment_batch(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Randomly crop, zoom, rotate, flip, colour-jitter, erase, gray and blur uint8 [N, 3, H, W]; returns float32 0..1, same size.

    Deterministic for a given generator state. Random numbers are drawn on the generator's device
    and moved to the images' device, so a CPU generator can drive augmentation of CUDA tensors.
    """
    if images.dim() != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
    _check(cfg)
    n, _, height, width = images.shape
    u = torch.rand(n, _N_DRAWS, generator=generator, device=generator.device, dtype=torch.float64)
    u = u.to(images.device)
    x = images.to(torch.float32).div_(255.0)
    if n == 0:
        return x

    if _flip_only(cfg):
        # A pure mirror needs no resampling: torch.flip is exact, grid_sample only close.
        mirror = (u[:, _FLIP] < 0.5).view(n, 1, 1, 1)
        x = torch.where(mirror, x.flip(3), x)
    elif _geometric(cfg):
        theta = _affine(u, cfg, height, width).to(torch.float32)
        grid = F.affine_grid(theta, [n, 3, height, width], align_corners=False)
        # Reflection fills the corners a rotation or zoom-out exposes with face-like texture,
        # rather than black wedges the model could learn to key on.
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    if cfg.color > 0.0:
        bright = (1.0 + cfg.color * (2.0 * u[:, _BRIGHT] - 1.0)).to(torch.float32).view(n, 1, 1, 1)
        contrast = (1.0 + cfg.color * (2.0 * u[:, _CONTRAST] - 1.0)).to(torch.float32).view(n, 1, 1, 1)
        x = x * bright
        gray = torch.tensor(_GRAY, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        mean = (x * gray).sum(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean).clamp_(0.0, 1.0)

    if cfg.erase > 0.0:
        v = torch.rand(n, 5, generator=generator, device=generator.device, dtype=torch.float64).to(images.device)
        noise = torch.rand(x.shape, generator=generator, device=generator.device).to(x.device)
        x = torch.where(_erase_mask(v, cfg.erase, height, width), noise, x)

    if cfg.gray > 0.0:
        # Drawn after everything else, as erasing is, so runs without it keep their random stream.
        g = torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64).to(images.device)
        weights = torch.tensor(_GRAY, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        luma = (x * weights).sum(dim=1, keepdim=True).expand_as(x)
        x = torch.where((g < cfg.gray).view(n, 1, 1, 1), luma, x)

    if cfg.lowres > 0.0:
        r = torch.rand(n, 2, generator=generator, device=generator.device, dtype=torch.float64)
        side = _LOWRES_SIDE[0] + (_LOWRES_SIDE[1] - _LOWRES_SIDE[0]) * r[:, 1]
        for i in torch.nonzero(r[:, 0] < cfg.lowres).flatten().tolist():
            size = (max(1, round(height * float(side[i]))), max(1, round(width * float(side[i]))))
            small = F.interpolate(x[i : i + 1], size=size, mode="bilinear", antialias=True, align_corners=False)
            x[i : i + 1] = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    return x
