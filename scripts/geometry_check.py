"""Does one framing serve every source? Gender (and age) of held-back faces, read three ways.

UTKFace chips and CelebA crops are framed differently; training places chips in CelebA's frame with
one fixed map (`ChipFrame`), and `predict` aligns every detected face to that frame. This script scores
a model on the same held-back faces
  1. as the training pipeline frames them (UTKFace: ChipFrame; CelebA: the aligned crop as it is),
  2. through `predict` (detect, align) on the file itself,
  3. through `predict` on a photo from neither source: the face pasted, smaller or larger, turned by
     up to 20 degrees, at a random place, into a 640x480 scene of smooth noise,
and prints accuracy (and age MAE) side by side. If the framing were source-specific, 2 and 3 would
fall behind 1.

    python scripts/geometry_check.py default --utkface ../shared/utkface --celeba ../shared/celeba --n 400
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def _scene(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`face` pasted into a 640x480 noise scene, scaled to a random 90-260 px width and turned up to 20 degrees."""
    import cv2

    h, w = 480, 640
    noise = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    canvas = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    fh, fw = face.shape[:2]
    scale = rng.uniform(90, 260) / fw
    angle = rng.uniform(-20, 20)
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.35, 0.65) * h
    m = cv2.getRotationMatrix2D((fw / 2, fh / 2), angle, scale)
    m[:, 2] += np.array([cx, cy]) - np.array([fw / 2, fh / 2])
    warped = cv2.warpAffine(face, m, (w, h), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(np.full((fh, fw), 255, np.uint8), m, (w, h))[..., None].astype(np.float32) / 255
    return (warped * alpha + canvas * (1 - alpha) + 0.5).astype(np.uint8)


def _score(name: str, male: np.ndarray, prob: list[float | None], age: np.ndarray | None, pred_age: list[float | None]) -> str:
    found = np.array([p is not None for p in prob])
    p = np.array([v if v is not None else np.nan for v in prob], dtype=float)
    acc = float(((p[found] >= 0.5) == (male[found] > 0.5)).mean()) if found.any() else float("nan")
    line = f"  {name:<34} faces {found.sum():4d}/{len(prob):<4d} gender acc {acc:.4f}"
    if age is not None and any(a is not None for a in pred_age):
        a = np.array([v if v is not None else np.nan for v in pred_age], dtype=float)
        line += f"  age MAE {np.nanmean(np.abs(a[found] - age[found])):.2f}"
    return line


def main(argv: list[str] | None = None) -> int:
    """Score the model the three ways on both sources and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="checkpoint path or shipped name")
    ap.add_argument("--utkface", type=Path, default=Path("../shared/utkface"))
    ap.add_argument("--celeba", type=Path, default=Path("../shared/celeba"))
    ap.add_argument("--n", type=int, default=400, help="faces per source (seeded sample of the held-back split)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from PIL import Image

    import faceattr
    from faceattr.data.celeba import load_celeba
    from faceattr.data.transforms import Preprocess
    from faceattr.data.utkface import ChipFrame, load_utkface

    model = faceattr.load(args.model)
    rng = np.random.default_rng(args.seed)
    frame_pre = Preprocess(size=(218, 178))
    utk = load_utkface(args.utkface, "test", limit=args.n, seed=0)
    holdout = load_celeba(args.celeba, split="holdout", holdout_fraction=0.1, seed=0, limit=args.n)
    male_col = holdout.attributes.index("Male")
    sets = [("UTKFace test", utk.paths, utk.male, utk.age, True),
            ("CelebA holdout", holdout.paths, holdout.labels[:, male_col], None, False)]
    print(f"model {args.model}: {args.n} faces per source, seed {args.seed}")
    for title, paths, male, age, is_chip in sets:
        framed, direct, scenes = [], [], []
        for p in paths:
            with Image.open(p) as img:
                rgb = np.asarray(img.convert("RGB"))
                crop = ChipFrame()(img, frame_pre) if is_chip else rgb
            framed.append(crop)
            direct.append(model.predict(rgb, max_faces=1))
            scenes.append(model.predict(_scene(rgb, rng), max_faces=1))
        j = model.attributes.index("Male")
        probs, ages = model.predict_aligned_age(np.stack(framed))
        ages_framed: list[float | None] = [None] * len(paths) if ages is None else [float(a) for a in ages]
        print(title)
        print(_score("as trained (framed, no detection)", male, [float(v) for v in probs[:, j]], age, ages_framed))
        for name, res in (("predict on the file", direct), ("predict on a pasted scene", scenes)):
            prob = [f[0].probabilities["Male"] if f and f[0].probabilities else None for f in res]
            pa = [f[0].age if f else None for f in res]
            print(_score(name, male, prob, age, pa))
    return 0


if __name__ == "__main__":
    sys.exit(main())
