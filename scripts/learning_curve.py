"""Print a learning curve from a finished `faceattr sweep configs/sweeps/learning_curve.toml`: the
model card's target figures against the number of training images, and a power-law fit of each
figure's error rate, extrapolated to the number of images that would reach its target.

    .venv/bin/python scripts/learning_curve.py runs/sweep-learning-curve --split holdout

The extrapolation assumes the error keeps falling as it did between the measured sizes (a power
law, error = c * n^-k, as in Hestness et al. 2017, "Deep Learning Scaling is Predictable,
Empirically"); it is a rough estimate, read it as an order of magnitude.
"""

from __future__ import annotations

import argparse
import math
import sys
import tomllib
from pathlib import Path

import numpy as np

from faceattr.data import load_celeba
from faceattr.evaluate import EvalConfig, evaluate_model

FIVE = ["Male", "Smiling", "Eyeglasses", "Blond_Hair", "Young"]
# (column, target) pairs from issue 5; the error rate is 1 - figure.
TARGETS = {"mean_acc": 0.92, "mean_bal": 0.85, "Male": 0.99, "exact5": 0.82}


def figures(run: Path, data_root: str, split: str) -> dict[str, float]:
    """Mean accuracy, mean balanced accuracy, Male accuracy and five-attribute exact match at 0.5."""
    ev = evaluate_model(EvalConfig(model=str(run), data_root=data_root, split=split, subgroups=[], progress=False))
    pred = ev.probs >= 0.5
    truth = ev.labels >= 0.5
    cols = [ev.attributes.index(a) for a in FIVE]
    return {
        "mean_acc": float(ev.result["mean_accuracy"]),
        "mean_bal": float(ev.result["mean_balanced_accuracy"]),
        "Male": float(ev.result["per_attribute"]["Male"]["accuracy"]),
        "exact5": float(np.all(pred[:, cols] == truth[:, cols], axis=1).mean()),
    }


def train_images(run: Path, data_root: str) -> int:
    """How many images the run trained on: its data.limit, else the whole train split it used."""
    with open(run / "config.toml", "rb") as f:
        cfg = tomllib.load(f)
    data = cfg["data"]
    if data.get("limit"):
        return int(data["limit"])
    split = load_celeba(data_root, split=data.get("train_split", "train"), holdout_fraction=data["holdout_fraction"],
                        seed=int(cfg.get("seed", 0)))
    return len(split)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path, help="sweep folder (runs/sweep-learning-curve)")
    ap.add_argument("--data-root", default="../shared/celeba")
    ap.add_argument("--split", default="holdout")
    ap.add_argument("--at", type=int, default=162_770,
                    help="also print the fitted figures at this many images (default: CelebA's whole train partition)")
    args = ap.parse_args()
    # Each run's size once (the whole-split run loads the split to count it), then sorted by it.
    sized = sorted((train_images(p.parent, args.data_root), p.parent) for p in args.sweep.glob("*/best.safetensors"))
    if len(sized) < 2:
        sys.exit(f"{args.sweep}: need at least two finished runs, found {len(sized)}")
    ns = np.array([n for n, _ in sized], dtype=np.float64)
    runs = [r for _, r in sized]
    rows = [figures(r, args.data_root, args.split) for r in runs]
    print(f"{args.split} split, threshold 0.5; one run per size (seed 0)")
    print(f"{'run':<10} {'images':>7} " + " ".join(f"{k:>9}" for k in TARGETS))
    for run, n, row in zip(runs, ns, rows, strict=True):
        print(f"{run.name:<10} {int(n):>7} " + " ".join(f"{row[k]:>9.4f}" for k in TARGETS))
    print("\npower law on the error rate (1 - figure) over these sizes:")
    for key, target in TARGETS.items():
        err = np.array([1.0 - row[key] for row in rows])
        slope, icpt = np.polyfit(np.log(ns), np.log(err), 1)
        per_doubling = 1.0 - 2.0**slope
        if slope >= 0:
            print(f"  {key:<9} error does not fall with more images here (exponent {slope:+.3f})")
            continue
        need = math.exp((math.log(1.0 - target) - icpt) / slope)
        at = 1.0 - math.exp(icpt + slope * math.log(args.at))
        print(f"  {key:<9} error x{2.0**slope:.3f} per doubling ({per_doubling:.1%} less); "
              f"target {target} at about {need:,.0f} images ({need / ns[-1]:.1f}x the largest run); "
              f"{at:.4f} at {args.at:,}")


if __name__ == "__main__":
    main()
