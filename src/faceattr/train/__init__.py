"""Training: plain functions, no Trainer hierarchy. `fit(cfg)` trains one run into a folder."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["fit", "train_one_epoch", "validate", "prepare_run", "lr_factor", "Run"]

if TYPE_CHECKING:
    from faceattr.train.loop import (
        Run,
        fit,
        lr_factor,
        prepare_run,
        train_one_epoch,
        validate,
    )


def __getattr__(name: str) -> Any:
    # Lazy so `faceattr.train.cli` (imported for `faceattr --help`) does not pull in torch.
    if name in __all__:
        from faceattr.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'faceattr.train' has no attribute {name!r}")
