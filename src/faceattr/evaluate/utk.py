"""Evaluate gender (and age) on UTKFace through the same detect-and-align path `faceattr predict` uses.

`evaluate_utkface(UtkEvalConfig(...))` runs `faceattr.infer.AttributeModel.predict_many` over the
chips of one UTKFace split and keeps the largest face of each image. Images where no face is found
(or the largest is too small to classify, or the file cannot be read) are "missed": counted, by
reason and by group, never silently dropped; the metrics cover the detected faces. The numbers are
sliced by `faceattr.evaluate.groups.group_metrics`; ``result`` is the UTKFace form of the
evaluation JSON (``"dataset": "utkface"``, see `faceattr.evaluate.schema`).

Gender is called with the model's own Male threshold (calibrated or 0.5), as `predict` calls it.
Race is a label of the data used only to slice the numbers; nothing predicts it.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceattr.errors import FaceattrError

__all__ = ["MISS_REASONS", "UtkEvalConfig", "UtkEvaluation", "evaluate_utkface"]

logger = logging.getLogger(__name__)

MISS_REASONS = ("no_face", "too_small", "unreadable")
_MISSED_EXAMPLES = 20  # missed file names listed in the JSON; the counts cover them all


@dataclass
class UtkEvalConfig:
    """Everything one UTKFace evaluation needs; defaults match `faceattr evaluate --data-root UTKFACE`."""

    model: str = "default"  # checkpoint path, run folder or shipped model name
    data_root: str = "../shared/utkface"
    split: str = "test"  # train | valid | test | all (DATETIME blocks; test is never trained on)
    seed: int = -1  # < 0: the checkpoint's training seed (its held-out test blocks), else 0
    limit: int = 0  # 0: every image of the split; N: a seeded sample of N
    device: str = "auto"
    batch_size: int = 64  # faces classified per batch
    backend: str = "auto"  # auto | onnx | torch, as `faceattr predict --backend`
    min_n: int = 20  # smallest slice (detected faces) that can be named the worst group
    progress: bool = True


@dataclass
class UtkEvaluation:
    """The JSON result plus the per-image arrays behind it (all images of the split, missed ones too)."""

    result: dict[str, Any]
    checkpoint: Path
    filenames: list[str]
    male: np.ndarray  # float32 [N], 1 = male (truth)
    race: np.ndarray  # int64 [N], index into RACES
    age: np.ndarray  # float32 [N], years (truth)
    detected: np.ndarray  # bool [N]
    male_prob: np.ndarray  # float32 [N], NaN where missed
    age_pred: np.ndarray | None  # float32 [N] years, NaN where missed; None: the model has no age output
    missed: dict[str, str] = field(default_factory=dict)  # file name -> reason, for every missed image


def _trained_on_utkface(meta: dict[str, Any]) -> bool:
    """True when the checkpoint's training config read UTKFace (an age output implies it)."""
    if meta.get("age"):
        return True
    cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    sources = (cfg.get("data") or {}).get("sources") or []
    return any(isinstance(s, dict) and s.get("kind") == "utkface" for s in sources)


def _overlap_warnings(meta: dict[str, Any], split: str, seed: int) -> list[str]:
    """Warnings when the split holds images the model was trained on or selected with."""
    if not _trained_on_utkface(meta):
        return []
    cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    train_seed = int(cfg.get("seed", 0) or 0)
    if split in ("train", "all"):
        return [f"the UTKFace split '{split}' holds the model's training images: its numbers are not a test result"]
    if seed != train_seed:
        return [f"the UTKFace split '{split}' with seed {seed} is not the one held out when the model was trained "
                f"(seed {train_seed}): some of its images were trained on; evaluate with --seed {train_seed}"]
    if split == "valid":
        return ["the UTKFace split 'valid' chose the model's best epoch: use 'test' for a result to report"]
    return []


