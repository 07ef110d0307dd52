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


AGED = ModelIdentity("m", "v2", "runs/age.safetensors", ("A", "B"), (0.5, 0.4), {"created": "y"}, predicts_age=True)

# The faces table as schema 1 wrote it (before faces.age), for the upgrade tests.
_SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE files (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, status TEXT NOT NULL, n_faces INTEGER NOT NULL DEFAULT 0, error TEXT, indexed_at TEXT NOT NULL);
CREATE TABLE faces (id INTEGER PRIMARY KEY AUTOINCREMENT, file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    face_index INTEGER NOT NULL, x REAL NOT NULL, y REAL NOT NULL, w REAL NOT NULL, h REAL NOT NULL, score REAL NOT NULL,
    landmarks TEXT NOT NULL, probs BLOB NOT NULL, model TEXT NOT NULL, model_version TEXT NOT NULL, UNIQUE (file_id, face_index));
"""


def _schema_1_index(path: Path, root: Path) -> Path:
    """An index written before ages were stored: schema 1, one file with one face."""
    import json

    con = sqlite3.connect(path)
    con.executescript(_SCHEMA_1)
    meta = {"schema_version": "1", "root": str(root.resolve()), "model_name": "m", "model_version": "v1", "model_source": "default",
            "model_meta": json.dumps({"created": "x"}), "attributes": json.dumps(["A", "B"]), "thresholds": json.dumps([0.5, 0.4]),
            "generation": "1"}
    con.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
    con.execute("INSERT INTO files(path, size, mtime_ns, status, n_faces, indexed_at) VALUES ('old.jpg', 1, 2, 'faces', 1, 'then')")
    con.execute("INSERT INTO faces(file_id, face_index, x, y, w, h, score, landmarks, probs, model, model_version) "
                "VALUES (1, 0, 1, 2, 3, 4, 0.9, '[]', ?, 'm', 'v1')", (np.asarray([0.2, 0.7], "<f4").tobytes(),))
    con.commit()
    con.close()
    return path


def test_ages_round_trip_and_unknown_ages_stay_unknown(tmp_path: Path) -> None:
    aged = FileRecord(FileEntry("a.jpg", 10, 20), "faces", [
        FaceRecord((1, 2, 3, 4), 0.9, [(1, 1)] * 5, np.asarray([0.1, 0.9], np.float32), age=34.25),
        FaceRecord((5, 2, 3, 4), 0.8, [(1, 1)] * 5, np.asarray([0.3, 0.6], np.float32), age=71.5),
    ])
    back = FileRecord.from_json(aged.to_json())  # how Ray moves records
    assert [f.age for f in back.faces] == [34.25, 71.5]
    with IndexStore(tmp_path / "i.sqlite", create=True) as store:
        store.initialise(tmp_path, AGED)
        store.write_records([aged], AGED)
        assert store.predicts_age and store.model_identity() == AGED
        m = store.face_matrix()
        np.testing.assert_allclose(m.ages, [34.25, 71.5])
        row = store.face(int(m.ids[1]))
        assert row is not None and row.age == 71.5 and row.to_dict()["age"] == 71.5
    with IndexStore(tmp_path / "j.sqlite", create=True) as store:
        store.initialise(tmp_path, IDENT)  # a model without age: whatever a record says, no age is stored
        store.write_records([aged, _rec("b.jpg")], IDENT)
        assert not store.predicts_age and store.get_meta("schema_version") == "2"
        assert np.isnan(store.face_matrix().ages).all()
        assert store.face(1).age is None  # type: ignore[union-attr]


def test_an_index_from_before_ages_is_read_as_is_and_upgraded_on_the_next_write(tmp_path: Path) -> None:
    from faceattr.search import search

    path = _schema_1_index(tmp_path / "old.sqlite", tmp_path)
    # Read-only (search, serve): nothing is changed; every face has no age, attribute queries work.
    with IndexStore(path, readonly=True) as store:
        assert not store.predicts_age and store.model_identity() == IDENT
        m = store.face_matrix()
        assert np.isnan(m.ages).all() and m.probs.tolist() == [pytest.approx([0.2, 0.7])]
        assert store.face(1).age is None  # type: ignore[union-attr]
        assert search(store, "B=1").total == 1
        with pytest.raises(FaceattrError, match="have no age.*--rebuild"):
            search(store, "age<30")
    assert sqlite3.connect(path).execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "1"
    # Opened for writing (what `faceattr index` does): the column is added, the old face keeps no age.
    with IndexStore(path, create=True) as store:
        assert store.get_meta("schema_version") == "2"
        assert "age" in {r[1] for r in store.conn.execute("PRAGMA table_info(faces)")}
        store.initialise(tmp_path, IDENT)  # the same model: an update, not a rebuild
        store.write_records([_rec("new.jpg")], IDENT)
        assert store.counts()["faces"] == 2 and np.isnan(store.face_matrix().ages).all()
        # An age model needs a rebuild (its version differs), which then fills every age.
        with pytest.raises(FaceattrError, match="--rebuild"):
            store.initialise(tmp_path, AGED)
        store.initialise(tmp_path, AGED, rebuild=True)
        store.write_records([FileRecord(FileEntry("old.jpg", 1, 2), "faces", [
            FaceRecord((1, 2, 3, 4), 0.9, [], np.asarray([0.2, 0.7], np.float32), age=52.0)])], AGED)
        assert store.predicts_age and store.face_matrix().ages.tolist() == [52.0]
    with IndexStore(path, readonly=True) as store:
        assert search(store, "age>50").total == 1


def test_an_index_from_a_newer_faceattr_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite"
    with IndexStore(path, create=True) as store:
        store.initialise(tmp_path, IDENT)
        store.conn.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    with pytest.raises(FaceattrError, match="schema 3, newer than this faceattr reads; upgrade faceattr"):
        IndexStore(path, readonly=True)
