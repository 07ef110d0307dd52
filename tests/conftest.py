"""Shared fixtures: the real CelebA subset and offline weights beside the checkout, when present."""

from __future__ import annotations

import builtins
import errno
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEATTR_SHARED", REPO.parent / "shared"))
CELEBA = SHARED / "celeba"
UTKFACE = SHARED / "utkface"
TORCH_HOME = SHARED / "weights" / "torch_home"

# The fuzz tests (marker `fuzz`) take their budget from a profile: 'ci' (the default) keeps the whole
# default run within seconds; `HYPOTHESIS_PROFILE=long .venv/bin/pytest -m fuzz` searches much deeper.
_FUZZ_HEALTH = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=30, deadline=None, database=None, print_blob=True,
                          suppress_health_check=_FUZZ_HEALTH)
settings.register_profile("long", max_examples=3000, deadline=None, print_blob=True, suppress_health_check=_FUZZ_HEALTH)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config: pytest.Config) -> None:
    """Keep tests offline and out of the user's cache before anything imports torch."""
    if TORCH_HOME.is_dir():
        os.environ.setdefault("TORCH_HOME", str(TORCH_HOME))
    os.environ.setdefault("FACEATTR_WEIGHTS_DIR", str(SHARED / "weights"))


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point faceattr's decode cache at a per-session temp folder."""
    d = tmp_path_factory.mktemp("faceattr-cache")
    os.environ["FACEATTR_CACHE"] = str(d)
    return d


@pytest.fixture(scope="session")
def celeba_root() -> Path:
    """The real CelebA subset (official layout); tests that need it skip when it is absent."""
    if not (CELEBA / "list_attr_celeba.txt").is_file() or not (CELEBA / "img_align_celeba").is_dir():
        pytest.skip(f"real CelebA subset not found at {CELEBA} (set FACEATTR_SHARED to the folder holding celeba/)")
    return CELEBA


@pytest.fixture(scope="session")
def utkface_root() -> Path:
    """The real UTKFace subset (official UTKFace/ folder); tests that need it skip when it is absent."""
    if not (UTKFACE / "UTKFace").is_dir():
        pytest.skip(f"real UTKFace subset not found at {UTKFACE} (set FACEATTR_SHARED to the folder holding utkface/)")
    return UTKFACE


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    """Offline pretrained weights (shared/weights); tests that need them skip when absent."""
    d = SHARED / "weights"
    if not (d / "torch_home").is_dir():
        pytest.skip(f"offline weights not found at {d}")
    return d


class _FullDiskFile:
    """A writable file object on a 'full disk': writes beyond the byte budget raise ENOSPC, as the kernel would."""

    def __init__(self, f: Any, path: str, state: dict[str, int]) -> None:
        self._f, self._path, self._state = f, path, state

    def write(self, data: Any) -> int:
        """Write what still fits, then raise ENOSPC for the rest."""
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        room = self._state["budget"] - self._state["written"]
        if n > room:
            if room > 0:  # a short write first, as a real full disk gives: part of the data lands
                self._f.write(data[:room])
                self._state["written"] += room
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._path)
        self._state["written"] += n
        return self._f.write(data)

    def __enter__(self) -> _FullDiskFile:
        """Support `with open(...) as f`."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the real file."""
        self._f.close()

    def __getattr__(self, name: str) -> Any:
        """Everything else from the real file object."""
        return getattr(self._f, name)

    def __iter__(self) -> Any:
        """Iterate the real file's lines."""
        return iter(self._f)


@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Factory: fill(folder, budget=0, rename=False) makes the disk under `folder` 'full'.

    Files opened for writing there through open()/io.open (and so pathlib) accept `budget` bytes in
    all, then raise OSError(ENOSPC) after a short write; with `rename`, os.replace into the folder
    fails with ENOSPC too (a full directory block). Reading and writing elsewhere are untouched.
    Mounting a small tmpfs would be closer to the real thing but needs privileges CI does not have.
    """
    real_open, real_replace = builtins.open, os.replace

    def fill(folder: Path, budget: int = 0, rename: bool = False) -> None:
        root = os.path.realpath(folder)
        state = {"budget": budget, "written": 0}

        def inside(path: Any) -> bool:
            return isinstance(path, (str, bytes, os.PathLike)) and not isinstance(path, int) and \
                os.path.realpath(os.fsdecode(path)).startswith(root + os.sep)

        def full_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            f = real_open(file, mode, *args, **kwargs)
            if inside(file) and any(c in mode for c in "wax+"):
                return _FullDiskFile(f, os.fsdecode(file), state)
            return f

        def full_replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if rename and inside(dst):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fsdecode(dst))
            real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", full_open)
        monkeypatch.setattr(io, "open", full_open)
        monkeypatch.setattr(os, "replace", full_replace)

    return fill
