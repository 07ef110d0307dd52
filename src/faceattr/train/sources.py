"""Several data sources in one run: each labels only some outputs, the rest are masked out.

CelebA labels its 40 attributes; UTKFace labels gender (into `Male`) and age (a regression output).
Rows of all sources sit in one index space: images come from each source's own decode-once cache
(`MultiImages` reads across them), labels are float32 [N, A] with NaN where a source says nothing,
and age is float32 [N] with NaN where it is unknown. Each epoch draws from every source in proportion
to its weight, and within a source by its balancing weights (e.g. equalising race groups).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceattr.config import SourceConfig, TrainConfig
from faceattr.errors import FaceattrError, did_you_mean, resolve_names

__all__ = ["AGE_MEAN", "AGE_STD", "SOURCE_KINDS", "MultiImages", "SourceData", "detect_kind", "load_sources", "epoch_order"]

logger = logging.getLogger(__name__)

SOURCE_KINDS = ("celeba", "utkface")
# The age output is standardised with fixed constants (not the data's), so every checkpoint of every
# mix of sources reads its age the same way: years = AGE_MEAN + AGE_STD * output.
AGE_MEAN = 35.0
AGE_STD = 20.0
_UTK_BALANCE = ("race", "gender", "age_band")


class MultiImages:
    """Row-wise concatenation of uint8 image arrays [N_i, H, W, 3] (memory-mapped caches) without copying them."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        """Join `parts` (same H, W) in order."""
        if not parts or len({p.shape[1:] for p in parts}) != 1:
            raise ValueError("MultiImages needs at least one part, all of one image shape")
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.offsets[-1]), *parts[0].shape[1:])
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        """Number of rows."""
        return self.shape[0]

    def __getitem__(self, idx: Any) -> np.ndarray:
        """Rows by slice or integer array, as one new array (in the order asked)."""
        if isinstance(idx, slice):
            idx = np.arange(*idx.indices(len(self)))
        idx = np.asarray(idx, dtype=np.int64)
        if idx.ndim == 0:
            return self[idx[None]][0]
        out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        part = np.searchsorted(self.offsets, idx, side="right") - 1
        for p in np.unique(part):
            sel = np.flatnonzero(part == p)
            out[sel] = self.parts[p][idx[sel] - self.offsets[p]]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """All rows as one array (only for small data: it is a copy)."""
        arr = self[slice(None)]
        return arr if dtype is None else arr.astype(dtype)


@dataclass
class SourceData:
    """The rows of every source for one role (train or validation)."""

    names: list[str]  # one per source, e.g. ["celeba", "utkface"]
    attributes: list[str]
    images: MultiImages
    labels: np.ndarray  # float32 [N, A]; NaN where the row's source does not label the attribute
    age: np.ndarray | None  # float32 [N] years, NaN where unknown; None when no source labels age
    source: np.ndarray  # int64 [N], index into `names`
    sample_weight: np.ndarray  # float64 [N], within-source sampling weight, summing to 1 per source
    share: np.ndarray  # float64 [S], each source's share of an epoch (weights normalised)
    paths: list[Path]
    race: np.ndarray  # int64 [N], UTKFace race index, -1 elsewhere (for slicing, never an output)


def detect_kind(root: str | Path) -> str:
    """'utkface' or 'celeba' for a data folder, or a one-line error naming what was looked for."""
    from faceattr.data.utkface import is_utkface

    if is_utkface(root):
        return "utkface"
    from faceattr.data.celeba import detect_layout

    try:
        detect_layout(root)
    except FaceattrError:
        raise FaceattrError(
            f"{root} is neither a CelebA folder (list_attr_celeba.txt/.csv) nor a UTKFace folder (*.jpg.chip.jpg); "
            "pass one of those, or set kind"
        ) from None
    return "celeba"


def _kind(src: SourceConfig) -> str:
    if src.kind == "auto":
        return detect_kind(src.root)
    if src.kind not in SOURCE_KINDS:
        raise FaceattrError(f"unknown source kind '{src.kind}'{did_you_mean(src.kind, SOURCE_KINDS)}; use auto, celeba or utkface")
    return src.kind


def _balance_weights(groups: list[list[Any]], power: float) -> np.ndarray:
    """Per-row weight n_cell ** -power, where a cell is one combination of the group columns; sums to 1."""
    keys = list(zip(*groups, strict=True)) if groups else []
    if not keys:
        return np.zeros(0)
    counts = Counter(keys)
    w = np.array([counts[k] ** -power for k in keys], dtype=np.float64)
    return w / w.sum()


def _check_sources(cfg: TrainConfig) -> list[tuple[SourceConfig, str]]:
    out = []
    for i, src in enumerate(cfg.data.sources):
        if not src.root:
            raise FaceattrError(f"data.sources[{i}] has no root; give the folder of its images")
        if src.weight <= 0:
            raise FaceattrError(f"data.sources[{i}].weight must be > 0, got {src.weight}")
        kind = _kind(src)
        bad = [b for b in src.balance if kind != "utkface" or b not in _UTK_BALANCE]
        if bad:
            allowed = ", ".join(_UTK_BALANCE) if kind == "utkface" else "nothing (only UTKFace sources balance)"
            raise FaceattrError(f"data.sources[{i}].balance: cannot balance a {kind} source by {', '.join(bad)}; allowed: {allowed}")
        if src.landmarks and kind != "utkface":
            raise FaceattrError(f"data.sources[{i}].landmarks: only UTKFace chips are framed by a landmarks file, "
                                f"this source is {kind}; drop `landmarks`")
        if src.native and kind != "utkface":
            raise FaceattrError(f"data.sources[{i}].native: only UTKFace chips are warped from their own pixels, "
                                f"this source is {kind}; drop `native`")
        if src.landmarks and not Path(src.landmarks).is_file():
            raise FaceattrError(f"data.sources[{i}].landmarks: no file {src.landmarks}; write it with "
                                f"scripts/utk_landmarks.py {src.root} --out {src.landmarks}, or drop `landmarks`")
        out.append((src, kind))
    return out


def load_sources(cfg: TrainConfig, pre: Any, role: str) -> SourceData:
    """Load and cache every source's `role` ('train' or 'val') split, joined in one index space."""
    from faceattr.data.cache import build_cache
    from faceattr.data.celeba import load_celeba, read_attribute_names
    from faceattr.data.utkface import ChipFrame, load_utkface

    checked = _check_sources(cfg)
    # The outputs: the first CelebA source's attributes (or Male alone without one), plus age when a
    # UTKFace source is present.
    celeba_roots = [(s, k) for s, k in checked if k == "celeba"]
    if celeba_roots:
        names = read_attribute_names(celeba_roots[0][0].root, celeba_roots[0][0].layout)
        attributes = resolve_names(cfg.data.attributes, names) if cfg.data.attributes else list(names)
    else:
        attributes = ["Male"]
    has_age = any(k == "utkface" for _, k in checked)

    parts, labels, ages, source, weights, paths, races, names_out = [], [], [], [], [], [], [], []
    for i, (src, kind) in enumerate(checked):
        name = kind if sum(k == kind for _, k in checked) == 1 else f"{kind}{i}"
        limit = src.limit if role == "train" else src.val_limit
        if kind == "celeba":
            split_name = cfg.data.train_split if role == "train" else cfg.data.val_split
            sp = load_celeba(src.root, split=split_name, attributes=attributes, layout=src.layout, limit=limit,
                             seed=cfg.seed, holdout_fraction=cfg.data.holdout_fraction)
            cache = build_cache(sp.paths, pre, cache_dir=cfg.data.cache_dir or None, workers=cfg.data.workers,
                                progress=cfg.progress)
            y = np.asarray(sp.labels, dtype=np.float32)
            a = np.full(len(sp), np.nan, dtype=np.float32)
            r = np.full(len(sp), -1, dtype=np.int64)
            w = np.full(len(sp), 1.0 / max(1, len(sp)))
            p = list(sp.paths)
        else:
            us = load_utkface(src.root, "train" if role == "train" else "valid", seed=cfg.seed, limit=limit)
            cache = build_cache(us.paths, pre, cache_dir=cfg.data.cache_dir or None, workers=cfg.data.workers,
                                progress=cfg.progress, frame=ChipFrame(landmarks=src.landmarks, native=src.native))
            y = np.full((len(us), len(attributes)), np.nan, dtype=np.float32)
            if "Male" in attributes:
                y[:, attributes.index("Male")] = us.male
            a, r, p = us.age.astype(np.float32), us.race, list(us.paths)
            cols = {"race": list(us.race), "gender": list(us.male), "age_band": us.age_band}
            w = _balance_weights([cols[b] for b in src.balance], src.balance_power) if src.balance else \
                np.full(len(us), 1.0 / max(1, len(us)))
        keep = np.flatnonzero(cache.valid)
        if len(keep) < len(cache.valid):
            logger.warning("%s %s: skipping %d unreadable image(s) of %d", name, role, len(cache.valid) - len(keep), len(cache.valid))
        if len(keep) == 0:
            raise FaceattrError(f"no readable images in the {role} split of source {name} ({src.root})")
        w = w[keep] / w[keep].sum()
        parts.append(cache.images if len(keep) == len(cache.valid) else cache.images[keep])
        labels.append(y[keep])
        ages.append(a[keep])
        races.append(r[keep])
        weights.append(w)
        source.append(np.full(len(keep), i, dtype=np.int64))
        paths += [p[j] for j in keep]
        names_out.append(name)
    share = np.array([s.weight for s, _ in checked], dtype=np.float64)
    data = SourceData(
        names=names_out, attributes=list(attributes), images=MultiImages(parts), labels=np.concatenate(labels),
        age=np.concatenate(ages) if has_age else None, source=np.concatenate(source), sample_weight=np.concatenate(weights),
        share=share / share.sum(), paths=paths, race=np.concatenate(races),
    )
    logger.info("%s data: %s", role, ", ".join(f"{n} {int((data.source == i).sum())}" for i, n in enumerate(names_out)))
    return data


def epoch_order(data: SourceData, rng: np.random.Generator) -> np.ndarray:
    """One epoch's row order: as many rows as there are in all, drawn per source by share and weight."""
    n = len(data.source)
    counts = np.floor(data.share * n).astype(np.int64)
    counts[: n - counts.sum()] += 1  # the rounding remainder, to the first sources
    picks = []
    for i, k in enumerate(counts):
        rows = np.flatnonzero(data.source == i)
        w = data.sample_weight[rows]
        if k == len(rows) and np.allclose(w, w[0]):
            picks.append(rng.permutation(rows))  # the natural mix: every row once
        else:
            picks.append(rng.choice(rows, size=int(k), replace=bool(k > len(rows) or w.max() * k > 1), p=w))
    return rng.permutation(np.concatenate(picks))
