"""`faceattr train`: flags map onto TrainConfig keys; flags override the --config file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register"]

# What fit() writes into a run folder. --overwrite deletes a folder only when it holds one of these, so a
# mistyped --out (a home folder, the checkout) is never emptied.
_RUN_FILES = ("config.toml", "summary.json", "log.jsonl", "log.csv", "last.safetensors", "best.safetensors")

# flag dest -> dotted TrainConfig key
_FLAG_KEYS = {
    "data_root": "data.root",
    "layout": "data.layout",
    "attributes": "data.attributes",
    "limit": "data.limit",
    "val_limit": "data.val_limit",
    "val_split": "data.val_split",
    "holdout_fraction": "data.holdout_fraction",
    "workers": "data.workers",
    "cache_dir": "data.cache_dir",
    "model": "model.name",
    "pretrained": "model.pretrained",
    "image_size": "model.image_size",
    "hidden": "model.hidden",
    "dropout": "model.dropout",
    "freeze_epochs": "model.freeze_epochs",
    "finetune_stages": "model.finetune_stages",
    "finetune_lr_mult": "model.finetune_lr_mult",
    "optimizer": "optim.optimizer",
    "lr": "optim.lr",
    "momentum": "optim.momentum",
    "weight_decay": "optim.weight_decay",
    "scheduler": "optim.scheduler",
    "loss": "loss",
    "epochs": "epochs",
    "max_steps": "max_steps",
    "batch_size": "batch_size",
    "seed": "seed",
    "device": "device",
    "threads": "threads",
    "checkpoint_every": "checkpoint_every",
    "out": "out",
}


def register(sub: Any) -> None:
    """Add the `train` subcommand."""
    p = sub.add_parser("train", help="train a model on CelebA", description="Train a facial attribute model. "
                       "Flags override values from --config; the resolved config is saved as OUT/config.toml.")
    p.add_argument("--config", help="TOML file with a TrainConfig tree")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run already in --out (e.g. one that failed) and start over; without it, "
                   "a non-empty --out is refused")
    p.add_argument("--data-root", help="CelebA folder (official, torchvision or Kaggle layout)")
    p.add_argument("--layout", choices=["auto", "official", "torchvision", "kaggle"])
    p.add_argument("--attributes", nargs="+", metavar="NAME", help="attribute subset (default: all)")
    p.add_argument("--limit", type=int, help="seeded sample of N training images (0: all)")
    p.add_argument("--val-limit", type=int, help="seeded sample of N validation images (0: all)")
    p.add_argument("--val-split", help="valid | holdout | test | none")
    p.add_argument("--holdout-fraction", type=float, help="carve an identity-disjoint holdout from train")
    p.add_argument("--workers", type=int, help="processes for the one-time decode (0: one per core)")
    p.add_argument("--cache-dir", help="where decoded images are cached")
    p.add_argument("--model", help="registry name, e.g. mobilenet_v2, resnet18, celeb_cnn")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None, help="start from ImageNet weights")
    p.add_argument("--image-size", nargs=2, type=int, metavar=("H", "W"))
    p.add_argument("--hidden", type=int, help="hidden units in the head (0: none)")
    p.add_argument("--dropout", type=float)
    p.add_argument("--freeze-epochs", type=int, help="epochs training only the head on a frozen backbone")
    p.add_argument("--finetune-stages", type=int, help="last backbone stages to fine-tune afterwards (-1: all)")
    p.add_argument("--finetune-lr-mult", type=float, help="backbone learning-rate multiplier when fine-tuning")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--scheduler", choices=["cyclic", "onecycle", "cosine", "none"])
    p.add_argument("--loss", choices=["bce", "bce_weighted", "ce"])
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int, help="stop after N optimiser steps (0: no limit)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, help="torch CPU threads (0: default)")
    p.add_argument("--checkpoint-every", type=int, help="steps between resumable checkpoints")
    p.add_argument("--out", help="run folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set augment.rotate=5 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)

    from faceattr.train.sweep import register as register_sweep

    register_sweep(sub)

    e = sub.add_parser("ensemble", help="combine trained checkpoints into one (logits averaged)",
                       description="Write one checkpoint that averages the logits of trained models with the same "
                       "attributes, input size and data split; calibrate it afterwards with `faceattr evaluate "
                       "--calibrate`, then predict, export or ship it like any checkpoint.")
    e.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="run folders, .safetensors files or shipped names")
    e.add_argument("--out", required=True, help="the ensemble's .safetensors file")
    e.add_argument("--half", action="store_true", help="store fp16 weights (half the size)")
    e.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    e.add_argument("--weight", action="append", default=[], metavar="OUTPUT=W1,W2,...",
                   help="weigh one output's logits per member, e.g. --weight Male=1,1,2 --weight age=0,0,1 "
                   "(repeatable; other outputs are averaged equally; '*=W1,W2,...' weighs every output not named "
                   "on its own)")
    e.add_argument("--mirror", action="append", type=int, default=[], metavar="N",
                   help="member N (1 = the first listed) also sees the mirror image of its view and averages the two "
                   "(test-time flip: one more forward pass of that member per face; repeatable)")
    e.set_defaults(func=_run_ensemble)


def _run_ensemble(args: argparse.Namespace) -> int:
    from faceattr.train.ensemble import make_ensemble, parse_weight

    weights = dict(parse_weight(w) for w in args.weight)
    out = make_ensemble(args.checkpoints, args.out, half=args.half, overwrite=args.overwrite, output_weights=weights or None,
                        mirror=[n - 1 for n in args.mirror])
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB), an ensemble of {len(args.checkpoints)} models; "
          f"calibrate it with: faceattr evaluate {out} --data-root DIR --split valid --calibrate accuracy --calibrate-split holdout")
    return 0


def _check_out(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start a run in a non-empty folder unless told to continue (--resume) or replace (--overwrite) it.

    fit() itself refuses only a folder with checkpoints, so a run that failed before its first one (bad data
    root, unknown attribute) left config.toml and summary.json that the next run silently wrote over.
    """
    import logging
    import shutil

    from faceattr.errors import FaceattrError

    if resume and overwrite:
        raise FaceattrError("--resume continues the run in --out and --overwrite deletes it; pass one of them")
    if out.exists() and not out.is_dir():
        raise FaceattrError(f"--out {out} is a file; pass a folder for the run")
    if resume or not out.is_dir() or not any(out.iterdir()):
        return
    held = [name for name in _RUN_FILES if (out / name).exists()]
    if not held:
        raise FaceattrError(f"{out} is not empty and holds no training run; choose a new or empty folder for --out")
    if not overwrite:
        status = _run_status(out)
        resumable = (out / "last.safetensors").is_file()
        raise FaceattrError(
            f"{out} already holds a run ({status}; {', '.join(held)}); pass "
            + ("--resume to continue it, " if resumable else "")
            + "--overwrite to delete it and start over, or choose another --out"
        )
    shutil.rmtree(out)
    logging.getLogger(__name__).warning("--overwrite: deleted the previous run in %s", out)


