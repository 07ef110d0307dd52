"""Training: plain functions, no Trainer hierarchy. `fit(cfg)` trains one run into a folder."""

from faceattr.train.loop import Run, fit, lr_factor, prepare_run, train_one_epoch, validate

__all__ = ["fit", "train_one_epoch", "validate", "prepare_run", "lr_factor", "Run"]
