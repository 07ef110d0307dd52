"""The service with the shipped default model on real photos: API on the portraits, and the page in Chromium.

Needs the shipped default model (and for the page test the CelebA subset); skips without them.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from faceattr.search import build_index, search
from faceattr.serve import create_app

from .conftest import ARTIFACTS, live_server

SAMPLES = Path(__file__).resolve().parents[2] / "src" / "faceattr" / "assets" / "samples"


def test_predict_on_a_portrait_and_on_its_exif_rotated_copy(default_model: Any) -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app(default_model)) as c:
        data = (SAMPLES / "grace_hopper.jpg").read_bytes()
        doc = c.post("/predict", files={"file": ("grace_hopper.jpg", data, "image/jpeg")}).json()
        assert (doc["width"], doc["height"]) == (512, 600)
        assert len(doc["faces"]) == 1
        face = doc["faces"][0]
        x, y, w, h = face["box"]
        assert 0 <= x < x + w <= 512 and 0 <= y < y + h <= 600 and w > 100
        assert set(face["attributes"]) == set(default_model.attributes)
        thr = dict(zip(default_model.attributes, default_model.thresholds))
        assert set(face["present"]) == {a for a, p in face["attributes"].items() if p >= thr[a] - 1e-6}

        # The same photo stored sideways with an EXIF "rotate 90" tag: the server must see it upright.
        with Image.open(SAMPLES / "grace_hopper.jpg") as im:
            sideways = im.transpose(Image.Transpose.ROTATE_90)
            exif = Image.Exif()
            exif[0x0112] = 6  # orientation: rotate 90 CW to display
            buf = io.BytesIO()
            sideways.save(buf, format="JPEG", quality=95, exif=exif)
        doc2 = c.post("/predict", files={"file": ("sideways.jpg", buf.getvalue(), "image/jpeg")}).json()
        assert (doc2["width"], doc2["height"]) == (512, 600) and len(doc2["faces"]) == 1
        np.testing.assert_allclose(doc2["faces"][0]["box"], face["box"], atol=12)


@pytest.mark.browser
def test_page_with_real_photos(browser_page: Any, default_model: Any, celeba_root: Path, tmp_path: Path) -> None:
    page = browser_page
    root = tmp_path / "photos"
    root.mkdir()
    for f in sorted(os.listdir(celeba_root / "img_align_celeba"))[:24]:
        os.symlink(celeba_root / "img_align_celeba" / f, root / f)
    shutil.copy(SAMPLES / "astronaut.jpg", root / "astronaut.jpg")
    index = tmp_path / "index.sqlite"
    build_index(root, index, default_model, batch_size=32, progress=False)
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    with live_server(create_app(default_model, index)) as url:
        page.goto(url)
        page.wait_for_selector("#status.ok")
        page.set_input_files("#file", str(SAMPLES / "grace_hopper.jpg"))
        page.wait_for_selector(".face-card .bar")
        assert page.locator(".face-card").count() == 1
        bars = page.locator(".face-card .bar")
        assert bars.count() == 12  # the top 12, then "Show all 40"
        page.click("text=Show all 40")
        assert bars.count() == len(default_model.attributes)
        shown = [float(v.rstrip("%")) for v in page.locator(".face-card .bar .val").all_inner_texts()]
        assert shown == sorted(shown, reverse=True)
        # Clicking a bar asks /explain and shows where the model looks for that attribute.
        with page.expect_response(lambda r: r.url.endswith("/explain"), timeout=60_000) as reply:
            page.locator(".face-card .bar", has_text="Eyeglasses").click()
        page.wait_for_selector(".face-card .explain img", timeout=60_000)
        page.wait_for_function("() => { const i = document.querySelector('.face-card .explain img'); return i.complete && i.naturalWidth > 600; }")
        assert "hiding the eyes and brows" in page.locator(".face-card .explain figcaption").inner_text()
        # The page asks for log-odds and lists the parts by how far each moves them.
        doc = reply.value.json()
        assert doc["scale"] == "logit"
        by_logit = sorted(doc["regions"], key=lambda n: -abs(doc["region_logits"][n] - doc["logit"]))
        listed = [t.removeprefix("hide ") for t in page.locator(".face-card .explain table td:first-child").all_inner_texts()]
        assert listed == by_logit
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / "serve-real-predict.png"), full_page=True)

        page.fill("#where", "Smiling=1")
        page.click("#search-button")
        page.wait_for_selector("#gallery figure")
        page.wait_for_function("() => [...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth > 0)")
        lib = search(index, "Smiling=1", top=24)
        assert page.locator("#gallery figure .file").all_inner_texts() == [m.image for m in lib.matches]
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / "serve-real-search.png"), full_page=True)
    assert errors == []


def test_explain_a_portrait(default_model: Any) -> None:
    import base64

    from fastapi.testclient import TestClient

    data = (SAMPLES / "grace_hopper.jpg").read_bytes()
    upload = {"file": ("grace_hopper.jpg", data, "image/jpeg")}
    with TestClient(create_app(default_model)) as c:
        r = c.post("/explain", files=upload, data={"attribute": "Eyeglasses", "patch": "48", "stride": "48"})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["face"] == 0 and doc["attribute"] == "Eyeglasses" and doc["probability"] > 0.8  # 0.88 (shipped 2026-12-06)
        assert doc["regions"]["eyes and brows"] < 0.5 < doc["regions"]["neck and clothing"]
        head, b64 = doc["image"].split(",", 1)
        assert head == "data:image/png;base64"
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            assert im.format == "PNG" and im.width > 600
        r = c.post("/explain", files=upload, data={"attribute": "Eyeglasses", "patch": "48", "stride": "48",
                                                   "scale": "logit"})
        logit = r.json()
        assert r.status_code == 200 and logit["scale"] == "logit" and logit["regions"] == doc["regions"]
        assert logit["region_logits"]["eyes and brows"] < 0 < logit["logit"]
        r = c.post("/explain", files=upload, data={"attribute": "Eyeglases"})
        assert r.status_code == 400 and "did you mean Eyeglasses" in r.json()["detail"]
        r = c.post("/explain", files=upload, data={"attribute": "Male", "face": "1"})  # faces count from 0
        assert r.status_code == 422 and "no face number 1 (1 found" in r.json()["detail"]
        r = c.post("/explain", files=upload, data={"attribute": "Male", "patch": "16", "stride": "20"})
        assert r.status_code == 422 and "up to the patch" in r.json()["detail"]


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (17, 9), (2000, 4), (64, 64)])
def test_degenerate_images_get_an_answer_not_a_crash(default_model: Any, size: tuple[int, int]) -> None:
    from fastapi.testclient import TestClient

    buf = io.BytesIO()
    Image.new("RGB", size, (200, 180, 160)).save(buf, format="PNG")
    with TestClient(create_app(default_model)) as c:
        r = c.post("/predict", files={"file": ("tiny.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["faces"] == [] and (r.json()["width"], r.json()["height"]) == size
