"""The web service with an injected fake model: endpoints, every limit, and no way out of the indexed folder."""

from __future__ import annotations

import io
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from search.fakes import ATTRS, FakeModel, image_bytes, write_image

from faceattr.search import search
from faceattr.serve import create_app

from .conftest import live_server


def test_health_info_page_static_and_docs(client: Any, indexed: tuple[Path, Path, dict]) -> None:
    root, _, truth = indexed
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["model"] == "fake" and h["attributes"] == len(ATTRS)
    assert h["index"]["faces"] == sum(n for _, n in truth.values()) and h["index"]["files"] == len(truth) + 1
    info = client.get("/info").json()
    assert info["attributes"] == ATTRS and info["thresholds"] == [0.5] * len(ATTRS)
    assert info["index"]["root"] == str(root.resolve())
    assert info["age"] is False and info["index"]["age"] is False  # neither the fake model nor its index has ages
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'id="dropzone"' in page.text and "/static/app.js" in page.text
    for asset in ("app.js", "style.css"):
        r = client.get(f"/static/{asset}")
        assert r.status_code == 200 and len(r.content) > 1000
    # The docs pages must work offline: every script and stylesheet they load is served by this app.
    for docs in ("/docs", "/redoc"):
        html = client.get(docs)
        assert html.status_code == 200
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html.text)
        assert assets and all(a.startswith("/") and not a.startswith("//") for a in assets), assets
        for a in assets:
            r = client.get(a)
            assert r.status_code == 200 and len(r.content) > 10_000, a
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/search", "/search/like", "/image/{face_id}", "/healthz"} <= set(paths)


class _PredictOnly:
    """The Predictor protocol and nothing more: no predict_aligned, so nothing to explain with."""

    def __init__(self) -> None:
        self._m = FakeModel()
        self.name, self.attributes, self.thresholds, self.meta = self._m.name, self._m.attributes, self._m.thresholds, self._m.meta

    def predict(self, image: Any, **kw: Any) -> Any:
        return self._m.predict(image, **kw)

    def predict_many(self, images: Any, **kw: Any) -> Any:
        return self._m.predict_many(images, **kw)


def test_explain_answers_4xx_or_501_not_a_crash(client: Any) -> None:
    upload = {"file": ("a.png", image_bytes([0.9] * len(ATTRS), 1), "image/png")}
    # The fake's faces carry no aligned crop: a clear 422, not a server error.
    r = client.post("/explain", files=upload, data={"attribute": ATTRS[0]})
    assert r.status_code == 422 and "without an aligned crop" in r.json()["detail"]
    r = client.post("/explain", files=upload, data={"attribute": "Eyeglases"})
    assert r.status_code == 400 and "did you mean Eyeglasses" in r.json()["detail"]
    r = client.post("/explain", files=upload, data={"attribute": ATTRS[0], "patch": "4"})
    assert r.status_code == 422  # below the 16-px minimum: refused by validation
    r = client.post("/explain", files=upload, data={"attribute": ATTRS[0], "scale": "odds"})
    assert r.status_code == 422 and "probability" in r.text  # validation names the two scales
    from fastapi.testclient import TestClient

    with TestClient(create_app(_PredictOnly())) as c:  # type: ignore[arg-type]
        r = c.post("/explain", files=upload, data={"attribute": ATTRS[0]})
    assert r.status_code == 501 and "cannot be explained" in r.json()["detail"]


def test_predict_returns_the_models_faces_as_json(client: Any) -> None:
    probs = [0.9, 0.1, 0.8, 0.3, 0.6, 0.05]
    r = client.post("/predict", files={"file": ("me.png", image_bytes(probs, 2), "image/png")})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["image"] == "me.png" and doc["width"] == 8 * (len(ATTRS) + 1) + 16 and doc["height"] == 48
    assert len(doc["faces"]) == 3  # two classified, one too small (no attributes)
    first = doc["faces"][0]
    assert set(first) >= {"box", "score", "landmarks", "attributes", "present"}
    assert [first["attributes"][a] for a in ATTRS] == pytest.approx(probs, abs=1 / 255)
    assert first["present"] == [a for a, p in zip(ATTRS, probs) if p >= 0.5]
    assert doc["faces"][2]["attributes"] == {}
    assert [f["age"] for f in doc["faces"]] == [None, None, None]  # a model without age: null, never a made-up number


