"""Evaluate a checkpoint on a CelebA split: predictions, metrics, subgroup slices, threshold calibration.

`evaluate_model(EvalConfig(...))` returns an `Evaluation` whose ``result`` is the JSON document
described in `faceattr.evaluate.schema` (``--json`` writes exactly that), plus the arrays the
HTML report draws from (labels, probabilities, decoded images).

When the model predicts Male and the data labels Wearing_Lipstick, ``lipstick_shortcut`` reports the
model card's shortcut check: among women, the share called Male without lipstick vs with it. A model
with an age output (metadata ``"age"``) is evaluated on its attributes only; CelebA has no ages
(`faceattr.evaluate.utk` scores age on UTKFace).

Headline metrics are always at threshold 0.5, the model's raw decision. Per-attribute thresholds,
either calibrated now (``calibrate='accuracy'|'balanced_accuracy'``) or stored in the checkpoint
by an earlier calibration, are reported beside them in ``calibrated``. Calibrating on the split
being reported makes those numbers optimistic; that is allowed but always flagged in
``calibration.warning``, in ``warnings`` and in the log.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceattr._atomic import atomic_write, write_error
from faceattr.errors import FaceattrError, did_you_mean, resolve_names
from faceattr.evaluate.groups import lipstick_shortcut
from faceattr.evaluate.metrics import (
    MIXED_WEIGHT,
    OBJECTIVES,
    calibrate_thresholds,
    calibration_gain,
    metric_block,
    subgroup_metrics,
)

__all__ = ["DEFAULT_SUBGROUPS", "SCHEMA_VERSION", "EvalConfig", "Evaluation", "evaluate_model", "write_json"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_SUBGROUPS = ("Male", "Young")


@dataclass
class EvalConfig:
    """Everything one evaluation needs; defaults match `faceattr evaluate`."""

    model: str = "default"  # checkpoint path, run folder or shipped model name
    data_root: str = "../shared/celeba"
    split: str = "valid"  # valid | test | holdout | train | all
    attributes: list[str] = field(default_factory=list)  # empty: every attribute the model predicts
    subgroups: list[str] | None = None  # None: Male and Young when the data labels them; []: none
    calibrate: str = ""  # "" (off) | accuracy | balanced_accuracy | mixed
    balanced_weight: float = MIXED_WEIGHT  # mixed: maximise accuracy + this x balanced accuracy
    calibrate_split: str = ""  # "": holdout when holdout_fraction > 0, else valid
    save_thresholds: bool = True  # write calibrated thresholds into the checkpoint's metadata
    batch_size: int = 256
    device: str = "auto"
    limit: int = 0  # 0: every image of the split; N: a seeded sample of N
    holdout_fraction: float = -1.0  # < 0: the checkpoint's training value (0 when it has none)
    seed: int = -1  # < 0: the checkpoint's training seed (same holdout identities and samples), else 0
    layout: str = "auto"
    cache_dir: str = ""
    workers: int = 0
    flip: bool = False  # average with the mirrored image (test-time augmentation)
    # auto: ONNX Runtime when the checkpoint has a current export beside it (as `predict` picks), else torch.
    backend: str = "auto"
    # Evaluate on black-and-white copies of the images (luma in all channels): how much a model
    # trained on colour photos loses on grayscale ones, colour attributes above all.
    grayscale: bool = False
    # Paste rows 190-217 of the aligned frame (neck and collar) from an image of the other sex with
    # the same necktie, necklace and beard labels, so every label stays true: a model that reads
    # Male off clothing loses Male accuracy here. Needs Male in the data; not with calibration.
    swap_clothes: bool = False
    progress: bool = True


@dataclass
class Evaluation:
    """The JSON result plus the arrays behind it (for the report)."""

    result: dict[str, Any]
    checkpoint: Path
    run_dir: Path | None  # folder holding the checkpoint's log.jsonl, when there is one
    attributes: list[str]
    filenames: list[str]
    labels: np.ndarray  # float32 0/1 [N, A] for `attributes`
    probs: np.ndarray  # float32 [N, A]
    images: np.ndarray  # uint8 [N, H, W, 3], the model's input frames
    group_labels: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class _Predicted:
    """One split's decoded images, labels and probabilities."""

    split: Any
    filenames: list[str]
    labels: np.ndarray
    probs: np.ndarray
    images: np.ndarray
    n_skipped: int
    seconds: float
    identities: np.ndarray | None = None  # per kept row; None when the data has no identity file
    n_swapped: int = 0  # images whose collar came from another (--swap-clothes)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _run_fields(cfg: Any, path: Path, meta: dict[str, Any], seed: int) -> dict[str, Any]:
    """The fields every evaluation JSON opens with, whatever the data: which model, on what."""
    return {
        "schema_version": SCHEMA_VERSION,
        "model": str(cfg.model),
        "checkpoint": str(path),
        "architecture": meta["model"]["name"],
        "output": meta.get("output", "sigmoid"),
        "data_root": str(cfg.data_root),
        "split": cfg.split,
        "limit": cfg.limit,
        "seed": seed,
    }


