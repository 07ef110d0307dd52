"""The --where language and ranking, checked against answers computed independently from the fake's truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faceattr.errors import FaceattrError
from faceattr.search import build_index, parse_where, probe_vector, search
from faceattr.search.query import Term

from .fakes import ATTRS, FakeModel, make_dataset, write_image


def test_parse_where_terms_case_insensitive_with_commas_and_spaces() -> None:
    terms = parse_where("male=0, EYEGLASSES = 1  young>0.8 blond_hair<=0.2 5_o_clock_shadow>=0.1 Smiling==yes", ATTRS)
    assert terms == [
        Term("Male", "=0"),
        Term("Eyeglasses", "=1"),
        Term("Young", ">", 0.8),
        Term("Blond_Hair", "<=", 0.2),
        Term("5_o_Clock_Shadow", ">=", 0.1),
        Term("Smiling", "=1"),
    ]
    assert parse_where("  ", ATTRS) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Eyeglases=1", "did you mean Eyeglasses"),
        ("Male=2", "Male=1 or Male=0"),
        ("Young>1.5", "between 0 and 1"),
        ("Young>abc", "between 0 and 1"),
        ("Young>", "no value"),
        ("Male", "cannot read 'Male'"),
        ("=1", "cannot read"),
        ("Male=1 ; Smiling=1", "cannot read ';'"),
    ],
)
def test_parse_where_errors_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(FaceattrError, match=message):
        parse_where(text, ATTRS)


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(alphabet=st.sampled_from(list("MaleYoung_=<>01.5 ,;-xX")), max_size=30))
def test_parse_where_only_ever_raises_user_errors(text: str) -> None:
    try:
        terms = parse_where(text, ATTRS)
    except FaceattrError:
        return
    for t in terms:
        assert t.attribute in ATTRS or (t.is_age and t.op in (">", ">=", "<", "<=") and 0 <= t.value <= 120)  # type: ignore[operator]
        assert t.op in ("=1", "=0", ">", ">=", "<", "<=")


def test_parse_age_bounds_in_years() -> None:
    assert parse_where("age<30", ATTRS) == [Term("age", "<", 30.0)]
    assert parse_where("AGE >= 65", ATTRS) == [Term("age", ">=", 65.0)]
    terms = parse_where("age>20 age<=40, Male=0 Young>0.5", ATTRS)
    assert terms == [Term("age", ">", 20.0), Term("age", "<=", 40.0), Term("Male", "=0"), Term("Young", ">", 0.5)]
    assert [t.is_age for t in terms] == [True, True, False, False]
    # A bound on years is not a probability: 30 is fine here, and the term prints back as it was written.
    assert " ".join(map(str, terms)) == "age>20 age<=40 Male=0 Young>0.5"
    assert parse_where("age<12.5", ATTRS)[0].value == 12.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("age=30", "bounds in years, such as age<30"),
        ("age==1", "not an exact value"),
        ("Age=0", "not an exact value"),
        ("age<old", "number of years between 0 and 120"),
        ("age>200", "between 0 and 120"),
        ("age<-5", "between 0 and 120"),
        ("age<nan", "between 0 and 120"),
        ("age>inf", "between 0 and 120"),
        ("age<", "no value"),
    ],
)
def test_age_terms_that_make_no_sense_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(FaceattrError, match=message) as e:
        parse_where(text, ATTRS)
    assert "\n" not in str(e.value)


@pytest.fixture
def built(dataset: tuple[Path, dict], tmp_path: Path, fake_model: FakeModel) -> tuple[Path, dict]:
    root, truth = dataset
    build_index(root, tmp_path / "i.sqlite", fake_model, batch_size=8, progress=False)
    return tmp_path / "i.sqlite", truth


def _expected(truth: dict, keep, score) -> list[tuple[str, float]]:
    """Brute force over the truth table: (path, score) of every matching face, best first."""
    rows = []
    for path, (probs, n) in truth.items():
        p = dict(zip(ATTRS, probs))
        for _ in range(n):
            if keep(p):
                rows.append((path, score(p)))
    return sorted(rows, key=lambda r: -r[1])


def test_presence_terms_filter_by_threshold_and_rank_by_joint_probability(built: tuple[Path, dict]) -> None:
    index, truth = built
    res = search(index, "Male=0 Eyeglasses=1 Smiling=1", top=1000)
    exp = _expected(
        truth,
        lambda p: p["Male"] < 0.5 and p["Eyeglasses"] >= 0.5 and p["Smiling"] >= 0.5,
        lambda p: (1 - p["Male"]) * p["Eyeglasses"] * p["Smiling"],
    )
    assert len(exp) >= 3  # the fixture must make this query non-trivial
    assert res.total == len(exp)
    assert [m.image for m in res.matches] == [e[0] for e in exp]
    np.testing.assert_allclose([m.score for m in res.matches], [e[1] for e in exp], atol=0.02)
    assert all(m.joint == m.score and m.similarity is None for m in res.matches)
    assert res.searched == sum(n for _, n in truth.values())


def test_bounds_and_top(built: tuple[Path, dict]) -> None:
    index, truth = built
    res = search(index, "Young>0.6 blond_hair<0.5", top=3)
    exp = _expected(truth, lambda p: p["Young"] > 0.6 and p["Blond_Hair"] < 0.5, lambda p: p["Young"] * (1 - p["Blond_Hair"]))
    assert res.total == len(exp) > 3
    assert [m.image for m in res.matches] == [e[0] for e in exp[:3]]
    for m in res.matches:
        assert m.probabilities["Young"] > 0.6 and m.probabilities["Blond_Hair"] < 0.5


def test_thresholds_come_from_the_index(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, truth = dataset
    model = FakeModel()
    model.thresholds[ATTRS.index("Eyeglasses")] = 0.8
    build_index(root, tmp_path / "t.sqlite", model, batch_size=16, progress=False)
    res = search(tmp_path / "t.sqlite", "Eyeglasses=1", top=1000)
    assert res.total == sum(n for probs, n in truth.values() if probs[0] >= 0.8)
    assert min(m.probabilities["Eyeglasses"] for m in res.matches) >= 0.8 - 1e-6
    res0 = search(tmp_path / "t.sqlite", "Eyeglasses=0", top=1000)
    assert res0.total + res.total == res.searched


def test_like_finds_the_same_face_first_and_combines_with_where(built: tuple[Path, dict], tmp_path: Path) -> None:
    index, truth = built
    target = next(p for p, (probs, n) in truth.items() if n == 1)
    probe = write_image(tmp_path / "probe.png", truth[target][0])
    vec = probe_vector(FakeModel(), probe, ATTRS)
    res = search(index, like=vec, top=5)
    assert res.matches[0].image == target
    assert res.matches[0].similarity == pytest.approx(1.0, abs=1e-3)
    sims = [float(m.similarity or 0.0) for m in res.matches]
    assert sims == sorted(sims, reverse=True)
    res_p = search(index, like=vec, top=1, space="probs")
    assert res_p.matches[0].image == target
    # Combined: the look-alike ranking, restricted to faces whose Male term holds.
    wanted = "Male=1" if truth[target][0][1] < 0.5 else "Male=0"
    comb = search(index, wanted, like=vec, top=50)
    assert comb.matches and target not in [m.image for m in comb.matches]
    assert all((m.probabilities["Male"] >= 0.5) == (wanted == "Male=1") for m in comb.matches)


def test_probe_without_a_face_or_nothing_to_search_are_user_errors(built: tuple[Path, dict], tmp_path: Path) -> None:
    index, _ = built
    noface = write_image(tmp_path / "noface.png", [0.5] * len(ATTRS), n_faces=0)
    with pytest.raises(FaceattrError, match="no face found"):
        probe_vector(FakeModel(), noface, ATTRS)
    with pytest.raises(FaceattrError, match="nothing to search for"):
        search(index, "")
    with pytest.raises(FaceattrError, match="--top"):
        search(index, "Male=1", top=0)
    with pytest.raises(FaceattrError, match="did you mean"):
        search(index, "Smilling=1")


@pytest.fixture
def aged(tmp_path: Path) -> tuple[Path, dict, dict]:
    """(index, truth, ages): the synthetic folder indexed with a fake model that predicts age."""
    ages: dict[str, float] = {}
    truth = make_dataset(tmp_path / "photos", 40, ages=ages)
    build_index(tmp_path / "photos", tmp_path / "aged.sqlite", FakeModel(age=True), batch_size=8, progress=False)
    return tmp_path / "aged.sqlite", truth, ages


def test_age_bounds_filter_on_years_and_combine_with_attributes(aged: tuple[Path, dict, dict]) -> None:
    index, truth, ages = aged
    res = search(index, "age<30", top=1000)
    young = [p for p, (_, n) in truth.items() for _ in range(n) if ages[p] < 30]
    assert 0 < res.total == len(young) < res.searched
    assert sorted(m.image for m in res.matches) == sorted(young)
    assert all(m.age == pytest.approx(ages[m.image]) for m in res.matches)  # stored in years, not rescaled
    # Age bounds only filter: with nothing else to rank by, every score is 1 and the order is the index order.
    assert {m.score for m in res.matches} == {1.0} and [m.face_id for m in res.matches] == sorted(m.face_id for m in res.matches)
    assert res.predicts_age and res.matches[0].to_dict()["age"] == round(ages[res.matches[0].image], 1)

    # A range plus an attribute: the attribute ranks, the range filters.
    both = search(index, "age>20 age<=40 Male=0", top=1000)
    exp = _expected(
        {p: v for p, v in truth.items() if 20 < ages[p] <= 40},
        lambda p: p["Male"] < 0.5,
        lambda p: 1 - p["Male"],
    )
    assert len(exp) >= 2
    assert [m.image for m in both.matches] == [e[0] for e in exp]
    np.testing.assert_allclose([m.score for m in both.matches], [e[1] for e in exp], atol=0.02)
    assert search(index, "age>=65", top=1000).total == sum(n for p, (_, n) in truth.items() if ages[p] >= 65)
    assert search(index, "age>50 age<40").total == 0


def test_a_face_without_an_age_never_matches_an_age_bound(aged: tuple[Path, dict, dict]) -> None:
    import sqlite3

    index, _, _ = aged
    everyone = search(index, "age>=0", top=1000)
    assert everyone.total == everyone.searched
    con = sqlite3.connect(index)
    con.execute("UPDATE faces SET age = NULL WHERE id = ?", (everyone.matches[0].face_id,))
    con.commit()
    con.close()
    assert search(index, "age>=0", top=1000).total == everyone.searched - 1
    assert search(index, "age<=120", top=1000).total == everyone.searched - 1
    unknown = [m for m in search(index, "Male>=0", top=1000).matches if m.age is None]
    assert [m.face_id for m in unknown] == [everyone.matches[0].face_id]


def test_age_terms_on_an_index_without_ages_say_to_reindex(built: tuple[Path, dict]) -> None:
    index, _ = built
    with pytest.raises(FaceattrError, match="have no age: its model 'fake' does not predict age.*--rebuild") as e:
        search(index, "age<30 Male=0")
    assert "\n" not in str(e.value)
    res = search(index, "Male=0", top=3)
    assert not res.predicts_age and all(m.age is None and m.to_dict()["age"] is None for m in res.matches)
