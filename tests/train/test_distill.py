"""Distillation and warm starts on real CelebA images."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from faceattr.checkpoint import load_tensors
from faceattr.config import BalanceConfig, TrainConfig
from faceattr.errors import FaceattrError
from faceattr.train import fit
from faceattr.train.distill import teacher_cache_path
from faceattr.train.loop import prepare_run


@pytest.fixture(scope="module")
def teacher(celeba_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained teacher (celeb_cnn, 5 attributes) shared by the tests below."""
    from faceattr.config import load_config

    out = tmp_path_factory.mktemp("teacher") / "run"
    cfg = load_config(None, {
        "data.root": str(celeba_root), "data.attributes": ["Male", "Smiling", "Eyeglasses", "Blond_Hair", "Young"],
        "data.limit": 256, "data.val_limit": 128, "data.workers": 1, "model.name": "celeb_cnn",
        "model.image_size": [64, 64], "batch_size": 32, "epochs": 2, "threads": 2, "progress": False, "out": str(out),
    })
    return fit(cfg) / "best.safetensors"


def _with(cfg: TrainConfig, **changes: object) -> TrainConfig:
    distill = dataclasses.replace(cfg.distill, **{k[8:]: v for k, v in changes.items() if k.startswith("distill_")})
    model = dataclasses.replace(cfg.model, **{k[6:]: v for k, v in changes.items() if k.startswith("model_")})
    return dataclasses.replace(cfg, distill=distill, model=model)


def test_soft_targets_mix_labels_and_teacher(tiny_cfg: TrainConfig, teacher: Path) -> None:
    cfg = _with(tiny_cfg, distill_teachers=[str(teacher)], distill_weight=0.5)
    run = prepare_run(cfg)
    y, t = np.asarray(run.train_labels, dtype=np.float32), run.train_targets
    assert t is not None and t.shape == y.shape
    # Half label, half a probability strictly inside (0, 1): every target lies in [0, 0.5) or (0.5, 1].
    assert np.all((y == 1) <= (t > 0.5)) and np.all((y == 0) <= (t < 0.5))
    teacher_p = 2 * t - y
    assert 0.0 < teacher_p.min() and teacher_p.max() < 1.0
    # The teacher learned something: it agrees with the labels far above chance on Male.
    assert ((teacher_p[:, 0] >= 0.5) == (y[:, 0] == 1)).mean() > 0.6
    path, _ = teacher_cache_path(cfg, _train_paths(cfg), run.attributes)
    cached = load_file(str(path))["logits"]
    np.testing.assert_allclose(1 / (1 + np.exp(-cached.astype(np.float64))), teacher_p, atol=1e-5)


def _train_paths(cfg: TrainConfig) -> list[str]:
    from faceattr.train.loop import _load_split

    return list(_load_split(cfg, cfg.data.train_split, cfg.data.limit).paths)


def test_excluded_attributes_keep_their_labels(tiny_cfg: TrainConfig, teacher: Path) -> None:
    run = prepare_run(_with(tiny_cfg, distill_teachers=[str(teacher)], distill_exclude=["Male"]))
    y, t = np.asarray(run.train_labels, dtype=np.float32), run.train_targets
    assert t is not None
    np.testing.assert_array_equal(t[:, run.attributes.index("Male")], y[:, run.attributes.index("Male")])
    assert not np.array_equal(t[:, run.attributes.index("Smiling")], y[:, run.attributes.index("Smiling")])


