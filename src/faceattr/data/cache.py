"""Decode-once image cache: every image is decoded and resized once into a memory-mapped uint8 file.

Training then reads pixels straight from the page cache instead of decoding JPEGs every epoch.
A cache file is named by a hash of (image paths, their sizes and mtimes, output size and crop,
FORMAT_VERSION), so editing an image, changing the preprocessing or a new decoder version gives a
new file. Files are written under a temporary name and renamed at the end: a killed build never
leaves a cache that looks complete.

On disk, per cache: ``<stem>.u8`` (raw uint8 [N, H, W, 3]) and ``<stem>.json`` (shape, the rows that
could not be decoded and why). Nothing prunes them by itself: `list_caches` / `remove_caches`
(`faceattr cache`) show and delete them; a cache hit touches the sidecar, so its mtime is the last use.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import uuid
import zlib
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageFile
from tqdm import tqdm

from faceattr.data.transforms import Preprocess, prepare_image
from faceattr._atomic import write_error
from faceattr.errors import FaceattrError

__all__ = ["FORMAT_VERSION", "CacheEntry", "ImageCache", "build_cache", "default_cache_dir", "list_caches", "remove_caches"]

logger = logging.getLogger(__name__)

class Frame(Protocol):
    """Decodes an image that is not a CelebA-aligned crop into that framing, then prepares it."""

    @property
    def key(self) -> str:
        """A stable description of the framing, part of the cache key."""
        ...

    def __call__(self, img: Image.Image, pre: Preprocess, path: str | Path | None = None) -> np.ndarray:
        """Opened image (read from `path`) -> model input uint8 [H, W, 3]."""
        ...


# Bump when decoding or resizing changes what a cached row holds; old files are then ignored.
FORMAT_VERSION = 1
_CHUNK = 64  # images per task: big enough to amortise IPC, small enough for a smooth progress bar
_SHOW = 20  # how many bad file names a warning lists


@dataclass
class ImageCache:
    """Decoded images of one list of paths, memory-mapped read-only."""

    images: np.ndarray  # uint8 [N, H, W, 3] memmap, rows in the order of the paths given
    valid: np.ndarray  # bool [N]; False where the file was missing, corrupt or truncated (row is zeros)
    path: Path  # the .u8 data file

    def __len__(self) -> int:
        """Number of rows."""
        return len(self.valid)


def default_cache_dir() -> Path:
    """$FACEATTR_CACHE when set, else ~/.cache/faceattr."""
    env = os.environ.get("FACEATTR_CACHE", "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "faceattr"


def _cache_key(paths: Sequence[Path], pre: Preprocess, frame: Frame | None = None) -> str:
    """Hash of everything that decides the cached pixels (normalisation is applied later, so not mean/std)."""
    h = hashlib.sha256()
    head = {"v": FORMAT_VERSION, "size": pre.size, "crop": pre.crop, "n": len(paths)}
    if frame is not None:  # only when set, so the keys (and files) of plain caches stay as they were
        head["frame"] = frame.key
    h.update(json.dumps(head).encode())
    for p in paths:
        try:
            st = os.stat(p)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, -1  # missing now: a later fix of the file changes the key
        h.update(f"{os.path.abspath(p)}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()


def _decode_one(path: Path, pre: Preprocess, frame: Frame | None = None) -> np.ndarray:
    """Decode and prepare one image file (raises on unreadable, corrupt or truncated files)."""
    with Image.open(path) as img:
        return prepare_image(img, pre) if frame is None else frame(img, pre, path)


def _decode_chunk(target: str, shape: tuple[int, ...], pre: Preprocess, items: list[tuple[int, str]],
                  frame: Frame | None = None) -> list[Any]:
    """Decode `items` (row, path) into the memmap at `target`; return [(row, reason)] for failures."""
    rows = np.memmap(target, dtype=np.uint8, mode="r+", shape=shape)
    failed: list[tuple[int, str]] = []
    for i, p in items:
        try:
            rows[i] = _decode_one(Path(p), pre, frame)
        except Exception as e:  # noqa: BLE001 - any undecodable file is marked invalid, never fatal
            failed.append((i, f"{type(e).__name__}: {e}"))
    rows.flush()
    del rows
    return [len(items), failed]


def _decode_chunk_star(args: tuple[Any, ...]) -> list[Any]:
    """Pool adapter for `_decode_chunk`."""
    return _decode_chunk(*args)


def _worker_init() -> None:
    """Make truncated JPEGs raise in pool workers, whatever the parent set."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False


def _run_chunks(tasks: list[tuple[Any, ...]], workers: int) -> Generator[list[Any], None, None]:
    """Yield chunk results, decoded in-process (workers <= 1) or in a process pool."""
    if workers <= 1:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must count as invalid, not half-grey
        try:
            for task in tasks:
                yield _decode_chunk(*task)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
        return
    # fork starts workers instantly (no re-import of torch) and is what torch's DataLoader uses on
    # Linux; the workers only run PIL and numpy. Elsewhere, the platform default.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap_unordered(_decode_chunk_star, tasks)


