"""Training: plain functions, no Trainer hierarchy. `fit(cfg)` trains one run into a folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

from faceattr._lazy import lazy_exports

__all__ = ["fit", "train_one_epoch", "validate", "prepare_run", "lr_factor", "Run", "make_ensemble",
           "interpolate_checkpoints"]

if TYPE_CHECKING:
    from faceattr.train.loop import (
        Run,
        fit,
        lr_factor,
        prepare_run,
        train_one_epoch,
        validate,
    )
    from faceattr.train.ensemble import interpolate_checkpoints, make_ensemble


# Lazy so `faceattr.train.cli` (imported for `faceattr --help`) does not pull in torch.
__getattr__, __dir__ = lazy_exports(__name__, {**dict.fromkeys(__all__, "loop"), "make_ensemble": "ensemble",
                                                   "interpolate_checkpoints": "ensemble"})
