"""Time to accuracy on a CPU (issue 16): minutes until faceattr's recipe and a plain recipe reach 89% and
90% mean accuracy (40 CelebA attributes) on faceattr's identity-disjoint holdout, in one run.

    .venv/bin/python benchmarks/time_to_accuracy.py                      # the full measurement
    .venv/bin/python benchmarks/time_to_accuracy.py --budget-minutes 2   # a short smoke run

Recipes, each in a fresh process, one after the other (so each one's peak memory is its own):
- plain: torchvision MobileNetV2 with ImageNet weights at 128x128, every layer trained, AdamW
  (lr 2e-3, weight decay 0.01), one-cycle, 2 epochs, batch 64, random horizontal flips, a
  DataLoader with 2 workers decoding and resizing every JPEG at every step;
- faceattr: `--faceattr-config` (default configs/cpu_fast.toml) through faceattr's own loop
  (prepare_run + train_one_epoch; no checkpoint files written), its decode-once cache built cold in a
  temporary folder and counted;
- default (only when asked with --recipes): configs/default.toml with its epochs set by
  --default-epochs (2), the recipe the issue measured.

Both train on the CelebA train partition minus the holdout (holdout_fraction 0.1, seed 0) and are
scored on that holdout, averaging the logits of each image and its mirror. The clock counts
training only, from before any data preparation (cache build, frozen features, DataLoader start):
imports and process start are left out. The model is evaluated every --eval-every minutes of
training and at the end; the time to a mark is the training time up to the first evaluation at or
above it plus that one evaluation's own time. The other evaluations are reported apart and not
counted (they are the benchmark's, not the recipe's). Peak RSS is each process's ru_maxrss.

Target (issue 16): faceattr reaches each mark in at most half the plain recipe's time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKS = (0.89, 0.90)
PLAIN_SIZE = 128


def _now() -> float:
    """The benchmark's clock (a function, so tests can replace it)."""
    return time.perf_counter()


@dataclass
class Clock:
    """Training time: wall time since start minus the time spent in the benchmark's evaluations."""

    start: float = field(default_factory=lambda: _now())
    paused: float = 0.0

    def train_s(self) -> float:
        return _now() - self.start - self.paused


@dataclass
class Tracker:
    """Evaluates on schedule, keeps the checkpoints, stops at the budget."""

    clock: Clock
    evaluate: Any  # () -> (mean accuracy, Male accuracy)
    every_s: float
    budget_s: float
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    images: int = 0
    next_s: float = 0.0

    def __post_init__(self) -> None:
        self.next_s = self.every_s

    def eval_now(self, final: bool = False) -> None:
        t = _now()
        train_s = self.clock.train_s()
        acc, male = self.evaluate()
        eval_s = _now() - t
        self.clock.paused += eval_s
        self.checkpoints.append({"train_s": round(train_s, 2), "eval_s": round(eval_s, 2), "images": self.images,
                                 "mean_accuracy": round(acc, 5), "male_accuracy": round(male, 5), "final": final})
        print(f"  [{self.checkpoints[-1]}]", file=sys.stderr, flush=True)

    def after_step(self, batch: int) -> bool:
        """Count a step's images; evaluate when due; True when the budget is spent."""
        self.images += batch
        now = self.clock.train_s()
        if now >= self.budget_s:
            return True
        if now >= self.next_s:
            self.eval_now()
            while self.next_s <= self.clock.train_s():
                self.next_s += self.every_s
        return False


class _Budget(Exception):
    """Raised from a step hook to leave faceattr's epoch when the time budget is spent."""


def _accuracy(logits: Any, labels: Any, attributes: list[str]) -> tuple[float, float]:
    import numpy as np

    hit = (np.asarray(logits) > 0) == (np.asarray(labels) > 0.5)
    per = hit.mean(axis=0)
    return float(per.mean()), float(per[attributes.index("Male")]) if "Male" in attributes else float("nan")


class _Jpegs:
    """The plain recipe's dataset: open, decode and transform one JPEG per item, at every step."""

    def __init__(self, split: Any, tf: Any) -> None:
        self.split, self.tf = split, tf

    def __len__(self) -> int:
        return len(self.split.paths)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        import numpy as np
        import torch
        from PIL import Image

        with Image.open(self.split.paths[i]) as im:
            return self.tf(im.convert("RGB")), torch.from_numpy(np.asarray(self.split.labels[i], dtype=np.float32))


