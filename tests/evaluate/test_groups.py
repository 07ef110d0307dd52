"""group_metrics and lipstick_shortcut against numbers worked out by hand on eight images."""

from __future__ import annotations

import numpy as np
import pytest

from faceattr.evaluate.groups import group_metrics, lipstick_shortcut, slice_metrics

RACES = ("A", "B")
BANDS = (("kid", 0, 15), ("adult", 15, 70), ("old", 70, 1000))

# Per image: true male, P(Male), race, true age, predicted age, face found. Threshold 0.5.
#   0: man,   0.90 -> male   right, A, 30 -> 32 (+2)
#   1: man,   0.20 -> female WRONG, A, 40 -> 35 (-5)
#   2: woman, 0.10 -> female right, A, 20 -> 20 ( 0)
#   3: woman, 0.70 -> male   WRONG, B, 10 -> 16 (+6)
#   4: woman, no face found (missed),  B, 75
#   5: man,   0.60 -> male   right, B, 80 -> 70 (-10)
#   6: woman, 0.30 -> female right, A, 12 -> 12 ( 0)
#   7: man,   0.55 -> male   right, B, 25 -> 29 (+4)
MALE = np.array([1, 1, 0, 0, 0, 1, 0, 1], dtype=np.float32)
PROB = np.array([0.9, 0.2, 0.1, 0.7, np.nan, 0.6, 0.3, 0.55], dtype=np.float32)
RACE = np.array([0, 0, 0, 1, 1, 1, 0, 1])
AGE = np.array([30, 40, 20, 10, 75, 80, 12, 25], dtype=np.float32)
AGE_PRED = np.array([32, 35, 20, 16, np.nan, 70, 12, 29], dtype=np.float32)
FOUND = np.isfinite(PROB)


def _groups(**kw: object) -> dict:
    args: dict = {"threshold": 0.5, "race_names": RACES, "bands": BANDS, "age_pred": AGE_PRED, "detected": FOUND}
    args.update(kw)
    return group_metrics(MALE, PROB, RACE, AGE, **args)


