"""`faceattr predict`, `faceattr explain` and `faceattr export`: thin command-line layers over faceattr.infer.

Only argparse is imported at module level so `faceattr --help` stays fast; handlers import the rest.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
# Spelled out rather than imported from faceattr.infer.model, which would load numpy and Pillow for --help.
BACKEND_CHOICES = ("auto", "onnx", "torch")
BACKEND_HELP = (
    "classifier runtime: 'auto' takes ONNX Runtime when the model has an up-to-date .onnx export beside it "
    "(the shipped models do), else torch (default: %(default)s)"
)


def register(subparsers: Any) -> None:
    """Add the `predict`, `explain` and `export` subcommands."""
    p = subparsers.add_parser(
        "predict",
        help="detect faces in photos and predict their attributes",
        description="Detect every face, align it like CelebA and print its attributes (and its estimated age, "
        "for a model that predicts age). Folders are "
        "searched recursively for images; glob patterns (quoted) are expanded.",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files, folders or glob patterns")
    p.add_argument("--model", default="default", help="shipped model name or checkpoint path (default: %(default)s)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto", help=BACKEND_HELP)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print a JSON list of results to stdout and nothing else")
    p.add_argument("--threshold", type=float, help="one threshold for every attribute (default: the model's own)")
    p.add_argument("--max-faces", type=int, default=10, help="largest N faces per image (default: %(default)s)")
    p.add_argument("--min-face", type=int, default=24, help="faces smaller than this (px) are reported, not classified (default: %(default)s)")
    p.add_argument("--no-detect", action="store_true", help="take the whole image as one face (a tight face crop)")
    p.add_argument("--no-align", action="store_true", help="take each image as an already aligned 178x218 CelebA-style crop")
    p.add_argument("--save-crops", metavar="DIR", help="write each face's aligned 178x218 crop here")
    p.add_argument("--annotate", metavar="DIR", help="write a copy of each image with boxes, landmarks and attributes here")
    p.add_argument("--batch-size", type=int, default=8,
                   help="faces per classifier batch, gathered across photos (default: %(default)s)")
    p.add_argument("--prefetch", type=int, default=32, metavar="N",
                   help="photos read, detected and aligned on background threads while the classifier runs; "
                   "0 does one thing at a time (default: %(default)s)")
    p.set_defaults(func=_predict)

    x = subparsers.add_parser(
        "explain",
        help="show which parts of a face drive one attribute (occlusion)",
        description="Grey out each part of the aligned face crop (hair, eyes, nose, mouth, chin, neck and "
        "clothing) and a sliding square, classify again, and report how far the attribute's probability "
        "moves; --out writes the heat map and the table as a PNG.",
    )
    x.add_argument("image", metavar="IMAGE", help="a photo (its largest face is explained unless --face says otherwise)")
    x.add_argument("--attribute", required=True, help="the attribute to explain, e.g. Male or Eyeglasses")
    x.add_argument("--face", type=int, default=1, help="which face, 1 = the largest (default: %(default)s)")
    x.add_argument("--out", metavar="PNG", help="write the crop, heat map and region table here")
    x.add_argument("--json", action="store_true", help="print the figures as JSON to stdout and nothing else")
    x.add_argument("--model", default="default", help="shipped model name or checkpoint path (default: %(default)s)")
    x.add_argument("--backend", choices=BACKEND_CHOICES, default="auto", help=BACKEND_HELP)
    x.add_argument("--patch", type=int, default=32, help="side of the sliding grey square, 8-178 px of the 178x218 crop (default: %(default)s)")
    x.add_argument("--stride", type=int, default=16, help="step of the sliding square, 4 px up to the patch (default: %(default)s)")
    x.add_argument("--scale", choices=("probability", "logit"), default="probability",
                   help="measure the drops in probability or in log-odds, which shows more on a confident "
                   "prediction (default: %(default)s)")
    x.add_argument("--min-face", type=int, default=24, help="smallest face box (px) to classify (default: %(default)s)")
    x.add_argument("--no-detect", action="store_true", help="take the whole image as one face (a tight face crop)")
    x.add_argument("--no-align", action="store_true", help="take the image as an already aligned 178x218 CelebA-style crop")
    x.set_defaults(func=_explain)

    e = subparsers.add_parser(
        "export",
        help="export a model to ONNX",
        description="Export a checkpoint (or shipped model) to ONNX with a dynamic batch axis, write its "
        "metadata JSON beside it, and check ONNX Runtime's outputs against torch.",
    )
    e.add_argument("model", metavar="MODEL", help="shipped model name or checkpoint path")
    e.add_argument("--onnx", required=True, metavar="OUT.onnx", help="where to write the ONNX file")
    e.add_argument("--opset", type=int, help="ONNX opset (default: 17)")
    e.add_argument("--half", action="store_true",
                   help="store the weights that fp16 holds exactly (all of a --half checkpoint's) in fp16: "
                   "about half the file, the same outputs")
    e.set_defaults(func=_export)


def expand_inputs(items: list[str]) -> tuple[list[str], list[str]]:
    """Turn files, folders (recursive) and glob patterns into image paths; returns (paths, errors)."""
    import glob
    from pathlib import Path

    paths: list[str] = []
    errors: list[str] = []
    seen: set[str] = set()

    def add(p: Path) -> None:
        key = str(p)
        if key not in seen:
            seen.add(key)
            paths.append(key)

    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                errors.append(f"{p}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            for q in found:
                add(q)
        elif p.exists():
            add(p)  # an explicit file is always tried, whatever its extension
        elif glob.has_magic(item):
            found = sorted(Path(q) for q in glob.glob(item, recursive=True))
            files = [q for q in found if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS]
            if not files:
                errors.append(f"{item}: pattern matches no images")
            for q in files:
                add(q)
        else:
            errors.append(f"{p}: no such file or folder")
    return paths, errors


def _unique(directory: Any, stem: str, suffix: str, used: set[str]) -> Any:
    name = f"{stem}{suffix}"
    n = 2
    while name in used:
        name = f"{stem}-{n}{suffix}"
        n += 1
    used.add(name)
    return directory / name


def _annotate(path: str, faces: list[Any], out: Any) -> None:
    """Draw boxes, landmarks and the top attributes onto a copy of the image."""
    from PIL import Image, ImageDraw

    from faceattr.infer.image_io import load_rgb

    im = Image.fromarray(load_rgb(path))
    draw = ImageDraw.Draw(im)
    width = max(2, round(max(im.size) / 400))
    for k, f in enumerate(faces, 1):
        x, y, w, h = f.box
        colour = (255, 160, 0) if f.too_small else (0, 220, 90)
        draw.rectangle([x, y, x + w, y + h], outline=colour, width=width)
        for px, py in f.landmarks:
            r = width + 1
            draw.ellipse([px - r, py - r, px + r, py + r], fill=(255, 40, 40))
        age = [] if f.age is None else [f"age ~{f.age:.0f}"]
        label = f"#{k} too small" if f.too_small else f"#{k} " + ", ".join([*age, *f.present[:4]])
        # Dark backing so the label reads on any background.
        tx, ty = x, y + h + 2
        draw.rectangle(draw.textbbox((tx, ty), label), fill=(0, 0, 0))
        draw.text((tx, ty), label, fill=colour)
    im.save(out, quality=90)


def _print_human(res: Any, threshold_of: dict[str, float], min_face: int) -> None:
    if res.error is not None:
        return
    n = len(res.faces)
    if n == 0:
        print(f"{res.image}: no face found (try --no-detect to treat the whole image as one face)")
        return
    print(f"{res.image}: {n} face{'s' if n != 1 else ''}")
    if res.grayscale:
        print("  black-and-white photo: hair colours, Pale_Skin, Rosy_Cheeks and make-up are guesses")
    for k, f in enumerate(res.faces, 1):
        x, y, w, h = f.box
        score = "" if f.score is None else f"  score {f.score:.2f}"
        print(f"  face {k}: box x={x:.0f} y={y:.0f} w={w:.0f} h={h:.0f}{score}")
        if f.too_small:
            print(f"    face too small ({min(w, h):.0f} px < --min-face {min_face} px): not classified")
            continue
        if f.age is not None:  # only models trained with an age source estimate it
            print(f"    age ~{f.age:.0f}")
        print(f"    present: {', '.join(f.present) if f.present else '(none)'}")
        width = max(len(a) for a in f.probabilities)
        for name, prob in sorted(f.probabilities.items(), key=lambda kv: -kv[1]):
            mark = "  *" if prob >= threshold_of[name] else ""
            print(f"    {name:<{width}}  {prob:6.3f}{mark}")


class _NoBar:
    """Stands in for a tqdm bar where none is shown."""

    def update(self, n: int = 1) -> None:
        """Count nothing."""

    def clear(self) -> None:
        """Clear nothing."""

    def close(self) -> None:
        """Close nothing."""


def _prefetch_workers() -> int:
    """Threads that decode, detect and align for `predict`: half the cores (the classifier has the
    rest), at least 1 and at most 4."""
    import os

    return max(1, min(4, (os.cpu_count() or 2) // 2))


class _JsonListWriter:
    """Writes a JSON list one item at a time, byte for byte what `json.dump(items, f, indent=2)` and a
    newline would write once all were collected, so a folder's results are never all held in memory."""

    def __init__(self, stream: Any) -> None:
        """Write to `stream` (a text file)."""
        self.stream = stream
        self.count = 0

    def add(self, item: Any) -> None:
        """Write one item of the list."""
        import json

        text = json.dumps(item, indent=2).replace("\n", "\n  ")  # json escapes newlines inside strings
        self.stream.write(("[\n  " if self.count == 0 else ",\n  ") + text)
        self.count += 1

    def close(self) -> None:
        """End the list (an empty one is `[]`) and the line."""
        self.stream.write("\n]\n" if self.count else "[]\n")


