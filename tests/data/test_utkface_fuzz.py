"""Fuzzing UTKFace file names: `parse_utk_name` and the folder scan of `load_utkface`.

Its contract: labels from AGE_GENDER_RACE_DATETIME.jpg.chip.jpg, ValueError (with the reason, counted
in one warning) for any other name; `load_utkface` raises only FaceattrError.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faceattr.data.utkface import load_utkface, parse_utk_name
from faceattr.errors import FaceattrError

pytestmark = pytest.mark.fuzz

FIELD = st.one_of(
    st.integers(-3, 130).map(str),
    st.text(alphabet="0123456789", min_size=1, max_size=25),
    st.sampled_from(["", "x", " ", "1.5", "+1", "٣", "²", "0x1"]),
)
SUFFIX = st.sampled_from([".jpg.chip.jpg", ".JPG.CHIP.JPG", "jpg.chip.jpg", " .jpg.chip.jpg", ".jpg", ".chip.jpg", ""])


@st.composite
def utk_names(draw: st.DrawFn) -> str:
    """Names shaped like UTKFace's, with wrong counts of fields, odd digits and suffixes mixed in."""
    fields = draw(st.lists(FIELD, min_size=0, max_size=5))
    return "_".join(fields) + draw(SUFFIX)


def _reference(name: str) -> tuple[int, int, int, str] | None:
    """The labels a well-formed name carries, by plain string handling, or None."""
    stem = name.strip()
    lower = stem.lower()
    if not lower.endswith("jpg.chip.jpg"):
        return None
    stem = stem[: -len("jpg.chip.jpg")]
    stem = (stem[:-1] if stem.endswith(".") else stem).rstrip()  # DATETIME, spaces, an optional dot, jpg.chip.jpg
    parts = stem.split("_")
    if len(parts) != 4 or not all(p and p.isdecimal() for p in parts):
        return None
    age, gender, race = int(parts[0]), int(parts[1]), int(parts[2])
    if not (1 <= age <= 120 and gender in (0, 1) and 0 <= race <= 4):
        return None
    return age, gender, race, parts[3]


@given(st.one_of(utk_names(), st.text(max_size=40)))
def test_names_parse_as_the_reference_or_raise_value_error(name: str) -> None:
    expected = _reference(name)
    try:
        got = parse_utk_name(name)
    except ValueError as e:
        assert expected is None, f"{name!r} refused ({e}) but reads as {expected}"
        return
    assert got == expected


@given(st.lists(utk_names(), min_size=1, max_size=8, unique=True))
def test_folder_scan_keeps_exactly_the_well_formed_names(names: list[str]) -> None:
    root = Path(tempfile.mkdtemp(prefix="utk-fuzz-"))
    try:
        folder = root / "UTKFace"
        folder.mkdir()
        kept = []
        for n in names:
            if not n.strip(" .") or "/" in n or len(n.encode()) > 255:
                continue
            (folder / n).write_bytes(b"")
            if _reference(n) is not None and n.lower().endswith(".jpg"):
                kept.append(n)
        chips = any(n.lower().endswith(".jpg.chip.jpg") for n in kept)
        try:
            split = load_utkface(root, "all")
        except FaceattrError as e:
            assert "\n" not in str(e)
            # A folder is UTKFace's when it holds *.jpg.chip.jpg files (any case) with usable names.
            assert not chips, f"refused a folder with usable chips {kept}: {e}"
            return
        assert sorted(split.filenames) == sorted(kept)
        assert all(1 <= a <= 120 for a in split.age) and set(split.male.tolist()) <= {0.0, 1.0}
    finally:
        shutil.rmtree(root, ignore_errors=True)
