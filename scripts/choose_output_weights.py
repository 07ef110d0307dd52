"""Choose how much each ensemble member counts for gender (Male) and age, on splits nobody trained on.

    .venv/bin/python scripts/choose_output_weights.py runs/utk_member0 runs/utk_member1 runs/utk_member3

For every weight of the LAST member in a grid (the others share the rest equally), it prints on the
CelebA holdout (identity-disjoint) Male accuracy, and on the UTKFace valid split (DATETIME blocks, never
trained on) gender accuracy for adults (15+), adult women, the worst race group of adults, 70+ and under
15, and age MAE: the figures issue 15 sets targets for, so the choice can be made on valid before the
test split is looked at. UTKFace faces are framed as in training (ChipFrame, no detection) for speed;
`faceattr evaluate` on the test split measures the shipped result through predict's detect-and-align path.
Each member's logits are computed once per split and kept in --cache.

`--male-thresholds` prints, for the plain mean of all the members, the same figures for Male thresholds
from 0.5 up: where UTKFace's adult women and men are about as often wrong, and CelebA's Male holds.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

GRID = (0.0, 1 / 3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def member_logits(path: Path, split: str, args: argparse.Namespace) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(logits, labels) of one checkpoint on 'holdout' (CelebA: attributes only) or 'utk' (UTKFace valid: with age), cached."""
    import torch

    from faceattr.checkpoint import load_checkpoint, read_metadata
    from faceattr.data.cache import build_cache
    from faceattr.data.transforms import Preprocess, normalize_batch
    from faceattr.data.utkface import ChipFrame, load_utkface
    from faceattr.runtime import predict_logits

    if split == "holdout":  # CelebA: the same logits (and cache) as scripts/ensemble_search.py
        from ensemble_search import member_logits as celeba_logits

        opts = argparse.Namespace(data_root=args.celeba, flip=args.flip, grayscale=False)
        logits, labels, attrs, _ = celeba_logits(path, "holdout", opts, args.cache)
        return logits, {"male": labels[:, attrs.index("Male")]}
    meta = read_metadata(path)
    landmarks = getattr(args, "utk_landmarks", "") or ""
    cfg = meta.get("config") or {}
    # A member trained on chips warped straight into its input (`native = true`) is scored on them the same way.
    native = any(s.get("kind") == "utkface" and s.get("native") for s in (cfg.get("data") or {}).get("sources") or [])
    key = f"{path.resolve()}|{path.stat().st_mtime_ns}|{split}|{args.flip}" + (f"|{landmarks}" if landmarks else "")
    key += "|native" if native else ""
    out = args.cache / f"w-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
    if out.is_file():
        z = np.load(out)
        return z["logits"], {k[6:]: z[k] for k in z.files if k.startswith("label_")}
    pre = Preprocess.from_dict(meta["preprocess"])
    utk = load_utkface(args.utkface, "valid", seed=int(cfg.get("seed", 0)))
    # With a landmarks file (scripts/utk_landmarks.py) the chips are framed as predict frames them.
    images = build_cache(utk.paths, pre, frame=ChipFrame(landmarks=landmarks, native=native)).images
    labels = {"male": utk.male, "age": utk.age, "race": utk.race}
    torch.set_grad_enabled(False)
    model, _ = load_checkpoint(path)
    logits = predict_logits(model, images, lambda x: normalize_batch(x, pre), flip=args.flip)
    args.cache.mkdir(parents=True, exist_ok=True)
    np.savez(out, logits=logits, **{f"label_{k}": v for k, v in labels.items()})
    return logits, labels


def figures(male_logit: np.ndarray, age_out: np.ndarray | None, labels: dict[str, np.ndarray],
            age_scale: tuple[float, float]) -> dict[str, float]:
    """The issue's headline figures for one weighting."""
    from faceattr.data.utkface import RACES

    right = (male_logit >= 0) == (labels["male"] >= 0.5)
    if "age" not in labels:
        return {"celeba_male": float(right.mean())}
    age, race = labels["age"], labels["race"]
    adult = age >= 15
    worst = min((float(right[adult & (race == r)].mean()), name) for r, name in enumerate(RACES)
                if (adult & (race == r)).sum() >= 30)
    years = np.clip(age_scale[0] + age_scale[1] * age_out, 1.0, 100.0) if age_out is not None else None
    return {
        "adults": float(right[adult].mean()),
        "women": float(right[adult & (labels["male"] < 0.5)].mean()),
        "worst_race": worst[0],
        "worst_race_name": worst[1],  # type: ignore[dict-item]
        "70+": float(right[age >= 70].mean()),
        "under15": float(right[~adult].mean()),
        "age_mae": float(np.abs(years - age).mean()) if years is not None else float("nan"),
    }


