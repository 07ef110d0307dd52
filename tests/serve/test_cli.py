"""`faceattr serve` as a user runs it: binds loopback by default, answers, and stops on Ctrl-C."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from faceattr.cli import main

TESTS = Path(__file__).resolve().parents[1]

# `faceattr serve` with the fake model standing in for `--model NAME` (a subprocess cannot be monkeypatched).
SERVE = """
import sys
sys.path.insert(0, {tests!r})
import faceattr.search.indexer as indexer
from search.fakes import FakeModel
indexer.load_model = lambda source, device="cpu", backend="auto": FakeModel(name=source)
from faceattr.cli import main
sys.exit(main(["serve", "--index", {index!r}, "--port", "{port}"]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _other_address() -> str | None:
    """A non-loopback address of this machine, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent; this only picks a route
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_serve_binds_loopback_answers_and_stops_on_ctrl_c(indexed: tuple[Path, Path, dict]) -> None:
    port = _free_port()
    code = SERVE.format(tests=str(TESTS), index=str(indexed[1]), port=port)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert health is not None, f"server did not come up: {proc.communicate()[1] if proc.poll() is not None else ''}"
        assert health["model"] == "fake"  # without --model, the model the index was built with
        assert health["index"]["faces"] > 0
        other = _other_address()
        if other is not None:
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://{other}:{port}/healthz", timeout=2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0
    assert f"http://127.0.0.1:{port}/" in out


def test_serve_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--index", str(tmp_path / "missing.sqlite")]) == 2
    assert "index not found" in capsys.readouterr().err
    assert main(["serve", "--port", "70000"]) == 2
    assert "--port must be between" in capsys.readouterr().err
