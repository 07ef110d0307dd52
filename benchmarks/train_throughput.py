"""Training throughput: faceattr's loop (decode-once uint8 cache + batched augmentation) against a
plain torchvision DataLoader that decodes and augments every JPEG at every step, on the same model,
images, batch size and threads. Prints both in one run.

    .venv/bin/python benchmarks/train_throughput.py --data-root ../shared/celeba --images 1024
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/celeba")
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--image-size", nargs=2, type=int, default=[160, 128])
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for the baseline")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from faceattr.config import load_config
    from faceattr.train import prepare_run, train_one_epoch
    from faceattr.train.loop import _make_optimizer

    base = {
        "data.root": args.data_root, "data.limit": args.images, "data.val_split": "none",
        "model.name": args.model, "model.image_size": args.image_size, "batch_size": args.batch_size,
        "epochs": 1, "progress": False, "threads": args.threads, "data.workers": args.workers,
    }
    cfg = load_config(None, base)
    t0 = time.perf_counter()
    run = prepare_run(cfg)  # builds (or reopens) the decode-once cache
    t_cache = time.perf_counter() - t0
    opt = _make_optimizer(run, phase_frozen=False)
    train_one_epoch(run, opt, 0, start_step=0, global_step=0)  # warm-up epoch (allocator, page cache)
    t0 = time.perf_counter()
    _, steps, _ = train_one_epoch(run, opt, 1, start_step=0, global_step=0)
    ours = steps * args.batch_size / (time.perf_counter() - t0)

    # The CPU recipe of the default model: frozen first stages computed once (image + mirror).
    cfg_frozen = load_config(None, {**base, "model.finetune_stages": 2, "model.cache_frozen": True})
    t0 = time.perf_counter()
    run_f = prepare_run(cfg_frozen)
    t_features = time.perf_counter() - t0
    opt_f = _make_optimizer(run_f, phase_frozen=False)
    train_one_epoch(run_f, opt_f, 0, start_step=0, global_step=0)
    t0 = time.perf_counter()
    _, steps_f, _ = train_one_epoch(run_f, opt_f, 1, start_step=0, global_step=0)
    frozen = steps_f * args.batch_size / (time.perf_counter() - t0)

    # Baseline: the usual per-step pipeline (PIL decode + torchvision transforms in DataLoader workers).
    from torchvision import transforms as T

    from faceattr.data import load_celeba
    from faceattr.models import create_model

    split = load_celeba(args.data_root, split="train", limit=args.images, seed=0)
    pre = run.preprocess
    tf = T.Compose([
        T.Resize(tuple(args.image_size)), T.RandomResizedCrop(tuple(args.image_size), scale=(0.81, 1.0), ratio=(0.75, 1.33)),
        T.RandomHorizontalFlip(), T.RandomRotation(10), T.ColorJitter(0.15, 0.15), T.ToTensor(),
        T.Normalize(pre.mean, pre.std),
    ])

    class Plain(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(split)

        def __getitem__(self, i: int):  # noqa: ANN204
            with Image.open(split.paths[i]) as im:
                return tf(im.convert("RGB")), torch.from_numpy(split.labels[i])

    model = create_model(args.model, num_outputs=split.labels.shape[1], pretrained=False, dropout=0.2)
    model.train()
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    crit = torch.nn.BCEWithLogitsLoss()
    loader = torch.utils.data.DataLoader(Plain(), batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, persistent_workers=args.workers > 0)

    def epoch() -> int:
        n = 0
        for x, y in loader:
            loss = crit(model(x), y)
            opt2.zero_grad()
            loss.backward()
            opt2.step()
            n += len(x)
        return n

    epoch()  # warm-up
    t0 = time.perf_counter()
    n = epoch()
    base = n / (time.perf_counter() - t0)

    print(f"model {args.model} at {args.image_size[0]}x{args.image_size[1]}, batch {args.batch_size}, "
          f"{args.images} images, {args.threads} torch threads, {torch.get_num_threads()} in use")
    print(f"{'pipeline':<48}{'images/s':>10}")
    print(f"{'faceattr (uint8 cache + batched augment)':<48}{ours:>10.1f}")
    print(f"{'plain DataLoader (JPEG decode per step, ' + str(args.workers) + ' workers)':<48}{base:>10.1f}")
    print(f"{'faceattr cache_frozen (last 2 stages train)':<48}{frozen:>10.1f}")
    print(f"speed-up x{ours / base:.2f} (full network), x{frozen / base:.2f} (cache_frozen, a different recipe); "
          f"one-time cache build/reopen {t_cache:.1f}s, frozen-feature pass {t_features:.1f}s")
    import os

    print(f"load average at the end: {os.getloadavg()[0]:.1f} (figures are noisy when other jobs run)")


if __name__ == "__main__":
    main()
