"""`faceattr sweep GRID.toml`: train a grid of runs from one TOML file, evaluate each, compare them.

Grid file format (examples in ``configs/sweeps/``)::

    [sweep]                       # optional; every key has a default
    name = "smiling: architecture x treatment"   # free text for logs
    out = "runs/sweep-smiling"    # output folder (--out overrides; default runs/<file stem>)
    metric = "mean_f1"            # what `compare` ranks by (see faceattr.evaluate.compare.METRICS)
    attributes = ["Smiling"]      # per-attribute columns in the comparison
    exclude = [{ model = "celeb_cnn", treatment = "pretrained_bce" }]  # combinations to skip

    [sweep.eval]                  # how each finished run is evaluated: EvalConfig keys
    split = "valid"               # (faceattr.evaluate.EvalConfig); model and data_root come
    limit = 0                     # from the run itself

    [base]                        # a TrainConfig, exactly what `faceattr train --config` reads
    epochs = 3
    [base.data]
    attributes = ["Smiling"]

    [axes.model]                  # an axis: option name -> partial TrainConfig merged over [base]
    mobilenet_v2 = { model.name = "mobilenet_v2" }
    celeb_cnn = { model.name = "celeb_cnn", model.image_size = [128, 128] }

    [axes.treatment]
    pretrained_bce = { model.pretrained = true, loss = "bce" }
    scratch_ce = { model.pretrained = false, loss = "ce" }

The grid is the product of the axes in file order; a run is named by its options joined with
``-`` (``mobilenet_v2-pretrained_bce``) and trains into ``OUT/<run name>/``. An ``exclude`` entry
maps axis names to option names (or lists of them) and drops every run matching all of them.

Each run: ``fit`` (status and errors land in its ``summary.json``), then ``evaluate_model`` on
``[sweep.eval]``, saved as ``eval.json``. A failing run is recorded and the sweep goes on.
Re-running the same grid skips runs that are done and evaluated, evaluates runs that are done
but not evaluated, resumes interrupted ones from ``last.safetensors`` and leaves failed ones alone
unless ``retry_failed``. At the end ``OUT/compare.{md,csv,html}`` compares every finished run.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import os
import re
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceattr.errors import FaceattrError, did_you_mean

__all__ = ["RunOutcome", "Sweep", "SweepResult", "SweepRun", "load_sweep", "register", "run_sweep"]

logger = logging.getLogger(__name__)

_SWEEP_KEYS = ("name", "out", "metric", "attributes", "exclude", "eval")
_TOP_KEYS = ("sweep", "base", "axes")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.=+]+$")  # '-' joins option names, so it may not appear in one


@dataclass
class SweepRun:
    """One point of the grid."""

    name: str
    options: dict[str, str]  # axis -> option name
    config: Any  # TrainConfig with out = OUT/<name>


@dataclass
class Sweep:
    """A parsed grid file."""

    name: str
    out: Path
    runs: list[SweepRun]
    eval: dict[str, Any]
    metric: str
    attributes: list[str]
    source: str  # the grid file's text, saved beside the runs


@dataclass
class RunOutcome:
    """What happened to one run in this invocation."""

    name: str
    status: str  # trained | resumed | skipped | evaluated | failed | skipped-failed
    error: str | None = None
    seconds: float = 0.0


@dataclass
class SweepResult:
    """Outcomes of every run and the comparison files (if any run could be compared)."""

    out: Path
    outcomes: list[RunOutcome] = field(default_factory=list)
    comparison: Any = None
    files: dict[str, Path] = field(default_factory=dict)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `over` into a copy of `base` (tables merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _check_keys(table: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for k in table:
        if k not in allowed:
            raise FaceattrError(f"{where}: unknown key '{k}'{did_you_mean(k, allowed)}; allowed: {', '.join(allowed)}")


def _excluded(options: dict[str, str], exclude: list[dict[str, Any]]) -> bool:
    for rule in exclude:
        if all(options.get(axis) in ([want] if isinstance(want, str) else list(want)) for axis, want in rule.items()):
            return True
    return False


def load_sweep(
    path: str | Path,
    *,
    out: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    eval_overrides: dict[str, Any] | None = None,
) -> Sweep:
    """Parse and validate a grid file; every run's TrainConfig is checked before anything trains."""
    from faceattr.config import TrainConfig, apply_overrides, config_from_dict
    from faceattr.evaluate.compare import METRICS
    from faceattr.evaluate.evaluator import EvalConfig

    p = Path(path)
    if not p.is_file():
        raise FaceattrError(f"sweep file not found: {p}; pass a grid .toml (examples in configs/sweeps/)")
    text = p.read_text(encoding="utf-8")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise FaceattrError(f"sweep file {p} is not valid TOML: {e}") from None
    where = str(p)
    _check_keys(doc, _TOP_KEYS, where)
    meta = doc.get("sweep", {})
    _check_keys(meta, _SWEEP_KEYS, f"{where} [sweep]")
    base = doc.get("base", {})
    if not isinstance(base, dict):
        raise FaceattrError(f"{where}: [base] must be a table holding a TrainConfig")
    axes = doc.get("axes", {})
    if not isinstance(axes, dict) or not axes:
        raise FaceattrError(f"{where}: no [axes.NAME] tables; add at least one axis (see configs/sweeps/)")
    for axis, options in axes.items():
        if not isinstance(options, dict) or not options:
            raise FaceattrError(f"{where} [axes.{axis}]: needs one or more 'option = {{ key = value }}' entries")
        for opt, change in options.items():
            if not _NAME_RE.match(opt):
                raise FaceattrError(f"{where} [axes.{axis}]: option name '{opt}' may hold letters, digits and _ . = + only")
            if not isinstance(change, dict):
                raise FaceattrError(f"{where} [axes.{axis}] {opt}: expected a table like {{ optim.lr = 0.01 }}, got {change!r}")
    exclude = meta.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(r, dict) for r in exclude):
        raise FaceattrError(f"{where} [sweep] exclude: expected a list of tables like {{ model = \"x\" }}")
    for rule in exclude:
        for axis, want in rule.items():
            if axis not in axes:
                raise FaceattrError(f"{where} [sweep] exclude: unknown axis '{axis}'{did_you_mean(axis, axes)}")
            for w in [want] if isinstance(want, str) else list(want):
                if w not in axes[axis]:
                    raise FaceattrError(
                        f"{where} [sweep] exclude: axis '{axis}' has no option '{w}'{did_you_mean(str(w), axes[axis])}"
                    )
    metric = meta.get("metric", "mean_f1")
    if metric not in METRICS:
        raise FaceattrError(f"{where} [sweep] metric: unknown '{metric}'{did_you_mean(metric, METRICS)}; choose from: {', '.join(METRICS)}")
    eval_table = dict(meta.get("eval", {}))
    eval_table.update({k: v for k, v in (eval_overrides or {}).items() if v is not None})
    for k in ("model", "data_root"):
        if k in eval_table:
            raise FaceattrError(f"{where} [sweep.eval]: '{k}' comes from each run; remove it")
    config_from_dict(EvalConfig, eval_table, "sweep.eval.")  # validate now, not after hours of training

    out_dir = Path(out) if out is not None else Path(meta.get("out") or Path("runs") / p.stem)
    runs: list[SweepRun] = []
    names = list(axes)
    for combo in itertools.product(*(list(axes[a].items()) for a in names)):
        options = {axis: opt for axis, (opt, _) in zip(names, combo, strict=True)}
        if _excluded(options, exclude):
            continue
        merged = copy.deepcopy(base)
        for _, change in combo:
            merged = _merge(merged, change)
        apply_overrides(merged, dict(overrides or {}))
        name = "-".join(options.values())
        merged["out"] = str(out_dir / name)
        try:
            cfg = config_from_dict(TrainConfig, merged)
        except FaceattrError as e:
            raise FaceattrError(f"{where}, run '{name}': {e}") from None
        runs.append(SweepRun(name=name, options=options, config=cfg))
    if not runs:
        raise FaceattrError(f"{where}: every combination is excluded; nothing to run")
    attributes = meta.get("attributes", [])
    if isinstance(attributes, str):
        attributes = [attributes]
    return Sweep(name=str(meta.get("name", p.stem)), out=out_dir, runs=runs, eval=eval_table, metric=metric,
                 attributes=list(attributes), source=text)


