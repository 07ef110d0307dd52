"""Write each member of an ensemble checkpoint (e.g. the shipped default) as a checkpoint of its own.

    python scripts/split_ensemble.py default --out runs/shipped_members

Writes OUT/member0/best.safetensors, OUT/member1/..., in float32, which `model.init_from` can start
from (configs/utk/*.toml refine the shipped members on CelebA + UTKFace this way).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Split the ensemble and print the member paths."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="an ensemble checkpoint: a path or a shipped name such as 'default'")
    parser.add_argument("--out", required=True, help="folder for member0/, member1/, ...")
    args = parser.parse_args(argv)
    from faceattr.errors import FaceattrError
    from faceattr.train.ensemble import split_ensemble

    try:
        for path in split_ensemble(args.checkpoint, args.out):
            print(path)
    except FaceattrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
