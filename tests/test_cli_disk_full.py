"""`faceattr` on a full disk where no writer of its own says so (predict's crops): one line, exit 2 (issue 17)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from faceattr.cli import main
from faceattr.infer import sample_path


def test_a_full_disk_anywhere_is_one_line_and_exit_2(tmp_path: Path, disk_full: Any,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    crops = tmp_path / "crops"
    crops.mkdir()
    disk_full(crops)
    code = main(["predict", str(sample_path("grace_hopper")), "--save-crops", str(crops)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("faceattr: error:")]
    assert code == 2 and len(lines) == 1, err
    assert "no space left on the disk writing" in lines[0] and str(crops) in lines[0]
    assert "Traceback" not in err
