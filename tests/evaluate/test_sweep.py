"""`faceattr sweep` (faceattr.train.sweep): grid parsing, and a tiny real sweep with a failing run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from faceattr.config import config_to_dict, load_config
from faceattr.errors import FaceattrError
from faceattr.train.sweep import load_sweep, register, run_sweep

REPO = Path(__file__).resolve().parents[2]

TINY = """
[sweep]
name = "tiny"
metric = "mean_f1"
attributes = ["Smiling"]

[sweep.eval]
split = "valid"
limit = 48
subgroups = ["Male"]

[base]
epochs = 1
max_steps = 2
batch_size = 16
checkpoint_every = 0
progress = false

[base.data]
root = "{root}"
attributes = ["Smiling"]
limit = 64
val_split = "none"
workers = 1

[base.model]
image_size = [32, 32]

[axes.model]
celeb_cnn = {{ model.name = "celeb_cnn" }}
mobilenet_v2 = {{ model.name = "mobilenet_v2" }}

[axes.treatment]
pretrained_bce = {{ model.pretrained = true, loss = "bce" }}
scratch_ce = {{ model.pretrained = false, loss = "ce" }}
"""


def _grid(tmp_path: Path, text: str, name: str = "grid.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_shipped_example_grids_parse() -> None:
    arch = load_sweep(REPO / "configs/sweeps/arch_x_treatment.toml", out="o")
    names = [r.name for r in arch.runs]
    assert "celeb_cnn-pretrained_bce" not in names  # excluded: no pretrained weights
    assert "mobilenet_v2-scratch_ce" in names and len(names) == 8
    ce = next(r for r in arch.runs if r.name == "celeb_cnn-scratch_ce").config
    assert (ce.model.name, ce.model.pretrained, ce.loss, ce.model.image_size, ce.optim.lr) == (
        "celeb_cnn", False, "ce", [128, 128], 0.003)
    assert ce.out == str(Path("o") / "celeb_cnn-scratch_ce")
    lr = load_sweep(REPO / "configs/sweeps/lr_grid.toml")
    assert [r.config.optim.lr for r in lr.runs] == [0.01, 0.005, 0.001]
    assert all(r.config.data.attributes == [] and r.config.model.pretrained for r in lr.runs)
    assert lr.out == Path("runs/sweep-lr")
    # The learning curve is member 2's recipe (the model card's claim) with only the sample size changed.
    curve = load_sweep(REPO / "configs/sweeps/learning_curve.toml")
    assert [r.config.data.limit for r in curve.runs] == [1659, 3318, 6637, 0]
    def recipe(cfg: object) -> dict[str, object]:
        d = config_to_dict(cfg)
        d.pop("out")
        d["data"].pop("limit")
        return d

    member2 = recipe(load_config(REPO / "configs/candidates/mobilenet_v2_cached.toml"))
    assert all(recipe(r.config) == member2 for r in curve.runs)


def test_grid_product_overrides_and_bad_grids(tmp_path: Path) -> None:
    s = load_sweep(_grid(tmp_path, TINY.format(root="R")), out=tmp_path / "o", overrides={"max_steps": "5"},
                   eval_overrides={"limit": 10, "split": None})
    assert [r.name for r in s.runs] == ["celeb_cnn-pretrained_bce", "celeb_cnn-scratch_ce",
                                        "mobilenet_v2-pretrained_bce", "mobilenet_v2-scratch_ce"]
    assert all(r.config.max_steps == 5 and r.config.data.root == "R" for r in s.runs)
    assert s.eval == {"split": "valid", "limit": 10, "subgroups": ["Male"]}

    with pytest.raises(FaceattrError, match=r"unknown key 'metrc' \(did you mean metric\?\)"):
        load_sweep(_grid(tmp_path, TINY.format(root="R").replace('metric = "mean_f1"', 'metrc = "mean_f1"')))
    cases = [
        ('celeb_cnn = {{ model.name = "celeb_cnn" }}', 'celeb_cnn = {{ model.nme = "celeb_cnn" }}',
         "run 'celeb_cnn-pretrained_bce'.*unknown key 'model\\.?nme'"),
        ('[sweep.eval]', '[sweep.eval]\nspilt = "valid"', "unknown key 'sweep.eval.spilt'"),
        ('metric = "mean_f1"', 'metric = "f1"', "unknown 'f1'"),
        ('name = "tiny"', 'name = "tiny"\nexclude = [{{ model = "resnet" }}]', "no option 'resnet'"),
        ('celeb_cnn = {{', 'celeb-cnn = {{', "option name 'celeb-cnn'"),
        ('[axes.treatment]', '[axes.treatment]\nbroken = 3', "expected a table"),
    ]
    for old, new, msg in cases:
        text = TINY.replace(old, new).format(root="R")
        with pytest.raises(FaceattrError, match=msg):
            load_sweep(_grid(tmp_path, text))
    excl = TINY.replace('name = "tiny"', 'name = "tiny"\nexclude = [{{ treatment = ["pretrained_bce", "scratch_ce"] }}]')
    with pytest.raises(FaceattrError, match="every combination is excluded"):
        load_sweep(_grid(tmp_path, excl.format(root="R")))
    with pytest.raises(FaceattrError, match="not valid TOML"):
        load_sweep(_grid(tmp_path, "[sweep\n"))
    with pytest.raises(FaceattrError, match="sweep file not found"):
        load_sweep(tmp_path / "missing.toml")


def _validate(doc: dict) -> None:
    try:
        import jsonschema_rs
    except ImportError:
        assert {"per_attribute", "mean_f1", "n_images", "subgroups"} <= set(doc)
        return
    from faceattr.evaluate.schema import EVAL_SCHEMA

    jsonschema_rs.validator_for(EVAL_SCHEMA).validate(doc)


def test_tiny_sweep_records_failures_compares_and_skips_finished_runs(
    celeba_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = _grid(tmp_path, TINY.format(root=celeba_root.as_posix()))
    out = tmp_path / "sweep"
    result = run_sweep(load_sweep(grid, out=out), progress=False)
    status = {o.name: o.status for o in result.outcomes}
    assert status == {"celeb_cnn-pretrained_bce": "failed", "celeb_cnn-scratch_ce": "trained",
                      "mobilenet_v2-pretrained_bce": "trained", "mobilenet_v2-scratch_ce": "trained"}

    # The failure is recorded in the run's summary.json; the sweep went on.
    failed = json.loads((out / "celeb_cnn-pretrained_bce" / "summary.json").read_text())
    assert failed["status"] == "failed" and "pretrained" in failed["error"]
    assert not (out / "celeb_cnn-pretrained_bce" / "eval.json").exists()
    for name in ("celeb_cnn-scratch_ce", "mobilenet_v2-pretrained_bce", "mobilenet_v2-scratch_ce"):
        doc = json.loads((out / name / "eval.json").read_text())
        _validate(doc)
        assert doc["n_images"] == 48 and doc["attributes"] == ["Smiling"] and list(doc["subgroups"]) == ["Male"]
        assert doc["output"] == ("softmax" if name.endswith("_ce") else "sigmoid")
    assert (out / "sweep.toml").read_text() == grid.read_text()

    # The comparison: three compared runs, the failed one listed apart, one run chosen.
    cmp = result.comparison
    assert sorted(r["run"] for r in cmp.rows) == ["celeb_cnn-scratch_ce", "mobilenet_v2-pretrained_bce",
                                                  "mobilenet_v2-scratch_ce"]
    assert [n for n, _ in cmp.excluded] == ["celeb_cnn-pretrained_bce"]
    md = (out / "compare.md").read_text()
    assert "Smiling F1" in md and f"**Choose `{cmp.choice}`**" in md and "pretrained + bce" in md
    assert (out / "compare.csv").read_text().count("\n") == 4 and (out / "compare.html").is_file()

    # Re-run through the command line: finished runs are skipped, the failed one is left alone,
    # and a run that lost its eval.json is evaluated again without retraining.
    kept = out / "mobilenet_v2-pretrained_bce" / "eval.json"
    stamp = kept.stat().st_mtime_ns
    (out / "celeb_cnn-scratch_ce" / "eval.json").unlink()
    weights = (out / "celeb_cnn-scratch_ce" / "best.safetensors").read_bytes()
    capsys.readouterr()
    assert _cli(["sweep", str(grid), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert kept.stat().st_mtime_ns == stamp
    assert (out / "celeb_cnn-scratch_ce" / "eval.json").is_file()
    assert (out / "celeb_cnn-scratch_ce" / "best.safetensors").read_bytes() == weights
    lines = {ln.split()[0]: ln.split()[1] for ln in printed.splitlines() if ln.startswith("  ")}
    assert lines == {"celeb_cnn-pretrained_bce": "skipped-failed", "celeb_cnn-scratch_ce": "evaluated",
                     "mobilenet_v2-pretrained_bce": "skipped", "mobilenet_v2-scratch_ce": "skipped"}
    assert "| run | model | treatment |" in printed
