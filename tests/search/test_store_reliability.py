"""The index when its file is truncated or edited, and when the disk fills up mid-run (issue 17).

tests/search/test_store.py covers a foreign SQLite file, an index of a newer schema and the upgrade of
an older one; here: damage found only when reading, edited meta values and probability vectors, and
SQLITE_FULL (what SQLite reports on ENOSPC, injected with PRAGMA max_page_count).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faceattr.cli import main
from faceattr.errors import FaceattrError
from faceattr.search import search
from faceattr.search.store import FaceRecord, FileEntry, FileRecord, IndexStore, ModelIdentity

from .fakes import FakeModel

IDENT = ModelIdentity("m", "v1", "default", ("A", "B"), (0.5, 0.4), {"created": "x"})


def _rec(path: str) -> FileRecord:
    return FileRecord(FileEntry(path, 10, 20), "faces", [FaceRecord((1, 2, 3, 4), 0.9, [(1, 1)] * 5, np.asarray([0.1, 0.9], np.float32))])


def _index(tmp_path: Path, n: int = 300) -> Path:
    path = tmp_path / "i.sqlite"
    with IndexStore(path, create=True) as store:
        store.initialise(tmp_path, IDENT)
        store.write_records([_rec(f"{i:04d}.jpg") for i in range(n)], IDENT)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file, as after a clean exit
    return path


def _read_everything(path: Path) -> None:
    """What `faceattr search` and the server read from an index."""
    with IndexStore(path, readonly=True) as store:
        store.counts()
        store.face_matrix()
        store.face(1)
        search(store, "A=1 B<0.5")


def _refused(path: Path, *needles: str) -> None:
    with pytest.raises(FaceattrError) as info:
        _read_everything(path)
    msg = str(info.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg


@pytest.mark.parametrize("keep", [0.5, 0.9, 100])
def test_a_truncated_index_is_refused_with_what_to_do(tmp_path: Path, keep: float) -> None:
    path = _index(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    _refused(path, str(path))


@pytest.mark.parametrize(
    ("sql", "needle"),
    [
        ("UPDATE meta SET value='{' WHERE key='attributes'", "is damaged"),
        ("UPDATE meta SET value='\"A\"' WHERE key='attributes'", "is damaged"),
        ("UPDATE meta SET value='[0.5]' WHERE key='thresholds'", "1 thresholds for 2 attributes"),
        ("UPDATE meta SET value='two' WHERE key='schema_version'", "schema_version 'two'"),
        ("UPDATE faces SET probs=X'0000' WHERE id=7", "face 7 has no probability vector of 2 attributes"),
        ("UPDATE faces SET probs='text' WHERE id=1", "face 1 has no probability vector"),
        ("UPDATE faces SET x='wide' WHERE id=3", "is damaged"),
    ],
)
def test_edited_values_are_refused_not_read_as_garbage(tmp_path: Path, sql: str, needle: str) -> None:
    path = _index(tmp_path, n=10)
    con = sqlite3.connect(path)
    con.execute(sql)
    con.commit()
    con.close()
    _refused(path, needle, "delete it and index the folder again")


def test_a_scrambled_page_is_refused(tmp_path: Path) -> None:
    path = _index(tmp_path)
    data = bytearray(path.read_bytes())
    page = 4096
    data[page * 3 : page * 4] = bytes(range(256)) * 16  # one b-tree page replaced by noise
    path.write_bytes(bytes(data))
    _refused(path, "is damaged or truncated", "delete it and index the folder again")


def _fill_after(store: IndexStore, extra_pages: int) -> None:
    """Make the database 'full' `extra_pages` pages from now, as a full disk would."""
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count = {pages + extra_pages}")


def test_disk_full_mid_run_keeps_every_committed_batch(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite"
    with IndexStore(path, create=True) as store:
        store.initialise(tmp_path, IDENT)
        store.write_records([_rec("kept.jpg")], IDENT)
        generation = store.generation
        _fill_after(store, 2)
        with pytest.raises(FaceattrError) as info:
            store.write_records([_rec(f"{i:04d}.jpg") for i in range(500)], IDENT)
        msg = str(info.value)
        assert "\n" not in msg and "no space left on the disk" in msg and "committed before are kept" in msg
        assert not store.conn.in_transaction and store.generation == generation
    with IndexStore(path, readonly=True) as store:  # the index still opens, with exactly the first batch
        assert store.counts()["files"] == 1 and store.has_file("kept.jpg")
    with IndexStore(path) as store:  # and the next run, with space again, carries on
        store.write_records([_rec("later.jpg")], IDENT)
        assert store.counts()["files"] == 2


def test_disk_full_during_faceattr_index_exits_non_zero_with_one_line(
        dataset: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from faceattr.search import indexer

    monkeypatch.setattr(indexer, "load_model", lambda source, device="cpu", backend="auto": FakeModel())
    real = IndexStore.write_records
    calls: list[int] = []

    def full_from_the_second_batch(self: IndexStore, records: Any, model: Any) -> None:
        calls.append(len(records))
        if len(calls) == 2:
            _fill_after(self, 0)
        real(self, records, model)

    monkeypatch.setattr(IndexStore, "write_records", full_from_the_second_batch)
    root, _ = dataset
    index = tmp_path / "idx.sqlite"
    code = main(["-q", "index", str(root), "--out", str(index), "--batch-size", "8", "--workers", "1"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("faceattr: error:")]
    assert code == 2 and len(lines) == 1 and "no space left on the disk" in lines[0], err
    with IndexStore(index, readonly=True) as store:
        # Every batch before the one that hit the full disk is in (the pages left free took one or two
        # more); that one is not, not even in part.
        assert len(calls) >= 2 and store.counts()["files"] == sum(calls[:-1])
