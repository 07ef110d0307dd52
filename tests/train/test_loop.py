"""Training on real CelebA images: learning, checkpoints, exact resume, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from faceattr.checkpoint import load_checkpoint, load_tensors, read_metadata
from faceattr.config import TrainConfig, load_config
from faceattr.errors import FaceattrError
from faceattr.train import fit, lr_factor


def test_short_run_lowers_validation_loss(tiny_cfg: TrainConfig, celeba_root: Path) -> None:
    cfg = replace(tiny_cfg, data=replace(tiny_cfg.data, limit=512, val_limit=256), epochs=3,
                  optim=replace(tiny_cfg.optim, lr=3e-3))
    out = fit(cfg)
    hist = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    # Chance level is the majority-class rate; a few epochs must beat predicting "absent" for Male.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "done" and summary["params"] > 0
    assert (out / "log.csv").read_text().splitlines()[0].startswith("epoch,")
    model, meta = load_checkpoint(out / "best.safetensors")
    assert meta["attributes"] == ["Male", "Smiling", "Eyeglasses", "Blond_Hair", "Young"]
    assert meta["preprocess"]["size"] == [64, 64]
    assert meta["config"]["model"]["name"] == "celeb_cnn"
    assert json.loads((out / "best.json").read_text())["attributes"] == meta["attributes"]
    assert load_config(out / "config.toml") == cfg  # resolved config round-trips


def test_rebuilt_model_reproduces_validation_metrics(tiny_cfg: TrainConfig) -> None:
    from faceattr.data import load_celeba
    from faceattr.data.cache import build_cache
    from faceattr.data.transforms import Preprocess, normalize_batch
    from faceattr.runtime import predict_logits

    out = fit(replace(tiny_cfg, epochs=1))
    model, meta = load_checkpoint(out / "best.safetensors")
    pre = Preprocess.from_dict(meta["preprocess"])
    split = load_celeba(tiny_cfg.data.root, split="valid", attributes=meta["attributes"], limit=128, seed=0)
    cache = build_cache(split.paths, pre, progress=False)
    logits = predict_logits(model, cache.images, lambda x: normalize_batch(x, pre))
    acc = ((logits > 0) == (split.labels > 0.5)).mean()
    assert acc == pytest.approx(meta["metrics"]["val_mean_accuracy"], abs=1e-6)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_tensors(path, "model.")


def test_resume_after_interrupt_is_exact(tiny_cfg: TrainConfig, tmp_path: Path) -> None:
    ref = fit(replace(tiny_cfg, out=str(tmp_path / "ref")))
    cfg = replace(tiny_cfg, out=str(tmp_path / "cut"))

    # Interrupt mid-epoch 2 by raising from inside the step loop, as a kill would stop it.
    import faceattr.train.loop as loop

    real = loop.train_one_epoch

    def interrupted(run, opt, epoch, **kw):  # type: ignore[no-untyped-def]
        if epoch == 1:
            def boom(ep: int, step: int, gstep: int) -> None:
                kw_on_step(ep, step, gstep)
                if step == 5:
                    raise KeyboardInterrupt
            kw_on_step = kw["on_step"]
            kw["on_step"] = boom
        return real(run, opt, epoch, **kw)

    loop.train_one_epoch = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(cfg)
    finally:
        loop.train_one_epoch = real
    state = read_metadata(Path(cfg.out) / "last.safetensors")["train_state"]
    # 8 steps per epoch, a checkpoint every 3 global steps: the last one before step 5 of epoch 2 is global step 12.
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 4, 12)
    assert json.loads((Path(cfg.out) / "summary.json").read_text())["status"] == "interrupted"
    fit(cfg, resume=True)
    a, b = _weights(ref / "last.safetensors"), _weights(Path(cfg.out) / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    assert (Path(cfg.out) / "log.jsonl").read_text() .count("\n") == 2


def test_resume_after_sigkill(tiny_cfg: TrainConfig, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "faceattr.cli", "train", "--data-root", tiny_cfg.data.root, "--model", "celeb_cnn",
            "--image-size", "64", "64", "--attributes", "Male", "Smiling", "--limit", "512", "--val-limit", "64",
            "--batch-size", "32", "--epochs", "3", "--checkpoint-every", "2", "--threads", "1", "--no-progress",
            "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    deadline = time.time() + 120
    while not (out / "last.safetensors").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert (out / "last.safetensors").exists(), proc.stderr.read().decode() if proc.stderr else ""
    before = read_metadata(out / "last.safetensors")["train_state"]["global_step"]
    from faceattr.cli import main

    assert main(args[3:] + ["--resume"]) == 0
    meta = read_metadata(out / "last.safetensors")
    assert meta["train_state"]["global_step"] == 3 * (512 // 32) > before
    assert not list(out.glob(".*tmp*")) or all(p.stat().st_size >= 0 for p in out.glob(".*tmp*"))


def test_existing_run_is_not_overwritten(tiny_cfg: TrainConfig) -> None:
    out = fit(replace(tiny_cfg, epochs=1, max_steps=2))
    before = (out / "best.safetensors").read_bytes()
    with pytest.raises(FaceattrError, match="already holds a run"):
        fit(replace(tiny_cfg, epochs=1, max_steps=2))
    assert (out / "best.safetensors").read_bytes() == before


def test_resume_refuses_a_different_run(tiny_cfg: TrainConfig) -> None:
    fit(replace(tiny_cfg, epochs=1, max_steps=2))
    with pytest.raises(FaceattrError, match="model"):
        fit(replace(tiny_cfg, model=replace(tiny_cfg.model, name="mobilenet_v2")), resume=True)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_cfg: TrainConfig) -> None:
    cfg = replace(tiny_cfg, epochs=3, optim=replace(tiny_cfg.optim, lr=1e12, scheduler="none", optimizer="sgd"),
                  checkpoint_every=1)
    with pytest.raises(FaceattrError, match="lower the learning rate|non-finite"):
        fit(cfg)
    last = Path(cfg.out) / "last.safetensors"
    if last.exists():  # whatever was saved must be finite
        for v in _weights(last).values():
            assert torch.isfinite(v.float()).all()
    assert json.loads((Path(cfg.out) / "summary.json").read_text())["status"] == "failed"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"data.root": "/nonexistent/celeba"}, "nonexistent"),
        ({"data.attributes": ["Smilling"]}, "did you mean Smiling"),
        ({"data.train_split": "test"}, "test"),
        ({"loss": "ce"}, "exactly one"),
        ({"model.name": "resnet19"}, "did you mean"),
    ],
)
def test_bad_input_is_one_clear_error(tiny_cfg: TrainConfig, overrides: dict, match: str) -> None:
    from faceattr.config import apply_overrides, config_from_dict, config_to_dict

    cfg = config_from_dict(TrainConfig, apply_overrides(config_to_dict(tiny_cfg), overrides))
    with pytest.raises(FaceattrError, match=match) as e:
        fit(cfg)
    assert "\n" not in str(e.value)


def test_corrupt_jpeg_is_skipped_not_fatal(tiny_cfg: TrainConfig, celeba_root: Path, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    # A copy of a few hundred real rows where two images are broken.
    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    lines = (celeba_root / "list_attr_celeba.txt").read_text().splitlines()
    rows = lines[2:202]
    (root / "list_attr_celeba.txt").write_text("\n".join([str(len(rows)), lines[1], *rows]) + "\n")
    names = [r.split()[0] for r in rows]
    (root / "list_eval_partition.txt").write_text("".join(f"{n} 0\n" for n in names))
    for n in names:
        os.symlink(celeba_root / "img_align_celeba" / n, root / "img_align_celeba" / n)
    for n in names[:2]:
        (root / "img_align_celeba" / n).unlink()
        (root / "img_align_celeba" / n).write_bytes((celeba_root / "img_align_celeba" / n).read_bytes()[:300])
    cfg = replace(tiny_cfg, data=replace(tiny_cfg.data, root=str(root), limit=0, val_split="none"), epochs=1)
    with caplog.at_level("WARNING"):
        out = fit(cfg)
    assert (out / "best.safetensors").exists()
    assert any(names[0] in r.getMessage() or "2" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("schedule", ["cyclic", "onecycle", "cosine", "none"])
def test_lr_schedules_stay_in_range_and_shape(schedule: str) -> None:
    f = [lr_factor(schedule, s, 100, warmup_fraction=0.1, steps_per_epoch=20, cyclic_base=0.1) for s in range(100)]
    assert all(0 <= v <= 1 + 1e-9 for v in f)
    if schedule == "none":
        assert set(f) == {1.0}
    elif schedule == "cyclic":
        assert f[0] == pytest.approx(0.1) and max(f) == pytest.approx(1.0) and f[20] == pytest.approx(0.1)
    else:
        assert np.argmax(f) == 9 and f[-1] < 0.01


def test_context_swap_reaches_training_and_hides_the_band_labels(tiny_cfg: TrainConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    import faceattr.data.augment as augment
    import faceattr.train.loop as loop

    swaps: list[tuple[np.ndarray, torch.Tensor]] = []
    hidden: list[torch.Tensor | None] = []
    real_swap, real_loss = augment.swap_context, loop._train_loss

    def spy_swap(images, labels, p, generator, **kw):  # type: ignore[no-untyped-def]
        out, swapped = real_swap(images, labels, p, generator, **kw)
        swaps.append((np.asarray(labels).copy(), swapped))
        return out, swapped

    def spy_loss(run, logits, y, idx, unknown=None):  # type: ignore[no-untyped-def]
        hidden.append(unknown)
        return real_loss(run, logits, y, idx, unknown)

    monkeypatch.setattr(augment, "swap_context", spy_swap)
    monkeypatch.setattr(loop, "_train_loss", spy_loss)
    attrs = ["Male", "Smiling", "Wearing_Necktie", "Wearing_Necklace", "Young"]
    base = replace(tiny_cfg, epochs=1, data=replace(tiny_cfg.data, attributes=attrs))
    fit(replace(base, out=str(Path(tiny_cfg.out) / "off")))
    assert swaps == [] and all(u is None for u in hidden)  # off by default: existing recipes are untouched
    hidden.clear()
    fit(replace(base, augment=replace(base.augment, context_swap=0.5)))
    assert len(swaps) == len(hidden) == 8  # 256 images, batch 32: every step
    assert sum(int(s.sum()) for _, s in swaps) > 0
    for (labels, swapped), unknown in zip(swaps, hidden, strict=True):
        assert labels.shape == (32, 5)
        if not bool(swapped.any()):
            assert unknown is None
            continue
        # Exactly the pasted images lose exactly the band's labels (necktie, necklace) from the loss.
        assert unknown is not None and unknown.shape == (32, 5)
        assert torch.equal(unknown[:, 2], swapped) and torch.equal(unknown[:, 3], swapped)
        assert not bool(unknown[:, [0, 1, 4]].any())
    with pytest.raises(FaceattrError, match="context_swap"):
        fit(replace(base, loss="ce", data=replace(base.data, attributes=["Wearing_Necktie"]),
                    augment=replace(base.augment, context_swap=0.5), out=str(Path(tiny_cfg.out) / "ce")))


def test_attribute_weights_weigh_terms_of_a_single_folder_run_too(tiny_cfg: TrainConfig) -> None:
    import torch

    from faceattr.data.transforms import normalize_batch
    from faceattr.train.loop import _train_loss, prepare_run

    run = prepare_run(replace(tiny_cfg, attribute_weights={"Male": 3.0}, model=replace(tiny_cfg.model, dropout=0.0)))
    idx = np.arange(16)
    x = torch.from_numpy(np.asarray(run.train_images[idx])).permute(0, 3, 1, 2)
    y = torch.from_numpy(np.asarray(run.train_labels[idx], dtype=np.float32))
    with torch.no_grad():
        logits = run.model(normalize_batch(x, run.preprocess))
    per = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(0)
    w = torch.tensor([3.0 if a == "Male" else 1.0 for a in run.attributes])
    assert float(_train_loss(run, logits, y, idx)) == pytest.approx(float((per * w).sum() / w.sum()), rel=1e-5)
    assert float((per * w).sum() / w.sum()) != pytest.approx(float(per.mean()), rel=1e-3)  # the weights changed it