def run_plain(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    from torchvision import models
    from torchvision import transforms as T

    from faceattr.data import load_celeba

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train = load_celeba(args.data_root, split="train", holdout_fraction=0.1, seed=0, limit=args.limit)
    hold = load_celeba(args.data_root, split="holdout", holdout_fraction=0.1, seed=0, limit=args.holdout_limit)
    norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    train_tf = T.Compose([T.Resize((PLAIN_SIZE, PLAIN_SIZE)), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    eval_tf = T.Compose([T.Resize((PLAIN_SIZE, PLAIN_SIZE)), T.ToTensor(), norm])

    clock = Clock()
    model = models.mobilenet_v2(weights=models.MobileNet_V2_Weights.IMAGENET1K_V1)
    model.classifier[1] = torch.nn.Linear(model.last_channel, len(train.attributes))
    loader = torch.utils.data.DataLoader(_Jpegs(train, train_tf), batch_size=64, shuffle=True, drop_last=True,
                                         num_workers=args.workers, persistent_workers=args.workers > 0,
                                         generator=torch.Generator().manual_seed(0))
    eval_loader = torch.utils.data.DataLoader(_Jpegs(hold, eval_tf), batch_size=64, num_workers=args.workers)
    epochs = args.plain_epochs
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * len(loader))
    crit = torch.nn.BCEWithLogitsLoss()

    @torch.inference_mode()
    def evaluate() -> tuple[float, float]:
        model.eval()
        out = []
        for x, _ in eval_loader:
            out.append(((model(x) + model(torch.flip(x, dims=[3]))) / 2).numpy())
        model.train()
        return _accuracy(np.concatenate(out), hold.labels, list(hold.attributes))

    tracker = Tracker(clock, evaluate, args.eval_every * 60, args.budget_minutes * 60)
    setup_s = clock.train_s()
    model.train()
    stop = False
    for _ in range(epochs):
        for x, y in loader:
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if tracker.after_step(len(x)):
                stop = True
                break
        if stop:
            break
    train_s = clock.train_s()
    tracker.eval_now(final=True)
    return {"recipe": "plain", "describe": f"torchvision MobileNetV2 {PLAIN_SIZE}x{PLAIN_SIZE}, ImageNet weights, full "
            f"fine-tune, AdamW one-cycle, {epochs} epochs, flip, JPEG DataLoader ({args.workers} workers)",
            "setup_s": round(setup_s, 2), "train_s": round(train_s, 2), "images": tracker.images,
            "train_images": len(train.paths), "checkpoints": tracker.checkpoints}


def run_faceattr(args: argparse.Namespace, config: str, overrides: dict[str, Any], name: str) -> dict[str, Any]:
    from faceattr.config import load_config
    from faceattr.runtime import predict_logits
    from faceattr.train.loop import _make_optimizer, _normalizer, _total_steps, prepare_run, train_one_epoch

    cache_dir = tempfile.mkdtemp(prefix="faceattr-tta-cache-")  # cold: the cache build is part of the time
    out = tempfile.mkdtemp(prefix="faceattr-tta-run-")
    cfg = load_config(config, {**overrides, "data.root": args.data_root, "data.cache_dir": cache_dir,
                               "data.holdout_fraction": 0.1, "data.val_split": "holdout", "data.workers": args.workers,
                               "data.limit": args.limit, "data.val_limit": args.holdout_limit,
                               "seed": 0, "threads": args.threads, "progress": False, "device": "cpu", "out": out})
    clock = Clock()
    run = prepare_run(cfg)
    phase = cfg.model.freeze_epochs > 0
    opt = _make_optimizer(run, phase)

    def evaluate() -> tuple[float, float]:
        logits = predict_logits(run.model, run.val_images, _normalizer(run), batch_size=cfg.eval_batch_size,
                                device=run.device, flip=True)
        run.model.train()
        return _accuracy(logits, run.val_labels, run.attributes)

    tracker = Tracker(clock, evaluate, args.eval_every * 60, args.budget_minutes * 60)
    setup_s = clock.train_s()

    def on_step(epoch: int, step: int, global_step: int) -> None:
        if tracker.after_step(cfg.batch_size):
            raise _Budget

    global_step = 0
    try:
        for epoch in range(cfg.epochs):
            if global_step >= _total_steps(run):
                break
            if (epoch < cfg.model.freeze_epochs) != phase:
                phase = not phase
                opt = _make_optimizer(run, phase)
            _, global_step, _ = train_one_epoch(run, opt, epoch, global_step=global_step, on_step=on_step)
    except _Budget:
        pass
    train_s = clock.train_s()
    tracker.eval_now(final=True)
    over = " ".join(f"{k}={v}" for k, v in overrides.items())
    return {"recipe": name, "describe": f"faceattr {config}{' ' + over if over else ''}: {cfg.model.name} "
            f"{cfg.model.image_size[0]}x{cfg.model.image_size[1]}, finetune_stages {cfg.model.finetune_stages}, "
            f"cache_frozen {cfg.model.cache_frozen}, {cfg.epochs} epochs",
            "setup_s": round(setup_s, 2), "train_s": round(train_s, 2), "images": tracker.images,
            "train_images": len(run.train_labels), "checkpoints": tracker.checkpoints}


def _child(args: argparse.Namespace) -> int:
    if args.child == "plain":
        res = run_plain(args)
    elif args.child == "faceattr":
        res = run_faceattr(args, args.faceattr_config, dict(s.split("=", 1) for s in args.set), "faceattr")
    elif args.child == "default":
        res = run_faceattr(args, "configs/default.toml", {"epochs": args.default_epochs}, "default")
    else:
        raise SystemExit(f"unknown recipe {args.child}")
    res["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    # DataLoader or cache-build worker processes (ended by now): the largest one's peak, reported apart.
    res["worker_rss_mib"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    print("RESULT " + json.dumps(res), flush=True)
    return 0


def _time_to(res: dict[str, Any], mark: float) -> float | None:
    for c in res["checkpoints"]:
        if c["mean_accuracy"] >= mark:
            return c["train_s"] + c["eval_s"]
    return None


def _fmt_min(s: float | None) -> str:
    return "not reached" if s is None else f"{s / 60:.2f}"


def _minutes(s: float | None) -> str:
    return "not reached" if s is None else f"{s / 60:.2f} min"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/celeba")
    ap.add_argument("--recipes", nargs="+", default=["plain", "faceattr"], choices=["plain", "faceattr", "default"])
    ap.add_argument("--faceattr-config", default="configs/cpu_fast.toml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the faceattr config")
    ap.add_argument("--plain-epochs", type=int, default=2)
    ap.add_argument("--default-epochs", type=int, default=2)
    ap.add_argument("--budget-minutes", type=float, default=30.0, help="stop each recipe after this much training time")
    ap.add_argument("--eval-every", type=float, default=0.5, help="minutes of training between evaluations")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in each recipe")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader / cache-build workers")
    ap.add_argument("--limit", type=int, default=0, help="train on a seeded sample of this many images (0: all; smoke runs)")
    ap.add_argument("--holdout-limit", type=int, default=0, help="score a seeded sample of the holdout (0: all)")
    ap.add_argument("--json", default="", help="also write the results here")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)

    results = []
    for recipe in args.recipes:
        cmd = [sys.executable, __file__, "--child", recipe, *[a for a in (argv if argv is not None else sys.argv[1:])]]
        print(f"running {recipe} ...", file=sys.stderr, flush=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        stdout, _ = proc.communicate()
        if proc.returncode != 0:
            print(f"{recipe} failed (exit {proc.returncode})", file=sys.stderr)
            return 1
        line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
        results.append(json.loads(line[len("RESULT "):]))

    print(f"machine: {platform.machine()} | os.cpu_count()={os.cpu_count()} | python {platform.python_version()} | "
          f"nice {os.nice(0)} | load average {os.getloadavg()[0]:.1f} at the end | budget {args.budget_minutes} min, "
          f"evaluation every {args.eval_every} min")
    print(f"{'recipe':<10}{'to 89% min':>12}{'to 90% min':>12}{'final acc':>11}{'Male':>8}{'img/s':>8}{'prep s':>8}"
          f"{'train min':>11}{'evals min':>11}{'peak RSS MiB':>14}{'workers MiB':>13}")
    for r in results:
        last = r["checkpoints"][-1]
        loop_s = r["train_s"] - r["setup_s"]
        evals = sum(c["eval_s"] for c in r["checkpoints"])
        print(f"{r['recipe']:<10}{_fmt_min(_time_to(r, MARKS[0])):>12}{_fmt_min(_time_to(r, MARKS[1])):>12}"
              f"{last['mean_accuracy']:>11.4f}{last['male_accuracy']:>8.4f}{r['images'] / max(loop_s, 1e-9):>8.1f}"
              f"{r['setup_s']:>8.1f}{r['train_s'] / 60:>11.2f}{evals / 60:>11.2f}{r['peak_rss_mib']:>14}"
              f"{r['worker_rss_mib']:>13}")
    for r in results:
        print(f"  {r['recipe']}: {r['describe']}; {r['train_images']} training images; accuracy by training minute: "
              + ", ".join(f"{c['train_s'] / 60:.1f}:{c['mean_accuracy']:.4f}" for c in r["checkpoints"]))
    by = {r["recipe"]: r for r in results}
    if "plain" in by and "faceattr" in by:
        for mark in MARKS:
            p, f = _time_to(by["plain"], mark), _time_to(by["faceattr"], mark)
            if f is None:
                verdict = "FAIL"
            elif p is None:
                verdict = "PASS (plain never reached it)"
            else:
                verdict = "PASS" if f <= p / 2 else "FAIL"
            ratio = "" if p is None or f is None else f", {f / p:.2f} x plain's time (target <= 0.50)"
            print(f"{verdict}  {mark:.0%}: faceattr {_minutes(f)}, plain {_minutes(p)}{ratio}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
