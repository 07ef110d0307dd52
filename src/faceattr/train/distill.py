"""Knowledge distillation and warm starts: soft targets from teacher checkpoints, weights from a checkpoint.

Teachers predict once on every training image (and its mirror), their logits are averaged and the
result is stored in the decode cache folder (``teachers-<hash>.safetensors``, keyed by the teacher
files and the images) so a resumed run, or another run with the same teachers, reuses it. The
training target becomes ``(1 - weight) * label + weight * teacher probability``, which BCE accepts
as it is: soft targets also damp CelebA's label noise (one person labelled Male in 5 of 30 photos).
Attributes in ``distill.exclude`` keep their labels.

In a ``data.sources`` run the teachers read every source's rows framed as the student sees them (a
UTKFace chip placed in the aligned frame, by its landmarks when the source says so), and where a source
does not label an attribute (CelebA's 39 others on a UTKFace face) the target is the teachers'
probability (``distill.fill``): the student keeps what the teachers know of those attributes on faces
that are not CelebA's instead of drifting there unchecked, as "learning without forgetting" does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from faceattr._atomic import atomic_output, write_error
from faceattr.checkpoint import (
    load_checkpoint,
    load_tensors,
    read_metadata,
    resolve_checkpoint,
)
from faceattr.config import TrainConfig
from faceattr.errors import FaceattrError

__all__ = ["load_initial_weights", "soft_targets", "source_soft_targets", "teacher_cache_path", "teacher_logits"]

logger = logging.getLogger(__name__)


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


def _checked_teachers(cfg: TrainConfig, attributes: Sequence[str]) -> list[tuple[Path, list[int]]]:
    """Resolve cfg.distill.teachers and check each one (metadata only); returns (path, columns) pairs."""
    if not cfg.distill.teachers:
        raise FaceattrError("distill.teachers is empty; name at least one teacher checkpoint")
    checked = []
    for name in cfg.distill.teachers:
        path = resolve_checkpoint(name)
        checked.append((path, _check_teacher(path, read_metadata(path), attributes, cfg)))
    return checked


def _predict_teachers(teachers: Sequence[tuple[Path, list[int]]], paths: Sequence[str], cfg: TrainConfig,
                      device: torch.device, images_for: Callable[[Any], Any] | None = None) -> np.ndarray:
    """Average logits of checked `teachers` (from `_checked_teachers`) on the images at `paths`.

    `images_for(preprocess)` gives the rows framed for a teacher's preprocessing; by default the
    files at `paths` decoded as aligned CelebA frames.
    """
    from faceattr.data.cache import build_cache
    from faceattr.data.transforms import Preprocess, normalize_batch
    from faceattr.runtime import predict_logits

    if images_for is None:
        def images_for(pre: Any) -> Any:
            return build_cache(list(paths), pre, cache_dir=cfg.data.cache_dir or None, workers=cfg.data.workers,
                               progress=cfg.progress).images

    total = np.zeros((len(paths), len(teachers[0][1])), dtype=np.float64)
    for path, columns in teachers:
        model, meta = load_checkpoint(path, device=str(device))
        pre = Preprocess.from_dict(meta["preprocess"])
        images = images_for(pre)
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(paths), desc=f"teacher {path.parent.name}/{path.stem}",
                       unit="img", leave=False)
        try:
            logits = predict_logits(model, images, lambda x, p=pre: normalize_batch(x, p),
                                    batch_size=cfg.eval_batch_size, device=device, flip=cfg.distill.flip,
                                    progress=bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        total += logits[:, columns]
        logger.info("teacher %s: predicted %d images", path, len(paths))
        del model
    return (total / len(teachers)).astype(np.float32)


def teacher_logits(paths: Sequence[str], attributes: Sequence[str], cfg: TrainConfig, device: torch.device) -> np.ndarray:
    """Average logits [N, A] of cfg.distill.teachers on the images at `paths`, columns ordered as `attributes`."""
    return _predict_teachers(_checked_teachers(cfg, attributes), paths, cfg, device)


def _frames(cfg: TrainConfig) -> list[Any]:
    """How each source frames its images (a landmarks file, native warps): part of the teacher cache key."""
    from faceattr.data.utkface import ChipFrame

    # The image cache's own key for the framing (template, landmarks content, native); a CelebA source
    # cannot set either, so its entry is the same constant on every run.
    return [[s.root, s.kind, ChipFrame(landmarks=s.landmarks, native=s.native).key] for s in cfg.data.sources]


def _cache_location(cfg: TrainConfig, teachers: Sequence[Path], paths: Sequence[str],
                    attributes: Sequence[str]) -> tuple[Path, str]:
    from faceattr.data.cache import default_cache_dir

    stamps = []
    for t in teachers:
        p = t.resolve()
        st = p.stat()
        stamps.append([str(p), st.st_size, st.st_mtime_ns])  # a retrained teacher invalidates the cache
    images = hashlib.blake2b("\n".join(map(str, paths)).encode(), digest_size=16).hexdigest()
    fields: dict[str, Any] = {"teachers": stamps, "flip": cfg.distill.flip, "attributes": list(attributes),
                              "images": images}
    if cfg.data.sources:  # the same files framed another way are other pixels
        fields["frames"] = _frames(cfg)
    key = json.dumps(fields)
    folder = Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else default_cache_dir()
    return folder / f"teachers-{hashlib.blake2b(key.encode(), digest_size=10).hexdigest()}.safetensors", key


def teacher_cache_path(cfg: TrainConfig, paths: Sequence[str], attributes: Sequence[str]) -> tuple[Path, str]:
    """Where the teachers' predictions for these images are cached, and the key stored with them."""
    return _cache_location(cfg, [resolve_checkpoint(t) for t in cfg.distill.teachers], paths, attributes)