def _read_meta(meta_path: Path) -> dict[str, Any] | None:
    """The sidecar JSON, or None when it is missing or unreadable."""
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _invalid_rows(meta: Any, key: str, shape: tuple[int, int, int, int]) -> list[list[Any]] | None:
    """The sidecar's [row, path, reason] list when the sidecar belongs to this cache, else None."""
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION or meta.get("key") != key:
        return None
    if not isinstance(meta.get("shape"), list) or tuple(meta["shape"]) != shape:
        return None
    bad = meta.get("invalid")
    if not isinstance(bad, list) or not all(
        isinstance(b, list) and len(b) == 3 and type(b[0]) is int and 0 <= b[0] < shape[0] for b in bad
    ):
        return None
    return bad


def _checksum(path: Path) -> int:
    """CRC-32 of a file, read in large blocks (0.3 s of CPU per GiB here, plus the reading, which warms
    the page cache that training then reads from anyway)."""
    crc = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(64 << 20), b""):
            crc = zlib.crc32(block, crc)
    return crc


def _open(data_path: Path, meta_path: Path, key: str, shape: tuple[int, int, int, int]) -> ImageCache | None:
    """Reopen a finished cache, or None when there is none or it cannot be trusted (then it is rebuilt)."""
    if not data_path.is_file():
        return None
    meta = _read_meta(meta_path)
    bad = _invalid_rows(meta, key, shape)
    if bad is None:
        logger.warning("ignoring decode cache %s: its metadata is missing, edited or from another faceattr version; "
                       "rebuilding it", data_path)
        return None
    if data_path.stat().st_size != int(np.prod(shape)):
        logger.warning("ignoring decode cache %s: it has the wrong size (truncated?); rebuilding it", data_path)
        return None
    if "crc32" in meta and _checksum(data_path) != meta["crc32"]:  # caches from before the checksum have none
        logger.warning("ignoring decode cache %s: its pixels changed since it was written; rebuilding it", data_path)
        return None
    valid = np.ones(shape[0], dtype=bool)
    valid[[row for row, _, _ in bad]] = False
    _warn_invalid(bad, shape[0])
    images = np.memmap(data_path, dtype=np.uint8, mode="r", shape=shape)
    with contextlib.suppress(OSError):  # a read-only cache folder still works; only "last used" goes stale
        os.utime(meta_path)
    return ImageCache(images=images, valid=valid, path=data_path)


@dataclass(frozen=True)
class CacheEntry:
    """One cache on disk: its files, their total size and when it was last written or used."""

    name: str  # the file stem, e.g. images-160x128-n1946-03d24e897e9949ab9443
    kind: str  # "images" (decoded pixels), "teachers" (distillation targets) or "partial" (a killed build)
    files: tuple[Path, ...]
    size: int  # bytes
    last_used: float  # seconds since the epoch: newest mtime of its files


# A build in progress writes .<stem>.<pid>.<hex>.tmp; only leftovers older than this are removed.
_PARTIAL_MIN_AGE_S = 24 * 3600


def list_caches(cache_dir: str | Path | None = None) -> list[CacheEntry]:
    """Every faceattr cache in `cache_dir` (default: `default_cache_dir()`), most recently used first."""
    folder = Path(cache_dir).expanduser() if cache_dir not in (None, "") else default_cache_dir()
    if not folder.is_dir():
        return []
    groups: dict[tuple[str, str], list[Path]] = {}
    for f in folder.iterdir():
        if not f.is_file():
            continue
        n = f.name
        if n.startswith("images-") and n.endswith((".u8", ".json")):
            key = ("images", n.rsplit(".", 1)[0])
        elif n.startswith("teachers-") and n.endswith(".safetensors"):
            key = ("teachers", n[: -len(".safetensors")])
        elif n.startswith((".images-", ".teachers-")) and n.endswith(".tmp"):
            key = ("partial", n)
        else:
            continue  # not ours: never listed, never removed
        groups.setdefault(key, []).append(f)
    entries = []
    for (kind, name), files in groups.items():
        stats = [f.stat() for f in files]
        entries.append(CacheEntry(name=name, kind=kind, files=tuple(sorted(files)), size=sum(st.st_size for st in stats),
                                  last_used=max(st.st_mtime for st in stats)))
    return sorted(entries, key=lambda e: e.last_used, reverse=True)


def remove_caches(cache_dir: str | Path | None = None, *, older_than_days: float = 0.0,
                  now: float | None = None) -> list[CacheEntry]:
    """Delete the caches not used for `older_than_days` (0: all of them); returns what was deleted.

    Leftovers of killed builds go only once they are a day old, so a build running now keeps its file.
    """
    import time

    if older_than_days < 0:
        raise FaceattrError(f"--older-than must be >= 0 days (0: every cache), got {older_than_days}")
    now = time.time() if now is None else now
    removed = []
    for e in list_caches(cache_dir):
        age = now - e.last_used
        if age < older_than_days * 86400 or (e.kind == "partial" and age < _PARTIAL_MIN_AGE_S):
            continue
        for f in e.files:
            f.unlink(missing_ok=True)  # a process still reading it keeps its open mapping
        removed.append(e)
    return removed


