"""Where in the face a prediction comes from: occlusion sensitivity on the aligned crop.

Grey out part of the aligned 178x218 crop, classify again, and see how far one attribute's
probability moves. Two views of the same idea (Zeiler & Fergus 2014):

- `REGIONS`: horizontal bands of the CelebA frame (hair, eyes, nose, mouth, chin, neck and
  clothing), each hidden whole: "hiding the clothing lowers Male from 0.99 to 0.82" is the kind of
  statement the model card makes, and this is how to check it on any photo.
- a sliding square patch: for every pixel, the mean probability drop over the patches covering it;
  positive where the region supports the attribute, negative where it argues against it.

`scale="logit"` measures the same drops in log-odds. A confident prediction (p = 0.995) barely
moves in probability even where the model's evidence falls a lot: from 0.995 to 0.95 is a drop of
0.045 in probability and of 2.3 in logit. The logit view shows where that evidence sits. The
log-odds come from the probabilities, clipped to [1e-7, 1 - 1e-7], so they stop at about +-16.1.

Occlusion asks a model about images it never saw in training (grey squares), so read the map as
where the model looks, not as a causal account of the face.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image

from faceattr.errors import FaceattrError, did_you_mean

if TYPE_CHECKING:
    from faceattr.infer.model import AttributeModel

logger = logging.getLogger(__name__)

__all__ = ["REGIONS", "SCALES", "CropClassifier", "Explanation", "check_attribute", "check_output", "explain", "explain_crop", "pick_face", "render_explanation",
           "save_explanation"]

ALIGNED_H, ALIGNED_W = 218, 178
# Rows of the aligned frame, from the alignment template (eyes at y=112, nose tip 135, mouth
# corners 152, face box 68-183): each band holds one part of every aligned face.
REGIONS: dict[str, tuple[int, int]] = {
    "hair and forehead": (0, 95),
    "eyes and brows": (95, 125),
    "nose and cheeks": (125, 143),
    "mouth": (143, 165),
    "chin and jaw": (165, 188),
    "neck and clothing": (188, 218),
}
GREY = 128


class CropClassifier(Protocol):
    """What explaining needs of a model: its name, attribute names and probabilities for aligned crops."""

    name: str
    attributes: list[str]

    def predict_aligned(self, crops: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        """Probabilities [N, attributes] for uint8 aligned crops [N, 218, 178, 3]."""
        ...


SCALES = ("probability", "logit")


def _logit(p: np.ndarray | float) -> np.ndarray:
    """log(p / (1 - p)), with p clipped so that 0 and 1 stay finite."""
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(q / (1 - q))


@dataclass
class Explanation:
    """One attribute of one aligned face, with what hiding each part of the crop does to it."""

    attribute: str
    probability: float  # on the unaltered crop
    regions: dict[str, float]  # band name -> the probability with that band greyed out
    heatmap: np.ndarray  # float32 [218, 178]: mean drop (in `scale`) when a patch covers the pixel
    crop: np.ndarray  # uint8 [218, 178, 3], the aligned crop explained
    patch: int
    stride: int
    scale: str = "probability"  # what the heat map's drops are measured in: probability | logit

    def value(self, p: float) -> float:
        """A probability in this explanation's scale."""
        return float(_logit(p)) if self.scale == "logit" else p

    def to_dict(self) -> dict[str, object]:
        """JSON-ready figures (the crop and heat map are not included)."""
        doc: dict[str, object] = {
            "attribute": self.attribute, "probability": round(self.probability, 6),
            "regions": {k: round(v, 6) for k, v in self.regions.items()}, "patch": self.patch, "stride": self.stride,
            "scale": self.scale}
        if self.scale == "logit":
            doc["logit"] = round(self.value(self.probability), 4)
            doc["region_logits"] = {k: round(self.value(v), 4) for k, v in self.regions.items()}
        return doc

    def summary(self) -> str:
        """One line per region, largest effect first."""
        base = self.value(self.probability)
        logit = f" (logit {base:.2f})" if self.scale == "logit" else ""
        lines = [f"{self.attribute} {self.probability:.3f}{logit} on the whole crop; with one part hidden:"]
        for name, p in sorted(self.regions.items(), key=lambda kv: -abs(self.value(kv[1]) - base)):
            change = self.value(p) - base
            lines.append(f"  {name:<18} {p:.3f}  ({'logit ' if logit else ''}{change:+.{2 if logit else 3}f})")
        return "\n".join(lines)


