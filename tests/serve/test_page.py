"""The web page in headless Chromium: the explain panel's figures, and what a failed upload leaves behind."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from search.fakes import ATTRS, FakeFace, FakeModel, write_image

from faceattr.infer.explain import GREY, REGIONS
from faceattr.infer.image_io import MAX_PIXELS
from faceattr.serve import create_app

from .conftest import ARTIFACTS, live_server

pytestmark = pytest.mark.browser

# How far each part of the face moves Male's log-odds when hidden (negative weight: the part argues against).
WEIGHTS = {"hair and forehead": 0.5, "eyes and brows": -1.5, "nose and cheeks": 0.2, "mouth": 1.0,
           "chin and jaw": 3.0, "neck and clothing": 0.8}
BIAS = 8.0  # log-odds 12 on the whole crop: Male 0.999994, and still above 0.9998 with any part hidden


class ExplainableModel(FakeModel):
    """The fake model, plus aligned crops whose Male log-odds is BIAS + the WEIGHTS of the parts left visible."""

    def _faces(self, a: np.ndarray) -> list[FakeFace]:
        faces = super()._faces(a)
        for f in faces:
            if f.probabilities:
                f.crop = np.zeros((218, 178, 3), np.uint8)
        return faces

    def predict_aligned(self, crops: Any, *, batch_size: int = 64) -> np.ndarray:
        out = np.full((len(crops), len(ATTRS)), 0.5)
        for i, c in enumerate(np.asarray(crops)):
            visible = {n: float(np.mean(c[y0:y1] != GREY)) for n, (y0, y1) in REGIONS.items()}
            # float64: near p = 1 float32 would round the log-odds in the second decimal.
            out[i, ATTRS.index("Male")] = 1 / (1 + math.exp(-(BIAS + sum(w * visible[n] for n, w in WEIGHTS.items()))))
        return out


def test_explain_panel_shows_the_log_odds_change_it_ranks_by(browser_page: Any, tmp_path: Path) -> None:
    page = browser_page
    photo = write_image(tmp_path / "upload.png", [0.93, 0.99, 0.71, 0.45, 0.66, 0.05])
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    ARTIFACTS.mkdir(exist_ok=True)

    with live_server(create_app(ExplainableModel())) as url:
        page.goto(url)
        page.wait_for_selector("#status.ok")
        assert f"{MAX_PIXELS / 1e6:g} MP" in page.inner_text("#limits")  # the server's pixel limit, shown before upload
        page.set_input_files("#file", str(photo))
        page.wait_for_selector(".face-card .bar")
        page.locator(".face-card .bar", has_text="Male").click()
        page.wait_for_selector(".face-card .explain table")
        fig = page.locator(".face-card .explain")
        parts = [t.removeprefix("hide ") for t in fig.locator("tbody td:first-child").all_inner_texts()]
        changes = fig.locator("tbody td.num").all_inner_texts()
        # Every part hidden leaves Male above 99.98%: in probabilities each row would read "100%".
        assert parts == sorted(WEIGHTS, key=lambda n: -abs(WEIGHTS[n]))
        assert changes == [f"{-WEIGHTS[n]:+.2f}" for n in parts] == ["-3.00", "+1.50", "-1.00", "-0.80", "-0.50", "-0.20"]
        assert fig.locator("thead").inner_text().split() == ["part", "hidden", "log-odds", "change"]
        caption = fig.locator("figcaption").inner_text()
        assert caption.startswith("Male 100% (log-odds +12.00).")
        assert "change in log-odds when that part is hidden, largest first" in caption
        assert "hiding the chin and jaw (-3.00)" in caption
        assert "%" not in fig.locator("table").inner_text()
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / "serve-explain-logodds.png"), full_page=True)
    assert errors == []


def _shown(page: Any) -> dict[str, Any]:
    """What the analyse panel shows: the photo's stage and canvas size, face cards and the message."""
    return page.evaluate(
        """() => ({stage: !document.getElementById('stage').hidden,
                   canvas: [document.getElementById('canvas').width, document.getElementById('canvas').height],
                   cards: document.querySelectorAll('.face-card').length,
                   faces: document.getElementById('faces').innerText.trim()})"""
    )


def test_failed_upload_clears_the_previous_photo_and_boxes(browser_page: Any, tmp_path: Path) -> None:
    page = browser_page
    good = write_image(tmp_path / "good.png", [0.93, 0.12, 0.71, 0.45, 0.66, 0.05], n_faces=2)  # 72x48 = 3,456 px
    big = tmp_path / "big.png"
    from PIL import Image

    Image.new("RGB", (100, 100), (90, 90, 90)).save(big)  # 10,000 px: over this server's limit, a valid image
    notes = tmp_path / "notes.png"
    notes.write_text("not really a png")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    with live_server(create_app(FakeModel(), max_pixels=5_000)) as url:
        page.goto(url)
        page.wait_for_selector("#status.ok")
        assert "5,000 pixels" in page.inner_text("#limits")
        for bad, message in [(big, "pixel limit"), (notes, "not an image")]:
            page.set_input_files("#file", str(good))
            page.wait_for_selector(".face-card .bar")
            shown = _shown(page)
            assert shown["stage"] and shown["canvas"][0] > 0 and shown["cards"] == 3
            page.evaluate("document.getElementById('toast').hidden = true")
            page.set_input_files("#file", str(bad))
            page.wait_for_selector("#toast:not([hidden])")
            assert message in page.inner_text("#toast")
            page.wait_for_function("() => document.getElementById('faces').innerText.trim() === 'No result.'")
            # Neither the previous photo with its boxes nor the refused one stays beside "No result."
            assert _shown(page) == {"stage": False, "canvas": [0, 0], "cards": 0, "faces": "No result."}
            page.screenshot(path=str(ARTIFACTS / "serve-failed-upload.png"), full_page=True)
            # A resize redraws only what is there: nothing comes back.
            page.set_viewport_size({"width": 1100, "height": 900})
            page.wait_for_timeout(300)
            assert _shown(page)["canvas"] == [0, 0]
            page.set_viewport_size({"width": 1280, "height": 900})
        # And the next good photo shows again.
        page.set_input_files("#file", str(good))
        page.wait_for_selector(".face-card .bar")
        shown = _shown(page)
        assert shown["stage"] and shown["canvas"][0] > 0 and shown["cards"] == 3
    assert errors == []
