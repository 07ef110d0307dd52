"""faceattr.data.celeba on the real subset: layouts, parsing, splits, holdout, limit, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from faceattr.data import LAYOUTS, SPLITS, CelebaSplit, detect_layout, load_celeba, read_attribute_names
from faceattr.errors import FaceattrError

N_TRAIN, N_VALID, N_ALL = 15_220, 780, 16_000


def test_public_constants() -> None:
    assert LAYOUTS == ("official", "torchvision", "kaggle")
    assert SPLITS == ("train", "valid", "test", "all", "holdout")


def test_real_subset_train_valid_all(celeba_root: Path, reference) -> None:
    train = load_celeba(celeba_root, split="train")
    valid = load_celeba(celeba_root, split="valid")
    every = load_celeba(celeba_root, split="all")
    assert (len(train), len(valid), len(every)) == (N_TRAIN, N_VALID, N_ALL)
    assert train.layout == "official" and train.root == celeba_root and train.split == "train"
    assert train.attributes == reference.names and len(train.attributes) == 40
    assert train.labels.dtype == np.float32 and train.labels.shape == (N_TRAIN, 40)
    assert set(np.unique(train.labels)) == {0.0, 1.0}
    assert train.identities is not None and train.identities.dtype == np.int64
    # Row for row against the independent str.split parse of the same files.
    np.testing.assert_array_equal(every.labels, (reference.values > 0).astype(np.float32))
    assert every.filenames == reference.filenames
    np.testing.assert_array_equal(every.identities, reference.identity)
    rows = reference.rows(valid.filenames)
    assert (reference.partition[rows] == 1).all()
    np.testing.assert_array_equal(valid.labels, (reference.values[rows] > 0).astype(np.float32))
    assert train.paths[0] == celeba_root / "img_align_celeba" / train.filenames[0]
    assert all(p.is_file() for p in train.paths[:50])
    # The official partitions are identity-disjoint.
    assert not set(train.identities.tolist()) & set(valid.identities.tolist())


@pytest.mark.parametrize("layout", ["official", "torchvision", "kaggle"])
def test_each_layout_detected_and_identical(make_celeba, celeba_root: Path, layout: str) -> None:
    root = make_celeba(layout)
    name, ann = detect_layout(root)
    assert name == layout
    assert ann == (root / "celeba" if layout == "torchvision" else root)
    assert read_attribute_names(root)[0] == "5_o_Clock_Shadow" and read_attribute_names(root)[-1] == "Young"
    expected = load_celeba(celeba_root, split="valid")
    got = load_celeba(root, split="valid")
    assert got.layout == layout and got.root == ann
    assert got.filenames == expected.filenames
    np.testing.assert_array_equal(got.labels, expected.labels)
    assert all(p.is_file() for p in got.paths)
    if layout == "kaggle":
        assert got.identities is None  # Kaggle ships no identity file
        assert got.paths[0].parent == root / "img_align_celeba" / "img_align_celeba"
        assert len(load_celeba(root, split="train")) == N_TRAIN
    else:
        np.testing.assert_array_equal(got.identities, expected.identities)


def test_layout_override(make_celeba, reference) -> None:
    root = make_celeba("official", rows=reference.filenames[:40])
    # A Kaggle CSV beside it with fewer rows: auto prefers official, layout='kaggle' forces the CSV.
    kaggle_rows = reference.attr_lines[10:30]
    csv = [",".join(["image_id", *reference.names]), *(",".join(line.split()) for line in kaggle_rows)]
    (root / "list_attr_celeba.csv").write_text("\n".join(csv) + "\n")
    assert len(load_celeba(root, split="all")) == 40
    forced = load_celeba(root, split="all", layout="kaggle")
    assert forced.layout == "kaggle" and forced.filenames == reference.filenames[10:30]
    with pytest.raises(FaceattrError, match="not a torchvision-layout CelebA folder"):
        load_celeba(root, layout="torchvision")


def test_attribute_subset_request_order_and_case(celeba_root: Path) -> None:
    full = load_celeba(celeba_root, split="valid")
    sub = load_celeba(celeba_root, split="valid", attributes=["smiling", "MALE", "Eyeglasses"])
    assert sub.attributes == ["Smiling", "Male", "Eyeglasses"]
    cols = [full.attributes.index(a) for a in sub.attributes]
    np.testing.assert_array_equal(sub.labels, full.labels[:, cols])
    assert load_celeba(celeba_root, split="valid", attributes="Male").attributes == ["Male"]
    assert load_celeba(celeba_root, split="valid", attributes=[]).attributes == full.attributes


def test_attribute_typo_suggests(celeba_root: Path) -> None:
    with pytest.raises(FaceattrError, match=r"unknown attribute 'Smilng' \(did you mean Smiling\?\)"):
        load_celeba(celeba_root, attributes=["Smilng"])


def test_empty_test_split_says_what_to_do(celeba_root: Path) -> None:
    with pytest.raises(FaceattrError, match="split 'test'.*no images.*valid.*holdout_fraction") as info:
        load_celeba(celeba_root, split="test")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"split": "validation"}, r"unknown split 'validation' \(did you mean valid\?\)"),
        ({"layout": "oficial"}, r"unknown CelebA layout 'oficial' \(did you mean official\?\)"),
        ({"split": "holdout"}, "needs holdout_fraction > 0"),
        ({"holdout_fraction": 1.5}, r"holdout_fraction must be in \[0, 1\)"),
        ({"limit": -1}, "limit must be >= 0"),
    ],
)
def test_bad_arguments(celeba_root: Path, kwargs: dict, pattern: str) -> None:
    with pytest.raises(FaceattrError, match=pattern):
        load_celeba(celeba_root, **kwargs)


def test_missing_and_unrecognised_roots(tmp_path: Path) -> None:
    with pytest.raises(FaceattrError, match="CelebA root not found"):
        load_celeba(tmp_path / "nope")
    with pytest.raises(FaceattrError, match="is a file, not a folder"):
        (tmp_path / "f.txt").write_text("x")
        detect_layout(tmp_path / "f.txt")
    with pytest.raises(FaceattrError) as info:
        load_celeba(tmp_path)
    message = str(info.value)
    for looked_for in ("list_attr_celeba.txt (official)", "celeba/list_attr_celeba.txt (torchvision)",
                       "list_attr_celeba.csv (kaggle)"):
        assert looked_for in message
    (tmp_path / "list_attr_celeba.txt").write_bytes(b"0\r\nA B \r\n")
    with pytest.raises(FaceattrError, match="image folder not found"):
        load_celeba(tmp_path, split="all")


def test_holdout_is_identity_disjoint_and_deterministic(celeba_root: Path) -> None:
    kw = {"holdout_fraction": 0.1, "seed": 3}
    train = load_celeba(celeba_root, split="train", **kw)
    hold = load_celeba(celeba_root, split="holdout", **kw)
    assert len(train) + len(hold) == N_TRAIN
    assert 0.05 * N_TRAIN < len(hold) < 0.15 * N_TRAIN
    assert not set(train.identities.tolist()) & set(hold.identities.tolist())
    assert not set(train.filenames) & set(hold.filenames)
    assert len(load_celeba(celeba_root, split="valid", **kw)) == N_VALID  # valid untouched
    assert len(load_celeba(celeba_root, split="all", **kw)) == N_ALL
    assert load_celeba(celeba_root, split="holdout", **kw).filenames == hold.filenames
    other = load_celeba(celeba_root, split="holdout", holdout_fraction=0.1, seed=4)
    assert other.filenames != hold.filenames
    smaller = load_celeba(celeba_root, split="holdout", holdout_fraction=0.05, seed=3)
    assert set(smaller.filenames) < set(hold.filenames)  # fractions nest


def test_limit_is_a_seeded_sorted_sample(celeba_root: Path) -> None:
    a = load_celeba(celeba_root, limit=500, seed=1)
    b = load_celeba(celeba_root, limit=500, seed=1)
    c = load_celeba(celeba_root, limit=500, seed=2)
    full = load_celeba(celeba_root)
    assert len(a) == 500 and a.filenames == b.filenames and a.filenames != c.filenames
    assert a.filenames == sorted(a.filenames)
    assert a.filenames != full.filenames[:500]  # a sample, not the head
    assert set(a.filenames) < set(full.filenames)
    rows = [full.filenames.index(f) for f in a.filenames[:20]]
    np.testing.assert_array_equal(a.labels[:20], full.labels[rows])
    assert len(load_celeba(celeba_root, split="valid", limit=10_000)) == N_VALID


def test_missing_images_warned_once_and_skipped(make_celeba, reference, caplog) -> None:
    rows = reference.filenames[:60]
    gone = rows[5:12]
    root = make_celeba("official", rows=rows, images=[f for f in rows if f not in gone])
    with caplog.at_level(logging.WARNING, logger="faceattr.data"):
        split = load_celeba(root, split="all")
    assert len(split) == 53 and not set(gone) & set(split.filenames)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "7 of 60" in warnings[0].getMessage() and gone[0] in warnings[0].getMessage()


def test_no_partition_file_falls_back_to_seeded_identity_split(make_celeba, caplog) -> None:
    root = make_celeba("official", partition=False)
    with caplog.at_level(logging.WARNING, logger="faceattr.data"):
        parts = {s: load_celeba(root, split=s, seed=5) for s in ("train", "valid", "test")}
    assert any("80/10/10" in r.getMessage() for r in caplog.records)
    sizes = {s: len(p) for s, p in parts.items()}
    assert sum(sizes.values()) == N_ALL
    assert 0.75 < sizes["train"] / N_ALL < 0.85 and 0.05 < sizes["valid"] / N_ALL < 0.15
    ids = {s: set(p.identities.tolist()) for s, p in parts.items()}
    assert not ids["train"] & ids["valid"] and not ids["train"] & ids["test"] and not ids["valid"] & ids["test"]
    assert load_celeba(root, split="valid", seed=5).filenames == parts["valid"].filenames
    assert load_celeba(root, split="valid", seed=6).filenames != parts["valid"].filenames


def test_no_identity_file_holdout_by_file_name(make_celeba) -> None:
    root = make_celeba("official", identity=False)
    train = load_celeba(root, holdout_fraction=0.2)
    hold = load_celeba(root, split="holdout", holdout_fraction=0.2)
    assert train.identities is None and hold.identities is None
    assert len(train) + len(hold) == N_TRAIN and 0.15 < len(hold) / N_TRAIN < 0.25


def test_subset(celeba_root: Path) -> None:
    valid = load_celeba(celeba_root, split="valid")
    part = valid.subset([3, 1, 700])
    assert isinstance(part, CelebaSplit) and len(part) == 3
    assert part.filenames == [valid.filenames[i] for i in (3, 1, 700)]
    assert part.paths[2] == valid.paths[700]
    np.testing.assert_array_equal(part.labels, valid.labels[[3, 1, 700]])
    np.testing.assert_array_equal(part.identities, valid.identities[[3, 1, 700]])
    mask = np.zeros(len(valid), dtype=bool)
    mask[10:20] = True
    assert valid.subset(mask).filenames == valid.filenames[10:20]


def test_irregular_spacing_parses_the_same(make_celeba, reference, celeba_root: Path) -> None:
    """Tabs, runs of spaces and LF endings take the general tokenizer; it must agree with the fast path."""
    root = make_celeba("official", rows=reference.filenames[:300])
    lines = (root / "list_attr_celeba.txt").read_bytes().decode().split("\r\n")
    body = ["\t".join(line.split()) if i % 2 else "  ".join(line.split()) for i, line in enumerate(lines[2:302])]
    (root / "list_attr_celeba.txt").write_text("\n".join([lines[0], lines[1], *body]))  # no final newline
    got = load_celeba(root, split="all")
    assert got.filenames == reference.filenames[:300]
    np.testing.assert_array_equal(got.labels, (reference.values[:300] > 0).astype(np.float32))


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda ls: ls.__setitem__(4, ls[4].replace("-1", "0", 1)), r"line 5: values must be -1 or 1, got '0'"),
        (lambda ls: ls.__setitem__(6, ls[6].rsplit(" ", 1)[0]), r"line 7: expected 41 fields, found 40"),
        (lambda ls: ls.__setitem__(3, ls[3] + " 1"), r"line 4: expected 41 fields, found 42"),
        (lambda ls: ls.__setitem__(0, "12"), r"line 1: the header says 12 rows but the file has 20"),
        (lambda ls: ls.__setitem__(0, "many"), r"line 1: expected the row count"),
        (lambda ls: ls.__setitem__(5, ls[5].replace(" 1", "11", 1)), r"line 6: values must be -1 or 1, got '11'"),
        (lambda ls: ls.__setitem__(8, ls[2]), r"appears more than once"),
    ],
)
def test_malformed_attribute_file(make_celeba, reference, edit, pattern: str) -> None:
    root = make_celeba("official", rows=reference.filenames[:20])
    path = root / "list_attr_celeba.txt"
    lines = path.read_bytes().decode().split("\r\n")
    edit(lines)
    path.write_bytes("\r\n".join(lines).encode())
    with pytest.raises(FaceattrError, match=pattern) as info:
        load_celeba(root, split="all")
    assert "malformed annotation file" in str(info.value) and "\n" not in str(info.value)


def test_malformed_partition_and_identity(make_celeba, reference) -> None:
    root = make_celeba("official", rows=reference.filenames[:20])
    part = root / "list_eval_partition.txt"
    good = part.read_bytes()
    part.write_bytes(good.replace(b" 0\r\n", b" 3\r\n", 1))
    with pytest.raises(FaceattrError, match="expected 0, 1 or 2"):
        load_celeba(root)
    part.write_bytes(good.replace(b" 0\r\n", b" x\r\n", 1))
    with pytest.raises(FaceattrError, match=r"line 1: the partition must be a non-negative integer, got 'x'"):
        load_celeba(root)
    part.write_bytes(b"".join(good.splitlines(keepends=True)[1:]))
    with pytest.raises(FaceattrError, match=f"no partition for 1 image.*{reference.filenames[0]}"):
        load_celeba(root)
    part.write_bytes(good)
    (root / "identity_CelebA.txt").write_bytes(b"000001.jpg 1 2\r\n")
    with pytest.raises(FaceattrError, match="line 1: expected 2 fields, found 3"):
        load_celeba(root)


def test_full_size_attribute_file_parses(tmp_path: Path, reference) -> None:
    """A synthetic 202,599-row file in the official format (the full CelebA size) parses right (speed: benchmarks/load_celeba.py)."""
    n = 202_599
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2, size=(n, 40), dtype=np.int8) * 2 - 1
    # Rows as one byte matrix: 'NNNNNN.jpg', then each value in a 3-wide column ('  1' / ' -1'), CRLF.
    rows = np.full((n, 10 + 120 + 2), ord(" "), dtype=np.uint8)
    number = np.arange(1, n + 1)
    for k in range(6):
        rows[:, 5 - k] = ord("0") + (number // 10**k) % 10
    rows[:, 6:10] = np.frombuffer(b".jpg", dtype=np.uint8)
    rows[:, 12:130:3] = ord("1")
    rows[:, 11:130:3] = np.where(values < 0, ord("-"), ord(" "))
    rows[:, 130:] = np.frombuffer(b"\r\n", dtype=np.uint8)
    # Like the official file, a positive first value follows the name after one space, not two.
    keep = np.ones(rows.shape, dtype=bool)
    keep[values[:, 0] > 0, 10] = False
    head = f"{n}\r\n{reference.header[1]}\r\n".encode()
    (tmp_path / "list_attr_celeba.txt").write_bytes(head + rows[keep].tobytes())
    names = [f"{i:06d}.jpg" for i in range(1, 4)]
    (tmp_path / "img_align_celeba").mkdir()
    for name in names:
        (tmp_path / "img_align_celeba" / name).write_bytes(b"")
    names_read = read_attribute_names(tmp_path)
    split = load_celeba(tmp_path, split="all", layout="official", attributes=None)
    assert names_read == reference.names
    assert split.filenames == names  # the other 202,596 rows have no image file
    np.testing.assert_array_equal(split.labels, (values[:3] > 0).astype(np.float32))


def test_agrees_with_torchvision(make_celeba, reference, monkeypatch: pytest.MonkeyPatch) -> None:
    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(0)
    train = [reference.filenames[i] for i in np.flatnonzero(reference.partition == 0)]
    valid = [reference.filenames[i] for i in np.flatnonzero(reference.partition == 1)]
    rows = sorted(rng.choice(train, 200, replace=False).tolist() + rng.choice(valid, 100, replace=False).tolist())
    root = make_celeba("torchvision", rows=rows, images=rows)
    folder = root / "celeba"
    # torchvision always reads these two; the real ones are not public, so placeholders in the official format.
    bbox = ["image_id x_1 y_1 width height", *(f"{f}    95  71 226 313" for f in rows)]
    marks = ["lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y",
             *(f"{f} 69  109  106  113   77  142   73  152  108  154" for f in rows)]
    (folder / "list_bbox_celeba.txt").write_bytes("\r\n".join([str(len(rows)), *bbox, ""]).encode())
    (folder / "list_landmarks_align_celeba.txt").write_bytes("\r\n".join([str(len(rows)), *marks, ""]).encode())
    monkeypatch.setattr(torchvision.datasets.CelebA, "_check_integrity", lambda self: True)
    for split in ("train", "valid"):
        theirs = torchvision.datasets.CelebA(str(root), split=split, target_type="attr")
        ours = load_celeba(root, split=split)
        assert ours.layout == "torchvision"
        assert ours.filenames == list(theirs.filename)
        assert ours.attributes == theirs.attr_names[: len(ours.attributes)]
        np.testing.assert_array_equal(ours.labels, theirs.attr.numpy().astype(np.float32))
        np.testing.assert_array_equal(ours.identities, theirs.identity.numpy().ravel())


def test_official_files_take_the_vectorised_path(celeba_root: Path, make_celeba) -> None:
    """The official txt and the Kaggle csv are both read by the fast path (the general one is ~3x slower)."""
    from faceattr.data.celeba import _attr_fast, _split_lines

    (_, _), body = _split_lines((celeba_root / "list_attr_celeba.txt").read_bytes(), 2)
    fast = _attr_fast(body, 40, csv=False)
    assert fast is not None and len(fast[0]) == N_ALL
    (_,), body = _split_lines((make_celeba("kaggle") / "list_attr_celeba.csv").read_bytes(), 1)
    fast_csv = _attr_fast(body, 40, csv=True)
    assert fast_csv is not None and fast_csv[0] == fast[0]
    np.testing.assert_array_equal(fast_csv[1], fast[1])
