"""The per-step batch pipeline of training: cache rows -> device -> augmented, normalised input.

The decode-once cache holds uint8 [N, H, W, 3] images. Each step gathers its rows (in a background
thread, one step ahead, so reading the memory-mapped cache overlaps the model's work), sends them to
the device as uint8 (a quarter of float32's bytes; from pinned memory with a non-blocking copy on
CUDA), and augments and normalises them there, batched. The random numbers are always drawn on the
step's CPU generator, whatever the device, so a run's augmentation does not depend on where it runs
and a CPU run is bit for bit what it was before this module existed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from faceattr.config import AugmentConfig

__all__ = ["gather_rows", "prefetch_rows", "augment_on_device"]


def gather_rows(images: Any, idx: np.ndarray, *, pin: bool = False) -> torch.Tensor:
    """uint8 rows `idx` of a cache as a tensor [B, H, W, 3], copied once (into pinned memory with `pin`).

    `images` is a (memory-mapped) array or anything indexable by an index array (MultiImages).
    """
    if isinstance(images, np.ndarray):
        shape = (len(idx), *images.shape[1:])
        out = torch.empty(shape, dtype=torch.uint8, pin_memory=pin)
        # mode="clip": with the default "raise", numpy buffers `out` (one more copy); the indices are valid.
        np.take(images, idx, axis=0, out=out.numpy(), mode="clip")
        return out
    rows = torch.from_numpy(np.ascontiguousarray(images[idx]))
    return rows.pin_memory() if pin else rows


def prefetch_rows(batches: Iterable[tuple[int, np.ndarray]], gather: Callable[[np.ndarray], torch.Tensor],
                  *, ahead: int = 1) -> Iterator[tuple[int, np.ndarray, torch.Tensor]]:
    """Yield (step, idx, gathered rows) for each (step, idx), gathering up to `ahead` steps early in a thread.

    The order and contents are exactly those of gathering in the loop; only the timing changes. An
    early stop (the caller breaks) waits for at most `ahead` pending gathers.
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faceattr-gather")
    pending: list[tuple[int, np.ndarray, Future[torch.Tensor]]] = []
    try:
        it = iter(batches)
        for step, idx in it:
            pending.append((step, idx, pool.submit(gather, idx)))
            if len(pending) > ahead:
                s, i, fut = pending.pop(0)
                yield s, i, fut.result()
        while pending:
            s, i, fut = pending.pop(0)
            yield s, i, fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def augment_on_device(rows: torch.Tensor, device: torch.device, augment: AugmentConfig, preprocess: Any,
                      generator: torch.Generator, *, labels: np.ndarray | None = None,
                      swap_generator: torch.Generator | None = None, male: int | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 rows [B, H, W, 3] -> normalised float32 [B, 3, H, W] on `device`, augmented with `generator`'s draws.

    The copy is non-blocking (it overlaps the host when `rows` is pinned). With `swap_generator`
    (augment.context_swap > 0), the band below the chin is swapped first, as in training; the
    second value is then the bool [B] of pasted images, else None. On the CPU this is exactly the
    pipeline training has always used (same operations in the same order).
    """
    from faceattr.data.augment import augment_batch, swap_context
    from faceattr.data.transforms import normalize_batch

    x = rows.to(device, non_blocking=True).permute(0, 3, 1, 2)
    swapped = None
    if swap_generator is not None:
        if labels is None:
            raise ValueError("context_swap needs the batch's labels")
        x, swapped = swap_context(x, labels, augment.context_swap, swap_generator, male=male)
    return normalize_batch(augment_batch(x, augment, generator), preprocess), swapped
