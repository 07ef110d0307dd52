"""The attribute index: one SQLite file (WAL mode) that maps every face under a folder to its attributes.

Schema (``schema_version`` 2)::

    meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)
        schema_version  "2"
        root            absolute path of the indexed folder; every files.path is relative to it
        model_name      AttributeModel.name of the model that produced every row
        model_version   short digest of that model's name, attributes, thresholds and creation time
        model_source    the name or path it was loaded from ("default", "runs/x/best.safetensors")
        model_meta      JSON: {"created", "versions"} from the checkpoint
        attributes      JSON list of attribute names; the order of every faces.probs vector
        thresholds      JSON list of per-attribute decision thresholds (what `Attr=1` means)
        predicts_age    "1" when that model estimates age (faces.age is filled), "0" or absent when not
        created, updated  ISO-8601 UTC times
        generation      integer bumped by every committed write, so readers know when to reload

    files(id INTEGER PRIMARY KEY AUTOINCREMENT,
          path TEXT NOT NULL UNIQUE,          -- relative to meta.root, '/'-separated
          size INTEGER NOT NULL,              -- bytes, as seen when the run scanned the folder
          mtime_ns INTEGER NOT NULL,          -- st_mtime_ns at the same moment
          status TEXT NOT NULL,               -- 'faces' | 'noface' | 'error'
          n_faces INTEGER NOT NULL,
          error TEXT,                         -- why the file could not be read (status 'error')
          indexed_at TEXT NOT NULL)

    faces(id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so a stale face id never shows another face
          file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
          face_index INTEGER NOT NULL,        -- order within the image (detector order)
          x REAL, y REAL, w REAL, h REAL,     -- box in pixels of the EXIF-rotated image
          score REAL NOT NULL,                -- detector confidence (faces too small to classify are not stored)
          landmarks TEXT NOT NULL,            -- JSON [[x, y] * 5]: eyes, nose, mouth corners
          probs BLOB NOT NULL,                -- float32 little-endian [len(attributes)]
          model TEXT NOT NULL, model_version TEXT NOT NULL,
          age REAL,                           -- estimated age in years; NULL when the model has no age output
          UNIQUE(file_id, face_index))

Schema 2 added `faces.age` and `meta.predicts_age`. A schema-1 index is upgraded in place when it is
next opened for writing (the column is added, NULL for every face) and read as "no ages" until then;
its model predicted no age, so nothing is lost, and an age model needs `faceattr index --rebuild`
anyway (its version differs).

A file row and its face rows are always written in the same transaction, so a file is either fully
indexed or absent; a run commits once per batch, and a kill loses at most the batch in flight.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import numpy as np

from faceattr.errors import FaceattrError

__all__ = [
    "SCHEMA_VERSION",
    "CachedMatrix",
    "FaceMatrix",
    "FaceRecord",
    "FaceRow",
    "FileEntry",
    "FileRecord",
    "IndexStore",
    "ModelIdentity",
    "safe_join",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('faces', 'noface', 'error')),
    n_faces INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    indexed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    face_index INTEGER NOT NULL,
    x REAL NOT NULL, y REAL NOT NULL, w REAL NOT NULL, h REAL NOT NULL,
    score REAL NOT NULL,
    landmarks TEXT NOT NULL,
    probs BLOB NOT NULL,
    model TEXT NOT NULL,
    model_version TEXT NOT NULL,
    age REAL,
    UNIQUE (file_id, face_index)
);
CREATE INDEX IF NOT EXISTS faces_file ON faces(file_id);
"""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class FileEntry:
    """One image file as seen by a scan: path relative to the root ('/'-separated), size and mtime."""

    path: str
    size: int
    mtime_ns: int


