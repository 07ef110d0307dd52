"""Indexing: what lands in the index, incremental updates, resuming after a crash or a kill, engines."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faceattr.errors import FaceattrError
from faceattr.search import IndexStore, build_index, scan_folder
from faceattr.search.indexer import ray_missing_message

from .fakes import ATTRS, FakeModel, make_fake_model, write_image

TESTS = Path(__file__).resolve().parents[1]


def snapshot(index: Path) -> dict[str, tuple]:
    """Everything that matters about an index, independent of row ids and times: path -> (status, size, mtime, faces)."""
    con = sqlite3.connect(index)
    out = {}
    for fid, path, size, mtime, status, n in con.execute("SELECT id, path, size, mtime_ns, status, n_faces FROM files"):
        faces = con.execute("SELECT face_index, x, y, w, h, probs FROM faces WHERE file_id=? ORDER BY face_index", (fid,)).fetchall()
        assert len(faces) == n
        out[path] = (status, size, mtime, tuple((f[:5], np.frombuffer(f[5], "<f4").round(4).tobytes()) for f in faces))
    con.close()
    return out


def check_consistent(index: Path) -> None:
    con = sqlite3.connect(index)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT COUNT(*) FROM faces WHERE file_id NOT IN (SELECT id FROM files)").fetchone()[0] == 0
    assert con.execute("SELECT COUNT(*) FROM files f WHERE n_faces != (SELECT COUNT(*) FROM faces WHERE file_id=f.id)").fetchone()[0] == 0
    con.close()


def committed_files(index: Path) -> int:
    """Files committed to `index` so far (0 before its schema exists), read while another process writes."""
    if not index.exists():
        return 0
    try:
        con = sqlite3.connect(index, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM files").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # schema not there yet
        return 0


def kill_after_commits(proc: subprocess.Popen, index: Path, at_least: int, timeout: float) -> None:
    """SIGKILL the indexing `proc` once `index` holds `at_least` files; fail if it ends before that."""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None and committed_files(index) < at_least:
            time.sleep(0.02)
        assert proc.poll() is None, f"indexer ended before it could be killed: {proc.communicate()[1].decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_every_file_lands_with_its_faces_or_its_status(dataset: tuple[Path, dict], tmp_path: Path, fake_model: FakeModel) -> None:
    root, truth = dataset
    stats = build_index(root, tmp_path / "i.sqlite", fake_model, batch_size=8, progress=False)
    assert stats.scanned == stats.processed == len(truth) + 1  # + broken.jpg; notes.txt is not an image
    assert stats.batches == -(-stats.processed // 8)
    assert stats.faces == sum(n for _, n in truth.values())
    assert stats.noface == sum(n == 0 for _, n in truth.values())
    assert stats.errors == 1
    with IndexStore(tmp_path / "i.sqlite") as store:
        assert store.get_meta("root") == str(root.resolve())
        assert store.attributes == ATTRS
        errors = store.errors()
        assert [p for p, _ in errors] == ["broken.jpg"] and "not an image" in errors[0][1]
        m = store.face_matrix()
        for i, path in enumerate(m.paths):
            np.testing.assert_allclose(m.probs[i], truth[path][0], atol=1 / 255 + 1e-6)
        states = store.file_states()
        for path, (probs, n) in truth.items():
            st = (root / path).stat()
            assert states[path] == (st.st_size, st.st_mtime_ns, "faces" if n else "noface")
        two = next(p for p, (_, n) in truth.items() if n == 2)
        rows = store.conn.execute(
            "SELECT face_index, model, model_version FROM faces JOIN files ON files.id=file_id WHERE path=? ORDER BY face_index", (two,)
        ).fetchall()
        assert [r[0] for r in rows] == [0, 1] and {r[1] for r in rows} == {"fake"}
        assert rows[0][2] == store.get_meta("model_version")
    check_consistent(tmp_path / "i.sqlite")


def test_rerun_touches_only_new_changed_and_deleted_files(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, truth = dataset
    index = tmp_path / "i.sqlite"
    build_index(root, index, FakeModel(), batch_size=8, progress=False)
    before = snapshot(index)
    with IndexStore(index) as store:
        ids_before = dict(zip(store.face_matrix().paths, store.face_matrix().ids))

    model = FakeModel()
    stats = build_index(root, index, model, batch_size=8, progress=False)
    assert (stats.processed, stats.unchanged, stats.deleted, model.batches) == (0, len(truth) + 1, 0, 0)
    assert snapshot(index) == before

    paths = sorted(truth)
    touched, changed, deleted = paths[1], paths[2], paths[4]
    st = (root / touched).stat()
    os.utime(root / touched, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    write_image(root / changed, [0.99] * len(ATTRS), 1)
    (root / deleted).unlink()
    write_image(root / "new" / "added.png", [0.01] * len(ATTRS), 1)

    model = FakeModel()
    stats = build_index(root, index, model, batch_size=8, progress=False)
    assert sorted(Path(p).relative_to(root.resolve()).as_posix() for p in model.seen) == sorted([touched, changed, "new/added.png"])
    assert (stats.processed, stats.deleted, stats.unchanged) == (3, 1, len(truth) + 1 - 3)
    after = snapshot(index)
    assert deleted not in after and "new/added.png" in after
    assert after[touched][3] == before[touched][3] and after[touched][2] != before[touched][2]
    assert after[changed][3] != before[changed][3]
    with IndexStore(index) as store:
        m = store.face_matrix()
        ids_after = dict(zip(m.paths, m.ids))
        np.testing.assert_allclose(m.probs[m.paths.index(changed)], [0.99] * len(ATTRS), atol=1 / 255)
    untouched = [p for p in ids_before if p not in (touched, changed, deleted) and truth[p][1] == 1]
    assert all(ids_after[p] == ids_before[p] for p in untouched)  # unchanged files keep their face ids
    # Identical to indexing the current folder from scratch.
    build_index(root, tmp_path / "fresh.sqlite", FakeModel(), batch_size=8, progress=False)
    fresh = snapshot(tmp_path / "fresh.sqlite")
    assert after == fresh
    check_consistent(index)


def test_unreadable_files_are_not_retried_unless_asked(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = dataset
    index = tmp_path / "i.sqlite"
    build_index(root, index, FakeModel(), progress=False)
    model = FakeModel()
    assert build_index(root, index, model, progress=False).processed == 0
    model = FakeModel()
    stats = build_index(root, index, model, retry_errors=True, progress=False)
    assert stats.processed == 1 and model.seen == [str(root.resolve() / "broken.jpg")]


def test_another_model_is_refused_until_rebuild(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = dataset
    index = tmp_path / "i.sqlite"
    build_index(root, index, FakeModel(), progress=False)
    with pytest.raises(FaceattrError, match="built with model 'fake'.*--rebuild"):
        build_index(root, index, FakeModel(name="other"), progress=False)
    with pytest.raises(FaceattrError, match="built with model"):  # same name, other weights
        build_index(root, index, FakeModel(created="2027-01-01"), progress=False)
    stats = build_index(root, index, FakeModel(name="other"), rebuild=True, progress=False)
    assert stats.processed == stats.scanned
    with IndexStore(index) as store:
        assert store.get_meta("model_name") == "other"
        assert {r[0] for r in store.conn.execute("SELECT DISTINCT model FROM faces")} == {"other"}


def test_a_crash_mid_run_keeps_whole_batches_and_the_next_run_finishes(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, truth = dataset
    index = tmp_path / "i.sqlite"
    with pytest.raises(RuntimeError, match="injected"):
        build_index(root, index, FakeModel(fail_after_batches=2), batch_size=8, progress=False)
    with IndexStore(index) as store:
        assert store.counts()["files"] == 16  # exactly the two committed batches
    check_consistent(index)
    model = FakeModel()
    stats = build_index(root, index, model, batch_size=8, progress=False)
    assert stats.processed == len(truth) + 1 - 16 and stats.unchanged == 16
    build_index(root, tmp_path / "fresh.sqlite", FakeModel(), batch_size=8, progress=False)
    assert snapshot(index) == snapshot(tmp_path / "fresh.sqlite")


KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from search.fakes import FakeModel
from faceattr.search import build_index
build_index({root!r}, {index!r}, FakeModel(delay=0.15), batch_size=4, progress=False)
"""


