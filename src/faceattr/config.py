"""Typed job configuration: one dataclass tree, defaults in code, loaded from TOML and flags.

The resolved tree is saved beside every result (``config.toml``) and inside every checkpoint,
so a run can be reproduced from its output folder alone.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from faceattr._atomic import atomic_write, write_error
from faceattr.errors import FaceattrError, did_you_mean

__all__ = [
    "SourceConfig",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "AugmentConfig",
    "BalanceConfig",
    "DistillConfig",
    "TrainConfig",
    "load_config",
    "save_config",
    "config_to_dict",
    "config_from_dict",
    "apply_overrides",
    "parse_assignments",
]


@dataclass
class SourceConfig:
    """One data source of a multi-source run (`[[data.sources]]`); each labels only some outputs."""

    root: str = ""
    kind: str = "auto"  # auto | celeba | utkface (auto: detected from the folder)
    weight: float = 1.0  # share of each epoch's samples, relative to the other sources' weights
    layout: str = "auto"  # CelebA only: auto | official | torchvision | kaggle
    # Reweight sampling within the source so these groups count more equally (UTKFace: race, gender,
    # age_band). A group of n images is drawn with weight n ** -balance_power per image: 1 makes the
    # groups equal, 0 leaves the natural mix, 0.5 is in between.
    balance: list[str] = field(default_factory=list)
    balance_power: float = 0.5
    limit: int = 0  # 0: every training image of the source; N: a seeded sample
    val_limit: int = 0
    # UTKFace only: a TSV of each chip's landmarks as `predict` finds them (scripts/utk_landmarks.py);
    # "" places every chip by the chips' mean landmarks instead.
    landmarks: str = ""
    # UTKFace only: warp each chip straight into the model's input (its crop of the frame at its size) from
    # the chip's own pixels, instead of through the 178x218 frame (which halves a chip's resolution).
    native: bool = False


@dataclass
class DataConfig:
    """Where the images are and which of them to use."""

    root: str = "../shared/celeba"
    layout: str = "auto"  # auto | official | torchvision | kaggle
    attributes: list[str] = field(default_factory=list)  # empty: all attributes in the data
    train_split: str = "train"
    val_split: str = "valid"  # valid | holdout | test | none
    holdout_fraction: float = 0.0  # >0 carves an identity-disjoint 'holdout' split out of train
    limit: int = 0  # 0: every image; N: a seeded sample of N training images
    val_limit: int = 0
    cache_dir: str = ""  # "": $FACEATTR_CACHE or ~/.cache/faceattr
    workers: int = 0  # processes for the one-time decode into the cache (0: one per core)
    # Several sources at once (replaces `root`, `layout`, `limit` and `val_limit`): CelebA's attributes,
    # UTKFace's gender (into Male) and age (a regression output). Each split keeps its source's own
    # meaning: CelebA's train_split/val_split, UTKFace's DATETIME-block train/valid.
    sources: list[SourceConfig] = field(default_factory=list)


@dataclass
class ModelConfig:
    """Which network and how its input is prepared."""

    name: str = "mobilenet_v2"
    pretrained: bool = False
    image_size: list[int] = field(default_factory=list)  # [height, width]; empty: the model's default
    crop: list[int] = field(default_factory=list)  # [x0, y0, x1, y1] in the 178x218 aligned frame; empty: whole frame
    hidden: int = 0  # units of an optional hidden layer in the head
    dropout: float = 0.2
    freeze_epochs: int = 0  # epochs training the head only on a frozen backbone
    finetune_stages: int = -1  # after that, how many of the last backbone stages train (-1: all)
    finetune_lr_mult: float = 0.1  # learning-rate multiplier for backbone parameters while fine-tuning
    # With finetune_stages >= 0 and no freeze_epochs: compute the frozen stages' outputs once (for each
    # image and its mirror) and train only the later stages. Many times faster on a CPU; the other
    # augmentations (crop, rotate, scale, color) cannot apply to cached features and are skipped.
    cache_frozen: bool = False
    # Start from these weights instead of ImageNet's: a checkpoint (file, run folder or shipped name) of
    # the same architecture and attributes, e.g. to refine a model by distillation. "": no.
    init_from: str = ""


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule."""

    optimizer: str = "adamw"  # sgd | adam | adamw
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scheduler: str = "onecycle"  # cyclic | onecycle | cosine | none
    warmup_fraction: float = 0.1  # share of steps spent warming up (onecycle, cosine)
    cyclic_base_lr_mult: float = 0.1  # cyclic: base_lr = lr * this
    grad_clip: float = 0.0  # 0: no clipping


