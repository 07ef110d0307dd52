"""SIGKILL injected into real training runs: during an optimizer step (mid-epoch) and during a checkpoint
write, at seeded points; `--resume` always finds a valid checkpoint and the
finished run's weights equal an uninterrupted run's, bit for bit (CPU, one thread).

Each run is a subprocess (a kill takes the whole process, with no cleanup) started through a small
failpoint script: it counts optimizer steps (torch's global step pre-hook) or `os.replace` calls onto
`last.safetensors` (the moment a written checkpoint becomes the real one) and SIGKILLs itself at the
n-th. The n-th is drawn from a seeded generator, so a failure names its case.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from faceattr.checkpoint import load_tensors, read_metadata
from faceattr.config import TrainConfig, load_config, save_config

FAILPOINT = '''
import os, signal, sys
point, n, config, extra = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
count = [0]

def hit():
    count[0] += 1
    if count[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)

if point == "optimizer":
    from torch.optim.optimizer import register_optimizer_step_pre_hook
    register_optimizer_step_pre_hook(lambda opt, args, kwargs: hit())
elif point == "checkpoint":
    real = os.replace
    def killing_replace(src, dst, *a, **k):
        if str(dst).endswith("last.safetensors"):
            hit()  # the new checkpoint is written in full under its temp name, not yet renamed
        return real(src, dst, *a, **k)
    os.replace = killing_replace

from faceattr.cli import main
sys.exit(main(["-q", "train", "--config", config, *extra]))
'''


def _run(tmp_path: Path, cfg: TrainConfig, name: str, point: str = "none", n: int = 0, resume: bool = False) -> int:
    """Train (or resume) `cfg` into tmp_path/name in a fresh process; returns its exit code (-9: killed)."""
    script = tmp_path / "failpoint.py"
    script.write_text(FAILPOINT)
    config = save_config(replace(cfg, out=str(tmp_path / name)), tmp_path / f"{name}-{point}-{n}.toml")
    extra = ["--resume"] if resume else []
    proc = subprocess.run([sys.executable, str(script), point, str(n), str(config), *extra],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, -9), proc.stderr[-2000:]
    return proc.returncode


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_tensors(a, "model."), load_tensors(b, "model.")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert np.array_equal(wa[k].numpy(), wb[k].numpy()), k  # bitwise: CPU, one thread, same seed


def _kill_and_resume(tmp_path: Path, cfg: TrainConfig, ref: Path, point: str, n: int) -> None:
    name = f"{point}{n}"
    assert _run(tmp_path, cfg, name, point, n) == -9, f"{point} {n}: the run was not killed"
    out = tmp_path / name
    assert not (out / "summary.json").exists() or "done" not in (out / "summary.json").read_text()
    assert read_metadata(out / "last.safetensors")["train_state"]["global_step"] >= 1  # a valid checkpoint
    assert _run(tmp_path, cfg, name, resume=True) == 0
    assert '"status": "done"' in (out / "summary.json").read_text()
    _assert_same_weights(ref / "last.safetensors", out / "last.safetensors")
    _assert_same_weights(ref / "best.safetensors", out / "best.safetensors")


@pytest.fixture()
def one_thread_cfg(tiny_cfg: TrainConfig) -> TrainConfig:
    """The tiny run on one thread: 8 steps an epoch, 2 epochs, a checkpoint every 3 steps."""
    return replace(tiny_cfg, threads=1)


def test_sigkill_anywhere_then_resume_equals_an_uninterrupted_run(one_thread_cfg: TrainConfig, tmp_path: Path) -> None:
    assert _run(tmp_path, one_thread_cfg, "ref") == 0
    ref = tmp_path / "ref"
    rng = np.random.default_rng(17)
    # After the first checkpoint (step 3) so there is one to resume from: a step mid-epoch 1 or 2.
    _kill_and_resume(tmp_path, one_thread_cfg, ref, "optimizer", int(rng.integers(5, 16)))
    # While a later checkpoint is being put in place (the 2nd to 4th of 5).
    _kill_and_resume(tmp_path, one_thread_cfg, ref, "checkpoint", int(rng.integers(2, 5)))
    # A second draw: another step of another epoch.
    _kill_and_resume(tmp_path, one_thread_cfg, ref, "optimizer", int(rng.integers(5, 16)))


def test_sigkill_in_a_multi_source_step_then_resume_is_exact(celeba_root: Path, utkface_root: Path,
                                                             tmp_path: Path) -> None:
    cfg = load_config(None, {
        "data.attributes": ["Male", "Smiling", "Young"],
        "data.workers": 1,
        "data.sources": [
            {"root": str(celeba_root), "kind": "celeba", "limit": 128, "val_limit": 64},
            {"root": str(utkface_root), "limit": 128, "val_limit": 64, "balance": ["race"]},
        ],
        "model.name": "celeb_cnn", "model.image_size": [64, 64], "batch_size": 32, "epochs": 2,
        "checkpoint_every": 3, "threads": 1, "age_weight": 0.5, "progress": False, "out": str(tmp_path / "x"),
    })
    assert _run(tmp_path, cfg, "ref") == 0
    _kill_and_resume(tmp_path, cfg, tmp_path / "ref", "optimizer", int(np.random.default_rng(3).integers(5, 16)))
