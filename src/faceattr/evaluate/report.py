"""The HTML evaluation report: one self-contained page (PNGs embedded as base64) plus the PNGs.

``write_report(evaluation, DIR)`` writes ``DIR/report.html`` and ``DIR/*.png``:

- ``accuracy.png``   per-attribute accuracy, sorted, beside the majority-class baseline
- ``confusion.png``  a grid of per-attribute confusion matrices (rows: truth, normalised per row)
- ``subgroups.png``  per-attribute accuracy gap between the groups of each subgroup attribute
- ``training.png``   loss and validation accuracy per epoch (when the run folder has log.jsonl)
- ``calibration.png`` accuracy and balanced accuracy at 0.5 vs calibrated thresholds (when calibrated)
- ``faces.png``      the qualitative grid: faces with predicted vs true attributes, mistakes in red

plus, when the model predicts Male on data with Wearing_Lipstick, a table of the lipstick shortcut
(women called Male without vs with lipstick). A UTKFace evaluation gets its own page and figures
(`faceattr.evaluate.report_groups`): gender accuracy by group and predicted against true age.

Everything is written into a hidden temp folder beside DIR and renamed into place at the end, so
a failure never leaves a partial report that looks complete. DIR may be new, empty, or an earlier
faceattr report (which is replaced); anything else is refused.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from faceattr._atomic import write_error
from faceattr.errors import FaceattrError

__all__ = ["REPORT_FILE", "check_report_dir", "write_report"]

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
_MARKER = ".faceattr-report"  # marks a folder as ours, so re-running may replace it
_BLUE, _GREY, _RED, _GREEN, _AMBER = "#3b6fd4", "#c5cad3", "#d64545", "#2e9d5b", "#e0a030"


# ----------------------------------------------------------------------------------------------
# Folder handling


def check_report_dir(out_dir: str | Path) -> Path:
    """Raise FaceattrError unless a report can be written to `out_dir`; returns it as a Path."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise FaceattrError(f"report folder {out} is a file; pass a folder path for --report")
    if out.is_dir() and any(out.iterdir()) and not (out / _MARKER).is_file():
        raise FaceattrError(
            f"report folder {out} exists and is not a faceattr report; pass a new or empty folder (it would be replaced)"
        )
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = parent / f".{out.name}.probe-{os.getpid()}"
        probe.mkdir(exist_ok=True)
        probe.rmdir()
    except OSError as e:
        raise FaceattrError(f"cannot write the report into {parent}: {e.strerror or e}; choose a writable folder") from None
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Replace `out` by the finished `tmp` folder with renames only."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if old.exists():
            os.replace(old, out)  # put the previous report back
        raise
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Figures (matplotlib's object API on the Agg canvas: no pyplot global state, no display)


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, facecolor="white")
    return buf.getvalue()


def _style(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)


def _fig_accuracy(r: dict[str, Any]) -> bytes:
    per = r["per_attribute"]
    names = sorted(per, key=lambda a: per[a]["accuracy"] or 0.0)
    acc = np.array([per[a]["accuracy"] or 0.0 for a in names])
    base = np.array([per[a]["majority_baseline"] or 0.0 for a in names])
    y = np.arange(len(names))
    fig = _figure(8.5, 1.2 + 0.26 * len(names))
    ax = fig.add_subplot()
    ax.barh(y + 0.2, acc, height=0.4, color=_BLUE, label="model accuracy (threshold 0.5)")
    ax.barh(y - 0.2, base, height=0.4, color=_GREY, label="majority-class baseline")
    cal = r.get("calibrated")
    right = acc.copy()
    if cal:
        cal_acc = np.array([cal["per_attribute"][a]["accuracy"] or 0.0 for a in names])
        ax.scatter(cal_acc, y + 0.2, s=14, color=_AMBER, zorder=3, label="calibrated thresholds")
        right = np.maximum(acc, cal_acc)  # keep the value labels clear of the calibrated dots
    for yi, a, x in zip(y, acc, right, strict=True):
        ax.text(x + 0.006, yi + 0.2, f"{a:.3f}", va="center", fontsize=7, color="#333")
    ax.set_yticks(y, [n.replace("_", " ") for n in names])
    low = max(0.0, min(float(acc.min()), float(base.min())) - 0.05)
    ax.set_xlim(low, 1.06)
    ax.set_xlabel("accuracy", fontsize=9)
    ax.set_title("Per-attribute accuracy vs. always predicting the majority class", fontsize=10, loc="left")
    ax.legend(fontsize=8, loc="lower right", frameon=False)
    _style(ax)
    return _png(fig)


