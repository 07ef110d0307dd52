"""`faceattr index` and `faceattr search` end to end through `faceattr.cli.main`, with the fake model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from faceattr.cli import main
from faceattr.search import search

from .fakes import FakeModel, make_dataset, write_image


@pytest.fixture
def cli_env(dataset: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, dict]:
    """`--model NAME` loads a fake model of that name; returns (folder, index path, truth)."""
    from faceattr.search import indexer

    monkeypatch.setattr(indexer, "load_model",
                        lambda source, device="cpu", backend="auto": FakeModel(name=Path(str(source)).stem))
    root, truth = dataset
    return root, tmp_path / "idx.sqlite", truth


def test_index_then_rerun_reports_what_it_did(cli_env: tuple[Path, Path, dict], capsys: pytest.CaptureFixture[str]) -> None:
    root, index, truth = cli_env
    n = len(truth) + 1
    assert main(["-q", "index", str(root), "--out", str(index), "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert f"processed {n} of {n} images" in out and "1 unreadable" in out and "unreadable: broken.jpg" in out
    # Without --model the index's own model is reused.
    assert main(["-q", "index", str(root), "--out", str(index)]) == 0
    assert f"processed 0 of {n} images ({n} unchanged, 0 removed)" in capsys.readouterr().out


def test_search_table_json_and_sheets(cli_env: tuple[Path, Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, index, _ = cli_env
    assert main(["-q", "index", str(root), "--out", str(index)]) == 0
    capsys.readouterr()
    expected = search(index, "Male=0 Smiling=1", top=4)
    assert len(expected.matches) == 4

    assert main(["search", str(index), "--where", "male=0 smiling=1", "--top", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["rank", "score", "face", "image"] and lines[0].split()[-2:] == ["Male", "Smiling"]
    assert "age" not in lines[0].split()  # the fake model predicts no age: no age column
    assert [ln.split()[3] for ln in lines[1:5]] == [m.image for m in expected.matches]
    assert lines[5] == f"{expected.total} of {expected.searched} faces match; showing the top 4"

    assert main(["search", str(index), "--where", "Male=0 Smiling=1", "--top", "4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["root"] == str(root.resolve()) and doc["total"] == expected.total
    assert [m["face_id"] for m in doc["matches"]] == [m.face_id for m in expected.matches]
    assert set(doc["matches"][0]["attributes"]) == set(FakeModel().attributes)

    html = tmp_path / "sheet.html"
    assert main(["search", str(index), "--where", "Male=0 Smiling=1", "--top", "4", "--sheet", str(html)]) == 0
    assert f"wrote {html}" in capsys.readouterr().out
    text = html.read_text()
    assert text.count("<img src=\"data:image/jpeg;base64,") == 4 and expected.matches[0].image in text

    png = tmp_path / "sheet.png"
    assert main(["search", str(index), "--where", "Male=0 Smiling=1", "--top", "4", "--sheet", str(png), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sheet"] == str(png)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 4 * 160 and im.height > 160


def test_search_like_a_photo(cli_env: tuple[Path, Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, index, truth = cli_env
    assert main(["-q", "index", str(root), "--out", str(index)]) == 0
    capsys.readouterr()
    target = sorted(p for p, (_, n) in truth.items() if n == 1)[3]
    probe = write_image(tmp_path / "probe.png", truth[target][0])
    assert main(["search", str(index), "--like", str(probe), "--top", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["like"] is True and doc["matches"][0]["image"] == target


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "{index}", "--where", "Eyeglases=1"], "did you mean Eyeglasses?"),
        (["search", "{index}", "--where", "Male=1", "--sheet", "{tmp}/out.gif"], "--sheet must end in .html or .png"),
        (["search", "{tmp}/none.sqlite", "--where", "Male=1"], "index not found"),
        (["search", "{index}"], "nothing to search for"),
        (["search", "{index}", "--where", "age=30"], "age takes bounds in years"),
        (["search", "{index}", "--where", "Male=1 age<30"], "have no age: its model 'default' does not predict age"),
        (["index", "{root}", "--out", "{index}", "--model", "other"], "--rebuild"),
        (["index", "{tmp}/missing", "--out", "{index}"], "not a folder"),
        (["index", "{root}", "--out", "{index}/under_a_file.sqlite"], "cannot create the index"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    cli_env: tuple[Path, Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    root, index, _ = cli_env
    assert main(["-q", "index", str(root), "--out", str(index)]) == 0
    capsys.readouterr()
    argv = [a.format(index=index, tmp=tmp_path, root=root) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("faceattr: error: ") and message in err and err.count("\n") == 1


def test_ray_engine_without_ray_via_cli(cli_env: tuple[Path, Path, dict], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    root, index, _ = cli_env
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["index", str(root), "--out", str(index), "--engine", "ray"]) == 2
    assert "pip install 'faceattr[ray]'" in capsys.readouterr().err


def test_cli_modules_import_nothing_heavy() -> None:
    code = (
        "import sys, faceattr.search.cli, faceattr.serve.cli;"
        "heavy = [m for m in ('numpy', 'torch', 'sqlite3', 'fastapi', 'PIL') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_search_by_age_shows_an_age_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from faceattr.search import build_index

    ages: dict[str, float] = {}
    make_dataset(tmp_path / "photos", 40, ages=ages)
    index = tmp_path / "aged.sqlite"
    build_index(tmp_path / "photos", index, FakeModel(age=True), progress=False)
    expected = search(index, "age<30 Smiling=1", top=5)
    assert len(expected.matches) == 5

    assert main(["search", str(index), "--where", "age<30 Smiling=1", "--top", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = lines[0].split()
    assert head[-2:] == ["age", "Smiling"] and "age<30" not in head  # the bound is a column of years, not a probability
    rows = [ln.split() for ln in lines[1:6]]
    assert [r[3] for r in rows] == [m.image for m in expected.matches]
    assert [r[-2] for r in rows] == [f"{ages[m.image]:.0f}" for m in expected.matches]
    assert all(float(r[-2]) < 30 for r in rows)
    assert lines[6].startswith(f"{expected.total} of {expected.searched} faces match")

    assert main(["search", str(index), "--where", "age>=60", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["where"] == "age>=60" and doc["total"] == search(index, "age>=60").total > 0
    assert all(m["age"] == ages[m["image"]] and m["age"] >= 60 for m in doc["matches"])

    html = tmp_path / "sheet.html"
    assert main(["search", str(index), "--where", "age<30 Smiling=1", "--top", "5", "--sheet", str(html)]) == 0
    text = html.read_text()
    assert text.count('class="age"') == 5 and f"age ~{ages[expected.matches[0].image]:.0f}" in text


def test_backend_flag_reaches_the_model_loader(dataset: tuple[Path, dict], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from faceattr.search import indexer

    asked: list[str] = []

    def fake_load(source: str, device: str = "cpu", backend: str = "auto") -> FakeModel:
        asked.append(backend)
        return FakeModel(name=Path(str(source)).stem)

    monkeypatch.setattr(indexer, "load_model", fake_load)
    root, _ = dataset
    assert main(["-q", "index", str(root), "--out", str(tmp_path / "a.sqlite")]) == 0
    assert main(["-q", "index", str(root), "--out", str(tmp_path / "b.sqlite"), "--backend", "torch"]) == 0
    assert asked == ["auto", "torch"]
