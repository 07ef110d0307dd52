"""The training benchmarks' own logic (issue 16), without their long runs: how time_to_accuracy.py
counts time to a mark, and train_throughput.py --device cuda refusing to run without a GPU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tta() -> ModuleType:
    return _load("time_to_accuracy")


def test_time_to_a_mark_is_training_time_plus_that_one_evaluation(tta: ModuleType) -> None:
    res = {"checkpoints": [
        {"train_s": 60.0, "eval_s": 10.0, "mean_accuracy": 0.885},
        {"train_s": 120.0, "eval_s": 12.0, "mean_accuracy": 0.8951},
        {"train_s": 180.0, "eval_s": 11.0, "mean_accuracy": 0.893},  # a dip after the mark: still reached at 120
        {"train_s": 240.0, "eval_s": 9.0, "mean_accuracy": 0.9012},
    ]}
    assert tta._time_to(res, 0.89) == 132.0
    assert tta._time_to(res, 0.90) == 249.0
    assert tta._time_to(res, 0.95) is None


def test_evaluations_are_kept_off_the_training_clock_and_the_budget_stops(tta: ModuleType,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]  # a fake clock: steps take 10 s, evaluations 25 s
    monkeypatch.setattr(tta, "_now", lambda: now[0])

    def evaluate() -> tuple[float, float]:
        now[0] += 25.0
        return 0.9, 0.97

    clock = tta.Clock()
    tracker = tta.Tracker(clock, evaluate, every_s=30.0, budget_s=100.0)
    steps = 0
    while True:
        now[0] += 10.0
        steps += 1
        if tracker.after_step(8):
            break
    assert steps == 10  # 100 s of training, whatever the evaluations cost
    assert [c["train_s"] for c in tracker.checkpoints] == [30.0, 60.0, 90.0]  # spaced in training time
    assert all(c["eval_s"] == 25.0 for c in tracker.checkpoints)
    assert clock.paused == 75.0 and clock.train_s() == 100.0
    assert [c["images"] for c in tracker.checkpoints] == [24, 48, 72]
    tracker.eval_now(final=True)
    assert tracker.checkpoints[-1]["final"] and tracker.checkpoints[-1]["train_s"] == 100.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_train_throughput_cuda_without_a_gpu_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load("train_throughput")
    assert bench.main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "--device cpu" in err and len(err.strip().splitlines()) == 1