def test_an_age_model_reports_age_per_face_and_its_index_searches_by_age(aged_index: tuple[Path, Path, dict]) -> None:
    from fastapi.testclient import TestClient

    _, index, ages = aged_index
    with TestClient(create_app(FakeModel(age=True), index)) as c:
        info = c.get("/info").json()
        assert info["age"] is True and info["index"]["age"] is True
        r = c.post("/predict", files={"file": ("me.png", image_bytes([0.9, 0.1, 0.8, 0.3, 0.6, 0.05], 2, age=41), "image/png")})
        assert r.status_code == 200, r.text
        assert [f["age"] for f in r.json()["faces"]] == [41.0, 41.0, None]  # the face too small to classify has no age

        r = c.get("/search", params={"where": "age<30", "top": 500})
        assert r.status_code == 200, r.text
        doc = r.json()
        lib = search(index, "age<30", top=500)
        assert doc["where"] == "age<30" and doc["total"] == lib.total > 0
        assert [m["face_id"] for m in doc["matches"]] == [m.face_id for m in lib.matches]
        assert all(m["age"] == ages[m["image"]] < 30 for m in doc["matches"])
        doc = c.get("/search", params={"where": "age>20 age<=40 Male=0", "top": 500}).json()
        assert doc["matches"] and all(20 < m["age"] <= 40 and m["attributes"]["Male"] < 0.5 for m in doc["matches"])
        r = c.get("/search", params={"where": "age=30"})
        assert r.status_code == 400 and "not an exact value" in r.json()["detail"]

        probe = image_bytes([0.2, 0.8, 0.6, 0.4, 0.1, 0.3], 1, age=70)
        r = c.post("/search/like", files={"file": ("p.png", probe, "image/png")}, data={"where": "age>=60", "top": "5"})
        assert r.status_code == 200, r.text
        assert r.json()["matches"] and all(m["age"] >= 60 for m in r.json()["matches"])


def test_an_age_model_over_an_index_without_ages(indexed: tuple[Path, Path, dict]) -> None:
    """The shipped model gains age before the index is rebuilt: ages on photos, age queries say to re-index."""
    from fastapi.testclient import TestClient

    with TestClient(create_app(FakeModel(age=True), indexed[1])) as c:
        info = c.get("/info").json()
        assert info["age"] is True and info["index"]["age"] is False
        assert c.post("/predict", files={"file": ("me.png", image_bytes([0.5] * 6, 1, age=33), "image/png")}).json()["faces"][0]["age"] == 33.0
        r = c.get("/search", params={"where": "age<30"})
        assert r.status_code == 400 and "have no age" in r.json()["detail"] and "--rebuild" in r.json()["detail"]
        doc = c.get("/search", params={"where": "Male=0"}).json()
        assert doc["matches"] and all(m["age"] is None for m in doc["matches"])


