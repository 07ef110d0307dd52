"""Compare finished runs side by side and say which one to choose.

A run folder is what `faceattr train` / `faceattr sweep` writes: ``summary.json`` (status, params,
train time, images/s), ``config.toml`` (model, pretrained, loss) and ``eval.json`` (the evaluation
JSON of `faceattr.evaluate.schema`). `compare_runs` reads them into one table, marks the best value
of every column, and recommends the run with the best ``metric``; runs within ``tie_tolerance`` of
the best count as tied. A tied run takes the choice from the best-scoring one only if it is a
different network (model, parameter count or input size, where both runs record them) and at least
`SPEED_MARGIN` faster at inference (evaluation images/s); among such runs the fastest wins, then the
fastest to train, then the smallest. The same network at the same size runs at the same speed, and
its measured images/s differ by timing noise alone (a data-size sweep, a seed or learning-rate
grid); a best run with no recorded speed keeps the choice. Runs that failed or were never evaluated
are listed apart.

A sweep folder given in place of run folders stands for every run in it. `write_comparison`
writes ``compare.md``, ``compare.csv`` and ``compare.html``.
"""

from __future__ import annotations

import contextlib
import csv
import html
import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from faceattr._atomic import atomic_output, write_error
from faceattr.errors import FaceattrError, did_you_mean, resolve_names

__all__ = ["METRICS", "Column", "Comparison", "RunRecord", "compare_runs", "read_run", "render_markdown", "write_comparison"]

logger = logging.getLogger(__name__)

# Overall metrics a comparison can rank by; True when higher is better.
METRICS: dict[str, bool] = {
    "mean_f1": True,
    "mean_accuracy": True,
    "mean_balanced_accuracy": True,
    "mean_precision": True,
    "mean_recall": True,
    "mean_auc": True,
    "exact_match": True,
    "hamming_loss": False,
}
_LABELS = {
    "mean_f1": "mean F1",
    "mean_accuracy": "mean accuracy",
    "mean_balanced_accuracy": "mean balanced accuracy",
    "mean_precision": "mean precision",
    "mean_recall": "mean recall",
    "mean_auc": "mean ROC AUC",
    "exact_match": "exact match",
    "hamming_loss": "Hamming loss",
}
# A tied run must be this much faster at inference than the best one to be chosen over it: a few
# per cent is what timing the same network twice on a shared CPU gives.
SPEED_MARGIN = 0.10
_PER_ATTR = (("accuracy", "acc"), ("precision", "P"), ("recall", "R"), ("f1", "F1"))


@dataclass
class RunRecord:
    """One run folder as read from disk."""

    name: str
    path: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    evaluation: dict[str, Any] | None
    problem: str | None = None  # why it cannot be compared (failed, not evaluated)


@dataclass
class Column:
    """One table column: key, header, how to format, which direction is best."""

    key: str
    header: str
    kind: str  # text | int | seconds | rate | metric
    higher_is_better: bool | None = None  # None: not ranked


@dataclass
class Comparison:
    """The comparison table and the recommendation."""

    metric: str
    columns: list[Column]
    rows: list[dict[str, Any]]  # one per comparable run, keyed by column key
    best: dict[str, list[str]]  # column key -> names of the runs holding the best value
    choice: str
    reason: str
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (run, why)
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise FaceattrError(f"{path} is not readable JSON ({e}); re-run the evaluation or remove the file") from None
    return data if isinstance(data, dict) else None


