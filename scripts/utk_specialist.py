"""The issue's reference point on this project's own UTKFace split: a plain UTKFace-only specialist.

Issue 15 quotes "a plain 2-epoch fine-tune of ImageNet MobileNetV2 at 128 px on the UTKFace chips alone
(gender + age, fed the chips as they are)" at 0.970 adults on its own held-back photos. This script
trains exactly that on faceattr's UTKFace train split (DATETIME blocks, seed 0) and scores it on the
valid split, so the default model's figures can be read against it. `--size` changes the pixels the
chip is seen at (faceattr's full-frame members see a chip at about 72 px of their 160x128 input), so
one run per size measures what resolution alone is worth.

    python scripts/utk_specialist.py --size 128 --epochs 2 --json runs/specialist128.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from faceattr.data.utkface import AGE_BANDS, RACES, load_utkface
from faceattr.evaluate.groups import group_metrics

logger = logging.getLogger("utk_specialist")


def decode(paths: list[Path], size: int) -> np.ndarray:
    """Every chip as it is, resized to size x size, as uint8 [N, size, size, 3]."""
    def one(p: Path) -> np.ndarray:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR, reducing_gap=None))
    with ThreadPoolExecutor(2) as pool:
        return np.stack(list(pool.map(one, paths)))


def to_input(x: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> ImageNet-normalised float NCHW."""
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (t - mean) / std


def report(p_male: np.ndarray, age_pred: np.ndarray, male: np.ndarray, age: np.ndarray, race: np.ndarray) -> dict:
    """Gender accuracy by the issue's groups (threshold 0.5) and age MAE: `faceattr evaluate`'s own slices."""
    g = group_metrics(male, p_male, race, age, threshold=0.5, race_names=RACES, bands=AGE_BANDS, age_pred=age_pred)
    head = g["headline"]
    out = {k: head[k]["gender_accuracy"] for k in ("adults", "adult_women", "adult_men", "age_70_plus", "under_15")}
    out.update(all_ages=g["overall"]["gender_accuracy"], age_mae=g["overall"]["age_mae"])
    out.update({f"adults_{name}": s["gender_accuracy"] for name, s in head["adult_race"].items()})
    return {k: round(float(v), 4) for k, v in out.items()}


def main() -> None:
    """Train and score one specialist."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="../shared/utkface")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--split", default="valid", help="held-back split(s) to score, comma-separated: valid, test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.manual_seed(args.seed)
    t0 = time.time()
    train = load_utkface(args.root, "train")
    xtr = decode(train.paths, args.size)
    logger.info("decoded %d chips at %d px in %.0f s", len(xtr), args.size, time.time() - t0)
    net = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")
    net.classifier[1] = torch.nn.Linear(1280, 2)  # gender logit, standardised age
    steps = args.epochs * (len(xtr) // args.batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.1)
    ytr = torch.from_numpy(np.stack([train.male, (train.age - 35) / 20], 1)).float()
    gen = torch.Generator().manual_seed(args.seed)
    step = 0
    net.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(xtr), generator=gen)
        for b in range(len(xtr) // args.batch_size):
            idx = order[b * args.batch_size:(b + 1) * args.batch_size].numpy()
            x = to_input(xtr[idx])
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip] = x[flip].flip(-1)
            out = net(x)
            y = ytr[idx]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], y[:, 0]) + \
                torch.nn.functional.smooth_l1_loss(out[:, 1], y[:, 1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                logger.info("epoch %d step %d/%d loss %.4f (%.0f s)", epoch, step, steps, loss.item(), time.time() - t0)
    net.eval()
    res: dict = {"size": args.size, "epochs": args.epochs, "train_seconds": round(time.time() - t0)}
    for split in args.split.split(","):
        held = load_utkface(args.root, split)
        xte = decode(held.paths, args.size)
        with torch.no_grad():
            out = torch.cat([net(to_input(xte[b:b + 256])) for b in range(0, len(xte), 256)]).numpy()
        res[split] = report(1 / (1 + np.exp(-out[:, 0])), np.clip(35 + 20 * out[:, 1], 1, 100), held.male, held.age, held.race)
        res[split]["n"] = len(xte)
    print(json.dumps(res))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
