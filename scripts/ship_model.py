"""Copy a trained checkpoint into the package as a shipped model (fp16 weights, training state dropped),
with its ONNX export beside it (what `faceattr predict` runs by default; see scripts/export_shipped_onnx.py).

    .venv/bin/python scripts/ship_model.py runs/default/best.safetensors --name default
"""

from __future__ import annotations

import argparse
from pathlib import Path

from faceattr.checkpoint import load_checkpoint, save_checkpoint, shipped_models_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--name", default="default")
    args = ap.parse_args()
    model, meta = load_checkpoint(args.checkpoint)
    meta.pop("train_state", None)
    meta["shipped_as"] = args.name
    meta["source_checkpoint"] = str(args.checkpoint)
    # fp16 halves the size; load_checkpoint casts back to the model's float32 on load.
    out = save_checkpoint(shipped_models_dir() / f"{args.name}.safetensors", model, meta, half=True)
    print(f"{out} ({out.stat().st_size / 2**20:.1f} MiB)")
    # The .onnx beside it is what predict runs by default; an old one would be stale (and skipped).
    # Its weights are the fp16 checkpoint's, stored in fp16 there too: half the size, identical outputs.
    from export_shipped_onnx import main as export_shipped

    export_shipped([args.name])


if __name__ == "__main__":
    main()
