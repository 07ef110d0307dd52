"""torchrun data parallelism on the CPU (gloo, 2 processes) against one process, on real CelebA images.

The runs use `ddp_test_net` (tests/train/_ddp_net.py): no BatchNorm and no dropout, and augmentation is
off. BatchNorm normalises with each rank's own half batch, dropout and augmentation draw per rank, and
SyncBatchNorm needs CUDA, so with those a 2-rank run is only statistically like one process. Without
them a 2-rank step computes the mean of two half-batch gradients, which equals the whole batch's
gradient up to the order of float additions: we measured weights within 3e-8 of one process after 8
AdamW steps. The tolerance below (1e-5 on weights, 1e-5 relative on losses) leaves room for that
rounding to grow over a few more steps and still catches a real sharding error (a wrong or doubled
slice moves the weights by 1e-3 or more after one step at this learning rate).

Each torchrun launch starts two fresh Python processes (a few seconds of imports each), so the default
run keeps to three launches: about 50 s of CPU time in all (measured; its wall time could only be taken
on a machine busy with a training run). The three slow tests cover the other training features
(sources with masked losses, freeze-then-fine-tune, distillation, balance, cache_frozen, a BatchNorm
model) with one launch each. The subprocess timeout is generous because on a loaded machine two
interpreters importing torch at low priority took minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from faceattr.checkpoint import load_tensors, read_metadata
from faceattr.config import TrainConfig, load_config, save_config
from faceattr.train import fit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _ddp_net  # noqa: E402

# Every rank runs this: it registers the test model, optionally SIGKILLs itself before its n-th
# optimizer step when its RANK is the one named, then runs `faceattr train`.
LAUNCHER = f'''
import os, signal, sys
sys.path.insert(0, {str(HERE)!r})
import _ddp_net
_ddp_net.register()
kill_rank, n, args = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
if n > 0 and int(os.environ.get("RANK", "0")) == kill_rank:
    from torch.optim.optimizer import register_optimizer_step_pre_hook
    count = [0]
    def hit(opt, a, k):
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
    register_optimizer_step_pre_hook(hit)
from faceattr.cli import main
sys.exit(main(["-q", "train", *args]))
'''

WEIGHT_ATOL = 1e-5
LOSS_RTOL = 1e-5


@pytest.fixture(scope="module")
def base_cfg(celeba_root: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainConfig:
    """4 global batches of 32 an epoch, 2 epochs, a checkpoint every 2 steps; no augmentation, one thread."""
    _ddp_net.register()
    tmp = tmp_path_factory.mktemp("ddp")
    return load_config(None, {
        "data.root": str(celeba_root),
        "data.attributes": ["Male", "Smiling", "Eyeglasses", "Blond_Hair", "Young"],
        "data.limit": 128, "data.val_limit": 64, "data.workers": 1,
        "model.name": _ddp_net.NAME, "model.image_size": [32, 32], "model.dropout": 0.0,
        "augment.hflip": False, "augment.crop_scale": 1.0, "augment.rotate": 0.0, "augment.scale": 0.0,
        "augment.color": 0.0,
        "optim.lr": 3e-3, "batch_size": 32, "epochs": 2, "checkpoint_every": 2, "threads": 1, "progress": False,
        "out": str(tmp / "unused"),
    })


@pytest.fixture(scope="module")
def reference(base_cfg: TrainConfig, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One process, batch 32: the run folder after 2 epochs (a copy) and after resuming to 3."""
    tmp = tmp_path_factory.mktemp("ref")
    out = fit(replace(base_cfg, out=str(tmp / "ref")))
    shutil.copytree(out, tmp / "ref2")
    fit(replace(base_cfg, epochs=3, out=str(out)), resume=True)
    return {"two": tmp / "ref2", "three": out}


def _torchrun(tmp: Path, cfg: TrainConfig, *, resume: bool = False, kill_rank: int = -1, n: int = 0,
              nproc: int = 2) -> subprocess.CompletedProcess[str]:
    """`torchrun --nproc_per_node nproc` training `cfg` (its out folder) on the CPU."""
    script = tmp / "launch.py"
    script.write_text(LAUNCHER)
    config = save_config(cfg, tmp / f"cfg-{Path(cfg.out).name}-{int(resume)}.toml")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(script), str(kill_rank), str(n), "--config", str(config), "--out", cfg.out,
           *(["--resume"] if resume else [])]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def _history(out: Path) -> list[dict]:
    return read_metadata(out / "last.safetensors")["train_state"]["history"]


