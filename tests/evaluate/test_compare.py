"""Run comparison on hand-made run folders: best per column, the recommendation, the three outputs."""

from __future__ import annotations

import csv
import io
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from faceattr.cli import main
from faceattr.errors import FaceattrError
from faceattr.evaluate.compare import compare_runs, render_markdown, write_comparison


def make_run(root: Path, name: str, *, f1: float, acc: float = 0.9, eval_ips: float = 100.0, params: int = 1000,
             train_s: float = 10.0, pretrained: bool = False, loss: str = "bce", status: str = "done",
             smiling_f1: float = 0.5, image_size: tuple[int, int] = (128, 128)) -> Path:
    """A run folder with the three files `compare` reads."""
    d = root / name
    d.mkdir(parents=True)
    summary: dict[str, Any] = {"status": status, "params": params, "train_time_s": train_s, "images_per_s": 50.0,
                               "model": "celeb_cnn", "attributes": ["Smiling", "Male"],
                               "error": None if status == "done" else "RuntimeError: boom"}
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "config.toml").write_text(tomli_w.dumps({"loss": loss, "model": {"name": "celeb_cnn", "pretrained": pretrained,
                                                                                "image_size": list(image_size)}}))
    if status == "done":
        per = {"Smiling": {"accuracy": acc, "precision": 0.6, "recall": 0.4, "f1": smiling_f1},
               "Male": {"accuracy": acc, "precision": 0.7, "recall": 0.8, "f1": 0.75}}
        ev = {"split": "valid", "n_images": 780, "attributes": ["Smiling", "Male"], "architecture": "celeb_cnn",
              "mean_accuracy": acc, "mean_precision": 0.65, "mean_recall": 0.6, "mean_f1": f1, "mean_auc": 0.8,
              "mean_balanced_accuracy": 0.7, "exact_match": 0.5, "hamming_loss": 1 - acc, "images_per_s": eval_ips,
              "per_attribute": per}
        (d / "eval.json").write_text(json.dumps(ev))
    return d


