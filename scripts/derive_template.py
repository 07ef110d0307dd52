"""Derive the 5-point alignment template in faceattr/infer/align.py from real aligned CelebA crops.

Runs the vendored YuNet detector on aligned 178x218 CelebA images, each padded into a bigger canvas
(edge pixels replicated, not mirrored: a mirror border makes YuNet find a second, mirrored face), takes
the largest face per image and averages its 5 landmarks and its box in the 178x218 frame. Prints the
constants to paste into align.py, plus a check that re-aligning the crops gives nearly the identity.

    python scripts/derive_template.py --celeba ../shared/celeba --n 2000
    python scripts/derive_template.py --utkface ../shared/utkface --n 1500   # UTK_TEMPLATE in data/utkface.py

With --utkface it measures the 200x200 UTKFace chips instead and prints UTK_TEMPLATE, plus where the
chip lands in CelebA's frame when mapped onto TEMPLATE.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    """Measure the template and print it as Python constants."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--celeba", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "celeba")
    parser.add_argument("--utkface", type=Path, default=None, help="measure UTKFace chips (folder holding UTKFace/)")
    parser.add_argument("--n", type=int, default=2000, help="number of images (a seeded random sample)")
    parser.add_argument("--pad", type=int, default=32, help="canvas padding on each side, px")
    parser.add_argument("--min-score", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import cv2

    from faceattr.infer.align import similarity_transform, transform_params
    from faceattr.infer.detect import FaceDetector

    if args.utkface is not None:
        from faceattr.data.utkface import find_utk_images

        folder = find_utk_images(args.utkface)
        files = sorted(folder.glob("*.jpg")) if folder else []
    else:
        files = sorted((args.celeba / "img_align_celeba").glob("*.jpg"))
    if not files:
        print(f"no images under {args.utkface or args.celeba / 'img_align_celeba'}", file=sys.stderr)
        return 1
    rng = np.random.default_rng(args.seed)
    pick = sorted(rng.choice(len(files), size=min(args.n, len(files)), replace=False))
    det = FaceDetector(score_threshold=0.3)
    lms, boxes, missed = [], [], 0
    for i in pick:
        bgr = cv2.imread(str(files[i]))
        canvas = cv2.copyMakeBorder(bgr, *([args.pad] * 4), cv2.BORDER_REPLICATE)
        faces = det.detect(np.ascontiguousarray(canvas[..., ::-1]))
        if not faces or faces[0].score < args.min_score:
            missed += 1
            continue
        f = faces[0]
        lms.append(f.landmarks.astype(np.float64) - args.pad)
        boxes.append(np.array(f.box, dtype=np.float64) - [args.pad, args.pad, 0, 0])
    lms_a, boxes_a = np.stack(lms), np.stack(boxes)
    template = lms_a.mean(0)
    box = boxes_a.mean(0)
    # A least-squares similarity fit of noisy points underestimates scale (the noise inflates the
    # source spread), so crops would come out ~1% small. Grow the template about its centroid until the
    # median fitted scale over these crops is 1: then a typical CelebA crop re-aligns onto itself.
    raw_scale = float(np.median([transform_params(similarity_transform(p, template))[0] for p in lms_a]))
    centroid = template.mean(0)
    template = centroid + (template - centroid) / raw_scale

    # Identity check: each crop's own similarity onto the template should be close to identity.
    params = np.array([transform_params(similarity_transform(p, template)) for p in lms_a])
    date = dt.date.today().isoformat()
    if args.utkface is not None:
        from faceattr.data.geometry import TEMPLATE

        m = similarity_transform(template, TEMPLATE)
        corners = np.array([[0, 0, 1], [200, 0, 1], [0, 200, 1], [200, 200, 1]], dtype=np.float64) @ m.T
        print(f"# {len(lms_a)} of {len(pick)} chips used ({missed} without a face at score >= {args.min_score}), {date}")
        print(f"# per-point std (px): {np.round(lms_a.std(0).mean(1), 2).tolist()}; mean points scaled by {1 / raw_scale:.4f}")
        print("# chip -> CelebA frame: scale %.4f, rotation %.2f deg; corners land at %s"
              % (*transform_params(m)[:2], np.round(corners, 1).tolist()))
        print("UTK_TEMPLATE = np.array(\n    [%s], dtype=np.float64\n)" % ", ".join(f"[{x:.2f}, {y:.2f}]" for x, y in template))
        return 0
    print(f"# {len(lms_a)} of {len(pick)} images used ({missed} without a face at score >= {args.min_score}), {date}")
    print(f"# per-point std (px): {np.round(lms_a.std(0).mean(1), 2).tolist()}; mean points scaled by {1 / raw_scale:.4f}")
    print(
        "# re-alignment of the crops themselves: scale median %.4f (5-95%%: %.3f..%.3f), "
        "rotation median %.2f deg (5-95%%: %.1f..%.1f), shift median (%.2f, %.2f) px"
        % (
            np.median(params[:, 0]), *np.percentile(params[:, 0], [5, 95]),
            np.median(params[:, 1]), *np.percentile(params[:, 1], [5, 95]),
            np.median(params[:, 2]), np.median(params[:, 3]),
        )
    )
    print("TEMPLATE = np.array(\n    [")
    for x, y in template:
        print(f"        [{x:.2f}, {y:.2f}],")
    print("    ],\n    dtype=np.float64,\n)")
    print("TEMPLATE_BOX = (%.2f, %.2f, %.2f, %.2f)" % tuple(box))
    return 0


if __name__ == "__main__":
    sys.exit(main())
