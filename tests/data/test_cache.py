"""faceattr.data.cache: decode once, reopen without decoding, survive bad files, never look complete early."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceattr.data import cache as cache_mod
from faceattr.data.cache import ImageCache, build_cache, default_cache_dir
from faceattr.data.transforms import Preprocess, prepare_image
from faceattr.errors import FaceattrError

from .conftest import count_decodes

PRE = Preprocess(size=(40, 32), crop=(9, 29, 169, 189))


def test_build_then_hit_without_decoding(tmp_path: Path, real_images, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = real_images(200)
    calls = count_decodes(monkeypatch)
    first = build_cache(paths, PRE, cache_dir=tmp_path, workers=1, progress=False)
    assert isinstance(first, ImageCache) and len(first) == 200 and len(calls) == 200
    assert isinstance(first.images, np.memmap) and first.images.shape == (200, 40, 32, 3)
    assert first.images.dtype == np.uint8 and first.valid.all()
    assert first.path.parent == tmp_path and first.path.suffix == ".u8"
    for i in (0, 77, 199):
        np.testing.assert_array_equal(first.images[i], prepare_image(Image.open(paths[i]), PRE))

    def must_not_decode(path: Path, pre: Preprocess) -> np.ndarray:
        raise AssertionError("cache hit must not decode")

    monkeypatch.setattr(cache_mod, "_decode_one", must_not_decode)
    second = build_cache(paths, PRE, cache_dir=tmp_path, workers=1, progress=False)
    assert second.path == first.path
    np.testing.assert_array_equal(np.asarray(second.images), np.asarray(first.images))
    assert not second.images.flags.writeable  # read-only map: nobody scribbles on the shared cache


def test_key_covers_size_crop_order_and_mtime(tmp_path: Path, real_images, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for src in real_images(30):
        shutil.copy(src, folder / src.name)
        paths.append(folder / src.name)
    base = build_cache(paths, PRE, cache_dir=tmp_path / "c", workers=1, progress=False).path
    calls = count_decodes(monkeypatch)
    other = [
        build_cache(paths, Preprocess(size=(40, 40), crop=PRE.crop), cache_dir=tmp_path / "c", workers=1,
                    progress=False).path,
        build_cache(paths, Preprocess(size=PRE.size), cache_dir=tmp_path / "c", workers=1, progress=False).path,
        build_cache(paths[::-1], PRE, cache_dir=tmp_path / "c", workers=1, progress=False).path,
    ]
    assert len(set([base, *other])) == 4 and len(calls) == 90
    # Only mean/std differ: same pixels, so the same cache.
    renorm = Preprocess(size=PRE.size, crop=PRE.crop, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert build_cache(paths, renorm, cache_dir=tmp_path / "c", workers=1, progress=False).path == base
    stat = paths[3].stat()
    os.utime(paths[3], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # an edited image
    assert build_cache(paths, PRE, cache_dir=tmp_path / "c", workers=1, progress=False).path != base


def test_default_dir_is_faceattr_cache_env(real_images, _cache_dir: Path) -> None:
    assert default_cache_dir() == _cache_dir
    built = build_cache(real_images(3), PRE, progress=False, workers=1)
    assert built.path.parent == _cache_dir and built.path.is_file()


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_files_are_marked_invalid_and_logged_once(
    tmp_path: Path, real_images, caplog: pytest.LogCaptureFixture, workers: int
) -> None:
    good = real_images(70)
    folder = tmp_path / "bad"
    folder.mkdir()
    jpeg = good[0].read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "random.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (folder / "empty.jpg").write_bytes(b"")
    bad = [folder / "truncated.jpg", folder / "random.jpg", folder / "empty.jpg", folder / "missing.jpg"]
    paths = good[:10] + bad[:2] + good[10:] + bad[2:]
    with caplog.at_level(logging.WARNING, logger="faceattr.data"):
        built = build_cache(paths, PRE, cache_dir=tmp_path / "c", workers=workers, progress=False)
    invalid = [paths[i].name for i in np.flatnonzero(~built.valid)]
    assert invalid == ["truncated.jpg", "random.jpg", "empty.jpg", "missing.jpg"]
    assert int(built.valid.sum()) == 70
    assert not np.asarray(built.images)[~built.valid].any()  # invalid rows stay zero
    np.testing.assert_array_equal(built.images[12], prepare_image(Image.open(good[10]), PRE))
    records = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(records) == 1
    message = records[0].getMessage()
    assert message.startswith("4 of 74 images could not be decoded")
    assert all(name in message for name in invalid) and "truncated" in message
    # The mask survives a reopen.
    again = build_cache(paths, PRE, cache_dir=tmp_path / "c", workers=workers, progress=False)
    np.testing.assert_array_equal(again.valid, built.valid)


def test_pool_and_in_process_builds_agree(tmp_path: Path, real_images) -> None:
    paths = real_images(150)
    one = build_cache(paths, PRE, cache_dir=tmp_path / "a", workers=1, progress=False)
    two = build_cache(paths, PRE, cache_dir=tmp_path / "b", workers=2, progress=True)
    np.testing.assert_array_equal(np.asarray(one.images), np.asarray(two.images))
    assert one.path.name == two.path.name


def test_killed_build_leaves_nothing_that_looks_complete(
    tmp_path: Path, real_images, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = real_images(200)
    real_chunk = cache_mod._decode_chunk
    done = []

    def dies_midway(*args):  # noqa: ANN002, ANN202
        if done:
            raise KeyboardInterrupt  # what Ctrl-C (or a kill) looks like in the middle of a build
        done.append(1)
        return real_chunk(*args)

    monkeypatch.setattr(cache_mod, "_decode_chunk", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        build_cache(paths, PRE, cache_dir=tmp_path, workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []  # no data file, no sidecar, no temp file
    monkeypatch.setattr(cache_mod, "_decode_chunk", real_chunk)
    built = build_cache(paths, PRE, cache_dir=tmp_path, workers=1, progress=False)
    assert built.valid.all() and built.images[199].any()
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".u8"]
    meta = json.loads(built.path.with_suffix(".json").read_text())
    assert meta["shape"] == [200, 40, 32, 3] and meta["invalid"] == []


def test_torn_cache_is_rebuilt(tmp_path: Path, real_images, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = real_images(20)
    built = build_cache(paths, PRE, cache_dir=tmp_path, workers=1, progress=False)
    with open(built.path, "r+b") as f:
        f.truncate(100)  # a file cut short by something outside our control
    calls = count_decodes(monkeypatch)
    again = build_cache(paths, PRE, cache_dir=tmp_path, workers=1, progress=False)
    assert len(calls) == 20 and again.valid.all()
    np.testing.assert_array_equal(again.images[5], prepare_image(Image.open(paths[5]), PRE))


def test_empty_path_list(tmp_path: Path) -> None:
    empty = build_cache([], PRE, cache_dir=tmp_path, progress=False)
    assert empty.images.shape == (0, 40, 32, 3) and empty.valid.shape == (0,)


def test_list_and_remove_caches_touch_only_faceattr_files(real_images, tmp_path: Path, capsys) -> None:
    from faceattr.cli import main
    from faceattr.data.cache import list_caches, remove_caches

    folder = tmp_path / "cache"
    a = build_cache(real_images(6), Preprocess(size=(32, 32)), cache_dir=folder, workers=1, progress=False)
    b = build_cache(real_images(4), Preprocess(size=(24, 20)), cache_dir=folder, workers=1, progress=False)
    foreign = folder / "notes.txt"
    foreign.write_text("mine")
    partial_new = folder / ".images-32x32-n9-abc.123.deadbeef.tmp"  # a build running right now
    partial_old = folder / ".images-32x32-n9-def.456.cafebabe.tmp"  # left by a build killed long ago
    for f in (partial_new, partial_old):
        f.write_bytes(b"\0" * 10)
    day = 86400.0
    t0 = a.path.stat().st_mtime
    os.utime(partial_old, (t0 - 3 * day, t0 - 3 * day))
    for f in (a.path, a.path.with_suffix(".json")):
        os.utime(f, (t0 - 10 * day, t0 - 10 * day))  # cache a unused for 10 days

    entries = {e.name: e for e in list_caches(folder)}
    assert set(entries) == {a.path.stem, b.path.stem, partial_new.name, partial_old.name}
    assert entries[a.path.stem].kind == "images" and entries[partial_old.name].kind == "partial"
    assert entries[a.path.stem].size == 6 * 32 * 32 * 3 + a.path.with_suffix(".json").stat().st_size
    assert [e.name for e in list_caches(folder)][-1] == a.path.stem  # most recently used first

    # Reopening a cache counts as using it: its sidecar's mtime moves to now.
    build_cache(real_images(6), Preprocess(size=(32, 32)), cache_dir=folder, workers=1, progress=False)
    assert list_caches(folder)[0].name == a.path.stem
    for f in (a.path, a.path.with_suffix(".json")):
        os.utime(f, (t0 - 10 * day, t0 - 10 * day))

    gone = remove_caches(folder, older_than_days=5, now=t0)
    assert {e.name for e in gone} == {a.path.stem}  # b is fresh; partials are under the 5-day bar or too young
    assert not a.path.exists() and b.path.exists() and foreign.exists()
    assert main(["cache", "--dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert b.path.stem in out and "3 cache(s)" in out and "notes.txt" not in out
    assert main(["cache", "--dir", str(folder), "--clear"]) == 0
    assert "deleted 2 cache(s)" in capsys.readouterr().out  # b and the old partial; the running build's file stays
    assert sorted(f.name for f in folder.iterdir()) == sorted([foreign.name, partial_new.name])
    with pytest.raises(FaceattrError, match="older-than"):
        remove_caches(folder, older_than_days=-1)
    assert list_caches(tmp_path / "missing") == []


def test_cache_listing_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    import subprocess
    import sys

    folder = tmp_path / "cache"
    folder.mkdir()
    for i in range(3000):  # far more than a pipe buffer of listing, so the writer sees the reader go
        (folder / f"images-8x8-n1-{i:020d}.u8").write_bytes(b"")
    cmd = f"{sys.executable} -m faceattr.cli cache --dir {folder} | head -n 1"
    done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("last used")
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