def _assert_close_runs(a: Path, b: Path, resumed_epoch: int = 0) -> float:
    """Same loss curve (train and validation, every epoch, per source too) and weights within the tolerances;
    returns the weight gap.

    The train loss of an epoch resumed mid-way (`resumed_epoch`) is the mean over the steps after the resume only.
    """
    ha, hb = _history(a), _history(b)
    assert [h["step"] for h in ha] == [h["step"] for h in hb]
    for x, y in zip(ha, hb, strict=True):
        keys = [k for k in x if k.startswith(("train_loss", "val_loss", "val_mean_accuracy", "train_age", "val_age"))]
        assert keys and set(keys) <= set(y), (keys, sorted(y))
        for key in keys:
            if key.startswith("train_") and x["epoch"] == resumed_epoch:
                continue
            assert y[key] == pytest.approx(x[key], rel=LOSS_RTOL), (key, x["epoch"])
    wa, wb = load_tensors(a / "last.safetensors", "model."), load_tensors(b / "last.safetensors", "model.")
    assert wa.keys() == wb.keys()
    gap = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert gap <= WEIGHT_ATOL, gap
    return gap


def test_two_ranks_follow_one_process_and_their_checkpoint_resumes_in_one(
        base_cfg: TrainConfig, reference: dict[str, Path], tmp_path: Path) -> None:
    cfg = replace(base_cfg, out=str(tmp_path / "ddp"))
    proc = _torchrun(tmp_path, cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "ddp"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "done" and summary["world_size"] == 2 and summary["steps"] == 8
    # One rank wrote the folder: the same files as one process's, no temp files of a second writer.
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference["two"].iterdir())
    _assert_close_runs(reference["two"], out)
    # The 2-rank checkpoint continues in one process (epoch 3) and lands where one process does.
    fit(replace(base_cfg, epochs=3, out=str(out)), resume=True)
    assert read_metadata(out / "last.safetensors")["train_state"]["global_step"] == 12
    _assert_close_runs(reference["three"], out)


