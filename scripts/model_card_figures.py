"""Print the model card's figures that `faceattr evaluate` does not: the five-attribute exact match and
women called Male with and without lipstick.

    .venv/bin/python scripts/model_card_figures.py default --split valid
"""

from __future__ import annotations

import argparse

import numpy as np

from faceattr.evaluate import EvalConfig, evaluate_model

FIVE = ["Male", "Smiling", "Eyeglasses", "Blond_Hair", "Young"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="default")
    ap.add_argument("--data-root", default="../shared/celeba")
    ap.add_argument("--split", default="valid")
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


if __name__ == "__main__":
    main()
