"""Training throughput: faceattr's loop (decode-once uint8 cache + batched augmentation) against a
plain torchvision DataLoader that decodes and augments every JPEG at every step, on the same model,
images, batch size and threads. Prints both in one run.

    .venv/bin/python benchmarks/train_throughput.py --data-root ../shared/celeba --images 1024

With `--device cuda` it measures, in one run on one GPU, resnet18, resnet50 and mobilenet_v2 at 224
and 128 px: the plain pipeline (JPEG decode + torchvision transforms in DataLoader workers, pinned
memory) against faceattr's (uint8 rows to the GPU, augmentation and normalisation there), both with
bf16 autocast, channels_last and a fused AdamW, plus the model alone on ready-made GPU tensors (the
ceiling). The GPU's busy share is sampled with torch.cuda.utilization() where pynvml is installed,
and always estimated as faceattr's images/s over the model alone's. Without a CUDA GPU it stops
with an error. Target (issue 16): ResNet-50 at 224 px >= 3,500 img/s end to end on one H100 and
>= 5x the plain pipeline.

    .venv/bin/python benchmarks/train_throughput.py --device cuda --data-root ../shared/celeba
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import torch
from PIL import Image

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/celeba")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cpu: one model, faceattr vs plain vs cache_frozen; cuda: the GPU grid (issue 16)")
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--image-size", nargs=2, type=int, default=[160, 128])
    ap.add_argument("--images", type=int, default=None, help="images per epoch (default: 1024 on cpu, 8192 on cuda)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 64 on cpu, 256 on cuda")
    ap.add_argument("--workers", type=int, default=None,
                    help="DataLoader workers for the baseline (and cache build); default: 2 on cpu, all cores on cuda")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (cpu mode)")
    ap.add_argument("--models", nargs="+", default=["resnet18", "resnet50", "mobilenet_v2"], help="cuda grid")
    ap.add_argument("--sizes", nargs="+", type=int, default=[224, 128], help="cuda grid: square input sizes")
    ap.add_argument("--steps", type=int, default=30, help="cuda grid: timed steps per pipeline (after warm-up)")
    ap.add_argument("--warmup", type=int, default=10, help="cuda grid: warm-up steps per pipeline")
    ap.add_argument("--compile", action="store_true", help="cuda grid: torch.compile faceattr's model (config compile)")
    args = ap.parse_args(argv)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("train_throughput.py --device cuda: no CUDA GPU is visible to torch (torch.cuda.is_available() is "
                  f"False; torch {torch.__version__}, CUDA build {torch.version.cuda}); run it on a machine with one, "
                  "or use --device cpu", file=sys.stderr)
            return 2
        return gpu_grid(args, torch.device("cuda"))
    args.images = args.images or 1024
    args.batch_size = args.batch_size or 64
    args.workers = 2 if args.workers is None else args.workers
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
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (figures are noisy when other jobs run)")
    return 0


GRID_TRANSFORM_SCALE = (0.81, 1.0)  # the plain pipeline's RandomResizedCrop: faceattr's crop_scale 0.9 squared


class _Utilization:
    """Samples torch.cuda.utilization() (needs pynvml) every 50 ms while running; mean in percent, or None."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.samples, self._stop = device, [], threading.Event()
        try:
            torch.cuda.utilization(device)
            self.ok = True
        except Exception:  # noqa: BLE001 - pynvml missing or NVML refused: report it as not sampled
            self.ok = False
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(torch.cuda.utilization(self.device))

    def __enter__(self) -> _Utilization:
        if self.ok:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.ok:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def _timed(step, warmup: int, steps: int, batch: int, device: torch.device) -> tuple[float, float | None]:  # noqa: ANN001
    """Run `step()` warmup + steps times; returns (images/s over the timed steps, mean GPU utilisation or None)."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize(device)
    with _Utilization(device) as util:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
    return steps * batch / dt, util.mean


def _gpu_step(model: torch.nn.Module, opt: torch.optim.Optimizer, crit: torch.nn.Module, x: torch.Tensor,
              y: torch.Tensor) -> None:
    """One training step as faceattr's loop takes it on CUDA: channels_last, bf16 autocast, fp32 loss."""
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(x).float()
    loss = crit(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def gpu_grid(args: argparse.Namespace, device: torch.device) -> int:
    """The issue-16 grid on one GPU: plain DataLoader vs faceattr vs the model alone, per model and size."""
    from torchvision import transforms as T

    from faceattr.config import load_config
    from faceattr.data import load_celeba
    from faceattr.models import create_model, get_spec
    from faceattr.train.loop import _make_optimizer, _seed_for, prepare_run
    from faceattr.train.pipeline import augment_on_device, gather_rows, prefetch_rows

    images = args.images or 8192
    batch = args.batch_size or 256
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    torch.backends.cudnn.benchmark = True
    split = load_celeba(args.data_root, split="train", limit=images, seed=0)
    n_attr = split.labels.shape[1]
    name = torch.cuda.get_device_name(device)
    print(f"GPU {name}; torch {torch.__version__}; {os.cpu_count()} CPU cores; {images} images, batch {batch}, "
          f"{workers} DataLoader workers for the plain pipeline; {args.warmup} warm-up + {args.steps} timed steps each; "
          f"bf16 autocast, channels_last, fused AdamW everywhere{'; faceattr compiled' if args.compile else ''}")
    util_note = "" if _Utilization(device).ok else " (torch.cuda.utilization() unavailable: pip install pynvml)"
    print(f"{'model':<14}{'px':>5}{'plain img/s':>13}{'faceattr img/s':>16}{'x plain':>9}{'model alone':>13}"
          f"{'busy (e2e/alone)':>18}{'GPU util %':>12}{util_note}")
    rows = []
    for size in args.sizes:
        for model_name in args.models:
            spec = get_spec(model_name)
            cfg = load_config(None, {
                "data.root": args.data_root, "data.limit": images, "data.val_split": "none", "data.workers": workers,
                "model.name": model_name, "model.image_size": [size, size], "model.pretrained": False,
                "batch_size": batch, "epochs": 1, "progress": False, "device": str(device), "compile": args.compile,
            })
            run = prepare_run(cfg)  # the decode-once cache at this size (built once, reopened after)
            opt = _make_optimizer(run, phase_frozen=False)
            crit = torch.nn.BCEWithLogitsLoss()
            labels = torch.from_numpy(run.train_labels).float()
            from faceattr.train.loop import _train_forward

            forward = _train_forward(run)
            run.model.train()
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).numpy()
            n_steps = len(order) // batch

            def batches():  # endless (step, idx), as the loop's _batches gives them
                s = 0
                while True:
                    k = s % n_steps
                    yield s, order[k * batch : (k + 1) * batch]
                    s += 1

            stream = prefetch_rows(batches(), lambda i: gather_rows(run.train_images, i, pin=True))

            def faceattr_step() -> None:
                s, idx, rows_u8 = next(stream)
                gen = torch.Generator().manual_seed(_seed_for(0, 0, s))
                x, _ = augment_on_device(rows_u8, device, cfg.augment, run.preprocess, gen)
                y = labels[idx].to(device, non_blocking=True)
                _gpu_step(forward, opt, crit, x, y)

            ours, ours_util = _timed(faceattr_step, args.warmup, args.steps, batch, device)
            stream.close()

            # The model alone: the same step on one ready-made normalised batch already on the GPU.
            x0 = torch.randn(batch, 3, size, size, device=device)
            y0 = labels[:batch].to(device)
            alone, _ = _timed(lambda: _gpu_step(forward, opt, crit, x0, y0), args.warmup, args.steps, batch, device)

            # The plain pipeline: a fresh model of the same kind, JPEG decode + transforms per step in workers.
            tf = T.Compose([
                T.Resize((size, size)), T.RandomResizedCrop((size, size), scale=GRID_TRANSFORM_SCALE, ratio=(0.75, 1.33)),
                T.RandomHorizontalFlip(), T.RandomRotation(10), T.ColorJitter(0.2, 0.2), T.ToTensor(),
                T.Normalize(spec.mean, spec.std),
            ])
            plain_model = create_model(model_name, num_outputs=n_attr, pretrained=False).to(device)
            plain_model = plain_model.to(memory_format=torch.channels_last).train()
            plain_opt = torch.optim.AdamW(plain_model.parameters(), lr=1e-3, fused=True)
            loader = torch.utils.data.DataLoader(
                _PlainDataset(split.paths, split.labels, tf), batch_size=batch, shuffle=True, drop_last=True,
                num_workers=workers, pin_memory=True, persistent_workers=workers > 0,
                prefetch_factor=4 if workers > 0 else None)
            it = iter(_forever(loader))

            def plain_step() -> None:
                x, y = next(it)
                _gpu_step(plain_model, plain_opt, crit, x.to(device, non_blocking=True), y.to(device, non_blocking=True))

            plain, _ = _timed(plain_step, args.warmup, args.steps, batch, device)
            del it, loader
            busy = ours / alone
            util = "-" if ours_util is None else f"{ours_util:.0f}"
            print(f"{model_name:<14}{size:>5}{plain:>13.0f}{ours:>16.0f}{ours / plain:>9.2f}{alone:>13.0f}"
                  f"{100 * busy:>17.0f}%{util:>12}", flush=True)
            rows.append((model_name, size, plain, ours))
            del run, opt, plain_model, plain_opt
            torch.cuda.empty_cache()
    for model_name, size, plain, ours in rows:
        if model_name == "resnet50" and size == 224:
            ok = ours >= 3500 and ours >= 5 * plain
            print(f"{'PASS' if ok else 'FAIL'}  resnet50 at 224 px: {ours:.0f} img/s end to end (target >= 3,500 on one "
                  f"H100) and x{ours / plain:.2f} the plain pipeline (target >= 5); GPU: {name}")
    return 0


class _PlainDataset(torch.utils.data.Dataset):
    """The usual per-step pipeline: open, decode and transform one JPEG per item."""

    def __init__(self, paths: list[Path], labels, tf) -> None:  # noqa: ANN001
        self.paths, self.labels, self.tf = paths, labels, tf

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):  # noqa: ANN204
        with Image.open(self.paths[i]) as im:
            return self.tf(im.convert("RGB")), torch.from_numpy(self.labels[i]).float()


def _forever(loader):  # noqa: ANN001, ANN202
    while True:
        yield from loader


if __name__ == "__main__":
    sys.exit(main())