def _fig_confusion(r: dict[str, Any]) -> bytes:
    names = list(r["per_attribute"])
    cols = min(8, len(names))
    rows = int(np.ceil(len(names) / cols))
    fig = _figure(1.45 * cols + 0.4, 1.55 * rows + 0.5)
    fig.suptitle("Confusion matrices (rows: truth no/yes, columns: predicted no/yes; colour: share of the row)",
                 fontsize=10, x=0.01, ha="left")
    for i, name in enumerate(names):
        cm = np.array(r["per_attribute"][name]["confusion"], dtype=float)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for (ti, pi), v in np.ndenumerate(cm):
            ax.text(pi, ti, f"{int(v)}", ha="center", va="center", fontsize=7,
                    color="white" if norm[ti, pi] > 0.6 else "#222")
        ax.set_xticks([0, 1], ["no", "yes"], fontsize=6)
        ax.set_yticks([0, 1], ["no", "yes"], fontsize=6)
        ax.set_title(name.replace("_", " "), fontsize=7)
    return _png(fig)


def _fig_subgroups(r: dict[str, Any], key: str = "subgroups") -> bytes | None:
    groups = r.get(key) or {}
    if not groups:
        return None
    names = list(r["per_attribute"])
    fig = _figure(4.2 * len(groups) + 1.0, 1.2 + 0.22 * len(names))
    for k, (g, data) in enumerate(groups.items()):
        ax = fig.add_subplot(1, len(groups), k + 1)
        gaps = {a: data["gap"]["per_attribute"][a]["accuracy"] for a in names}
        order = sorted(names, key=lambda a: gaps[a] if gaps[a] is not None else 0.0)
        vals = np.array([gaps[a] if gaps[a] is not None else 0.0 for a in order])
        ax.barh(np.arange(len(order)), vals, color=[_GREEN if v >= 0 else _RED for v in vals])
        ax.axvline(0, color="#555", lw=0.8)
        ax.set_yticks(np.arange(len(order)), [a.replace("_", " ") for a in order], fontsize=7)
        n0, n1 = data["0"]["n_images"], data["1"]["n_images"]
        ax.set_title(f"{g}: accuracy(with) - accuracy(without)\n(n = {n1} with, {n0} without)", fontsize=9, loc="left")
        lim = max(0.05, float(np.abs(vals).max()) * 1.1)
        ax.set_xlim(-lim, lim)
        _style(ax)
    return _png(fig)


