"""Print the model card's figures that `faceattr evaluate` does not: the five-attribute exact match,
women called Male with and without lipstick, and (--operating-points) what thresholds chosen on the
holdout for each calibration objective do on people they were not chosen on.

    .venv/bin/python scripts/model_card_figures.py default --split valid --operating-points
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from faceattr.evaluate import EvalConfig, evaluate_model
from faceattr.evaluate.metrics import calibrate_thresholds, metric_block

FIVE = ["Male", "Smiling", "Eyeglasses", "Blond_Hair", "Young"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="default")
    ap.add_argument("--data-root", default="../shared/celeba")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--operating-points", action="store_true",
                    help="also calibrate on the holdout for each objective and score on --split and on held-out holdout people")
    args = ap.parse_args()
    ev = evaluate_model(EvalConfig(model=args.model, data_root=args.data_root, split=args.split,
                                   subgroups=["Wearing_Lipstick"], progress=False))
    # predict uses the checkpoint's stored thresholds when it has them, else 0.5.
    per = (ev.result.get("calibrated") or ev.result)["per_attribute"]
    thresholds = np.array([per[a]["threshold"] for a in ev.attributes])
    pred = ev.probs >= thresholds
    truth = ev.labels >= 0.5
    cols = [ev.attributes.index(a) for a in FIVE]
    exact5 = float(np.all(pred[:, cols] == truth[:, cols], axis=1).mean())
    print(f"{args.model} on {args.split} ({len(truth)} images, thresholds as predict uses them)")
    print(f"exact match on {', '.join(FIVE)}: {exact5:.4f}")
    male = ev.attributes.index("Male")
    women = ~truth[:, male]
    lipstick = ev.group_labels["Wearing_Lipstick"] >= 0.5
    for name, rows in (("without lipstick", women & ~lipstick), ("with lipstick", women & lipstick)):
        print(f"women {name} called Male: {int(pred[rows, male].sum())} of {int(rows.sum())}")
    if args.operating_points:
        operating_points(args, ev)


OBJECTIVES = [("0.5 everywhere", None, 0.0), ("accuracy", "accuracy", 0.0), ("mixed, W=0.1", "mixed", 0.1),
              ("mixed, W=0.25", "mixed", 0.25), ("mixed, W=0.5", "mixed", 0.5), ("mixed, W=1", "mixed", 1.0),
              ("balanced_accuracy", "balanced_accuracy", 0.0)]


def operating_points(args: argparse.Namespace, ev: Any) -> None:
    """Thresholds chosen on the holdout per objective: mean accuracy / balanced accuracy on --split and,
    cross-validated, on holdout people they were not chosen on (identities halved 10 times, both ways)."""
    hold = evaluate_model(EvalConfig(model=args.model, data_root=args.data_root, split="holdout", progress=False))
    attrs = ev.attributes
    y_h, p_h = hold.labels[:, : len(attrs)], hold.probs
    ids = hold_identities(args, hold)
    print(f"\nthresholds chosen on the holdout ({len(y_h)} images), scored on {args.split} and on held-out holdout people")
    print(f"{'objective':<20} {args.split + ' acc':>10} {args.split + ' bal':>10} {'cv acc':>8} {'cv bal':>8}")
    rng = np.random.default_rng(0)
    splits = []
    unique = np.unique(ids)
    for _ in range(10):
        half = np.isin(ids, rng.permutation(unique)[: len(unique) // 2])
        splits += [(half, ~half), (~half, half)]
    for name, objective, weight in OBJECTIVES:
        def choose(y: np.ndarray, p: np.ndarray) -> np.ndarray:
            if objective is None:
                return np.full(len(attrs), 0.5)
            return calibrate_thresholds(y, p, objective, balanced_weight=weight)[0]

        here = metric_block(ev.labels[:, : len(attrs)], ev.probs, attrs, choose(y_h, p_h))
        cv = [metric_block(y_h[b], p_h[b], attrs, choose(y_h[a], p_h[a])) for a, b in splits]
        print(f"{name:<20} {here['mean_accuracy']:>10.4f} {here['mean_balanced_accuracy']:>10.4f} "
              f"{np.mean([c['mean_accuracy'] for c in cv]):>8.4f} {np.mean([c['mean_balanced_accuracy'] for c in cv]):>8.4f}")


def hold_identities(args: argparse.Namespace, hold: Any) -> np.ndarray:
    """Identity of each holdout row, read with the same split settings the evaluation used."""
    from faceattr.data import load_celeba

    split = load_celeba(args.data_root, split="holdout", attributes=hold.attributes, seed=int(hold.result["seed"]),
                        holdout_fraction=float(hold.result["holdout_fraction"]))
    if split.identities is None:
        raise SystemExit("the holdout has no identity file: cannot hold people out")
    by_name = dict(zip(split.filenames, np.asarray(split.identities), strict=True))
    return np.array([by_name[f] for f in hold.filenames])


if __name__ == "__main__":
    main()