def _read_teacher_cache(cached: Path, key: str, shape: tuple[int, int]) -> np.ndarray | None:
    """The cached teacher logits when `cached` holds them for `key` in `shape`, else None (then recomputed)."""
    from safetensors import safe_open

    if not cached.is_file():
        return None
    try:
        with safe_open(str(cached), framework="numpy") as f:
            if (f.metadata() or {}).get("key") != key:
                return None
            logits = f.get_tensor("logits")
    except Exception as e:  # noqa: BLE001 - torn, edited or foreign: safetensors raises several types
        logger.warning("distill: ignoring unreadable teacher cache %s (%s); recomputing it", cached, e)
        return None
    if logits.shape != shape or not np.isfinite(logits).all():
        logger.warning("distill: ignoring teacher cache %s: it holds %s logits, expected %s; recomputing it",
                       cached, logits.shape, shape)
        return None
    logger.info("distill: reusing teacher predictions from %s", cached)
    with contextlib.suppress(OSError):  # its mtime is its last use, for `faceattr cache`
        os.utime(cached)
    return logits


def soft_targets(cfg: TrainConfig, paths: Sequence[str], labels: np.ndarray, attributes: Sequence[str],
                 device: torch.device, images_for: Callable[[Any], Any] | None = None) -> np.ndarray:
    """Training targets mixing `labels` with the teachers' probabilities (computed once, then cached).

    A NaN label (the row's source does not label that attribute) becomes the teachers' probability
    with `distill.fill`, and stays NaN (left out of the loss) without it or for an excluded attribute.
    """
    from safetensors.numpy import save_file

    w = cfg.distill.weight
    if not 0.0 <= w <= 1.0:
        raise FaceattrError(f"distill.weight must be within [0, 1], got {w}")
    unknown = [a for a in cfg.distill.exclude if a not in attributes]
    if unknown:
        raise FaceattrError(f"distill.exclude names {', '.join(unknown)}, which this run does not train; "
                            f"choose from its attributes")
    # Checked on every run, cache hit or not: the holdout check depends on this run's settings.
    teachers = _checked_teachers(cfg, attributes)
    cached, key = _cache_location(cfg, [path for path, _ in teachers], paths, attributes)
    logits = _read_teacher_cache(cached, key, (len(paths), len(attributes)))
    if logits is None:
        logits = _predict_teachers(teachers, paths, cfg, device, images_for)
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(cached, e, "teacher cache", "point FACEATTR_CACHE at another disk") from None
        with atomic_output(cached, "teacher cache") as tmp:
            save_file({"logits": logits}, str(tmp), metadata={"key": key})
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    known = ~np.isnan(labels)
    agree = float(((probs >= 0.5) == (labels > 0.5))[known].mean()) if known.any() else float("nan")
    logger.info("distill: teachers agree with the labels on %.4f of training targets; weight %.2f", agree, w)
    weight = np.full(len(attributes), w)
    excluded = [list(attributes).index(a) for a in cfg.distill.exclude]
    weight[excluded] = 0.0
    mixed = (1.0 - weight) * np.nan_to_num(labels) + weight * probs
    unlabelled = probs.copy() if cfg.distill.fill else np.full_like(probs, np.nan)
    unlabelled[:, excluded] = np.nan  # an excluded attribute learns from labels only, where there are any
    if not known.all():
        logger.info("distill: %s %d unlabelled targets (%.1f%%) with the teachers' probabilities",
                    "filling" if cfg.distill.fill else "leaving out", int((~known).sum()), 100 * float((~known).mean()))
    return np.where(known, mixed, unlabelled).astype(np.float32)


def source_soft_targets(cfg: TrainConfig, data: Any, device: torch.device) -> np.ndarray:
    """`soft_targets` for a `data.sources` run: teachers read each source's training rows as the student does."""
    from faceattr.train.sources import load_sources

    def images_for(pre: Any) -> Any:
        seen = load_sources(cfg, pre, "train")
        if [str(p) for p in seen.paths] != [str(p) for p in data.paths]:
            # A teacher's preprocessing that decodes a different set of files would misalign the rows.
            raise FaceattrError("distill: a teacher's preprocessing reads a different set of training images than "
                                "the student's; use teachers with the student's image size and crop")
        return seen.images

    return soft_targets(cfg, [str(p) for p in data.paths], np.asarray(data.labels, dtype=np.float32),
                        data.attributes, device, images_for)


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
    mine = model.state_dict()
    # A model that adds an age output after the same attributes starts from the checkpoint's
    # attribute rows; its age row keeps its fresh initialisation.
    for key, theirs_t in list(state.items()):
        ours_t = mine.get(key)
        if (key.startswith("head.") and ours_t is not None and ours_t.ndim == theirs_t.ndim
                and ours_t.shape[0] == len(attributes) + 1 and theirs_t.shape[0] == len(attributes)
                and ours_t.shape[1:] == theirs_t.shape[1:]):
            state[key] = torch.cat([theirs_t.to(ours_t.dtype), ours_t[len(attributes):].cpu()])
            logger.info("init_from: %s gets the checkpoint's %d attribute rows and a new age row", key, len(attributes))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise FaceattrError(f"model.init_from {path}: weights do not fit this model ({str(e).splitlines()[0]})") from None
    logger.info("initialised weights from %s", path)
    return path
