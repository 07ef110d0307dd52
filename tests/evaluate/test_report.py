"""The HTML report: files, self-containment, rendering in headless Chromium, atomic writes."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faceattr.errors import FaceattrError
from faceattr.evaluate import report as report_mod
from faceattr.evaluate.report import REPORT_FILE, write_report

FIGURES = {"accuracy.png", "confusion.png", "subgroups.png", "training.png", "faces.png"}


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium not installed (apt-get install -y chromium); report rendering not checked")


def _chromium_args(tmp: Path) -> list[str]:
    return [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
            "--hide-scrollbars"]


@pytest.fixture(scope="module")
def report_dir(evaluation: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "rep"
    write_report(evaluation, out, samples=8)
    return out


def test_report_files_and_self_contained_html(report_dir: Path, evaluation: Any) -> None:
    from PIL import Image

    names = {p.name for p in report_dir.iterdir()}
    assert REPORT_FILE in names
    assert FIGURES <= names  # training.png: the run folder has log.jsonl
    for name in FIGURES:
        with Image.open(report_dir / name) as im:
            assert im.format == "PNG" and im.width > 100 and im.height > 100
    page = (report_dir / REPORT_FILE).read_text(encoding="utf-8")
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]+)"', page)
    assert len(srcs) >= 4 + 8  # figures + 8 face thumbnails
    assert all(s.startswith("data:image/png;base64,") for s in srcs)  # nothing loaded from outside
    assert not re.search(r'(href|src)="(https?:|file:|/)', page)
    for s in srcs[:3]:
        Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))).verify()
    # The summary carries the headline numbers.
    r = evaluation.result
    assert f"{100 * r['mean_accuracy']:.1f}%" in page
    assert "Best" in page and "Worst" in page and "Subgroup" in page
    assert all(a in page for a in r["attributes"])
    # No leftovers from the temp-folder dance.
    assert not list(report_dir.parent.glob(".rep.*"))


@pytest.mark.browser
def test_report_renders_in_headless_chromium_with_every_image_loaded(report_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    args = _chromium_args(tmp_path)
    # A copy with a probe script: it writes how many <img> decoded into the DOM, which --dump-dom prints.
    probe = tmp_path / "probe.html"
    page = (report_dir / REPORT_FILE).read_text(encoding="utf-8")
    script = (
        "<script>window.addEventListener('load', () => { const imgs = [...document.images];"
        "const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;"
        "document.body.setAttribute('data-imgcheck', ok + '/' + imgs.length); });</script>"
    )
    probe.write_text(page.replace("</body>", script + "</body>"), encoding="utf-8")
    dom = subprocess.run(args + ["--virtual-time-budget=15000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120, check=False)
    m = re.search(r'data-imgcheck="(\d+)/(\d+)"', dom.stdout)
    assert m, f"probe did not run: {dom.stderr[-2000:]}"
    ok, total = int(m.group(1)), int(m.group(2))
    assert total >= 12 and ok == total, f"{total - ok} of {total} images failed to load"

    shot = tmp_path / "shot.png"
    subprocess.run(args + ["--window-size=1280,2400", f"--screenshot={shot}", (report_dir / REPORT_FILE).as_uri()],
                   capture_output=True, timeout=120, check=True)
    with Image.open(shot) as im:
        px = np.asarray(im.convert("L"), dtype=np.float32)
    assert px.shape == (2400, 1280)
    assert px.std() > 20  # text, cards and charts, not a blank or error page


def test_failure_leaves_no_report_that_looks_complete(evaluation: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "rep"

    def boom(_r: Any) -> bytes:
        raise RuntimeError("figure failed")

    monkeypatch.setattr(report_mod, "_fig_confusion", boom)
    with pytest.raises(RuntimeError, match="figure failed"):
        write_report(evaluation, out, samples=2)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the temp folder is gone too

    # An earlier report stays untouched when a re-run fails.
    monkeypatch.undo()
    write_report(evaluation, out, samples=2)
    before = (out / REPORT_FILE).read_bytes()
    monkeypatch.setattr(report_mod, "_fig_confusion", boom)
    with pytest.raises(RuntimeError):
        write_report(evaluation, out, samples=2)
    assert (out / REPORT_FILE).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]
    # ... and a successful re-run replaces it.
    monkeypatch.undo()
    write_report(evaluation, out, samples=0)
    assert "Faces" not in (out / REPORT_FILE).read_text(encoding="utf-8")


def test_report_refuses_unwritable_or_foreign_folders(evaluation: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(FaceattrError, match="cannot write the report"):
        write_report(evaluation, blocker / "rep")
    with pytest.raises(FaceattrError, match="is a file"):
        write_report(evaluation, blocker)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FaceattrError, match="not a faceattr report"):
        write_report(evaluation, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_report_for_one_attribute_without_subgroups_log_or_calibration(tmp_path: Path) -> None:
    from faceattr.evaluate import Evaluation, metric_block

    rng = np.random.default_rng(0)
    labels = (rng.random((30, 1)) > 0.5).astype(np.float32)
    probs = np.clip(0.6 * labels + 0.5 * rng.random((30, 1)), 0, 1).astype(np.float32)
    result = {**metric_block(labels, probs, ["Smiling"], 0.5), "architecture": "celeb_cnn", "split": "valid",
              "checkpoint": "x.safetensors", "data_root": "d", "attributes": ["Smiling"], "device": "cpu",
              "images_per_s": 10.0, "created": "now", "warnings": ["a <b>loud</b> warning"], "subgroups": {},
              "calibrated": None, "calibration": None}
    ev = Evaluation(result=result, checkpoint=Path("x.safetensors"), run_dir=None, attributes=["Smiling"],
                    filenames=[f"{i:06d}.jpg" for i in range(30)], labels=labels, probs=probs,
                    images=rng.integers(0, 255, (30, 32, 32, 3), dtype=np.uint8))
    html_path = write_report(ev, tmp_path / "rep", samples=4)
    names = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {"report.html", "accuracy.png", "confusion.png", "faces.png"} <= names
    assert not names & {"subgroups.png", "training.png", "calibration.png"}
    page = html_path.read_text(encoding="utf-8")
    assert "a &lt;b&gt;loud&lt;/b&gt; warning" in page  # escaped, shown as a banner
    assert "<h2>Subgroups</h2>" not in page and "<h2>Training</h2>" not in page


def test_celeba_report_shows_the_lipstick_shortcut(report_dir: Path, evaluation: Any) -> None:
    lip = evaluation.result["lipstick_shortcut"]
    page = (report_dir / REPORT_FILE).read_text(encoding="utf-8")
    assert "Shortcut check: women without lipstick called Male" in page
    w = lip["without_lipstick"]
    assert f"{w['called_male']} of {w['n']}" in page


def _utk_evaluation(age: bool) -> Any:
    """A UtkEvaluation built from hand arrays (12 images, 2 missed), as evaluate_utkface returns one."""
    from faceattr.data.utkface import AGE_BANDS, RACES
    from faceattr.evaluate.groups import group_metrics
    from faceattr.evaluate.utk import UtkEvaluation

    rng = np.random.default_rng(0)
    n = 12
    male = (np.arange(n) % 2).astype(np.float32)
    race = np.arange(n) % len(RACES)
    years = np.array([3, 8, 17, 22, 28, 35, 41, 48, 55, 63, 72, 90], dtype=np.float32)
    prob = np.clip(0.7 * male + 0.4 * rng.random(n), 0, 1).astype(np.float32)
    prob[[4, 9]] = np.nan  # no face found
    found = np.isfinite(prob)
    guess = (years + rng.normal(0, 5, n)).astype(np.float32) if age else None
    if guess is not None:
        guess[~found] = np.nan
    groups = group_metrics(male, prob, race, years, threshold=0.5, race_names=RACES, bands=AGE_BANDS,
                           age_pred=guess, detected=found, min_n=2)
    names = [f"{int(a)}_{int(1 - m)}_{r}_2017010100000{i:04d}.jpg.chip.jpg" for i, (a, m, r) in
             enumerate(zip(years, male, race))]
    missed = {names[4]: "no_face", names[9]: "too_small"}
    result = {"dataset": "utkface", "architecture": "celeb_cnn", "split": "test", "seed": 0, "checkpoint": "x.safetensors",
              "data_root": "d", "pipeline": "detect + align", "n_images": n, "n_detected": int(found.sum()),
              "n_missed": 2, "missed": {"no_face": 1, "too_small": 1, "unreadable": 0}, "missed_examples": sorted(missed),
              "predicts_age": age, "male_threshold": 0.5, "races": list(RACES), "groups": groups,
              "warnings": ["a <b>loud</b> warning"], "device": "cpu", "images_per_s": 12.0, "created": "now"}
    return UtkEvaluation(result=result, checkpoint=Path("x.safetensors"), filenames=names, male=male, race=race,
                         age=years, detected=found, male_prob=prob, age_pred=guess, missed=missed)


def test_utkface_report_has_group_and_age_figures(tmp_path: Path) -> None:
    from PIL import Image

    ev = _utk_evaluation(age=True)
    html_path = write_report(ev, tmp_path / "rep")
    names = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {"report.html", "groups.png", "age.png"} <= names and "confusion.png" not in names
    for name in ("groups.png", "age.png"):
        with Image.open(tmp_path / "rep" / name) as im:
            assert im.format == "PNG" and im.width > 400
    page = html_path.read_text(encoding="utf-8")
    assert "No usable face in 2 of 12 images (1 no face, 1 too small)" in page
    assert "a &lt;b&gt;loud&lt;/b&gt; warning" in page
    assert "Headline groups" in page and "adult women" in page and "under 15" in page
    w = ev.result["groups"]["worst_group"]
    assert w is not None and w["group"] in page
    assert "age MAE" in page and ev.filenames[4] in page  # the missed images are listed
    assert "does not predict it" in page  # race only slices


def test_utkface_report_without_age(tmp_path: Path) -> None:
    html_path = write_report(_utk_evaluation(age=False), tmp_path / "rep")
    assert not (tmp_path / "rep" / "age.png").exists()
    page = html_path.read_text(encoding="utf-8")
    assert "age MAE" not in page and "not predicted" in page