def test_best_per_column_and_a_clear_winner(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", f1=0.70, acc=0.91, params=500, train_s=20.0)
    b = make_run(tmp_path, "b", f1=0.80, acc=0.89, params=900, train_s=5.0, pretrained=True, smiling_f1=0.9)
    c = make_run(tmp_path, "c", f1=0.1, status="failed")
    cmp = compare_runs([a, b, c], metric="mean_f1", attributes=["smiling"])
    assert [r["run"] for r in cmp.rows] == ["a", "b"]
    assert cmp.excluded == [("c", "failed: RuntimeError: boom")]
    assert cmp.best["mean_f1"] == ["b"] and cmp.best["mean_accuracy"] == ["a"]
    assert cmp.best["params"] == ["a"] and cmp.best["train_time_s"] == ["b"]  # fewest, fastest
    assert cmp.best["Smiling.f1"] == ["b"]
    assert cmp.choice == "b" and "best mean F1 (0.8000)" in cmp.reason and "next best is a" in cmp.reason
    assert cmp.rows[1]["treatment"] == "pretrained + bce" and cmp.rows[0]["treatment"] == "scratch + bce"

    md = render_markdown(cmp)
    assert "| run | model | treatment | params |" in md
    assert "**0.8000**" in md and "| **b** ✓ |" in md and "**Choose `b`**" in md
    assert "Smiling F1" in md and "- `c`: failed: RuntimeError: boom" in md

    files = write_comparison(cmp, tmp_path / "cmp")
    rows = list(csv.DictReader(io.StringIO(files["csv"].read_text())))
    assert [r["run"] for r in rows] == ["a", "b"]
    assert float(rows[1]["mean_f1"]) == 0.8 and rows[1]["chosen"] == "yes" and rows[0]["chosen"] == ""
    assert "mean_f1" in rows[1]["best_in"].split(";") and "params" in rows[0]["best_in"].split(";")
    page = files["html"].read_text()
    assert page.count('class="best"') == sum(len(v) for v in cmp.best.values())
    assert "Choose <b>b</b>" in page and files["md"].read_text() == md


def test_ties_go_to_the_fastest_run(tmp_path: Path) -> None:
    slow = make_run(tmp_path, "slow", f1=0.802, eval_ips=100.0)
    fast = make_run(tmp_path, "fast", f1=0.799, eval_ips=400.0, params=250)
    far = make_run(tmp_path, "far", f1=0.70, eval_ips=9000.0)
    cmp = compare_runs([slow, fast, far], tie_tolerance=0.005)
    assert cmp.choice == "fast"
    assert "tied with slow" in cmp.reason and "400 images/s" in cmp.reason
    # With no tolerance the best score wins outright.
    assert compare_runs([slow, fast, far], tie_tolerance=0.0).choice == "slow"
    # Lower is better for Hamming loss.
    assert compare_runs([slow, far], metric="hamming_loss").best["hamming_loss"] == ["slow", "far"]


def test_speed_only_breaks_ties_between_different_networks(tmp_path: Path) -> None:
    # A data-size or seed sweep: one network, timings 15% apart by noise alone. The best score wins.
    best = make_run(tmp_path, "n13274", f1=0.802, eval_ips=128.0)
    same = make_run(tmp_path, "n6637", f1=0.799, eval_ips=142.0)
    cmp = compare_runs([best, same], tie_tolerance=0.005)
    assert cmp.choice == "n13274"
    assert "same network at the same input size" in cmp.reason and "n6637 (0.7990)" in cmp.reason
    # The same network at a smaller input is a real speed difference.
    small = make_run(tmp_path, "small", f1=0.799, eval_ips=142.0, image_size=(96, 96))
    assert compare_runs([best, small], tie_tolerance=0.005).choice == "small"
    # Another network that is only a few per cent faster does not win on timing either.
    near = make_run(tmp_path, "near", f1=0.799, eval_ips=135.0, params=900)
    cmp = compare_runs([best, near], tie_tolerance=0.005)
    assert cmp.choice == "n13274" and "none of them is at least 10% faster" in cmp.reason
    # Without the best run's own speed there is nothing to be faster than, whatever the others record.
    unknown = make_run(tmp_path, "unknown", f1=0.802, params=900)
    doc = json.loads((unknown / "eval.json").read_text())
    del doc["images_per_s"]
    (unknown / "eval.json").write_text(json.dumps(doc))
    slow_other = make_run(tmp_path, "slow_other", f1=0.799, eval_ips=1.0, params=250)
    cmp = compare_runs([unknown, slow_other, small], tie_tolerance=0.005)
    assert cmp.choice == "unknown" and "inference speed was not recorded" in cmp.reason
    # A run that leaves the input size out is not thereby a different network.
    bare = make_run(tmp_path, "bare", f1=0.799, eval_ips=142.0)
    cfg = tomllib.loads((bare / "config.toml").read_text())
    del cfg["model"]["image_size"]
    (bare / "config.toml").write_text(tomli_w.dumps(cfg))
    assert compare_runs([best, bare], tie_tolerance=0.005).choice == "n13274"


def test_runs_on_different_data_are_flagged(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", f1=0.7)
    b = make_run(tmp_path, "b", f1=0.8)
    doc = json.loads((b / "eval.json").read_text())
    doc["split"] = "holdout"
    (b / "eval.json").write_text(json.dumps(doc))
    assert "not directly comparable" in " ".join(compare_runs([a, b]).notes)


def test_a_lead_below_sampling_noise_is_called_out(tmp_path: Path) -> None:
    # 780 images: worst-case standard error 0.5 / sqrt(780) = 0.0179.
    a = make_run(tmp_path, "a", f1=0.80)
    b = make_run(tmp_path, "b", f1=0.79)
    c = make_run(tmp_path, "c", f1=0.70)
    notes = " ".join(compare_runs([a, b, c], tie_tolerance=0.0).notes)
    assert "below the sampling noise of a 780-image evaluation (about ±0.018)" in notes
    assert compare_runs([a, c], tie_tolerance=0.0).notes == []


def test_bad_inputs(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", f1=0.7)
    with pytest.raises(FaceattrError, match="did you mean mean_f1"):
        compare_runs([a], metric="mean_f")
    with pytest.raises(FaceattrError, match="did you mean Smiling"):
        compare_runs([a], attributes=["Smilin"])
    (tmp_path / "x").mkdir()
    with pytest.raises(FaceattrError, match="not a run folder"):
        compare_runs([tmp_path / "x"])
    (a / "eval.json").write_text("{torn")
    with pytest.raises(FaceattrError, match="not readable JSON"):
        compare_runs([a])


def test_compare_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run(tmp_path, "a", f1=0.7)
    b = make_run(tmp_path, "b", f1=0.8)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "o"), "--attributes", "Male"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## Run comparison (2 runs, ranked by mean_f1)")
    assert "Male F1" in out and "Choose `b`" in out
    assert {p.name for p in (tmp_path / "o").iterdir()} == {"compare.md", "compare.csv", "compare.html"}
    # A sweep folder stands for the runs inside it; files a shell glob picks up are skipped.
    (tmp_path / "compare.md").write_text("old table")
    assert main(["compare", str(tmp_path), str(tmp_path / "compare.md")]) == 0
    assert "| **b** ✓ |" in capsys.readouterr().out
