"""Training as plain functions: `fit(cfg) -> run folder`, built from `train_one_epoch` and `validate`.

A run folder holds everything needed to understand and continue a run:
``config.toml`` (resolved config), ``log.jsonl`` and ``log.csv`` (one row per epoch),
``best.safetensors`` (best validation mean accuracy), ``last.safetensors`` (resumable: weights,
optimiser state and progress, written every ``checkpoint_every`` steps and at each epoch end) and
``summary.json``. Randomness is derived from (seed, epoch, step), so ``--resume`` after a kill
continues exactly where the last checkpoint left off.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from faceattr.checkpoint import load_tensors, read_metadata, save_checkpoint
from faceattr.config import TrainConfig, config_from_dict, config_to_dict, save_config
from faceattr.errors import FaceattrError, did_you_mean
from faceattr.runtime import predict_logits, resolve_device
from faceattr.train import distributed
from faceattr.train.distributed import World
from faceattr.train.sources import AGE_MEAN, AGE_STD

__all__ = ["fit", "train_one_epoch", "validate", "lr_factor", "prepare_run", "Run"]

logger = logging.getLogger(__name__)

# Keys a resumed run may change; anything else would no longer be the same run.
_RESUMABLE_CHANGES = {"epochs", "max_steps", "progress", "device", "threads", "checkpoint_every", "eval_batch_size",
                      "compile"}


def _seed_for(*parts: int | str) -> int:
    """A stable 63-bit seed from integers (Python's hash() is salted per process)."""
    h = hashlib.blake2b(b"/".join(str(p).encode() for p in parts), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def lr_factor(schedule: str, step: int, total: int, *, warmup_fraction: float, steps_per_epoch: int,
              cyclic_base: float) -> float:
    """Learning-rate multiplier at `step` of `total` for the named schedule.

    A pure function of the step (instead of a stateful torch scheduler) keeps resume exact and
    the checkpoint free of pickled scheduler objects.
    """
    if schedule == "none":
        return 1.0
    if schedule == "cyclic":
        # Triangular cycles of one epoch: base -> max over half an epoch, then back.
        half = max(1, steps_per_epoch // 2)
        pos = (step % (2 * half)) / half
        tri = pos if pos <= 1 else 2 - pos
        return cyclic_base + (1 - cyclic_base) * tri
    warm = int(round(warmup_fraction * total))
    start = 0.04 if schedule == "onecycle" else 0.0
    if step < warm:
        return start + (1 - start) * (step + 1) / warm
    if schedule in ("cosine", "onecycle"):
        t = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    raise FaceattrError(f"unknown scheduler '{schedule}'; use cyclic, onecycle, cosine or none")


@dataclass
class Run:
    """Everything `fit` sets up before the first step."""

    cfg: TrainConfig
    out: Path
    device: torch.device
    model: nn.Module
    attributes: list[str]
    output: str
    preprocess: Any
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray | None
    val_labels: np.ndarray | None
    criterion: nn.Module
    pos_weight: torch.Tensor | None
    history: list[dict[str, Any]] = field(default_factory=list)
    last_source_losses: dict[str, float] = field(default_factory=dict)  # of the epoch just trained
    frozen_prefix: int = 0  # stages whose outputs are cached in `train_features` (cache_frozen)
    train_features: np.ndarray | None = None  # float16 [views, N, C, h, w]; view 1 = mirrored image
    train_targets: np.ndarray | None = None  # float32 [N, A] soft targets (distillation); None: the labels
    balance_column: int = -1  # attribute whose loss term is group-balanced (balance.attribute)
    balance_weights: np.ndarray | None = None  # float32 [N] weights of that term, mean 1
    attribute_weight: torch.Tensor | None = None  # float32 [A] (cfg.attribute_weights); None: all 1
    # Multi-source runs (data.sources): labels hold NaN where a row's source does not label the
    # attribute; age (years, NaN = unknown) feeds one more output after the attributes.
    sources: Any = None  # train SourceData (faceattr.train.sources), None for a single CelebA folder
    val_sources: Any = None
    train_age: np.ndarray | None = None
    val_age: np.ndarray | None = None
    world: World = field(default_factory=World)  # torchrun: this rank's place in the job; World() alone
    ddp: Any = None  # torchrun: DistributedDataParallel for training steps; `model` stays what is saved
    compiled: Any = None  # torch.compile(model) for training steps (cfg.compile); `model` stays what is saved

    @property
    def masked(self) -> bool:
        """True when labels may be missing (NaN) and the loss must mask them."""
        return self.sources is not None

    @property
    def has_age(self) -> bool:
        """True when the model has an age output (the last one)."""
        return self.train_age is not None


def _attribute_weight(cfg: TrainConfig, attributes: list[str], device: torch.device) -> torch.Tensor | None:
    """cfg.attribute_weights as a per-output tensor [A] (1 where not named), or None when none is set."""
    if not cfg.attribute_weights:
        return None
    unknown = [a for a in cfg.attribute_weights if a not in attributes]
    if unknown:
        raise FaceattrError(f"attribute_weights names {unknown[0]!r}, which this run does not train"
                            f"{did_you_mean(unknown[0], attributes)}; name attributes from its list")
    bad = {a: w for a, w in cfg.attribute_weights.items() if w < 0}
    if bad:
        raise FaceattrError(f"attribute_weights must be >= 0, got {bad}; use 0 to leave an attribute out of the loss")
    w = torch.tensor([cfg.attribute_weights.get(a, 1.0) for a in attributes], dtype=torch.float32)
    if float(w.sum()) <= 0:
        raise FaceattrError("attribute_weights leaves every attribute at weight 0; nothing would train")
    return w.to(device)


def _build_criterion(cfg: TrainConfig, labels: np.ndarray, device: torch.device) -> tuple[nn.Module, torch.Tensor | None]:
    if cfg.loss == "ce":
        return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing), None
    if cfg.loss == "bce":
        return nn.BCEWithLogitsLoss(), None
    if cfg.loss == "bce_weighted":
        # pos_weight = negatives / positives per attribute, from the training labels, so rare
        # attributes (Bald: ~2%) are not drowned out; clamped so an almost-absent one can't explode.
        pos = np.nanmean(labels, axis=0).clip(1e-3, 1 - 1e-3)
        pw = torch.tensor((1 - pos) / pos, dtype=torch.float32).clamp(max=50.0).to(device)
        return nn.BCEWithLogitsLoss(pos_weight=pw), pw
    raise FaceattrError(f"unknown loss '{cfg.loss}'; use bce, bce_weighted or ce")


def _targets(labels: torch.Tensor, loss: str, smoothing: float) -> torch.Tensor:
    if loss == "ce":
        return labels[:, 0].long()
    if smoothing > 0:
        return labels * (1 - smoothing) + 0.5 * smoothing
    return labels


def _load_split(cfg: TrainConfig, split: str, limit: int) -> Any:
    from faceattr.data import load_celeba

    return load_celeba(
        cfg.data.root,
        split=split,
        attributes=cfg.data.attributes or None,
        layout=cfg.data.layout,
        limit=limit,
        seed=cfg.seed,
        holdout_fraction=cfg.data.holdout_fraction,
    )


def _cached(split: Any, pre: Any, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode a split once into the uint8 cache; drop unreadable images; returns (images, labels, kept rows)."""
    from faceattr.data.cache import build_cache

    cache = build_cache(split.paths, pre, cache_dir=cfg.data.cache_dir or None, workers=cfg.data.workers,
                        progress=cfg.progress)
    images, labels = cache.images, split.labels
    keep = np.arange(len(labels))
    if not cache.valid.all():
        keep = np.flatnonzero(cache.valid)
        logger.warning("%s: skipping %d unreadable image(s) of %d", split.split, len(cache.valid) - len(keep), len(cache.valid))
        images, labels = images[keep], labels[keep]
    if len(labels) == 0:
        raise FaceattrError(f"no readable images in split '{split.split}' under {cfg.data.root}")
    return images, labels, keep


def prepare_run(cfg: TrainConfig) -> Run:
    """Resolve device, data, caches, model and loss for `cfg`."""
    from faceattr.data.transforms import Preprocess
    from faceattr.models import create_model, get_spec

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    spec = get_spec(cfg.model.name)
    size = tuple(cfg.model.image_size) if cfg.model.image_size else tuple(spec.input_size)
    if len(size) != 2:
        raise FaceattrError(f"model.image_size must be [height, width], got {list(size)}")
    crop = tuple(cfg.model.crop) if cfg.model.crop else None
    if crop is not None and len(crop) != 4:
        raise FaceattrError(f"model.crop must be [x0, y0, x1, y1], got {list(crop)}")
    pre = Preprocess(size=size, crop=crop, mean=tuple(spec.mean), std=tuple(spec.std))  # type: ignore[arg-type]

    if cfg.data.sources:
        return _prepare_multi(cfg, device, spec, pre)
    train_split = _load_split(cfg, cfg.data.train_split, cfg.data.limit)
    attributes = list(train_split.attributes)
    if cfg.loss == "ce" and len(attributes) != 1:
        raise FaceattrError(f"loss 'ce' (two-class softmax) trains one attribute; got {len(attributes)}: pass exactly one with --attributes")
    if cfg.loss == "ce" and cfg.attribute_weights:
        raise FaceattrError("attribute_weights weighs the terms of a multi-label loss; loss 'ce' trains one attribute, so leave it empty")
    # Refused before the images are decoded: both need a multi-label (BCE) loss.
    if cfg.distill.teachers and cfg.loss == "ce":
        raise FaceattrError("distillation trains towards teacher probabilities with BCE; use loss 'bce' or 'bce_weighted', not 'ce'")
    if cfg.balance.attribute and cfg.loss == "ce":
        raise FaceattrError("balance reweights one attribute of a multi-label (BCE) loss; use loss 'bce' or 'bce_weighted'")
    if cfg.augment.context_swap > 0.0 and cfg.loss == "ce":
        from faceattr.data.augment import context_columns

        band_cols = context_columns(attributes)[1]
        if band_cols:
            raise FaceattrError(
                f"augment.context_swap hides {attributes[band_cols[0]]} (it lives in the swapped band), which loss "
                "'ce' cannot leave out; use --loss bce or set augment.context_swap=0"
            )
    train_images, train_labels, kept = _cached(train_split, pre, cfg)
    val_images = val_labels = None
    if cfg.data.val_split != "none":
        val_split = _load_split(cfg, cfg.data.val_split, cfg.data.val_limit)
        val_images, val_labels, _ = _cached(val_split, pre, cfg)
    train_targets = None
    if cfg.distill.teachers:
        from faceattr.train.distill import soft_targets

        paths = [train_split.paths[i] for i in kept]
        train_targets = soft_targets(cfg, paths, np.asarray(train_labels, dtype=np.float32), attributes, device)

    balance_column, balance_weights = -1, None
    if cfg.balance.attribute:
        from faceattr.train.balance import group_weights

        balance_column, balance_weights = group_weights(np.asarray(train_labels), attributes, cfg.balance)
    criterion, pos_weight = _build_criterion(cfg, train_labels, device)
    torch.manual_seed(cfg.seed)  # the head's (and a scratch backbone's) initial weights
    output = "softmax" if cfg.loss == "ce" else "sigmoid"
    num_outputs = 2 if output == "softmax" else len(attributes)
    # A warm start replaces the ImageNet weights, so don't load them first.
    model = create_model(cfg.model.name, num_outputs=num_outputs, pretrained=cfg.model.pretrained and not cfg.model.init_from,
                         hidden=cfg.model.hidden, dropout=cfg.model.dropout).to(device)
    if cfg.model.init_from:
        from faceattr.train.distill import load_initial_weights

        load_initial_weights(model, cfg.model.init_from, cfg.model.name, attributes, output)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    run = Run(cfg=cfg, out=Path(cfg.out), device=device, model=model, attributes=attributes, output=output,
              preprocess=pre, train_images=train_images, train_labels=train_labels, val_images=val_images,
              val_labels=val_labels, criterion=criterion, pos_weight=pos_weight, train_targets=train_targets,
              balance_column=balance_column, balance_weights=balance_weights,
              attribute_weight=None if output == "softmax" else _attribute_weight(cfg, attributes, device))
    if cfg.model.cache_frozen:
        _cache_frozen_features(run)
    return run


def _prepare_multi(cfg: TrainConfig, device: torch.device, spec: Any, pre: Any) -> Run:
    """`prepare_run` for `data.sources`: several folders, masked labels, an age output when one labels age."""
    from faceattr.models import create_model
    from faceattr.train.sources import load_sources

    if cfg.loss == "ce":
        raise FaceattrError("several sources train a multi-label model with masked BCE; use loss 'bce' or 'bce_weighted', not 'ce'")
    if cfg.balance.attribute:
        raise FaceattrError("balance works on one CelebA folder; leave it out of a data.sources run "
                            "(balance sampling with data.sources[].balance instead)")
    train = load_sources(cfg, pre, "train")
    val = load_sources(cfg, pre, "val") if cfg.data.val_split != "none" else None
    attributes = train.attributes
    train_targets = None
    if cfg.distill.teachers:
        from faceattr.train.distill import source_soft_targets

        train_targets = source_soft_targets(cfg, train, device)
    criterion, pos_weight = _build_criterion(cfg, train.labels, device)
    torch.manual_seed(cfg.seed)
    num_outputs = len(attributes) + (1 if train.age is not None else 0)
    model = create_model(cfg.model.name, num_outputs=num_outputs, pretrained=cfg.model.pretrained and not cfg.model.init_from,
                         hidden=cfg.model.hidden, dropout=cfg.model.dropout).to(device)
    if cfg.model.init_from:
        from faceattr.train.distill import load_initial_weights

        load_initial_weights(model, cfg.model.init_from, cfg.model.name, attributes, "sigmoid")
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    run = Run(cfg=cfg, out=Path(cfg.out), device=device, model=model, attributes=attributes, output="sigmoid",
              preprocess=pre, train_images=train.images, train_labels=train.labels,  # type: ignore[arg-type]
              val_images=None if val is None else val.images, val_labels=None if val is None else val.labels,  # type: ignore[arg-type]
              criterion=criterion, pos_weight=pos_weight, train_targets=train_targets, sources=train, val_sources=val,
              train_age=train.age,
              val_age=None if val is None else val.age, attribute_weight=_attribute_weight(cfg, list(attributes), device))
    if cfg.model.cache_frozen:
        _cache_frozen_features(run)
    return run


def masked_losses(run: Run, logits: torch.Tensor, y: torch.Tensor, age: torch.Tensor | None,
                  unknown: torch.Tensor | None = None, *, across_ranks: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch loss, per-row loss) with missing labels (NaN) masked out.

    The attribute part is the mean over attributes of each one's BCE over the rows that label it, so
    a source that labels one attribute (UTKFace: Male) weighs in that attribute as much as any other
    row does; age adds `age_weight` x smooth L1 of the standardised age over the rows that have one.

    With `across_ranks` under torchrun, the rows that label each attribute (and have an age) are counted
    over the whole global batch and the loss is scaled by the world size, so DDP's mean of the ranks'
    gradients is the gradient of the global batch's loss, as in one process.
    """
    a = len(run.attributes)
    known = ~torch.isnan(y)
    if unknown is not None:
        known &= ~unknown.to(known.device)
    per = nn.functional.binary_cross_entropy_with_logits(logits[:, :a], torch.nan_to_num(y), pos_weight=run.pos_weight,
                                                         reduction="none") * known
    counts = known.sum(0)
    has = ~torch.isnan(age) if run.has_age and age is not None else None
    n_age = None if has is None else has.sum()
    scale = 1
    if across_ranks and run.world.distributed:
        total = distributed.all_reduce_tensor_sum(counts if n_age is None else torch.cat([counts, n_age.view(1)]), run.world)
        counts, n_age = total[:a], (None if n_age is None else total[a])
        scale = run.world.world_size  # DDP averages the ranks' gradients
    # A weighted mean over attributes (cfg.attribute_weights); all weights 1 without them.
    w = per.new_ones(a) if run.attribute_weight is None else run.attribute_weight
    loss = (per.sum(0) / counts.clamp(min=1) * w).sum() / w.sum() * scale
    row = (per * w).sum(1) / (known * w).sum(1).clamp(min=1e-6)
    if has is not None and n_age is not None:
        err = nn.functional.smooth_l1_loss(logits[:, a], (torch.nan_to_num(age) - AGE_MEAN) / AGE_STD, beta=0.1,
                                           reduction="none") * has
        if bool(n_age > 0):
            loss = loss + run.cfg.age_weight * err.sum() / n_age * scale
        row = row + run.cfg.age_weight * err
    return loss, row


@torch.inference_mode()
def _cache_frozen_features(run: Run) -> None:
    """Run the frozen stages once over every training image (and its mirror); keep the outputs."""
    from faceattr.data.transforms import normalize_batch
    from faceattr.models import set_trainable

    cfg, model = run.cfg, run.model
    stages = model.stages  # type: ignore[attr-defined]
    k = cfg.model.finetune_stages
    if k < 0 or cfg.model.freeze_epochs > 0:
        raise FaceattrError("model.cache_frozen needs model.finetune_stages >= 0 (stages that train) and freeze_epochs = 0")
    run.frozen_prefix = len(stages) - k
    set_trainable(model, k)  # type: ignore[arg-type]
    prefix = nn.Sequential(*stages[: run.frozen_prefix]).eval()
    views = 2 if cfg.augment.hflip else 1
    n = len(run.train_labels)
    skipped = [name for name in ("crop_scale", "rotate", "scale", "color", "erase", "gray", "lowres", "context_swap")
               if getattr(cfg.augment, name) != (1.0 if name == "crop_scale" else 0.0)]
    if skipped:
        logger.info("cache_frozen: only horizontal flips augment cached features; skipping %s", ", ".join(skipped))
    feats: np.ndarray | None = None
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n * views, desc=f"caching {run.frozen_prefix} frozen stage(s)", unit="img", leave=False)
    bs = cfg.eval_batch_size
    for start in range(0, n, bs):
        x = torch.from_numpy(np.array(run.train_images[start : start + bs])).permute(0, 3, 1, 2)
        x = normalize_batch(x, run.preprocess).to(run.device)
        for v in range(views):
            f = prefix(torch.flip(x, dims=[3]) if v else x).to("cpu", torch.float16).numpy()
            if feats is None:
                feats = np.empty((views, n, *f.shape[1:]), dtype=np.float16)
            feats[v, start : start + len(f)] = f
            if bar is not None:
                bar.update(len(f))
    if bar is not None:
        bar.close()
    run.train_features = feats
    logger.info("cached frozen features %s (%.0f MB)", None if feats is None else feats.shape[1:],
                0 if feats is None else feats.nbytes / 2**20)


def _train_forward(run: Run) -> Any:
    """The module training steps call: the model, or with `compile` its torch.compile'd wrapper.

    Compiled once per run and kept on it; checkpoints keep saving `run.model` (same parameters,
    no `_orig_mod.` prefix).
    """
    if run.ddp is not None:  # torchrun (torch.compile is not applied under DDP yet)
        return run.ddp
    if not run.cfg.compile:
        return run.model
    if run.compiled is None:
        run.compiled = torch.compile(run.model)
    return run.compiled


class _FromFeatures(nn.Module):
    """The trainable rest of the forward pass from cached frozen-stage outputs, as a module DDP can wrap."""

    def __init__(self, run: Run) -> None:
        super().__init__()
        self.model = run.model  # registered, so DDP finds the parameters
        self.run = run

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """Cached features -> logits."""
        return _forward_from_features(self.run, f)


def _features_forward(run: Run) -> Any:
    """The training forward from cached features: through DDP under torchrun."""
    if run.ddp is not None:
        return run.ddp
    return lambda t: _forward_from_features(run, t)


def _wrap_for_ranks(run: Run) -> None:
    """Under torchrun, put the training forward into DDP; again whenever the trainable parameters change."""
    if run.world.distributed:
        run.ddp = distributed.wrap(run.model if run.train_features is None else _FromFeatures(run), run.world, run.device)
        if run.cfg.compile:
            logger.warning("compile: not applied under torchrun yet; training without torch.compile")


def _step_seed(run: Run, epoch: int, step: int, *extra: str) -> int:
    """The seed of a step's random draws (augmentation, dropout); under torchrun each rank has its own,
    so the ranks' rows, which are different images, don't all get the same flips and crops."""
    if run.world.distributed:
        return _seed_for(run.cfg.seed, epoch, step, *extra, "rank", run.world.rank)
    return _seed_for(run.cfg.seed, epoch, step, *extra)


def _forward_from_features(run: Run, f: torch.Tensor) -> torch.Tensor:
    """Finish the forward pass from cached frozen-stage outputs."""
    model = run.model
    for stage in model.stages[run.frozen_prefix :]:  # type: ignore[attr-defined]
        f = stage(f)
    return model.head(model.backbone.pool(f))  # type: ignore[attr-defined,operator]


def _train_loss(run: Run, logits: torch.Tensor, y: torch.Tensor, idx: np.ndarray,
                unknown: torch.Tensor | None = None) -> torch.Tensor:
    """The criterion, with one attribute's term reweighted per image when balance is on.

    `unknown` (bool [N, A]) marks labels the augmented image no longer shows; they add nothing.
    """
    if run.masked:
        age = None if run.train_age is None else torch.from_numpy(run.train_age[idx]).to(logits.device)
        return masked_losses(run, logits, y, age, unknown)[0]
    if run.balance_weights is None and unknown is None and run.attribute_weight is None:
        return run.criterion(logits, y)
    per = nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=run.pos_weight, reduction="none")
    w = torch.ones_like(per)
    if run.balance_weights is not None:
        w[:, run.balance_column] = torch.from_numpy(run.balance_weights[idx]).to(per.device)
    if unknown is not None:
        w = w * (~unknown).to(per.device, per.dtype)
    if run.attribute_weight is not None:  # a weighted mean over attributes: the mean when all are 1
        return (per * w * run.attribute_weight).sum() / (per.shape[0] * run.attribute_weight.sum())
    return (per * w).mean()


def _make_optimizer(run: Run, phase_frozen: bool) -> torch.optim.Optimizer:
    from faceattr.models import param_groups, set_trainable

    cfg = run.cfg
    if run.train_features is None:  # with cached features the split was fixed when caching
        set_trainable(run.model, 0 if phase_frozen else cfg.model.finetune_stages)  # type: ignore[arg-type]
    mult = cfg.model.finetune_lr_mult if cfg.model.pretrained or cfg.model.init_from else 1.0
    groups = param_groups(run.model, lr=cfg.optim.lr, backbone_lr_mult=mult,  # type: ignore[arg-type]
                          weight_decay=cfg.optim.weight_decay)
    for g in groups:
        g["initial_lr"] = g["lr"]
    name = cfg.optim.optimizer
    # On CUDA, one fused kernel per step instead of several per parameter; the CPU keeps the default
    # (foreach) implementation, whose numerics every resume test pins down.
    fused = {"fused": True} if run.device.type == "cuda" else {}
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.optim.lr, momentum=cfg.optim.momentum, nesterov=cfg.optim.momentum > 0, **fused)
    if name == "adam":
        return torch.optim.Adam(groups, lr=cfg.optim.lr, **fused)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.optim.lr, **fused)
    raise FaceattrError(f"unknown optimizer '{name}'; use sgd, adam or adamw")


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state dict into tensors and a JSON-safe rest (no pickles in checkpoints)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    for idx, kv in rest["scalars"].items():
        state.setdefault(int(idx), {}).update(kv)
    opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def _batches(n: int, batch_size: int, seed: int, epoch: int, start_step: int,
             sources: Any = None, world: World | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (step_in_epoch, sorted indices) for one epoch's fixed permutation, from `start_step` on.

    With several sources the epoch is drawn by their shares and balancing weights instead. Under
    torchrun (`world`) each rank gets its slice of every global batch of `batch_size`, so steps count
    global batches whatever the world size.
    """
    g = np.random.default_rng(_seed_for(seed, epoch))
    if sources is not None:
        from faceattr.train.sources import epoch_order

        perm = epoch_order(sources, g)
    else:
        perm = g.permutation(n)
    steps = _steps_for(n, batch_size)
    for s in range(start_step, steps):
        # Sorted indices read the memory-mapped cache in file order; order within a batch is irrelevant.
        batch = perm[s * batch_size : (s + 1) * batch_size]
        yield s, np.sort(batch if world is None else distributed.shard(batch, world))


def _steps_for(n: int, batch_size: int) -> int:
    """Full batches per epoch: the ragged tail is dropped because BatchNorm dislikes tiny batches."""
    return n // batch_size if n >= batch_size else 1


def _steps_per_epoch(run: Run) -> int:
    return _steps_for(len(run.train_labels), run.cfg.batch_size)


def _score(row: dict[str, Any]) -> float:
    """What 'best' means: validation mean accuracy, or lowest training loss when there is no validation."""
    return row.get("val_mean_accuracy", -row["train_loss"])


def _total_steps(run: Run) -> int:
    total = run.cfg.epochs * _steps_per_epoch(run)
    return min(total, run.cfg.max_steps) if run.cfg.max_steps > 0 else total


def _normalizer(run: Run):  # noqa: ANN202 - a small closure
    from faceattr.data.transforms import normalize_batch

    return lambda x: normalize_batch(x, run.preprocess)


@torch.inference_mode()
def validate(run: Run) -> dict[str, Any]:
    """Validation loss, mean accuracy at threshold 0.5, and per-attribute accuracy."""
    if run.val_images is None or run.val_labels is None:
        return {}
    images = run.val_images
    if run.world.distributed:  # each rank predicts its share; every rank then scores all of them
        start, stop = distributed.shard_range(len(images), run.world)
        images = images[start:stop]
    logits = predict_logits(run.model, images, _normalizer(run), batch_size=run.cfg.eval_batch_size, device=run.device)
    logits = distributed.all_gather_rows(logits, run.world)
    lt = torch.from_numpy(logits).to(run.device)
    yt = torch.from_numpy(np.asarray(run.val_labels, dtype=np.float32)).to(run.device)
    if run.masked:
        return _validate_masked(run, lt, yt)
    loss = float(run.criterion(lt, _targets(yt, run.cfg.loss, 0.0)))
    if run.output == "softmax":
        pred = (lt.argmax(1, keepdim=True) == 1).float()
    else:
        pred = (lt > 0).float()
    per_attr = (pred == yt).float().mean(0).cpu().numpy()
    return {
        "val_loss": loss,
        "val_mean_accuracy": float(per_attr.mean()),
        "val_accuracy": {a: round(float(v), 5) for a, v in zip(run.attributes, per_attr, strict=True)},
    }


def _validate_masked(run: Run, lt: torch.Tensor, yt: torch.Tensor) -> dict[str, Any]:
    """Validation of a multi-source run: accuracy over the rows that label each attribute, per-source
    losses and mean accuracies, and the age error in years."""
    a = len(run.attributes)
    age = None if run.val_age is None else torch.from_numpy(run.val_age).to(lt.device)
    loss, row = masked_losses(run, lt, yt, age)
    known = ~torch.isnan(yt)
    hit = ((lt[:, :a] > 0).float() == torch.nan_to_num(yt)) & known
    per_attr = (hit.sum(0) / known.sum(0).clamp(min=1)).cpu().numpy()
    labelled = known.any(0).cpu().numpy()
    out: dict[str, Any] = {
        "val_loss": float(loss),
        "val_mean_accuracy": float(per_attr[labelled].mean()),
        "val_accuracy": {n: round(float(v), 5) for n, v, k in zip(run.attributes, per_attr, labelled, strict=True) if k},
    }
    src = torch.from_numpy(run.val_sources.source).to(lt.device)
    for i, name in enumerate(run.val_sources.names):
        rows = src == i
        out[f"val_loss_{name}"] = round(float(row[rows].mean()), 6)
        k = known[rows]
        acc = (hit[rows].sum(0) / k.sum(0).clamp(min=1))[k.any(0)]
        out[f"val_mean_accuracy_{name}"] = round(float(acc.mean()), 5)
    if age is not None:
        has = ~torch.isnan(age)
        pred = AGE_MEAN + AGE_STD * lt[:, a]
        out["val_age_mae"] = round(float((pred[has] - age[has]).abs().mean()), 4)
    return out


def train_one_epoch(
    run: Run,
    opt: torch.optim.Optimizer,
    epoch: int,
    *,
    start_step: int = 0,
    global_step: int = 0,
    on_step: Any = None,
) -> tuple[float, int, float]:
    """Train one epoch from `start_step`; returns (mean loss, global step after, images/s)."""
    from faceattr.data.augment import context_columns
    from faceattr.train.pipeline import augment_on_device, gather_rows, prefetch_rows

    cfg, model, device = run.cfg, run.model, run.device
    male_col, band_cols = context_columns(run.attributes)
    model.train()
    steps = _steps_per_epoch(run)
    total = _total_steps(run)
    losses: list[float] = []
    seen, t0 = 0, time.perf_counter()
    # Multi-source runs: summed per-row losses and row counts per source, for the log.
    n_src = 0 if run.sources is None else len(run.sources.names)
    src_sum, src_n = np.zeros(n_src), np.zeros(n_src)
    age_err, age_n = 0.0, 0  # absolute age error in years over the rows with an age
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start_step, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   leave=False, dynamic_ncols=True)
    try:
        batches = _batches(len(run.train_labels), cfg.batch_size, cfg.seed, epoch, start_step, run.sources, run.world)
        if run.train_features is None:
            # The next step's uint8 rows are read from the cache (into pinned memory for CUDA) while this one trains.
            pin = device.type == "cuda"
            steps_iter = prefetch_rows(batches, lambda i: gather_rows(run.train_images, i, pin=pin))
        else:
            steps_iter = ((s, i, None) for s, i in batches)
        train_forward = _train_forward(run)
        for step, idx, rows in steps_iter:
            if global_step >= total:
                break
            factor = lr_factor(cfg.optim.scheduler, global_step, total, warmup_fraction=cfg.optim.warmup_fraction,
                               steps_per_epoch=steps, cyclic_base=cfg.optim.cyclic_base_lr_mult)
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"] * factor
            step_seed = _step_seed(run, epoch, step)
            torch.manual_seed(step_seed)  # dropout draws: reproducible on resume
            gen = torch.Generator().manual_seed(step_seed)
            unknown: torch.Tensor | None = None  # labels an augmentation hid (context_swap)
            targets = run.train_labels if run.train_targets is None else run.train_targets
            y = torch.from_numpy(np.asarray(targets[idx], dtype=np.float32))
            y = _targets(y.to(device), cfg.loss, cfg.label_smoothing)
            if run.train_features is not None:
                view = torch.randint(0, run.train_features.shape[0], (len(idx),), generator=gen).numpy()
                # float16 features go to the device as they are (half the bytes) and widen there (exact).
                x = torch.from_numpy(run.train_features[view, idx]).to(device, non_blocking=True).float()
                forward = _features_forward(run)
            else:
                # uint8 rows go to the device; swap, augmentation and normalisation run there, batched,
                # with the random numbers drawn on this step's CPU generators (same draws on any device).
                # context_swap has its own generator, so switching it on leaves every other draw alone.
                swap_gen = (torch.Generator().manual_seed(_step_seed(run, epoch, step, "context"))
                            if cfg.augment.context_swap > 0.0 else None)
                x, swapped = augment_on_device(rows, device, cfg.augment, run.preprocess, gen,
                                               labels=run.train_labels[idx], swap_generator=swap_gen, male=male_col)
                if swapped is not None and band_cols and bool(swapped.any()):
                    unknown = torch.zeros(len(idx), len(run.attributes), dtype=torch.bool)
                    unknown[swapped.nonzero(), torch.tensor(band_cols)] = True
                forward = train_forward
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    logits = forward(x).float()
            else:
                logits = forward(x)
            if n_src:
                # One masked pass gives the batch loss and the per-row losses the log sums by source.
                age = None if run.train_age is None else torch.from_numpy(run.train_age[idx]).to(device)
                loss, row = masked_losses(run, logits, y, age, unknown, across_ranks=True)
                row_np = row.detach().cpu().numpy()
                np.add.at(src_sum, run.sources.source[idx], row_np)
                np.add.at(src_n, run.sources.source[idx], 1)
                if age is not None:
                    has = ~torch.isnan(age)
                    target = (age[has] - AGE_MEAN) / AGE_STD
                    age_err += float((logits.detach()[has, len(run.attributes)] - target).abs().sum()) * AGE_STD
                    age_n += int(has.sum())
            else:
                loss = _train_loss(run, logits, y, idx, unknown)
            if not torch.isfinite(loss):
                raise FaceattrError(
                    f"loss became {float(loss.detach())} at epoch {epoch + 1} step {step + 1}; lower the learning rate "
                    f"(--lr, now {cfg.optim.lr}) or check the data; the last good checkpoint is kept in {run.out}"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            global_step += 1
            losses.append(float(loss.detach()))
            seen += len(idx)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", img_s=f"{seen / (time.perf_counter() - t0):.0f}")
            if on_step is not None:
                on_step(epoch, step + 1, global_step)
    finally:
        if bar is not None:
            bar.close()
    ips = seen / max(1e-9, time.perf_counter() - t0)
    mean_loss = float(np.mean(losses)) if losses else float("nan")
    if run.world.distributed:
        # Sums over ranks: images/s of the whole job, per-source losses and age errors over all rows;
        # the mean of the ranks' step losses is the global batch's loss (equal slices).
        red = distributed.all_reduce_sum(np.concatenate([[ips, mean_loss, age_err, age_n], src_sum, src_n]), run.world)
        ips, mean_loss, age_err, age_n = float(red[0]), float(red[1]) / run.world.world_size, float(red[2]), int(red[3])
        src_sum, src_n = red[4 : 4 + n_src], red[4 + n_src :]
    if n_src:
        run.last_source_losses = {f"train_loss_{name}": round(float(src_sum[i] / max(1.0, src_n[i])), 6)
                                  for i, name in enumerate(run.sources.names)}
        if age_n:
            run.last_source_losses["train_age_mae"] = round(age_err / age_n, 4)
    return mean_loss, global_step, ips


def _write_logs(out: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite log.jsonl and log.csv from the history (kept in the checkpoint, so resume can't duplicate rows)."""
    rows = [{k: v for k, v in h.items() if k != "val_accuracy"} for h in history]
    jsonl = "".join(json.dumps(h) + "\n" for h in history)
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[-1].keys()), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    for name, text in (("log.jsonl", jsonl), ("log.csv", buf.getvalue())):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _meta(run: Run, epoch: int, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
    m = run.model
    return {
        "model": {"name": run.cfg.model.name,
                  "kwargs": {"num_outputs": int(getattr(m, "num_outputs", 0) or (2 if run.output == "softmax" else len(run.attributes))),
                             "hidden": run.cfg.model.hidden, "dropout": run.cfg.model.dropout}},
        "attributes": run.attributes,
        "output": run.output,
        "preprocess": run.preprocess.to_dict(),
        "thresholds": None,
        "age": _age_meta() if run.has_age else None,
        "config": config_to_dict(run.cfg),
        "metrics": metrics,
        "epoch": epoch,
        "step": step,
    }


def _age_meta() -> dict[str, Any]:
    """How to read the age output (the last logit) in years, for checkpoints."""
    return {"mean": AGE_MEAN, "std": AGE_STD}


def _check_resume_config(saved: TrainConfig, given: TrainConfig) -> TrainConfig:
    a, b = config_to_dict(saved), config_to_dict(given)
    changed = [k for k in b if a.get(k) != b.get(k)]
    bad = [k for k in changed if k not in _RESUMABLE_CHANGES]
    if bad:
        raise FaceattrError(
            f"--resume continues the saved run, but these settings differ from {given.out}/config.toml: "
            f"{', '.join(bad)}; drop them or start a new run with another --out"
        )
    for k in changed:
        logger.info("resume: %s changed from %r to %r", k, a[k], b[k])
    return given


def fit(cfg: TrainConfig, *, resume: bool = False) -> Path:
    """Train `cfg` into `cfg.out` (or continue it with `resume`); returns the run folder.

    Under torchrun every rank calls this (see `faceattr.train.distributed`): `batch_size` is the global
    batch, each rank trains on its slice of it in DistributedDataParallel, local rank 0 of each node
    builds the caches while the others wait, and only rank 0 writes the run folder.
    """
    world, device = distributed.env_world(), None
    if not world.distributed:
        return _fit(cfg, resume, World(), None)
    pkg_log = logging.getLogger("faceattr")
    log_level = pkg_log.level
    if not world.is_main:
        pkg_log.setLevel(logging.WARNING)  # one rank tells the story
    try:
        world, device = distributed.init_from_env(resolve_device(cfg.device))
        if cfg.batch_size % world.world_size:
            raise FaceattrError(f"batch_size {cfg.batch_size} is the global batch and must divide evenly over the "
                                f"{world.world_size} ranks (each takes batch_size / ranks images of it)")
        distributed.barrier(world)  # before reading the folder: rank 0 may have been clearing it (--overwrite)
        return _fit(cfg, resume, world, device)
    finally:
        pkg_log.setLevel(log_level)
        distributed.shutdown(world)


def _fit(cfg: TrainConfig, resume: bool, world: World, device: torch.device | None) -> Path:
    """`fit` for one rank of `world` (World() for a single process, `device` None: the config's)."""
    out = Path(cfg.out)
    last = out / "last.safetensors"
    if resume:
        if not last.is_file():
            raise FaceattrError(f"nothing to resume: {last} does not exist; run without --resume to start")
        saved_cfg = config_from_dict(TrainConfig, read_metadata(last)["config"])
        cfg = _check_resume_config(saved_cfg, cfg)
    elif last.is_file() or (out / "best.safetensors").is_file():
        raise FaceattrError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.toml")

    t_start = time.perf_counter()
    summary: dict[str, Any] = {"status": "running", "model": cfg.model.name}
    try:
        if world.distributed:
            # Progress bars from rank 0 only; the device is the rank's own (cuda:LOCAL_RANK, made current).
            assert device is not None
            with distributed.local_main_first(world):
                run = prepare_run(replace(cfg, progress=cfg.progress and world.is_main,
                                          device="cuda" if device.type == "cuda" else cfg.device))
            run.world, run.device = world, device
        else:
            run = prepare_run(cfg)
        summary.update(attributes=run.attributes)
        from faceattr.models import count_parameters

        summary["params"] = count_parameters(run.model)
        epoch, start_step, global_step, best, prior_time = 0, 0, 0, -1.0, 0.0
        state: dict[str, Any] = {}
        if resume:
            meta = read_metadata(last)
            state = meta["train_state"]
            run.model.load_state_dict(load_tensors(last, "model."))
            epoch, start_step, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
            best, run.history, prior_time = state["best"], state["history"], state.get("train_time_s", 0.0)
            logger.info("resuming %s at epoch %d step %d (global step %d)", out, epoch + 1, start_step, global_step)

        frozen_phase = epoch < cfg.model.freeze_epochs
        opt = _make_optimizer(run, frozen_phase)
        if resume and state.get("frozen_phase", False) == frozen_phase:
            _restore_optimizer(opt, load_tensors(last, "optim."), state["optimizer"])
        _wrap_for_ranks(run)

        def save_last(ep: int, step_in_epoch: int, gstep: int) -> None:
            distributed.average_buffers(run.model, world)  # every rank: the checkpoint holds all ranks' statistics
            # Buffers too: BatchNorm running stats overflow before the loss shows it.
            if not all(torch.isfinite(t).all() for t in run.model.state_dict().values() if t.is_floating_point()):
                raise FaceattrError(f"weights became non-finite at epoch {ep + 1}; lower --lr; the last good checkpoint is kept in {out}")
            if not world.is_main:
                return
            tensors, rest = _optimizer_tensors(opt)
            meta = _meta(run, ep, gstep, run.history[-1] if run.history else {})
            meta["train_state"] = {"epoch": ep, "step_in_epoch": step_in_epoch, "global_step": gstep, "best": best,
                                   "history": run.history, "optimizer": rest, "frozen_phase": ep < cfg.model.freeze_epochs,
                                   "train_time_s": prior_time + time.perf_counter() - t_start}
            save_checkpoint(last, run.model, meta, tensors)

        def on_step(ep: int, step_in_epoch: int, gstep: int) -> None:
            if cfg.checkpoint_every > 0 and gstep % cfg.checkpoint_every == 0:
                save_last(ep, step_in_epoch, gstep)

        total = _total_steps(run)
        while epoch < cfg.epochs and global_step < total:
            if (epoch < cfg.model.freeze_epochs) != frozen_phase:
                frozen_phase = not frozen_phase
                opt = _make_optimizer(run, frozen_phase)
                _wrap_for_ranks(run)
                logger.info("epoch %d: backbone %s", epoch + 1, "frozen" if frozen_phase else "fine-tuning")
            t_ep = time.perf_counter()
            train_loss, global_step, ips = train_one_epoch(run, opt, epoch, start_step=start_step,
                                                           global_step=global_step, on_step=on_step)
            metrics = {"epoch": epoch + 1, "step": global_step, "train_loss": round(train_loss, 6),
                       "lr": opt.param_groups[-1]["lr"], "images_per_s": round(ips, 2),
                       "seconds": round(time.perf_counter() - t_ep, 2)}
            metrics.update(run.last_source_losses)
            distributed.average_buffers(run.model, world)  # validate with the same statistics on every rank
            metrics.update(validate(run))
            run.history.append(metrics)
            score = _score(metrics)
            improved = score > best
            if improved:
                best = score
            epoch, start_step = epoch + 1, 0
            save_last(epoch, 0, global_step)
            if world.is_main:
                if improved:
                    save_checkpoint(out / "best.safetensors", run.model, _meta(run, epoch, global_step, metrics))
                _write_logs(out, run.history)
            logger.info(
                "epoch %d: train_loss %.4f val_loss %s val_mean_acc %s%s (%.0f img/s)", epoch, train_loss,
                f"{metrics['val_loss']:.4f}" if "val_loss" in metrics else "-",
                f"{metrics['val_mean_accuracy']:.4f}" if "val_mean_accuracy" in metrics else "-",
                "".join(f" {k} {metrics[k]:.4f}" for k in metrics
                        if k.startswith("val_mean_accuracy_")) + (f" val_age_mae {metrics['val_age_mae']:.2f}"
                                                                 if "val_age_mae" in metrics else ""), ips,
            )
        train_time = prior_time + time.perf_counter() - t_start
        best_row = max(run.history, key=_score) if run.history else {}
        n_imgs = sum(h["images_per_s"] * h["seconds"] for h in run.history)
        summary.update(
            status="done", train_time_s=round(train_time, 2),
            images_per_s=round(n_imgs / max(1e-9, sum(h["seconds"] for h in run.history)), 2) if run.history else 0.0,
            best_epoch=best_row.get("epoch"), best_val_loss=best_row.get("val_loss"),
            best_val_mean_accuracy=best_row.get("val_mean_accuracy"), epochs_done=epoch, steps=global_step, error=None,
        )
        if world.distributed:
            summary["world_size"] = world.world_size
        if world.is_main:
            _write_json(out / "summary.json", summary)
        distributed.barrier(world)  # every rank returns once the run folder is complete
        return out
    except BaseException as e:
        summary.update(status="failed" if not isinstance(e, KeyboardInterrupt) else "interrupted",
                       error=f"{type(e).__name__}: {e}")
        if world.is_main:
            _write_json(out / "summary.json", summary)
        raise
