"""One pixel limit: the server refuses exactly what `load_rgb` (and so `faceattr predict`) refuses."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from search.fakes import FakeModel, image_bytes

from faceattr.cli import main
from faceattr.errors import FaceattrError
from faceattr.infer.image_io import MAX_PIXELS, load_rgb
from faceattr.serve import create_app


def _png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit grayscale PNG: a huge size in a few kilobytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\x00" * (1 + (width + 7) // 8)) * height
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def test_server_and_load_rgb_refuse_the_same_image(tmp_path: Path) -> None:
    width = 10_000
    height = MAX_PIXELS // width + 1  # one row over the limit
    data = _png(width, height)
    path = tmp_path / "huge.png"
    path.write_bytes(data)
    with pytest.raises(FaceattrError, match=rf"above the {MAX_PIXELS / 1e6:g} MP limit"):
        load_rgb(path)
    with TestClient(create_app(FakeModel())) as c:
        assert c.get("/info").json()["max_pixels"] == MAX_PIXELS
        r = c.post("/predict", files={"file": ("huge.png", data, "image/png")})
    assert r.status_code == 413
    assert f"above the {MAX_PIXELS:,} pixel limit" in r.json()["detail"]


def _serve(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> tuple[int, Any]:
    """Run `faceattr serve ARGV` with the fake model and without a server; returns (exit code, the app it built)."""
    import faceattr.search.indexer as indexer
    import faceattr.serve.server as server

    built: list[Any] = []
    monkeypatch.setattr(indexer, "load_model", lambda source, **kwargs: FakeModel(name=source))
    monkeypatch.setattr(server, "run", lambda config: built.append(config.app))
    code = main(["serve", *argv])
    return code, built[0] if built else None


def test_serve_defaults_to_the_library_limit_and_takes_another(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, app = _serve(monkeypatch, [])
    assert code == 0
    with TestClient(app) as c:
        assert c.get("/info").json()["max_pixels"] == MAX_PIXELS
    code, app = _serve(monkeypatch, ["--max-pixels", "3000"])
    assert code == 0
    with TestClient(app) as c:
        assert c.get("/info").json()["max_pixels"] == 3000
        # The fake's photo is 72x48 = 3,456 pixels: over this server's limit.
        r = c.post("/predict", files={"file": ("a.png", image_bytes([0.9] * 6), "image/png")})
        assert r.status_code == 413 and "3,000 pixel limit" in r.json()["detail"]
    capsys.readouterr()
    code, app = _serve(monkeypatch, ["--max-pixels", "0"])
    assert code == 2 and app is None
    assert "--max-pixels must be positive" in capsys.readouterr().err
