"""Metrics for multi-label binary attributes, computed with scikit-learn (never re-derived by hand).

Conventions used everywhere in `faceattr.evaluate`:

- ``labels`` are 0/1 arrays [N, A], ``probs`` are probabilities [N, A] in [0, 1].
- An attribute is predicted present when ``prob >= threshold`` (the rule of scikit-learn's
  ``roc_curve``, so calibrated thresholds mean exactly what the ROC curve says).
- A value that is undefined on the data (ROC AUC with one class only, the error rate on positives
  when there are none) is ``None``, which JSON writes as ``null``; NaN never leaves this module.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

__all__ = [
    "OBJECTIVES",
    "MIXED_WEIGHT",
    "OVERALL_KEYS",
    "PER_ATTRIBUTE_KEYS",
    "attribute_metrics",
    "binarize",
    "calibrate_thresholds",
    "calibration_gain",
    "metric_block",
    "subgroup_metrics",
]

OBJECTIVES = ("accuracy", "balanced_accuracy", "mixed")
# "mixed" maximises accuracy + MIXED_WEIGHT x balanced accuracy unless told another weight. A small
# weight moves mostly the thresholds of rare attributes, where a little accuracy buys much recall: on
# the shipped model's holdout, cross-validated over people, 0.25 trades 0.4 points of mean accuracy
# for 3.3 points of mean balanced accuracy (0.1: 0.2 for 1.9; scripts/model_card_figures.py prints it).
MIXED_WEIGHT = 0.25

# Keys of one attribute's entry and of a block's overall numbers; the JSON schema lists the same.
PER_ATTRIBUTE_KEYS = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "balanced_accuracy",
    "auc",
    "positive_rate",
    "predicted_positive_rate",
    "majority_baseline",
    "threshold",
    "confusion",
    "error_pos",
    "error_neg",
    "n_pos",
    "n_neg",
)
OVERALL_KEYS = (
    "n_images",
    "mean_accuracy",
    "mean_balanced_accuracy",
    "mean_f1",
    "mean_precision",
    "mean_recall",
    "mean_auc",
    "exact_match",
    "hamming_loss",
)
# Per-attribute numbers whose difference between subgroups is reported as a gap.
GAP_KEYS = ("accuracy", "precision", "recall", "f1", "balanced_accuracy", "auc", "error_pos", "error_neg")


def _num(x: Any) -> float | None:
    """A plain float, or None for NaN/inf/None (JSON has no NaN)."""
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _check(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (bool labels [N, A], float64 probs [N, A]) or raise ValueError on mismatched shapes."""
    y = np.asarray(labels)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim == 1:
        y, p = y[:, None], p.reshape(-1, 1)
    if y.shape != p.shape or y.ndim != 2:
        raise ValueError(f"labels {y.shape} and probs {p.shape} must both be [N, A]")
    return y > 0.5, p