def evaluate_utkface(cfg: UtkEvalConfig) -> UtkEvaluation:
    """Evaluate `cfg.model`'s gender (and age) on a UTKFace split, the largest detected face per image."""
    import faceattr.infer as fi
    from faceattr.checkpoint import read_metadata, resolve_checkpoint, versions
    from faceattr.data.utkface import AGE_BANDS, RACES, load_utkface
    from faceattr.evaluate.evaluator import _now, _run_fields
    from faceattr.evaluate.groups import group_metrics
    from faceattr.infer.backends import onnx_backend
    from faceattr.runtime import resolve_device

    if cfg.limit < 0:
        raise FaceattrError(f"limit must be >= 0 (0: every image), got {cfg.limit}")
    if cfg.batch_size <= 0:
        raise FaceattrError(f"batch size must be > 0, got {cfg.batch_size}")
    if cfg.min_n < 1:
        raise FaceattrError(f"min_n must be >= 1, got {cfg.min_n}")
    t_start = time.perf_counter()
    path = resolve_checkpoint(cfg.model)
    meta = read_metadata(path)  # cheap: the checks below fail in a second, before any weights load
    if "Male" not in (meta.get("attributes") or []):
        raise FaceattrError(
            f"the model {path.name} does not predict Male; UTKFace evaluation measures gender (and age), "
            f"so evaluate a model that predicts Male, or evaluate this one on CelebA"
        )
    train_cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    seed = int(train_cfg.get("seed", 0) or 0) if cfg.seed < 0 else cfg.seed
    split = load_utkface(cfg.data_root, cfg.split, seed=seed, limit=cfg.limit)
    if len(split) == 0:
        raise FaceattrError(f"split '{cfg.split}' of {cfg.data_root} has no images; choose another with --split")
    device = resolve_device(cfg.device)
    model = fi.load(cfg.model, device=str(device), backend=cfg.backend)
    meta = model.meta
    male_col = model.attributes.index("Male")
    threshold = float(model.thresholds[male_col])

    n = len(split)
    male_prob = np.full(n, np.nan, dtype=np.float32)
    age_pred = np.full(n, np.nan, dtype=np.float32) if model.predicts_age else None
    missed: dict[str, str] = {}
    n_multiple = 0
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"evaluate UTKFace {cfg.split}", unit="img", file=sys.stderr, dynamic_ncols=True,
                   leave=False)
    t0 = time.perf_counter()
    try:
        # predict_many yields in input order, one result per path.
        for i, res in enumerate(model.predict_many(split.paths, batch_size=cfg.batch_size)):
            name = split.filenames[i]
            if res.error is not None:
                missed[name] = "unreadable"
                logger.debug("%s: %s", name, res.error)
            elif not res.faces:
                missed[name] = "no_face"
            elif res.faces[0].too_small:  # faces come largest first: the rest are smaller still
                missed[name] = "too_small"
            else:
                face = res.faces[0]
                male_prob[i] = face.probabilities["Male"]
                if age_pred is not None and face.age is not None:
                    age_pred[i] = face.age
                n_multiple += len(res.faces) > 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    detected = np.isfinite(male_prob)
    n_det = int(detected.sum())
    if n_det == 0:
        raise FaceattrError(
            f"no face found in any of the {n} images of split '{cfg.split}' under {cfg.data_root}; "
            "check that they are UTKFace chips (faceattr predict on one shows what the detector sees)"
        )
    if age_pred is not None and not np.isfinite(age_pred[detected]).all():
        raise FaceattrError(f"the model {path.name} says it predicts age but gave none for some faces; re-export it")
    if missed:
        logger.warning("UTKFace %s: no usable face in %d of %d images (%s); metrics cover the %d detected faces",
                       cfg.split, len(missed), n, ", ".join(f"{sum(v == r for v in missed.values())} {r.replace('_', ' ')}"
                                                            for r in MISS_REASONS if r in missed.values()), n_det)
    groups = group_metrics(split.male, male_prob, split.race, split.age, threshold=threshold, race_names=RACES,
                           bands=AGE_BANDS, age_pred=age_pred, detected=detected, min_n=cfg.min_n)
    warnings_ = _overlap_warnings(meta, cfg.split, seed)
    if not model.predicts_age:
        logger.info("the model has no age output: age is not evaluated")
    result: dict[str, Any] = {
        **_run_fields(cfg, path, meta, seed),
        "dataset": "utkface",
        "pipeline": "detect + align (as faceattr predict), largest face per image",
        "n_images": n,
        "n_detected": n_det,
        "n_missed": n - n_det,
        "missed": {r: sum(v == r for v in missed.values()) for r in MISS_REASONS},
        "missed_examples": sorted(missed)[:_MISSED_EXAMPLES],
        "n_multiple_faces": int(n_multiple),
        "predicts_age": bool(model.predicts_age),
        "male_threshold": threshold,
        "races": list(RACES),
        "age_bands": [label for label, _, _ in AGE_BANDS],
        "groups": groups,
        "warnings": warnings_,
        "device": str(device),
        "backend": "onnx" if onnx_backend(model) is not None else "torch",
        "images_per_s": round(n / max(seconds, 1e-9), 2),
        "seconds": round(time.perf_counter() - t_start, 2),
        "created": _now(),
        "versions": {k: str(v) for k, v in versions().items()},
    }
    for w in warnings_:
        logger.warning("!!! %s", w)
    return UtkEvaluation(
        result=result,
        checkpoint=path,
        filenames=list(split.filenames),
        male=np.asarray(split.male, dtype=np.float32),
        race=np.asarray(split.race, dtype=np.int64),
        age=np.asarray(split.age, dtype=np.float32),
        detected=detected,
        male_prob=male_prob,
        age_pred=age_pred,
        missed=missed,
    )
