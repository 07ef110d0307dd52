"""Group-balanced loss weights for one attribute (see `faceattr.config.BalanceConfig`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from faceattr.config import BalanceConfig
from faceattr.errors import FaceattrError, did_you_mean

__all__ = ["group_weights"]

logger = logging.getLogger(__name__)


def group_weights(labels: np.ndarray, attributes: Sequence[str], cfg: BalanceConfig) -> tuple[int, np.ndarray]:
    """(column of cfg.attribute, per-image weights with mean 1) giving every label cell equal total weight."""
    names = list(attributes)
    for a in [cfg.attribute, *cfg.by]:
        if a not in names:
            raise FaceattrError(f"balance: '{a}' is not among this run's attributes{did_you_mean(a, names)}; "
                                "balance.attribute and balance.by must be trained attributes")
    if not cfg.by:
        raise FaceattrError("balance.by is empty; name the attributes that form the groups, e.g. by = [\"Wearing_Lipstick\"]")
    if cfg.max_weight < 1.0:
        raise FaceattrError(f"balance.max_weight must be >= 1, got {cfg.max_weight}")
    cols = [names.index(a) for a in [cfg.attribute, *cfg.by]]
    bits = (np.asarray(labels)[:, cols] > 0.5).astype(np.int64)
    cell = bits @ (1 << np.arange(len(cols)))
    counts = np.bincount(cell, minlength=1 << len(cols))
    present = int((counts > 0).sum())
    w = len(cell) / (present * counts[cell])
    w = np.minimum(w, cfg.max_weight)
    w = w / w.mean()
    for c in np.flatnonzero(counts):
        state = ", ".join(f"{n}={int(b)}" for n, b in zip([cfg.attribute, *cfg.by], (c >> np.arange(len(cols))) & 1, strict=True))
        logger.info("balance %s: %s: %d images, weight %.2f", cfg.attribute, state, counts[c], w[cell == c][0])
    return names.index(cfg.attribute), w.astype(np.float32)