def binarize(probs: np.ndarray, thresholds: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """Predicted 0/1 (bool) from probabilities [N, A] and one threshold or one per attribute."""
    t = np.asarray(thresholds, dtype=np.float64)
    return np.asarray(probs, dtype=np.float64) >= t


def attribute_metrics(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Every per-attribute metric for one attribute (0/1 truths, probabilities) at `threshold`."""
    y, p = _check(np.asarray(y_true).reshape(-1), np.asarray(y_prob).reshape(-1))
    return _per_attribute(y, p, np.array([threshold], dtype=np.float64))[0]


def _column_stats(
    y: np.ndarray, pred: np.ndarray, p: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Confusions [A, 2, 2], precision, recall, F1 and ROC AUC (NaN when undefined) per column.

    sklearn's multilabel forms do all columns in one call; a lone [N, 1] column would be read as
    two-class data instead, so it takes the binary forms with explicit labels.
    """
    a = y.shape[1]
    if a >= 2:
        confusion = skm.multilabel_confusion_matrix(y, pred)  # [[tn, fp], [fn, tp]] per column
        precision, recall, f1, _ = skm.precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    else:
        confusion = skm.confusion_matrix(y[:, 0], pred[:, 0], labels=[False, True])[None]
        precision, recall, f1, _ = skm.precision_recall_fscore_support(
            y[:, 0], pred[:, 0], labels=[True], average=None, zero_division=0
        )
    auc = np.full(a, np.nan)
    n_pos = y.sum(axis=0)
    cols = np.flatnonzero((n_pos > 0) & (n_pos < y.shape[0]))  # AUC needs both classes
    if cols.size >= 2:
        auc[cols] = skm.roc_auc_score(y[:, cols], p[:, cols], average=None)
    elif cols.size == 1:
        auc[cols[0]] = skm.roc_auc_score(y[:, cols[0]], p[:, cols[0]])
    return confusion, precision, recall, f1, auc


def _per_attribute(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> list[dict[str, Any]]:
    """Per-attribute metric dicts for bool labels `y` and probs `p` [N, A]."""
    n, a = y.shape
    pred = p >= thresholds
    if n == 0:
        empty = {k: None for k in PER_ATTRIBUTE_KEYS}
        return [dict(empty, threshold=float(t), confusion=[[0, 0], [0, 0]], n_pos=0, n_neg=0) for t in thresholds]
    confusion, precision, recall, f1, auc = _column_stats(y, pred, p)
    out: list[dict[str, Any]] = []
    for j in range(a):
        yj, pj = y[:, j], pred[:, j]
        (tn, fp), (fn, tp) = confusion[j].tolist()
        n_pos, n_neg = tp + fn, tn + fp
        with warnings.catch_warnings():
            # With one class present sklearn warns and returns the recall of that class: we keep
            # that value (the only defined half of the mean) and skip the warning.
            warnings.simplefilter("ignore", UserWarning)
            balanced = skm.balanced_accuracy_score(yj, pj)
        pos_rate = n_pos / n
        out.append(
            {
                "accuracy": _num(skm.accuracy_score(yj, pj)),
                "precision": _num(precision[j]),
                "recall": _num(recall[j]),
                "f1": _num(f1[j]),
                "balanced_accuracy": _num(balanced),
                "auc": _num(auc[j]),
                "positive_rate": _num(pos_rate),
                "predicted_positive_rate": _num(pj.mean()),
                "majority_baseline": _num(max(pos_rate, 1.0 - pos_rate)),
                "threshold": float(thresholds[j]),
                "confusion": [[int(tn), int(fp)], [int(fn), int(tp)]],
                "error_pos": _num(fn / n_pos) if n_pos else None,
                "error_neg": _num(fp / n_neg) if n_neg else None,
                "n_pos": int(n_pos),
                "n_neg": int(n_neg),
            }
        )
    return out


def _mean(values: list[float | None]) -> float | None:
    """Mean of the defined values (None when none is defined)."""
    kept = [v for v in values if v is not None]
    return _num(np.mean(kept)) if kept else None


def metric_block(
    labels: np.ndarray,
    probs: np.ndarray,
    attributes: Sequence[str],
    thresholds: float | Sequence[float] | np.ndarray = 0.5,
) -> dict[str, Any]:
    """Overall metrics plus ``per_attribute`` for labels/probs [N, A] at the given thresholds."""
    y, p = _check(labels, probs)
    if y.shape[1] != len(attributes):
        raise ValueError(f"{y.shape[1]} label columns but {len(attributes)} attribute names")
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (y.shape[1],)).copy()
    per = _per_attribute(y, p, t)
    n = y.shape[0]
    pred = p >= t
    block: dict[str, Any] = {
        "n_images": int(n),
        "mean_accuracy": _mean([m["accuracy"] for m in per]),
        "mean_balanced_accuracy": _mean([m["balanced_accuracy"] for m in per]),
        "mean_f1": _mean([m["f1"] for m in per]),
        "mean_precision": _mean([m["precision"] for m in per]),
        "mean_recall": _mean([m["recall"] for m in per]),
        "mean_auc": _mean([m["auc"] for m in per]),
        # On 2-D indicator arrays accuracy_score is the subset (exact-match) ratio.
        "exact_match": _num(skm.accuracy_score(y, pred)) if n else None,
        "hamming_loss": _num(skm.hamming_loss(y, pred)) if n else None,
        "per_attribute": dict(zip(attributes, per, strict=True)),
    }
    return block


def _gap(a: float | None, b: float | None) -> float | None:
    """b - a, or None when either side is undefined."""
    return None if a is None or b is None else _num(b - a)


def subgroup_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    attributes: Sequence[str],
    thresholds: float | Sequence[float] | np.ndarray,
    groups: Mapping[str, np.ndarray],
) -> dict[str, Any]:
    """Metric blocks per value ("0", "1") of each grouping attribute, plus ``gap`` = group 1 minus group 0.

    `groups` maps a grouping attribute's name to its 0/1 labels [N]. The gap holds the overall
    numbers and, under ``per_attribute``, the GAP_KEYS of every attribute.
    """
    y, p = _check(labels, probs)
    out: dict[str, Any] = {}
    for name, values in groups.items():
        v = np.asarray(values).reshape(-1) > 0.5
        if v.shape[0] != y.shape[0]:
            raise ValueError(f"group '{name}' has {v.shape[0]} labels for {y.shape[0]} images")
        g0 = metric_block(y[~v], p[~v], attributes, thresholds)
        g1 = metric_block(y[v], p[v], attributes, thresholds)
        gap: dict[str, Any] = {k: _gap(g0[k], g1[k]) for k in OVERALL_KEYS if k != "n_images"}
        gap["per_attribute"] = {
            a: {k: _gap(g0["per_attribute"][a][k], g1["per_attribute"][a][k]) for k in GAP_KEYS} for a in attributes
        }
        out[name] = {"0": g0, "1": g1, "gap": gap}
    return out


def calibrate_thresholds(
    labels: np.ndarray, probs: np.ndarray, objective: str = "accuracy", *, balanced_weight: float = MIXED_WEIGHT
) -> tuple[np.ndarray, list[float | None]]:
    """Per-attribute thresholds maximising `objective` on (labels, probs); returns (thresholds, best scores).

    "mixed" scores accuracy + `balanced_weight` x balanced accuracy (the weight is ignored otherwise).

    Candidates are the cut points of scikit-learn's ROC curve. The chosen threshold sits halfway
    between the winning score and the next lower one, so a new image with a nearby probability is
    not decided by a hair; ties are broken towards 0.5. Attributes with one class only keep 0.5.
    """
    _check_objective(objective, balanced_weight)
    y, p = _check(labels, probs)
    n, a = y.shape
    thresholds = np.full(a, 0.5)
    scores: list[float | None] = [None] * a
    for j in range(a):
        n_pos = int(y[:, j].sum())
        n_neg = n - n_pos
        if n_pos == 0 or n_neg == 0:
            continue
        fpr, tpr, cuts = skm.roc_curve(y[:, j], p[:, j], drop_intermediate=False)
        accuracy = (tpr * n_pos + (1.0 - fpr) * n_neg) / n
        balanced = (tpr + 1.0 - fpr) / 2.0
        score = {"accuracy": accuracy, "balanced_accuracy": balanced,
                 "mixed": accuracy + balanced_weight * balanced}[objective]
        # cuts[0] is +inf (predict nothing); the "predict everything" end is the lowest score.
        finite = np.isfinite(cuts)
        cuts = np.where(finite, cuts, 1.0 + 1e-6)
        lower = np.append(cuts[1:], 0.0)  # the next cut below each candidate
        mids = np.clip((cuts + lower) / 2.0, 0.0, 1.0)
        best = score.max()
        ties = np.flatnonzero(np.isclose(score, best, rtol=0, atol=1e-12))
        k = ties[np.argmin(np.abs(mids[ties] - 0.5))]
        thresholds[j] = float(mids[k])
        scores[j] = _num(best)
    return thresholds, scores


def _check_objective(objective: str, balanced_weight: float) -> None:
    """Reject an unknown objective or a negative weight."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if not balanced_weight >= 0:
        raise ValueError(f"balanced_weight must be >= 0, got {balanced_weight}")


def _objective_score(truth: np.ndarray, pred: np.ndarray, objective: str, balanced_weight: float = MIXED_WEIGHT) -> float:
    """Mean over attributes of accuracy, balanced accuracy or their mix, for bool arrays [N, A]."""
    accuracy = float((pred == truth).mean())
    if objective == "accuracy":
        return accuracy
    pos, neg = truth.sum(0), (~truth).sum(0)
    tpr = (pred & truth).sum(0) / np.maximum(pos, 1)
    tnr = (~pred & ~truth).sum(0) / np.maximum(neg, 1)
    balanced = float(((tpr + tnr) / 2).mean())
    return balanced if objective == "balanced_accuracy" else accuracy + balanced_weight * balanced


def calibration_gain(
    labels: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray,
    objective: str = "accuracy",
    *,
    balanced_weight: float = MIXED_WEIGHT,
    repeats: int = 10,
    seed: int = 0,
) -> float | None:
    """How much calibrated thresholds beat 0.5 on people they were not chosen on (mean `objective` gain).

    The rows' `groups` (identities) are halved at random `repeats` times; each time thresholds are
    calibrated on one half and scored on the other, both ways round. A gain at or below zero means
    the per-attribute thresholds fit the calibration images rather than the task. None when there
    are fewer than 4 groups.
    """
    _check_objective(objective, balanced_weight)
    y, p = _check(labels, probs)
    groups = np.asarray(groups)
    if groups.shape != (y.shape[0],):
        raise ValueError(f"need one group per row: {groups.shape} for {y.shape[0]} rows")
    people = np.unique(groups)
    if len(people) < 4:
        return None
    truth = y >= 0.5
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(repeats):
        rng.shuffle(people)
        half = np.isin(groups, people[: len(people) // 2])
        for fit_rows, test_rows in ((half, ~half), (~half, half)):
            t, _ = calibrate_thresholds(y[fit_rows], p[fit_rows], objective, balanced_weight=balanced_weight)
            held = p[test_rows]
            gains.append(_objective_score(truth[test_rows], held >= t, objective, balanced_weight)
                         - _objective_score(truth[test_rows], held >= 0.5, objective, balanced_weight))
    return float(np.mean(gains))