def _predict(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    import numpy as np

    from faceattr.errors import FaceattrError
    from faceattr.infer import load

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise FaceattrError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.max_faces < 1:
        raise FaceattrError(f"--max-faces must be at least 1, got {args.max_faces}")
    if args.batch_size < 1:
        raise FaceattrError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.prefetch < 0:
        raise FaceattrError(f"--prefetch must be 0 or more, got {args.prefetch}")
    paths, input_errors = expand_inputs(args.inputs)
    for msg in input_errors:
        print(f"faceattr: {msg}", file=sys.stderr)
    if not paths:
        raise FaceattrError("no images to predict on")

    # One photo: ONNX Runtime's threads may spin (lower latency); many: they sleep, leaving the cores to
    # the threads that decode and detect the next photos.
    model = load(args.model, device=args.device, backend=args.backend, spin=len(paths) == 1)
    if args.threshold is not None:
        model.thresholds = np.full(len(model.attributes), args.threshold, dtype=np.float32)
    threshold_of = dict(zip(model.attributes, (float(t) for t in model.thresholds)))
    crops_dir = Path(args.save_crops) if args.save_crops else None
    annotate_dir = Path(args.annotate) if args.annotate else None
    for d in (crops_dir, annotate_dir):
        if d is not None:
            d.mkdir(parents=True, exist_ok=True)
    used_crop: set[str] = set()
    used_annot: set[str] = set()

    # A bar only for more than a few images, and only where someone sees it (a terminal); tqdm is not
    # even imported for a few images, since most runs are one photo from a cold process.
    bar: Any = _NoBar()
    if len(paths) > 3:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), unit="img", file=sys.stderr, disable=None, leave=False)
    failed = 0
    json_out = _JsonListWriter(sys.stdout) if args.json else None
    try:
        results = model.predict_many(
            paths,
            batch_size=args.batch_size,
            detect=not args.no_detect,
            align=not args.no_align,
            max_faces=args.max_faces,
            min_face=args.min_face,
            prefetch=args.prefetch if len(paths) > 1 else 0,
            workers=_prefetch_workers(),
        )
        for res in results:
            bar.update(1)
            if res.error is not None:
                failed += 1
                bar.clear()
                print(f"faceattr: {res.error}", file=sys.stderr)
                if json_out is not None:
                    json_out.add(res.to_dict())
                continue
            stem = Path(res.image).stem
            if crops_dir is not None:
                for k, f in enumerate(res.faces, 1):
                    if f.crop is not None:
                        f.crop.save(_unique(crops_dir, f"{stem}_face{k}", ".png", used_crop))
            if annotate_dir is not None:
                _annotate(res.image, res.faces, _unique(annotate_dir, f"{stem}_annotated", ".jpg", used_annot))
            if json_out is not None:
                json_out.add(res.to_dict())
                if not res.faces:
                    bar.clear()
                    print(f"faceattr: {res.image}: no face found (try --no-detect)", file=sys.stderr)
            else:
                bar.clear()
                _print_human(res, threshold_of, args.min_face)
    finally:
        bar.close()
    if json_out is not None:
        json_out.close()
    sys.stdout.flush()
    return 1 if failed or input_errors else 0


def _explain(args: argparse.Namespace) -> int:
    import json
    import sys

    from faceattr.infer import load
    from faceattr.infer.explain import check_output, explain, save_explanation

    if args.out:
        check_output(args.out)  # before the model runs, not after
    model = load(args.model, backend=args.backend)
    e = explain(model, args.image, args.attribute, face=args.face, detect=not args.no_detect, align=not args.no_align,
                min_face=args.min_face, patch=args.patch, stride=args.stride, scale=args.scale)
    if args.out:
        save_explanation(e, args.out)
    if args.json:
        json.dump({"image": args.image, "face": args.face, **e.to_dict(), "out": args.out}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"{args.image}, face {args.face}: " + e.summary())
        if args.out:
            print(f"wrote {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from faceattr.infer import export

    path, diff = export(args.model, args.onnx, opset=args.opset, half_weights=args.half)
    print(f"wrote {path} and {path.with_suffix('.json')} (max |logit difference| vs torch: {diff:.2g})")
    return 0