def check_attribute(model: CropClassifier, attribute: str) -> None:
    """A one-line error (with a suggestion) unless `model` predicts `attribute`."""
    if attribute not in model.attributes:
        raise FaceattrError(f"model '{model.name}' does not predict '{attribute}'{did_you_mean(attribute, model.attributes)}")


def _starts(size: int, patch: int, stride: int) -> list[int]:
    """Patch origins covering [0, size) with the last patch flush with the edge."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


MIN_PATCH, MIN_STRIDE = 8, 4  # finer grids cost thousands of model runs per face and show nothing new


def _check_request(model: CropClassifier, attribute: str, patch: int, stride: int, scale: str) -> None:
    """Every argument check of an explanation, as one-line errors, before any model run."""
    check_attribute(model, attribute)
    if scale not in SCALES:
        raise FaceattrError(f"scale must be one of {', '.join(SCALES)}, got '{scale}'")
    if not MIN_PATCH <= patch <= ALIGNED_W or not MIN_STRIDE <= stride <= patch:
        raise FaceattrError(f"patch must be {MIN_PATCH}-{ALIGNED_W} px and stride {MIN_STRIDE} px up to the patch, "
                            f"got patch {patch} and stride {stride}")


def explain_crop(
    model: CropClassifier,
    crop: np.ndarray | Image.Image,
    attribute: str,
    *,
    patch: int = 32,
    stride: int = 16,
    batch_size: int = 64,
    scale: str = "probability",
) -> Explanation:
    """Occlusion sensitivity of `attribute` on one aligned 178x218 crop (uint8 RGB array or PIL image).

    The occluded copies are built and classified `batch_size` at a time, so memory stays flat and a
    caller can share the model between calls (serve locks `predict_aligned` per call).
    """
    _check_request(model, attribute, patch, stride, scale)
    a = np.asarray(crop.convert("RGB") if isinstance(crop, Image.Image) else crop, dtype=np.uint8)
    if a.shape != (ALIGNED_H, ALIGNED_W, 3):
        raise FaceattrError(f"expected an aligned {ALIGNED_W}x{ALIGNED_H} RGB crop, got shape {a.shape}")
    j = model.attributes.index(attribute)

    # Every occluded copy as (row slice, column slice): first the bands, then the square's positions.
    ys, xs = _starts(ALIGNED_H, patch, stride), _starts(ALIGNED_W, patch, stride)
    masks = [(slice(y0, y1), slice(None)) for y0, y1 in REGIONS.values()]
    masks += [(slice(y, y + patch), slice(x, x + patch)) for y in ys for x in xs]
    probs = [float(model.predict_aligned(a[None], batch_size=1)[0, j])]
    for k in range(0, len(masks), batch_size):
        chunk = np.repeat(a[None], len(masks[k : k + batch_size]), axis=0)
        for b, m in zip(chunk, masks[k : k + batch_size]):
            b[m] = GREY
        probs.extend(float(p) for p in model.predict_aligned(chunk, batch_size=batch_size)[:, j])
    if not np.isfinite(probs).all():
        raise FaceattrError(f"model '{model.name}' returned non-finite probabilities for '{attribute}'; "
                            "check the checkpoint (e.g. with faceattr evaluate)")
    regions = {name: probs[1 + i] for i, name in enumerate(REGIONS)}
    values = _logit(np.asarray(probs)) if scale == "logit" else np.asarray(probs, dtype=np.float64)

    drop = np.zeros((ALIGNED_H, ALIGNED_W), np.float64)
    count = np.zeros((ALIGNED_H, ALIGNED_W), np.int32)
    for m, v in zip(masks[len(REGIONS) :], values[1 + len(REGIONS) :], strict=True):
        drop[m] += values[0] - v
        count[m] += 1
    heat = (drop / np.maximum(count, 1)).astype(np.float32)
    logger.debug("explained %s on %d occluded copies of the crop", attribute, len(masks))
    return Explanation(attribute, probs[0], regions, heat, a, patch, stride, scale)


def pick_face(
    model: AttributeModel,
    image: str | Path | Image.Image | np.ndarray,
    face: int,
    *,
    detect: bool = True,
    align: bool = True,
    min_face: int = 24,
) -> Image.Image:
    """The aligned crop of face number `face` (1 = the largest) of a photo, or a one-line error."""
    if face < 1:
        raise FaceattrError(f"faces are numbered from 1 (the largest), got {face}")
    faces = model.predict(image, detect=detect, align=align, max_faces=face, min_face=min_face)
    name = image if isinstance(image, (str, Path)) else "the image"
    if not faces:
        raise FaceattrError(f"{name}: no face found (try --no-detect for a tight face crop)")
    if len(faces) < face:
        raise FaceattrError(f"{name}: face {face} asked for, but only {len(faces)} face(s) found")
    chosen = faces[face - 1]
    if getattr(chosen, "too_small", False):
        raise FaceattrError(f"{name}: face {face} is smaller than the {min_face}-px minimum, so it is not classified")
    crop = getattr(chosen, "crop", None)
    if crop is None:
        raise FaceattrError(f"{name}: face {face} came without an aligned crop, so it cannot be explained")
    return crop


def explain(
    model: AttributeModel,
    image: str | Path | Image.Image | np.ndarray,
    attribute: str,
    *,
    face: int = 1,
    detect: bool = True,
    align: bool = True,
    min_face: int = 24,
    patch: int = 32,
    stride: int = 16,
    scale: str = "probability",
) -> Explanation:
    """Occlusion sensitivity of `attribute` for face number `face` (1 = largest) of a photo."""
    _check_request(model, attribute, patch, stride, scale)  # before detection: a typo should not cost a model run
    crop = pick_face(model, image, face, detect=detect, align=align, min_face=min_face)
    return explain_crop(model, crop, attribute, patch=patch, stride=stride, scale=scale)


def render_explanation(e: Explanation) -> bytes:
    """The crop, the heat map over it and the region table as one PNG image, as bytes.

    matplotlib's object API on an Agg canvas, as in evaluate/report.py: no pyplot global state and no
    backend switch, so it is safe in a notebook and in the server's worker threads.
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lim = max(float(np.abs(e.heatmap).max()), 1e-6)
    fig = Figure(figsize=(11, 4.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1.25, 1.5]})
    axes[0].imshow(e.crop)
    axes[0].set_title("aligned crop")
    axes[1].imshow(e.crop)
    im = axes[1].imshow(e.heatmap, cmap="RdBu_r", vmin=-lim, vmax=lim, alpha=0.55)
    axes[1].set_title(f"hiding a {e.patch}px square")
    unit = f"logit p({e.attribute})" if e.scale == "logit" else f"p({e.attribute})"
    fig.colorbar(im, ax=axes[1], fraction=0.05, label=f"drop in {unit}")
    for ax in axes[:2]:
        ax.set_xticks([])
        ax.set_yticks([])
    names = list(REGIONS)
    axes[2].barh(names[::-1], [e.value(e.regions[n]) for n in names][::-1], color="#8da0cb")
    base = e.value(e.probability)
    axes[2].axvline(base, color="k", linestyle="--")
    if e.scale == "logit":
        axes[2].axvline(0, color="0.6", linewidth=0.8)  # p = 0.5
    else:
        axes[2].set_xlim(0, 1)
    axes[2].set_xlabel(f"{unit} with the part hidden\n(dashed line: the whole crop, {base:.3f})")
    fig.suptitle(f"{e.attribute}: where the model looks (occlusion)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return buf.getvalue()


def check_output(path: str | Path) -> Path:
    """Refuse an output path that could not be written, before the work that fills it."""
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise FaceattrError(f"{out}: the explanation is written as a PNG; give a path ending in .png")
    parent = next((q for q in [out.parent, *out.parent.parents] if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise FaceattrError(f"{out}: {parent} is a file, not a folder; choose another --out")
    return out


def save_explanation(e: Explanation, path: str | Path) -> Path:
    """Write `render_explanation(e)` to a .png path (atomically: a temp file, then a rename)."""
    out = check_output(path)
    tmp = out.with_name(out.name + ".tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(render_explanation(e))
        tmp.replace(out)
    except OSError as err:
        raise FaceattrError(f"cannot write {out} ({err.strerror or err}); choose another --out") from None
    return out