def test_kill_during_indexing_then_rerun_gives_a_complete_consistent_index(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, truth = dataset
    index = tmp_path / "i.sqlite"
    code = KILL_SCRIPT.format(tests=str(TESTS), root=str(root), index=str(index))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kill_after_commits(proc, index, 12, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    check_consistent(index)
    with IndexStore(index) as store:
        partial = store.counts()["files"]
    assert 12 <= partial < len(truth) + 1 and partial % 4 == 0  # whole batches only
    model = FakeModel()
    stats = build_index(root, index, model, batch_size=4, progress=False)
    assert stats.unchanged == partial and stats.processed == len(truth) + 1 - partial
    build_index(root, tmp_path / "fresh.sqlite", FakeModel(), batch_size=8, progress=False)
    assert snapshot(index) == snapshot(tmp_path / "fresh.sqlite")
    check_consistent(index)


def test_worker_processes_write_the_same_index(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = dataset
    stats = build_index(root, tmp_path / "w.sqlite", make_fake_model, batch_size=6, workers=2, progress=False)
    assert stats.processed == stats.scanned and stats.batches == -(-stats.scanned // 6)
    build_index(root, tmp_path / "one.sqlite", FakeModel(), batch_size=6, progress=False)
    assert snapshot(tmp_path / "w.sqlite") == snapshot(tmp_path / "one.sqlite")
    check_consistent(tmp_path / "w.sqlite")


def test_parallel_engines_need_a_loadable_model(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = dataset
    with pytest.raises(FaceattrError, match="by name or path"):
        build_index(root, tmp_path / "i.sqlite", FakeModel(), workers=2, progress=False)
    with pytest.raises(FaceattrError, match="unknown engine 'rey' \\(did you mean ray\\?\\)"):
        build_index(root, tmp_path / "i.sqlite", FakeModel(), engine="rey", progress=False)


def test_ray_engine_without_ray_says_how_to_install_it(dataset: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = dataset
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(FaceattrError) as e:
        build_index(root, tmp_path / "i.sqlite", make_fake_model, engine="ray", progress=False)
    assert str(e.value) == ray_missing_message()
    assert "pip install 'faceattr[ray]'" in str(e.value)
    assert not (tmp_path / "i.sqlite").exists()  # refused before touching anything


@pytest.mark.ray
@pytest.mark.slow  # starting a local Ray cluster takes 30-90 s on a small shared machine
def test_ray_engine_writes_the_same_index(dataset: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'faceattr[ray]')")
    root, _ = dataset
    # Ray's worker processes must be able to import the fake model's module.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    stats = build_index(root, tmp_path / "r.sqlite", make_fake_model, batch_size=8, workers=2, engine="ray", progress=False)
    assert stats.processed == stats.scanned
    build_index(root, tmp_path / "one.sqlite", FakeModel(), batch_size=8, progress=False)
    assert snapshot(tmp_path / "r.sqlite") == snapshot(tmp_path / "one.sqlite")


def test_scan_recurses_skips_hidden_and_other_files_and_does_not_follow_folder_links(tmp_path: Path) -> None:
    root = tmp_path / "r"
    for rel in ["a.JPG", "b.png", "deep/er/c.webp", ".hidden/d.jpg", "e.txt", "f.jpeg"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    os.symlink(root / "deep", root / "loop")
    os.symlink(root / "b.png", root / "link.png")
    assert [e.path for e in scan_folder(root)] == ["a.JPG", "b.png", "deep/er/c.webp", "f.jpeg", "link.png"]


def test_threads_cap_applies_while_indexing_and_is_restored(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    import torch

    root, _ = dataset
    seen: list[int] = []

    class Recording(FakeModel):
        def predict_many(self, images, **kw):  # type: ignore[no-untyped-def,override]
            seen.append(torch.get_num_threads())
            return super().predict_many(images, **kw)

    before = torch.get_num_threads()
    build_index(root, tmp_path / "i.sqlite", Recording(), batch_size=16, threads=1, progress=False)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before
    with pytest.raises(FaceattrError, match="at least 1"):
        build_index(root, tmp_path / "i.sqlite", FakeModel(), threads=0, progress=False)


def test_threads_cap_reaches_an_onnx_runtime_backend_and_is_restored(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    # ONNX Runtime ignores OMP_NUM_THREADS and torch's setting: the indexer reopens its session instead.
    root, _ = dataset

    class Backend:
        def __init__(self) -> None:
            self.threads, self.spin, self.calls = 0, True, []

        def set_threads(self, n: int, *, spin: bool | None = None) -> None:
            self.calls.append((n, spin))
            self.threads = n
            self.spin = self.spin if spin is None else spin

    seen: list[tuple[int, bool]] = []

    class OnnxLike(FakeModel):
        backend = Backend()

        def predict_many(self, images, **kw):  # type: ignore[no-untyped-def,override]
            seen.append((self.backend.threads, self.backend.spin))
            return super().predict_many(images, **kw)

    model = OnnxLike()
    build_index(root, tmp_path / "i.sqlite", model, batch_size=16, threads=1, progress=False)
    # Capped to one thread that does not spin (the other cores are the other workers'), then restored.
    assert seen and set(seen) == {(1, False)}
    assert model.backend.calls == [(1, False), (0, True)] and model.backend.threads == 0 and model.backend.spin


class _GatedModel(FakeModel):
    """A FakeModel whose first batch signals `started` and then waits for `go`."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.go = threading.Event(), threading.Event()

    def predict_many(self, images: Any, **kw: Any) -> Any:
        self.started.set()
        assert self.go.wait(30), "the test never released the first run"
        yield from super().predict_many(images, **kw)


def test_a_second_run_on_the_same_index_waits_and_repeats_no_work(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, truth = dataset
    index = tmp_path / "i.sqlite"
    first, second = _GatedModel(), FakeModel()
    results: dict[str, Any] = {}

    def run(name: str, model: FakeModel) -> None:
        results[name] = build_index(root, index, model, batch_size=8, progress=False)

    a = threading.Thread(target=run, args=("first", first))
    a.start()
    assert first.started.wait(30)
    b = threading.Thread(target=run, args=("second", second))
    b.start()
    b.join(1.0)
    # Without the lock the second run plans every file (none is written yet) and indexes them all.
    assert b.is_alive() and second.batches == 0
    first.go.set()
    a.join(30), b.join(30)
    assert results["first"].processed == len(truth) + 1
    assert (results["second"].processed, results["second"].unchanged, second.batches) == (0, len(truth) + 1, 0)
    check_consistent(index)


def test_ages_are_indexed_and_an_age_model_replaces_one_without_only_by_rebuild(tmp_path: Path) -> None:
    import functools

    from faceattr.search.indexer import model_identity

    from .fakes import make_dataset

    ages: dict[str, float] = {}
    root = tmp_path / "photos"
    truth = make_dataset(root, 24, ages=ages)
    index = tmp_path / "i.sqlite"
    plain, aged = model_identity(FakeModel(), "fake"), model_identity(FakeModel(age=True), "fake")
    assert not plain.predicts_age and aged.predicts_age and plain.version != aged.version
    build_index(root, index, FakeModel(), progress=False)
    with IndexStore(index, readonly=True) as store:
        assert not store.predicts_age and np.isnan(store.face_matrix().ages).all()
    # The retrained model with age is another model: the index says to rebuild rather than mix the two.
    with pytest.raises(FaceattrError, match="--rebuild"):
        build_index(root, index, FakeModel(age=True), progress=False)
    # Two worker processes, so the ages also travel between processes.
    stats = build_index(root, index, functools.partial(make_fake_model, age=True), workers=2, batch_size=6, rebuild=True, progress=False)
    assert stats.processed == stats.scanned
    with IndexStore(index, readonly=True) as store:
        assert store.predicts_age and store.model_identity() == aged
        m = store.face_matrix()
        assert len(m.ids) == sum(n for _, n in truth.values())
        assert m.ages.tolist() == [ages[p] for p in m.paths]
