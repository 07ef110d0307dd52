"""The server under load, in CI: benchmarks/serve_load.py's mix against `faceattr serve` with a fake model,
the queue limit (503 + Retry-After), slow clients cut off while others are answered, and the settings' wiring.

The fake model answers in microseconds and exactly (its answers are written into its images), so a few
hundred requests take seconds and "correct" means the right numbers, not only the same ones twice.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from search.fakes import ATTRS, FakeModel, image_array, image_bytes

from faceattr.infer.image_io import MAX_PIXELS
from faceattr.serve import create_app

from .conftest import server_in_thread

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"


def _load_benchmark() -> Any:
    spec = importlib.util.spec_from_file_location("serve_load", ROOT / "benchmarks" / "serve_load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_load"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()

# Runs in the `faceattr serve` subprocess before main(): the fake model stands in for `--model NAME`.
FAKE = f"""
sys.path.insert(0, {str(TESTS)!r})
import faceattr.search.indexer as indexer
from search.fakes import FakeModel
indexer.load_model = lambda source, device="cpu", backend="auto": FakeModel(name=source)
"""


def _face_ids(index: Path) -> list[int]:
    con = sqlite3.connect(index)
    try:
        return [r[0] for r in con.execute("SELECT id FROM faces ORDER BY id")]
    finally:
        con.close()


def _fake_cases(face_ids: list[int], max_upload_bytes: int) -> tuple[list[Any], dict[str, tuple[list[float], int]]]:
    """The benchmark's kinds of request, made of images whose right answer is known; returns (cases, name -> truth)."""
    truth: dict[str, tuple[list[float], int]] = {}
    cases = []
    for i, probs in enumerate([[0.9, 0.1, 0.8, 0.3, 0.6, 0.2], [0.2, 0.7, 0.1, 0.95, 0.4, 0.5], [0.5, 0.5, 0.5, 0.05, 0.9, 0.1]]):
        for n_faces, kind in ((1, "good"), (2, "group")):
            name = f"{kind}{i}.png"
            truth[name] = (probs, n_faces)
            cases.append(bench.Case("POST /predict", kind, "POST", "/predict", files={"file": (name, image_bytes(probs, n_faces), "image/png")},
                                    weight=3, checked=True))
    for q in ("Male=1", "Eyeglasses=1 Smiling=0", "Young>0.5"):
        cases.append(bench.Case("GET /search", "search", "GET", "/search", params={"where": q}, weight=3, checked=True))
    cases.append(bench.Case("GET /search", "bad query", "GET", "/search", params={"where": "Nope=1"}, expect=(400,)))
    cases.append(bench.Case("POST /search/like", "like", "POST", "/search/like",
                            files={"file": ("like.png", image_bytes([0.9, 0.1, 0.8, 0.3, 0.6, 0.2]), "image/png")}, weight=2, checked=True))
    # The fake's faces come without aligned crops: /explain runs its checks and answers 422, never 5xx.
    cases.append(bench.Case("POST /explain", "explain", "POST", "/explain", files={"file": ("e.png", image_bytes([0.5] * 6), "image/png")},
                            data={"attribute": "Male"}, expect=(422,)))
    cases += [bench.Case("GET /image", "crop", "GET", f"/image/{fid}", checked=True) for fid in face_ids[:3]]
    cases += [bench.Case("GET page/static/info", "page", "GET", p, checked=True) for p in ("/", "/static/app.js", "/info")]
    refusals = bench.refusal_cases(image_bytes([0.5] * 6), max_upload_bytes, MAX_PIXELS)
    return cases + refusals, truth


def _assert_truth(cases: list[Any], truth: dict[str, tuple[list[float], int]]) -> None:
    """The references are right, not only consistent: each face reads back the probabilities written into its image."""
    seen = 0
    for c in cases:
        if c.kind in ("good", "group"):
            probs, n_faces = truth[c.files["file"][0]]
            faces = [f for f in c.reference["faces"] if f["attributes"]]
            assert len(faces) == n_faces, c.files["file"][0]
            for f in faces:
                assert [f["attributes"][a] for a in ATTRS] == pytest.approx(probs, abs=0.01)
            seen += 1
    assert seen == 6


