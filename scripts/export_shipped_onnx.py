"""Export each shipped model (src/faceattr/assets/models/<name>.safetensors) to <name>.onnx beside it.

The shipped .onnx is what `faceattr predict` runs by default, without importing torch. It records the
sha256 of the .safetensors it came from; a stale one (the model was re-shipped since) is refused by
`--backend onnx`, skipped with a warning by the default backend, and fails tests/infer/test_shipped_onnx.py.

    .venv/bin/python scripts/export_shipped_onnx.py            # after (re-)shipping: regenerate every .onnx
    .venv/bin/python scripts/export_shipped_onnx.py --check    # exit 1 when one is missing or stale
"""

from __future__ import annotations

import argparse
import sys

from faceattr.checkpoint import file_sha256, shipped_models_dir


def recorded_sha256(onnx_path: str) -> str | None:
    """The source checkpoint sha256 an exported .onnx records, or None."""
    from faceattr.infer.backends import SOURCE_SHA256_KEY, OnnxBackend

    return OnnxBackend(onnx_path).metadata.get(SOURCE_SHA256_KEY)


def main(argv: list[str] | None = None) -> int:
    """Export (or with --check, verify) the .onnx of every shipped model; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report missing or stale exports (exit 1 if any)")
    ap.add_argument("names", nargs="*", help="shipped model names (default: all)")
    args = ap.parse_args(argv)
    ckpts = sorted(shipped_models_dir().glob("*.safetensors"))
    if args.names:
        ckpts = [c for c in ckpts if c.stem in args.names]
        missing = sorted(set(args.names) - {c.stem for c in ckpts})
        if missing:
            print(f"no shipped model named {', '.join(missing)}", file=sys.stderr)
            return 2
    bad = 0
    for ckpt in ckpts:
        onnx_path = ckpt.with_suffix(".onnx")
        if args.check:
            state = "missing" if not onnx_path.is_file() else (
                "up to date" if recorded_sha256(str(onnx_path)) == file_sha256(ckpt) else "STALE"
            )
            bad += state != "up to date"
            print(f"{onnx_path}: {state}")
            continue
        from faceattr.infer import export

        # No JSON beside it: default.json there is the checkpoint's own, and the .onnx carries its metadata.
        # The shipped weights are fp16, so the export stores them in fp16 too (half the file, same outputs).
        path, diff = export(ckpt, onnx_path, sidecar_json=False, half_weights=True)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, source sha256 {file_sha256(ckpt)[:12]}..., "
              f"max |logit difference| vs torch {diff:.2g})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
