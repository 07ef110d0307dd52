"""Indexing throughput: `faceattr index` in one process against `--workers 2`, on the same images, in one run.

A third run, one process with `--threads 1`, shows how much of the difference is thread
oversubscription (torch and OpenCV each starting a pool per core) rather than parallelism.

Each run indexes the same CelebA images (symlinked into a temp folder) into a fresh index, with
detection + alignment + attributes, and prints images/s end to end (model loading and worker start
included) and once started (from the moment every process has delivered its first batch).

    .venv/bin/python benchmarks/index_throughput.py --data-root ../shared/celeba --images 256
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path


def _rates(stats: object, marks: list[tuple[float, int]], workers: int) -> tuple[float, float]:
    """(end-to-end images/s, steady images/s once every process has delivered its first batch)."""
    end_to_end = stats.processed / stats.seconds  # type: ignore[attr-defined]
    if len(marks) <= workers:
        return end_to_end, float("nan")
    (t1, n1), (t2, n2) = marks[workers - 1], marks[-1]
    return end_to_end, (n2 - n1) / (t2 - t1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/celeba")
    ap.add_argument("--model", default="default", help="shipped model name or checkpoint path")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2, help="processes for the parallel run")
    args = ap.parse_args()
    # The steady rate is measured from the batch after every process's first one; with fewer batches
    # than that there is nothing to measure (it printed "nan images/s").
    need = args.batch_size * (args.workers + 2)
    if args.images < need:
        ap.error(f"--images must be at least batch size x (workers + 2) = {need}, so every process delivers "
                 f"a first batch and there are batches after it to time")

    from faceattr.search import build_index

    src = Path(args.data_root) / "img_align_celeba"
    names = sorted(os.listdir(src))[: args.images]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at start; model {args.model}; {len(names)} CelebA images, batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        root.mkdir()
        for n in names:
            os.symlink(src.resolve() / n, root / n)
        results = {}
        runs = (
            ("1 process", 1, None),
            ("1 process, --threads 1", 1, 1),
            (f"--workers {args.workers}", args.workers, None),
        )
        for label, workers, threads in runs:
            marks: list[tuple[float, int]] = []
            t0 = time.perf_counter()
            stats = build_index(
                root, Path(tmp) / f"index-{len(results)}.sqlite", args.model, batch_size=args.batch_size, workers=workers,
                threads=threads, progress=False,
                on_batch=lambda s, marks=marks, t0=t0: marks.append((time.perf_counter() - t0, s.processed)),
            )
            e2e, steady = _rates(stats, marks, workers)
            results[label] = (e2e, steady)
            print(f"{label:>22}: {stats.processed} images, {stats.faces} faces in {stats.seconds:.1f}s -> "
                  f"{e2e:.1f} images/s end to end, {steady:.1f} images/s once started")
        (a, sa), _, (b, sb) = results.values()
        print(f"speed-up of --workers {args.workers} over 1 process: {b / a:.2f}x end to end, {sb / sa:.2f}x once started; "
              f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
