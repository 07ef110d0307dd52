"""Fuzzing the `--where` language beyond tests/search/test_query.py's small alphabet: any text, and
valid queries written every way the language allows, which must parse back to the terms they spell."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faceattr.errors import FaceattrError
from faceattr.search.query import MAX_AGE, Term, parse_where

from .fakes import ATTRS

pytestmark = pytest.mark.fuzz

NOISE = st.sampled_from(["=", "==", ">=", "<=", "=>", "!=", "<>", "nan", "inf", "-inf", "1e400", "1_0", "0x1", "١",
                         "\x00", "\n", "\u3000", ";", "(", ")", "'", '"', "\\", "age", "AGE", "male", "Mal", ",", " "])


@given(st.one_of(st.text(max_size=40), st.lists(st.one_of(NOISE, st.sampled_from(ATTRS), st.text(max_size=3)),
                                               max_size=12).map("".join)))
def test_any_text_parses_to_valid_terms_or_one_line_error(text: str) -> None:
    try:
        terms = parse_where(text, ATTRS)
    except FaceattrError as e:
        assert "\n" not in str(e)
        return
    for t in terms:
        if t.is_age:
            assert t.op in (">", ">=", "<", "<=") and 0 <= t.value <= MAX_AGE  # type: ignore[operator]
        else:
            assert t.attribute in ATTRS and t.op in ("=1", "=0", ">", ">=", "<", "<=")
            assert t.value is None if t.op in ("=1", "=0") else 0.0 <= t.value <= 1.0  # type: ignore[operator]


@st.composite
def spelled_terms(draw: st.DrawFn) -> tuple[Term, str]:
    """One valid term and a way to write it (case, spacing, synonyms for true/false, number formats)."""
    name = draw(st.sampled_from([*ATTRS, "age"]))
    spelled = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in name)
    pad = st.sampled_from(["", " ", "  ", "\t"])
    if name == "age":
        op = draw(st.sampled_from([">", ">=", "<", "<="]))
        value = float(draw(st.integers(0, int(MAX_AGE))))
        raw = draw(st.sampled_from([f"{value:g}", f"{value:.1f}", f"{int(value)}"]))
        return Term("age", op, value), f"{spelled}{draw(pad)}{op}{draw(pad)}{raw}"
    kind = draw(st.sampled_from(["present", "bound"]))
    if kind == "present":
        present = draw(st.booleans())
        raw = draw(st.sampled_from(["1", "true", "yes", "y", "TRUE", "Yes"] if present else ["0", "false", "no", "n", "NO"]))
        op = draw(st.sampled_from(["=", "=="]))
        return Term(name, "=1" if present else "=0"), f"{spelled}{draw(pad)}{op}{draw(pad)}{raw}"
    op = draw(st.sampled_from([">", ">=", "<", "<="]))
    value = draw(st.sampled_from([0.0, 1.0, 0.5, 0.25, 0.125, 0.9]))
    raw = draw(st.sampled_from([f"{value:g}", repr(value), f"{value:.3f}"]))
    return Term(name, op, value), f"{spelled}{draw(pad)}{op}{draw(pad)}{raw}"


@given(st.lists(spelled_terms(), max_size=6), st.lists(st.sampled_from([" ", ",", ", ", " ,  ", "\t"]), min_size=6, max_size=6))
def test_valid_queries_parse_back_to_their_terms(terms: list[tuple[Term, str]], seps: list[str]) -> None:
    text = "".join(spelled + seps[i] for i, (_, spelled) in enumerate(terms))
    assert parse_where(text, ATTRS) == [t for t, _ in terms]
