"""`python -m faceattr ...`, the form torchrun launches: `torchrun --nproc_per_node N -m faceattr train ...`."""

from __future__ import annotations

from faceattr.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
