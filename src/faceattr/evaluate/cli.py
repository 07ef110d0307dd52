"""`faceattr evaluate` and `faceattr compare`: thin flag layers over `faceattr.evaluate`."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the `evaluate` and `compare` subcommands."""
    p = sub.add_parser(
        "evaluate",
        help="metrics, subgroup slices, calibration and an HTML report for a model on a CelebA or UTKFace split",
        description="Evaluate a checkpoint on a CelebA split. Headline metrics use threshold 0.5; with "
        "--calibrate, per-attribute thresholds are chosen on --calibrate-split, saved into the checkpoint "
        "and reported beside them. On a UTKFace folder, gender (and age, for a model that estimates it) is "
        "evaluated through the detect-and-align path of `faceattr predict`, sliced by gender, race group and "
        "age band; images with no face found are counted as missed. `--json -` writes only the JSON to "
        "stdout (logs go to stderr).",
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint (.safetensors), run folder, or shipped model name (default)")
    p.add_argument("--data-root", required=True,
                   help="CelebA folder (official, torchvision or Kaggle layout) or UTKFace folder (its UTKFace/ chips)")
    p.add_argument("--split", help="CelebA: valid | holdout | test | train | all (default: valid); "
                   "UTKFace: test | valid | train | all (default: test, never trained on)")
    p.add_argument("--attributes", nargs="+", metavar="NAME", help="evaluate these attributes only (default: all the model predicts)")
    p.add_argument("--json", metavar="FILE", help="write the result as JSON to FILE ('-': stdout, nothing else)")
    p.add_argument("--report", metavar="DIR", help="write an HTML report with figures into DIR")
    p.add_argument("--calibrate", choices=["accuracy", "balanced_accuracy", "mixed"],
                   help="choose per-attribute thresholds maximising this and save them into the checkpoint "
                   "(mixed: accuracy + W x balanced accuracy, W from --balanced-weight)")
    p.add_argument("--balanced-weight", type=float, metavar="W",
                   help="weight of balanced accuracy for --calibrate mixed (default: 0.25; "
                   "higher: more recall on rare attributes, less accuracy)")
    p.add_argument("--calibrate-split", metavar="SPLIT",
                   help="split to calibrate on (default: holdout when the holdout fraction is > 0, else valid)")
    p.add_argument("--no-save-thresholds", action="store_true", help="calibrate and report, but leave the checkpoint as is")
    p.add_argument("--subgroups", nargs="*", metavar="NAME",
                   help="attributes whose values slice every metric (default: Male Young; no names: none)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--backend", default="auto", choices=["auto", "onnx", "torch"],
                   help="what runs the model: auto (ONNX Runtime where the checkpoint has a current .onnx export "
                        "beside it, as predict does; else torch), onnx, or torch")
    p.add_argument("--limit", type=int, default=0, help="seeded sample of N images of the split, and of the calibration split (0: all)")
    p.add_argument("--holdout-fraction", type=float, default=-1.0,
                   help="share of train identities carved out as the 'holdout' split (default: the checkpoint's "
                   "training value, so holdout images are ones it never trained on; 0 when it had none)")
    p.add_argument("--seed", type=int, default=-1, help="split/sample seed (default: the checkpoint's training seed)")
    p.add_argument("--layout", default="auto", choices=["auto", "official", "torchvision", "kaggle"])
    p.add_argument("--cache-dir", default="", help="where decoded images are cached")
    p.add_argument("--workers", type=int, default=0, help="processes for the one-time decode (0: one per core)")
    p.add_argument("--flip", action="store_true", help="average predictions with the mirrored image")
    p.add_argument("--grayscale", action="store_true",
                   help="evaluate on black-and-white copies of the images (robustness to grayscale photos)")
    p.add_argument("--swap-clothes", action="store_true",
                   help="paste the neck and collar of a person of the other sex into each image (same necktie, "
                   "necklace and beard labels): how much the model reads Male off clothing")
    p.add_argument("--samples", type=int, default=16, help="faces shown in the CelebA report (default: 16)")
    p.add_argument("--min-n", type=int, default=20, metavar="N",
                   help="UTKFace: smallest group (detected faces) that can be named the worst group (default: 20)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_evaluate)

    c = sub.add_parser(
        "compare",
        help="compare finished runs in one table and say which to choose",
        description="Read RUN/summary.json, RUN/eval.json and RUN/config.toml of each run folder, print a markdown "
        "table (best per column in bold) and a recommendation; with --out also write compare.md/.csv/.html.",
    )
    c.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    c.add_argument("--out", metavar="DIR", help="write compare.md, compare.csv and compare.html here")
    c.add_argument("--metric", default="mean_f1", help="overall metric to choose by (default: mean_f1)")
    c.add_argument("--attributes", nargs="+", metavar="NAME", help="also show accuracy/precision/recall/F1 of these")
    c.add_argument("--tie-tolerance", type=float, default=0.005,
                   help="runs this close to the best count as tied; ties go to the fastest (default: 0.005)")
    c.set_defaults(func=_run_compare)


def _summary_text(r: dict[str, Any]) -> str:
    """A short human summary of an evaluation result."""
    per = r["per_attribute"]

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}"

    lines = [
        (f"{r['architecture']} on {r['split']} ({r['n_images']} {'black-and-white ' if r.get('grayscale') else ''}images"
         f"{', mirror-averaged' if r.get('flip') else ''}"
         f"{', %d with the collar of the other sex' % r['n_swapped'] if r.get('swap_clothes') else ''}"
         f", {len(r['attributes'])} attributes, threshold 0.5)"),
        (f"  mean accuracy {f(r['mean_accuracy'])}  balanced {f(r['mean_balanced_accuracy'])}  F1 {f(r['mean_f1'])}  "
         f"AUC {f(r['mean_auc'])}  exact match {f(r['exact_match'])}  Hamming {f(r['hamming_loss'])}"),
    ]
    if r.get("calibrated"):
        c = r["calibrated"]
        objective = r["calibration"].get("objective")
        if objective == "mixed":
            objective = f"accuracy + {r['calibration'].get('balanced_weight')} x balanced accuracy"
        lines.append(f"  calibrated ({objective} on {r['calibration'].get('split')}): "
                     f"mean accuracy {f(c['mean_accuracy'])}  balanced {f(c['mean_balanced_accuracy'])}  F1 {f(c['mean_f1'])}")
        gain = r["calibration"].get("cross_validated_gain")
        if gain is not None:
            lines.append(f"  calibration cross-checked on held-out {r['calibration'].get('split')} people: "
                         f"{gain:+.4f} {objective} against 0.5")
    width = max(len(a) for a in per)
    lines.append(f"  {'attribute':<{width}}  {'acc':>6}  {'base':>6}  {'bal':>6}  {'F1':>6}  {'AUC':>6}")
    for a, m in sorted(per.items(), key=lambda kv: -(kv[1]["balanced_accuracy"] or 0)):
        lines.append(f"  {a:<{width}}  {f(m['accuracy'])[:6]:>6}  {f(m['majority_baseline'])[:6]:>6}  "
                     f"{f(m['balanced_accuracy'])[:6]:>6}  {f(m['f1'])[:6]:>6}  {f(m['auc'])[:6]:>6}")
    for g, d in (r.get("subgroups") or {}).items():
        lines.append(f"  subgroup {g}: mean accuracy yes {f(d['1']['mean_accuracy'])} / no {f(d['0']['mean_accuracy'])} "
                     f"(gap {f(d['gap']['mean_accuracy'])})")
    lip = r.get("lipstick_shortcut")
    if lip:
        def part(d: dict[str, Any]) -> str:
            return f"{d['called_male']} of {d['n']}" + ("" if d["rate"] is None else f" ({d['rate']:.3f})")

        lines.append(f"  women called Male: without lipstick {part(lip['without_lipstick'])}, "
                     f"with lipstick {part(lip['with_lipstick'])}")
    for w in r.get("warnings", []):
        lines.append(f"  WARNING: {w}")
    return "\n".join(lines)


def _utk_summary_text(r: dict[str, Any]) -> str:
    """A short human summary of a UTKFace evaluation result."""
    g = r["groups"]
    age = r["predicts_age"]

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}"

    def yrs(v: Any) -> str:
        return "-" if v is None else f"{v:.1f}"

    missed = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in r["missed"].items() if v)
    o = g["overall"]
    lines = [
        (f"{r['architecture']} on UTKFace {r['split']} ({r['n_images']} images; faces found in {r['n_detected']}, "
         f"missed {r['n_missed']}{f': {missed}' if missed else ''}; largest face per image, detect + align as predict; "
         f"Male threshold {r['male_threshold']:.2f})"),
        (f"  gender accuracy {f(o['gender_accuracy'])}  balanced {f(o['gender_balanced_accuracy'])}  "
         + (f"age MAE {yrs(o['age_mae'])} years (bias {o['age_bias']:+.1f})" if age and o["age_bias"] is not None
            else "age: not predicted by this model")
         + f"  (over the {r['n_detected']} detected faces)"),
    ]
    width = 24
    head = f"  {'group':<{width}} {'n':>5} {'missed':>6} {'gender acc':>10} {'balanced':>8}" + (f" {'age MAE':>7}" if age else "")

    def row(name: str, s: dict[str, Any]) -> str:
        return (f"  {name:<{width}} {s['n']:>5} {s['n_missed']:>6} {f(s['gender_accuracy']):>10} "
                f"{f(s['gender_balanced_accuracy']):>8}" + (f" {yrs(s['age_mae']):>7}" if age else ""))

    h = g["headline"]
    lines += ["  headline (adults: age 15+):", head]
    lines += [row(name, h[key]) for key, name in (("adults", "adults"), ("adult_women", "adult women"),
                                                  ("adult_men", "adult men"))]
    lines += [row(f"adults, {race}", s) for race, s in h["adult_race"].items()]
    lines += [row("age 70+", h["age_70_plus"]), row("under 15", h["under_15"])]
    lines += ["  by group:", head]
    lines += [row(k, s) for part in ("gender", "race", "age_band") for k, s in g[part].items()]
    big = sorted((c for c in g["cells"] if c["n"] >= g["min_n"] and c["gender_accuracy"] is not None),
                 key=lambda c: c["gender_accuracy"])[:5]
    if big:
        lines += [f"  lowest gender x race x age cells (of {len(g['cells'])}; n >= {g['min_n']}):", head]
        lines += [row(f"{c['gender']} · {c['race']} · {c['age_band']}", c) for c in big]
    w = g["worst_group"]
    if w is None:
        lines.append(f"  worst group: none (no group has {g['min_n']} or more detected faces)")
    else:
        kind = {"age_band": "age band", "cell": "gender x race x age cell"}.get(w["slice"], w["slice"])
        lines.append(f"  worst group (n >= {g['min_n']}): {kind} '{w['group']}', gender accuracy "
                     f"{w['gender_accuracy']:.4f} (n {w['n']})")
    for warning in r.get("warnings", []):
        lines.append(f"  WARNING: {warning}")
    return "\n".join(lines)


