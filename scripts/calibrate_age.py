"""Fit a straight-line correction of a model's age output on UTKFace's valid split and write it into the model.

A regression trained with an L1-like loss on a skewed age distribution pulls its estimates towards the
middle (old people read young, children old). `years = mean + std * output` is the model's reading of
its age output; a least-absolute-deviation line `a + b * years` fitted on held-out faces is folded into
new `mean` and `std` in the checkpoint's metadata, so nothing else changes (graph, ONNX export, API).

    python scripts/calibrate_age.py runs/utk_ensemble/best.safetensors --utkface ../shared/utkface

The faces are framed as in training (ChipFrame, no detection) for speed; `faceattr evaluate` on the
test split then measures the result through predict's own detect-and-align path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    """Fit the line, print before/after MAE on the fitting split, update the checkpoint's metadata."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--utkface", type=Path, default=Path("../shared/utkface"))
    ap.add_argument("--split", default="valid")
    ap.add_argument("--dry-run", action="store_true", help="print the fit, leave the checkpoint as it is")
    args = ap.parse_args(argv)

    from PIL import Image
    from sklearn.linear_model import QuantileRegressor

    import faceattr
    from faceattr.checkpoint import read_metadata
    from faceattr.data.transforms import Preprocess
    from faceattr.data.utkface import ChipFrame, load_utkface
    from faceattr.infer.model import update_metadata  # keeps a current ONNX export beside it current

    meta = read_metadata(args.checkpoint)
    if not meta.get("age"):
        print(f"{args.checkpoint} has no age output", file=sys.stderr)
        return 2
    model = faceattr.load(args.checkpoint)
    data = load_utkface(args.utkface, args.split, seed=int((meta.get("config") or {}).get("seed", 0)))
    pre = Preprocess(size=(218, 178))
    crops = []
    for p in data.paths:
        with Image.open(p) as img:
            crops.append(ChipFrame()(img, pre))
    _, ages = model.predict_aligned_age(np.stack(crops))
    assert ages is not None
    mean, std = float(meta["age"]["mean"]), float(meta["age"]["std"])
    # predict's readings (clipped to 1..100, as users get them)
    raw = ages.astype(np.float64)
    fit = QuantileRegressor(quantile=0.5, alpha=0.0, solver="highs").fit(raw[:, None], data.age)
    a, b = float(fit.intercept_), float(fit.coef_[0])
    after = np.clip(a + b * raw, 1, 100)
    print(f"{args.split}: {len(raw)} faces; age MAE {np.abs(raw - data.age).mean():.3f} -> {np.abs(after - data.age).mean():.3f} "
          f"with years' = {a:.3f} + {b:.4f} x years")
    new = {"mean": round(a + b * mean, 4), "std": round(b * std, 4),
           "calibrated": {"split": f"utkface {args.split}", "n": len(raw), "intercept": round(a, 4), "slope": round(b, 5),
                          "before": {"mean": mean, "std": std}}}
    print(f"age mapping: mean {mean} -> {new['mean']}, std {std} -> {new['std']}")
    if not args.dry_run:
        update_metadata(args.checkpoint, {"age": new})
        print(f"updated {args.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