def read_run(path: str | Path) -> RunRecord:
    """Read summary.json, config.toml and eval.json of one run folder."""
    p = Path(path)
    if not p.is_dir():
        raise FaceattrError(f"run folder not found: {p}; pass folders written by `faceattr train` or `faceattr sweep`")
    summary = _read_json(p / "summary.json")
    if summary is None:
        raise FaceattrError(f"{p} is not a run folder (no summary.json); pass folders written by `faceattr train`")
    config: dict[str, Any] = {}
    if (p / "config.toml").is_file():
        try:
            config = tomllib.loads((p / "config.toml").read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise FaceattrError(f"{p / 'config.toml'} is not valid TOML: {e}") from None
    evaluation = _read_json(p / "eval.json")
    problem = None
    if summary.get("status") != "done":
        problem = f"{summary.get('status', 'unknown')}: {summary.get('error') or 'no error recorded'}"
    elif evaluation is None:
        problem = "finished but not evaluated (no eval.json; run `faceattr evaluate RUN --json RUN/eval.json`)"
    return RunRecord(name=p.name, path=p, summary=summary, config=config, evaluation=evaluation, problem=problem)


def _expand(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders from the arguments: a sweep folder stands for the runs in it; stray files are skipped."""
    out: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_file():
            logger.warning("skipping %s: a file, not a run folder", p)  # `compare OUT/*` also matches compare.md
        elif p.is_dir() and not (p / "summary.json").is_file():
            children = sorted(c for c in p.iterdir() if c.is_dir() and (c / "summary.json").is_file())
            out.extend(children or [p])  # no runs inside: let read_run say what is wrong
        else:
            out.append(p)
    if not out:
        raise FaceattrError("no run folders among the arguments; pass folders written by `faceattr train` or `faceattr sweep`")
    return out


def _network(rec: RunRecord) -> tuple[Any, Any, Any]:
    """(model, parameter count, input size), None where the run does not record one."""
    model = rec.config.get("model", {})
    name = rec.summary.get("model") or model.get("name") or (rec.evaluation or {}).get("architecture")
    size = model.get("image_size")
    return (name, rec.summary.get("params"), tuple(size) if isinstance(size, list) else size)


def _other_network(a: tuple[Any, Any, Any], b: tuple[Any, Any, Any]) -> bool:
    """True when two runs are known to differ in model, parameter count or input size."""
    return any(x is not None and y is not None and x != y for x, y in zip(a, b, strict=True))


def _treatment(rec: RunRecord) -> str:
    model = rec.config.get("model", {})
    start = "pretrained" if model.get("pretrained") else "scratch"
    return f"{start} + {rec.config.get('loss', '?')}"


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def compare_runs(
    runs: Sequence[str | Path],
    *,
    metric: str = "mean_f1",
    attributes: list[str] | None = None,
    tie_tolerance: float = 0.005,
) -> Comparison:
    """Read run folders and build the comparison table and recommendation."""
    if metric not in METRICS:
        raise FaceattrError(f"unknown metric '{metric}'{did_you_mean(metric, METRICS)}; choose from: {', '.join(METRICS)}")
    if not runs:
        raise FaceattrError("no runs to compare; pass one or more run folders")
    records = [read_run(r) for r in _expand(runs)]
    names = [r.name for r in records]
    if len(set(names)) != len(names):
        # Same folder name under different parents: label runs by their path instead.
        for r in records:
            r.name = str(r.path)
    ok = [r for r in records if r.problem is None]
    excluded = [(r.name, r.problem or "") for r in records if r.problem is not None]
    if not ok:
        why = "; ".join(f"{n}: {p}" for n, p in excluded)
        raise FaceattrError(f"none of the runs can be compared ({why})")

    evaluated = [set(r.evaluation["attributes"]) for r in ok if r.evaluation]
    common = sorted(set.intersection(*evaluated)) if evaluated else []
    chosen_attrs: list[str] = []
    if attributes:
        order = [a for a in ok[0].evaluation["attributes"] if a in common] if ok[0].evaluation else common
        chosen_attrs = resolve_names(attributes, order, "attribute (evaluated in every run)")

    columns = [
        Column("run", "run", "text"),
        Column("model", "model", "text"),
        Column("treatment", "treatment", "text"),
        Column("params", "params", "int", False),
        Column("train_time_s", "train time (s)", "seconds", False),
        Column("train_images_per_s", "train img/s", "int", True),
        Column("eval_images_per_s", "eval img/s", "int", True),
        Column("mean_accuracy", "mean acc", "metric", True),
        Column("mean_precision", "mean P", "metric", True),
        Column("mean_recall", "mean R", "metric", True),
        Column("mean_f1", "mean F1", "metric", True),
    ]
    if metric not in {c.key for c in columns}:
        columns.append(Column(metric, _LABELS[metric], "metric", METRICS[metric]))
    for a in chosen_attrs:
        for key, short in _PER_ATTR:
            columns.append(Column(f"{a}.{key}", f"{a} {short}", "metric", True))

    rows: list[dict[str, Any]] = []
    for r in ok:
        ev = r.evaluation or {}
        row: dict[str, Any] = {
            "run": r.name,
            "model": r.summary.get("model") or ev.get("architecture"),
            "treatment": _treatment(r),
            "params": r.summary.get("params"),
            "train_time_s": r.summary.get("train_time_s"),
            "train_images_per_s": r.summary.get("images_per_s"),
            "eval_images_per_s": ev.get("images_per_s"),
            # Not a column: what decides inference speed, so that identical networks never win on timing noise.
            "_network": _network(r),
        }
        for key in METRICS:
            row[key] = ev.get(key)
        for a in chosen_attrs:
            for key, _ in _PER_ATTR:
                row[f"{a}.{key}"] = (ev.get("per_attribute") or {}).get(a, {}).get(key)
        rows.append(row)

    best: dict[str, list[str]] = {}
    for c in columns:
        if c.higher_is_better is None:
            continue
        vals: list[tuple[str, float]] = [(row["run"], float(row[c.key])) for row in rows if _is_num(row.get(c.key))]
        if len(vals) < 2:
            continue  # one run holds no "best"
        top = max(v for _, v in vals) if c.higher_is_better else min(v for _, v in vals)
        best[c.key] = [n for n, v in vals if v == top]

    notes: list[str] = []
    splits = {(r.evaluation or {}).get("split") for r in ok}
    sizes = {(r.evaluation or {}).get("n_images") for r in ok}
    if len(splits) > 1 or len(sizes) > 1:
        notes.append(f"runs were evaluated on different data (splits {sorted(map(str, splits))}, image counts "
                     f"{sorted(map(str, sizes))}): their metrics are not directly comparable")
    choice, reason = _recommend(rows, metric, tie_tolerance)
    counts = [n for n in sizes if isinstance(n, int)]
    noise = _noise_note(rows, metric, min(counts) if counts else 0)
    if noise:
        notes.append(noise)
    return Comparison(metric=metric, columns=columns, rows=rows, best=best, choice=choice, reason=reason,
                      excluded=excluded, notes=notes)


def _noise_note(rows: list[dict[str, Any]], metric: str, n_images: int) -> str | None:
    """A note when the chosen run's lead is smaller than the sampling noise of the evaluation set."""
    vals = sorted((r[metric] for r in rows if _is_num(r.get(metric))), reverse=METRICS[metric])
    if len(vals) < 2 or n_images <= 0:
        return None
    margin = abs(vals[0] - vals[1])
    # Worst-case standard error of a proportion measured on n images; clustered images (several per
    # identity, as in CelebA's valid split) make the real uncertainty larger still.
    se = 0.5 / math.sqrt(n_images)
    if margin >= se:
        return None
    return (f"the lead of the best {_LABELS[metric]} over the next run ({margin:.4f}) is below the sampling noise of "
            f"a {n_images}-image evaluation (about ±{se:.3f}); treat the top runs as tied, or evaluate on more images")


def _recommend(rows: list[dict[str, Any]], metric: str, tol: float) -> tuple[str, str]:
    """Pick the run with the best `metric`; a tied run (within `tol`) takes it only as another network
    at least SPEED_MARGIN faster at inference (then training speed, then size decide among those)."""
    label = _LABELS[metric]
    scored = [r for r in rows if _is_num(r.get(metric))]
    if not scored:
        return rows[0]["run"], f"no run has a value for {label}; nothing to choose between"
    sign = 1.0 if METRICS[metric] else -1.0
    top = max(sign * r[metric] for r in scored)
    tied = [r for r in scored if sign * r[metric] >= top - tol - 1e-12]

    def speed_key(r: dict[str, Any]) -> tuple[float, float, float, float]:
        ev_ips = r["eval_images_per_s"] if _is_num(r.get("eval_images_per_s")) else -1.0
        tr_ips = r["train_images_per_s"] if _is_num(r.get("train_images_per_s")) else -1.0
        params = r["params"] if _is_num(r.get("params")) else float("inf")
        return (ev_ips, tr_ips, -params, sign * r[metric])

    leader = max(scored, key=lambda r: sign * r[metric])
    others = sorted((r for r in scored if r is not leader), key=lambda r: -sign * r[metric])
    margin = f"; next best is {others[0]['run']} at {others[0][metric]:.4f}" if others else ""
    if len(tied) == 1:
        return leader["run"], f"best {label} ({leader[metric]:.4f}){margin}"
    rest = ", ".join(f"{r['run']} ({r[metric]:.4f})" for r in tied if r is not leader)
    lead_ips = leader["eval_images_per_s"] if _is_num(leader.get("eval_images_per_s")) else None
    # Only another network can be faster; the same one differs by timing noise. Without the best
    # run's own speed there is nothing to be faster than.
    faster = [r for r in tied if r is not leader and lead_ips is not None and _is_num(r.get("eval_images_per_s"))
              and _other_network(r["_network"], leader["_network"])
              and r["eval_images_per_s"] >= lead_ips * (1 + SPEED_MARGIN)]
    if not faster:
        same = not any(_other_network(r["_network"], leader["_network"]) for r in tied)
        known = all(v is not None for r in tied for v in r["_network"])
        same_net = "the same network at the same input size" + ("" if known else " as far as the runs record")
        why = (f"they are {same_net}, so timing cannot separate them" if same
               else "its inference speed was not recorded" if lead_ips is None
               else f"none of them is at least {SPEED_MARGIN:.0%} faster at inference")
        return leader["run"], f"best {label} ({leader[metric]:.4f}); tied within {tol} with {rest}, but {why}"
    pick = max(faster, key=speed_key)
    rest = ", ".join(f"{r['run']} ({r[metric]:.4f})" for r in tied if r is not pick)
    speed = (f"{pick['eval_images_per_s']:.0f} images/s at inference" if _is_num(pick.get("eval_images_per_s"))
             else "the fastest")
    return pick["run"], (
        f"{label} {pick[metric]:.4f} is within {tol} of the best ({leader[metric]:.4f}), tied with {rest}; "
        f"the tie goes to speed: {speed}"
    )


# ----------------------------------------------------------------------------------------------
# Output


def _cell(c: Column, v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if c.kind == "int":
        return f"{round(v):,}"
    if c.kind == "seconds":
        return f"{v:.1f}"
    if c.kind == "metric":
        return f"{v:.4f}"
    return str(v)


def _markdown(cmp: Comparison) -> str:
    head = "| " + " | ".join(c.header for c in cmp.columns) + " |"
    sep = "|" + "|".join("---" if c.kind == "text" else "---:" for c in cmp.columns) + "|"
    lines = [head, sep]
    for row in cmp.rows:
        cells = []
        for c in cmp.columns:
            text = _cell(c, row.get(c.key))
            if row["run"] in cmp.best.get(c.key, []):
                text = f"**{text}**"
            if c.key == "run" and row["run"] == cmp.choice:
                text = f"**{text}** ✓"
            cells.append(text.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    out = [
        f"## Run comparison ({len(cmp.rows)} run{'s' if len(cmp.rows) != 1 else ''}, ranked by {cmp.metric})",
        "",
        *lines,
        "",
        "Bold: best in its column (fewest params, shortest train time, otherwise highest).",
        "",
        f"**Choose `{cmp.choice}`**: {cmp.reason}.",
    ]
    for n in cmp.notes:
        out += ["", f"Note: {n}."]
    if cmp.excluded:
        out += ["", "Not compared:"] + [f"- `{n}`: {why}" for n, why in cmp.excluded]
    return "\n".join(out) + "\n"


def _csv(cmp: Comparison) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([c.key for c in cmp.columns] + ["best_in", "chosen"])
    for row in cmp.rows:
        best_in = [c.key for c in cmp.columns if row["run"] in cmp.best.get(c.key, [])]
        w.writerow([("" if row.get(c.key) is None else row.get(c.key)) for c in cmp.columns]
                   + [";".join(best_in), "yes" if row["run"] == cmp.choice else ""])
    return buf.getvalue()


_CSS = """
body { font: 14px/1.5 -apple-system, "Segoe UI", Roboto, Arial, sans-serif; color:#1d2330; background:#f6f7f9; margin:0; }
main { max-width: 1200px; margin: 0 auto; padding: 24px; }
table { border-collapse: collapse; background:#fff; border:1px solid #e4e7ec; font-variant-numeric: tabular-nums; }
th, td { padding: 6px 10px; border-bottom: 1px solid #e4e7ec; text-align: right; white-space: nowrap; }
th:nth-child(-n+3), td:nth-child(-n+3) { text-align: left; }
th { background:#fafbfc; color:#667085; }
td.best { background:#e6f4ec; font-weight: 650; color:#1f6b3e; }
tr.chosen td:first-child { font-weight: 700; }
.choice { background:#fff; border-left: 4px solid #2e9d5b; padding: 10px 14px; margin: 16px 0; }
.note { color:#7a4a00; background:#fff4e5; padding: 8px 12px; border-radius: 8px; }
"""


def _html(cmp: Comparison) -> str:
    head = "".join(f"<th>{html.escape(c.header)}</th>" for c in cmp.columns)
    body = []
    for row in cmp.rows:
        tds = []
        for c in cmp.columns:
            cls = ' class="best"' if row["run"] in cmp.best.get(c.key, []) else ""
            text = html.escape(_cell(c, row.get(c.key)))
            if c.key == "run" and row["run"] == cmp.choice:
                text += " ✓"
            tds.append(f"<td{cls}>{text}</td>")
        body.append(f'<tr{" class=chosen" if row["run"] == cmp.choice else ""}>{"".join(tds)}</tr>')
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in cmp.notes)
    excluded = ""
    if cmp.excluded:
        excluded = "<h3>Not compared</h3><ul>" + "".join(
            f"<li><code>{html.escape(n)}</code>: {html.escape(w)}</li>" for n, w in cmp.excluded) + "</ul>"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>faceattr run comparison</title>"
        f"<style>{_CSS}</style></head><body><main><h1>Run comparison</h1>"
        f"<p>{len(cmp.rows)} runs, ranked by <b>{html.escape(cmp.metric)}</b>. Green: best in its column.</p>"
        f'<div style="overflow-x:auto"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
        f'<div class="choice">Choose <b>{html.escape(cmp.choice)}</b>: {html.escape(cmp.reason)}.</div>'
        f"{notes}{excluded}</main></body></html>"
    )


def render_markdown(cmp: Comparison) -> str:
    """The comparison as markdown (table, recommendation, excluded runs)."""
    return _markdown(cmp)


def write_comparison(cmp: Comparison, out_dir: str | Path) -> dict[str, Path]:
    """Write compare.md, compare.csv and compare.html into `out_dir`; returns their paths."""
    out = Path(out_dir)
    files = {"md": out / "compare.md", "csv": out / "compare.csv", "html": out / "compare.html"}
    texts = {"md": _markdown(cmp), "csv": _csv(cmp), "html": _html(cmp)}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(out, e, "comparison") from None
    # All three written as temp files before any replaces its old version: a full disk never leaves
    # a new compare.md beside an old compare.csv.
    with contextlib.ExitStack() as stack:
        for k, p in files.items():
            tmp = stack.enter_context(atomic_output(p, "comparison"))
            tmp.write_text(texts[k], encoding="utf-8", newline="")
    return files
