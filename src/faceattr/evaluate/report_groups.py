"""The HTML report of a UTKFace evaluation (`faceattr.evaluate.utk`): gender and age by group.

`faceattr.evaluate.report.write_report` calls `figures` and `page` for a UTKFace evaluation and
handles the folder as for CelebA. Figures:

- ``groups.png``  gender accuracy per gender, race group and age band, with n (bars under `min_n`
  faces are pale: too few to rank; the worst group is red)
- ``age.png``     predicted against true age (identity line) and the age error per band (models with age)
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import numpy as np

from faceattr.evaluate.report import _BLUE, _CSS, _GREY, _RED, _figure, _fmt, _img, _pct, _png, _style

__all__ = ["figures", "page"]

_PALE = "#9fb8e8"
_PINK = "#c2569b"


def _group_rows(r: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(section, key, label, slice) for overall, each gender, race group and age band, in display order."""
    g = r["groups"]
    rows = [("overall", "overall", "all detected faces", g["overall"])]
    rows += [("gender", k, k, s) for k, s in g["gender"].items()]
    rows += [("race", k, k, s) for k, s in g["race"].items()]
    rows += [("age_band", k, f"age {k}", s) for k, s in g["age_band"].items()]
    return rows


def _is_worst(r: dict[str, Any], section: str, key: str) -> bool:
    w = r["groups"]["worst_group"]
    return w is not None and w["slice"] == section and w["group"] == key


def _fig_groups(r: dict[str, Any]) -> bytes:
    rows = _group_rows(r)
    min_n = r["groups"]["min_n"]
    acc = np.array([s["gender_accuracy"] if s["gender_accuracy"] is not None else np.nan for _, _, _, s in rows])
    # One gap between sections so the groups read as blocks.
    y, pos, last = [], 0.0, None
    for section, _, _, _ in rows:
        if last is not None and section != last:
            pos += 0.6
        y.append(pos)
        pos += 1.0
        last = section
    yy = -np.array(y)
    colors = [_RED if _is_worst(r, sec, key) else (_BLUE if s["n"] >= min_n else _PALE) for sec, key, _, s in rows]
    fig = _figure(8.5, 1.3 + 0.3 * len(rows))
    ax = fig.add_subplot()
    ax.barh(yy, np.nan_to_num(acc, nan=0.0), height=0.7, color=colors)
    overall = r["groups"]["overall"]["gender_accuracy"]
    if overall is not None:
        ax.axvline(overall, color="#555", lw=0.8, ls="--")
    finite = acc[np.isfinite(acc)]
    low = max(0.0, float(finite.min()) - 0.08) if finite.size else 0.0
    for yi, a, (_, _, _, s) in zip(yy, acc, rows, strict=True):
        text = f"{a:.3f}  (n={s['n']}" if np.isfinite(a) else "no faces  (n=0"
        text += f", {s['n_missed']} missed)" if s["n_missed"] else ")"
        ax.text((a if np.isfinite(a) else low) + 0.004, yi, text, va="center", fontsize=7.5, color="#333")
    ax.set_yticks(yy, [label for _, _, label, _ in rows], fontsize=8)
    ax.set_xlim(low, 1.12)
    ax.set_xlabel(f"gender accuracy (Male threshold {r['male_threshold']:.2f}; detected faces)", fontsize=9)
    ax.set_title(f"Gender accuracy by group (pale: fewer than {min_n} faces; red: worst group; dashed: all faces)",
                 fontsize=10, loc="left")
    _style(ax)
    return _png(fig)