def _run_status(out: Path) -> str:
    """How the run in `out` ended, from its summary.json, in a few words."""
    import json

    try:
        status = json.loads((out / "summary.json").read_text(encoding="utf-8"))["status"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no summary"
    return f"status {status}" if (out / "last.safetensors").is_file() else f"status {status}, before its first checkpoint"


def _run(args: argparse.Namespace) -> int:
    import json
    import logging

    from faceattr.config import load_config, parse_assignments
    from faceattr.train import fit
    from faceattr.train.distributed import env_world

    overrides: dict[str, Any] = {key: getattr(args, dest) for dest, key in _FLAG_KEYS.items()}
    overrides.update(parse_assignments(args.set))
    if args.no_progress:
        overrides["progress"] = False
    config = args.config
    if args.resume and config is None and args.out:
        # Resuming: the saved config is the base; flags may still extend epochs/max_steps.
        saved = Path(args.out) / "config.toml"
        config = str(saved) if saved.is_file() else None
    cfg = load_config(config, overrides)
    # Under torchrun every rank runs this; rank 0 alone checks (and with --overwrite clears) the folder,
    # and fit() holds the others back until it has.
    main_rank = env_world().is_main
    if main_rank:
        _check_out(Path(cfg.out), resume=args.resume, overwrite=args.overwrite)
    out = fit(cfg, resume=args.resume)
    if not main_rank:
        return 0
    summary = json.loads((out / "summary.json").read_text())
    logging.getLogger("faceattr").info("run finished: %s", out)
    print(f"trained {summary['model']} on {len(summary.get('attributes', []))} attribute(s) in "
          f"{summary['train_time_s']:.1f}s; best val mean accuracy "
          f"{summary['best_val_mean_accuracy'] if summary['best_val_mean_accuracy'] is not None else 'n/a'}; "
          f"checkpoint {out / 'best.safetensors'}")
    return 0