@dataclass
class FaceRecord:
    """One detected face, ready to store."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: list[tuple[float, float]]
    probs: np.ndarray  # float32 [A], in the index's attribute order
    age: float | None = None  # years, None when the model does not predict age


@dataclass
class FileRecord:
    """The outcome of indexing one file: its faces, 'noface', or an error."""

    entry: FileEntry
    status: str
    faces: list[FaceRecord] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form, for engines that move records between processes as text (Ray)."""
        return {
            "entry": [self.entry.path, self.entry.size, self.entry.mtime_ns],
            "status": self.status,
            "error": self.error,
            "faces": [
                {"box": list(f.box), "score": f.score, "landmarks": [list(p) for p in f.landmarks], "probs": f.probs.tolist(),
                 "age": f.age}
                for f in self.faces
            ],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FileRecord:
        """Inverse of `to_json`."""
        path, size, mtime_ns = d["entry"]
        faces = [
            FaceRecord(
                box=tuple(float(v) for v in f["box"]),  # type: ignore[arg-type]
                score=float(f["score"]),
                landmarks=[(float(x), float(y)) for x, y in f["landmarks"]],
                probs=np.asarray(f["probs"], dtype=np.float32),
                age=None if f.get("age") is None else float(f["age"]),
            )
            for f in d["faces"]
        ]
        return cls(FileEntry(path, int(size), int(mtime_ns)), d["status"], faces, d.get("error"))


@dataclass(frozen=True)
class ModelIdentity:
    """What the index remembers about the model that built it."""

    name: str
    version: str
    source: str
    attributes: tuple[str, ...]
    thresholds: tuple[float, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    predicts_age: bool = False


@dataclass
class FaceMatrix:
    """Every face in an index as arrays, for vectorised queries."""

    ids: np.ndarray  # int64 [N]
    file_ids: np.ndarray  # int64 [N]
    paths: list[str]  # [N], relative to the root
    boxes: np.ndarray  # float32 [N, 4]
    scores: np.ndarray  # float32 [N]
    probs: np.ndarray  # float32 [N, A]
    ages: np.ndarray  # float32 [N], years; NaN where unknown (NaN fails every comparison, so it matches no age bound)


@dataclass
class FaceRow:
    """One face with its file, as stored."""

    id: int
    path: str
    face_index: int
    box: tuple[float, float, float, float]
    score: float
    landmarks: list[tuple[float, float]]
    probabilities: dict[str, float]
    model: str
    model_version: str
    age: float | None = None  # years, None when the index's model does not predict age

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "image": self.path,
            "face_index": self.face_index,
            "box": list(self.box),
            "score": self.score,
            "landmarks": [list(p) for p in self.landmarks],
            "attributes": self.probabilities,
            "model": self.model,
            "model_version": self.model_version,
            "age": self.age,
        }


def safe_join(root: Path, relative: str) -> Path:
    """Join a stored relative path onto `root`, refusing anything that would step outside it."""
    if not relative or "\x00" in relative or "\\" in relative:
        raise FaceattrError(f"not a path inside the indexed folder: {relative!r}")
    pure = PurePosixPath(relative)
    # Lexical check: absolute paths, drive letters, '..' and non-canonical spellings ('a//b', './a')
    # are refused outright; the index only ever stores canonical relative paths.
    if pure.is_absolute() or pure.as_posix() != relative or ".." in pure.parts or ":" in pure.parts[0]:
        raise FaceattrError(f"not a path inside the indexed folder: {relative!r}")
    joined = root.joinpath(*pure.parts)
    # Symlinked files inside the root are allowed (the indexer follows them), but no directory on
    # the way may be a symlink that leads out of the root.
    parent = joined.parent.resolve()
    if parent != root.resolve() and root.resolve() not in parent.parents:
        raise FaceattrError(f"not a path inside the indexed folder: {relative!r}")
    return joined


_F = TypeVar("_F", bound=Callable[..., Any])
_SQLITE_FULL, _SQLITE_CORRUPT, _SQLITE_NOTADB = 13, 11, 26


def _index_errors(method: _F) -> _F:
    """Turn SQLite errors inside an IndexStore method into one FaceattrError line; in a reading method
    (name not starting with write/delete/initialise) also stored values that do not parse."""
    writes = method.__name__.startswith(("write", "delete", "initialise"))

    @functools.wraps(method)
    def wrapper(self: IndexStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            raise self._error(e) from None
        except (ValueError, TypeError) as e:  # a stored value that is not the JSON, number or vector it should be
            if writes:
                raise
            raise FaceattrError(f"{self.path} is damaged ({e}); {self._redo}") from None

    return wrapper  # type: ignore[return-value]


class IndexStore:
    """A connection to one index file; writers and readers both go through it.

    Not shared between threads: each thread (or request) opens its own store, which SQLite's WAL mode
    makes cheap and lets readers run while a writer commits.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False, create: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if not self.path.exists() and not create:
            raise FaceattrError(f"index not found: {self.path}; build one with `faceattr index FOLDER --out {self.path}`")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if readonly:
                uri = f"file:{self.path.resolve()}?mode=ro"
                self.conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
            else:
                self.conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
                self.conn.execute("PRAGMA journal_mode=WAL")
                # NORMAL is durable across process kills in WAL mode; only a power cut can drop the last commit.
                self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            if create:
                self.conn.executescript(_SCHEMA)
            self._check_schema()
            self._has_age = self._upgrade()
        except sqlite3.DatabaseError as e:
            if e.sqlite_errorcode == _SQLITE_FULL:
                raise self._error(e) from None
            raise FaceattrError(f"{self.path} is not a faceattr index ({e})") from None

    @property
    def _redo(self) -> str:
        """What to do about an index that cannot be read."""
        return f"delete it and index the folder again (`faceattr index FOLDER --out {self.path}`)"

    def _error(self, e: sqlite3.Error) -> FaceattrError:
        """One line for an SQLite error: disk full, damaged file, locked, or anything else."""
        code = getattr(e, "sqlite_errorcode", None)
        if code == _SQLITE_FULL:
            return FaceattrError(
                f"cannot write index {self.path}: no space left on the disk; free some space and run `faceattr index` "
                "again (the batches committed before are kept, the one in flight was rolled back)"
            )
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return FaceattrError(f"{self.path} is damaged or truncated ({e}); {self._redo}")
        return FaceattrError(f"index {self.path}: {e}; check the file and that no other program holds it, then run again")

    def _check_schema(self) -> None:
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"meta", "files", "faces"} <= tables:
            raise FaceattrError(f"{self.path} is not a faceattr index (tables meta/files/faces missing)")
        version = self.get_meta("schema_version")
        if version is not None and not version.isdigit():
            raise FaceattrError(f"{self.path} is damaged (schema_version {version!r}); {self._redo}")
        if version is not None and int(version) > SCHEMA_VERSION:
            raise FaceattrError(f"{self.path} uses index schema {version}, newer than this faceattr reads; upgrade faceattr")

    def _upgrade(self) -> bool:
        """Add schema 2's faces.age column to an older index opened for writing; returns whether the column exists."""
        columns = {r[1] for r in self.conn.execute("PRAGMA table_info(faces)")}
        if "age" in columns:
            return True
        if self.readonly:
            return False  # read as "no ages"; the next `faceattr index` run adds the column
        with self.transaction() as conn:
            conn.execute("ALTER TABLE faces ADD COLUMN age REAL")
            if self.get_meta("schema_version") is not None:
                self._set_meta(conn, {"schema_version": str(SCHEMA_VERSION)})
        logger.info("%s: upgraded to index schema %d (faces.age added; the faces already indexed have no age)", self.path, SCHEMA_VERSION)
        return True

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> IndexStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (a failed COMMIT included)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            # SQLite may already have rolled back by itself (e.g. on a full disk): a second ROLLBACK would
            # fail and hide the error that matters.
            if self.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            raise

    # -- meta -----------------------------------------------------------------------------------
    @_index_errors
    def get_meta(self, key: str) -> str | None:
        """One meta value, or None."""
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @_index_errors
    def all_meta(self) -> dict[str, str]:
        """Every meta key and value."""
        return {k: v for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def _set_meta(self, conn: sqlite3.Connection, items: dict[str, str]) -> None:
        conn.executemany("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", list(items.items()))

    @property
    def root(self) -> Path:
        """The indexed folder."""
        value = self.get_meta("root")
        if value is None:
            raise FaceattrError(f"{self.path} has no root folder recorded; rebuild it with `faceattr index FOLDER --out {self.path} --rebuild`")
        return Path(value)

    @property
    @_index_errors
    def attributes(self) -> list[str]:
        """Attribute names, in the order of every stored probability vector."""
        names = json.loads(self.get_meta("attributes") or "[]")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"attributes are {type(names).__name__}, not a list of names")
        return names

    @property
    @_index_errors
    def thresholds(self) -> np.ndarray:
        """Per-attribute thresholds that `Attr=1` compares against."""
        values = np.asarray(json.loads(self.get_meta("thresholds") or "[]"), dtype=np.float32)
        if values.shape != (len(self.attributes),):
            raise ValueError(f"{values.size} thresholds for {len(self.attributes)} attributes")
        return values

    @property
    @_index_errors
    def predicts_age(self) -> bool:
        """Whether the index's model estimates age, so its faces carry one."""
        return self._has_age and self.get_meta("predicts_age") == "1"

    @property
    @_index_errors
    def generation(self) -> int:
        """Bumped by every committed write."""
        return int(self.get_meta("generation") or 0)

    @_index_errors
    def model_identity(self) -> ModelIdentity | None:
        """The model the index was built with, or None for a fresh index."""
        m = self.all_meta()
        if "model_name" not in m:
            return None
        return ModelIdentity(
            name=m["model_name"],
            version=m["model_version"],
            source=m.get("model_source", m["model_name"]),
            attributes=tuple(json.loads(m["attributes"])),
            thresholds=tuple(json.loads(m["thresholds"])),
            meta=json.loads(m.get("model_meta", "{}")),
            predicts_age=m.get("predicts_age") == "1",
        )

    @_index_errors
    def initialise(self, root: Path, model: ModelIdentity, *, rebuild: bool = False) -> None:
        """Bind a fresh index to `root` and `model`, or check that an existing one matches them."""
        root = root.resolve()
        existing = self.model_identity()
        stored_root = self.get_meta("root")
        if existing is not None and not rebuild:
            if (existing.name, existing.version) != (model.name, model.version) or existing.attributes != model.attributes:
                raise FaceattrError(
                    f"{self.path} was built with model '{existing.name}' (version {existing.version}, from "
                    f"'{existing.source}') but this run uses '{model.name}' (version {model.version}); pass "
                    f"--model {existing.source} to update it, or --rebuild to re-index everything with the new model"
                )
            if stored_root is not None and Path(stored_root) != root:
                raise FaceattrError(
                    f"{self.path} indexes {stored_root}, not {root}; index that folder, use another --out, "
                    f"or pass --rebuild to re-point it"
                )
        with self.transaction() as conn:
            if rebuild:
                conn.execute("DELETE FROM faces")
                conn.execute("DELETE FROM files")
            items = {
                "schema_version": str(SCHEMA_VERSION),
                "root": str(root),
                "model_name": model.name,
                "model_version": model.version,
                "model_source": model.source,
                "model_meta": json.dumps(model.meta),
                "attributes": json.dumps(list(model.attributes)),
                "thresholds": json.dumps([float(t) for t in model.thresholds]),
                "predicts_age": "1" if model.predicts_age else "0",
                "updated": _now(),
            }
            if self.get_meta("created") is None or rebuild:
                items["created"] = _now()
            self._set_meta(conn, items)
            self._bump(conn)

    def _bump(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO meta(key, value) VALUES('generation', '1') "
            "ON CONFLICT(key) DO UPDATE SET value=CAST(CAST(value AS INTEGER) + 1 AS TEXT)"
        )

    # -- files ----------------------------------------------------------------------------------
    @_index_errors
    def file_states(self) -> dict[str, tuple[int, int, str]]:
        """path -> (size, mtime_ns, status) for every indexed file."""
        return {p: (s, m, st) for p, s, m, st in self.conn.execute("SELECT path, size, mtime_ns, status FROM files")}

    @_index_errors
    def delete_files(self, paths: Iterable[str]) -> int:
        """Remove files (and their faces) in one transaction; returns how many were removed."""
        paths = list(paths)
        if not paths:
            return 0
        with self.transaction() as conn:
            # Explicit face delete as well as the cascade, so a connection without foreign_keys stays correct.
            conn.executemany("DELETE FROM faces WHERE file_id IN (SELECT id FROM files WHERE path=?)", [(p,) for p in paths])
            n = conn.executemany("DELETE FROM files WHERE path=?", [(p,) for p in paths]).rowcount
            self._bump(conn)
        return int(n)

    @_index_errors
    def write_records(self, records: Sequence[FileRecord], model: ModelIdentity) -> None:
        """Replace the rows of these files with their new records, all in one transaction."""
        now = _now()
        n_attr = len(model.attributes)
        with self.transaction() as conn:
            for rec in records:
                conn.execute("DELETE FROM faces WHERE file_id IN (SELECT id FROM files WHERE path=?)", (rec.entry.path,))
                conn.execute("DELETE FROM files WHERE path=?", (rec.entry.path,))
                cur = conn.execute(
                    "INSERT INTO files(path, size, mtime_ns, status, n_faces, error, indexed_at) VALUES(?,?,?,?,?,?,?)",
                    (rec.entry.path, rec.entry.size, rec.entry.mtime_ns, rec.status, len(rec.faces), rec.error, now),
                )
                file_id = cur.lastrowid
                rows = []
                for i, f in enumerate(rec.faces):
                    probs = np.asarray(f.probs, dtype="<f4")
                    if probs.shape != (n_attr,):
                        raise ValueError(f"{rec.entry.path}: face {i} has {probs.shape} probabilities, expected ({n_attr},)")
                    age = None if f.age is None or not model.predicts_age else float(f.age)
                    rows.append(
                        (file_id, i, *map(float, f.box), float(f.score), json.dumps([list(map(float, p)) for p in f.landmarks]),
                         probs.tobytes(), model.name, model.version, age)
                    )
                conn.executemany(
                    "INSERT INTO faces(file_id, face_index, x, y, w, h, score, landmarks, probs, model, model_version, age) "
                    "VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
            self._set_meta(conn, {"updated": now})
            self._bump(conn)

    # -- reading --------------------------------------------------------------------------------
    @_index_errors
    def counts(self) -> dict[str, int]:
        """Numbers of files by status and of faces."""
        out = {"files": 0, "faces": 0, "noface": 0, "error": 0, "with_faces": 0}
        for status, n in self.conn.execute("SELECT status, COUNT(*) FROM files GROUP BY status"):
            out["files"] += n
            out["with_faces" if status == "faces" else status] = n
        out["faces"] = int(self.conn.execute("SELECT COUNT(*) FROM faces").fetchone()[0])
        return out

    @_index_errors
    def errors(self) -> list[tuple[str, str]]:
        """(path, error) of every file that could not be read."""
        return [(p, e or "") for p, e in self.conn.execute("SELECT path, error FROM files WHERE status='error' ORDER BY path")]

    @_index_errors
    def face_matrix(self) -> FaceMatrix:
        """Load every face as arrays (one pass over the faces table)."""
        n_attr = len(self.attributes)
        age = "age" if self._has_age else "NULL"
        rows = self.conn.execute(
            f"SELECT faces.id, faces.file_id, files.path, x, y, w, h, score, probs, {age} FROM faces "
            "JOIN files ON files.id = faces.file_id ORDER BY faces.id"
        ).fetchall()
        if not rows:
            return FaceMatrix(
                np.zeros(0, np.int64), np.zeros(0, np.int64), [], np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                np.zeros((0, n_attr), np.float32), np.zeros(0, np.float32),
            )
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        file_ids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        boxes = np.asarray([r[3:7] for r in rows], dtype=np.float32)
        scores = np.fromiter((r[7] for r in rows), dtype=np.float32, count=len(rows))
        short = next((r[0] for r in rows if not isinstance(r[8], bytes) or len(r[8]) != 4 * n_attr), None)
        if short is not None:  # one short and one long vector would reshape fine and read as shifted garbage
            raise ValueError(f"face {short} has no probability vector of {n_attr} attributes")
        probs = np.frombuffer(b"".join(r[8] for r in rows), dtype="<f4").reshape(len(rows), n_attr).astype(np.float32)
        ages = np.fromiter((np.nan if r[9] is None else r[9] for r in rows), dtype=np.float32, count=len(rows))
        return FaceMatrix(ids, file_ids, [r[2] for r in rows], boxes, scores, probs, ages)

    @_index_errors
    def face(self, face_id: int) -> FaceRow | None:
        """One face by id, or None."""
        face_id = int(face_id)
        if not -(2**63) <= face_id < 2**63:  # SQLite ids are 64-bit; binding a larger int would raise OverflowError
            return None
        age = "age" if self._has_age else "NULL"
        r = self.conn.execute(
            f"SELECT faces.id, files.path, face_index, x, y, w, h, score, landmarks, probs, model, model_version, {age} "
            "FROM faces JOIN files ON files.id = faces.file_id WHERE faces.id=?",
            (face_id,),
        ).fetchone()
        if r is None:
            return None
        attributes = self.attributes
        if not isinstance(r[9], bytes) or len(r[9]) != 4 * len(attributes):
            raise ValueError(f"face {r[0]} has no probability vector of {len(attributes)} attributes")
        probs = np.frombuffer(r[9], dtype="<f4")
        return FaceRow(
            id=r[0], path=r[1], face_index=r[2], box=(r[3], r[4], r[5], r[6]), score=r[7],
            landmarks=[(float(x), float(y)) for x, y in json.loads(r[8])],
            probabilities={a: float(p) for a, p in zip(attributes, probs)},
            model=r[10], model_version=r[11], age=None if r[12] is None else float(r[12]),
        )

    @_index_errors
    def has_file(self, path: str) -> bool:
        """Whether `path` (relative) is an indexed file."""
        return self.conn.execute("SELECT 1 FROM files WHERE path=?", (path,)).fetchone() is not None


class CachedMatrix:
    """A thread-safe cache of an index's face matrix, reloaded when the index's generation changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._generation = -1
        self._matrix: FaceMatrix | None = None

    def get(self, store: IndexStore) -> FaceMatrix:
        """The current matrix, loading it through `store` if the index changed since last time."""
        gen = store.generation
        with self._lock:
            if self._matrix is None or gen != self._generation:
                logger.debug("loading face matrix of %s (generation %d)", self.path, gen)
                self._matrix = store.face_matrix()
                self._generation = gen
            return self._matrix

