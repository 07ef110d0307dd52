"""The distillation teacher cache when its file is torn, edited or foreign: recomputed, never read (issue 17)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from faceattr.train.distill import _read_teacher_cache

LOGITS = np.arange(12, dtype=np.float32).reshape(4, 3)


def _write(path: Path, logits: np.ndarray, key: str = "k") -> Path:
    save_file({"logits": logits}, str(path), metadata={"key": key})
    return path


def test_a_matching_cache_is_read(tmp_path: Path) -> None:
    np.testing.assert_array_equal(_read_teacher_cache(_write(tmp_path / "t.safetensors", LOGITS), "k", (4, 3)), LOGITS)


@pytest.mark.parametrize("damage", ["torn", "garbage", "other-key", "other-shape", "nan"])
def test_a_damaged_or_foreign_cache_is_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                             damage: str) -> None:
    path = _write(tmp_path / "t.safetensors", LOGITS)
    if damage == "torn":
        path.write_bytes(path.read_bytes()[:-10])
    elif damage == "garbage":
        path.write_bytes(b"\x80\x04pickle?")
    elif damage == "other-key":
        _write(path, LOGITS, key="another run")
    elif damage == "other-shape":
        _write(path, LOGITS[:3])
    else:
        _write(path, np.where(LOGITS > 5, np.nan, LOGITS).astype(np.float32))
    with caplog.at_level("WARNING", logger="faceattr.train.distill"):
        assert _read_teacher_cache(path, "k", (4, 3)) is None
    assert damage == "other-key" or "recomputing it" in caplog.text  # another run's cache is simply not ours
