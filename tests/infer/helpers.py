"""Test helpers: small checkpoints with lively outputs, and real CelebA faces pasted into scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

ATTRS = [f"attr_{i:02d}" for i in range(40)]


def build_checkpoint(path: Path, arch: str = "celeb_cnn", *, num_outputs: int = 40, output: str = "sigmoid",
                     thresholds: list[float] | None = None, seed: int = 0,
                     size: tuple[int, int] | None = None, crop: list[int] | None = None,
                     attributes: list[str] | None = None, config: dict | None = None, age: bool = False) -> Path:
    """Write a randomly initialised checkpoint whose logits are spread out (std ~3 on real faces).

    Freshly initialised networks give logits near 0 for every input, which would let a broken
    pipeline (wrong crop, wrong normalisation, a swapped backend) pass a closeness test; scaling the
    head makes every such mistake visible. `size` overrides the registry's input size (the models
    end in global pooling), which keeps tests fast on a shared CPU. `age` adds one more output after
    the attributes, read as age in years (35 + 20 x logit), as multi-source training writes it.
    """
    import torch
    from torch import nn

    from faceattr.checkpoint import save_checkpoint
    from faceattr.models import create_model, get_spec

    torch.manual_seed(seed)
    spec = get_spec(arch)
    model = create_model(arch, num_outputs=num_outputs + int(age)).eval()
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    size = tuple(size or spec.input_size)
    x = torch.rand(8, 3, *size) * 2 - 1
    with torch.no_grad():
        std = float(model(x).std())
        head.weight.mul_(3.0 / max(std, 1e-6))
        head.bias.normal_(0, 1.0)
    attrs = attributes or (ATTRS[:num_outputs] if output == "sigmoid" else ["Smiling"])
    meta = {
        "model": {"name": arch, "kwargs": {"num_outputs": num_outputs + int(age), "hidden": 0, "dropout": 0.0}},
        "attributes": attrs,
        "output": output,
        "preprocess": {"size": list(size), "crop": crop, "mean": list(spec.mean), "std": list(spec.std)},
        "thresholds": thresholds,
        "age": {"mean": 35.0, "std": 20.0} if age else None,
        "config": config,
        "metrics": {},
        "epoch": 0,
        "step": 0,
    }
    return save_checkpoint(path, model, meta)


def celeba_crops(root: Path, n: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """`n` aligned CelebA crops (name, RGB uint8 [218, 178, 3]) picked with a fixed seed."""
    files = sorted((root / "img_align_celeba").glob("*.jpg"))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(files), size=n, replace=False)
    return [(files[i].name, np.asarray(Image.open(files[i]).convert("RGB"))) for i in pick]


def paste(canvas: np.ndarray, crop: np.ndarray, *, angle: float = 0.0, scale: float = 1.0,
          center: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Paste `crop` rotated by `angle` degrees (counter-clockwise) and scaled about its centre onto
    `canvas` at `center`; returns (new canvas, 2x3 matrix crop -> canvas)."""
    import cv2

    h, w = crop.shape[:2]
    H, W = canvas.shape[:2]
    if center is None:
        center = (W / 2, H / 2)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[:, 2] += np.array(center) - np.array([w / 2, h / 2])
    warped = cv2.warpAffine(crop, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    alpha = cv2.warpAffine(np.full((h, w), 255, np.uint8), m, (W, H), flags=cv2.INTER_LINEAR)
    a = (alpha.astype(np.float32) / 255.0)[..., None]
    out = (warped.astype(np.float32) * a + canvas.astype(np.float32) * (1 - a) + 0.5).astype(np.uint8)
    return out, m


def noise_canvas(rng: np.random.Generator, height: int = 480, width: int = 640) -> np.ndarray:
    """A textured background (smoothed colour noise) with no face in it."""
    import cv2

    noise = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 3)


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to points [N, 2]."""
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2x3 matrix of `a` after `b`."""
    return (np.vstack([a, [0, 0, 1]]) @ np.vstack([b, [0, 0, 1]]))[:2]


def png_header_only(path: Path, width: int, height: int) -> Path:
    """Write a tiny PNG whose header claims width x height (RGB) and whose data is a few bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(body)
    return path
