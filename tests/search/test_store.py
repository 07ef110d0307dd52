"""The SQLite index: schema, WAL, atomic batches, model identity, and paths that cannot leave the root."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from faceattr.errors import FaceattrError
from faceattr.search.store import FaceRecord, FileEntry, FileRecord, IndexStore, ModelIdentity, safe_join

IDENT = ModelIdentity("m", "v1", "default", ("A", "B"), (0.5, 0.4), {"created": "x"})


def _rec(path: str, probs: list[float] | None = None, n: int = 1) -> FileRecord:
    faces = [FaceRecord((1, 2, 3, 4), 0.9, [(1, 1)] * 5, np.asarray(probs or [0.1, 0.9], np.float32)) for _ in range(n)]
    return FileRecord(FileEntry(path, 10, 20), "faces" if n else "noface", faces)


def test_fresh_index_has_schema_wal_and_meta(tmp_path: Path) -> None:
    with IndexStore(tmp_path / "i.sqlite", create=True) as store:
        store.initialise(tmp_path, IDENT)
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        meta = store.all_meta()
        assert meta["root"] == str(tmp_path.resolve())
        assert meta["model_name"] == "m" and meta["model_version"] == "v1" and meta["model_source"] == "default"
        assert store.attributes == ["A", "B"]
        np.testing.assert_allclose(store.thresholds, [0.5, 0.4])
        assert store.model_identity() == IDENT


def test_write_is_one_transaction_per_batch(tmp_path: Path) -> None:
    with IndexStore(tmp_path / "i.sqlite", create=True) as store:
        store.initialise(tmp_path, IDENT)
        gen = store.generation
        store.write_records([_rec("a.jpg"), _rec("b.jpg", n=2), _rec("c.jpg", n=0)], IDENT)
        assert store.generation == gen + 1
        assert store.counts() == {"files": 3, "faces": 3, "noface": 1, "error": 0, "with_faces": 2}
        # A bad record in the middle of a batch: nothing of that batch may land.
        bad = _rec("e.jpg", probs=[0.1, 0.2, 0.3])
        with pytest.raises(ValueError):
            store.write_records([_rec("d.jpg"), bad], IDENT)
        assert not store.has_file("d.jpg")
        assert store.counts()["files"] == 3


def test_rewriting_a_file_replaces_its_faces_and_never_reuses_ids(tmp_path: Path) -> None:
    with IndexStore(tmp_path / "i.sqlite", create=True) as store:
        store.initialise(tmp_path, IDENT)
        store.write_records([_rec("a.jpg", n=2)], IDENT)
        old = store.face_matrix().ids.tolist()
        store.write_records([_rec("a.jpg", probs=[0.7, 0.2], n=1)], IDENT)
        m = store.face_matrix()
        assert len(m.ids) == 1 and m.ids[0] not in old
        np.testing.assert_allclose(m.probs[0], [0.7, 0.2])
        assert store.face(int(old[0])) is None
        row = store.face(int(m.ids[0]))
        assert row is not None and row.path == "a.jpg" and row.probabilities == pytest.approx({"A": 0.7, "B": 0.2})
        assert store.delete_files(["a.jpg", "missing.jpg"]) == 1
        assert store.counts()["faces"] == 0


def test_other_model_or_root_is_refused_unless_rebuilding(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite"
    with IndexStore(path, create=True) as store:
        store.initialise(tmp_path, IDENT)
        store.write_records([_rec("a.jpg")], IDENT)
        other = ModelIdentity("m2", "v9", "runs/x.safetensors", ("A", "B"), (0.5, 0.5))
        with pytest.raises(FaceattrError, match="--rebuild") as e:
            store.initialise(tmp_path, other)
        assert "'m'" in str(e.value) and "--model default" in str(e.value)
        with pytest.raises(FaceattrError, match="not .*--rebuild"):
            store.initialise(tmp_path / "elsewhere", IDENT)
        store.initialise(tmp_path, other, rebuild=True)
        assert store.counts()["files"] == 0
        assert store.model_identity() == other


def test_missing_or_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FaceattrError, match="faceattr index"):
        IndexStore(tmp_path / "nope.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(FaceattrError, match="not a faceattr index"):
        IndexStore(junk)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t(x)").connection.commit()
    with pytest.raises(FaceattrError, match="not a faceattr index"):
        IndexStore(other)


def test_reader_sees_committed_batches_while_a_writer_is_open(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite"
    with IndexStore(path, create=True) as w:
        w.initialise(tmp_path, IDENT)
        w.write_records([_rec("a.jpg")], IDENT)
        with IndexStore(path, readonly=True) as r:
            assert r.counts()["faces"] == 1
            w.write_records([_rec("b.jpg")], IDENT)
            assert r.counts()["faces"] == 2
            with pytest.raises(sqlite3.OperationalError):
                r.conn.execute("DELETE FROM files")


@pytest.mark.parametrize(
    "bad",
    ["../secret.txt", "a/../../secret.txt", "/etc/passwd", "", "a/./../../x", "C:/x", "a\\..\\..\\x", "a//b", "x\x00y", "sub/.."],
)
def test_safe_join_refuses_paths_outside_the_root(tmp_path: Path, bad: str) -> None:
    with pytest.raises(FaceattrError, match="not a path inside"):
        safe_join(tmp_path, bad)


def test_safe_join_allows_files_inside_and_symlinked_files_but_not_symlinked_folders(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.jpg").write_bytes(b"x")
    assert safe_join(root, "sub/a.jpg") == root / "sub" / "a.jpg"
    os.symlink(outside / "x.jpg", root / "linked.jpg")
    assert safe_join(root, "linked.jpg") == root / "linked.jpg"
    os.symlink(outside, root / "escape")
    with pytest.raises(FaceattrError):
        safe_join(root, "escape/x.jpg")