def _check_config(cfg: EvalConfig) -> None:
    """Reject bad option values before any expensive work."""
    if cfg.calibrate and cfg.calibrate not in OBJECTIVES:
        raise FaceattrError(
            f"unknown calibration objective '{cfg.calibrate}'{did_you_mean(cfg.calibrate, OBJECTIVES)}; "
            f"choose from: {', '.join(OBJECTIVES)}"
        )
    if not cfg.balanced_weight >= 0:
        raise FaceattrError(f"balanced weight must be >= 0 (0: plain accuracy), got {cfg.balanced_weight}")
    if cfg.batch_size <= 0:
        raise FaceattrError(f"batch size must be > 0, got {cfg.batch_size}")
    if cfg.limit < 0:
        raise FaceattrError(f"limit must be >= 0 (0: every image), got {cfg.limit}")
    if cfg.swap_clothes and cfg.calibrate:
        raise FaceattrError("--swap-clothes measures a model as it is; calibrate in a separate run without it")


def _swap_clothes(images: np.ndarray, labels: np.ndarray, pre: Any, seed: int) -> tuple[np.ndarray, int]:
    """Give each image the collar rows of an opposite-sex partner with the same band labels (column 0: Male)."""
    from faceattr.data.augment import COLLAR_ROW, swap_collars
    from faceattr.data.transforms import ALIGNED_SIZE

    y0, y1 = (0, ALIGNED_SIZE[0]) if pre.crop is None else (pre.crop[1], pre.crop[3])
    if COLLAR_ROW >= y1:
        raise FaceattrError(
            f"--swap-clothes: this model's input crop ends at row {y1} of the aligned frame, above the collar "
            f"(row {COLLAR_ROW}), so it never sees clothing; evaluate it without --swap-clothes"
        )
    start = max(0.0, (COLLAR_ROW - y0) / (y1 - y0))
    return swap_collars(images, labels, start, male=0, keep=range(1, labels.shape[1]), seed=seed)


def _model_attributes(meta: dict[str, Any], path: Path) -> list[str]:
    attrs = meta.get("attributes")
    if not isinstance(attrs, list) or not attrs or not all(isinstance(a, str) for a in attrs):
        raise FaceattrError(f"{path} has no attribute list in its metadata; it was not written by `faceattr train`")
    return attrs


def _select_attributes(requested: list[str], model_attrs: list[str], data_attrs: list[str], path: Path) -> list[str]:
    """The evaluated attributes: all the model predicts, or the requested subset of them."""
    if not requested:
        return list(model_attrs)
    lower_model = {a.lower() for a in model_attrs}
    data_lookup = {a.lower(): a for a in data_attrs}
    for name in requested:
        key = name.strip().lower()
        if key not in lower_model and key in data_lookup:
            raise FaceattrError(
                f"the model {path.name} does not predict '{data_lookup[key]}' (it is in the data, not in the model); "
                f"it predicts: {', '.join(model_attrs)}"
            )
    chosen = set(resolve_names(requested, model_attrs, "attribute"))
    return [a for a in model_attrs if a in chosen]  # model order, whatever order they were asked in


def _select_subgroups(requested: list[str] | None, data_attrs: list[str], root: str) -> list[str]:
    if requested is None:
        present = [a for a in DEFAULT_SUBGROUPS if a in data_attrs]
        if len(present) < len(DEFAULT_SUBGROUPS):
            logger.warning("the data at %s lacks %s: no subgroup slice for it", root,
                           ", ".join(a for a in DEFAULT_SUBGROUPS if a not in data_attrs))
        return present
    return resolve_names(requested, data_attrs, "subgroup attribute")


