"""Training on CelebA and UTKFace at once: masked labels, an age output, mixed batches, resume."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from faceattr.checkpoint import load_tensors, read_metadata
from faceattr.config import SourceConfig, TrainConfig, load_config
from faceattr.errors import FaceattrError
from faceattr.train import fit


@pytest.fixture()
def multi_cfg(celeba_root: Path, utkface_root: Path, tmp_path: Path) -> TrainConfig:
    """celeb_cnn at 64x64 on 256 CelebA + 256 UTKFace training images: seconds on a 2-core CPU."""
    return load_config(
        None,
        {
            "data.attributes": ["Male", "Smiling", "Eyeglasses", "Young"],
            "data.workers": 1,
            "data.sources": [
                {"root": str(celeba_root), "kind": "celeba", "limit": 256, "val_limit": 128},
                {"root": str(utkface_root), "limit": 256, "val_limit": 128, "balance": ["race"]},  # kind detected
            ],
            "model.name": "celeb_cnn",
            "model.image_size": [64, 64],
            "batch_size": 32,
            "epochs": 2,
            "checkpoint_every": 3,
            "threads": 2,
            "age_weight": 0.5,
            "progress": False,
            "out": str(tmp_path / "run"),
        },
    )


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_short_multi_source_run_lowers_attribute_and_age_loss(multi_cfg: TrainConfig) -> None:
    out = fit(replace(multi_cfg, epochs=3, age_weight=1.0, optim=replace(multi_cfg.optim, lr=3e-3)))
    hist = _history(out)
    first, last = hist[0], hist[-1]
    # Per-source losses are logged for training and validation, and the age error in years.
    for key in ("train_loss_celeba", "train_loss_utkface", "train_age_mae", "val_loss_celeba", "val_loss_utkface", "val_age_mae"):
        assert key in last, key
    # 256 images a source are too few for validation age to move reliably in 48 steps; the training
    # losses of both sources and CelebA's validation loss must fall.
    assert last["train_loss_celeba"] < first["train_loss_celeba"]  # attributes
    assert last["train_loss_utkface"] < first["train_loss_utkface"]  # Male and age
    assert last["train_age_mae"] < first["train_age_mae"]
    assert last["val_loss_celeba"] < first["val_loss_celeba"]
    meta = read_metadata(out / "best.safetensors")
    assert meta["attributes"] == ["Male", "Smiling", "Eyeglasses", "Young"]
    assert meta["age"] == {"mean": 35.0, "std": 20.0}
    assert meta["model"]["kwargs"]["num_outputs"] == 5
    assert [s["kind"] for s in meta["config"]["data"]["sources"]] == ["celeba", "auto"]
    assert "train_loss_utkface" in (out / "log.csv").read_text().splitlines()[0]

    # The checkpoint predicts age through the same API as any model.
    import faceattr
    from faceattr.infer import sample_path

    faces = faceattr.load(out / "best.safetensors").predict(sample_path("grace_hopper"))
    assert isinstance(faces[0].age, float) and 1.0 <= faces[0].age <= 100.0
    assert set(faces[0].probabilities) == set(meta["attributes"])


def test_a_source_gives_no_gradient_to_outputs_it_does_not_label(multi_cfg: TrainConfig) -> None:
    from faceattr.train.loop import _train_loss, prepare_run

    run = prepare_run(replace(multi_cfg, model=replace(multi_cfg.model, dropout=0.0)))
    head = run.model.head[-1]
    src = run.sources.source
    male = run.attributes.index("Male")
    for source, silent, spoken in [(1, [1, 2, 3], [male, 4]),  # UTKFace: Male and age only
                                   (0, [4], [0, 1, 2, 3])]:  # CelebA: attributes, no age
        idx = np.sort(np.flatnonzero(src == source)[:16])
        x = torch.from_numpy(np.asarray(run.train_images[idx])).permute(0, 3, 1, 2)
        from faceattr.data.transforms import normalize_batch

        run.model.zero_grad()
        y = torch.from_numpy(run.train_labels[idx])
        loss = _train_loss(run, run.model(normalize_batch(x, run.preprocess)), y, idx)
        loss.backward()
        g = head.weight.grad
        assert torch.count_nonzero(g[silent]) == 0, (source, silent)
        assert all(torch.count_nonzero(g[j]) > 0 for j in spoken), (source, spoken)


def test_epochs_draw_sources_by_weight_and_balance_groups(multi_cfg: TrainConfig) -> None:
    from faceattr.train.sources import epoch_order, load_sources
    from faceattr.data.transforms import Preprocess

    sources = [replace(multi_cfg.data.sources[0], weight=1.0), replace(multi_cfg.data.sources[1], weight=3.0, balance_power=1.0)]
    cfg = replace(multi_cfg, data=replace(multi_cfg.data, sources=sources))
    data = load_sources(cfg, Preprocess(size=(64, 64)), "train")
    order = epoch_order(data, np.random.default_rng(0))
    assert len(order) == len(data.source) == 512
    assert (data.source[order] == 1).mean() == pytest.approx(0.75, abs=0.01)
    # balance_power 1: every race group is drawn about equally often, whatever its size.
    utk = order[data.source[order] == 1]
    share = np.bincount(data.race[utk], minlength=5) / len(utk)
    assert share.min() > 0.12 and share.max() < 0.28
    natural = np.bincount(data.race[data.source == 1], minlength=5) / 256
    assert natural.max() > 0.35  # White dominates the natural mix


def test_multi_source_resume_after_interrupt_is_exact(multi_cfg: TrainConfig, tmp_path: Path) -> None:
    ref = fit(replace(multi_cfg, out=str(tmp_path / "ref")))
    cfg = replace(multi_cfg, out=str(tmp_path / "cut"))
    import faceattr.train.loop as loop

    real = loop.train_one_epoch

    def interrupted(run, opt, epoch, **kw):  # type: ignore[no-untyped-def]
        if epoch == 1:
            inner = kw["on_step"]

            def boom(ep: int, step: int, gstep: int) -> None:
                inner(ep, step, gstep)
                if step == 5:
                    raise KeyboardInterrupt
            kw["on_step"] = boom
        return real(run, opt, epoch, **kw)

    loop.train_one_epoch = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(cfg)
    finally:
        loop.train_one_epoch = real
    fit(cfg, resume=True)
    a, b = load_tensors(ref / "last.safetensors", "model."), load_tensors(Path(cfg.out) / "last.safetensors", "model.")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    assert _history(ref)[-1]["val_age_mae"] == pytest.approx(_history(Path(cfg.out))[-1]["val_age_mae"], abs=1e-4)


def test_bad_sources_get_one_line_errors(multi_cfg: TrainConfig, tmp_path: Path) -> None:
    from faceattr.train.loop import prepare_run

    def with_sources(*sources: SourceConfig) -> TrainConfig:
        return replace(multi_cfg, data=replace(multi_cfg.data, sources=list(sources)))

    with pytest.raises(FaceattrError, match="neither a CelebA folder"):
        prepare_run(with_sources(SourceConfig(root=str(tmp_path))))
    with pytest.raises(FaceattrError, match="did you mean utkface"):
        prepare_run(with_sources(SourceConfig(root=str(tmp_path), kind="utkfase")))
    with pytest.raises(FaceattrError, match="cannot balance a celeba source"):
        prepare_run(with_sources(replace(multi_cfg.data.sources[0], balance=["race"])))
    with pytest.raises(FaceattrError, match="weight must be > 0"):
        prepare_run(with_sources(replace(multi_cfg.data.sources[1], weight=0.0)))
    lm = tmp_path / "lm.tsv"
    lm.write_text("")
    with pytest.raises(FaceattrError, match="only UTKFace chips are framed by a landmarks file, this source is celeba"):
        prepare_run(with_sources(replace(multi_cfg.data.sources[0], landmarks=str(lm))))
    with pytest.raises(FaceattrError, match="only UTKFace chips are warped from their own pixels, this source is celeba"):
        prepare_run(with_sources(replace(multi_cfg.data.sources[0], native=True)))
    with pytest.raises(FaceattrError, match="no file .*missing.tsv; write it with scripts/utk_landmarks.py"):
        prepare_run(with_sources(replace(multi_cfg.data.sources[1], landmarks=str(tmp_path / "missing.tsv"))))
    with pytest.raises(FaceattrError, match="use loss 'bce'"):
        prepare_run(replace(multi_cfg, loss="ce"))


def test_attribute_weights_make_the_loss_a_weighted_mean_over_attributes(multi_cfg: TrainConfig) -> None:
    from faceattr.data.transforms import normalize_batch
    from faceattr.train.loop import _train_loss, prepare_run

    cfg = replace(multi_cfg, model=replace(multi_cfg.model, dropout=0.0), age_weight=0.0,
                  attribute_weights={"Male": 4.0, "Young": 0.0})
    run = prepare_run(cfg)
    src = run.sources.source
    # Half CelebA rows (all four attributes), half UTKFace rows (Male only).
    idx = np.sort(np.r_[np.flatnonzero(src == 0)[:8], np.flatnonzero(src == 1)[:8]])
    x = torch.from_numpy(np.asarray(run.train_images[idx])).permute(0, 3, 1, 2)
    with torch.no_grad():
        logits = run.model(normalize_batch(x, run.preprocess))
    y = torch.from_numpy(run.train_labels[idx])
    loss = float(_train_loss(run, logits, y, idx))
    # By hand: each attribute's BCE over the rows that label it, then the weighted mean (Male 4, Young 0).
    w = {"Male": 4.0, "Smiling": 1.0, "Eyeglasses": 1.0, "Young": 0.0}
    terms = {}
    for j, name in enumerate(run.attributes):
        known = ~torch.isnan(y[:, j])
        terms[name] = float(torch.nn.functional.binary_cross_entropy_with_logits(logits[known, j], y[known, j]))
    assert int((~torch.isnan(y[:, run.attributes.index("Male")])).sum()) == 16
    assert int((~torch.isnan(y[:, run.attributes.index("Smiling")])).sum()) == 8
    expected = sum(w[a] * terms[a] for a in terms) / sum(w.values())
    assert loss == pytest.approx(expected, rel=1e-5)
    # Young weighs 0: it gets no gradient, though its labels are there.
    run.model.zero_grad()
    _train_loss(run, run.model(normalize_batch(x, run.preprocess)), y, idx).backward()
    g = run.model.head[-1].weight.grad
    assert torch.count_nonzero(g[run.attributes.index("Young")]) == 0
    assert torch.count_nonzero(g[run.attributes.index("Smiling")]) > 0


def test_attribute_weights_from_the_command_line_and_bad_names(multi_cfg: TrainConfig) -> None:
    from faceattr.train.loop import prepare_run

    cfg = load_config(None, {"attribute_weights": "Male:40, Smiling:2"})
    assert cfg.attribute_weights == {"Male": 40.0, "Smiling": 2.0}
    with pytest.raises(FaceattrError, match="NAME:VALUE"):
        load_config(None, {"attribute_weights": "Male=40"})
    with pytest.raises(FaceattrError, match="expected a finite number"):
        load_config(None, {"attribute_weights": {"Male": "lots"}})
    with pytest.raises(FaceattrError, match="'Smilng', which this run does not train.*Smiling"):
        prepare_run(replace(multi_cfg, attribute_weights={"Smilng": 2.0}))
    with pytest.raises(FaceattrError, match="must be >= 0"):
        prepare_run(replace(multi_cfg, attribute_weights={"Male": -1.0}))


def test_distillation_fills_what_a_source_does_not_label(multi_cfg: TrainConfig, tmp_path: Path) -> None:
    """Teachers read each source's rows framed as the student sees them; UTKFace faces learn CelebA's attributes from them."""
    from faceattr.checkpoint import load_checkpoint
    from faceattr.data.transforms import normalize_batch
    from faceattr.runtime import predict_logits
    from faceattr.train.loop import _train_loss, prepare_run

    teacher = fit(replace(multi_cfg, out=str(tmp_path / "teacher"))) / "best.safetensors"
    cfg = replace(multi_cfg, distill=replace(multi_cfg.distill, teachers=[str(teacher)], weight=0.5, exclude=["Male"]),
                  model=replace(multi_cfg.model, dropout=0.0))
    run = prepare_run(cfg)
    y, t = run.train_labels, run.train_targets
    assert t is not None and t.shape == y.shape
    utk, celeba = run.sources.source == 1, run.sources.source == 0
    male = run.attributes.index("Male")
    others = [j for j in range(len(run.attributes)) if j != male]
    # Male is excluded: its labels everywhere, hard 0/1 on both sources.
    np.testing.assert_array_equal(t[:, male], y[:, male])
    # The teacher's own probabilities on the student's framing of every row (its mirror averaged in).
    model, _ = load_checkpoint(teacher)
    logits = predict_logits(model, np.asarray(run.train_images), lambda x: normalize_batch(x, run.preprocess), flip=True)
    p = 1 / (1 + np.exp(-logits[:, others].astype(np.float64)))
    # UTKFace labels none of the other attributes: they become the teacher's probability.
    assert np.isnan(y[np.ix_(utk, others)]).all()
    np.testing.assert_allclose(t[np.ix_(utk, others)], p[utk], atol=1e-4)
    # CelebA's labels are mixed half and half with it.
    np.testing.assert_allclose(t[np.ix_(celeba, others)], 0.5 * y[np.ix_(celeba, others)] + 0.5 * p[celeba], atol=1e-4)

    # So a UTKFace-only batch now trains Smiling, which it gave no gradient before (test above).
    idx = np.sort(np.flatnonzero(utk)[:16])
    x = normalize_batch(torch.from_numpy(np.asarray(run.train_images[idx])).permute(0, 3, 1, 2), run.preprocess)
    run.model.zero_grad()
    _train_loss(run, run.model(x), torch.from_numpy(t[idx]), idx).backward()
    assert torch.count_nonzero(run.model.head[-1].weight.grad[run.attributes.index("Smiling")]) > 0

    # Without fill, what a source does not label stays out of the loss; the CelebA rows still mix.
    kept = prepare_run(replace(cfg, distill=replace(cfg.distill, fill=False))).train_targets
    assert kept is not None and np.isnan(kept[np.ix_(utk, others)]).all()
    np.testing.assert_allclose(kept[np.ix_(celeba, others)], t[np.ix_(celeba, others)], atol=1e-6)

    # And a distilled multi-source run trains end to end.
    out = fit(replace(cfg, epochs=1, max_steps=2, out=str(tmp_path / "student")))
    assert read_metadata(out / "best.safetensors")["config"]["distill"]["teachers"] == [str(teacher)]
