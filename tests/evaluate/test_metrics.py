"""Metrics against numbers worked out by hand on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest

from faceattr.evaluate.metrics import (
    attribute_metrics,
    calibrate_thresholds,
    calibration_gain,
    metric_block,
    subgroup_metrics,
)

# One attribute, 8 images: 3 positives, 5 negatives.
Y1 = np.array([1, 1, 1, 0, 0, 0, 0, 0])
P1 = np.array([0.9, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4, 0.55])
# At 0.5: predictions 1 1 0 1 0 0 0 1 -> TP=2 (0.9, 0.6), FN=1 (0.3), FP=2 (0.7, 0.55), TN=3.
# A second attribute, wrong only on image 6 (a false positive).
Y2 = np.array([0, 1, 0, 1, 0, 1, 0, 1])
P2 = np.array([0.1, 0.8, 0.2, 0.9, 0.3, 0.6, 0.7, 0.95])


def test_attribute_metrics_match_a_hand_computed_confusion() -> None:
    m = attribute_metrics(Y1, P1, 0.5)
    assert m["confusion"] == [[3, 2], [1, 2]]  # [[tn, fp], [fn, tp]]
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))  # = 4/7
    assert m["f1"] == pytest.approx(4 / 7)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 5) / 2)
    # AUC: of 3 x 5 (positive, negative) pairs, 0.9 beats 5, 0.6 beats 4, 0.3 beats 2 -> 11/15.
    assert m["auc"] == pytest.approx(11 / 15)
    assert m["positive_rate"] == pytest.approx(3 / 8)
    assert m["predicted_positive_rate"] == pytest.approx(4 / 8)
    assert m["majority_baseline"] == pytest.approx(5 / 8)
    assert m["error_pos"] == pytest.approx(1 / 3)
    assert m["error_neg"] == pytest.approx(2 / 5)
    assert (m["n_pos"], m["n_neg"], m["threshold"]) == (3, 5, 0.5)


def test_threshold_is_inclusive_and_moves_the_confusion() -> None:
    # prob >= threshold is "present": at 0.6 the 0.6 positive still counts, the 0.55 negative does not.
    m = attribute_metrics(Y1, P1, 0.6)
    assert m["confusion"] == [[4, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(6 / 8)


def test_one_class_gives_null_auc_and_null_error_on_the_missing_class() -> None:
    m = attribute_metrics(np.zeros(4), np.array([0.1, 0.7, 0.2, 0.3]), 0.5)
    assert m["auc"] is None
    assert m["error_pos"] is None
    assert m["error_neg"] == pytest.approx(1 / 4)
    assert m["precision"] == 0.0 and m["recall"] == 0.0  # zero_division=0, no NaN
    assert m["majority_baseline"] == 1.0


def test_block_overall_numbers() -> None:
    y = np.stack([Y1, Y2], 1)
    p = np.stack([P1, P2], 1)
    b = metric_block(y, p, ["A", "B"], 0.5)
    assert b["n_images"] == 8
    # The multilabel (vectorised) path agrees with the single-column path.
    assert b["per_attribute"]["A"] == attribute_metrics(Y1, P1, 0.5)
    # A: 5/8 right; B: 7/8 right.
    assert b["mean_accuracy"] == pytest.approx((5 / 8 + 7 / 8) / 2)
    # Wrong decisions: A on images 2, 3, 7; B on image 6 -> 4 of 16; all-right rows: 0, 1, 4, 5.
    assert b["hamming_loss"] == pytest.approx(4 / 16)
    assert b["exact_match"] == pytest.approx(4 / 8)
    # B: TP=4, FP=1, FN=0 -> precision 4/5, recall 1, F1 8/9.
    assert b["per_attribute"]["B"]["f1"] == pytest.approx(8 / 9)
    assert b["mean_f1"] == pytest.approx((4 / 7 + 8 / 9) / 2)
    assert b["mean_precision"] == pytest.approx((1 / 2 + 4 / 5) / 2)
    assert b["mean_recall"] == pytest.approx((2 / 3 + 1) / 2)
    # B: TNR 3/4, TPR 1.
    assert b["mean_balanced_accuracy"] == pytest.approx(((2 / 3 + 3 / 5) / 2 + (1 + 3 / 4) / 2) / 2)
    # B's AUC: 16 pairs, only positive 0.6 < negative 0.7 is out of order -> 15/16.
    assert b["per_attribute"]["B"]["auc"] == pytest.approx(15 / 16)
    # Per-attribute thresholds: B at 0.75 drops its false positive (0.7) but misses its 0.6 positive.
    b2 = metric_block(y, p, ["A", "B"], [0.5, 0.75])
    assert b2["per_attribute"]["B"]["confusion"] == [[4, 0], [1, 3]]
    assert b2["per_attribute"]["A"] == b["per_attribute"]["A"]
    assert b2["per_attribute"]["B"]["threshold"] == 0.75


def test_subgroups_and_gap_are_group1_minus_group0() -> None:
    y, p = Y1[:, None], P1[:, None]
    group = np.array([1, 1, 0, 0, 1, 1, 0, 0])  # group 1: images 0, 1, 4, 5 (all right)
    s = subgroup_metrics(y, p, ["A"], 0.5, {"G": group})["G"]
    assert s["1"]["n_images"] == 4 and s["0"]["n_images"] == 4
    assert s["1"]["mean_accuracy"] == 1.0
    # Group 0: images 2 (FN), 3 (FP), 6 (TN), 7 (FP) -> 1/4 right.
    assert s["0"]["mean_accuracy"] == pytest.approx(1 / 4)
    assert s["gap"]["mean_accuracy"] == pytest.approx(1 - 1 / 4)
    assert s["gap"]["per_attribute"]["A"]["accuracy"] == pytest.approx(3 / 4)
    # Group 0 has one positive (missed) and three negatives (two false alarms).
    assert s["0"]["per_attribute"]["A"]["error_pos"] == 1.0
    assert s["0"]["per_attribute"]["A"]["error_neg"] == pytest.approx(2 / 3)


def test_empty_subgroup_gives_nulls_not_errors() -> None:
    s = subgroup_metrics(Y1[:, None], P1[:, None], ["A"], 0.5, {"G": np.zeros(8)})["G"]
    assert s["1"]["n_images"] == 0
    assert s["1"]["mean_accuracy"] is None
    assert s["gap"]["mean_accuracy"] is None


def test_calibration_by_hand() -> None:
    # Sorted by prob: 0.9 P, 0.7 N, 0.6 P, 0.55 N, 0.4 N, 0.3 P, 0.2 N, 0.1 N.
    # Accuracy when predicting the top k positive: k=1 -> 6/8, k=3 -> 6/8 (every other k is lower).
    # Ties go towards 0.5: k=3, halfway between 0.6 and 0.55.
    t, s = calibrate_thresholds(Y1[:, None], P1[:, None], "accuracy")
    assert t[0] == pytest.approx(0.575)
    assert s[0] == pytest.approx(6 / 8)
    # Imbalanced: 1 positive (0.3) among 10; accuracy prefers "never" (9/10), balanced accuracy
    # prefers the top two (TPR 1, TNR 8/9) -> cut halfway between 0.3 and 0.2.
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0])[:, None]
    p = np.array([0.3, 0.4, 0.2, 0.1, 0.15, 0.05, 0.12, 0.18, 0.02, 0.01])[:, None]
    t_acc, s_acc = calibrate_thresholds(y, p, "accuracy")
    assert s_acc[0] == pytest.approx(0.9)
    assert t_acc[0] > 0.4
    assert metric_block(y, p, ["A"], t_acc)["mean_accuracy"] == pytest.approx(0.9)
    t_bal, s_bal = calibrate_thresholds(y, p, "balanced_accuracy")
    assert t_bal[0] == pytest.approx(0.25)
    assert s_bal[0] == pytest.approx((1 + 8 / 9) / 2)
    # One class only: nothing to choose, 0.5 kept.
    t_one, s_one = calibrate_thresholds(np.zeros((5, 1)), np.random.default_rng(0).random((5, 1)))
    assert t_one[0] == 0.5 and s_one[0] is None
    with pytest.raises(ValueError):
        calibrate_thresholds(y, p, "f1")


def test_mixed_calibration_buys_balanced_accuracy_only_as_dearly_as_its_weight_says() -> None:
    # One positive (0.2) below two negatives (0.4, 0.3) among 10. "Never": accuracy 0.9, balanced 0.5;
    # the top three: accuracy 0.8, balanced (1 + 7/9) / 2. Weight 0.25: 1.025 beats 1.022, keep "never";
    # weight 1: 1.689 beats 1.4, take the top three (cut halfway between 0.2 and 0.18).
    y = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0])[:, None]
    p = np.array([0.4, 0.3, 0.2, 0.1, 0.15, 0.05, 0.12, 0.18, 0.02, 0.01])[:, None]
    t_small, s_small = calibrate_thresholds(y, p, "mixed", balanced_weight=0.25)
    assert t_small[0] > 0.4 and s_small[0] == pytest.approx(0.9 + 0.25 * 0.5)
    t_big, s_big = calibrate_thresholds(y, p, "mixed", balanced_weight=1.0)
    assert t_big[0] == pytest.approx(0.19)
    assert s_big[0] == pytest.approx(0.8 + (1 + 7 / 9) / 2)
    t_zero, _ = calibrate_thresholds(y, p, "mixed", balanced_weight=0.0)
    assert t_zero[0] == calibrate_thresholds(y, p, "accuracy")[0][0]
    with pytest.raises(ValueError, match="balanced_weight"):
        calibrate_thresholds(y, p, "mixed", balanced_weight=-1.0)


def test_calibration_gain_is_positive_for_a_biased_model_and_negative_for_a_calibrated_one() -> None:
    rng = np.random.default_rng(0)
    n, a = 2000, 4
    groups = rng.integers(0, 400, size=n)  # 400 people, 5 images each on average
    truth_p = rng.uniform(0.05, 0.95, size=(n, a))
    labels = (rng.uniform(size=(n, a)) < truth_p).astype(float)
    # Calibrated probabilities: 0.5 is already the best threshold, so tuning one only fits noise.
    assert calibration_gain(labels, truth_p, groups) < 0
    # A model that over-states every attribute (logit + 1.5): a higher threshold really is better.
    logit = np.log(truth_p / (1 - truth_p))
    biased = 1 / (1 + np.exp(-(logit + 1.5)))
    assert calibration_gain(labels, biased, groups) > 0.01
    assert calibration_gain(labels, biased, groups, "balanced_accuracy") is not None
    assert calibration_gain(labels, biased, np.zeros(n)) is None  # one person: nothing to hold out
    with pytest.raises(ValueError, match="one group per row"):
        calibration_gain(labels, biased, groups[:-1])