def _read_summary(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _record_failure(run: SweepRun, folder: Path, error: BaseException) -> str:
    """Make sure summary.json says 'failed' with the error (fit writes it; errors before fit do not)."""
    message = f"{type(error).__name__}: {error}"
    summary = _read_summary(folder)
    if summary is None or summary.get("status") not in ("failed", "interrupted"):
        folder.mkdir(parents=True, exist_ok=True)
        base = summary or {}
        base.update(status="failed", error=message, model=run.config.model.name,
                    attributes=base.get("attributes") or list(run.config.data.attributes))
        for k in ("params", "train_time_s", "images_per_s", "best_epoch", "best_val_loss", "best_val_mean_accuracy"):
            base.setdefault(k, None)
        _write_json(folder / "summary.json", base)
    return str((_read_summary(folder) or {}).get("error") or message)


def _config_changed(run: SweepRun, folder: Path) -> bool:
    from faceattr.config import config_to_dict

    saved = folder / "config.toml"
    if not saved.is_file():
        return False
    try:
        old = tomllib.loads(saved.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return True
    new = config_to_dict(run.config)
    keep = {"progress", "device", "threads"}  # runtime settings that do not change what is trained
    return {k: v for k, v in old.items() if k not in keep} != {k: v for k, v in new.items() if k not in keep}


def _evaluate(sweep: Sweep, run: SweepRun, folder: Path, progress: bool) -> None:
    from faceattr.config import config_from_dict
    from faceattr.evaluate.evaluator import EvalConfig, evaluate_model, write_json

    table = {"progress": progress, "cache_dir": run.config.data.cache_dir, "workers": run.config.data.workers,
             "layout": run.config.data.layout, "device": run.config.device, **sweep.eval}
    cfg: EvalConfig = config_from_dict(EvalConfig, table, "sweep.eval.")
    cfg.model = str(folder)
    cfg.data_root = run.config.data.root
    ev = evaluate_model(cfg)
    write_json(ev.result, folder / "eval.json")


def run_sweep(sweep: Sweep, *, retry_failed: bool = False, progress: bool = True) -> SweepResult:
    """Train, evaluate and compare every run of `sweep`; failures are recorded and skipped over."""
    from faceattr.train import fit

    result = SweepResult(out=sweep.out)
    try:
        sweep.out.mkdir(parents=True, exist_ok=True)
        (sweep.out / "sweep.toml").write_text(sweep.source, encoding="utf-8")
    except OSError as e:
        raise FaceattrError(f"cannot write the sweep into {sweep.out}: {e.strerror or e}; choose a writable --out") from None
    total = len(sweep.runs)
    for k, run in enumerate(sweep.runs, 1):
        folder = Path(run.config.out)
        t0 = time.perf_counter()
        summary = _read_summary(folder)
        status = (summary or {}).get("status")
        tag = f"[{k}/{total}] {run.name}"
        if status == "done" and _config_changed(run, folder):
            logger.warning("%s: finished with a different config than the grid now gives; kept as is "
                           "(delete %s to train it again)", tag, folder)
        if status == "done" and (folder / "eval.json").is_file():
            logger.info("%s: done and evaluated, skipping", tag)
            result.outcomes.append(RunOutcome(run.name, "skipped"))
            continue
        if status == "failed" and not retry_failed:
            error = (summary or {}).get("error")
            logger.warning("%s: failed earlier (%s); skipping (--retry-failed to try again)", tag, error)
            result.outcomes.append(RunOutcome(run.name, "skipped-failed", error))
            continue
        outcome = "evaluated"
        if status != "done":
            resume = (folder / "last.safetensors").is_file()
            logger.info("%s: %s", tag, "resuming" if resume else "training")
            try:
                fit(run.config, resume=resume)
                outcome = "resumed" if resume else "trained"
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - a broken run must not stop the grid: record it and go on
                error = _record_failure(run, folder, e)
                logger.error("%s: failed: %s", tag, error)
                result.outcomes.append(RunOutcome(run.name, "failed", error, time.perf_counter() - t0))
                continue
        try:
            _evaluate(sweep, run, folder, progress)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - same for a run whose evaluation breaks
            error = f"evaluation failed: {type(e).__name__}: {e}"
            logger.error("%s: %s", tag, error)
            result.outcomes.append(RunOutcome(run.name, "failed", error, time.perf_counter() - t0))
            continue
        result.outcomes.append(RunOutcome(run.name, outcome, None, time.perf_counter() - t0))
        logger.info("%s: %s in %.1fs", tag, outcome, time.perf_counter() - t0)

    from faceattr.evaluate.compare import compare_runs, write_comparison

    folders = [Path(r.config.out) for r in sweep.runs if (Path(r.config.out) / "summary.json").is_file()]
    try:
        result.comparison = compare_runs(folders, metric=sweep.metric, attributes=sweep.attributes or None)
        result.files = write_comparison(result.comparison, sweep.out)
    except FaceattrError as e:
        logger.warning("no comparison written: %s", e)
    return result


# ----------------------------------------------------------------------------------------------
# CLI (registered by faceattr.train.cli; argparse only at import time)


def register(sub: Any) -> None:
    """Add the `sweep` subcommand."""
    p = sub.add_parser(
        "sweep",
        help="train, evaluate and compare a grid of runs from one TOML file",
        description="Train every run of a grid file (format: faceattr.train.sweep docstring; examples in "
        "configs/sweeps/) into OUT/<run>/, evaluate each into eval.json and write OUT/compare.{md,csv,html}. "
        "Re-running skips finished runs; failed runs are recorded and the sweep goes on.",
    )
    p.add_argument("grid", metavar="GRID.toml", help="grid file")
    p.add_argument("--out", metavar="DIR", help="output folder (default: [sweep] out, else runs/<grid name>)")
    p.add_argument("--data-root", help="CelebA folder for every run (overrides [base] data.root)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a TrainConfig key in every run, e.g. --set max_steps=100 (repeatable)")
    p.add_argument("--eval-split", help="split each run is evaluated on (overrides [sweep.eval] split)")
    p.add_argument("--eval-limit", type=int, help="evaluate on a seeded sample of N images")
    p.add_argument("--retry-failed", action="store_true", help="train runs that failed before again")
    p.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from faceattr.config import parse_assignments

    overrides: dict[str, Any] = {}
    if args.data_root:
        overrides["data.root"] = args.data_root
    overrides.update(parse_assignments(args.set))
    if args.no_progress:
        overrides["progress"] = False
    sweep = load_sweep(args.grid, out=args.out, overrides=overrides,
                       eval_overrides={"split": args.eval_split, "limit": args.eval_limit})
    if args.dry_run:
        for r in sweep.runs:
            print(f"{r.name}\t{r.config.out}")
        return 0
    result = run_sweep(sweep, retry_failed=args.retry_failed, progress=not args.no_progress)
    print(f"sweep '{sweep.name}': {len(sweep.runs)} run(s) in {sweep.out}")
    for o in result.outcomes:
        print(f"  {o.name:<40} {o.status}{'  ' + o.error if o.error else ''}")
    if result.comparison is not None:
        from faceattr.evaluate.compare import render_markdown

        print()
        print(render_markdown(result.comparison), end="")
    failed = [o for o in result.outcomes if o.status == "failed"]
    return 1 if failed and len(failed) == len(result.outcomes) else 0
