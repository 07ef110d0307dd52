"""Average the weights of a model and its fine-tuned copy (weight-space ensembling, "WiSE-FT").

    .venv/bin/python scripts/interpolate_weights.py runs/default runs/mobilenet_v2_robust \\
        --alpha 0.5 --out runs/mobilenet_v2_wise/best.safetensors

A thin layer over `faceattr.train.interpolate_checkpoints`: `alpha` 0 is the first model, 1 the
second. The result is an ordinary checkpoint of one network, with the second checkpoint's metadata
and both sources recorded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from faceattr.errors import FaceattrError
from faceattr.train import interpolate_checkpoints


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", help="the original model (checkpoint, run folder or shipped name)")
    ap.add_argument("second", help="its fine-tuned copy")
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of the second (default: 0.5)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()
    try:
        print(interpolate_checkpoints(args.first, args.second, args.out, alpha=args.alpha, overwrite=args.overwrite))
    except FaceattrError as e:
        sys.exit(f"interpolate_weights: error: {e}")


if __name__ == "__main__":
    main()
