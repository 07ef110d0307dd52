"""A full disk while `faceattr evaluate` and `faceattr compare` write their outputs (issue 17).

Each writer must give one line that says the disk is full, leave the previous output byte for byte,
and leave no temp file; the CLI exits 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from faceattr.cli import main
from faceattr.errors import FaceattrError
from faceattr.evaluate.compare import Comparison, write_comparison
from faceattr.evaluate.evaluator import write_json
from faceattr.evaluate.report import REPORT_FILE, write_report

CASES = [(0, False), (10, False), (10**9, True)]  # nothing fits; a short write; everything fits but the rename


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(e: pytest.ExceptionInfo[FaceattrError], what: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg and f"cannot write the {what}" in msg and "no space left on the disk" in msg, msg


@pytest.mark.parametrize(("budget", "rename"), CASES)
def test_evaluation_json(tmp_path: Path, disk_full: Any, budget: int, rename: bool) -> None:
    out = tmp_path / "eval.json"
    write_json({"mean_accuracy": 0.9}, out)
    before = _snapshot(tmp_path)
    disk_full(tmp_path, budget=budget, rename=rename)
    with pytest.raises(FaceattrError) as info:
        write_json({"mean_accuracy": 0.95, "attributes": list(range(1000))}, out)
    _one_line(info, "evaluation JSON")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(("budget", "rename"), CASES)
def test_comparison_files_stay_one_consistent_set(tmp_path: Path, disk_full: Any, budget: int, rename: bool) -> None:
    old = Comparison(metric="mean_f1", columns=[], rows=[], best={}, choice="a", reason="first")
    write_comparison(old, tmp_path / "cmp")
    before = _snapshot(tmp_path)
    disk_full(tmp_path, budget=budget, rename=rename)
    with pytest.raises(FaceattrError) as info:
        write_comparison(Comparison(metric="mean_f1", columns=[], rows=[], best={}, choice="b", reason="x" * 5000),
                         tmp_path / "cmp")
    _one_line(info, "comparison")
    assert _snapshot(tmp_path) == before


def test_report_folder(evaluation: Any, tmp_path: Path, disk_full: Any) -> None:
    out = tmp_path / "rep"
    write_report(evaluation, out, samples=0)
    before = _snapshot(tmp_path)
    disk_full(tmp_path, budget=30_000)  # the disk fills up a few figures in (one report renders in seconds)
    with pytest.raises(FaceattrError) as info:
        write_report(evaluation, out, samples=0)
    _one_line(info, "report")
    assert _snapshot(tmp_path) == before and (out / REPORT_FILE).is_file()


def test_evaluate_cli_exits_2_and_keeps_the_previous_json(trained_run: Path, celeba_root: Path, tmp_path: Path,
                                                           disk_full: Any, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "eval.json").write_text(json.dumps({"previous": True}))
    disk_full(out, budget=100)
    code = main(["evaluate", str(trained_run), "--data-root", str(celeba_root), "--limit", "40", "--json",
                 str(out / "eval.json"), "--no-save-thresholds", "--no-progress"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("faceattr: error:")]
    assert code == 2 and len(lines) == 1 and "no space left on the disk" in lines[0], err
    assert sorted(p.name for p in out.iterdir()) == ["eval.json"]
    assert json.loads((out / "eval.json").read_text()) == {"previous": True}