def test_distilled_run_trains_and_reuses_teacher_predictions(tiny_cfg: TrainConfig, teacher: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    cfg = _with(tiny_cfg, distill_teachers=[str(teacher), str(teacher)], distill_weight=0.7, model_init_from=str(teacher))
    cfg = dataclasses.replace(cfg, epochs=1, max_steps=2)
    out = fit(cfg)
    assert (out / "best.safetensors").is_file()
    caplog.set_level("INFO", logger="faceattr")
    fit(dataclasses.replace(cfg, epochs=2, max_steps=4), resume=True)
    assert any("reusing teacher predictions" in r.getMessage() for r in caplog.records)


def test_init_from_copies_the_weights(tiny_cfg: TrainConfig, teacher: Path) -> None:
    run = prepare_run(_with(tiny_cfg, model_init_from=str(teacher)))
    theirs = load_tensors(teacher, "model.")
    for k, v in run.model.state_dict().items():
        assert torch.equal(v, theirs[k].to(v.dtype)), k


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"distill_teachers": ["nowhere/missing.safetensors"]}, "checkpoint not found"),
        ({"distill_weight": 1.5}, r"distill.weight must be within \[0, 1\]"),
        ({"model_init_from": "nowhere/missing.safetensors"}, "checkpoint not found"),
        ({"distill_exclude": ["Bald"]}, "distill.exclude names Bald"),
    ],
)
def test_bad_distill_settings_are_one_clear_error(tiny_cfg: TrainConfig, teacher: Path, changes: dict, match: str) -> None:
    changes = {k: v for k, v in changes.items()}
    if "distill_weight" in changes or "distill_exclude" in changes:
        changes["distill_teachers"] = [str(teacher)]
    with pytest.raises(FaceattrError, match=match):
        prepare_run(_with(tiny_cfg, **changes))


def test_teacher_with_other_attributes_or_architecture_is_refused(tiny_cfg: TrainConfig, teacher: Path) -> None:
    more = dataclasses.replace(tiny_cfg.data, attributes=["Male", "Bald"])
    with pytest.raises(FaceattrError, match="does not predict Bald"):
        prepare_run(_with(dataclasses.replace(tiny_cfg, data=more), distill_teachers=[str(teacher)]))
    other = dataclasses.replace(tiny_cfg.model, name="gender_cnn", init_from=str(teacher))
    with pytest.raises(FaceattrError, match="same model and attributes"):
        prepare_run(dataclasses.replace(tiny_cfg, model=other))


def test_teacher_that_may_have_seen_the_holdout_is_refused(tiny_cfg: TrainConfig, teacher: Path) -> None:
    data = dataclasses.replace(tiny_cfg.data, holdout_fraction=0.1, val_split="holdout")
    with pytest.raises(FaceattrError, match="may have seen this holdout"):
        prepare_run(_with(dataclasses.replace(tiny_cfg, data=data), distill_teachers=[str(teacher)]))
    # Also when a run that validated elsewhere has already cached these teachers' predictions on the
    # same training images: the cache must not skip the check.
    elsewhere = dataclasses.replace(data, val_split="valid")
    first = _with(dataclasses.replace(tiny_cfg, data=elsewhere), distill_teachers=[str(teacher)])
    prepare_run(first)
    assert teacher_cache_path(first, _train_paths(first), list(first.data.attributes))[0].is_file()
    with pytest.raises(FaceattrError, match="may have seen this holdout"):
        prepare_run(_with(dataclasses.replace(tiny_cfg, data=data), distill_teachers=[str(teacher)]))


def test_bce_only_settings_refuse_ce_before_decoding(tiny_cfg: TrainConfig, teacher: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import faceattr.data.cache as cache

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("images were decoded before the settings were checked")

    monkeypatch.setattr(cache, "build_cache", no_decoding)
    one = dataclasses.replace(tiny_cfg, loss="ce", data=dataclasses.replace(tiny_cfg.data, attributes=["Male"]))
    with pytest.raises(FaceattrError, match="distillation trains towards teacher probabilities with BCE"):
        prepare_run(_with(one, distill_teachers=[str(teacher)]))
    with pytest.raises(FaceattrError, match=r"balance reweights one attribute of a multi-label \(BCE\) loss"):
        prepare_run(dataclasses.replace(one, balance=BalanceConfig(attribute="Male", by=["Male"])))
