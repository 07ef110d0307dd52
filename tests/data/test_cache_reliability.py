"""The decode cache when its files are edited, from another faceattr version, or the disk is full (issue 17).

tests/data/test_cache.py covers a killed build and a truncated data file; here: every way the sidecar
can be wrong, pixels changed behind our back, a cache of another FORMAT_VERSION, and ENOSPC. A cache
that cannot be trusted is rebuilt (with a warning), never read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from faceattr.data import cache as cache_mod
from faceattr.data.cache import build_cache, list_caches
from faceattr.data.transforms import Preprocess, prepare_image
from faceattr.errors import FaceattrError

from .conftest import count_decodes

PRE = Preprocess(size=(24, 20))


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    """Six small distinct PNGs."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for i in range(6):
        paths.append(folder / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (30, 26, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def _build(images: list[Path], folder: Path) -> Any:
    return build_cache(images, PRE, cache_dir=folder, workers=1, progress=False)


def _assert_fresh(cache: Any, images: list[Path]) -> None:
    assert cache.valid.all()
    for i, p in enumerate(images):
        with Image.open(p) as im:
            np.testing.assert_array_equal(cache.images[i], prepare_image(im, PRE))


def _edit_sidecar(meta: dict[str, Any], how: str) -> Any:
    if how == "not-json":
        return "{"
    if how == "a-list":
        return [meta]
    edits = {
        "other-version": {"format_version": cache_mod.FORMAT_VERSION + 1},
        "other-key": {"key": "0" * 64},
        "shape-edited": {"shape": [6, 24, 20, 4]},
        "shape-not-a-list": {"shape": 6},
        "invalid-row-out-of-range": {"invalid": [[99, "x.png", "edited"]]},
        "invalid-not-rows": {"invalid": "all of them"},
        "crc-edited": {"crc32": 12345},
    }
    return {**meta, **edits[how]}


@pytest.mark.parametrize("how", ["not-json", "a-list", "other-version", "other-key", "shape-edited", "shape-not-a-list",
                                 "invalid-row-out-of-range", "invalid-not-rows", "crc-edited"])
def test_an_edited_sidecar_means_a_rebuild(images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture, how: str) -> None:
    built = _build(images, tmp_path / "c")
    sidecar = built.path.with_suffix(".json")
    edited = _edit_sidecar(json.loads(sidecar.read_text()), how)
    sidecar.write_text(edited if isinstance(edited, str) else json.dumps(edited))
    calls = count_decodes(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="faceattr.data.cache"):
        again = _build(images, tmp_path / "c")
    assert len(calls) == len(images) and "rebuilding it" in caplog.text
    _assert_fresh(again, images)
    calls.clear()
    _assert_fresh(_build(images, tmp_path / "c"), images)  # and the rebuilt cache is trusted again
    assert calls == []


def test_pixels_changed_behind_its_back_mean_a_rebuild(images: list[Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    built = _build(images, tmp_path / "c")
    data = bytearray(built.path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte different: the size check alone cannot see it
    built.path.write_bytes(bytes(data))
    calls = count_decodes(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="faceattr.data.cache"):
        again = _build(images, tmp_path / "c")
    assert len(calls) == len(images) and "pixels changed" in caplog.text
    _assert_fresh(again, images)


def test_a_cache_from_before_the_checksum_is_still_used(images: list[Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    built = _build(images, tmp_path / "c")
    sidecar = built.path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    del meta["crc32"]
    sidecar.write_text(json.dumps(meta))
    calls = count_decodes(monkeypatch)
    _assert_fresh(_build(images, tmp_path / "c"), images)
    assert calls == []


def test_a_cache_of_another_format_version_is_never_read(images: list[Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    old = _build(images, tmp_path / "c")
    np.asarray(old.images)  # a reader of the old version may still be mapping it
    monkeypatch.setattr(cache_mod, "FORMAT_VERSION", cache_mod.FORMAT_VERSION + 1)
    calls = count_decodes(monkeypatch)
    new = _build(images, tmp_path / "c")
    assert len(calls) == len(images) and new.path != old.path  # the version is part of the key: its own file
    _assert_fresh(new, images)
    assert {e.name for e in list_caches(tmp_path / "c")} == {old.path.stem, new.path.stem}  # `faceattr cache` shows both


@pytest.mark.parametrize(("budget", "rename"), [(0, False), (50, False), (10**9, True)])
def test_disk_full_while_building_leaves_nothing_and_says_what_to_do(images: list[Path], tmp_path: Path, disk_full: Any,
                                                                    budget: int, rename: bool) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "keep.txt").write_text("someone else's file")
    disk_full(folder, budget=budget, rename=rename)
    with pytest.raises(FaceattrError) as info:
        _build(images, folder)
    msg = str(info.value)
    assert "\n" not in msg and "no space left on the disk" in msg and "FACEATTR_CACHE" in msg
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]  # no partial data, sidecar or temp file