def _load_split(cfg: EvalConfig, split: str, attributes: list[str], seed: int, flag: str = "--split") -> Any:
    from faceattr.data import load_celeba

    try:
        return load_celeba(
            cfg.data_root,
            split=split,
            attributes=attributes,
            layout=cfg.layout,
            limit=cfg.limit,
            seed=seed,
            holdout_fraction=cfg.holdout_fraction,
        )
    except FaceattrError as e:
        if "has no images" in str(e):
            # The shared subset has no 'test' images at all; say what to run instead.
            use_valid = f"use 'valid' ({flag} valid), or " if split != "valid" else ""
            raise FaceattrError(
                f"split '{split}' of {cfg.data_root} has no images; {use_valid}carve an "
                f"identity-disjoint holdout out of train (--holdout-fraction 0.1 {flag} holdout)"
            ) from None
        raise


def _predict(cfg: EvalConfig, split: Any, model: Any, meta: dict[str, Any], columns: list[int], device: Any,
             swap_columns: list[int] | None = None, seed: int = 0) -> _Predicted:
    """Decode `split` once into the cache, run the model over it, keep the readable rows.

    `swap_columns` (Male, then the band's labels, as columns of the split's labels) turns on --swap-clothes.
    """
    import torch

    from faceattr.data.cache import build_cache
    from faceattr.data.transforms import Preprocess, normalize_batch
    from faceattr.infer.backends import OnnxBackend
    from faceattr.runtime import logits_to_probs, predict_logits

    pre = Preprocess.from_dict(meta["preprocess"])
    cache = build_cache(split.paths, pre, cache_dir=cfg.cache_dir or None, workers=cfg.workers, progress=cfg.progress)
    valid = np.asarray(cache.valid, dtype=bool)
    keep = np.flatnonzero(valid)
    if keep.size < len(valid):
        logger.warning("split '%s': %d of %d images could not be decoded and are left out",
                       split.split, len(valid) - keep.size, len(valid))
    if keep.size == 0:
        raise FaceattrError(f"no readable images in split '{split.split}' under {cfg.data_root}")
    images = cache.images if keep.size == len(valid) else cache.images[keep]
    n_swapped = 0
    if swap_columns is not None:
        images, n_swapped = _swap_clothes(images, np.asarray(split.labels)[keep][:, swap_columns], pre, seed)
        logger.info("--swap-clothes: %d of %d images got the collar of a person of the other sex", n_swapped, len(images))
    if cfg.grayscale:
        from faceattr.data.transforms import grayscale_images

        images = grayscale_images(images)
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(images), desc=f"evaluate {split.split}", unit="img", file=sys.stderr,
                   dynamic_ncols=True, leave=False)
    t0 = time.perf_counter()
    try:
        if isinstance(model, OnnxBackend):  # uint8 frames in, normalisation in its graph
            chunks = []
            for start in range(0, len(images), cfg.batch_size):
                chunk = images[start : start + cfg.batch_size]
                chunks.append(model.logits(chunk, batch_size=cfg.batch_size, flip=cfg.flip))
                if bar is not None:
                    bar.update(len(chunk))
            logits = np.concatenate(chunks)
        else:
            logits = predict_logits(model, images, lambda x: normalize_batch(x, pre), batch_size=cfg.batch_size,
                                    device=device, flip=cfg.flip, progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    if meta.get("age"):
        # The last output is standardised age, not an attribute: CelebA has no ages to score it on.
        n_attrs = len(meta["attributes"])
        if logits.shape[1] != n_attrs + 1:
            raise FaceattrError(f"the model returned {logits.shape[1]} outputs for {n_attrs} attributes and age; "
                                "its checkpoint metadata does not match its weights")
        logits = np.ascontiguousarray(logits[:, :-1])
    probs = logits_to_probs(torch.from_numpy(logits), meta.get("output", "sigmoid")).numpy()
    return _Predicted(
        split=split,
        filenames=[split.filenames[i] for i in keep],
        labels=np.asarray(split.labels[keep], dtype=np.float32),
        probs=np.ascontiguousarray(probs[:, columns], dtype=np.float32),
        images=images,
        n_skipped=int(len(valid) - keep.size),
        seconds=seconds,
        identities=None if split.identities is None else np.asarray(split.identities)[keep],
        n_swapped=n_swapped,
    )


def _overlap_warnings(split: str, cfg: EvalConfig, seed: int, meta: dict[str, Any], what: str) -> list[str]:
    """Warnings when `split` holds images the model was trained on."""
    data = ((meta.get("config") or {}).get("data") or {}) if isinstance(meta.get("config"), dict) else {}
    if not data:
        return []
    train_split = data.get("train_split", "train")
    trained_holdout = float(data.get("holdout_fraction", 0.0) or 0.0)
    train_seed = int((meta.get("config") or {}).get("seed", 0))
    out: list[str] = []
    if split in (train_split, "all"):
        out.append(f"the {what} split '{split}' holds the model's training images: its numbers are not a test result")
    elif split == "holdout" and (cfg.holdout_fraction > trained_holdout or seed != train_seed):
        out.append(
            f"the {what} split 'holdout' (fraction {cfg.holdout_fraction}, seed {seed}) is not the holdout the model "
            f"was trained without (fraction {trained_holdout}, seed {train_seed}): some of its images were trained on"
        )
    return out


def _is_shipped(path: Path) -> bool:
    from faceattr.checkpoint import shipped_models_dir

    try:
        return path.resolve().is_relative_to(shipped_models_dir().resolve())
    except OSError:
        return False


def _check_attributes_in_data(model_attrs: list[str], data_attrs: list[str], path: Path, root: str) -> None:
    missing = [a for a in model_attrs if a not in data_attrs]
    if missing:
        hint = did_you_mean(missing[0], data_attrs)
        raise FaceattrError(
            f"checkpoint {path} predicts attribute(s) the data at {root} does not label: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}{hint}; evaluate it on data with those "
            f"labels, or pass --attributes with a subset the data has"
        )


def _load_model(cfg: EvalConfig, path: Path, device: str) -> Any:
    """The checkpoint's ONNX Runtime session where `cfg.backend` picks it, else its torch model."""
    from faceattr.infer import load
    from faceattr.infer.backends import onnx_backend

    # `predict`'s own rule, and its one load: a stale or damaged export is an error with --backend onnx and,
    # with auto, a warning and the torch model it loaded instead.
    am = load(path, device=device, backend=cfg.backend, spin=False)
    ob = onnx_backend(am)
    if ob is not None:
        logger.info("evaluating %s with ONNX Runtime (%s)", path.name, ob.path)
        return ob
    return am.backend.model


def evaluate_model(cfg: EvalConfig) -> Evaluation:
    """Evaluate `cfg.model` on `cfg.split` of `cfg.data_root`; optionally calibrate and store thresholds."""
    from faceattr.checkpoint import read_metadata, resolve_checkpoint, versions
    from faceattr.data import read_attribute_names
    from faceattr.infer.backends import OnnxBackend
    from faceattr.infer.model import update_metadata
    from faceattr.runtime import resolve_device

    _check_config(cfg)
    t_start = time.perf_counter()
    path = resolve_checkpoint(cfg.model)
    meta = read_metadata(path)  # cheap: checks the file and the attributes before loading weights
    model_attrs = _model_attributes(meta, path)
    data_attrs = read_attribute_names(cfg.data_root, cfg.layout)
    attributes = _select_attributes(cfg.attributes, model_attrs, data_attrs, path)
    _check_attributes_in_data(attributes, data_attrs, path, cfg.data_root)
    subgroups = _select_subgroups(cfg.subgroups, data_attrs, cfg.data_root)
    train_cfg: dict[str, Any] = meta["config"] if isinstance(meta.get("config"), dict) else {}
    seed = int(train_cfg.get("seed", 0)) if cfg.seed < 0 else cfg.seed
    if cfg.holdout_fraction < 0:
        # The training run's own holdout, so 'holdout' means images the model never trained on.
        from dataclasses import replace

        trained = float((train_cfg.get("data") or {}).get("holdout_fraction", 0.0) or 0.0)
        cfg = replace(cfg, holdout_fraction=trained)

    device = resolve_device(cfg.device)
    # The metadata stays the checkpoint's own, read above (its thresholds), whichever backend runs it.
    model = _load_model(cfg, path, str(device))
    columns = [model_attrs.index(a) for a in attributes]
    # Subgroup labels ride along in the same load; they need not be predicted by the model.
    load_attrs = attributes + [g for g in subgroups if g not in attributes]
    swap_columns: list[int] | None = None
    if cfg.swap_clothes:
        from faceattr.data.augment import CONTEXT_LABELS

        if "Male" not in data_attrs:
            raise FaceattrError(f"--swap-clothes pairs images of the other sex, but the data at {cfg.data_root} has no Male labels")
        wanted = ["Male", *[a for a in CONTEXT_LABELS if a in data_attrs]]
        load_attrs += [a for a in wanted if a not in load_attrs]
        swap_columns = [load_attrs.index(a) for a in wanted]
    # The model card's shortcut check needs the true Male and Wearing_Lipstick labels beside Male's output.
    shortcut = "Male" in attributes and "Wearing_Lipstick" in data_attrs
    if shortcut:
        load_attrs += [a for a in ("Male", "Wearing_Lipstick") if a not in load_attrs]
    if meta.get("age"):
        logger.info("the model also estimates age; CelebA has no ages, so only its attributes are evaluated "
                    "(evaluate it on UTKFace for age)")

    split = _load_split(cfg, cfg.split, load_attrs, seed)
    cal_split = cfg.calibrate_split or ("holdout" if cfg.holdout_fraction > 0 else "valid")
    cal_data = None
    if cfg.calibrate and cal_split != cfg.split:
        # Annotations only, before any decoding: a bad calibration split fails in a second, not minutes.
        cal_data = _load_split(cfg, cal_split, attributes, seed, "--calibrate-split")
    ev = _predict(cfg, split, model, meta, columns, device, swap_columns, seed)
    labels = ev.labels[:, : len(attributes)]
    groups = {g: ev.labels[:, load_attrs.index(g)] for g in subgroups}
    lipstick: dict[str, np.ndarray] = {}
    if shortcut:
        lipstick = {"male": ev.labels[:, load_attrs.index("Male")], "prob": ev.probs[:, attributes.index("Male")],
                    "lipstick": ev.labels[:, load_attrs.index("Wearing_Lipstick")]}
    warnings_: list[str] = _overlap_warnings(cfg.split, cfg, seed, meta, "evaluation")

    result: dict[str, Any] = {
        **_run_fields(cfg, path, meta, seed),
        "holdout_fraction": cfg.holdout_fraction,
        "flip": cfg.flip,
        "grayscale": cfg.grayscale,
        "swap_clothes": cfg.swap_clothes,
        "n_swapped": ev.n_swapped,
        "n_images": len(labels),
        "n_skipped": ev.n_skipped,
        "attributes": attributes,
        "subgroup_attributes": subgroups,
        "dataset": "celeba",
        "predicts_age": bool(meta.get("age")),  # its age output, if any, is not scored on CelebA
    }
    block = metric_block(labels, ev.probs, attributes, 0.5)
    result.update(block)
    result["subgroups"] = subgroup_metrics(labels, ev.probs, attributes, 0.5, groups)
    result["lipstick_shortcut"] = (lipstick_shortcut(lipstick["male"], lipstick["prob"], lipstick["lipstick"], 0.5)
                                   if lipstick else None)

    calibration: dict[str, Any] | None = None
    thresholds: np.ndarray | None = None
    if cfg.calibrate:
        cal = ev if cal_data is None else _predict(cfg, cal_data, model, meta, columns, device)
        cal_labels, cal_probs, cal_n = cal.labels[:, : len(attributes)], cal.probs, len(cal.labels)
        if cal_data is not None:
            warnings_ += _overlap_warnings(cal_split, cfg, seed, meta, "calibration")
        weight = cfg.balanced_weight
        thresholds, scores = calibrate_thresholds(cal_labels, cal_probs, cfg.calibrate, balanced_weight=weight)
        gain = (calibration_gain(cal_labels, cal_probs, cal.identities, cfg.calibrate, balanced_weight=weight)
                if cal.identities is not None else None)
        if gain is not None and gain <= 0:
            warnings_.append(
                f"thresholds calibrated on half of the '{cal_split}' people score {gain:+.4f} {cfg.calibrate} against 0.5 "
                "on the other half: they fit these images rather than the task; check them against 0.5 on another split "
                "before relying on them (--no-save-thresholds calibrates without storing)"
            )
        calibration = {
            "source": "this evaluation",
            "objective": cfg.calibrate,
            "balanced_weight": cfg.balanced_weight if cfg.calibrate == "mixed" else None,
            "split": cal_split,
            "n_images": int(cal_n),
            "limit": cfg.limit,
            "holdout_fraction": cfg.holdout_fraction,
            "seed": seed,
            "thresholds": {a: float(t) for a, t in zip(attributes, thresholds, strict=True)},
            "calibration_scores": dict(zip(attributes, scores, strict=True)),
            # Mean gain over 0.5 on held-out halves of the calibration people (None: too few people).
            "cross_validated_gain": gain,
            "created": _now(),
        }
        saved = False
        if not cfg.save_thresholds:
            logger.info("thresholds not saved (save_thresholds off)")
        elif _is_shipped(path):
            logger.warning("thresholds not saved into the shipped model %s; copy it to calibrate it", path)
        else:
            stored = meta.get("thresholds") or [0.5] * len(model_attrs)
            full = [float(t) for t in stored]
            for a, t in zip(attributes, thresholds, strict=True):
                full[model_attrs.index(a)] = float(t)
            # Through infer's update_metadata: a current ONNX export beside the checkpoint gets the same
            # thresholds, so `predict` and `evaluate` keep running it instead of falling back to torch.
            update_metadata(path, {"thresholds": full, "calibration": {k: v for k, v in calibration.items() if k != "source"}})
            saved = True
            logger.info("saved calibrated thresholds into %s", path)
        calibration["saved"] = saved
    elif meta.get("thresholds"):
        stored = [float(t) for t in meta["thresholds"]]
        thresholds = np.array([stored[model_attrs.index(a)] for a in attributes])
        info: dict[str, Any] = meta["calibration"] if isinstance(meta.get("calibration"), dict) else {}
        calibration = {
            "source": "checkpoint",
            **info,
            "thresholds": {a: float(t) for a, t in zip(attributes, thresholds, strict=True)},
            "saved": True,
        }
        calibration.setdefault("split", None)
        calibration.setdefault("objective", None)

    if calibration is not None and thresholds is not None:
        same = calibration.get("split") == cfg.split
        calibration["same_split_as_evaluation"] = same
        calibration["warning"] = None
        if same:
            msg = (
                f"thresholds were calibrated on '{cfg.split}', the same split these metrics are reported on, so the "
                f"calibrated numbers are optimistic (tuned on the test data); calibrate on a holdout instead "
                f"(--holdout-fraction 0.1 --calibrate-split holdout)"
            )
            calibration["warning"] = msg
            warnings_.append(msg)
        cal_block = metric_block(labels, ev.probs, attributes, thresholds)
        cal_block["subgroups"] = subgroup_metrics(labels, ev.probs, attributes, thresholds, groups)
        cal_block["lipstick_shortcut"] = (lipstick_shortcut(lipstick["male"], lipstick["prob"], lipstick["lipstick"],
                                                            float(thresholds[attributes.index("Male")]))
                                          if lipstick else None)
        result["calibrated"] = cal_block
    else:
        result["calibrated"] = None
    result["calibration"] = calibration

    for w in warnings_:
        logger.warning("!!! %s", w)
    result["warnings"] = warnings_
    result["device"] = str(device)
    result["backend"] = "onnx" if isinstance(model, OnnxBackend) else "torch"
    result["images_per_s"] = round(len(labels) / max(ev.seconds, 1e-9), 2)
    result["seconds"] = round(time.perf_counter() - t_start, 2)
    result["created"] = _now()
    result["versions"] = {k: str(v) for k, v in versions().items()}  # TorchVersion is a str subclass JSON tools reject

    run_dir = path.parent if (path.parent / "log.jsonl").is_file() else None
    return Evaluation(
        result=result,
        checkpoint=path,
        run_dir=run_dir,
        attributes=attributes,
        filenames=ev.filenames,
        labels=labels,
        probs=ev.probs,
        images=ev.images,
        group_labels=groups,
    )


def write_json(result: dict[str, Any], path: str | Path) -> None:
    """Write an evaluation result as JSON to `path` ('-': stdout) atomically."""
    text = json.dumps(result, indent=2, allow_nan=False) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(p, e, "evaluation JSON") from None
    atomic_write(p, text, "evaluation JSON")  # a full disk leaves the previous JSON whole and no temp file