def _warn_invalid(bad: list[Any], total: int) -> None:
    """One warning naming the files that could not be decoded."""
    if not bad:
        return
    shown = "; ".join(f"{Path(name).name} ({reason})" for _, name, reason in bad[:_SHOW])
    more = f"; and {len(bad) - _SHOW} more" if len(bad) > _SHOW else ""
    logger.warning(
        "%d of %d images could not be decoded and are marked invalid: %s%s", len(bad), total, shown, more
    )


def build_cache(
    paths: Sequence[Path],
    pre: Preprocess,
    *,
    cache_dir: str | Path | None = None,
    workers: int = 0,
    progress: bool = True,
    frame: Frame | None = None,
) -> ImageCache:
    """Decode and resize every image once into a memory-mapped uint8 file; reopen it when it exists.

    `workers` processes decode in parallel (0: one per CPU core). Unreadable, corrupt or truncated
    files do not stop the build: their rows stay zero, `valid` is False there, and one warning names them.
    `frame` decodes images that are not CelebA-aligned crops into that framing (e.g. UTKFace chips).
    """
    paths = [Path(p) for p in paths]
    folder = Path(cache_dir).expanduser() if cache_dir not in (None, "") else default_cache_dir()
    height, width = pre.size
    shape = (len(paths), height, width, 3)
    key = _cache_key(paths, pre, frame)
    stem = f"images-{height}x{width}-n{len(paths)}-{key[:20]}"
    data_path, meta_path = folder / f"{stem}.u8", folder / f"{stem}.json"
    if not paths:
        return ImageCache(np.zeros(shape, dtype=np.uint8), np.zeros(0, dtype=bool), data_path)

    cached = _open(data_path, meta_path, key, shape)
    if cached is not None:
        logger.info("decode cache hit: %s (%d images, %dx%d)", data_path, len(paths), height, width)
        return cached

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FaceattrError(f"cannot create the decode cache folder {folder}: {e.strerror}; set FACEATTR_CACHE") from None
    nbytes = int(np.prod(shape))
    free = shutil.disk_usage(folder).free
    if free < nbytes + (64 << 20):
        raise FaceattrError(
            f"the decode cache needs {nbytes / 2**30:.1f} GiB but {folder} has {free / 2**30:.1f} GiB free; "
            "free some space or point FACEATTR_CACHE (or cache_dir) at another disk"
        )

    workers = workers if workers > 0 else (os.cpu_count() or 1)
    tasks = [
        (None, shape, pre, [(i, str(paths[i])) for i in range(start, min(start + _CHUNK, len(paths)))], frame)
        for start in range(0, len(paths), _CHUNK)
    ]
    workers = min(workers, len(tasks))
    tmp = folder / f".{stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp_meta = tmp.with_suffix(".json.tmp")
    logger.info("decoding %d images to %dx%d into %s with %d worker(s)", len(paths), height, width, data_path, workers)
    failed: list[tuple[int, str]] = []
    try:
        with open(tmp, "wb") as f:
            f.truncate(nbytes)  # sparse: rows that fail to decode stay zero without being written
        tasks = [(str(tmp), *task[1:]) for task in tasks]
        with tqdm(total=len(paths), unit="img", desc=f"decoding to {height}x{width}", disable=not progress) as bar:
            # closing(): an exception here shuts the pool down now, not whenever the generator is collected.
            with contextlib.closing(_run_chunks(tasks, workers)) as results:
                for done, bad in results:
                    failed.extend((int(i), str(reason)) for i, reason in bad)
                    bar.update(done)
        failed.sort()
        invalid = [[i, str(paths[i]), reason] for i, reason in failed]
        meta = {"format_version": FORMAT_VERSION, "key": key, "shape": list(shape), "preprocess": pre.to_dict(),
                "invalid": invalid, "crc32": _checksum(tmp)}
        with open(tmp_meta, "w", encoding="utf-8") as f:
            f.write(json.dumps(meta))
        for done in (tmp_meta, tmp):
            with open(done, "rb") as f:
                os.fsync(f.fileno())  # on disk before the names below point at them
        # Sidecar first, data last: the data file appearing is what marks the cache complete.
        os.replace(tmp_meta, meta_path)
        os.replace(tmp, data_path)
    except OSError as e:
        raise write_error(data_path, e, "decode cache", "point FACEATTR_CACHE at another disk") from None
    finally:
        for leftover in (tmp, tmp_meta):
            leftover.unlink(missing_ok=True)

    opened = _open(data_path, meta_path, key, shape)
    if opened is None:  # another process replaced it with something else in between
        raise FaceattrError(f"the decode cache {data_path} changed while it was being written; run again")
    return opened
