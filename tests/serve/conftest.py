"""Fixtures for the web service: an index built by the fake model, the app, and a live loopback server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from search.fakes import FakeModel, make_dataset  # tests/ is on sys.path (tests/search is a package)
from search.realdata import default_model  # noqa: F401  (fixture shared with tests/search)


@pytest.fixture
def indexed(tmp_path: Path) -> tuple[Path, Path, dict]:
    """(folder, index, truth): 40 synthetic images indexed with the fake model."""
    from faceattr.search import build_index

    root = tmp_path / "photos"
    truth = make_dataset(root, 40)
    build_index(root, tmp_path / "index.sqlite", FakeModel(), batch_size=16, progress=False)
    return root, tmp_path / "index.sqlite", truth


@pytest.fixture
def aged_index(tmp_path: Path) -> tuple[Path, Path, dict[str, float]]:
    """(folder, index, ages): 40 synthetic images indexed with a fake model that predicts age."""
    from faceattr.search import build_index

    root = tmp_path / "aged"
    ages: dict[str, float] = {}
    make_dataset(root, 40, ages=ages)
    build_index(root, tmp_path / "aged.sqlite", FakeModel(age=True), batch_size=16, progress=False)
    return root, tmp_path / "aged.sqlite", ages


@pytest.fixture
def client(indexed: tuple[Path, Path, dict]) -> Iterator[Any]:
    """TestClient of an app with the fake model and the fake index."""
    from fastapi.testclient import TestClient

    from faceattr.serve import create_app

    app = create_app(FakeModel(), indexed[1])
    with TestClient(app) as c:
        yield c


@contextmanager
def server_in_thread(make_server: Callable[[int], Any]) -> Iterator[str]:
    """Bind a free 127.0.0.1 port, run the uvicorn.Server that `make_server(port)` builds on it in a thread;
    yields the base URL, stops the server on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = make_server(port)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@contextmanager
def live_server(app: Any, max_requests: int = 400) -> Iterator[str]:
    """Run `app` with uvicorn on a free 127.0.0.1 port in a thread; yields the base URL, stops on exit."""
    import uvicorn

    # limit_max_requests bounds the server's loop even if a test forgets to stop it.
    with server_in_thread(lambda port: uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", limit_max_requests=max_requests))) as url:
        yield url


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives headless Chromium with Playwright; skipped without them")


CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def browser_page() -> Iterator[Any]:
    """A Playwright page in headless system Chromium (never downloads a browser)."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install 'faceattr[dev]')")
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()