def test_load_run_on_faceattr_serve(indexed: tuple[Path, Path, dict]) -> None:
    """A few hundred mixed requests, 8 at once, with the slow clients alongside: every requirement the benchmark checks."""
    _, index, _ = indexed
    max_upload = 2**20
    args = ["--index", str(index), "--max-upload-mb", "1", "--max-in-flight", "24", "--request-timeout", "2", "--send-timeout", "2"]
    cases, truth = _fake_cases(_face_ids(index), max_upload)
    with bench.serve(args, prelude=FAKE, startup_s=240) as (base, proc):
        assert httpx.get(f"{base}/info", timeout=10).json()["max_in_flight"] == 24  # the flag reaches the app
        assert asyncio.run(bench.take_references(base, cases)) == []
        _assert_truth(cases, truth)
        asyncio.run(bench.run_load(base, bench.pick(cases, 60, seed=1), concurrency=8))
        mem_start = bench.memory_kib(proc.pid)["VmRSS"]

        async def measured() -> tuple[list[Any], list[Any]]:
            load = asyncio.ensure_future(bench.run_load(base, bench.pick(cases, 300, seed=0), concurrency=8))
            slow = await bench.slow_clients(base, proc.pid, request_timeout=2, send_timeout=2, slack=5)
            outcomes, _ = await load
            return outcomes, slow

        outcomes, slow = asyncio.run(measured())
        time.sleep(0.5)
        mem_end = bench.memory_kib(proc.pid)["VmRSS"]
        alive = proc.poll() is None and httpx.get(f"{base}/healthz", timeout=10).status_code == 200
    assert len(outcomes) == 300
    assert {o.kind for o in outcomes} >= {"good", "group", "search", "oversize", "corrupt", "bomb", "traversal", "explain"}
    # Memory: a loose bound here (300 requests are too few to tell a slow leak from noise), 10% in the benchmark.
    failed = [(name, evidence) for name, ok, evidence in bench.requirements(outcomes, alive, mem_start, mem_end, slow, flat=0.5) if not ok]
    assert failed == []
    statuses = {s.name: s.status for s in slow}
    assert statuses["trickles its headers"] == 408 and statuses["trickles its body"] == 408
    assert statuses["connects, sends nothing"] == 0  # closed without a word, like an idle keep-alive connection


def test_benchmark_judges_wrong_answers_as_wrong() -> None:
    """The checks the load run relies on can fail: a changed answer, a wrong status, a 5xx, a leak, a slow client kept."""
    case = bench.Case("POST /predict", "good", checked=True, reference={"faces": [{"attributes": {"Male": 0.9}}]})
    assert bench.judge(case, 200, {"faces": [{"attributes": {"Male": 0.9}}]}) is None
    assert "Male" in bench.judge(case, 200, {"faces": [{"attributes": {"Male": 0.2}}]})
    assert bench.judge(case, 200, {"faces": []}) == ".faces: 0 items, reference 1"
    assert "status 500" in bench.judge(case, 500, {"detail": "boom"})
    trav = bench.Case("GET traversal", "traversal", expect=(400, 404))
    assert bench.judge(trav, 404, b"root:x:0:0") == "a traversal got a system file"
    ok = [bench.Outcome("GET /", "page", 200, 0.01), bench.Outcome("GET traversal", "traversal", 404, 0.01)]
    slow_ok = bench.SlowResult("x", 2.0, 408, True, 5.0)
    assert all(met for _, met, _ in bench.requirements(ok, True, 1000, 1050, [slow_ok]))
    # A 503, 20% growth, a slow client still connected, and no traversal attempt at all: each one fails.
    reqs = dict((n, met) for n, met, _ in bench.requirements([ok[0], bench.Outcome("GET /", "page", 503, 0.01, "status 503")], True, 1000, 1200,
                                                               [bench.SlowResult("x", 9.0, 0, False, 5.0)]))
    assert reqs == {"no 5xx": False, "no crash, no dropped request": True, "memory flat (end within 10% of after warm-up)": False,
                    "every request answered correctly": True, "traversal refused": False, "slow client cut off within 5 s: x": False}


