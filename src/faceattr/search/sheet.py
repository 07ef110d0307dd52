"""Face crops of indexed images and contact sheets of search results (self-contained HTML, or PNG drawn with PIL)."""

from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from faceattr.errors import FaceattrError
from faceattr.search.query import SearchResult
from faceattr.search.store import safe_join

__all__ = ["SHEET_SUFFIXES", "face_thumbnail", "load_image", "thumbnail_jpeg", "write_sheet"]

logger = logging.getLogger(__name__)

SHEET_SUFFIXES = (".html", ".png")


def load_image(path: str | Path) -> Image.Image:
    """Open an image the way indexing saw it (EXIF rotation applied, RGB), so stored boxes line up."""
    from faceattr.infer.image_io import load_rgb

    return Image.fromarray(load_rgb(path))


def face_thumbnail(image: Image.Image, box: tuple[float, float, float, float], size: int = 160, margin: float = 0.3) -> Image.Image:
    """A square crop around a face box (with `margin` of the box size on each side), resized to `size`."""
    x, y, w, h = (float(v) for v in box)
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    right, bottom = round(cx + side / 2), round(cy + side / 2)
    # PIL fills out-of-image parts of the crop with black; a neutral grey looks less like a defect.
    canvas = Image.new("RGB", (max(1, right - left), max(1, bottom - top)), (128, 128, 128))
    src = image.crop((max(left, 0), max(top, 0), min(right, image.width), min(bottom, image.height)))
    canvas.paste(src, (max(left, 0) - left, max(top, 0) - top))
    return canvas.resize((size, size), Image.Resampling.LANCZOS)


def thumbnail_jpeg(root: Path, relative: str, box: tuple[float, float, float, float] | None, size: int = 160) -> bytes:
    """JPEG bytes of a face crop (or of the whole image when `box` is None) of an indexed file."""
    path = safe_join(root, relative)
    image = load_image(path)
    if box is None:
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        out = image
    else:
        out = face_thumbnail(image, box, size)
    buf = io.BytesIO()
    out.convert("RGB").save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def _caption(result: SearchResult, rank: int) -> list[str]:
    m = result.matches[rank]
    lines = [f"#{rank + 1}  score {m.score:.3f}" + ("" if m.age is None else f"  age ~{m.age:.0f}"), Path(m.image).name]
    shown = [t for t in result.terms if not t.is_age][:3]
    terms = ", ".join(f"{t.attribute[:12]} {m.probabilities[t.attribute]:.2f}" for t in shown)
    if terms:
        lines.append(terms)
    return lines


def _thumbs(result: SearchResult, root: Path, size: int) -> list[Image.Image]:
    out = []
    for m in result.matches:
        try:
            out.append(face_thumbnail(load_image(safe_join(root, m.image)), m.box, size))
        except (FaceattrError, OSError) as e:
            # A file deleted or changed since indexing: show a blank tile rather than fail the sheet.
            logger.warning("cannot read %s for the sheet: %s", m.image, e)
            out.append(Image.new("RGB", (size, size), (60, 60, 60)))
    return out


def _write_html(result: SearchResult, thumbs: list[Image.Image], out: Path, title: str) -> None:
    tiles = []
    for i, (m, t) in enumerate(zip(result.matches, thumbs)):
        buf = io.BytesIO()
        t.save(buf, format="JPEG", quality=85)
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        bars = "".join(
            f'<div class="bar"><span>{html.escape(a.attribute)}</span><i style="width:{m.probabilities[a.attribute] * 100:.0f}%"></i>'
            f"<b>{m.probabilities[a.attribute]:.2f}</b></div>"
            for a in result.terms
            if not a.is_age
        )
        age = "" if m.age is None else f'<div class="age">age ~{m.age:.0f}</div>'
        tiles.append(
            f'<figure><img src="data:image/jpeg;base64,{data}" alt="face {m.face_id}">'
            f'<figcaption><div class="rank">#{i + 1} <span>{m.score:.3f}</span></div>'
            f'<div class="path" title="{html.escape(m.image)}">{html.escape(m.image)}</div>{age}{bars}</figcaption></figure>'
        )
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:24px;background:#0f172a;color:#e2e8f0}}
h1{{font-size:18px;font-weight:600}} p{{color:#94a3b8}}
main{{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:14px}}
figure{{margin:0;background:#1e293b;border-radius:10px;overflow:hidden}}
img{{width:100%;display:block;aspect-ratio:1}}
figcaption{{padding:8px 10px}} .rank{{font-weight:600}} .rank span{{float:right;color:#38bdf8}}
.path{{color:#94a3b8;font-size:12px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}} .age{{font-size:12px}}
.bar{{display:grid;grid-template-columns:1fr 60px 34px;gap:6px;align-items:center;font-size:12px}}
.bar i{{height:6px;background:#38bdf8;border-radius:3px}} .bar b{{font-weight:500;text-align:right}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{result.total} of {result.searched} faces match; showing the top {len(result.matches)}.</p>
<main>{"".join(tiles)}</main>
</body></html>
"""
    out.write_text(doc, encoding="utf-8")


def _write_png(result: SearchResult, thumbs: list[Image.Image], out: Path, title: str, size: int, columns: int) -> None:
    font = ImageFont.load_default(size=13)
    line_h, pad = 17, 10
    caption_h = line_h * 3 + 6
    cols = max(1, min(columns, len(thumbs) or 1))
    rows = max(1, -(-len(thumbs) // cols))
    header = 40
    sheet = Image.new("RGB", (pad + cols * (size + pad), header + rows * (size + caption_h + pad)), (15, 23, 42))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 12), f"{title}  ({result.total} of {result.searched} faces match)", fill=(226, 232, 240), font=font)
    for i, thumb in enumerate(thumbs):
        x = pad + (i % cols) * (size + pad)
        y = header + (i // cols) * (size + caption_h + pad)
        sheet.paste(thumb, (x, y))
        for k, line in enumerate(_caption(result, i)):
            draw.text((x, y + size + 4 + k * line_h), line[: size // 7], fill=(56, 189, 248) if k == 0 else (203, 213, 225), font=font)
    sheet.save(out, format="PNG")


def write_sheet(result: SearchResult, root: Path, out: str | Path, *, title: str = "faceattr search", size: int = 160, columns: int = 6) -> Path:
    """Write a contact sheet of the matched faces with their scores: .html (self-contained) or .png."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in SHEET_SUFFIXES:
        raise FaceattrError(f"--sheet must end in {' or '.join(SHEET_SUFFIXES)}, not '{out.name}'")
    out.parent.mkdir(parents=True, exist_ok=True)
    thumbs = _thumbs(result, Path(root), size)
    if suffix == ".html":
        _write_html(result, thumbs, out, title)
    else:
        _write_png(result, thumbs, out, title, size, columns)
    return out