def test_sigkill_of_one_rank_mid_epoch_then_resume_on_two_ranks(
        base_cfg: TrainConfig, reference: dict[str, Path], tmp_path: Path) -> None:
    cfg = replace(base_cfg, out=str(tmp_path / "killed"))
    out = tmp_path / "killed"
    # Rank 1 dies before its 7th step (epoch 2, step 3 of 4): the step-6 checkpoint is in place by then,
    # since rank 1's 7th backward needed rank 0's, which comes after rank 0 wrote it.
    proc = _torchrun(tmp_path, cfg, kill_rank=1, n=7)
    assert proc.returncode != 0, "the rank was not killed"
    assert "SIGKILL" in proc.stderr or "exitcode  : -9" in proc.stderr, proc.stderr[-3000:]
    state = read_metadata(out / "last.safetensors")["train_state"]
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 2, 6)
    assert '"done"' not in (out / "summary.json").read_text() if (out / "summary.json").exists() else True
    proc = _torchrun(tmp_path, cfg, resume=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["status"] == "done"
    _assert_close_runs(reference["two"], out, resumed_epoch=2)


def test_batch_must_divide_over_the_ranks(base_cfg: TrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from faceattr.errors import FaceattrError
    from faceattr.train import distributed

    # 3 ranks of a 32-image batch: refused on every rank before any training (no process group formed here).
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(distributed, "init_from_env", lambda device: (distributed.World(rank=0, world_size=3), device))
    with pytest.raises(FaceattrError, match="must divide evenly over the 3 ranks"):
        fit(replace(base_cfg, out=str(tmp_path / "x")))
    assert not (tmp_path / "x").exists()


def test_shards_of_a_global_batch_make_up_the_batch() -> None:
    from faceattr.train.distributed import World, shard, shard_range

    batch = np.array([9, 2, 7, 4, 5, 1, 8, 3])
    parts = [shard(batch, World(rank=r, world_size=4)) for r in range(4)]
    assert [len(p) for p in parts] == [2, 2, 2, 2]
    assert np.array_equal(np.concatenate(parts), batch)
    assert shard(batch, World()) is batch
    ranges = [shard_range(10, World(rank=r, world_size=3)) for r in range(3)]
    assert ranges == [(0, 4), (4, 8), (8, 10)]


def _no_augmentation(overrides: dict) -> dict:
    return {**overrides, "model.name": _ddp_net.NAME, "model.image_size": [32, 32], "model.dropout": 0.0,
            "augment.hflip": False, "augment.crop_scale": 1.0, "augment.rotate": 0.0, "augment.scale": 0.0,
            "augment.color": 0.0, "optim.lr": 3e-3, "batch_size": 32, "epochs": 2, "checkpoint_every": 2,
            "threads": 1, "progress": False}


@pytest.mark.slow
def test_two_sources_masked_losses_and_freeze_then_finetune_match_one_process(
        celeba_root: Path, utkface_root: Path, tmp_path: Path) -> None:
    """CelebA + UTKFace (masked losses, age output) with a frozen first epoch: the masked loss counts
    labelled rows over the global batch, and DDP is rebuilt when the backbone unfreezes."""
    _ddp_net.register()
    cfg = load_config(None, _no_augmentation({
        "data.attributes": ["Male", "Smiling", "Young"], "data.workers": 1,
        "data.sources": [{"root": str(celeba_root), "kind": "celeba", "limit": 64, "val_limit": 32},
                         {"root": str(utkface_root), "limit": 64, "val_limit": 32, "balance": ["race"]}],
        "model.freeze_epochs": 1, "age_weight": 0.5, "out": str(tmp_path / "one"),
    }))
    one = fit(cfg)
    proc = _torchrun(tmp_path, replace(cfg, out=str(tmp_path / "two")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "val_age_mae" in _history(one)[-1] and "train_loss_utkface" in _history(one)[-1]
    _assert_close_runs(one, tmp_path / "two")


@pytest.mark.slow
def test_distillation_balance_and_cached_frozen_features_match_one_process(
        base_cfg: TrainConfig, reference: dict[str, Path], tmp_path: Path) -> None:
    """Soft targets from a teacher (cached by the first rank), a balanced Male term and cached frozen stages."""
    cfg = load_config(None, _no_augmentation({
        "data.root": base_cfg.data.root, "data.attributes": base_cfg.data.attributes, "data.limit": 128,
        "data.val_limit": 64, "data.workers": 1,
        "distill.teachers": [str(reference["two"] / "best.safetensors")], "distill.flip": False,
        "balance.attribute": "Male", "balance.by": ["Young"],
        "model.cache_frozen": True, "model.finetune_stages": 1, "out": str(tmp_path / "one"),
    }))
    one = fit(cfg)
    proc = _torchrun(tmp_path, replace(cfg, out=str(tmp_path / "two")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_close_runs(one, tmp_path / "two")


@pytest.mark.slow
def test_batchnorm_dropout_and_augmentation_train_on_two_ranks(tiny_cfg: TrainConfig, tmp_path: Path) -> None:
    """celeb_cnn (BatchNorm, dropout) with the default augmentation: per-rank statistics and draws, so no
    equality with one process; the run finishes with finite weights and the ranks' BatchNorm statistics
    averaged into the checkpoint."""
    cfg = replace(tiny_cfg, threads=1, out=str(tmp_path / "bn"))
    proc = _torchrun(tmp_path, cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "bn" / "summary.json").read_text())
    assert summary["status"] == "done" and summary["world_size"] == 2
    weights = load_tensors(tmp_path / "bn" / "last.safetensors", "model.")
    assert all(np.isfinite(t.float().numpy()).all() for t in weights.values())
    assert 0.0 < summary["best_val_loss"] < 1.0


def test_only_rank_zero_checks_the_out_folder_and_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import faceattr.train
    from faceattr.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.toml").write_text("")  # a run's file: rank 0 refuses the folder without --resume/--overwrite
    trained: list[str] = []
    monkeypatch.setattr(faceattr.train, "fit", lambda cfg, resume=False: trained.append(cfg.out) or Path(cfg.out))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["train", "--data-root", str(tmp_path), "--out", str(out)]) == 0  # rank 1 trains, says nothing
    assert trained == [str(out)] and capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    assert main(["train", "--data-root", str(tmp_path), "--out", str(out)]) == 2
    assert trained == [str(out)] and "already holds a run" in capsys.readouterr().err
