"""Score models side by side on CelebA images degraded like ordinary photos (black and white, small, blurred, JPEG).

    .venv/bin/python scripts/robustness.py default runs/full --split holdout --limit 600

Each degradation is applied to the 178x218 aligned image with PIL, before the model's own resize,
as a real photo would be: `gray` (black and white), `face64` / `face40` (the aligned crop only 64
or 40 px wide, i.e. a face box of about 32 or 20 px, scaled back up), `blur2` (Gaussian, sigma 2
px), `jpeg20` (JPEG quality 20) and `swap190` (rows 190-217, neck and collar, pasted from another
image of the sample of the other sex with the same necktie, necklace and beard labels; images
without such a partner stay clean). Every model sees the same images; figures use threshold 0.5.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageFilter

from faceattr.checkpoint import load_checkpoint, read_metadata, resolve_checkpoint
from faceattr.data import load_celeba
from faceattr.data.augment import COLLAR_ROW, context_columns, swap_collars
from faceattr.data.transforms import ALIGNED_SIZE, Preprocess, normalize_batch, prepare_image
from faceattr.evaluate.metrics import metric_block
from faceattr.runtime import logits_to_probs, predict_logits


def _small(width: int) -> Callable[[Image.Image], Image.Image]:
    def f(img: Image.Image) -> Image.Image:
        height = round(width * ALIGNED_SIZE[0] / ALIGNED_SIZE[1])
        return img.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None).resize(
            img.size, Image.Resampling.BILINEAR)
    return f


def _jpeg(quality: int) -> Callable[[Image.Image], Image.Image]:
    def f(img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        return Image.open(buf).convert("RGB")
    return f


DEGRADATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "clean": lambda img: img,
    "gray": lambda img: img.convert("L").convert("RGB"),
    "face64": _small(64),
    "face40": _small(40),
    "blur2": lambda img: img.filter(ImageFilter.GaussianBlur(2)),
    "jpeg20": _jpeg(20),
}


def _swap_clothes(images: list[Image.Image], labels: np.ndarray, attrs: list[str]) -> list[Image.Image]:
    """Every image gets rows COLLAR_ROW.. of an opposite-sex partner from the sample (seeded)."""
    x = np.stack([np.asarray(img) for img in images])
    male, keep = context_columns(attrs)
    if male is None:
        raise SystemExit("swap190 needs Male among the models' attributes")
    y, _ = swap_collars(x, labels, COLLAR_ROW / x.shape[1], male=male, keep=keep)
    return [Image.fromarray(a) for a in y]


NAMES = [*DEGRADATIONS, "swap190"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="checkpoints, run folders or shipped names (same attributes)")
    ap.add_argument("--data-root", default="../shared/celeba")
    ap.add_argument("--split", default="holdout")
    ap.add_argument("--limit", type=int, default=600, help="seeded sample of the split (0: every image)")
    ap.add_argument("--degradations", nargs="+", default=NAMES, choices=NAMES)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    paths = [resolve_checkpoint(m) for m in args.models]
    metas = [read_metadata(p) for p in paths]
    attrs = list(metas[0]["attributes"])
    cfg = metas[0].get("config") or {}
    data = load_celeba(args.data_root, split=args.split, attributes=attrs, limit=args.limit,
                       seed=int(cfg.get("seed", 0)),
                       holdout_fraction=float((cfg.get("data") or {}).get("holdout_fraction", 0.1)))
    labels = np.asarray(data.labels, dtype=np.float32)
    sources = [Image.open(p).convert("RGB") for p in data.paths]
    models = [load_checkpoint(p)[0] for p in paths]
    print(f"{len(labels)} {args.split} images; mean accuracy / mean balanced accuracy / Male accuracy at 0.5")
    print(f"{'degradation':<12}" + "".join(f"{m[-34:]:>36}" for m in args.models))
    for name in args.degradations:
        if name == "swap190":
            degraded = _swap_clothes(sources, labels, attrs)
        else:
            degraded = [DEGRADATIONS[name](img) for img in sources]
        cells = []
        prepared: dict[str, np.ndarray] = {}  # models that share a preprocessing share its input
        for model, meta in zip(models, metas, strict=True):
            pre = Preprocess.from_dict(meta["preprocess"])
            key = json.dumps(meta["preprocess"], sort_keys=True)
            if key not in prepared:
                prepared[key] = np.stack([prepare_image(img, pre) for img in degraded])
            x = prepared[key]
            logits = predict_logits(model, x, lambda t, pre=pre: normalize_batch(t, pre))
            probs = logits_to_probs(torch.from_numpy(logits), meta.get("output", "sigmoid")).numpy()
            b = metric_block(labels, probs, attrs, 0.5)
            cells.append(f"{b['mean_accuracy']:.4f} / {b['mean_balanced_accuracy']:.4f} / "
                         f"{b['per_attribute']['Male']['accuracy']:.4f}")
        print(f"{name:<12}" + "".join(f"{c:>36}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
