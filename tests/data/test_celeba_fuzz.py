"""Fuzzing the CelebA annotation parsers (official txt, Kaggle csv, partition and identity files).

Each generated folder is also parsed by a slow, obvious reference parser written here: where the
reference accepts the files, `load_celeba` must return exactly its rows and labels; where it rejects
them, `load_celeba` must raise FaceattrError. Mangled bytes may only ever give FaceattrError.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from faceattr.data import load_celeba
from faceattr.errors import FaceattrError

pytestmark = pytest.mark.fuzz

NAMES = ["000001.jpg", "000002.jpg", "000003.jpg", "000010.jpg", "0000100.jpg", "ab.jpg", "é.jpg"]
ATTRS = ["Male", "Young", "Smiling", "male"]
VALUES = ["1", "-1", "1", "-1", "0", "11", "-", "+1", "1.0", "x", "\xff", "１"]
SEPS = [" ", "  ", "\t", " \t ", ","]
EOLS = ["\n", "\r\n", "\n\n", " \n", "\r\n\r\n"]
ENCODINGS = ["utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16"]


@contextmanager
def _folder() -> Iterator[Path]:
    """A fresh CelebA root with an (empty) image file for every name the strategies use."""
    root = Path(tempfile.mkdtemp(prefix="celeba-fuzz-"))
    try:
        (root / "img_align_celeba").mkdir()
        for n in NAMES:
            (root / "img_align_celeba" / n).write_bytes(b"")
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _encode(text: str, encoding: str) -> bytes:
    try:
        return text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode("utf-8")


@st.composite
def attribute_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(file name, bytes) of an attribute file, official or Kaggle, mostly well-formed, sometimes not."""
    csv = draw(st.booleans())
    names = draw(st.lists(st.sampled_from(ATTRS), min_size=0, max_size=3))
    rows = []
    for _ in range(draw(st.integers(0, 6))):
        n_values = draw(st.sampled_from([len(names)] * 4 + [len(names) - 1, len(names) + 1]))
        values = [draw(st.sampled_from(VALUES[:4] if draw(st.booleans()) else VALUES)) for _ in range(max(n_values, 0))]
        rows.append(draw(st.sampled_from(SEPS[-1:] if csv else SEPS[:-1])).join([draw(st.sampled_from(NAMES)), *values]))
    eol = draw(st.sampled_from(EOLS))
    ending = draw(st.sampled_from(["", eol]))
    if csv:
        text = eol.join([",".join(["image_id", *names]), *rows]) + ending
    else:
        count = draw(st.sampled_from([str(len(rows))] * 3 + [str(len(rows) + 1), "many", " "]))
        text = eol.join([count, " ".join(names), *rows]) + ending
    name = "list_attr_celeba.csv" if csv else "list_attr_celeba.txt"
    return name, _encode(text, draw(st.sampled_from(ENCODINGS)))


def _reference_attr(name: str, data: bytes) -> tuple[list[str], list[str], np.ndarray] | None:
    """(attribute names, file names, -1/1 values) by plain str.split, or None where the file is unusable."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        return None
    csv = name.endswith(".csv")
    if csv:
        header, body, expected = lines[0], lines[1:], None
        names = [h.strip() for h in header.strip().split(",")[1:]]
    else:
        lines += [""] * (2 - len(lines))
        try:
            expected = int(lines[0].strip())
        except ValueError:
            return None
        names, body = lines[1].split(), lines[2:]
    if not names or any(not n for n in names) or len({n.lower() for n in names}) != len(names):
        return None
    files, values = [], []
    for line in body:
        fields = [f for f in re.split(r"[\s,]+" if csv else r"\s+", line.strip()) if f]
        if not fields:
            continue
        if len(fields) != 1 + len(names) or any(v not in ("1", "-1") for v in fields[1:]):
            return None
        files.append(fields[0])
        values.append([int(v) for v in fields[1:]])
    if (expected is not None and expected != len(files)) or len(set(files)) != len(files) or not files:
        return None
    return names, files, np.array(values, dtype=np.int64).reshape(len(files), len(names))


@given(attribute_files())
def test_attribute_files_parse_as_the_reference_or_fail_cleanly(f: tuple[str, bytes]) -> None:
    name, data = f
    expected = _reference_attr(name, data)
    with _folder() as root:
        (root / name).write_bytes(data)
        try:
            got = load_celeba(root, split="all")
        except FaceattrError as e:
            assert expected is None, f"refused a file the reference reads: {e}"
            assert "\n" not in str(e)
            return
    assert expected is not None, f"accepted a file the reference refuses: {data!r}"
    names, files, values = expected
    assert got.attributes == names and got.filenames == files
    np.testing.assert_array_equal(got.labels, (values > 0).astype(np.float32))


@st.composite
def pair_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(file name, bytes) of a partition file covering some of NAMES[:4], with odd values and rows mixed in."""
    csv = draw(st.booleans())
    rows = []
    for n in draw(st.lists(st.sampled_from(NAMES[:4]), max_size=7)):
        value = draw(st.sampled_from(["0", "1", "2", "0", "1", "2", "3", "x", "-1", "", "0 0"]))
        rows.append(f"{n},{value}" if csv else f"{n}{draw(st.sampled_from(SEPS[:-1]))}{value}")
    eol = draw(st.sampled_from(EOLS))
    head = ["image_id,partition"] if csv and draw(st.booleans()) else []
    text = eol.join([*head, *rows]) + draw(st.sampled_from(["", eol]))
    return ("list_eval_partition.csv" if csv else "list_eval_partition.txt"), _encode(text, draw(st.sampled_from(ENCODINGS)))