def main() -> None:
    """Print one row per weight of the last member, for Male and for age."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--celeba", default="../shared/celeba")
    ap.add_argument("--utkface", default="../shared/utkface")
    ap.add_argument("--flip", action="store_true", help="mirror-average each member's logits")
    ap.add_argument("--cache", type=Path, default=Path("runs/.ensemble_logits"))
    ap.add_argument("--male-thresholds", action="store_true", help="also scan the Male threshold of the equal-weight mean")
    args = ap.parse_args()

    from faceattr.checkpoint import read_metadata, resolve_checkpoint

    paths = [resolve_checkpoint(c) for c in args.checkpoints]
    metas = [read_metadata(p) for p in paths]
    male = list(metas[0]["attributes"]).index("Male")
    age_scale = (float(metas[0]["age"]["mean"]), float(metas[0]["age"]["std"]))
    celeba = [member_logits(p, "holdout", args) for p in paths]
    utk = [member_logits(p, "utk", args) for p in paths]
    n = len(paths)
    print(f"{'last member weight':>18} {'CelebA Male':>11} {'adults':>7} {'women':>7} {'worst race':>16} {'70+':>6} "
          f"{'<15':>6} {'age MAE':>8}")
    for w in GRID:
        shares = np.array([(1 - w) / (n - 1)] * (n - 1) + [w])
        c = figures(sum(s * lg[:, male] for s, (lg, _) in zip(shares, celeba, strict=True)), None, celeba[0][1], age_scale)
        u = figures(sum(s * lg[:, male] for s, (lg, _) in zip(shares, utk, strict=True)),
                    sum(s * lg[:, -1] for s, (lg, _) in zip(shares, utk, strict=True)), utk[0][1], age_scale)
        print(f"{w:>18.2f} {c['celeba_male']:>11.4f} {u['adults']:>7.4f} {u['women']:>7.4f} "
              f"{u['worst_race']:>9.4f} {u['worst_race_name']:<6} {u['70+']:>6.3f} {u['under15']:>6.3f} {u['age_mae']:>8.2f}")
    print(f"(UTKFace valid, {len(utk[0][1]['male'])} faces framed as in training; CelebA holdout {len(celeba[0][1]['male'])} "
          f"faces; threshold 0.5; flip={args.flip}; the other members share 1 - w equally)")
    if args.male_thresholds:
        c_logit = np.mean([lg[:, male] for lg, _ in celeba], axis=0)
        u_logit = np.mean([lg[:, male] for lg, _ in utk], axis=0)
        labels = utk[0][1]
        adult_men = (labels["age"] >= 15) & (labels["male"] >= 0.5)
        print(f"\n{'Male threshold':>18} {'CelebA Male':>11} {'adults':>7} {'women':>7} {'men':>7} {'worst race':>16} {'70+':>6} {'<15':>6}")
        for t in (0.5, 0.55, 0.6, 0.65, 0.7, 0.75):
            shift = float(np.log(t / (1 - t)))  # threshold t on the probability is t's logit on the logit
            c = figures(c_logit - shift, None, celeba[0][1], age_scale)
            u = figures(u_logit - shift, None, labels, age_scale)
            men = float(((u_logit - shift >= 0) == (labels["male"] >= 0.5))[adult_men].mean())
            print(f"{t:>18.2f} {c['celeba_male']:>11.4f} {u['adults']:>7.4f} {u['women']:>7.4f} {men:>7.4f} "
                  f"{u['worst_race']:>9.4f} {u['worst_race_name']:<6} {u['70+']:>6.3f} {u['under15']:>6.3f}")


if __name__ == "__main__":
    main()
