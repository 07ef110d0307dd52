"""`faceattr evaluate` / `faceattr compare` on the command line: output and every kind of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from faceattr.cli import main


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    """Run the CLI, expect exit code 2 with a one-line error holding every needle, nothing on stdout."""
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert out == ""
    line = [ln for ln in err.splitlines() if ln.startswith("faceattr: error:")]
    assert len(line) == 1, err
    for n in needles:
        assert n in line[0], line[0]
    return line[0]


def test_evaluate_prints_a_summary_and_writes_json_and_report(trained_run: Path, celeba_root: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out_json, rep = tmp_path / "e" / "eval.json", tmp_path / "rep"
    code = main(["evaluate", str(trained_run), "--data-root", str(celeba_root), "--limit", "40", "--json", str(out_json),
                 "--report", str(rep), "--samples", "4", "--no-progress", "--subgroups", "Young"])
    out, _ = capsys.readouterr()
    assert code == 0
    doc = json.loads(out_json.read_text())
    assert doc["n_images"] == 40 and list(doc["subgroups"]) == ["Young"]
    assert f"{doc['mean_accuracy']:.4f}" in out
    assert "subgroup Young" in out and str(rep / "report.html") in out
    assert (rep / "report.html").is_file()


def test_grayscale_and_mixed_calibration_flags_reach_the_result_and_the_summary(
        run_copy: Path, celeba_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["evaluate", str(run_copy), "--data-root", str(celeba_root), "--limit", "60", "--json", "-",
                 "--grayscale", "--calibrate", "mixed", "--balanced-weight", "0.5", "--no-save-thresholds",
                 "--no-progress"])
    out, _ = capsys.readouterr()
    assert code == 0
    doc = json.loads(out)
    assert doc["grayscale"] is True and doc["flip"] is False
    assert doc["calibration"]["objective"] == "mixed" and doc["calibration"]["balanced_weight"] == 0.5
    main(["evaluate", str(run_copy), "--data-root", str(celeba_root), "--limit", "60", "--grayscale", "--no-progress",
          "--calibrate", "mixed", "--no-save-thresholds"])
    out, _ = capsys.readouterr()
    assert "60 black-and-white images" in out and "accuracy + 0.25 x balanced accuracy" in out


def test_unknown_attribute_suggests_the_closest_name(trained_run: Path, celeba_root: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["evaluate", str(trained_run), "--data-root", str(celeba_root), "--attributes", "Smilng"], capsys,
           "unknown attribute 'Smilng'", "did you mean Smiling?")
    # In the data but not predicted by this model: say so rather than "unknown".
    _fails(["evaluate", str(trained_run), "--data-root", str(celeba_root), "--attributes", "Bald"], capsys,
           "does not predict 'Bald'")
    _fails(["evaluate", str(trained_run), "--data-root", str(celeba_root), "--subgroups", "Mael"], capsys,
           "unknown subgroup attribute 'Mael'", "did you mean Male?")


def test_checkpoint_attributes_not_in_the_data(run_copy: Path, celeba_root: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from faceattr.checkpoint import update_metadata

    update_metadata(run_copy / "best.safetensors", {"attributes": ["Smiling", "Eyeglasses", "Blond_Hair", "Mole"]})
    _fails(["evaluate", str(run_copy), "--data-root", str(celeba_root)], capsys, "does not label: Mole")


def test_empty_split_suggests_valid_or_a_holdout(trained_run: Path, celeba_root: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["evaluate", str(trained_run), "--data-root", str(celeba_root), "--split", "test"], capsys,
           "split 'test'", "has no images", "--split valid", "--holdout-fraction")
    _fails(["evaluate", str(trained_run), "--data-root", str(celeba_root), "--calibrate", "accuracy",
            "--calibrate-split", "test"], capsys, "split 'test'", "--calibrate-split valid")


def test_empty_valid_split_suggests_only_a_holdout(trained_run: Path, celeba_root: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # The real images and labels, with every image moved into train: 'valid' is empty.
    root = tmp_path / "all_train"
    root.mkdir()
    (root / "img_align_celeba").symlink_to((celeba_root / "img_align_celeba").resolve())
    for name in ("list_attr_celeba.txt", "identity_CelebA.txt"):
        (root / name).symlink_to((celeba_root / name).resolve())
    rows = (celeba_root / "list_eval_partition.txt").read_text().split()[::2]
    (root / "list_eval_partition.txt").write_text("".join(f"{r} 0\n" for r in rows))
    line = _fails(["evaluate", str(trained_run), "--data-root", str(root), "--split", "valid"], capsys,
                  "split 'valid'", "has no images", "--holdout-fraction 0.1 --split holdout")
    assert "--split valid" not in line  # it must not suggest the split that was just found empty


def test_corrupt_or_missing_checkpoint(trained_run: Path, celeba_root: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a checkpoint" * 50)
    _fails(["evaluate", str(garbage), "--data-root", str(celeba_root)], capsys, "not a readable faceattr checkpoint")
    torn = tmp_path / "torn.safetensors"
    data = (trained_run / "best.safetensors").read_bytes()
    torn.write_bytes(data[: len(data) // 2])
    _fails(["evaluate", str(torn), "--data-root", str(celeba_root)], capsys, "not a readable faceattr checkpoint")
    _fails(["evaluate", str(tmp_path / "nope.safetensors"), "--data-root", str(celeba_root)], capsys,
           "checkpoint not found")
    empty_run = tmp_path / "empty_run"
    empty_run.mkdir()
    _fails(["evaluate", str(empty_run), "--data-root", str(celeba_root)], capsys, "no best.safetensors")


def test_unwritable_report_folder_fails_before_work_and_leaves_nothing(trained_run: Path, celeba_root: Path,
                                                                       tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    json_out = tmp_path / "eval.json"
    _fails(["evaluate", str(trained_run), "--data-root", str(celeba_root), "--report", str(blocker / "rep"),
            "--json", str(json_out)], capsys, "cannot write the report")
    assert not json_out.exists()  # failed before evaluating, so no half-done outputs either
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    _fails(["evaluate", str(trained_run), "--data-root", str(celeba_root), "--report", str(mine)], capsys,
           "not a faceattr report")
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


def test_compare_cli_prints_markdown_and_rejects_bad_metric(trained_run: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run_a"
    shutil.copytree(trained_run, run)
    _fails(["compare", str(run)], capsys, "none of the runs can be compared", "no eval.json")
    _fails(["compare", str(run), "--metric", "mean_f2"], capsys, "unknown metric 'mean_f2'", "did you mean mean_f1?")
    _fails(["compare", str(tmp_path / "missing")], capsys, "run folder not found")


def test_evaluate_on_utkface_reports_every_group(age_checkpoint: Path, utkface_root: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from faceattr.evaluate.schema import EVAL_SCHEMA

    out_json, rep = tmp_path / "utk.json", tmp_path / "rep"
    code = main(["evaluate", str(age_checkpoint), "--data-root", str(utkface_root), "--limit", "40", "--device", "cpu",
                 "--json", str(out_json), "--report", str(rep), "--no-progress"])
    out, _ = capsys.readouterr()
    assert code == 0
    doc = json.loads(out_json.read_text())
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    jsonschema_rs.validator_for(EVAL_SCHEMA).validate(doc)
    assert doc["dataset"] == "utkface" and doc["split"] == "test" and doc["predicts_age"] is True
    n, found = doc["n_images"], doc["n_detected"]
    assert n == 40 and found + doc["n_missed"] == n and sum(doc["missed"].values()) == doc["n_missed"]
    g = doc["groups"]
    assert g["overall"]["n"] == found and g["overall"]["n_images"] == n
    for part in ("gender", "race", "age_band"):
        assert sum(s["n"] for s in g[part].values()) == found, part
        assert sum(s["n_images"] for s in g[part].values()) == n, part
    assert sum(c["n"] for c in g["cells"]) == found and sum(c["n_images"] for c in g["cells"]) == n
    assert list(g["race"]) == doc["races"] and list(g["age_band"]) == doc["age_bands"]
    h = g["headline"]
    assert h["adults"]["n"] + h["under_15"]["n"] == found
    assert h["adult_women"]["n"] + h["adult_men"]["n"] == h["adults"]["n"] == sum(s["n"] for s in h["adult_race"].values())
    assert h["age_70_plus"]["n"] == g["age_band"]["70+"]["n"]
    for s in [g["overall"], *g["gender"].values(), *g["race"].values(), *g["age_band"].values(), *g["cells"]]:
        assert s["n_female"] + s["n_male"] == s["n"] and 0 <= s["n_correct"] <= s["n"]
        assert (s["age_mae"] is None) == (s["n"] == 0)
    w = g["worst_group"]
    assert w is None or (w["n"] >= g["min_n"] == 20 and w["gender_accuracy"] == min(
        s["gender_accuracy"] for s in [*g["gender"].values(), *g["race"].values(), *g["age_band"].values(), *g["cells"]]
        if s["n"] >= 20))
    # The summary says how many were found and missed, the headline groups and the worst group.
    assert f"faces found in {found}, missed {doc['n_missed']}" in out
    assert "adult women" in out and "under 15" in out and "worst group" in out and "age MAE" in out
    assert str(rep / "report.html") in out
    page = (rep / "report.html").read_text()
    assert "Gender accuracy by group" in page and "Gender × race × age band" in page and "Age" in page
    assert (rep / "groups.png").is_file() and (rep / "age.png").is_file()
    assert not (rep / "confusion.png").exists()


def test_evaluate_on_utkface_json_to_stdout_and_celeba_only_flags(age_checkpoint: Path, utkface_root: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["evaluate", str(age_checkpoint), "--data-root", str(utkface_root), "--calibrate", "accuracy", "--flip"],
           capsys, "--calibrate, --flip apply only to CelebA data", "drop them")
    _fails(["evaluate", str(age_checkpoint), "--data-root", str(utkface_root), "--split", "holdout"], capsys,
           "unknown UTKFace split 'holdout'")
    code = main(["evaluate", str(age_checkpoint), "--data-root", str(utkface_root), "--limit", "8", "--split", "valid",
                 "--min-n", "2", "--json", "-", "--no-progress", "--device", "cpu"])
    out, _ = capsys.readouterr()
    assert code == 0
    doc = json.loads(out)  # stdout holds the JSON alone
    assert doc["split"] == "valid" and doc["groups"]["min_n"] == 2 and doc["n_images"] == 8
    assert any("best epoch" in w for w in doc["warnings"])  # valid chose the epoch of a UTKFace-trained model