def test_upload_limits(indexed: tuple[Path, Path, dict]) -> None:
    from fastapi.testclient import TestClient

    app = create_app(FakeModel(), indexed[1], max_upload_bytes=20_000, max_pixels=5_000)
    with TestClient(app) as c:
        small = image_bytes([0.5] * len(ATTRS))
        assert c.post("/predict", files={"file": ("a.png", small, "image/png")}).status_code == 200
        # Just over the file limit (but within the multipart allowance): refused after reading.
        r = c.post("/predict", files={"file": ("big.png", small + b"\0" * (20_001 - len(small)), "image/png")})
        assert r.status_code == 413 and "upload limit" in r.json()["detail"]
        # Far over: refused from Content-Length, whatever the body.
        r = c.post("/predict", files={"file": ("huge.bin", b"\0" * 2_000_000, "image/png")})
        assert r.status_code == 413 and "upload limit" in r.json()["detail"]
        # Pixel limit, from the header.
        buf = io.BytesIO()
        Image.new("RGB", (100, 100), "gray").save(buf, format="PNG")
        r = c.post("/predict", files={"file": ("wide.png", buf.getvalue(), "image/png")})
        assert r.status_code == 413 and "10,000 pixels" in r.json()["detail"] and "5,000 pixel limit" in r.json()["detail"]
        # Not an image at all / empty / truncated.
        r = c.post("/predict", files={"file": ("notes.txt", b"hello, not an image", "text/plain")})
        assert r.status_code == 415 and "not an image" in r.json()["detail"]
        assert c.post("/predict", files={"file": ("e.png", b"", "image/png")}).status_code == 400
        r = c.post("/predict", files={"file": ("cut.png", small[: len(small) // 2], "image/png")})
        assert r.status_code == 400 and "decoded" in r.json()["detail"]
        assert c.post("/predict").status_code == 422  # no file field


def test_chunked_upload_without_length_is_cut_off(indexed: tuple[Path, Path, dict]) -> None:
    app = create_app(FakeModel(), indexed[1], max_upload_bytes=10_000)
    sent = []

    def body() -> Any:
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n"
        for _ in range(200):  # 200 x 4 KiB = 800 KiB, far over the limit
            sent.append(1)
            yield b"\0" * 4096
        yield b"\r\n--b--\r\n"

    with live_server(app) as url:
        r = httpx.post(f"{url}/predict", content=body(), headers={"content-type": "multipart/form-data; boundary=b"}, timeout=30)
    assert r.status_code == 413
    assert "upload limit" in r.json()["detail"]


def test_search_matches_the_library_and_reports_user_errors(client: Any, indexed: tuple[Path, Path, dict]) -> None:
    index = indexed[1]
    r = client.get("/search", params={"where": "male=0 smiling=1", "top": 5})
    assert r.status_code == 200
    doc = r.json()
    lib = search(index, "Male=0 Smiling=1", top=5)
    assert [m["face_id"] for m in doc["matches"]] == [m.face_id for m in lib.matches]
    assert doc["total"] == lib.total and doc["where"] == "Male=0 Smiling=1"
    assert doc["matches"][0]["image_url"] == f"/image/{lib.matches[0].face_id}"
    r = client.get("/search", params={"where": "Eyeglases=1"})
    assert r.status_code == 400 and "did you mean Eyeglasses" in r.json()["detail"]
    assert client.get("/search", params={"where": "Male=7"}).status_code == 400
    assert client.get("/search").status_code == 422
    assert client.get("/search", params={"where": "Male=1", "top": 0}).status_code == 422
    assert client.get("/search", params={"where": "Male=1", "top": 10_000}).status_code == 422


def test_search_like_an_uploaded_photo(client: Any, indexed: tuple[Path, Path, dict]) -> None:
    truth = indexed[2]
    target = sorted(p for p, (_, n) in truth.items() if n == 1)[5]
    data = image_bytes(truth[target][0])
    r = client.post("/search/like", files={"file": ("q.png", data, "image/png")}, data={"top": "3"})
    assert r.status_code == 200, r.text
    assert r.json()["matches"][0]["image"] == target and r.json()["like"] is True
    r = client.post("/search/like", files={"file": ("q.png", data, "image/png")}, data={"face": "4"})
    assert r.status_code == 422 and "no classified face number 4" in r.json()["detail"]
    r = client.post("/search/like", files={"file": ("q.png", image_bytes([0.5] * len(ATTRS), 0), "image/png")})
    assert r.status_code == 422 and "no face found" in r.json()["detail"]


def test_without_an_index_search_endpoints_say_so(indexed: tuple[Path, Path, dict]) -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app(FakeModel())) as c:
        assert c.get("/healthz").json()["index"] is None
        r = c.get("/search", params={"where": "Male=1"})
        assert r.status_code == 404 and "--index" in r.json()["detail"]
        assert c.get("/image/1").status_code == 404
        assert c.post("/predict", files={"file": ("a.png", image_bytes([0.2] * len(ATTRS)), "image/png")}).status_code == 200


def test_face_crops_and_full_images(client: Any, indexed: tuple[Path, Path, dict]) -> None:
    root, index, _ = indexed
    m = search(index, "Male=1", top=1).matches[0]
    r = client.get(f"/image/{m.face_id}", params={"size": 64})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.size == (64, 64)
    r = client.get(f"/image/{m.face_id}/full")
    with Image.open(io.BytesIO(r.content)) as im, Image.open(root / m.image) as src:
        assert im.size == src.size
    assert client.get("/image/999999").status_code == 404
    assert client.get("/image/abc").status_code == 422
    assert client.get(f"/image/{m.face_id}", params={"size": 5000}).status_code == 422
    (root / m.image).unlink()
    r = client.get(f"/image/{m.face_id}")
    assert r.status_code == 404 and "re-run `faceattr index`" in r.json()["detail"]


@pytest.mark.parametrize("stored", ["../secret.png", "/tmp/secret.png", "sub/../../secret.png", "escape/secret.png"])
def test_no_image_is_served_from_outside_the_indexed_folder(indexed: tuple[Path, Path, dict], stored: str) -> None:
    """Even a tampered index row cannot make the server read a file outside its folder."""
    from fastapi.testclient import TestClient

    root, index, _ = indexed
    secret = root.parent / "secret.png"
    write_image(secret, [0.5] * len(ATTRS))
    if stored.startswith("/tmp/"):
        stored = str(secret)
    os.symlink(root.parent, root / "escape")  # a folder link that leads out of the root
    con = sqlite3.connect(index)
    face_id = con.execute("SELECT faces.id FROM faces JOIN files ON files.id=file_id LIMIT 1").fetchone()[0]
    con.execute("UPDATE files SET path=? WHERE id=(SELECT file_id FROM faces WHERE id=?)", (stored, face_id))
    con.commit()
    con.close()
    with TestClient(create_app(FakeModel(), index)) as c:
        assert c.get(f"/image/{face_id}").status_code == 404
        assert c.get(f"/image/{face_id}/full").status_code == 404


@pytest.mark.parametrize(
    "url",
    ["/static/../../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd", "/static/..%2f..%2fapp.py", "/samples/..%2f..%2fetc%2fpasswd",
     "/samples/../errors", "/image/..%2f..%2fetc%2fpasswd", "/image/1%2f..%2f..%2fetc"],
)
def test_url_traversal_attempts_get_nothing(client: Any, url: str) -> None:
    r = client.get(url)
    assert r.status_code in (404, 422)
    assert b"root:" not in r.content and b"import" not in r.content


def test_samples_are_served(client: Any) -> None:
    r = client.get("/samples/grace_hopper")
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    assert client.get("/samples/nobody").status_code == 404


class _BlockingModel(FakeModel):
    """Each predict call blocks until the test releases it; records how many calls ever overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = 0
        self.calls = 0
        self.max_inside = 0
        self.guard = threading.Lock()
        self.release = threading.Event()

    def predict(self, image: Any, **kw: Any) -> Any:
        with self.guard:
            self.inside += 1
            self.calls += 1
            self.max_inside = max(self.max_inside, self.inside)
        try:
            self.release.wait(timeout=20)
            time.sleep(0.05)  # give an unlocked second caller time to overlap
            return super().predict(image, **kw)
        finally:
            with self.guard:
                self.inside -= 1


def test_model_calls_are_serialised_and_off_the_event_loop(indexed: tuple[Path, Path, dict]) -> None:
    model = _BlockingModel()
    app = create_app(model, indexed[1])
    data = image_bytes([0.7] * len(ATTRS))
    results: list[int] = []
    with live_server(app) as url:
        def post() -> None:
            results.append(httpx.post(f"{url}/predict", files={"file": ("a.png", data, "image/png")}, timeout=30).status_code)

        threads = [threading.Thread(target=post) for _ in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while model.calls == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        # The model is stuck inside a request: were inference on the event loop, this would time out.
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"{url}/search", params={"where": "Male=1"}, timeout=5).status_code == 200
        assert model.calls == 1  # the other two uploads wait for the lock, not inside the model
        model.release.set()
        for t in threads:
            t.join(timeout=30)
    assert results == [200, 200, 200]
    assert model.max_inside == 1 and model.calls == 3


def test_search_sees_a_reindex_while_serving(client: Any, indexed: tuple[Path, Path, dict]) -> None:
    from faceattr.search import build_index

    root, index, _ = indexed
    query = {"where": "Eyeglasses>0.99 Male<0.01", "top": 5}
    assert client.get("/search", params=query).json()["total"] == 0
    client.get("/search", params={"where": "Male=1"})  # the face matrix is now cached
    write_image(root / "late" / "new.png", [0.999, 0.001, 0.5, 0.5, 0.5, 0.5])
    build_index(root, index, FakeModel(), progress=False)
    doc = client.get("/search", params=query).json()
    assert [m["image"] for m in doc["matches"]] == ["late/new.png"]
