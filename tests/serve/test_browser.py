"""End to end in headless Chromium: upload a photo on the page and see bars, search and see a gallery."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from search.fakes import ATTRS, FakeModel, write_image

from faceattr.search import search
from faceattr.serve import create_app

from .conftest import ARTIFACTS, live_server

pytestmark = pytest.mark.browser


def test_upload_shows_boxes_and_bars_and_search_shows_a_gallery(browser_page: Any, indexed: tuple[Path, Path, dict], tmp_path: Path) -> None:
    page = browser_page
    _, index, _ = indexed
    probs = [0.93, 0.12, 0.71, 0.45, 0.66, 0.05]
    photo = write_image(tmp_path / "upload.png", probs, n_faces=2)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    ARTIFACTS.mkdir(exist_ok=True)

    with live_server(create_app(FakeModel(), index)) as url:
        page.goto(url)
        page.wait_for_selector("#status.ok")
        assert "6 attributes" in page.inner_text("#status-text")

        page.set_input_files("#file", str(photo))
        page.wait_for_selector(".face-card .bar")
        cards = page.locator(".face-card")
        assert cards.count() == 3  # two classified faces and one too small to classify
        names = cards.nth(0).locator(".bar .name").all_inner_texts()
        expected = [a.replace("_", " ") for a, _ in sorted(zip(ATTRS, probs), key=lambda t: -t[1])]
        assert names == expected  # sorted by probability
        values = cards.nth(0).locator(".bar .val").all_inner_texts()
        assert values == [f"{round(p * 100)}%" for p in sorted(probs, reverse=True)]
        assert cards.nth(0).locator(".bar.on").count() == sum(p >= 0.5 for p in probs)
        assert "Too small" in cards.nth(2).inner_text()
        assert page.locator(".face-card .age").count() == 0  # the fake model predicts no age: nothing shown
        # The canvas shows the photo (its aspect ratio) with face 1's box drawn in face 1's colour.
        width, height = 8 * (len(ATTRS) + 1) + 16, 48
        w, h, edge = page.evaluate(
            """([iw, box]) => {
                const c = document.getElementById('canvas');
                const s = c.width / iw;
                const px = c.getContext('2d').getImageData(Math.round(box[0] * s), Math.round((box[1] + box[3] / 2) * s), 1, 1).data;
                return [c.width, c.height, [px[0], px[1], px[2]]];
            }""",
            [width, [4, 4, 18, 30]],
        )
        assert abs(w / h - width / height) < 0.02
        assert sum(abs(a - b) for a, b in zip(edge, (0x4F, 0x46, 0xE5))) < 60, edge
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / "serve-predict.png"), full_page=True)

        assert not [q for q in page.locator("#quick button").all_inner_texts() if q.startswith("age")]
        page.fill("#where", "Male=0 Smiling=1")
        page.select_option("#top", "12")
        page.click("#search-button")
        page.wait_for_selector("#gallery figure")
        page.wait_for_function("() => [...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth > 0)")
        lib = search(index, "Male=0 Smiling=1", top=12)
        tiles = page.locator("#gallery figure")
        assert tiles.count() == len(lib.matches) > 0
        assert tiles.locator(".file").all_inner_texts() == [m.image for m in lib.matches]
        assert f"{lib.total} of {lib.searched} faces match" in page.inner_text("#search-summary")
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / "serve-search.png"), full_page=True)

        # Look-alikes of face 1 of the uploaded photo, restricted by the query in the box.
        cards.nth(0).locator("button", has_text="Find look-alikes").click()
        page.wait_for_function("() => document.getElementById('search-summary').textContent.startsWith('Look-alikes')")
        face1 = FakeModel().predict(photo)[0].probabilities  # what the server saw, not the rounded input
        like = search(index, "Male=0 Smiling=1", like=np.asarray([face1[a] for a in ATTRS], np.float32), top=12)
        assert tiles.locator(".file").all_inner_texts() == [m.image for m in like.matches]

        # A user error surfaces as a message on the page, not a silent failure.
        page.fill("#where", "Smilling=1")
        page.click("#search-button")
        page.wait_for_selector("#toast:not([hidden])")
        assert "did you mean Smiling" in page.inner_text("#toast")
        notes = tmp_path / "notes.png"
        notes.write_text("not really a png")
        page.set_input_files("#file", str(notes))
        page.wait_for_function("() => document.getElementById('toast').textContent.includes('not an image')")
    assert errors == []


def test_ages_show_on_face_cards_and_search_by_age_shows_them_on_tiles(browser_page: Any, aged_index: tuple[Path, Path, dict],
                                                                      tmp_path: Path) -> None:
    page = browser_page
    _, index, ages = aged_index
    photo = write_image(tmp_path / "upload.png", [0.93, 0.12, 0.71, 0.45, 0.66, 0.05], n_faces=2, age=41)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    ARTIFACTS.mkdir(exist_ok=True)

    with live_server(create_app(FakeModel(age=True), index)) as url:
        page.goto(url)
        page.wait_for_selector("#status.ok")
        assert "age<30 or age>=65" in page.inner_text("#index-info")

        page.set_input_files("#file", str(photo))
        page.wait_for_selector(".face-card .bar")
        cards = page.locator(".face-card")
        assert cards.count() == 3
        # In each classified face's header, beside its name; the face too small to classify has none.
        assert [cards.nth(i).locator(".face-head .age").all_inner_texts() for i in range(3)] == [["age ~41"], ["age ~41"], []]
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / "serve-predict-age.png"), full_page=True)

        page.fill("#where", "age<30")
        page.select_option("#top", "48")
        page.click("#search-button")
        page.wait_for_selector("#gallery figure")
        lib = search(index, "age<30", top=48)
        tiles = page.locator("#gallery figure")
        assert tiles.count() == len(lib.matches) > 0
        assert tiles.locator(".file").all_inner_texts() == [m.image for m in lib.matches]
        # Math.round: half years round up (the fake's ages include x.5).
        assert tiles.locator(".age").all_inner_texts() == [f"age ~{math.floor(ages[m.image] + 0.5)}" for m in lib.matches]
        assert all(ages[m.image] < 30 for m in lib.matches)
        assert f"{lib.total} of {lib.searched} faces match" in page.inner_text("#search-summary")

        # The age examples are offered for an index with ages, and run.
        page.locator("#quick button", has_text="age<30 Smiling=1").click()
        page.wait_for_function("() => document.getElementById('search-summary').textContent.startsWith('age<30 Smiling=1')")
        both = search(index, "age<30 Smiling=1", top=48)
        assert tiles.locator(".file").all_inner_texts() == [m.image for m in both.matches]
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / "serve-search-age.png"), full_page=True)

        page.fill("#where", "age=30")
        page.click("#search-button")
        page.wait_for_selector("#toast:not([hidden])")
        assert "not an exact value" in page.inner_text("#toast")
    assert errors == []