def _reference_partition(name: str, data: bytes, files: list[str]) -> dict[str, int] | None:
    """file name -> partition by str.split, or None where the file is unusable for `files`."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None
    try:
        lines = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8").split("\n")
    except UnicodeDecodeError:
        return None
    if name.endswith(".csv") and lines and not lines[0].split(",")[-1].strip().isdigit():
        lines = lines[1:]  # a header such as image_id,partition
    out: dict[str, int] = {}
    for line in lines:
        fields = [f for f in re.split(r"[\s,]+" if name.endswith(".csv") else r"\s+", line.strip()) if f]
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].isascii() or not fields[1].isdigit() or fields[0] in out:
            return None
        out[fields[0]] = int(fields[1])
    if any(f not in out or out[f] > 2 for f in files):
        return None
    return out


@given(pair_files())
def test_partition_files_split_as_the_reference_or_fail_cleanly(f: tuple[str, bytes]) -> None:
    name, data = f
    files = NAMES[:4]
    attr = "\n".join([str(len(files)), "Male Young", *(f"{n} 1 -1" for n in files)]) + "\n"
    expected = _reference_partition(name, data, files)
    with _folder() as root:
        (root / "list_attr_celeba.txt").write_text(attr)
        (root / name).write_bytes(data)
        got: dict[str, list[str]] = {}
        try:
            for split in ("train", "valid", "test"):
                try:
                    got[split] = load_celeba(root, split=split).filenames
                except FaceattrError as e:
                    if "has no images" not in str(e):
                        raise
                    got[split] = []
        except FaceattrError as e:
            assert expected is None, f"refused a file the reference reads: {e}"
            assert "\n" not in str(e)
            return
    assert expected is not None, f"accepted a partition file the reference refuses: {data!r}"
    for code, split in enumerate(("train", "valid", "test")):
        assert got[split] == [n for n in files if expected[n] == code]


OFFICIAL = (b"3\r\n5_o_Clock_Shadow Male Young\r\n000001.jpg -1  1  1\r\n000002.jpg  1 -1 -1\r\n"
            b"000003.jpg -1 -1  1\r\n")
KAGGLE = b"image_id,5_o_Clock_Shadow,Male,Young\n000001.jpg,-1,1,1\n000002.jpg,1,-1,-1\n000003.jpg,-1,-1,1\n"
PARTITION = b"000001.jpg 0\r\n000002.jpg 1\r\n000003.jpg 2\r\n"


@given(
    which=st.sampled_from(["list_attr_celeba.txt", "list_attr_celeba.csv", "list_eval_partition.txt", "identity_CelebA.txt"]),
    edits=st.lists(st.tuples(st.integers(0, 200), st.sampled_from(["flip", "cut", "insert", "dup"]), st.binary(min_size=1, max_size=4)),
                   max_size=4),
)
def test_mangled_bytes_give_only_faceattr_errors(which: str, edits: list[tuple[int, str, bytes]]) -> None:
    files = {"list_attr_celeba.txt": OFFICIAL, "list_eval_partition.txt": PARTITION,
             "identity_CelebA.txt": PARTITION.replace(b" 1\r", b" 7\r")}
    if which.endswith(".csv"):
        files = {"list_attr_celeba.csv": KAGGLE, "list_eval_partition.txt": PARTITION}
    data = bytearray(files[which])
    for at, kind, payload in edits:
        at %= len(data) + 1
        if kind == "flip" and at < len(data):
            data[at] ^= payload[0] or 1
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = payload
        elif kind == "dup":  # a line repeated: duplicate rows
            line = bytes(data[at:]).split(b"\n", 1)[0] + b"\n"
            data[at:at] = line
    files[which] = bytes(data)
    with _folder() as root:
        for name, content in files.items():
            (root / name).write_bytes(content)
        for split in ("all", "train"):
            try:
                got = load_celeba(root, split=split)
            except FaceattrError as e:
                assert "\n" not in str(e)
                continue
            assert got.labels.shape == (len(got.filenames), len(got.attributes))
            assert set(np.unique(got.labels)) <= {0.0, 1.0}
