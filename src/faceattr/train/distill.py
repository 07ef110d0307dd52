"""Knowledge distillation and warm starts: soft targets from teacher checkpoints, weights from a checkpoint.

Teachers predict once on every training image (and its mirror), their logits are averaged and the
result is stored in the run folder (``teacher_targets.safetensors``) so a resumed run reuses it. The
training target becomes ``(1 - weight) * label + weight * teacher probability``, which BCE accepts
as it is: soft targets also damp CelebA's label noise (one person labelled Male in 5 of 30 photos).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from faceattr.checkpoint import (
    load_checkpoint,
    load_tensors,
    read_metadata,
    resolve_checkpoint,
)
from faceattr.config import TrainConfig
from faceattr.errors import FaceattrError

__all__ = ["teacher_logits", "soft_targets", "load_initial_weights"]

logger = logging.getLogger(__name__)

TARGETS_FILE = "teacher_targets.safetensors"


def _check_teacher(path: Path, meta: dict[str, Any], attributes: Sequence[str], cfg: TrainConfig) -> list[int]:
    """Columns of the student's attributes in the teacher's output; refuse teachers that would mislead."""
    if meta.get("output", "sigmoid") != "sigmoid":
        raise FaceattrError(f"teacher {path} is a two-class softmax model; distillation needs multi-label (sigmoid) teachers")
    have = list(meta.get("attributes", []))
    missing = [a for a in attributes if a not in have]
    if missing:
        raise FaceattrError(f"teacher {path} does not predict {', '.join(missing)}; pick teachers trained on the same attributes")
    if cfg.data.val_split == "holdout":
        # A teacher that trained on the student's holdout would leak it into model selection.
        tdata = meta.get("config", {}).get("data", {})
        tseed = meta.get("config", {}).get("seed")
        if tdata.get("holdout_fraction") != cfg.data.holdout_fraction or tseed != cfg.seed:
            raise FaceattrError(
                f"teacher {path} was trained with holdout_fraction={tdata.get('holdout_fraction')} seed={tseed}, "
                f"this run uses {cfg.data.holdout_fraction} and {cfg.seed}: it may have seen this holdout; "
                "use teachers trained with the same holdout split"
            )
    return [have.index(a) for a in attributes]


def teacher_logits(
    teachers: Sequence[str],
    paths: Sequence[str],
    attributes: Sequence[str],
    cfg: TrainConfig,
    device: torch.device,
) -> np.ndarray:
    """Average logits [N, A] of `teachers` on the images at `paths`, columns ordered as `attributes`."""
    from faceattr.data.cache import build_cache
    from faceattr.data.transforms import Preprocess, normalize_batch
    from faceattr.runtime import predict_logits

    if not teachers:
        raise FaceattrError("distill.teachers is empty; name at least one teacher checkpoint")
    total = np.zeros((len(paths), len(attributes)), dtype=np.float64)
    for name in teachers:
        path = resolve_checkpoint(name)
        columns = _check_teacher(path, read_metadata(path), attributes, cfg)
        model, meta = load_checkpoint(path, device=str(device))
        pre = Preprocess.from_dict(meta["preprocess"])
        cache = build_cache(list(paths), pre, cache_dir=cfg.data.cache_dir or None, workers=cfg.data.workers,
                            progress=cfg.progress)
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(paths), desc=f"teacher {path.parent.name}/{path.stem}",
                       unit="img", leave=False)
        try:
            logits = predict_logits(model, cache.images, lambda x, p=pre: normalize_batch(x, p),
                                    batch_size=cfg.eval_batch_size, device=device, flip=cfg.distill.flip,
                                    progress=bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        total += logits[:, columns]
        logger.info("teacher %s: predicted %d images", path, len(paths))
        del model
    return (total / len(teachers)).astype(np.float32)


def soft_targets(cfg: TrainConfig, paths: Sequence[str], labels: np.ndarray, attributes: Sequence[str],
                 device: torch.device, out: Path) -> np.ndarray:
    """Training targets mixing `labels` with the teachers' probabilities; cached in the run folder."""
    from safetensors.numpy import load_file, save_file

    w = cfg.distill.weight
    if not 0.0 <= w <= 1.0:
        raise FaceattrError(f"distill.weight must be within [0, 1], got {w}")
    key = json.dumps({"teachers": [str(resolve_checkpoint(t).resolve()) for t in cfg.distill.teachers],
                      "flip": cfg.distill.flip, "attributes": list(attributes), "n": len(paths)})
    cached = out / TARGETS_FILE
    logits = None
    if cached.is_file():
        from safetensors import safe_open

        with safe_open(str(cached), framework="numpy") as f:
            if (f.metadata() or {}).get("key") == key:
                logits = load_file(str(cached))["logits"]
                logger.info("distill: reusing teacher predictions from %s", cached)
    if logits is None:
        logits = teacher_logits(cfg.distill.teachers, paths, attributes, cfg, device)
        out.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.tmp")
        save_file({"logits": logits}, str(tmp), metadata={"key": key})
        tmp.replace(cached)
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    agree = float(((probs >= 0.5) == (labels > 0.5)).mean())
    logger.info("distill: teachers agree with the labels on %.4f of training targets; weight %.2f", agree, w)
    return ((1.0 - w) * labels + w * probs).astype(np.float32)


def load_initial_weights(model: nn.Module, name: str, model_name: str, attributes: Sequence[str], output: str) -> Path:
    """Copy the weights of checkpoint `name` into `model` (same architecture, attributes and output)."""
    path = resolve_checkpoint(name)
    meta = read_metadata(path)
    theirs = (meta.get("model", {}).get("name"), list(meta.get("attributes", [])), meta.get("output", "sigmoid"))
    if theirs != (model_name, list(attributes), output):
        raise FaceattrError(
            f"model.init_from {path} is a {theirs[0]} with {len(theirs[1])} {theirs[2]} outputs; this run trains a "
            f"{model_name} with {len(attributes)} {output} outputs: pick a checkpoint of the same model and attributes"
        )
    state = load_tensors(path, "model.")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise FaceattrError(f"model.init_from {path}: weights do not fit this model ({str(e).splitlines()[0]})") from None
    logger.info("initialised weights from %s", path)
    return path
