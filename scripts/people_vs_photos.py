"""More people or more photos of each? Train member 2's recipe on two sets of the same size, scored
on the same holdout: K photos each of every training person who has K, and one photo each of as
many different people.

    .venv/bin/python scripts/people_vs_photos.py --per-person 3

The learning curve (configs/sweeps/learning_curve.toml) adds people and photos together. All of
CelebA has about 20 photos per person against this subset's 2.7, so its extra images are mostly
more photos of people already seen; this asks what such photos are worth against new people.
Each set is a folder in the official layout (symlinked images, restricted annotation files) that
also holds every holdout image, so the holdout (chosen by a hash of the identity) stays the same.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

# This folder's learning_curve.py: the same four figures, computed one way for both scripts.
from learning_curve import TARGETS, figures

from faceattr.config import load_config
from faceattr.data import load_celeba
from faceattr.train import fit

RECIPE = Path(__file__).resolve().parent.parent / "configs/candidates/mobilenet_v2_cached.toml"


def write_root(root: Path, src: Path, names: list[str]) -> Path:
    """An official-layout folder holding `names` (symlinks into `src`) with their annotation rows."""
    images = root / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    keep = set(names)
    for n in names:
        link = images / n
        if not link.exists():
            os.symlink((src / "img_align_celeba" / n).resolve(), link)
    with open(src / "list_attr_celeba.txt", encoding="utf-8") as f:
        f.readline()
        header = f.readline()
        rows = [line for line in f if line.split(maxsplit=1)[0] in keep]
    (root / "list_attr_celeba.txt").write_text(f"{len(rows)}\n{header}{''.join(rows)}", encoding="utf-8")
    for name in ("list_eval_partition.txt", "identity_CelebA.txt"):
        with open(src / name, encoding="utf-8") as f:
            lines = [line for line in f if line.split(maxsplit=1)[0] in keep]
        (root / name).write_text("".join(lines), encoding="utf-8")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=Path("../shared/celeba"))
    ap.add_argument("--out", type=Path, default=Path("runs/people_vs_photos"))
    ap.add_argument("--per-person", type=int, default=3, help="photos of each person in the first set")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = load_config(RECIPE)
    hold = load_celeba(args.data_root, split="holdout", holdout_fraction=cfg.data.holdout_fraction, seed=cfg.seed)
    train = load_celeba(args.data_root, split="train", holdout_fraction=cfg.data.holdout_fraction, seed=cfg.seed)
    names = np.array(train.filenames)
    ids = np.asarray(train.identities)
    rng = np.random.default_rng(args.seed)

    people, counts = np.unique(ids, return_counts=True)
    deep = [rng.choice(np.flatnonzero(ids == p), args.per_person, replace=False)
            for p in people[counts >= args.per_person]]
    photos = np.concatenate(deep)
    n = len(photos)
    if n > len(people):
        raise SystemExit(f"{n} images in the first set but only {len(people)} people for the second; lower --per-person")
    wide = np.array([rng.choice(np.flatnonzero(ids == p)) for p in rng.choice(people, n, replace=False)])
    # Folder names carry the set's size too, so runs with another --per-person never reuse these.
    sets = {f"{args.per_person}_photos_each": photos, f"1_photo_each_n{n}": wide}
    holdout_names = list(hold.filenames)

    print(f"holdout: {len(hold)} images of {len(set(hold.identities))} people; recipe {RECIPE.name}, seed {cfg.seed}")
    print(f"{'set':<18} {'images':>6} {'people':>6} " + " ".join(f"{k:>9}" for k in TARGETS))
    for name, rows in sets.items():
        root = write_root(args.out / name / "data", args.data_root, sorted(names[rows].tolist() + holdout_names))
        run = args.out / name / "run"
        if not (run / "best.safetensors").is_file():
            fit(load_config(RECIPE, {"data.root": str(root), "out": str(run), "progress": "false"}))
        row = figures(run, str(args.data_root), "holdout")
        print(f"{name:<18} {len(rows):>6} {len(set(ids[rows])):>6} " + " ".join(f"{row[k]:>9.4f}" for k in TARGETS))


if __name__ == "__main__":
    main()
