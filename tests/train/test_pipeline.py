"""The per-step batch pipeline (faceattr.train.pipeline): uint8 rows to the device, augmented there.

Every test here runs on the CPU. The device path (uint8 rows moved first, then swapped, augmented
and normalised where they landed, draws from CPU generators) must equal the pipeline training used
before it existed bit for bit on the CPU, and within a float tolerance on a GPU (marked `gpu`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceattr.config import AugmentConfig, TrainConfig
from faceattr.data.augment import augment_batch, swap_context
from faceattr.data.transforms import Preprocess, normalize_batch, prepare_image
from faceattr.train.pipeline import augment_on_device, gather_rows, prefetch_rows

PRE = Preprocess(size=(80, 64))
# Every augmentation on, including the ones that draw extra numbers (erase, gray, lowres) and context_swap.
EVERYTHING = AugmentConfig(hflip=True, crop_scale=0.9, rotate=10.0, scale=0.1, color=0.2, erase=0.5, gray=0.3,
                           lowres=0.4, context_swap=0.7)


@pytest.fixture(scope="module")
def cache(celeba_root: Path) -> np.ndarray:
    """24 real faces as a uint8 [N, H, W, 3] cache array, with labels whose column 0 alternates (Male)."""
    paths = sorted((celeba_root / "img_align_celeba").iterdir())[:24]
    return np.stack([prepare_image(Image.open(p), PRE) for p in paths])


LABELS = np.stack([np.arange(24) % 2, np.arange(24) % 3 == 0], axis=1).astype(np.float32)


def _before(images: np.ndarray, idx: np.ndarray, cfg: AugmentConfig, step_seed: int, swap_seed: int) -> tuple:
    """The CPU pipeline as train_one_epoch wrote it before the device path (kept here as the reference)."""
    gen = torch.Generator().manual_seed(step_seed)
    x = torch.from_numpy(np.array(images[idx])).permute(0, 3, 1, 2)
    swapped = None
    if cfg.context_swap > 0.0:
        x, swapped = swap_context(x, LABELS[idx], cfg.context_swap, torch.Generator().manual_seed(swap_seed), male=0)
    return normalize_batch(augment_batch(x, cfg, gen), PRE), swapped, gen


def _device_path(images: np.ndarray, idx: np.ndarray, cfg: AugmentConfig, step_seed: int, swap_seed: int,
                 device: torch.device) -> tuple:
    gen = torch.Generator().manual_seed(step_seed)
    swap = torch.Generator().manual_seed(swap_seed) if cfg.context_swap > 0.0 else None
    rows = gather_rows(images, idx, pin=device.type == "cuda")
    x, swapped = augment_on_device(rows, device, cfg, PRE, gen, labels=LABELS[idx], swap_generator=swap, male=0)
    return x, swapped, gen


def test_gather_rows_is_fancy_indexing_for_arrays_memmaps_and_indexables(cache: np.ndarray, tmp_path: Path) -> None:
    idx = np.array([1, 4, 5, 17])
    assert torch.equal(gather_rows(cache, idx), torch.from_numpy(cache[idx]))
    mm = np.memmap(tmp_path / "c.u8", dtype=np.uint8, mode="w+", shape=cache.shape)
    mm[:] = cache
    mm.flush()
    ro = np.memmap(tmp_path / "c.u8", dtype=np.uint8, mode="r", shape=cache.shape)
    rows = gather_rows(ro, idx)
    assert rows.is_contiguous() and rows.dtype == torch.uint8
    assert torch.equal(rows, torch.from_numpy(cache[idx]))
    rows[0] = 0  # a copy: the read-only cache is untouched

    class Indexable:  # like sources.MultiImages: only __getitem__ with an index array
        def __getitem__(self, i: np.ndarray) -> np.ndarray:
            return cache[i]

    assert torch.equal(gather_rows(Indexable(), idx), torch.from_numpy(cache[idx]))


def test_prefetch_yields_the_same_steps_in_order_and_stops_cleanly() -> None:
    batches = [(s, np.arange(s, s + 3)) for s in range(5)]
    got = list(prefetch_rows(iter(batches), lambda i: torch.from_numpy(i * 10)))
    assert [s for s, _, _ in got] == list(range(5))
    for (s, i, rows), (_, ref) in zip(got, batches, strict=True):
        assert np.array_equal(i, ref) and torch.equal(rows, torch.from_numpy(ref * 10))
    # The loop breaking early (max_steps) must not hang or leak the thread.
    it = prefetch_rows(iter(batches), lambda i: torch.from_numpy(i), ahead=2)
    assert next(it)[0] == 0
    it.close()
    with pytest.raises(ValueError, match="boom"):
        list(prefetch_rows(iter(batches), lambda i: (_ for _ in ()).throw(ValueError("boom"))))


@pytest.mark.parametrize("cfg", [EVERYTHING, AugmentConfig(), AugmentConfig(hflip=True, crop_scale=1.0, rotate=0.0,
                                                                            scale=0.0, color=0.0)],
                         ids=["everything", "defaults", "flip-only"])
def test_device_path_on_cpu_is_bit_identical_to_the_cpu_pipeline(cache: np.ndarray, cfg: AugmentConfig) -> None:
    idx = np.array([0, 2, 3, 5, 8, 9, 11, 12, 15, 16, 20, 23])
    for seed in (1, 2, 3):
        ref, ref_swapped, ref_gen = _before(cache, idx, cfg, seed, 100 + seed)
        out, swapped, gen = _device_path(cache, idx, cfg, seed, 100 + seed, torch.device("cpu"))
        assert out.dtype == torch.float32 and out.shape == (len(idx), 3, 80, 64)
        assert torch.equal(out, ref)
        if cfg.context_swap > 0:
            assert torch.equal(swapped, ref_swapped) and bool(swapped.any())
        else:
            assert swapped is None
        # The generator advanced exactly as much: the next step's draws are the same too.
        assert torch.equal(torch.rand(4, generator=gen), torch.rand(4, generator=ref_gen))


def test_context_swap_needs_labels(cache: np.ndarray) -> None:
    with pytest.raises(ValueError, match="labels"):
        augment_on_device(gather_rows(cache, np.arange(4)), torch.device("cpu"), EVERYTHING, PRE,
                          torch.Generator().manual_seed(0), swap_generator=torch.Generator().manual_seed(1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_path_on_cuda_matches_the_cpu_within_tolerance(cache: np.ndarray) -> None:
    idx = np.arange(24)
    ref, ref_swapped, _ = _before(cache, idx, EVERYTHING, 7, 8)
    out, swapped, _ = _device_path(cache, idx, EVERYTHING, 7, 8, torch.device("cuda"))
    assert out.is_cuda and torch.equal(swapped, ref_swapped)
    # Same draws; only the kernels differ (grid_sample, antialiased resize): normalised units.
    torch.testing.assert_close(out.cpu(), ref, atol=2e-3, rtol=0)


def test_compile_flag_trains_through_torch_compile_and_saves_the_plain_model(tiny_cfg: TrainConfig,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from faceattr.checkpoint import load_tensors
    from faceattr.train import fit

    calls: list[torch.nn.Module] = []

    def fake_compile(model: torch.nn.Module) -> torch.nn.Module:  # the real one needs a compiler and a minute
        calls.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    out = fit(replace(tiny_cfg, compile=True, epochs=1, max_steps=3, data=replace(tiny_cfg.data, val_split="none")))
    assert len(calls) == 1  # once per run, not per step or epoch
    assert not any(k.startswith("_orig_mod") for k in load_tensors(out / "last.safetensors", "model."))


def test_fused_optimizers_only_on_cuda(tiny_cfg: TrainConfig) -> None:
    from types import SimpleNamespace

    from faceattr.models import create_model
    from faceattr.train.loop import _make_optimizer

    model = create_model("celeb_cnn", num_outputs=5)
    for name in ("adamw", "adam", "sgd"):
        cfg = replace_optim(tiny_cfg, name)
        cpu = _make_optimizer(SimpleNamespace(cfg=cfg, model=model, train_features=None, device=torch.device("cpu")), False)
        assert not cpu.defaults.get("fused")
        cuda = _make_optimizer(SimpleNamespace(cfg=cfg, model=model, train_features=None, device=torch.device("cuda")), False)
        assert cuda.defaults["fused"] is True


def replace_optim(cfg: TrainConfig, name: str) -> TrainConfig:
    from dataclasses import replace

    return replace(cfg, optim=replace(cfg.optim, optimizer=name))