def _fig_age(r: dict[str, Any], ev: Any) -> bytes | None:
    if not r["predicts_age"] or ev.age_pred is None:
        return None
    found = np.asarray(ev.detected, dtype=bool)
    truth, guess, male = ev.age[found], ev.age_pred[found], ev.male[found] > 0.5
    fig = _figure(10, 4.2)
    ax = fig.add_subplot(1, 2, 1)
    top = float(max(truth.max(initial=1), guess.max(initial=1))) * 1.05
    ax.plot([0, top], [0, top], color="#555", lw=1, ls="--", label="predicted = true")
    alpha = 0.8 if truth.size < 300 else 0.4  # many points: see-through, so dense areas read darker
    for mask, color, label in ((~male, _PINK, "female"), (male, _BLUE, "male")):
        ax.scatter(truth[mask], guess[mask], s=9, alpha=alpha, color=color, linewidths=0, label=f"{label} ({int(mask.sum())})")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_aspect("equal")
    ax.set_xlabel("true age (years)", fontsize=9)
    ax.set_ylabel("predicted age (years)", fontsize=9)
    o = r["groups"]["overall"]
    ax.set_title(f"Predicted vs true age: MAE {o['age_mae']:.1f} years, bias {o['age_bias']:+.1f}", fontsize=10, loc="left")
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    _style(ax)

    ax2 = fig.add_subplot(1, 2, 2)
    bands = r["groups"]["age_band"]
    names = list(bands)
    mae = np.array([bands[b]["age_mae"] if bands[b]["age_mae"] is not None else 0.0 for b in names])
    bias = np.array([bands[b]["age_bias"] if bands[b]["age_bias"] is not None else 0.0 for b in names])
    x = np.arange(len(names))
    ax2.bar(x - 0.2, mae, width=0.4, color=_BLUE, label="mean absolute error")
    ax2.bar(x + 0.2, bias, width=0.4, color=_GREY, label="bias (predicted - true)")
    ax2.axhline(0, color="#555", lw=0.8)
    for xi, m, b in zip(x, mae, names, strict=True):
        ax2.text(xi - 0.2, m + 0.3, f"{m:.1f}\nn={bands[b]['n']}", ha="center", va="bottom", fontsize=7)
    ax2.set_xticks(x, names, fontsize=8)
    ax2.set_ylabel("years", fontsize=9)
    ax2.set_title("Age error by true age band", fontsize=10, loc="left")
    ax2.legend(fontsize=8, frameon=False)
    _style(ax2)
    return _png(fig)


def figures(ev: Any) -> list[tuple[str, Callable[[], bytes | None]]]:
    """(file name, builder) of each figure of a UTKFace report."""
    r = ev.result
    return [("groups.png", lambda: _fig_groups(r)), ("age.png", lambda: _fig_age(r, ev))]


def _slice_table(rows: list[tuple[str, dict[str, Any]]], age: bool, min_n: int, worst: str | None = None) -> str:
    head = ["group", "images", "missed", "faces", "women", "men", "gender acc.", "balanced acc."]
    if age:
        head += ["age MAE", "age bias"]
    body = []
    for label, s in rows:
        small = s["n"] < min_n
        cls = "lo" if label == worst else ""
        cells = [
            f"<td class='{cls}'>{'<b>' if label == worst else ''}{html.escape(label)}{'</b>' if label == worst else ''}</td>",
            f"<td>{s['n_images']}</td>",
            f"<td class='{'lo' if s['n_missed'] else ''}'>{s['n_missed']}</td>",
            f"<td>{s['n']}</td>", f"<td>{s['n_female']}</td>", f"<td>{s['n_male']}</td>",
            f"<td class='{cls}'>{_fmt(s['gender_accuracy'])}</td>", f"<td>{_fmt(s['gender_balanced_accuracy'])}</td>",
        ]
        if age:
            bias = "–" if s["age_bias"] is None else f"{s['age_bias']:+.1f}"
            cells += [f"<td>{_fmt(s['age_mae'], 1)}</td>", f"<td>{bias}</td>"]
        style = ' style="opacity:.55"' if small else ""  # too few faces to read much into
        body.append(f"<tr{style}>" + "".join(cells) + "</tr>")
    return ("<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(body) + "</tbody></table>")


def _cards(r: dict[str, Any]) -> str:
    g = r["groups"]
    o, h, w = g["overall"], g["headline"], g["worst_group"]
    items = [
        ("Faces found", f"{r['n_detected']} / {r['n_images']}", f"{r['n_missed']} missed (no usable face)"),
        ("Gender accuracy", _pct(o["gender_accuracy"]), f"balanced {_pct(o['gender_balanced_accuracy'])}"),
        ("Adults (15+)", _pct(h["adults"]["gender_accuracy"]),
         f"women {_pct(h['adult_women']['gender_accuracy'])} · men {_pct(h['adult_men']['gender_accuracy'])}"),
        ("Age MAE", "–" if o["age_mae"] is None else f"{o['age_mae']:.1f} y",
         "not predicted" if o["age_mae"] is None else f"bias {o['age_bias']:+.1f} years"),
        ("Worst group", "–" if w is None else _pct(w["gender_accuracy"]),
         f"none with n ≥ {g['min_n']}" if w is None else f"{w['group']} (n={w['n']})"),
    ]
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="l">{html.escape(l)}</div><div class="v">{v}</div><div class="s">{html.escape(s)}</div></div>'
        for l, v, s in items
    ) + "</div>"


