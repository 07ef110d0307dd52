"""Score every combination of trained checkpoints as a logit-averaging ensemble, on the holdout and valid.

    .venv/bin/python scripts/ensemble_search.py runs/full runs/cached runs/efficientnet_lite0 \\
        --data-root ../shared/celeba

Each checkpoint's logits are computed once per split (cached in --cache as .npz), so scoring all
2^n - 1 subsets costs n forward passes. Choose on the holdout (identity-disjoint, never trained
on); valid is printed beside it for the record, not for choosing. Mean figures use threshold 0.5.

`cal_gain` asks whether per-attribute thresholds calibrated for accuracy would help on new people:
the first split's identities are halved at random (10 times, both ways), thresholds are calibrated
on one half and scored on the other, and the column is their mean accuracy minus that at 0.5.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import torch
from scipy.special import expit

from faceattr.checkpoint import load_checkpoint, read_metadata, resolve_checkpoint
from faceattr.data import load_celeba
from faceattr.data.cache import build_cache
from faceattr.data.transforms import Preprocess, grayscale_images, normalize_batch
from faceattr.evaluate.metrics import calibration_gain, metric_block
from faceattr.runtime import predict_logits

FIVE = ["Male", "Smiling", "Eyeglasses", "Blond_Hair", "Young"]


def member_logits(path: Path, split: str, args: argparse.Namespace, cache: Path) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """(logits [N, A], labels [N, A], attributes, identities [N]) of one checkpoint on one split, cached on disk."""
    meta = read_metadata(path)
    attrs = list(meta["attributes"])
    cfg = meta.get("config") or {}
    key = f"{path.resolve()}|{path.stat().st_mtime_ns}|{split}|{args.flip}" + ("|gray" if args.grayscale else "")
    out = cache / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
    if out.is_file():
        z = np.load(out)
        return z["logits"][:, : len(attrs)], z["labels"], attrs, z["identities"]
    data = load_celeba(args.data_root, split=split, attributes=attrs, seed=int(cfg.get("seed", 0)),
                       holdout_fraction=float((cfg.get("data") or {}).get("holdout_fraction", 0.1)))
    pre = Preprocess.from_dict(meta["preprocess"])
    images = build_cache(data.paths, pre).images
    if args.grayscale:
        images = grayscale_images(images)
    model, _ = load_checkpoint(path)
    logits = predict_logits(model, images, lambda x: normalize_batch(x, pre), flip=args.flip)[:, : len(attrs)]  # no age column
    labels = np.asarray(data.labels, dtype=np.float32)
    # Without an identity file every image counts as its own person.
    identities = np.arange(len(labels)) if data.identities is None else np.asarray(data.identities)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(out, logits=logits, labels=labels, identities=identities)
    return logits, labels, attrs, identities


def score(logits: np.ndarray, labels: np.ndarray, attrs: list[str]) -> dict[str, float]:
    """Headline figures at threshold 0.5 for averaged logits."""
    probs = expit(logits)
    block = metric_block(labels, probs, attrs, 0.5)
    cols = [attrs.index(a) for a in FIVE]
    exact5 = float(np.mean(np.all((probs[:, cols] >= 0.5) == (labels[:, cols] >= 0.5), axis=1)))
    return {
        "mean_acc": block["mean_accuracy"],
        "balanced": block["mean_balanced_accuracy"],
        "male": block["per_attribute"]["Male"]["accuracy"],
        "exact5": exact5,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--data-root", default="../shared/celeba")
    ap.add_argument("--splits", nargs="+", default=["holdout", "valid"])
    ap.add_argument("--flip", action="store_true", help="mirror-average each member's logits")
    ap.add_argument("--grayscale", action="store_true", help="score black-and-white copies of the images")
    ap.add_argument("--cache", type=Path, default=Path("runs/.ensemble_logits"))
    ap.add_argument("--json", type=Path, help="also write the table as JSON")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    paths = [resolve_checkpoint(c) for c in args.checkpoints]
    names = [str(c) for c in args.checkpoints]
    per_split = {s: [member_logits(p, s, args, args.cache) for p in paths] for s in args.splits}
    rows = []
    for k in range(1, len(paths) + 1):
        for combo in itertools.combinations(range(len(paths)), k):
            row: dict[str, object] = {"members": [names[i] for i in combo]}
            for s, members in per_split.items():
                attrs, labels = members[combo[0]][2], members[combo[0]][1]
                row[s] = score(np.mean([members[i][0] for i in combo], axis=0), labels, attrs)
            first = per_split[args.splits[0]]
            mean_logits = np.mean([first[i][0] for i in combo], axis=0)
            row["cal_gain"] = calibration_gain(first[combo[0]][1], expit(mean_logits), first[combo[0]][3])
            rows.append(row)
    rows.sort(key=lambda r: -r[args.splits[0]]["mean_acc"])  # type: ignore[index]
    head = "  ".join(f"{s + ' ' + m:>16}" for s in args.splits for m in ("mean_acc", "balanced", "male", "exact5"))
    print(f"{'members':<60} {head}  {'cal_gain':>9}")
    for r in rows:
        cells = "  ".join(f"{r[s][m]:>16.4f}" for s in args.splits for m in ("mean_acc", "balanced", "male", "exact5"))  # type: ignore[index]
        print(f"{' + '.join(r['members']):<60} {cells}  {r['cal_gain']:>+9.4f}")  # type: ignore[arg-type]
    print(f"(threshold 0.5; flip={args.flip}; grayscale={args.grayscale}; sorted by {args.splits[0]} mean accuracy)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