# Flags that only mean something for CelebA, with their "not given" values.
_CELEBA_ONLY = (("attributes", None), ("calibrate", None), ("balanced_weight", None), ("calibrate_split", None),
                ("no_save_thresholds", False), ("subgroups", None), ("holdout_fraction", -1.0), ("layout", "auto"),
                ("cache_dir", ""), ("workers", 0), ("flip", False), ("grayscale", False), ("swap_clothes", False))


def _run_evaluate(args: argparse.Namespace) -> int:
    import contextlib
    import sys

    from faceattr.data.utkface import is_utkface
    from faceattr.errors import FaceattrError
    from faceattr.evaluate.evaluator import EvalConfig, evaluate_model, write_json
    from faceattr.evaluate.report import check_report_dir, write_report

    utk = is_utkface(args.data_root)
    if utk:
        given = [name for name, unset in _CELEBA_ONLY if getattr(args, name) != unset]
        if given:
            flags = ", ".join("--" + n.replace("_", "-") for n in given)
            verb, pronoun = ("apply", "them") if len(given) > 1 else ("applies", "it")
            raise FaceattrError(f"{flags} {verb} only to CelebA data and {args.data_root} is UTKFace; drop {pronoun}")
    elif args.min_n != 20:
        raise FaceattrError(f"--min-n applies only to UTKFace data and {args.data_root} is not UTKFace; drop it")
    if args.report:
        check_report_dir(args.report)  # fail before minutes of work, not after
    json_to_stdout = args.json == "-"
    # With `--json -` stdout carries the JSON alone: anything a library prints goes to stderr.
    guard = contextlib.redirect_stdout(sys.stderr) if json_to_stdout else contextlib.nullcontext()
    if utk:
        from faceattr.evaluate.utk import UtkEvalConfig, evaluate_utkface

        ucfg = UtkEvalConfig(model=args.model, data_root=args.data_root, split=args.split or "test",
                             seed=args.seed, limit=args.limit, device=args.device,
                             batch_size=args.batch_size, min_n=args.min_n, progress=not args.no_progress,
                             backend=args.backend)
        with guard:
            uev = evaluate_utkface(ucfg)
            report = write_report(uev, args.report) if args.report else None
            if args.json and not json_to_stdout:
                write_json(uev.result, args.json)
        return _finish(uev.result, _utk_summary_text, args, report, json_to_stdout)

    cfg = EvalConfig(
        model=args.model,
        data_root=args.data_root,
        split=args.split or "valid",
        attributes=list(args.attributes or []),
        subgroups=None if args.subgroups is None else list(args.subgroups),
        calibrate=args.calibrate or "",
        calibrate_split=args.calibrate_split or "",
        **({} if args.balanced_weight is None else {"balanced_weight": args.balanced_weight}),
        save_thresholds=not args.no_save_thresholds,
        batch_size=args.batch_size,
        device=args.device,
        limit=args.limit,
        holdout_fraction=args.holdout_fraction,
        seed=args.seed,
        layout=args.layout,
        cache_dir=args.cache_dir,
        workers=args.workers,
        flip=args.flip,
        backend=args.backend,
        grayscale=args.grayscale,
        swap_clothes=args.swap_clothes,
        progress=not args.no_progress,
    )
    with guard:
        ev = evaluate_model(cfg)
        report = write_report(ev, args.report, samples=args.samples) if args.report else None
        if args.json and not json_to_stdout:
            write_json(ev.result, args.json)
    return _finish(ev.result, _summary_text, args, report, json_to_stdout)


def _finish(result: dict[str, Any], summary: Any, args: argparse.Namespace, report: Any, json_to_stdout: bool) -> int:
    """Print the JSON (``--json -``) or the summary and what was written."""
    from faceattr.evaluate.evaluator import write_json

    if json_to_stdout:
        write_json(result, "-")
        return 0
    print(summary(result))
    if args.json:
        print(f"wrote {args.json}")
    if report is not None:
        print(f"wrote {report}")
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    from faceattr.evaluate.compare import (
        compare_runs,
        render_markdown,
        write_comparison,
    )

    cmp = compare_runs(args.runs, metric=args.metric, attributes=args.attributes, tie_tolerance=args.tie_tolerance)
    print(render_markdown(cmp), end="")
    if args.out:
        files = write_comparison(cmp, args.out)
        print(f"\nwrote {', '.join(str(p) for p in files.values())}")
    return 0
