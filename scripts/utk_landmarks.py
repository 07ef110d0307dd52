"""Write the landmarks `predict` aligns each UTKFace chip by, so training frames the chips the same way.

    .venv/bin/python scripts/utk_landmarks.py ../shared/utkface --out runs/utk_landmarks.tsv

`ChipFrame` places every chip in CelebA's frame by one fixed similarity (the mean landmarks of the
chips), while `predict` (and `faceattr evaluate` on UTKFace) detects each face, refines its landmarks
and aligns it by its own. A source with `landmarks = "runs/utk_landmarks.tsv"` trains on the second
framing. One line per chip: the file name, then x1 y1 ... x5 y5 in the chip's pixels (YuNet's order),
or the name alone where no face was found (that chip keeps the fixed framing). Every split is written
(the split is chosen later, by the loader), in the order of the folder's sorted file names.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

_DETECTOR = None


def _one(path: str) -> tuple[str, list[float] | None]:
    """(file name, 10 landmark coordinates or None) of one chip, read and detected as predict does."""
    global _DETECTOR
    from faceattr.infer.align import largest_face_landmarks
    from faceattr.infer.detect import FaceDetector
    from faceattr.infer.image_io import load_rgb

    if _DETECTOR is None:
        import cv2

        cv2.setNumThreads(1)  # one process per core does the parallelism
        _DETECTOR = FaceDetector()
    name = Path(path).name
    try:
        rgb = load_rgb(path)
    except Exception:  # noqa: BLE001 - an unreadable chip is skipped by the loader anyway
        return name, None
    pts = largest_face_landmarks(rgb, _DETECTOR.detect)
    return name, None if pts is None else [round(float(v), 3) for v in pts.reshape(-1)]


def main(argv: list[str] | None = None) -> int:
    """Detect every chip and write the TSV atomically."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="the UTKFace folder (its UTKFace/ chips)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from faceattr._atomic import atomic_write
    from faceattr.data.utkface import load_utkface
    from faceattr.errors import FaceattrError

    try:
        split = load_utkface(args.root, "all")
    except FaceattrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    with Pool(args.workers) as pool:
        rows = pool.map(_one, [str(p) for p in split.paths], chunksize=64)
    lines = [name + "".join(f"\t{v}" for v in (pts or [])) for name, pts in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, "\n".join(lines) + "\n", what="landmarks file")
    missed = sum(pts is None for _, pts in rows)
    print(f"wrote {args.out}: {len(rows)} chips, {missed} without a face, {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
