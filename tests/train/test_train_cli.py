"""`faceattr train`'s run folder: a non-empty --out needs --resume or --overwrite.

Every run here fails in fit() on a missing data root, after fit() has written its folder, exactly as a
real failed run does; nothing trains.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from faceattr.cli import main

MISSING = "/nonexistent/celeba"


def _train(out: Path, *extra: str, root: str = MISSING) -> list[str]:
    return ["train", "--data-root", root, "--model", "celeb_cnn", "--no-progress", "--out", str(out), *extra]


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("faceattr: error: ") and err.count("\n") == 1, err
    return err


def test_a_failed_run_folder_is_refused_then_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(_train(out)) == 2
    assert "CelebA root not found" in _error(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["config.toml", "summary.json"]
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"
    config = (out / "config.toml").read_text()

    # The next run is told what is there and what to do, and changes nothing.
    assert main(_train(out, root=MISSING + "2")) == 2
    err = _error(capsys)
    assert f"{out} already holds a run (status failed, before its first checkpoint; config.toml, summary.json)" in err
    assert "pass --overwrite to delete it and start over, or choose another --out" in err
    assert "--resume" not in err  # nothing to resume without a checkpoint
    assert (out / "config.toml").read_text() == config

    # --overwrite deletes the old run first: no file of it is left for the new one to mix with.
    (out / "log.jsonl").write_text('{"epoch": 1}\n')
    assert main(_train(out, "--overwrite", root=MISSING + "2")) == 2
    assert f"CelebA root not found: {MISSING}2" in _error(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["config.toml", "summary.json"]
    assert f'root = "{MISSING}2"' in (out / "config.toml").read_text()


def test_a_run_with_a_checkpoint_offers_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.safetensors").write_bytes(b"")  # only its presence is looked at before fit()
    (out / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    assert main(_train(out)) == 2
    err = _error(capsys)
    assert "already holds a run (status interrupted; summary.json, last.safetensors)" in err
    assert "pass --resume to continue it, --overwrite to delete it and start over, or choose another --out" in err
    assert main(_train(out, "--resume", "--overwrite")) == 2
    assert "pass one of them" in _error(capsys)
    assert (out / "last.safetensors").exists()


def test_out_that_holds_no_run_is_never_deleted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        assert main(_train(out, *extra)) == 2
        assert "is not empty and holds no training run; choose a new or empty folder for --out" in _error(capsys)
    assert [p.name for p in out.iterdir()] == ["todo.txt"]
    assert main(_train(out / "todo.txt")) == 2
    assert "is a file; pass a folder for the run" in _error(capsys)


def test_an_empty_or_new_out_starts_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (empty, tmp_path / "new" / "run"):
        assert main(_train(out)) == 2
        assert "CelebA root not found" in _error(capsys)  # fit() ran: the folder was no obstacle
        assert (out / "summary.json").is_file()