# ---- the same server as `faceattr serve` runs it, in a thread, around a model the test controls ------------


@contextmanager
def guarded_server(app: Any, request_timeout: float = 30, send_timeout: float = 30) -> Iterator[str]:
    """Run `app` as `faceattr serve` does (GuardedH11Protocol and its limits) on a free port in a thread; yields the base URL."""
    import uvicorn

    from faceattr.serve.server import ServeConfig, ServerLimits

    limits = ServerLimits(request_timeout=request_timeout, send_timeout=send_timeout)
    with server_in_thread(lambda port: uvicorn.Server(ServeConfig(app, host="127.0.0.1", port=port, log_level="warning",
                                                                  limits=limits))) as url:
        yield url


class _GatedModel(FakeModel):
    """predict waits until the test opens the gate; counts the calls that reached the model."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.calls = 0

    def predict(self, image: Any, **kw: Any) -> Any:
        self.calls += 1
        self.gate.wait(timeout=30)
        return super().predict(image, **kw)


def test_queue_limit_answers_503_with_retry_after(indexed: tuple[Path, Path, dict]) -> None:
    model = _GatedModel()
    app = create_app(model, indexed[1], max_in_flight=2)
    photo = image_bytes([0.9, 0.1, 0.8, 0.3, 0.6, 0.2])
    results: list[int] = []
    with guarded_server(app) as url:
        def post() -> None:
            results.append(httpx.post(f"{url}/predict", files={"file": ("a.png", photo, "image/png")}, timeout=30).status_code)

        threads = [threading.Thread(target=post) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while model.calls < 1 and time.monotonic() < deadline:  # one inside the model, the other behind its lock
            time.sleep(0.01)
        time.sleep(0.2)
        busy = [httpx.get(f"{url}/info", timeout=5), httpx.post(f"{url}/predict", files={"file": ("b.png", photo, "image/png")}, timeout=5)]
        assert [r.status_code for r in busy] == [503, 503]
        assert all(r.headers["retry-after"] == "1" and "busy" in r.json()["detail"] for r in busy)
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200  # liveness is answered even when full
        model.gate.set()
        for t in threads:
            t.join(timeout=30)
        assert results == [200, 200]
        # The slots are given back: the next requests are served.
        assert httpx.get(f"{url}/info", timeout=5).status_code == 200
        assert httpx.post(f"{url}/predict", files={"file": ("c.png", photo, "image/png")}, timeout=10).status_code == 200


def test_slow_clients_do_not_hold_up_others(indexed: tuple[Path, Path, dict]) -> None:
    """While four slow clients hold connections (for up to 30 s), 40 uploads are answered, correctly."""
    app = create_app(FakeModel(), indexed[1], max_in_flight=8)
    cases, truth = _fake_cases(_face_ids(indexed[1]), 2**20)
    good = [c for c in cases if c.kind in ("good", "group")]
    with guarded_server(app) as url:
        assert asyncio.run(bench.take_references(url, good)) == []
        _assert_truth(good, truth)
        host, port = url.removeprefix("http://").split(":")

        async def run() -> tuple[list[Any], list[bool]]:
            body_head = (f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                         "Content-Length: 100000\r\n\r\n").encode()
            slow = [asyncio.ensure_future(c) for c in (
                bench.slow_client(host, int(port), "silent", b"", b"", 0.2, 30),
                bench.slow_client(host, int(port), "headers", b"GET /info HTTP/1.1\r\n", b"X-Slow: abc\r\n", 0.2, 30),
                bench.slow_client(host, int(port), "body", body_head, b"--b\r\n", 0.2, 30),
                bench.never_reads(host, int(port), bench.BIG_STATIC, 30, os.getpid()),
            )]
            await asyncio.sleep(0.5)  # all four are connected and stalling
            outcomes, _ = await bench.run_load(url, bench.pick(good, 40, seed=2), concurrency=4, timeout=30)
            still_there = [not t.done() for t in slow]
            for t in slow:
                t.cancel()  # closes their sockets
            await asyncio.gather(*slow, return_exceptions=True)
            return outcomes, still_there

        outcomes, still_there = asyncio.run(run())
        after = httpx.get(f"{url}/info", timeout=10)
    assert len(outcomes) == 40 and [o.problem for o in outcomes if o.problem] == []
    assert still_there == [True] * 4  # the others were answered while the slow ones were still connected
    assert after.status_code == 200


def test_a_client_that_never_reads_a_large_answer_is_dropped(indexed: tuple[Path, Path, dict]) -> None:
    """64 MB cannot all sit in the kernel's buffers: the server's send stalls, and send_timeout drops the client."""
    from fastapi.responses import Response

    app = create_app(FakeModel(), indexed[1], max_in_flight=1)
    app.add_api_route("/big", lambda: Response(b"x" * (64 << 20), media_type="application/octet-stream"))
    with guarded_server(app, send_timeout=1.5) as url:
        host, port = url.removeprefix("http://").split(":")
        dropped = asyncio.run(bench.never_reads(host, int(port), "/big", bound=1.5 + 5, server_pid=os.getpid()))
        # The one in-flight slot the stuck answer held is free again.
        assert httpx.get(f"{url}/info", timeout=5).status_code == 200
    assert dropped.ok, dropped.note


def test_workers_share_the_port_and_answer_correctly(indexed: tuple[Path, Path, dict], tmp_path: Path) -> None:
    """`--workers 2`: two processes, each building its app from the settings the parent passed on."""
    # Worker processes start from scratch (spawn), so the fake model goes in through sitecustomize,
    # which every Python started with this PYTHONPATH imports first.
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(FAKE.replace("sys.path", "import sys\nsys.path", 1))
    _, index, _ = indexed
    cases, truth = _fake_cases(_face_ids(index), 2**20)
    good = [c for c in cases if c.kind in ("good", "group", "search")]
    args = ["--index", str(index), "--workers", "2", "--max-in-flight", "5"]
    with bench.serve(args, startup_s=300, env={"PYTHONPATH": str(tmp_path / "site")}) as (base, proc):
        children = [c for task in Path(f"/proc/{proc.pid}/task").iterdir() for c in (task / "children").read_text().split()]
        # Besides the workers, multiprocessing may start its resource tracker.
        workers = [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(workers) == 2
        assert httpx.get(f"{base}/info", timeout=10).json()["max_in_flight"] == 5
        assert asyncio.run(bench.take_references(base, good)) == []
        _assert_truth(good, truth)
        outcomes, _ = asyncio.run(bench.run_load(base, bench.pick(good, 60, seed=3), concurrency=4, timeout=30))
    assert len(outcomes) == 60 and [o.problem for o in outcomes if o.problem] == []


class _CropModel(FakeModel):
    """A fake whose faces carry an aligned crop, so /explain runs; records every predict_aligned batch."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def predict(self, image: Any, **kw: Any) -> Any:
        import numpy as np

        faces = super().predict(image, **kw)
        for f in faces:
            f.crop = np.full((218, 178, 3), 128, np.uint8)
            f.crop[60:100, :] = 230  # the "eyes" band: hiding it changes the fake's first attribute
        return faces

    def predict_aligned(self, crops: Any, *, batch_size: int = 64) -> Any:
        self.batches.append(len(crops))
        return super().predict_aligned(crops, batch_size=batch_size)


