"""Real photos, real model: index CelebA images and the shipped portraits, query them, update, kill, resume.

Needs the CelebA subset (shared/celeba) and the shipped default model; skips without either.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faceattr.search import IndexStore, build_index, probe_vector, search

from .test_indexer import check_consistent, kill_after_commits

SAMPLES = Path(__file__).resolve().parents[2] / "src" / "faceattr" / "assets" / "samples"


def pick_subset(labels: dict[str, list[int]], names: list[str], positives: int = 30, others: int = 120) -> list[str]:
    """Deterministic subset: `positives` Eyeglasses=1 images and `others` of the rest, each spread evenly
    over the whole file range, so file order (the tie-break) says nothing about the labels."""
    j = names.index("Eyeglasses")
    files = sorted(labels)
    pos = [f for f in files if labels[f][j] == 1]
    pos = pos[:: max(1, len(pos) // positives)][:positives]
    rest = [f for f in files if labels[f][j] == 0]
    return sorted(pos + rest[:: max(1, len(rest) // others)][:others])


@pytest.fixture(scope="module")
def real_index(tmp_path_factory: pytest.TempPathFactory, celeba_root: Path, celeba_labels: Any, default_model: Any) -> tuple[Path, Path, list[str]]:
    """CelebA subset (symlinked) + the shipped portraits, indexed once with the default model."""
    names, labels = celeba_labels
    root = tmp_path_factory.mktemp("real") / "photos"
    (root / "celeba").mkdir(parents=True)
    subset = pick_subset(labels, names)
    for f in subset:
        os.symlink(celeba_root / "img_align_celeba" / f, root / "celeba" / f)
    shutil.copytree(SAMPLES, root / "portraits", ignore=shutil.ignore_patterns("*.md"))
    index = root.parent / "index.sqlite"
    stats = build_index(root, index, default_model, batch_size=32, progress=False)
    assert stats.processed == len(subset) + 2 and stats.errors == 0
    return root, index, subset


def _labels_of(matches: Any, labels: dict[str, list[int]], names: list[str], attr: str) -> list[int]:
    j = names.index(attr)
    return [labels[Path(m.image).name][j] for m in matches if m.image.startswith("celeba/")]


def test_every_celeba_face_is_found(real_index: Any) -> None:
    _, index, subset = real_index
    with IndexStore(index) as store:
        c = store.counts()
    # Aligned CelebA crops hold one face each; the detector may miss a handful of hard ones.
    assert c["with_faces"] >= 0.95 * (len(subset) + 2)
    assert c["faces"] <= c["with_faces"] + 10


def test_eyeglasses_query_returns_people_with_glasses(real_index: Any, celeba_labels: Any) -> None:
    _, index, _ = real_index
    names, labels = celeba_labels
    top = search(index, "Eyeglasses=1", top=20)
    got = _labels_of(top.matches, labels, names, "Eyeglasses")
    # How many pass the threshold depends on the model's calibration; most of those that do must be right.
    assert len(got) >= 5 and sum(got) >= 0.8 * len(got), got
    # Threshold-free: every face ranked by p(Eyeglasses); 30 of the ~150 faces wear glasses.
    ranked = search(index, "Eyeglasses>=0", top=20)
    assert ranked.total == ranked.searched
    assert sum(_labels_of(ranked.matches, labels, names, "Eyeglasses")) >= 16
    none = search(index, "eyeglasses=0", top=20)
    assert sum(_labels_of(none.matches, labels, names, "Eyeglasses")) <= 1


def test_combined_query_matches_labels(real_index: Any, celeba_labels: Any) -> None:
    _, index, _ = real_index
    names, labels = celeba_labels
    res = search(index, "Male=0 Smiling=1", top=20)
    male = _labels_of(res.matches, labels, names, "Male")
    smiling = _labels_of(res.matches, labels, names, "Smiling")
    assert len(male) >= 18
    assert sum(1 - m for m in male) >= 0.85 * len(male) and sum(smiling) >= 0.75 * len(smiling)
    # Bounds: every match really is above/below them.
    res = search(index, "Young>0.8 Blond_Hair<0.2", top=50)
    assert res.matches and all(m.probabilities["Young"] > 0.8 and m.probabilities["Blond_Hair"] < 0.2 for m in res.matches)


def test_like_a_portrait_finds_that_portrait(real_index: Any, default_model: Any) -> None:
    _, index, _ = real_index
    with IndexStore(index) as store:
        attrs = store.attributes
    for name in ("grace_hopper.jpg", "astronaut.jpg"):
        vec = probe_vector(default_model, SAMPLES / name, attrs)
        res = search(index, like=vec, top=3)
        assert res.matches[0].image == f"portraits/{name}"
        assert res.matches[0].similarity == pytest.approx(1.0, abs=1e-3)


def test_incremental_update_processes_only_what_changed(tmp_path: Path, celeba_root: Path, celeba_labels: Any, default_model: Any) -> None:
    _, labels = celeba_labels
    files = sorted(labels)[:20]
    root = tmp_path / "photos"
    root.mkdir()
    for f in files[:19]:  # real copies in tmp: touching a symlink would change the shared original
        shutil.copy(celeba_root / "img_align_celeba" / f, root / f)
    index = tmp_path / "i.sqlite"
    assert build_index(root, index, default_model, batch_size=8, progress=False).processed == 19
    st = (root / files[3]).stat()
    os.utime(root / files[3], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    (root / files[7]).unlink()
    shutil.copy(celeba_root / "img_align_celeba" / files[19], root / files[19])
    stats = build_index(root, index, default_model, batch_size=8, progress=False)
    assert (stats.processed, stats.deleted, stats.unchanged) == (2, 1, 17)
    with IndexStore(index) as store:
        states = store.file_states()
    assert set(states) == set(files) - {files[7]}
    assert states[files[3]][1] == st.st_mtime_ns + 10**9


def test_killed_cli_run_resumes_to_a_complete_index(tmp_path: Path, celeba_root: Path, celeba_labels: Any, default_model: Any) -> None:
    _, labels = celeba_labels
    files = sorted(labels)[1000:1048]
    root = tmp_path / "photos"
    root.mkdir()
    for f in files:
        os.symlink(celeba_root / "img_align_celeba" / f, root / f)
    index = tmp_path / "i.sqlite"
    model = os.environ.get("FACEATTR_TEST_MODEL", "default")
    cmd = [sys.executable, "-m", "faceattr.cli", "-q", "index", str(root), "--out", str(index), "--batch-size", "8", "--model", model]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kill_after_commits(proc, index, 16, timeout=120)
    check_consistent(index)
    with IndexStore(index) as store:
        partial = store.counts()["files"]
    assert 16 <= partial < len(files) and partial % 8 == 0
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    assert f"processed {len(files) - partial} of {len(files)} images ({partial} unchanged" in out
    check_consistent(index)
    with IndexStore(index) as store:
        assert set(store.file_states()) == set(files)
        m = store.face_matrix()
        attrs = store.attributes
    # Rows written before the kill hold the same numbers as a direct prediction.
    for path in m.paths[:3]:
        faces = default_model.predict(root / path)
        direct = np.asarray([faces[0].probabilities[a] for a in attrs])
        np.testing.assert_allclose(m.probs[m.paths.index(path)], direct, atol=1e-4)
