"""evaluate_model on real CelebA images: JSON schema, numbers recomputed independently, calibration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from faceattr.errors import FaceattrError
from faceattr.evaluate.schema import EVAL_SCHEMA

MODEL_ATTRS = ["Smiling", "Eyeglasses", "Blond_Hair", "Male"]  # as trained in conftest.trained_run
EVAL_LIMIT = 200  # as evaluated in conftest.evaluation
AGE_MODEL_ATTRS = ["Smiling", "Male", "Wearing_Lipstick"]  # as built in conftest.age_checkpoint

REPO = Path(__file__).resolve().parents[2]


def validate_schema(doc: dict[str, Any]) -> None:
    """Validate against EVAL_SCHEMA with a JSON Schema library when one is installed, plus explicit checks."""
    try:
        import jsonschema_rs

        jsonschema_rs.validator_for(EVAL_SCHEMA).validate(doc)
    except ImportError:
        try:
            import jsonschema

            jsonschema.validate(doc, EVAL_SCHEMA)
        except ImportError:
            pass
    # Explicit checks of the documented core, so the test means something without a validator.
    for key in ("model", "split", "n_images", "attributes", "mean_accuracy", "mean_balanced_accuracy", "mean_f1",
                "exact_match", "hamming_loss", "per_attribute", "subgroups", "calibrated"):
        assert key in doc, key
    assert set(doc["per_attribute"]) == set(doc["attributes"])
    for m in doc["per_attribute"].values():
        for key in ("accuracy", "precision", "recall", "f1", "balanced_accuracy", "auc", "positive_rate", "threshold",
                    "confusion", "error_pos", "error_neg"):
            assert key in m, key
        (tn, fp), (fn, tp) = m["confusion"]
        assert tn + fp + fn + tp == doc["n_images"]
    json.dumps(doc, allow_nan=False)  # no NaN sneaks into the JSON


def test_schema_rejects_a_broken_document(evaluation: Any) -> None:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    v = jsonschema_rs.validator_for(EVAL_SCHEMA)
    doc = json.loads(json.dumps(evaluation.result))
    assert v.is_valid(doc)
    doc["per_attribute"]["Male"]["confusion"] = [[1, 2]]
    assert not v.is_valid(doc)


def test_result_matches_schema_and_independent_recomputation(evaluation: Any, trained_run: Path, celeba_root: Path) -> None:
    from sklearn.metrics import roc_auc_score

    from faceattr.checkpoint import load_checkpoint
    from faceattr.data import load_celeba
    from faceattr.data.cache import build_cache
    from faceattr.data.transforms import Preprocess, normalize_batch
    from faceattr.runtime import predict_logits

    r = evaluation.result
    validate_schema(r)
    assert r["split"] == "valid" and r["n_images"] == EVAL_LIMIT
    assert r["attributes"] == MODEL_ATTRS
    assert r["checkpoint"].endswith("best.safetensors")
    assert r["calibrated"] is None and r["calibration"] is None  # nothing calibrated yet

    # Probabilities recomputed through the public pieces, without the evaluator.
    model, meta = load_checkpoint(trained_run / "best.safetensors")
    pre = Preprocess.from_dict(meta["preprocess"])
    split = load_celeba(celeba_root, split="valid", attributes=MODEL_ATTRS + ["Young"], limit=EVAL_LIMIT, seed=0)
    cache = build_cache(split.paths, pre, progress=False)
    probs = 1 / (1 + np.exp(-predict_logits(model, cache.images, lambda x: normalize_batch(x, pre))))
    labels = split.labels[:, :4] > 0.5
    np.testing.assert_allclose(evaluation.probs, probs, atol=1e-5)
    np.testing.assert_array_equal(evaluation.labels > 0.5, labels)
    assert evaluation.filenames == split.filenames

    pred = probs >= 0.5
    for j, a in enumerate(MODEL_ATTRS):
        m = r["per_attribute"][a]
        y, p = labels[:, j], pred[:, j]
        tp, tn = int((y & p).sum()), int((~y & ~p).sum())
        fp, fn = int((~y & p).sum()), int((y & ~p).sum())
        assert m["confusion"] == [[tn, fp], [fn, tp]]
        assert m["accuracy"] == pytest.approx((tp + tn) / len(y))
        assert m["positive_rate"] == pytest.approx(y.mean())
        assert m["recall"] == pytest.approx(tp / (tp + fn) if tp + fn else 0.0)
        tpr = tp / (tp + fn) if tp + fn else None
        tnr = tn / (tn + fp) if tn + fp else None
        if tpr is not None and tnr is not None:
            assert m["balanced_accuracy"] == pytest.approx((tpr + tnr) / 2)
            assert m["auc"] == pytest.approx(roc_auc_score(y, probs[:, j]))
        assert m["error_neg"] == pytest.approx(fp / (fp + tn))
        assert m["threshold"] == 0.5
    assert r["mean_accuracy"] == pytest.approx((pred == labels).mean())
    assert r["exact_match"] == pytest.approx((pred == labels).all(axis=1).mean())
    assert r["hamming_loss"] == pytest.approx((pred != labels).mean())

    # Subgroups: Young is sliced on although the model does not predict it.
    assert r["subgroup_attributes"] == ["Male", "Young"]
    young = split.labels[:, 4] > 0.5
    sg = r["subgroups"]["Young"]
    assert sg["1"]["n_images"] == int(young.sum()) and sg["0"]["n_images"] == int((~young).sum())
    acc1 = (pred[young] == labels[young]).mean()
    acc0 = (pred[~young] == labels[~young]).mean()
    assert sg["1"]["mean_accuracy"] == pytest.approx(acc1)
    assert sg["gap"]["mean_accuracy"] == pytest.approx(acc1 - acc0)
    # Within Male = 1 every image is male: the Male attribute there has no negatives.
    assert r["subgroups"]["Male"]["1"]["per_attribute"]["Male"]["n_neg"] == 0
    assert r["subgroups"]["Male"]["1"]["per_attribute"]["Male"]["auc"] is None


def test_calibration_is_saved_and_reported_with_a_loud_warning(run_copy: Path, celeba_root: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    from faceattr.checkpoint import read_metadata
    from faceattr.evaluate import EvalConfig, evaluate_model, metric_block

    cfg = EvalConfig(model=str(run_copy), data_root=str(celeba_root), split="valid", limit=120,
                     calibrate="balanced_accuracy", progress=False)
    with caplog.at_level("WARNING"):
        ev = evaluate_model(cfg)
    r = ev.result
    validate_schema(r)
    cal = r["calibration"]
    assert cal["source"] == "this evaluation" and cal["split"] == "valid" and cal["objective"] == "balanced_accuracy"
    assert cal["saved"] is True and cal["same_split_as_evaluation"] is True
    assert "optimistic" in cal["warning"] and cal["warning"] in r["warnings"]
    assert any("optimistic" in rec.getMessage() for rec in caplog.records)
    thresholds = [cal["thresholds"][a] for a in MODEL_ATTRS]
    # Stored in the checkpoint (so predict uses them), in model attribute order.
    meta = read_metadata(run_copy / "best.safetensors")
    assert meta["thresholds"] == pytest.approx(thresholds)
    assert meta["calibration"]["objective"] == "balanced_accuracy"
    assert json.loads((run_copy / "best.json").read_text())["thresholds"] == pytest.approx(thresholds)
    # The calibrated block is the metrics at those thresholds; on its own calibration data the
    # balanced accuracy cannot be worse than at 0.5.
    again = metric_block(ev.labels, ev.probs, MODEL_ATTRS, thresholds)
    assert r["calibrated"]["per_attribute"] == again["per_attribute"]
    assert r["calibrated"]["mean_balanced_accuracy"] >= r["mean_balanced_accuracy"] - 1e-12
    assert r["per_attribute"]["Male"]["threshold"] == 0.5  # headline numbers stay at 0.5
    # valid holds 26 people: enough to cross-check the thresholds on people they were not chosen on.
    assert isinstance(cal["cross_validated_gain"], float) and abs(cal["cross_validated_gain"]) < 0.5
    assert meta["calibration"]["cross_validated_gain"] == cal["cross_validated_gain"]
    assert any("fit these images" in w for w in r["warnings"]) == (cal["cross_validated_gain"] <= 0)

    # A later evaluation reports the stored thresholds beside 0.5, still flagged.
    later = evaluate_model(EvalConfig(model=str(run_copy), data_root=str(celeba_root), split="valid", limit=120,
                                      progress=False)).result
    assert later["calibration"]["source"] == "checkpoint"
    assert later["calibrated"]["per_attribute"]["Male"]["threshold"] == pytest.approx(cal["thresholds"]["Male"])
    assert later["calibration"]["warning"]


def test_calibration_keeps_the_onnx_export_beside_the_checkpoint_current(run_copy: Path, celeba_root: Path) -> None:
    from faceattr.evaluate import EvalConfig, evaluate_model
    from faceattr.infer import export, load

    ckpt = run_copy / "best.safetensors"
    export(ckpt, ckpt.with_suffix(".onnx"), sidecar_json=False)
    assert load(ckpt).backend.name == "onnx"
    r = evaluate_model(EvalConfig(model=str(run_copy), data_root=str(celeba_root), split="valid", limit=120,
                                  calibrate="accuracy", subgroups=[], progress=False)).result
    assert r["calibration"]["saved"] is True
    # predict still runs ONNX Runtime (not torch after a stale-export warning), with the new thresholds.
    model = load(ckpt)
    assert model.backend.name == "onnx"
    assert list(model.thresholds) == pytest.approx([r["calibration"]["thresholds"][a] for a in model.attributes])
    assert load(ckpt, backend="onnx").backend.name == "onnx"  # the strict backend takes it too


def test_mixed_calibration_records_its_weight_and_beats_one_half_on_its_own_objective(run_copy: Path,
                                                                                    celeba_root: Path) -> None:
    from faceattr.evaluate import EvalConfig, evaluate_model

    r = evaluate_model(EvalConfig(model=str(run_copy), data_root=str(celeba_root), split="valid", limit=120,
                                  calibrate="mixed", balanced_weight=0.5, save_thresholds=False, progress=False)).result
    validate_schema(r)
    assert r["calibration"]["objective"] == "mixed" and r["calibration"]["balanced_weight"] == 0.5
    assert r["calibration"]["saved"] is False

    def mixed(block: dict[str, Any]) -> float:
        return block["mean_accuracy"] + 0.5 * block["mean_balanced_accuracy"]

    # Chosen per attribute on these very images, so the objective cannot be worse than at 0.5.
    assert mixed(r["calibrated"]) >= mixed(r) - 1e-12
    with pytest.raises(Exception, match="balanced weight"):
        evaluate_model(EvalConfig(model=str(run_copy), data_root=str(celeba_root), split="valid", limit=120,
                                  calibrate="mixed", balanced_weight=-0.1, progress=False))


def test_calibrating_on_a_holdout_the_model_trained_on_is_flagged(run_copy: Path, celeba_root: Path) -> None:
    from faceattr.evaluate import EvalConfig, evaluate_model

    ev = evaluate_model(EvalConfig(model=str(run_copy), data_root=str(celeba_root), split="valid", limit=60,
                                   holdout_fraction=0.05, calibrate="accuracy", save_thresholds=False,
                                   attributes=["male", "Smiling"], subgroups=[], progress=False))
    r = ev.result
    assert r["attributes"] == ["Smiling", "Male"]  # model order, names matched case-insensitively
    assert r["subgroups"] == {}
    assert r["calibration"]["split"] == "holdout" and r["calibration"]["same_split_as_evaluation"] is False
    assert r["calibration"]["warning"] is None and r["calibration"]["saved"] is False
    # The model was trained without a holdout, so these "holdout" images were training images.
    assert any("trained on" in w for w in r["warnings"])


def test_json_to_stdout_is_the_only_stdout(trained_run: Path, celeba_root: Path) -> None:
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "faceattr.cli", "evaluate", str(trained_run), "--data-root", str(celeba_root),
         "--limit", "50", "--json", "-", "--subgroups", "Male"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # the whole of stdout is one JSON document
    validate_schema(doc)
    assert doc["n_images"] == 50 and list(doc["subgroups"]) == ["Male"]
    assert "INFO" in proc.stderr  # logs went to stderr


def test_holdout_defaults_to_the_training_runs_own(run_copy: Path, celeba_root: Path) -> None:
    from faceattr.checkpoint import read_metadata, update_metadata
    from faceattr.evaluate import EvalConfig, evaluate_model

    ckpt = run_copy / "best.safetensors"
    config = read_metadata(ckpt)["config"]
    config["data"]["holdout_fraction"] = 0.05  # as if trained with --holdout-fraction 0.05
    update_metadata(ckpt, {"config": config})
    r = evaluate_model(EvalConfig(model=str(ckpt), data_root=str(celeba_root), split="valid", limit=60,
                                  calibrate="accuracy", save_thresholds=False, subgroups=[], progress=False)).result
    assert r["holdout_fraction"] == 0.05
    # Calibrated on the run's own holdout: no overlap with training, nothing to warn about. The one
    # warning that may come is the split-half check of the thresholds themselves, which depends on how
    # this short training run's 60 holdout predictions fall (it came in one CI run of several).
    assert r["calibration"]["split"] == "holdout" and r["calibration"]["n_images"] == 60
    assert [w for w in r["warnings"] if not w.startswith("thresholds calibrated on half of the 'holdout' people")] == []



def test_shipped_model_by_name_is_never_rewritten(trained_run: Path, celeba_root: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import faceattr.checkpoint as ckpt
    from faceattr.evaluate import EvalConfig, evaluate_model

    models = tmp_path / "models"
    models.mkdir()
    shipped = models / "default.safetensors"
    shutil.copy(trained_run / "best.safetensors", shipped)
    monkeypatch.setattr(ckpt, "shipped_models_dir", lambda: models)
    before = shipped.read_bytes()
    r = evaluate_model(EvalConfig(model="default", data_root=str(celeba_root), split="valid", limit=40,
                                  calibrate="accuracy", subgroups=[], progress=False)).result
    assert r["model"] == "default" and r["checkpoint"] == str(shipped)
    # Calibrating a shipped model reports the thresholds but never rewrites the installed file.
    assert r["calibration"]["saved"] is False and r["calibrated"] is not None
    assert shipped.read_bytes() == before


def test_shipped_default_model_beats_the_majority_baseline(celeba_root: Path) -> None:
    from faceattr.checkpoint import shipped_models_dir
    from faceattr.evaluate import EvalConfig, evaluate_model

    shipped = shipped_models_dir() / "default.safetensors"
    if not shipped.is_file():
        pytest.skip(f"no shipped default model at {shipped} in this checkout yet")
    r = evaluate_model(EvalConfig(model="default", data_root=str(celeba_root), split="valid", limit=200,
                                  progress=False)).result
    validate_schema(r)
    baseline = np.mean([m["majority_baseline"] for m in r["per_attribute"].values()])
    assert r["mean_accuracy"] > baseline + 0.02
    assert r["mean_auc"] > 0.8


def test_grayscale_evaluates_black_and_white_copies_of_the_same_images(evaluation: Any, trained_run: Path,
                                                                     celeba_root: Path) -> None:
    from faceattr.data.transforms import grayscale_images
    from faceattr.evaluate import EvalConfig, evaluate_model

    gray = evaluate_model(EvalConfig(model=str(trained_run), data_root=str(celeba_root), split="valid",
                                     limit=EVAL_LIMIT, grayscale=True, progress=False))
    validate_schema(gray.result)
    assert gray.result["grayscale"] is True and evaluation.result["grayscale"] is False
    assert gray.filenames == evaluation.filenames  # the same sample, only the colour differs
    assert np.array_equal(gray.images, grayscale_images(evaluation.images))
    assert not np.allclose(gray.probs, evaluation.probs, atol=1e-4)


@pytest.mark.xfail(strict=True, reason=(
    "known regression of the CelebA + UTKFace defaults: refining on colour images undid the CelebA-only "
    "default's black-and-white robustness (first: 0.885 grayscale against 0.915 colour on these 200 images; "
    "the three-member one whose third member saw 10% grayscale: 0.894 against 0.915; the four-member one "
    "whose fourth member saw 20%: 0.896 against 0.916, Pale_Skin 0.77 against a 0.93 baseline; the one with the "
    "face-only gender member, whose other attributes come from the same three: 0.896 against 0.915; with member 1 "
    "counting double in them and the face member at 112x112: 0.895 against 0.916). Refining members 1-2 "
    "with grayscale (configs/utk/*_gray.toml) cost UTKFace accuracy. Strict: this fails once the shipped "
    "model holds up again."))
def test_shipped_default_model_holds_up_on_black_and_white_photos(celeba_root: Path) -> None:
    # Black-and-white photos are common in the wild. A model trained on colour crops only lost 4.0
    # points of mean accuracy on grayscale copies of these 200 images and called nearly everyone
    # Pale_Skin; the shipped model loses under a point.
    from faceattr.checkpoint import shipped_models_dir
    from faceattr.evaluate import EvalConfig, evaluate_model

    if not (shipped_models_dir() / "default.safetensors").is_file():
        pytest.skip("no shipped default model in this checkout yet")
    runs = {gray: evaluate_model(EvalConfig(model="default", data_root=str(celeba_root), split="valid", limit=200,
                                            grayscale=gray, subgroups=[], progress=False)).result
            for gray in (False, True)}
    assert runs[True]["mean_accuracy"] >= runs[False]["mean_accuracy"] - 0.015
    pale = runs[True]["per_attribute"]["Pale_Skin"]
    # 0.41 against a 0.93 baseline for the colour-only model; the shipped one is within a few images.
    assert pale["accuracy"] >= pale["majority_baseline"] - 0.03
    assert runs[True]["per_attribute"]["Male"]["accuracy"] >= 0.95


def test_swap_clothes_changes_only_the_collar_rows_of_the_same_images(evaluation: Any, trained_run: Path,
                                                                      celeba_root: Path) -> None:
    from faceattr.data.augment import COLLAR_ROW
    from faceattr.evaluate import EvalConfig, evaluate_model

    swapped = evaluate_model(EvalConfig(model=str(trained_run), data_root=str(celeba_root), split="valid",
                                        limit=EVAL_LIMIT, swap_clothes=True, progress=False))
    r = swapped.result
    validate_schema(r)
    assert r["swap_clothes"] is True and evaluation.result["swap_clothes"] is False
    assert evaluation.result["n_swapped"] == 0
    assert swapped.filenames == evaluation.filenames  # the same sample; only clothing differs
    assert np.array_equal(swapped.labels, evaluation.labels)  # partners share the band's labels: all stay true
    height = evaluation.images.shape[1]
    start = round(height * COLLAR_ROW / 218)
    changed = (swapped.images != evaluation.images).reshape(len(swapped.images), -1).any(axis=1)
    assert int(changed.sum()) == r["n_swapped"] and 0 < r["n_swapped"] < len(changed)
    assert np.array_equal(swapped.images[:, :start], evaluation.images[:, :start])  # faces untouched
    # Each changed image's collar is another image's, from the other sex.
    male = evaluation.attributes.index("Male")
    for i in np.flatnonzero(changed)[:10]:
        donors = [j for j in range(len(changed))
                  if j != i and np.array_equal(swapped.images[i, start:], evaluation.images[j, start:])]
        assert donors and any(evaluation.labels[j, male] != evaluation.labels[i, male] for j in donors)


def test_swap_clothes_refuses_calibration(trained_run: Path, celeba_root: Path) -> None:
    from faceattr.evaluate import EvalConfig, evaluate_model

    with pytest.raises(FaceattrError, match="swap-clothes"):
        evaluate_model(EvalConfig(model=str(trained_run), data_root=str(celeba_root), split="valid", limit=20,
                                  swap_clothes=True, calibrate="accuracy", progress=False))


@pytest.mark.slow  # two passes of the three-network ensemble over 1,946 images: about 2 min on 2 cores
def test_shipped_default_model_reads_male_less_off_clothing(celeba_root: Path) -> None:
    # CelebA ties Male to clothing. With the neck and collar of a person of the other sex pasted in
    # (1,534 of the 1,946 holdout images), the default shipped before clothing swaps were trained
    # lost 0.0093 of Male accuracy (0.9872 -> 0.9779); the CelebA-only default after swaps lost 0.0036,
    # the first CelebA + UTKFace default 0.0067 (refined without swaps), the three-member one (its third
    # member trained with swaps) 0.0046 (0.9861 -> 0.9815), a candidate of members 1, 2 and 4 0.0082 (so
    # it was withdrawn), and the shipped four-member one 0.0025 (0.9861 -> 0.9836, 2026-12-06, fp32
    # members). The 0.006 bound was set after measuring the first two.
    from faceattr.checkpoint import shipped_models_dir
    from faceattr.evaluate import EvalConfig, evaluate_model

    if not (shipped_models_dir() / "default.safetensors").is_file():
        pytest.skip("no shipped default model in this checkout yet")
    male = {swap: evaluate_model(EvalConfig(model="default", data_root=str(celeba_root), split="holdout",
                                            attributes=["Male"], swap_clothes=swap, subgroups=[],
                                            progress=False)).result
            for swap in (False, True)}
    assert male[True]["n_swapped"] > 1000
    clean, swapped = (male[s]["per_attribute"]["Male"]["accuracy"] for s in (False, True))
    assert clean >= 0.98
    assert swapped >= clean - 0.006


def test_age_model_on_celeba_scores_its_attributes_like_the_same_network_without_age(
        age_checkpoint: Path, celeba_root: Path, tmp_path: Path) -> None:
    from torch import nn

    from faceattr.checkpoint import load_checkpoint, save_checkpoint
    from faceattr.data import load_celeba
    from faceattr.evaluate import EvalConfig, evaluate_model
    from faceattr.models import create_model

    # The twin: the same weights with the head's age row removed, and no "age" in its metadata.
    model, meta = load_checkpoint(age_checkpoint)
    head = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    state = {k: (v[:-1] if k in (f"{head}.weight", f"{head}.bias") else v) for k, v in model.state_dict().items()}
    kwargs = {**meta["model"]["kwargs"], "num_outputs": len(AGE_MODEL_ATTRS)}
    twin = create_model(meta["model"]["name"], **kwargs)
    twin.load_state_dict(state)
    twin_meta = {k: v for k, v in meta.items() if k not in ("format", "format_version", "versions", "created")}
    twin_meta.update(age=None, model={"name": meta["model"]["name"], "kwargs": kwargs})
    twin_path = save_checkpoint(tmp_path / "twin.safetensors", twin, twin_meta)

    def run(path: Path) -> Any:
        return evaluate_model(EvalConfig(model=str(path), data_root=str(celeba_root), split="valid", limit=60,
                                         progress=False))

    with_age, without = run(age_checkpoint), run(twin_path)
    r = with_age.result
    validate_schema(r)
    assert r["predicts_age"] is True and without.result["predicts_age"] is False
    assert r["attributes"] == AGE_MODEL_ATTRS
    np.testing.assert_allclose(with_age.probs, without.probs, atol=1e-6)
    assert r["per_attribute"] == without.result["per_attribute"]
    assert r["subgroups"] == without.result["subgroups"]
    assert r["lipstick_shortcut"] == without.result["lipstick_shortcut"]

    # The shortcut check, recounted from the labels: women (Male = 0) called Male, by lipstick.
    split = load_celeba(celeba_root, split="valid", attributes=["Male", "Wearing_Lipstick"], limit=60, seed=0)
    male, lipstick = split.labels[:, 0] > 0.5, split.labels[:, 1] > 0.5
    called = with_age.probs[:, AGE_MODEL_ATTRS.index("Male")] >= 0.5
    lip = r["lipstick_shortcut"]
    for key, mask in (("without_lipstick", ~male & ~lipstick), ("with_lipstick", ~male & lipstick)):
        assert lip[key]["n"] == int(mask.sum()) and lip[key]["called_male"] == int(called[mask].sum())
    assert lip["threshold"] == 0.5


def test_no_lipstick_check_without_male(evaluation: Any, trained_run: Path, celeba_root: Path) -> None:
    from faceattr.evaluate import EvalConfig, evaluate_model

    assert evaluation.result["lipstick_shortcut"] is not None  # the model predicts Male
    r = evaluate_model(EvalConfig(model=str(trained_run), data_root=str(celeba_root), split="valid", limit=20,
                                  attributes=["Smiling"], subgroups=[], progress=False)).result
    validate_schema(r)
    assert r["lipstick_shortcut"] is None and r["dataset"] == "celeba"


def test_onnx_backend_scores_as_torch_does_and_auto_picks_a_current_export(run_copy: Path, celeba_root: Path) -> None:
    from faceattr.evaluate import EvalConfig, evaluate_model
    from faceattr.infer import export

    ckpt = run_copy / "best.safetensors"
    base: dict[str, Any] = {"model": str(ckpt), "data_root": str(celeba_root), "split": "valid", "limit": EVAL_LIMIT,
                            "subgroups": [], "progress": False}
    with pytest.raises(FaceattrError, match="no ONNX export"):
        evaluate_model(EvalConfig(**base, backend="onnx"))
    from faceattr.cli import main

    assert main(["evaluate", str(ckpt), "--data-root", str(celeba_root), "--limit", "20", "--backend", "onnx"]) == 2
    by_torch = evaluate_model(EvalConfig(**base))  # auto without an export: torch
    assert by_torch.result["backend"] == "torch"
    export(ckpt, ckpt.with_suffix(".onnx"))
    by_onnx = evaluate_model(EvalConfig(**base))  # auto with a current export beside it: ONNX Runtime
    assert by_onnx.result["backend"] == "onnx"
    validate_schema(by_onnx.result)
    assert by_onnx.filenames == by_torch.filenames
    np.testing.assert_allclose(by_onnx.probs, by_torch.probs, atol=1e-4)
    assert evaluate_model(EvalConfig(**base, backend="torch")).result["backend"] == "torch"