def test_explain_classifies_in_small_batches() -> None:
    """/explain's occluded copies go to the model a few at a time (bounded arena memory), with the same figures."""
    from fastapi.testclient import TestClient

    from faceattr.infer.explain import explain_crop

    model = _CropModel()
    with TestClient(create_app(model)) as c:
        r = c.post("/explain", files={"file": ("a.png", image_bytes([0.5] * 6), "image/png")}, data={"attribute": "Eyeglasses"})
    assert r.status_code == 200, r.text
    sizes = model.batches
    assert len(sizes) > 10 and max(sizes) <= 8
    whole = explain_crop(FakeModel(), model.predict(image_array([0.5] * 6))[0].crop, "Eyeglasses", batch_size=64)
    assert r.json()["regions"] == whole.to_dict()["regions"]


def test_model_calls_all_run_on_one_thread(indexed: tuple[Path, Path, dict]) -> None:
    """Predictions, search-by-photo and explanations from many clients at once all reach the model on one thread."""
    threads: set[int] = set()

    class _Recording(_CropModel):
        def predict(self, image: Any, **kw: Any) -> Any:
            threads.add(threading.get_ident())
            time.sleep(0.01)  # long enough that concurrent requests overlap
            return super().predict(image, **kw)

        def predict_aligned(self, crops: Any, *, batch_size: int = 64) -> Any:
            threads.add(threading.get_ident())
            return super().predict_aligned(crops, batch_size=batch_size)

    photo = ("a.png", image_bytes([0.9, 0.1, 0.8, 0.3, 0.6, 0.2]), "image/png")
    cases = [bench.Case("POST /predict", "good", "POST", "/predict", files={"file": photo}),
             bench.Case("POST /search/like", "like", "POST", "/search/like", files={"file": photo}),
             bench.Case("POST /explain", "explain", "POST", "/explain", files={"file": photo}, data={"attribute": "Male"})]
    with guarded_server(create_app(_Recording(), indexed[1])) as url:
        outcomes, _ = asyncio.run(bench.run_load(url, bench.pick(cases, 60, seed=4), concurrency=12, timeout=60))
    assert [o.problem for o in outcomes if o.problem] == []
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_serve_caps_malloc_arenas_before_loading_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cap must come before the model's threads exist; on glibc it takes effect."""
    import faceattr.search.indexer as indexer
    import faceattr.serve.server as server
    from faceattr.cli import main

    calls: list[str] = []
    real_cap = server.cap_malloc_arenas
    monkeypatch.setattr(server, "cap_malloc_arenas", lambda: calls.append("cap") or real_cap())
    monkeypatch.setattr(indexer, "load_model", lambda source, **kw: calls.append("load") or FakeModel(name=source))
    monkeypatch.setattr(server, "run", lambda config: calls.append("run"))
    assert main(["serve"]) == 0
    assert calls == ["cap", "load", "run"]
    if sys.platform == "linux" and "glibc" in " ".join(__import__("platform").libc_ver()):
        assert real_cap() is True


def test_settings_defaults_and_help() -> None:
    """`faceattr serve`'s defaults are the library's constants, and --help documents each setting."""
    import argparse

    from faceattr.serve.app import DEFAULT_MAX_IN_FLIGHT
    from faceattr.serve.cli import register
    from faceattr.serve.server import DEFAULT_REQUEST_TIMEOUT, DEFAULT_SEND_TIMEOUT

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve"])
    assert (args.workers, args.max_in_flight, args.request_timeout, args.send_timeout) == (
        1, DEFAULT_MAX_IN_FLIGHT, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SEND_TIMEOUT)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["serve"]
    text = sub.format_help()
    for flag in ("--workers", "--max-in-flight", "--request-timeout", "--send-timeout", "Retry-After", "408"):
        assert flag in text
