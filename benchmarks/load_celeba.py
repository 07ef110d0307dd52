"""Annotation parsing at full CelebA size: faceattr's loader against pandas and a plain Python loop.

    python benchmarks/load_celeba.py                  # 202,599 rows, the size of the full CelebA files
    python benchmarks/load_celeba.py --rows 50000 --repeats 5

Writes a synthetic `list_attr_celeba.txt` in the official format (CRLF, a count line, a header line,
one image name and 40 values of +-1 per row) and `list_eval_partition.txt` into a temporary folder
with only the first three images present (empty files), so `load_celeba` reads every row and keeps
three: the work of parsing, not of decoding images. Prints the median CPU and wall time of each
parser over --repeats runs, and checks the labels each one read.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

N_ATTRS = 40


def write_files(root: Path, rows: int, seed: int = 0) -> np.ndarray:
    """Write the two annotation files for `rows` images; returns the +-1 label matrix written."""
    values = np.random.default_rng(seed).integers(0, 2, size=(rows, N_ATTRS), dtype=np.int8) * 2 - 1
    names = [f"{i:06d}.jpg" for i in range(1, rows + 1)]
    header = " ".join(f"Attr_{k:02d}" for k in range(N_ATTRS))
    cells = np.where(values > 0, " 1", "-1")
    body = "".join(f"{n} {' '.join(c)}\r\n" for n, c in zip(names, cells))
    (root / "list_attr_celeba.txt").write_text(f"{rows}\r\n{header}\r\n{body}", newline="")
    (root / "list_eval_partition.txt").write_text("".join(f"{n} 0\r\n" for n in names), newline="")
    (root / "img_align_celeba").mkdir(exist_ok=True)
    for n in names[:3]:
        (root / "img_align_celeba" / n).write_bytes(b"")
    return values


def with_faceattr(root: Path) -> np.ndarray:
    """`faceattr.data.load_celeba` (both files parsed and checked); the +-1 labels of the images present."""
    from faceattr.data import load_celeba

    return np.asarray(load_celeba(root, split="all", layout="official").labels) * 2 - 1


def with_pandas(root: Path) -> np.ndarray:
    """pandas.read_csv on whitespace, the usual notebook way."""
    import pandas as pd

    frame = pd.read_csv(root / "list_attr_celeba.txt", sep=r"\s+", skiprows=1)
    return frame.to_numpy(dtype=np.int8)


def with_python(root: Path) -> np.ndarray:
    """A plain loop over lines and str.split(), as many repositories do it."""
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()[2:]
    return np.array([[int(v) for v in line.split()[1:]] for line in lines], dtype=np.int8)


def timed(fn: Callable[[Path], np.ndarray], root: Path, repeats: int) -> tuple[float, float, np.ndarray]:
    """(median CPU seconds, median wall seconds, the result) over `repeats` runs."""
    cpu, wall, out = [], [], None
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn(root)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    assert out is not None
    return statistics.median(cpu), statistics.median(wall), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=202_599, help="annotation rows (full CelebA: 202,599)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        values = write_files(root, args.rows)
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f}; {args.rows:,} rows x {N_ATTRS} attributes, median of {args.repeats}")
        print(f"{'parser':<24} {'CPU s':>7} {'wall s':>7}  same labels")
        rows = [("faceattr load_celeba", with_faceattr), ("pandas.read_csv", with_pandas), ("Python split loop", with_python)]
        results = {}
        for label, fn in rows:
            try:
                cpu, wall, out = timed(fn, root, args.repeats)
            except ImportError as e:
                print(f"{label:<24} skipped ({e})")
                continue
            same = np.array_equal(np.where(out > 0, 1, -1), values[: len(out)]) and len(out) in (3, len(values))
            results[label] = wall
            print(f"{label:<24} {cpu:7.3f} {wall:7.3f}  {'yes' if same else 'NO'}")
        ours = results["faceattr load_celeba"]
        print("faceattr is " + ", ".join(f"{w / ours:.1f}x faster than {k}" for k, w in results.items()
                                         if k != "faceattr load_celeba") + " (wall time; faceattr also reads the partition file)")


if __name__ == "__main__":
    main()
