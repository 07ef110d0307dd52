"""Atomic file writes: a temp file beside the target, fsync'd, then `os.replace`d over it.

Whatever goes wrong while writing (a full disk, a kill, a read-only folder), the target is either the
previous file or the complete new one, never a torn mix, and no temp file is left behind. An OSError
becomes one FaceattrError line that says what to do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from faceattr.errors import FaceattrError

__all__ = ["atomic_output", "atomic_write", "temp_path", "write_error"]

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def write_error(path: str | Path, e: OSError, what: str = "file", elsewhere: str = "write elsewhere") -> FaceattrError:
    """One line for a failed write, with what to do: disk full, not writable, or anything else."""
    if e.errno in _FULL:
        hint = f"no space left on the disk; free some space (or {elsewhere}) and run again"
    elif e.errno in _DENIED:
        hint = f"{e.strerror or e}; choose a writable location"
    else:
        hint = f"{e.strerror or e}; check the disk and the folder, then run again"
    return FaceattrError(f"cannot write the {what} {path}: {hint} (any previous {what} there is unchanged)")


def temp_path(path: Path) -> Path:
    """A hidden, unique temp name in `path`'s folder (same file system, so `os.replace` is atomic)."""
    # Ends in .tmp, like the decode cache's own partial files: `faceattr cache` lists a killed run's leftover.
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def _fsync_dir(folder: Path) -> None:
    """Persist a rename (best effort: some file systems and platforms refuse to open a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | Path, what: str = "file") -> Iterator[Path]:
    """Yield a temp path to write; on success fsync it and replace `path` with it, on any error remove it.

    An OSError (in the body or while replacing) is raised as `write_error`'s FaceattrError.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data is on disk before the name points at it
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        raise write_error(path, e, what) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: bytes | str, what: str = "file") -> Path:
    """Write `data` (str as UTF-8) to `path` atomically; returns the path."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_output(path, what) as tmp:
        with open(tmp, "wb") as f:
            f.write(payload)
    return path