def _read_log(run_dir: Path | None) -> list[dict[str, Any]]:
    if run_dir is None or not (run_dir / "log.jsonl").is_file():
        return []
    rows = []
    for line in (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("skipping a malformed line of %s", run_dir / "log.jsonl")
    return rows


def _fig_training(log: list[dict[str, Any]]) -> bytes | None:
    if not log:
        return None
    ep = [h.get("epoch", i + 1) for i, h in enumerate(log)]
    fig = _figure(9, 3.2)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for key, color, label in (("train_loss", _BLUE, "train loss"), ("val_loss", _AMBER, "validation loss")):
        pts = [(e, h[key]) for e, h in zip(ep, log, strict=True) if isinstance(h.get(key), (int, float))]
        if pts:
            ax1.plot(*zip(*pts), marker="o", ms=3, color=color, label=label)
    ax1.set_xlabel("epoch", fontsize=9)
    ax1.set_title("Loss", fontsize=10, loc="left")
    ax1.legend(fontsize=8, frameon=False)
    pts = [(e, h["val_mean_accuracy"]) for e, h in zip(ep, log, strict=True) if isinstance(h.get("val_mean_accuracy"), (int, float))]
    if pts:
        ax2.plot(*zip(*pts), marker="o", ms=3, color=_GREEN)
    ax2.set_xlabel("epoch", fontsize=9)
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_title("Validation mean accuracy", fontsize=10, loc="left")
    for ax in (ax1, ax2):
        _style(ax)
    return _png(fig)


def _fig_calibration(r: dict[str, Any]) -> bytes | None:
    cal = r.get("calibrated")
    if not cal:
        return None
    names = list(r["per_attribute"])
    fig = _figure(9, 1.2 + 0.22 * len(names))
    for k, metric in enumerate(("accuracy", "balanced_accuracy")):
        ax = fig.add_subplot(1, 2, k + 1)
        before = np.array([r["per_attribute"][a][metric] or 0 for a in names])
        after = np.array([cal["per_attribute"][a][metric] or 0 for a in names])
        order = np.argsort(after - before)
        y = np.arange(len(names))
        for yi, j in zip(y, order, strict=True):
            ax.plot([before[j], after[j]], [yi, yi], color="#999", lw=1)
        ax.scatter(before[order], y, color=_GREY, s=14, label="threshold 0.5", zorder=3)
        ax.scatter(after[order], y, color=_AMBER, s=14, label="calibrated", zorder=3)
        ax.set_yticks(y, [names[j].replace("_", " ") for j in order], fontsize=7)
        ax.set_title(metric.replace("_", " "), fontsize=10, loc="left")
        ax.legend(fontsize=8, frameon=False)
        _style(ax)
    return _png(fig)


def _pick_samples(ev: Any, n: int, seed: int = 0) -> list[int]:
    """Half the faces with the most mistakes, half at random: the hard cases and the typical ones."""
    total = len(ev.labels)
    if total == 0 or n <= 0:
        return []
    pred = ev.probs >= 0.5
    errors = (pred != (ev.labels > 0.5)).sum(axis=1)
    hard = [int(i) for i in np.argsort(-errors, kind="stable")[: n // 2]]
    rest = np.setdiff1d(np.arange(total), hard)
    rng = np.random.default_rng(seed)
    typical = rng.choice(rest, size=min(n - len(hard), rest.size), replace=False).tolist() if rest.size else []
    return hard + sorted(int(i) for i in typical)


def _face_lines(ev: Any, i: int, max_right: int = 4, max_wrong: int = 6) -> tuple[list[tuple[str, float, bool]], list[tuple[str, float, bool]], int]:
    """(most confident mistakes, correct positives, number of mistakes) for image i; items are (name, prob, truth)."""
    wrong: list[tuple[str, float, bool]] = []
    right: list[tuple[str, float, bool]] = []
    for j, a in enumerate(ev.attributes):
        p, t = float(ev.probs[i, j]), bool(ev.labels[i, j] > 0.5)
        if (p >= 0.5) != t:
            wrong.append((a, p, t))
        elif t:
            right.append((a, p, t))
    wrong.sort(key=lambda x: -abs(x[1] - 0.5))
    right.sort(key=lambda x: -x[1])
    return wrong[:max_wrong], right[:max_right], len(wrong)


def _fig_faces(ev: Any, idx: list[int]) -> bytes | None:
    if not idx:
        return None
    cols = min(4, len(idx))
    rows = int(np.ceil(len(idx) / cols))
    fig = _figure(3.0 * cols, 3.3 * rows)
    for k, i in enumerate(idx):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(np.asarray(ev.images[i]))
        ax.set_xticks([])
        ax.set_yticks([])
        wrong, right, _ = _face_lines(ev, i, max_right=3, max_wrong=3)
        ax.set_title(ev.filenames[i], fontsize=8)
        lines = [(f"x {a}: pred {'yes' if p >= 0.5 else 'no'} ({p:.2f})", _RED) for a, p, _ in wrong]
        lines += [(f"ok {a} ({p:.2f})", _GREEN) for a, p, _ in right]
        for n, (text, color) in enumerate(lines):
            ax.text(0.0, -0.04 - 0.075 * n, text, transform=ax.transAxes, fontsize=7, color=color, va="top")
        for side in ax.spines.values():
            side.set_edgecolor(_RED if wrong else _GREEN)
            side.set_linewidth(2)
    return _png(fig)


# ----------------------------------------------------------------------------------------------
# HTML


_CSS = """
:root { --ink:#1d2330; --muted:#667085; --line:#e4e7ec; --bg:#f6f7f9; --blue:#3b6fd4; --red:#d64545; --green:#2e9d5b; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color:var(--ink); background:var(--bg); }
main { max-width: 1180px; margin: 0 auto; padding: 28px 24px 60px; }
header h1 { font-size: 26px; margin: 0 0 4px; }
header .meta { color: var(--muted); font-size: 13px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 12px; padding: 20px 24px; margin-top: 22px; }
h2 { font-size: 18px; margin: 0 0 12px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr)); gap: 12px; margin-top: 18px; }
.card { background:#fff; border:1px solid var(--line); border-radius: 12px; padding: 14px 16px; }
.card .v { font-size: 28px; font-weight: 650; letter-spacing: -0.02em; }
.card .l { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .s { color: var(--muted); font-size: 12px; }
.two { display:grid; grid-template-columns: 1fr 1fr; gap: 18px; }
.pill { display:inline-block; padding: 2px 10px; border-radius: 999px; margin: 2px 4px 2px 0; font-size: 13px; }
.good { background:#e6f4ec; color:#1f6b3e; } .bad { background:#fbe9e9; color:#9b2c2c; }
.warn { background:#fff4e5; border:1px solid #f0b35b; color:#7a4a00; border-radius: 10px; padding: 10px 14px; margin-top: 14px; font-weight: 600; }
table { border-collapse: collapse; width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 8px; text-align: right; border-bottom: 1px solid var(--line); }
th:first-child, td:first-child { text-align: left; }
th { color: var(--muted); font-weight: 600; position: sticky; top: 0; background: #fff; }
tr:nth-child(even) td { background: #fafbfc; }
td.lo { color: var(--red); } td.hi { color: var(--green); font-weight: 600; }
img.fig { max-width: 100%; height: auto; display: block; margin: 6px auto; }
.faces { display:grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 14px; }
.face { border: 2px solid var(--line); border-radius: 10px; padding: 8px; background:#fff; }
.face.err { border-color: #f1b0b0; } .face img { width: 100%; border-radius: 6px; image-rendering: auto; }
.face .fn { font-size: 12px; color: var(--muted); margin: 4px 0; }
.face ul { list-style: none; padding: 0; margin: 0; font-size: 12.5px; }
.face li.x { color: var(--red); } .face li.ok { color: var(--green); }
.note { color: var(--muted); font-size: 13px; }
.scroll { max-height: 560px; overflow: auto; }
"""


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _img(name: str, data: bytes, alt: str) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img class="fig" src="data:image/png;base64,{b64}" alt="{html.escape(alt)}" data-file="{name}">'


def _thumb(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _cards(r: dict[str, Any]) -> str:
    per = r["per_attribute"]
    base = float(np.mean([m["majority_baseline"] for m in per.values() if m["majority_baseline"] is not None]))
    items = [
        ("Mean accuracy", _pct(r["mean_accuracy"]), f"majority baseline {_pct(base)}"),
        ("Mean balanced acc.", _pct(r["mean_balanced_accuracy"]), "chance = 50%"),
        ("Mean F1", _fmt(r["mean_f1"]), f"P {_fmt(r['mean_precision'])} · R {_fmt(r['mean_recall'])}"),
        ("Mean ROC AUC", _fmt(r["mean_auc"]), "ranking quality, threshold-free"),
        ("Exact match", _pct(r["exact_match"]), f"all {len(per)} attributes right"),
        ("Hamming loss", _pct(r["hamming_loss"]), "wrong decisions"),
    ]
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="l">{html.escape(l)}</div><div class="v">{v}</div><div class="s">{html.escape(s)}</div></div>'
        for l, v, s in items
    ) + "</div>"


def _best_worst(r: dict[str, Any], k: int = 5) -> str:
    per = r["per_attribute"]
    ranked = sorted(per, key=lambda a: per[a]["balanced_accuracy"] if per[a]["balanced_accuracy"] is not None else -1)
    k = min(k, max(1, len(ranked) // 2)) if len(ranked) > 1 else 1
    best = ranked[::-1][:k]
    worst = ranked[:k] if len(ranked) > 1 else []

    def pills(names: list[str], cls: str) -> str:
        return "".join(f'<span class="pill {cls}">{html.escape(a)} {_pct(per[a]["balanced_accuracy"])}</span>' for a in names)

    out = f'<div><b>Best</b> <span class="note">(balanced accuracy)</span><br>{pills(best, "good")}</div>'
    if worst:
        out += f'<div style="margin-top:8px"><b>Worst</b><br>{pills(worst, "bad")}</div>'
    gaps = [(g, d["gap"]["mean_accuracy"]) for g, d in (r.get("subgroups") or {}).items() if d["gap"]["mean_accuracy"] is not None]
    if gaps:
        text = "; ".join(f"{html.escape(g)}: {v:+.3f} (with − without)" for g, v in gaps)
        out += f'<div style="margin-top:8px"><b>Subgroup gaps</b> <span class="note">(mean accuracy)</span><br>{text}</div>'
    return out


def _attribute_table(r: dict[str, Any]) -> str:
    per = r["per_attribute"]
    cal = r.get("calibrated")
    head = ["attribute", "positives", "accuracy", "baseline", "balanced acc.", "precision", "recall", "F1", "AUC",
            "miss rate", "false-alarm rate"]
    if cal:
        head += ["calib. threshold", "calib. accuracy", "calib. balanced"]
    rows = []
    for a in sorted(per, key=lambda a: -(per[a]["balanced_accuracy"] or 0)):
        m = per[a]
        beats = m["accuracy"] is not None and m["majority_baseline"] is not None and m["accuracy"] > m["majority_baseline"]
        cells = [
            html.escape(a), _pct(m["positive_rate"]),
            f'<td class="{"hi" if beats else "lo"}">{_fmt(m["accuracy"])}</td>', _fmt(m["majority_baseline"]),
            _fmt(m["balanced_accuracy"]), _fmt(m["precision"]), _fmt(m["recall"]), _fmt(m["f1"]), _fmt(m["auc"]),
            _fmt(m["error_pos"]), _fmt(m["error_neg"]),
        ]
        if cal:
            c = cal["per_attribute"][a]
            cells += [_fmt(c["threshold"], 2), _fmt(c["accuracy"]), _fmt(c["balanced_accuracy"])]
        rows.append("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in cells) + "</tr>")
    return (
        '<div class="scroll"><table><thead><tr>' + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
        + "".join(rows) + "</tbody></table></div>"
        + '<p class="note">Accuracy in green beats always predicting the majority class; red does not. '
        "Miss rate = error on positives (FN / positives); false-alarm rate = error on negatives (FP / negatives).</p>"
    )


def _subgroup_table(r: dict[str, Any]) -> str:
    groups = r.get("subgroups") or {}
    keys = [("n_images", "images"), ("mean_accuracy", "mean acc."), ("mean_balanced_accuracy", "mean balanced"),
            ("mean_f1", "mean F1"), ("exact_match", "exact match"), ("hamming_loss", "Hamming")]
    rows = []
    for g, data in groups.items():
        for v, label in (("1", f"{g} = yes"), ("0", f"{g} = no")):
            rows.append("<tr><td>" + html.escape(label) + "</td>" + "".join(
                f"<td>{_fmt(data[v][k])}</td>" for k, _ in keys) + "</tr>")
        rows.append("<tr><td><b>gap</b> (yes − no)</td><td></td>" + "".join(
            f"<td><b>{_fmt(data['gap'][k])}</b></td>" for k, _ in keys[1:]) + "</tr>")
        per = data["gap"]["per_attribute"]
        top = sorted((a for a in per if per[a]["accuracy"] is not None), key=lambda a: -abs(per[a]["accuracy"]))[:5]
        if top:
            rows.append('<tr><td colspan="7" class="note" style="text-align:left">largest accuracy gaps: ' + ", ".join(
                f"{html.escape(a)} {per[a]['accuracy']:+.3f}" for a in top) + "</td></tr>")
    return ("<table><thead><tr><th>group</th>" + "".join(f"<th>{l}</th>" for _, l in keys) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _calibration_html(r: dict[str, Any]) -> str:
    info = r.get("calibration")
    cal = r.get("calibrated")
    if not info or not cal:
        return ""
    src = "calibrated in this evaluation" if info.get("source") == "this evaluation" else "stored in the checkpoint"
    rows = "".join(
        f"<tr><td>{label}</td><td>{_fmt(r[k])}</td><td>{_fmt(cal[k])}</td>"
        f"<td>{f'{cal[k] - r[k]:+.3f}' if r[k] is not None and cal[k] is not None else '–'}</td></tr>"
        for k, label in (("mean_accuracy", "mean accuracy"), ("mean_balanced_accuracy", "mean balanced accuracy"),
                         ("mean_f1", "mean F1"), ("exact_match", "exact match"), ("hamming_loss", "Hamming loss"))
    )
    warn = f'<div class="warn">⚠ {html.escape(info["warning"])}</div>' if info.get("warning") else ""
    return (
        f"<p>Thresholds {src}: objective <b>{_fmt(info.get('objective'))}</b> on split <b>{_fmt(info.get('split'))}</b>"
        f"{' (' + str(info['n_images']) + ' images)' if info.get('n_images') else ''}; "
        f"{'saved into the checkpoint, so predict uses them' if info.get('saved') else 'not saved'}.</p>{warn}"
        "<table><thead><tr><th>metric</th><th>threshold 0.5</th><th>calibrated</th><th>change</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _lipstick_html(r: dict[str, Any]) -> str:
    """The shortcut check as a small table: at 0.5, and at the calibrated Male threshold when there is one."""
    rows = []
    for label, d in (("threshold 0.5", r.get("lipstick_shortcut")),
                     ("calibrated", (r.get("calibrated") or {}).get("lipstick_shortcut"))):
        if not d:
            continue
        parts = [f"{p['called_male']} of {p['n']} ({_pct(p['rate'])})" for p in (d["without_lipstick"], d["with_lipstick"])]
        gap = "–" if d["gap"] is None else f"{100 * d['gap']:+.1f} points"
        rows.append(f"<tr><td>{label} ({d['threshold']:.2f})</td><td>{parts[0]}</td><td>{parts[1]}</td><td>{gap}</td></tr>")
    if not rows:
        return ""
    return ("<table><thead><tr><th>Male threshold</th><th>women without lipstick called Male</th>"
            "<th>women with lipstick called Male</th><th>difference</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table><p class='note'>CelebA couples “Male” with the absence of make-up; a model that learned "
            "the shortcut calls many more women without lipstick Male.</p>")


def _faces_html(ev: Any, idx: list[int]) -> str:
    cards = []
    for i in idx:
        wrong, right, n_wrong = _face_lines(ev, i)
        items = "".join(
            f'<li class="x">✗ {html.escape(a)}: predicted {"yes" if p >= 0.5 else "no"} ({p:.2f}), truly {"yes" if t else "no"}</li>'
            for a, p, t in wrong
        ) + "".join(f'<li class="ok">✓ {html.escape(a)} ({p:.2f})</li>' for a, p, _ in right)
        if n_wrong > len(wrong):
            items += f'<li class="x">… and {n_wrong - len(wrong)} more</li>'
        if not wrong:
            items = '<li class="ok"><b>all attributes right</b></li>' + items
        cards.append(
            f'<div class="face{" err" if wrong else ""}"><img src="data:image/png;base64,{_thumb(ev.images[i])}" '
            f'alt="{html.escape(ev.filenames[i])}"><div class="fn">{html.escape(ev.filenames[i])} · '
            f"{n_wrong} mistake{'s' if n_wrong != 1 else ''} of {len(ev.attributes)}</div><ul>{items}</ul></div>"
        )
    return '<div class="faces">' + "".join(cards) + "</div>"


def _page(ev: Any, figs: dict[str, bytes], idx: list[int], log: list[dict[str, Any]]) -> str:
    r = ev.result
    title = f"{r['architecture']} on {r['split']}"
    warnings_ = "".join(f'<div class="warn">⚠ {html.escape(w)}</div>' for w in r.get("warnings", []))
    parts = [
        (f"<header><h1>Evaluation: {html.escape(title)}</h1><div class='meta'>checkpoint {html.escape(r['checkpoint'])}"
         f" · {r['n_images']} images of split '{html.escape(r['split'])}' from {html.escape(r['data_root'])}"
         f" · {len(r['attributes'])} attribute{'s' if len(r['attributes']) != 1 else ''} · device {html.escape(r['device'])}"
         f" · {r['images_per_s']:.0f} images/s · {html.escape(r['created'])}</div></header>"),
        warnings_,
        _cards(r),
        (f"<section><h2>At a glance</h2>{_best_worst(r)}"
         "<p class='note'>All headline numbers use threshold 0.5; calibrated thresholds are shown separately below.</p></section>"),
        f"<section><h2>Per-attribute accuracy</h2>{_img('accuracy.png', figs['accuracy.png'], 'per-attribute accuracy')}</section>",
        f"<section><h2>Per-attribute metrics</h2>{_attribute_table(r)}</section>",
    ]
    if "calibration.png" in figs:
        parts.append(f"<section><h2>Calibrated thresholds</h2>{_calibration_html(r)}"
                     f"{_img('calibration.png', figs['calibration.png'], 'calibration')}</section>")
    if "subgroups.png" in figs:
        parts.append(f"<section><h2>Subgroups</h2>{_subgroup_table(r)}"
                     f"{_img('subgroups.png', figs['subgroups.png'], 'subgroup gaps')}</section>")
    lipstick = _lipstick_html(r)
    if lipstick:
        parts.append(f"<section><h2>Shortcut check: women without lipstick called Male</h2>{lipstick}</section>")
    parts.append(f"<section><h2>Confusion matrices</h2>{_img('confusion.png', figs['confusion.png'], 'confusion matrices')}</section>")
    if "training.png" in figs:
        best = max(log, key=lambda h: h.get("val_mean_accuracy") or 0) if log else {}
        parts.append(
            f"<section><h2>Training</h2><p class='note'>{len(log)} epoch(s) logged; best validation mean accuracy "
            f"{_fmt(best.get('val_mean_accuracy'))} at epoch {_fmt(best.get('epoch'))}.</p>"
            f"{_img('training.png', figs['training.png'], 'training curves')}</section>"
        )
    if idx:
        parts.append(
            "<section><h2>Faces</h2><p class='note'>Half are the images with the most mistakes, half are random. "
            "Red: wrong at threshold 0.5 (model probability in brackets); green: attributes correctly found present.</p>"
            f"{_faces_html(ev, idx)}</section>"
        )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>faceattr evaluation: {html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>"
    )


def write_report(ev: Any, out_dir: str | Path, *, samples: int = 16) -> Path:
    """Write the HTML report and its PNGs for an `Evaluation` (CelebA) or `UtkEvaluation` into `out_dir`; returns the HTML path."""
    out = check_report_dir(out_dir)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        r = ev.result
        utk = r.get("dataset") == "utkface"
        builders: list[tuple[str, Callable[[], bytes | None]]]
        if utk:
            from faceattr.evaluate import report_groups

            builders = report_groups.figures(ev)
        else:
            log = _read_log(ev.run_dir)
            idx = _pick_samples(ev, samples)
            builders = [
                ("accuracy.png", lambda: _fig_accuracy(r)),
                ("confusion.png", lambda: _fig_confusion(r)),
                ("subgroups.png", lambda: _fig_subgroups(r)),
                ("training.png", lambda: _fig_training(log)),
                ("calibration.png", lambda: _fig_calibration(r)),
                ("faces.png", lambda: _fig_faces(ev, idx)),
            ]
        figs: dict[str, bytes] = {}
        for name, build in builders:
            data = build()
            if data is not None:
                figs[name] = data
                (tmp / name).write_bytes(data)
        text = report_groups.page(ev, figs) if utk else _page(ev, figs, idx, log)
        (tmp / REPORT_FILE).write_text(text, encoding="utf-8")
        (tmp / _MARKER).write_text("written by faceattr evaluate --report\n", encoding="utf-8")
        _swap_into_place(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(out, e, "report") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("report written to %s", out / REPORT_FILE)
    return out / REPORT_FILE