def test_overall_and_single_slices_match_hand_counts() -> None:
    g = _groups()
    o = g["overall"]
    assert (o["n_images"], o["n_missed"], o["n"], o["n_female"], o["n_male"], o["n_correct"]) == (8, 1, 7, 3, 4, 5)
    assert o["gender_accuracy"] == pytest.approx(5 / 7)
    assert o["gender_balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 3) / 2)  # men 3 of 4 right, women 2 of 3
    assert o["age_mae"] == pytest.approx(27 / 7)  # 2 + 5 + 0 + 6 + 10 + 0 + 4
    assert o["age_bias"] == pytest.approx(-3 / 7)

    women, men = g["gender"]["female"], g["gender"]["male"]
    assert (women["n_images"], women["n_missed"], women["n"]) == (4, 1, 3)
    assert women["gender_accuracy"] == pytest.approx(2 / 3)
    assert women["gender_balanced_accuracy"] == pytest.approx(2 / 3)  # one class: its recall
    assert women["age_mae"] == pytest.approx(2.0) and women["age_bias"] == pytest.approx(2.0)
    assert men["gender_accuracy"] == pytest.approx(3 / 4)
    assert men["age_mae"] == pytest.approx(21 / 4) and men["age_bias"] == pytest.approx(-9 / 4)

    a, b = g["race"]["A"], g["race"]["B"]
    assert (a["n"], a["gender_accuracy"], a["age_mae"]) == (4, pytest.approx(3 / 4), pytest.approx(7 / 4))
    assert (b["n_images"], b["n_missed"], b["n"]) == (4, 1, 3)
    assert b["gender_accuracy"] == pytest.approx(2 / 3)
    assert b["gender_balanced_accuracy"] == pytest.approx(0.5)  # both men right, the one woman wrong
    assert b["age_mae"] == pytest.approx(20 / 3)

    kid, adult, old = (g["age_band"][k] for k in ("kid", "adult", "old"))
    assert (kid["n"], kid["gender_accuracy"]) == (2, pytest.approx(1 / 2))
    assert (adult["n"], adult["gender_accuracy"]) == (4, pytest.approx(3 / 4))
    assert (old["n_images"], old["n_missed"], old["n"], old["gender_accuracy"]) == (2, 1, 1, 1.0)


def test_cells_hold_every_image_once_and_empty_metrics_are_none() -> None:
    g = _groups()
    cells = {(c["gender"], c["race"], c["age_band"]): c for c in g["cells"]}
    assert set(cells) == {("female", "A", "kid"), ("female", "A", "adult"), ("female", "B", "kid"),
                          ("female", "B", "old"), ("male", "A", "adult"), ("male", "B", "adult"), ("male", "B", "old")}
    assert sum(c["n"] for c in g["cells"]) == 7 and sum(c["n_images"] for c in g["cells"]) == 8
    missed_only = cells[("female", "B", "old")]  # image 4: its only image had no face
    assert (missed_only["n_images"], missed_only["n_missed"], missed_only["n"]) == (1, 1, 0)
    assert missed_only["gender_accuracy"] is None and missed_only["age_mae"] is None
    assert cells[("male", "A", "adult")]["gender_accuracy"] == pytest.approx(0.5)
    for part in ("gender", "race", "age_band"):
        assert sum(s["n"] for s in g[part].values()) == 7
        assert sum(s["n_missed"] for s in g[part].values()) == 1


def test_headline_groups() -> None:
    h = _groups()["headline"]
    assert (h["adults"]["n_images"], h["adults"]["n"]) == (6, 5)  # age >= 15: images 0 1 2 4 5 7
    assert h["adults"]["gender_accuracy"] == pytest.approx(4 / 5)
    assert (h["adult_women"]["n"], h["adult_women"]["gender_accuracy"]) == (1, 1.0)
    assert h["adult_men"]["gender_accuracy"] == pytest.approx(3 / 4)
    assert h["adult_race"]["A"]["gender_accuracy"] == pytest.approx(2 / 3)
    assert (h["adult_race"]["B"]["n"], h["adult_race"]["B"]["gender_accuracy"]) == (2, 1.0)
    assert (h["age_70_plus"]["n_images"], h["age_70_plus"]["n"]) == (2, 1)
    assert (h["under_15"]["n"], h["under_15"]["gender_accuracy"]) == (2, pytest.approx(1 / 2))


def test_worst_group_needs_min_n_and_names_the_slice() -> None:
    # n >= 3: female and race B tie at 2/3; the gender slice comes first.
    assert _groups(min_n=3)["worst_group"] == {"slice": "gender", "group": "female",
                                               "gender_accuracy": pytest.approx(2 / 3), "n": 3}
    assert _groups(min_n=4)["worst_group"]["group"] == "male"  # 3/4, first of male, A and adult
    assert _groups(min_n=8)["worst_group"] is None
    # n >= 1: a one-image cell that is wrong is the worst.
    assert _groups(min_n=1)["worst_group"] == {"slice": "cell", "group": "female · B · kid",
                                               "gender_accuracy": 0.0, "n": 1}


def test_threshold_no_age_and_all_detected() -> None:
    prob = np.nan_to_num(PROB, nan=0.4)
    g = group_metrics(MALE, prob, RACE, AGE, threshold=0.65, race_names=RACES, bands=BANDS)
    # At 0.65 images 5 (0.6) and 7 (0.55) turn female (wrong), 3 (0.7) stays male (wrong); 4 (0.4) is right.
    assert g["overall"]["n"] == 8 and g["overall"]["n_missed"] == 0
    assert g["overall"]["n_correct"] == 4 and g["threshold"] == 0.65
    assert g["overall"]["age_mae"] is None and g["overall"]["age_bias"] is None


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="one value per image"):
        group_metrics(MALE, PROB[:5], RACE, AGE, threshold=0.5, race_names=RACES, bands=BANDS, detected=FOUND)
    with pytest.raises(ValueError, match="race indices"):
        group_metrics(MALE, PROB, RACE + 1, AGE, threshold=0.5, race_names=RACES, bands=BANDS, detected=FOUND)
    with pytest.raises(ValueError, match="finite"):
        group_metrics(MALE, PROB, RACE, AGE, threshold=0.5, race_names=RACES, bands=BANDS)  # NaN counted as found


def test_empty_slice() -> None:
    s = slice_metrics(np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0), None, np.zeros(0, dtype=bool))
    assert s["n_images"] == s["n"] == 0 and s["gender_accuracy"] is None and s["gender_balanced_accuracy"] is None


def test_lipstick_shortcut_by_hand() -> None:
    male = np.array([0, 0, 0, 0, 0, 1, 1])
    prob = np.array([0.6, 0.4, 0.7, 0.2, 0.1, 0.9, 0.3])
    lipstick = np.array([0, 0, 0, 1, 1, 0, 1])
    d = lipstick_shortcut(male, prob, lipstick)  # women 0-2 without lipstick, 3-4 with; men ignored
    assert d["without_lipstick"] == {"n": 3, "called_male": 2, "rate": pytest.approx(2 / 3)}
    assert d["with_lipstick"] == {"n": 2, "called_male": 0, "rate": 0.0}
    assert d["gap"] == pytest.approx(2 / 3) and d["threshold"] == 0.5
    assert lipstick_shortcut(male, prob, lipstick, threshold=0.35)["without_lipstick"]["called_male"] == 3
    none_with = lipstick_shortcut(male, prob, np.zeros(7))
    assert none_with["with_lipstick"] == {"n": 0, "called_male": 0, "rate": None} and none_with["gap"] is None
