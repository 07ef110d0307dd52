"""`faceattr demo`: predict on a portrait shipped in the package, right after install."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["register", "sample_path"]

logger = logging.getLogger(__name__)


def sample_path(name: str = "grace_hopper.jpg") -> Path:
    """Path of a sample portrait shipped inside the package."""
    return Path(__file__).resolve().parent / "assets" / "samples" / name


def register(sub: Any) -> None:
    """Add the `demo` subcommand."""
    p = sub.add_parser("demo", help="predict on a shipped sample photo with the default model")
    p.add_argument("image", nargs="?", help="photo to use instead of the shipped Grace Hopper portrait")
    p.add_argument("--data-root", default=os.environ.get("FACEATTR_CELEBA", "../shared/celeba"),
                   help="CelebA folder used only when no default model is shipped")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from faceattr.checkpoint import shipped_models_dir
    from faceattr.cli import main

    image = args.image or str(sample_path())
    if (shipped_models_dir() / "default.safetensors").is_file():
        return main(["predict", image])
    # No trained model in this build: train a tiny one for a few steps so the pipeline still runs end to end.
    root = Path(args.data_root)
    if not (root / "list_attr_celeba.txt").is_file() and not (root / "celeba").is_dir():
        print(f"faceattr demo: no default model is shipped in this build and no CelebA data at {root}; "
              "pass --data-root DIR (a CelebA folder) to train a tiny demo model first")
        return 1
    out = Path(tempfile.mkdtemp(prefix="faceattr-demo-")) / "run"
    print(f"no default model shipped yet: training a tiny demo model on {root} into {out} (a few steps; "
          "its predictions are not meaningful)")
    code = main(["train", "--data-root", str(root), "--model", "celeb_cnn", "--image-size", "64", "64",
                 "--limit", "256", "--val-limit", "64", "--batch-size", "32", "--max-steps", "4",
                 "--epochs", "1", "--out", str(out), "--no-progress"])
    if code:
        return code
    return main(["predict", image, "--model", str(out / "best.safetensors")])