@dataclass
class AugmentConfig:
    """Random training-time augmentation, applied batched on uint8 tensors."""

    hflip: bool = True
    crop_scale: float = 0.9  # random crop keeps at least this share of each side (1.0: no crop)
    rotate: float = 10.0  # degrees, uniform in [-rotate, rotate]
    scale: float = 0.1  # zoom factor uniform in [1-scale, 1+scale]
    color: float = 0.1  # brightness/contrast jitter strength (0: off)
    # Chance per image of replacing one random rectangle (2-33% of the area) with noise, after the
    # other steps (Zhong et al., "Random Erasing"): no single region, e.g. clothing, can carry a label.
    erase: float = 0.0
    # Chance per image of turning it grayscale (ITU-R 601 luma in all three channels), last of all.
    # Photos in the wild are often black and white; a model that never saw one reads colour
    # attributes (Pale_Skin, hair colours, make-up) and, through them, Male off a grey cast.
    gray: float = 0.0
    # Chance per image of lowering its resolution: shrunk to a random 25-100% of each side (with
    # antialiasing) and scaled back up. Faces in ordinary photos are often 30-90 px wide, far below
    # CelebA's sharp 178 px crops; a model that never saw one loses 3.5 points at 64 px, 10 at 40 px.
    lowres: float = 0.0
    # Chance per image of replacing everything below the chin (from a random 84-94% of the height
    # down: neck, collar, shoulders) with the same band of another image in the batch, one of the
    # other sex when Male is trained; the labels that band can show (necktie, necklace, beard) are
    # then left out of that image's loss. CelebA ties Male to clothing: pasting the neck and collar
    # of the other sex into holdout images cost a model trained without it 0.9 points of Male
    # accuracy (0.4 with it), and suits and uniforms make it call women in them men. Applied before
    # the other steps.
    context_swap: float = 0.0


@dataclass
class DistillConfig:
    """Knowledge distillation: train towards the averaged predictions of teacher models."""

    # Checkpoints (files, run folders or shipped names) whose logits, averaged, give soft targets.
    # Empty: no distillation, the targets are the labels.
    teachers: list[str] = field(default_factory=list)
    weight: float = 0.5  # target = (1 - weight) * label + weight * teacher probability
    flip: bool = True  # each teacher predicts on the image and its mirror (averaged logits)
    # Attributes that keep their plain labels, e.g. one whose teachers lean on a shortcut.
    exclude: list[str] = field(default_factory=list)
    # With data.sources: where a source does not label an attribute (CelebA's 39 others on UTKFace
    # faces), train it towards the teachers' probability instead of leaving it out of the loss, so the
    # student keeps the teachers' answers on the new source's faces ("learning without forgetting").
    fill: bool = True


@dataclass
class BalanceConfig:
    """Reweight one attribute's loss so that groups formed with other attributes count equally.

    CelebA couples Male with make-up: a model that learns "no lipstick means male" calls women
    without make-up men. With attribute="Male", by=["Wearing_Lipstick"], each of the four
    (Male, Wearing_Lipstick) cells gets the same total weight in the Male loss term.
    """

    attribute: str = ""  # "": off
    by: list[str] = field(default_factory=list)
    max_weight: float = 10.0  # cap per image (a cell of 39 images must not dominate), before renormalising


