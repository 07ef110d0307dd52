"""Score per-output weightings of ensemble members on held-back splits, from cached member logits.

    .venv/bin/python scripts/score_weightings.py runs/shipped_members/member{0,1,2} runs/utk_member7@flip \\
        --combo "2,1,1,0;1,1,1,4;0,1,2,3;0.55" --combo "1,1,1,0;1,1,1,4;0,1,2,3;0.55"

Each --combo is `STAR;MALE;AGE;T`: the weights of every member for the 39 attributes other than Male
(`faceattr ensemble --weight '*=...'`), for Male, for age, and the Male threshold. A member written
`PATH@flip` is scored on its view and the view's mirror image averaged (`faceattr ensemble --mirror`).
Per combination it prints CelebA holdout and valid (mean and balanced accuracy at 0.5, Male at T) and
UTKFace valid (gender of adults, adult women and men, the worst race group of adults, 70+, under 15,
and age MAE): the figures issue 15 sets targets for, so a weighting is chosen before any test split is
scored. Logits come from `scripts/ensemble_search.py` and `scripts/choose_output_weights.py` (one
forward pass per member and split, cached in --cache), so scoring many combinations costs seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    """Print one block of figures per --combo."""
    from choose_output_weights import figures
    from choose_output_weights import member_logits as utk_logits
    from ensemble_search import member_logits as celeba_logits
    from ensemble_search import score

    from faceattr.checkpoint import read_metadata, resolve_checkpoint
    from faceattr.errors import FaceattrError
    from faceattr.train.ensemble import _weight_matrix, parse_weight

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("members", nargs="+", help="checkpoints in ensemble order; PATH@flip mirror-averages one")
    ap.add_argument("--combo", action="append", required=True, metavar="STAR;MALE;AGE;T")
    ap.add_argument("--celeba", default="../shared/celeba")
    ap.add_argument("--utkface", default="../shared/utkface")
    ap.add_argument("--cache", type=Path, default=Path("runs/.ensemble_logits"))
    ap.add_argument("--utk-landmarks", default="", metavar="TSV",
                    help="frame UTKFace valid chips by these landmarks (scripts/utk_landmarks.py): as predict does")
    args = ap.parse_args()

    flips = [m.endswith("@flip") for m in args.members]
    paths = [resolve_checkpoint(m.removesuffix("@flip")) for m in args.members]
    meta = read_metadata(paths[0])
    attrs = list(meta["attributes"])
    outputs = [*attrs, "age"]
    male = attrs.index("Male")
    age_scale = (float(meta["age"]["mean"]), float(meta["age"]["std"]))

    def opts(flip: bool) -> argparse.Namespace:
        return argparse.Namespace(celeba=args.celeba, utkface=args.utkface, data_root=args.celeba, cache=args.cache,
                                  grayscale=False, flip=flip, utk_landmarks=args.utk_landmarks)

    celeba = {s: [celeba_logits(p, s, opts(f), args.cache) for p, f in zip(paths, flips, strict=True)]
              for s in ("holdout", "valid")}
    utk = [utk_logits(p, "utk", opts(f)) for p, f in zip(paths, flips, strict=True)]
    for combo in args.combo:
        star, male_w, age_w, t = combo.split(";")
        # The matrix `faceattr ensemble --weight '*=STAR' --weight Male=MALE --weight age=AGE` builds:
        # one row per member, one column per output, each column summing to 1.
        given = dict(parse_weight(f"{name}={w}") for name, w in (("*", star), ("Male", male_w), ("age", age_w)))
        try:
            rows = np.array(_weight_matrix(outputs, len(paths), given))
        except FaceattrError as e:
            raise SystemExit(f"--combo {combo!r}: {e}") from None
        shift = float(np.log(float(t) / (1 - float(t))))  # threshold t on the probability is t's logit on the logit
        lines = [combo]
        for split, members in celeba.items():
            logits = sum(w[: len(attrs)] * lg for w, (lg, *_) in zip(rows, members, strict=True))
            logits[:, male] -= shift
            sc = score(logits, members[0][1], attrs)
            lines.append(f"CelebA {split}: mean {sc['mean_acc']:.4f} balanced {sc['balanced']:.4f} Male {sc['male']:.4f}")
        u = sum(w * lg for w, (lg, _) in zip(rows, utk, strict=True))
        u_male, u_age = u[:, male] - shift, u[:, -1]
        labels = utk[0][1]
        f = figures(u_male, u_age, labels, age_scale)
        adult_men = (labels["age"] >= 15) & (labels["male"] >= 0.5)
        men = float(((u_male >= 0) == (labels["male"] >= 0.5))[adult_men].mean())
        lines.append(f"UTKFace valid{' (as predict frames it)' if args.utk_landmarks else ''}: adults {f['adults']:.4f} women {f['women']:.4f} men {men:.4f} worst race "
                     f"{f['worst_race']:.4f} ({f['worst_race_name']}) 70+ {f['70+']:.3f} under 15 {f['under15']:.3f} "
                     f"age MAE {f['age_mae']:.2f}")
        print("\n  ".join(lines), flush=True)


if __name__ == "__main__":
    main()
