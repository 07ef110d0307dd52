"""Occlusion explanations: the arithmetic on a model whose answer we know, and the shipped model on a real portrait."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from faceattr.cli import main
from faceattr.errors import FaceattrError
from faceattr.infer.explain import GREY, REGIONS, explain, explain_crop, save_explanation

from .helpers import noise_canvas


class _LooksAtRows:
    """A stand-in model whose one attribute is the share of non-grey pixels in rows 100-119 of the crop."""

    name = "rows"
    attributes = ["Eyes_Visible", "Other"]

    def predict_aligned(self, crops: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        band = crops[:, 100:120]
        seen = (band != GREY).any(axis=-1).mean(axis=(1, 2))
        return np.stack([seen, np.full_like(seen, 0.5)], axis=1).astype(np.float32)


def _crop(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, size=(218, 178, 3), dtype=np.uint8)
    a[a == GREY] = GREY + 1  # so "grey" means occluded and nothing else
    return a


def test_regions_and_heatmap_follow_what_the_model_reads() -> None:
    e = explain_crop(_LooksAtRows(), _crop(), "Eyes_Visible", patch=16, stride=8)  # type: ignore[arg-type]
    assert e.probability == pytest.approx(1.0)
    # Rows 100-119 lie in "eyes and brows" (95-125) alone: hiding it hides everything the model reads.
    assert e.regions["eyes and brows"] == pytest.approx(0.0)
    assert all(p == pytest.approx(1.0) for name, p in e.regions.items() if name != "eyes and brows")
    # No 16-px patch covering rows 0-84 or 135-217 reaches rows 100-119, so the map is zero there ...
    assert np.abs(e.heatmap[:85]).max() == 0 and np.abs(e.heatmap[135:]).max() == 0
    # ... and positive across the band, where every covering patch hides part of it.
    assert (e.heatmap[100:120] > 0).all()
    # A 16x16 patch inside the band hides 256 of its 20x178 pixels: that is the drop at its centre.
    assert e.heatmap[110, 89] == pytest.approx(256 / (20 * 178), rel=0.2)
    assert e.heatmap.shape == (218, 178) and e.crop.shape == (218, 178, 3)
    # Classified in chunks: chunk boundaries change nothing.
    small = explain_crop(_LooksAtRows(), _crop(), "Eyes_Visible", patch=16, stride=8, batch_size=5)  # type: ignore[arg-type]
    assert small.regions == e.regions and np.array_equal(small.heatmap, e.heatmap)


class _SoftRows(_LooksAtRows):
    """The same reader with its answer kept in [0.25, 0.75], so no log-odds is clipped."""

    def predict_aligned(self, crops: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        p = super().predict_aligned(crops, batch_size=batch_size)
        p[:, 0] = 0.25 + 0.5 * p[:, 0]
        return p


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def test_the_logit_scale_measures_the_same_drops_in_log_odds() -> None:
    model: Any = _SoftRows()
    prob = explain_crop(model, _crop(), "Eyes_Visible", patch=16, stride=16)
    logit = explain_crop(model, _crop(), "Eyes_Visible", patch=16, stride=16, scale="logit")
    assert logit.scale == "logit" and logit.probability == pytest.approx(0.75)
    # Pixel (110, 8) lies under one 16-px tile only (rows 96-111, columns 0-15), so its heat is that
    # tile's drop: in probability, and in log-odds of the same two probabilities.
    hidden = prob.probability - float(prob.heatmap[110, 8])
    assert hidden < 0.75
    assert float(logit.heatmap[110, 8]) == pytest.approx(_logit(0.75) - _logit(hidden), rel=1e-4)
    assert np.abs(logit.heatmap[:96]).max() == 0  # nothing the model reads, in either scale
    doc: dict[str, Any] = logit.to_dict()
    assert doc["scale"] == "logit" and doc["logit"] == pytest.approx(_logit(0.75), abs=1e-4)
    assert doc["region_logits"]["eyes and brows"] == pytest.approx(_logit(0.25), abs=1e-4)
    assert "region_logits" not in prob.to_dict() and prob.to_dict()["scale"] == "probability"
    lines = logit.summary().splitlines()
    assert "(logit 1.10)" in lines[0] and lines[1].split()[:3] == ["eyes", "and", "brows"]
    assert "(logit -2.20)" in lines[1]
    with pytest.raises(FaceattrError, match="scale must be one of probability, logit"):
        explain_crop(model, _crop(), "Eyes_Visible", scale="odds")
    # Probabilities of exactly 1 and 0 (the hard reader): clipped log-odds, finite, valid JSON.
    hard = explain_crop(_LooksAtRows(), _crop(), "Eyes_Visible", patch=48, stride=48, scale="logit")  # type: ignore[arg-type]
    assert np.isfinite(hard.heatmap).all() and hard.heatmap.max() > 0
    doc = json.loads(json.dumps(hard.to_dict(), allow_nan=False))
    assert doc["logit"] == pytest.approx(16.118, abs=1e-3) and doc["region_logits"]["eyes and brows"] == pytest.approx(-16.118, abs=1e-3)


class _Broken(_LooksAtRows):
    def predict_aligned(self, crops: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        return np.full((len(crops), 2), np.nan, np.float32)


def test_a_model_that_returns_nan_is_a_one_line_error() -> None:
    with pytest.raises(FaceattrError, match="non-finite probabilities for 'Eyes_Visible'"):
        explain_crop(_Broken(), _crop(), "Eyes_Visible", patch=48, stride=48)  # type: ignore[arg-type]


def test_bad_requests_are_one_line_errors(tmp_path: Path) -> None:
    model: Any = _LooksAtRows()
    with pytest.raises(FaceattrError, match="does not predict 'Eyes_visible'.*did you mean Eyes_Visible"):
        explain_crop(model, _crop(), "Eyes_visible")
    with pytest.raises(FaceattrError, match="patch must be 8-178 px"):
        explain_crop(model, _crop(), "Eyes_Visible", patch=2)
    with pytest.raises(FaceattrError, match="stride 4 px up to the patch"):
        explain_crop(model, _crop(), "Eyes_Visible", patch=16, stride=17)
    with pytest.raises(FaceattrError, match="stride 4 px up to the patch"):
        explain_crop(model, _crop(), "Eyes_Visible", patch=8, stride=1)  # 37,000 model runs: refused
    with pytest.raises(FaceattrError, match="aligned 178x218"):
        explain_crop(model, np.zeros((100, 100, 3), np.uint8), "Eyes_Visible")
    e = explain_crop(model, _crop(), "Eyes_Visible", patch=48, stride=48)
    with pytest.raises(FaceattrError, match="ending in .png"):
        save_explanation(e, tmp_path / "map.jpg")


def test_shipped_model_reads_glasses_from_the_eyes_and_the_cap_from_above_them(default_model: Any, grace: Path) -> None:
    glasses = explain(default_model, grace, "Eyeglasses", patch=32, stride=16)
    assert glasses.probability > 0.8  # 0.88 for the 2026-12-06 three-member default (0.96 before)
    assert glasses.regions["eyes and brows"] < 0.5  # hide the eyes and the glasses are gone
    for far in ("hair and forehead", "mouth", "chin and jaw", "neck and clothing"):
        assert glasses.regions[far] > 0.8, (far, glasses.regions)
    row, _ = np.unravel_index(np.argmax(glasses.heatmap), glasses.heatmap.shape)
    assert 80 <= row <= 140, row  # the strongest patch sits on the glasses (eyes at row 112)

    hat = explain(default_model, grace, "Wearing_Hat", patch=48, stride=48)
    assert hat.probability > 0.9
    assert min(hat.regions, key=hat.regions.get) == "hair and forehead"  # type: ignore[arg-type]


def test_no_face_and_a_missing_face_number(default_model: Any, grace: Path, tmp_path: Path) -> None:
    noise = tmp_path / "noise.png"
    Image.fromarray(noise_canvas(np.random.default_rng(0))).save(noise)
    with pytest.raises(FaceattrError, match="no face found"):
        explain(default_model, noise, "Male")
    with pytest.raises(FaceattrError, match="face 2 asked for, but only 1 face"):
        explain(default_model, grace, "Male", face=2)
    with pytest.raises(FaceattrError, match="did you mean Male"):
        explain(default_model, grace, "Mael")


def test_cli_json_and_png(default_model: Any, grace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "map.png"
    assert main(["explain", str(grace), "--attribute", "Eyeglasses", "--patch", "48", "--stride", "48",
                 "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)  # stdout holds the JSON and nothing else
    assert doc["attribute"] == "Eyeglasses" and set(doc["regions"]) == set(REGIONS)
    assert doc["regions"]["eyes and brows"] < 0.5 < doc["probability"]
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 600
    # Log-odds: the same occlusions, each band's figure the log-odds of its probability.
    assert main(["explain", str(grace), "--attribute", "Male", "--patch", "48", "--stride", "48", "--scale", "logit",
                 "--json"]) == 0
    male = json.loads(capsys.readouterr().out)
    # The unoccluded probability is predict's own (Grace Hopper's Male is still wrong: see the model card).
    assert male["scale"] == "logit"
    assert male["probability"] == pytest.approx(default_model.predict(grace)[0].probabilities["Male"], abs=1e-4)
    for name, p in male["regions"].items():
        assert male["region_logits"][name] == pytest.approx(np.log(p / (1 - p)), abs=2e-3)
    assert main(["explain", str(grace), "--attribute", "Eyeglases"]) == 2
    assert "did you mean Eyeglasses" in capsys.readouterr().err
    # An --out that cannot be written is refused at once, in one line, before the model runs.
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for bad, needle in ((blocker / "map.png", "is a file, not a folder"), (tmp_path / "map.jpg", "ending in .png")):
        assert main(["explain", str(grace), "--attribute", "Male", "--out", str(bad)]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err