@dataclass
class TrainConfig:
    """Everything one training run needs."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    loss: str = "bce"  # bce | bce_weighted | ce (one attribute, two-class softmax)
    label_smoothing: float = 0.0
    # Weight of the age loss (smooth L1 on age standardised to mean 35, std 20 years) against the
    # attribute loss (the mean over attributes of each one's BCE); only used when a source labels age.
    age_weight: float = 0.1
    # Weight of each named attribute's term in the attribute loss, which becomes a weighted mean over
    # attributes (unnamed ones weigh 1). Why: with 40 attributes, a source that labels only Male
    # (UTKFace) drives 1/40 of the loss; {Male = 20} lets a gender-and-age member learn gender as a
    # UTKFace-only specialist would while the other outputs still train.
    attribute_weights: dict[str, float] = field(default_factory=dict)
    epochs: int = 5
    max_steps: int = 0  # 0: run every epoch to the end; N: stop after N optimiser steps
    batch_size: int = 64
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # CPU threads for torch (0: torch's default)
    # torch.compile the model for training steps: faster steps on a GPU after a compile of a minute
    # or so; off by default (compiling costs more than it saves on short CPU runs).
    compile: bool = False
    checkpoint_every: int = 200  # steps between mid-epoch 'last' checkpoints (0: only at epoch end)
    out: str = "runs/exp"
    progress: bool = True


T = TypeVar("T")


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Validate (and lightly coerce) one value against a field's annotation."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check_type(value, arg, where)
            except FaceattrError:
                continue
        raise FaceattrError(f"config {where}: {value!r} is not a {tp}")
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp) or (str, Any)
        if isinstance(value, str):  # from --set: "Male:20 Smiling:2" (or commas)
            pairs = [v for v in value.replace(",", " ").split() if v]
            if not all(":" in v for v in pairs):
                raise FaceattrError(f"config {where}: expected NAME:VALUE pairs, got {value!r}")
            value = dict(v.split(":", 1) for v in pairs)
        if not isinstance(value, dict):
            raise FaceattrError(f"config {where}: expected a table, got {value!r}")
        return {_check_type(k, key_tp, where): _check_type(v, value_tp, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str) and value.lstrip().startswith("["):
            # From --set written as in the config file (["a", "b"], [160, 128]): read it as TOML does.
            import tomllib

            try:
                value = tomllib.loads(f"v = {value}")["v"]
            except tomllib.TOMLDecodeError:
                raise FaceattrError(f"config {where}: {value!r} is not a list; write a,b or [\"a\", \"b\"]") from None
        elif isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, (list, tuple)):
            raise FaceattrError(f"config {where}: expected a list, got {value!r}")
        return [_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "1", "yes", "false", "0", "no"}:
            return value.lower() in {"true", "1", "yes"}
        raise FaceattrError(f"config {where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise FaceattrError(f"config {where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise FaceattrError(f"config {where}: expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                number = float(value)
            except (ValueError, OverflowError):  # not a number; an integer beyond float's range
                pass
        # nan and inf parse as floats (TOML has them too) but no setting means them: a learning rate of
        # nan trains nothing, silently.
        if number is None or not math.isfinite(number):
            raise FaceattrError(f"config {where}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, (str, Path)):
            return str(value)
        raise FaceattrError(f"config {where}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise FaceattrError(f"config {where}: expected a table, got {value!r}")
        return config_from_dict(tp, value, f"{where}.")
    return value


def config_from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a nested dict; unknown keys and wrong types raise FaceattrError."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in hints:
            raise FaceattrError(f"config: unknown key {where + key!r}{did_you_mean(key, names)}")
        kwargs[key] = _check_type(value, hints[key], f"{where}{key}")
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Return the config tree as plain dicts/lists/scalars (TOML- and JSON-safe)."""
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys ('optim.lr') in a nested dict; None values are ignored (flag not given)."""
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, last = dotted.split(".")
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):  # e.g. the file says `model = 3` and a flag sets model.name
                where = ".".join(parents[: i + 1])
                raise FaceattrError(f"config: cannot set {dotted!r}: {where!r} is a value, not a table; set {where!r} itself or fix the file")
        node[last] = value
    return data


def parse_assignments(items: list[str], flag: str = "--set") -> dict[str, str]:
    """Parse repeated KEY=VALUE flag values into {dotted key: raw string} (types are checked later)."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise FaceattrError(f"{flag} expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Load a TrainConfig from an optional TOML file, then apply dotted-key overrides (flags win)."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FaceattrError(f"config file not found: {p}; pass an existing .toml file")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise FaceattrError(f"config file {p} is not valid TOML: {e}") from None
        except UnicodeDecodeError as e:  # TOML is UTF-8 by definition
            raise FaceattrError(f"config file {p} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
        except OSError as e:
            raise FaceattrError(f"cannot read config file {p}: {e.strerror or e}; check the file and its permissions") from None
    apply_overrides(data, overrides or {})
    return config_from_dict(TrainConfig, data)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as TOML (atomically)."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(p, e, "config") from None
    return atomic_write(p, tomli_w.dumps(config_to_dict(cfg)), "config")
