"""Gender and age metrics sliced by group, and the lipstick shortcut check: arrays in, JSON-ready dicts out.

Pure functions (no files, no models), so every number can be checked by hand on small arrays.

`group_metrics` slices one evaluation of gender (and age, when the model estimates it) by the
true gender, race group and age band of each image, and by the crossed gender x race x age band
cells. Images where no face was found ("missed") count in each slice's ``n_images`` and
``n_missed`` but not in its metrics, so a detector that fails on one group shows up instead of
vanishing. Race is a label of the data used only to slice; it is never predicted.

`lipstick_shortcut` measures the shortcut CelebA teaches: women without lipstick called Male.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

__all__ = [
    "ADULT_AGE",
    "GENDERS",
    "OLD_AGE",
    "SLICE_KEYS",
    "group_metrics",
    "lipstick_shortcut",
    "slice_metrics",
]

# The project's targets count adults from 15 and "old" from 70: the edges of UTKFace's first and
# last age bands (faceattr.data.utkface.AGE_BANDS).
ADULT_AGE = 15.0
OLD_AGE = 70.0
# Gender slice names, by the 0/1 Male label.
GENDERS = ("female", "male")
SLICE_KEYS = (
    "n_images", "n_missed", "n", "n_female", "n_male", "n_correct",
    "gender_accuracy", "gender_balanced_accuracy", "age_mae", "age_bias",
)


def _num(x: Any) -> float | None:
    """A plain float, or None for NaN/inf (JSON has no NaN)."""
    v = float(x)
    return v if math.isfinite(v) else None


def slice_metrics(
    male: np.ndarray, called_male: np.ndarray, age: np.ndarray, age_pred: np.ndarray | None, detected: np.ndarray
) -> dict[str, Any]:
    """Counts, gender accuracy / balanced accuracy and age MAE / bias (years) of one slice's rows.

    Metrics cover the `detected` rows only; on a slice with no detected face they are None, and
    with one gender present balanced accuracy is that gender's accuracy (scikit-learn's rule).
    """
    y = np.asarray(male).reshape(-1) > 0.5
    pred = np.asarray(called_male, dtype=bool).reshape(-1)
    found = np.asarray(detected, dtype=bool).reshape(-1)
    n = int(found.sum())
    out: dict[str, Any] = {
        "n_images": int(found.size),
        "n_missed": int(found.size - n),
        "n": n,
        "n_female": int((~y[found]).sum()),
        "n_male": int(y[found].sum()),
        "n_correct": int((y[found] == pred[found]).sum()),
        "gender_accuracy": None,
        "gender_balanced_accuracy": None,
        "age_mae": None,
        "age_bias": None,
    }
    if n == 0:
        return out
    out["gender_accuracy"] = _num(skm.accuracy_score(y[found], pred[found]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # one gender present: keep that gender's recall
        out["gender_balanced_accuracy"] = _num(skm.balanced_accuracy_score(y[found], pred[found]))
    if age_pred is not None:
        truth = np.asarray(age, dtype=np.float64).reshape(-1)[found]
        guess = np.asarray(age_pred, dtype=np.float64).reshape(-1)[found]
        out["age_mae"] = _num(skm.mean_absolute_error(truth, guess))
        out["age_bias"] = _num(np.mean(guess - truth))  # > 0: the model guesses too old
    return out


def _band_index(age: np.ndarray, bands: Sequence[tuple[str, float, float]]) -> np.ndarray:
    """Index into `bands` of each age (ages past the last band go to the last)."""
    idx = np.full(age.shape, len(bands) - 1, dtype=np.int64)
    for k in range(len(bands) - 1, -1, -1):
        _, lo, hi = bands[k]
        idx[(age >= lo) & (age < hi)] = k
    return idx


def group_metrics(
    male: np.ndarray,
    male_prob: np.ndarray,
    race: np.ndarray,
    age: np.ndarray,
    *,
    threshold: float,
    race_names: Sequence[str],
    bands: Sequence[tuple[str, float, float]],
    age_pred: np.ndarray | None = None,
    detected: np.ndarray | None = None,
    min_n: int = 20,
) -> dict[str, Any]:
    """Gender accuracy and age MAE overall, per gender, race, age band and crossed cell, plus headline groups.

    Inputs are per image [N]: true `male` (0/1), the model's Male probability `male_prob` (called
    male when >= `threshold`), `race` (index into `race_names`), true `age` and predicted
    `age_pred` in years (None: the model has no age output), and `detected` (False where no face
    was found; those rows' predictions are ignored, NaN allowed). `bands` are (label, lowest age,
    first age of the next band). The worst group is the slice (gender, race, age band or cell) with
    the lowest gender accuracy among those with at least `min_n` detected faces; None when none has.
    """
    y = np.asarray(male, dtype=np.float64).reshape(-1) > 0.5
    n = y.size
    found = np.ones(n, dtype=bool) if detected is None else np.asarray(detected, dtype=bool).reshape(-1)
    prob = np.asarray(male_prob, dtype=np.float64).reshape(-1)
    r = np.asarray(race, dtype=np.int64).reshape(-1)
    years = np.asarray(age, dtype=np.float64).reshape(-1)
    guess = None if age_pred is None else np.asarray(age_pred, dtype=np.float64).reshape(-1)
    for name, arr in (("male_prob", prob), ("race", r), ("age", years), ("detected", found),
                      *((("age_pred", guess),) if guess is not None else ())):
        if arr.shape != (n,):
            raise ValueError(f"{name} has shape {arr.shape}; need one value per image ({n})")
    if r.size and (r.min() < 0 or r.max() >= len(race_names)):
        raise ValueError(f"race indices must be in 0..{len(race_names) - 1}")
    if found.any() and not np.isfinite(prob[found]).all():
        raise ValueError("male_prob must be finite where a face was detected")
    called = np.where(found, np.nan_to_num(prob, nan=0.0) >= threshold, False)
    band = _band_index(years, bands)

    def sl(mask: np.ndarray) -> dict[str, Any]:
        return slice_metrics(y[mask], called[mask], years[mask], None if guess is None else guess[mask], found[mask])

    gender = {GENDERS[g]: sl(y == bool(g)) for g in (0, 1)}
    races = {name: sl(r == k) for k, name in enumerate(race_names)}
    age_bands = {label: sl(band == k) for k, (label, _, _) in enumerate(bands)}
    cells: list[dict[str, Any]] = []
    for g in (0, 1):
        for k, race_name in enumerate(race_names):
            for b, (label, _, _) in enumerate(bands):
                mask = (y == bool(g)) & (r == k) & (band == b)
                if mask.any():  # only cells that hold images: 50 mostly empty rows help nobody
                    cells.append({"gender": GENDERS[g], "race": race_name, "age_band": label, **sl(mask)})
    adult = years >= ADULT_AGE
    headline = {
        "adults": sl(adult),
        "adult_women": sl(adult & ~y),
        "adult_men": sl(adult & y),
        "adult_race": {name: sl(adult & (r == k)) for k, name in enumerate(race_names)},
        "age_70_plus": sl(years >= OLD_AGE),
        "under_15": sl(~adult),
    }

    candidates: list[tuple[str, str, dict[str, Any]]] = [
        *(("gender", k, v) for k, v in gender.items()),
        *(("race", k, v) for k, v in races.items()),
        *(("age_band", k, v) for k, v in age_bands.items()),
        *(("cell", f"{c['gender']} · {c['race']} · {c['age_band']}", c) for c in cells),
    ]
    eligible = [c for c in candidates if c[2]["n"] >= min_n and c[2]["gender_accuracy"] is not None]
    worst = None
    if eligible:
        kind, name, s = min(eligible, key=lambda c: c[2]["gender_accuracy"])  # first of equals: the coarser slice
        worst = {"slice": kind, "group": name, "gender_accuracy": s["gender_accuracy"], "n": s["n"]}
    return {
        "threshold": float(threshold),
        "min_n": int(min_n),
        "overall": sl(np.ones(n, dtype=bool)),
        "gender": gender,
        "race": races,
        "age_band": age_bands,
        "cells": cells,
        "headline": headline,
        "worst_group": worst,
    }


def lipstick_shortcut(
    male: np.ndarray, male_prob: np.ndarray, lipstick: np.ndarray, threshold: float = 0.5
) -> dict[str, Any]:
    """Among women (Male = 0), the share called Male without lipstick vs with it, with counts.

    A model that learned "no make-up means male" calls many more women without lipstick Male;
    ``gap`` is rate(without) - rate(with), None when either group is empty.
    """
    y = np.asarray(male, dtype=np.float64).reshape(-1) > 0.5
    prob = np.asarray(male_prob, dtype=np.float64).reshape(-1)
    lip = np.asarray(lipstick, dtype=np.float64).reshape(-1) > 0.5
    if not (prob.shape == lip.shape == y.shape):
        raise ValueError(f"male {y.shape}, male_prob {prob.shape} and lipstick {lip.shape} must have one value per image")
    called = prob >= threshold

    def part(mask: np.ndarray) -> dict[str, Any]:
        k, m = int(called[mask].sum()), int(mask.sum())
        return {"n": m, "called_male": k, "rate": k / m if m else None}

    without, with_ = part(~y & ~lip), part(~y & lip)
    gap = None if without["rate"] is None or with_["rate"] is None else _num(without["rate"] - with_["rate"])
    return {"threshold": float(threshold), "without_lipstick": without, "with_lipstick": with_, "gap": gap}