def page(ev: Any, figs: dict[str, bytes]) -> str:
    """The report page of a UTKFace evaluation, figures embedded."""
    r = ev.result
    g = r["groups"]
    age = r["predicts_age"]
    min_n = g["min_n"]
    title = f"{r['architecture']} on UTKFace {r['split']}"
    warnings_ = "".join(f'<div class="warn">⚠ {html.escape(w)}</div>' for w in r.get("warnings", []))
    if r["n_missed"]:
        why = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in r["missed"].items() if v)
        warnings_ += (f'<div class="warn">No usable face in {r["n_missed"]} of {r["n_images"]} images ({why}). '
                      "They are left out of every accuracy and error below and counted in each group's "
                      "“missed” column.</div>")
    h = g["headline"]
    headline = [("adults (15+)", h["adults"]), ("adult women", h["adult_women"]), ("adult men", h["adult_men"])]
    headline += [(f"adults, {k}", s) for k, s in h["adult_race"].items()]
    headline += [("age 70+", h["age_70_plus"]), ("under 15", h["under_15"])]
    w = g["worst_group"]
    worst_label = None
    by_group = []
    for section, key, label, s in _group_rows(r):
        by_group.append((label, s))
        if _is_worst(r, section, key):
            worst_label = label
    cells = sorted(g["cells"], key=lambda c: (c["n"] < min_n, c["gender_accuracy"] if c["gender_accuracy"] is not None else 2))
    cell_rows = [(f"{c['gender']} · {c['race']} · {c['age_band']}", c) for c in cells]
    worst_cell = w["group"] if w is not None and w["slice"] == "cell" else None
    worst_text = ("no group has enough faces to rank" if w is None else
                  f"{html.escape(w['group'])} ({w['slice'].replace('_', ' ')}): gender accuracy {w['gender_accuracy']:.3f}, "
                  f"n = {w['n']}")
    parts = [
        (f"<header><h1>Evaluation: {html.escape(title)}</h1><div class='meta'>checkpoint {html.escape(r['checkpoint'])}"
         f" · {r['n_images']} images of split '{html.escape(r['split'])}' (seed {r['seed']}) from {html.escape(r['data_root'])}"
         f" · {html.escape(r['pipeline'])} · Male threshold {r['male_threshold']:.2f} · device {html.escape(r['device'])}"
         f" · {r['images_per_s']:.1f} images/s · {html.escape(r['created'])}</div></header>"),
        warnings_,
        _cards(r),
        ("<section><h2>Headline groups</h2>"
         f"{_slice_table(headline, age, min_n)}"
         f"<p class='note'>Worst group (lowest gender accuracy among groups with at least {min_n} faces, crossed cells "
         f"included): <b>{worst_text}</b>. Rows in grey have fewer than {min_n} faces. Race is a label of the data, "
         "used only to slice these numbers; the model does not predict it.</p></section>"),
        (f"<section><h2>Gender accuracy by group</h2>{_img('groups.png', figs['groups.png'], 'gender accuracy by group')}"
         f"{_slice_table(by_group, age, min_n, worst_label)}</section>"),
    ]
    if "age.png" in figs:
        parts.append(f"<section><h2>Age</h2>{_img('age.png', figs['age.png'], 'predicted against true age')}"
                     "<p class='note'>Ages are the model's estimate for the detected face, clipped to 1-100 years.</p></section>")
    parts.append(
        f"<section><h2>Gender × race × age band</h2><p class='note'>{len(cell_rows)} cells with images, "
        f"lowest gender accuracy first (cells under {min_n} faces after the rest, in grey).</p>"
        f"<div class='scroll'>{_slice_table(cell_rows, age, min_n, worst_cell)}</div></section>"
    )
    if r.get("missed_examples"):
        names = ", ".join(html.escape(n) for n in r["missed_examples"])
        more = r["n_missed"] - len(r["missed_examples"])
        parts.append(f"<section><h2>Missed images</h2><p class='note'>{names}{f' … and {more} more' if more > 0 else ''}</p></section>")
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>faceattr evaluation: {html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>"
    )
