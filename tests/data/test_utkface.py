"""UTKFace: file-name labels and their quirks, the DATETIME-block split, placing chips in CelebA's frame."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceattr.data.utkface import (
    AGE_BANDS,
    RACES,
    ChipFrame,
    age_band,
    is_utkface,
    load_utkface,
    parse_utk_name,
)
from faceattr.errors import FaceattrError


def test_names_parse_with_the_official_quirks() -> None:
    assert parse_utk_name("100_0_0_20170112215240346.jpg.chip.jpg") == (100, 0, 0, "20170112215240346")
    # A space before ".jpg" and a missing dot both occur in the official folder.
    assert parse_utk_name("24_0_1_20170116220224657 .jpg.chip.jpg") == (24, 0, 1, "20170116220224657")
    assert parse_utk_name("55_0_0_20170116232725357jpg.chip.jpg") == (55, 0, 0, "20170116232725357")
    with pytest.raises(ValueError, match="no race field"):
        parse_utk_name("39_1_20170116174525125.jpg.chip.jpg")
    for bad, why in [("0_0_0_20170116174525125.jpg.chip.jpg", "age"), ("30_2_0_20170116174525125.jpg.chip.jpg", "gender"),
                     ("30_1_7_20170116174525125.jpg.chip.jpg", "race"), ("photo.jpg", "not AGE")]:
        with pytest.raises(ValueError, match=why):
            parse_utk_name(bad)


def test_age_bands_cover_every_age() -> None:
    assert [age_band(a) for a in (1, 14, 15, 29, 30, 49, 50, 69, 70, 116)] == [
        "under 15", "under 15", "15-29", "15-29", "30-49", "30-49", "50-69", "50-69", "70+", "70+"]
    assert [b[0] for b in AGE_BANDS][-1] == "70+"


def _fake_folder(root: Path, names: list[str]) -> Path:
    folder = root / "UTKFace"
    folder.mkdir(parents=True)
    img = Image.new("RGB", (200, 200), (120, 100, 90))
    for n in names:
        img.save(folder / n, format="JPEG")
    return root


def test_unlabelled_files_are_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    names = [f"{20 + i}_{i % 2}_{i % 5}_2017011617{i:07d}.jpg.chip.jpg" for i in range(40)]
    names += ["39_1_20170116174525125.jpg.chip.jpg", "61_1_20170109142408075.jpg.chip.jpg", "notes.jpg"]
    root = _fake_folder(tmp_path, names)
    with caplog.at_level(logging.WARNING, logger="faceattr.data.utkface"):
        data = load_utkface(root, "all")
    assert len(data) == 40
    assert "skipped 3 file(s)" in caplog.text and "2 no race field" in caplog.text
    # Labels come from the names: gender 0 = male, so male is 1 - gender.
    i = data.filenames.index(names[3])
    assert data.age[i] == 23 and data.male[i] == 0.0 and data.race[i] == 3


def test_bad_roots_get_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(FaceattrError, match="UTKFace root not found"):
        load_utkface(tmp_path / "nope")
    with pytest.raises(FaceattrError, match=r"no UTKFace images"):
        load_utkface(tmp_path)
    with pytest.raises(FaceattrError, match=r"did you mean valid\?"):
        load_utkface(tmp_path, "vaild")
    assert not is_utkface(tmp_path)


def test_real_split_is_disjoint_seeded_and_keeps_datetime_runs_together(utkface_root: Path) -> None:
    splits = {s: load_utkface(utkface_root, s) for s in ("train", "valid", "test")}
    everything = load_utkface(utkface_root, "all")
    names = [set(splits[s].filenames) for s in splits]
    assert sum(map(len, names)) == len(everything) == len(set().union(*names))
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert 0.07 < len(splits["test"]) / len(everything) < 0.13
    assert load_utkface(utkface_root, "test").filenames == splits["test"].filenames  # seeded
    assert load_utkface(utkface_root, "test", seed=1).filenames != splits["test"].filenames
    # Consecutive DATETIMEs (a person's run of photos) mostly share a side: far more than a random split would.
    order = np.argsort(everything.datetime)
    side = {n: s for s in splits for n in splits[s].filenames}
    seq = [side[everything.filenames[i]] for i in order]
    same = np.mean([a == b for a, b in zip(seq[:-1], seq[1:], strict=True)])
    assert same > 0.95
    # Every race group and age band is present in the held-back split.
    test = splits["test"]
    assert set(test.race.tolist()) == set(range(len(RACES)))
    assert {b[0] for b in AGE_BANDS} <= set(test.age_band)


def test_limit_takes_a_seeded_sample(utkface_root: Path) -> None:
    a = load_utkface(utkface_root, "valid", limit=50)
    assert len(a) == 50 and a.filenames == load_utkface(utkface_root, "valid", limit=50).filenames


def test_chip_frame_puts_the_face_where_celeba_crops_have_it(utkface_root: Path) -> None:
    # The detector, run on framed chips, finds the eyes, nose and mouth where it finds them on CelebA's
    # own aligned crops (the template), to within a few pixels: the two sources share one geometry.
    from faceattr.data.geometry import TEMPLATE
    from faceattr.data.transforms import Preprocess
    from faceattr.infer.detect import FaceDetector

    data = load_utkface(utkface_root, "test", limit=30)
    pre = Preprocess(size=(218, 178))
    det = FaceDetector()
    errors = []
    for p in data.paths:
        with Image.open(p) as img:
            framed = ChipFrame()(img, pre)
        assert framed.shape == (218, 178, 3)
        found = det.detect(np.ascontiguousarray(framed))
        if found:
            errors.append(np.linalg.norm(found[0].landmarks - TEMPLATE, axis=1).mean())
    assert len(errors) >= 27
    assert np.median(errors) < 4.0


def test_chip_frame_handles_other_chip_sizes(utkface_root: Path, tmp_path: Path) -> None:
    from faceattr.data.transforms import Preprocess

    src = load_utkface(utkface_root, "test", limit=1).paths[0]
    big = tmp_path / "big.jpg"
    with Image.open(src) as img:
        img.resize((400, 400)).save(big)
        pre = Preprocess(size=(109, 89))
        a = ChipFrame()(img, pre).astype(float)
    with Image.open(big) as img:
        b = ChipFrame()(img, pre).astype(float)
    assert np.abs(a - b).mean() < 6.0  # the same framing, up to resampling


def test_cache_of_framed_chips_is_keyed_apart_from_plain_decoding(utkface_root: Path, tmp_path: Path) -> None:
    from faceattr.data.cache import build_cache
    from faceattr.data.transforms import Preprocess

    paths = load_utkface(utkface_root, "valid", limit=8).paths
    pre = Preprocess(size=(64, 64))
    plain = build_cache(paths, pre, cache_dir=tmp_path, workers=1, progress=False)
    framed = build_cache(paths, pre, cache_dir=tmp_path, workers=1, progress=False, frame=ChipFrame())
    assert plain.path != framed.path and framed.valid.all()
    again = build_cache(paths, pre, cache_dir=tmp_path, workers=1, progress=False, frame=ChipFrame())
    assert again.path == framed.path and np.array_equal(np.asarray(again.images), np.asarray(framed.images))
    # Framed: the chip shrinks into the middle of CelebA's frame, so it differs from the chip squeezed whole.
    assert np.abs(np.asarray(plain.images, dtype=float) - np.asarray(framed.images, dtype=float)).mean() > 10


def test_a_copy_with_the_chips_directly_in_root_is_found(utkface_root: Path, tmp_path: Path) -> None:
    src = load_utkface(utkface_root, "test", limit=5).paths
    for p in src:
        shutil.copy(p, tmp_path / p.name)
    assert is_utkface(tmp_path)
    assert len(load_utkface(tmp_path, "all")) == 5


def _write_landmarks(path: Path, rows: dict[str, np.ndarray | None]) -> Path:
    path.write_text("".join(name + ("" if pts is None else "".join(f"\t{v}" for v in np.ravel(pts))) + "\n"
                            for name, pts in rows.items()))
    return path


def test_chip_frame_with_landmarks_frames_each_listed_chip_by_its_own(utkface_root: Path, tmp_path: Path) -> None:
    # A chip listed with its own landmarks is placed by them (as predict aligns it); one listed without
    # (no face found) or not listed keeps the chips' mean framing.
    from faceattr.data.geometry import TEMPLATE, similarity_transform
    from faceattr.data.transforms import Preprocess
    from faceattr.data.utkface import UTK_TEMPLATE, read_chip_landmarks

    a, b, c = load_utkface(utkface_root, "valid", limit=3).paths
    shifted = UTK_TEMPLATE + [12.0, -6.0]  # the face 12 px further right and 6 px higher in the chip
    lm = _write_landmarks(tmp_path / "lm.tsv", {a.name: shifted, b.name: None})
    assert set(read_chip_landmarks(str(lm))) == {a.name}
    frame, plain = ChipFrame(landmarks=str(lm)), ChipFrame()
    np.testing.assert_allclose(frame.matrix(200, 200, a.name), similarity_transform(shifted, TEMPLATE))
    for name in (b.name, c.name, None):
        np.testing.assert_allclose(frame.matrix(200, 200, name), plain.matrix(200, 200))
    pre = Preprocess(size=(218, 178))
    with Image.open(a) as img:
        own, mean = frame(img, pre, a).astype(float), plain(img, pre).astype(float)
    # The own framing moves the chip 12 px left in the frame (the template maps chip px ~1:0.5 into it).
    assert np.abs(own - mean).mean() > 5
    scale = float(np.hypot(*similarity_transform(UTK_TEMPLATE, TEMPLATE)[:, 0]))
    moved = np.roll(mean, -round(12 * scale), axis=1)
    assert np.abs(own - moved)[40:180, 50:130].mean() < np.abs(own - mean)[40:180, 50:130].mean() / 3
    with Image.open(b) as img:
        assert np.array_equal(frame(img, pre, b), plain(img, pre))


def test_landmark_files_key_the_cache_and_bad_ones_get_one_line_errors(utkface_root: Path, tmp_path: Path) -> None:
    from faceattr.data.utkface import UTK_TEMPLATE, read_chip_landmarks

    name = load_utkface(utkface_root, "valid", limit=1).paths[0].name
    one = _write_landmarks(tmp_path / "one.tsv", {name: UTK_TEMPLATE + 1})
    two = _write_landmarks(tmp_path / "two.tsv", {name: UTK_TEMPLATE + 2})
    keys = {ChipFrame().key, ChipFrame(landmarks=str(one)).key, ChipFrame(landmarks=str(two)).key}
    assert len(keys) == 3  # new landmarks, new cached pixels
    with pytest.raises(FaceattrError, match="cannot read the landmarks file .*utk_landmarks.py"):
        _ = ChipFrame(landmarks=str(tmp_path / "missing.tsv")).key
    # Rewritten in the same process, the file is read again: the framing follows the new cache key.
    frame = ChipFrame(landmarks=str(one))
    before = frame.matrix(200, 200, name)
    _write_landmarks(one, {name: UTK_TEMPLATE + 9})
    os.utime(one, ns=(1, 1))  # a different mtime even where the clock is coarse
    assert frame.key not in keys and not np.allclose(frame.matrix(200, 200, name), before)
    (tmp_path / "short.tsv").write_text(f"{name}\t1.0\t2.0\n")
    with pytest.raises(FaceattrError, match="line 1: expected a file name and 10 coordinates, got 2"):
        read_chip_landmarks(str(tmp_path / "short.tsv"))
    (tmp_path / "nan.tsv").write_text(name + "\tx" * 10 + "\n")
    with pytest.raises(FaceattrError, match="line 1: a coordinate is not a number"):
        read_chip_landmarks(str(tmp_path / "nan.tsv"))


def test_native_chip_frame_samples_the_chip_itself_on_predicts_grid(utkface_root: Path, tmp_path: Path) -> None:
    from faceattr.data.cache import build_cache
    from faceattr.data.transforms import Preprocess

    paths = load_utkface(utkface_root, "valid", limit=6).paths
    face = (41, 84, 141, 184)  # the face member's 100x100 box in the aligned frame
    for pre in (Preprocess(size=(100, 100), crop=face), Preprocess(size=(218, 178))):
        # At the frame's own scale the straight warp and frame-then-crop sample the same points: equal pixels.
        for p in paths:
            with Image.open(p) as a, Image.open(p) as b:
                assert np.array_equal(ChipFrame(native=True)(a, pre, p), ChipFrame()(b, pre, p))
    # Larger than the box: the frame route upsamples 100 px, the straight one reads the chip's ~200 px, so it
    # holds more fine detail (energy of the image minus its 3x3 blur) while showing the same face.
    pre = Preprocess(size=(144, 144), crop=face)

    def detail(img: np.ndarray) -> float:
        f = img.astype(float).mean(axis=2)
        blur = sum(np.roll(np.roll(f, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
        return float(np.abs(f - blur)[2:-2, 2:-2].mean())

    for p in paths:
        with Image.open(p) as a, Image.open(p) as b:
            native, framed = ChipFrame(native=True)(a, pre, p), ChipFrame()(b, pre, p)
        assert native.shape == framed.shape == (144, 144, 3) and native.dtype == np.uint8
        assert np.abs(native.astype(float) - framed.astype(float)).mean() < 8
        assert detail(native) > 1.15 * detail(framed)
    # The cache tells the two framings apart.
    a = build_cache(paths, pre, cache_dir=tmp_path, workers=1, progress=False, frame=ChipFrame())
    b = build_cache(paths, pre, cache_dir=tmp_path, workers=1, progress=False, frame=ChipFrame(native=True))
    assert a.path != b.path and ChipFrame().key != ChipFrame(native=True).key
