"""Small shared pieces for running models: device choice, batched inference, logits to probabilities."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from faceattr.errors import FaceattrError

__all__ = ["resolve_device", "logits_to_probs", "predict_logits"]

logger = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; an unavailable device is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise FaceattrError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FaceattrError(f"device '{name}' asked for but no CUDA GPU is available; use --device cpu")
    return dev


def logits_to_probs(logits: torch.Tensor, output: str = "sigmoid") -> torch.Tensor:
    """Map model logits to per-attribute probabilities [N, A] ('softmax': 2 classes, class 1 = present)."""
    if output == "softmax":
        return torch.softmax(logits.float(), dim=1)[:, 1:2]
    return torch.sigmoid(logits.float())


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: np.ndarray,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    flip: bool = False,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Run `model` over uint8 images [N, H, W, 3] in batches; returns float32 logits [N, K].

    `normalize` maps a uint8 [B, 3, H, W] tensor to the model's float input. With `flip`, the logits
    of the image and its mirror are averaged (test-time augmentation).
    """
    device = torch.device(device)
    model.eval()
    out: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[start : start + batch_size])).permute(0, 3, 1, 2)
        x = normalize(batch.to(device))
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(x).float()
                if flip:
                    logits = (logits + model(torch.flip(x, dims=[3])).float()) / 2
        else:
            logits = model(x).float()
            if flip:
                logits = (logits + model(torch.flip(x, dims=[3])).float()) / 2
        out.append(logits.cpu().numpy())
        if progress is not None:
            progress(len(batch))
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)
