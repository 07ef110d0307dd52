"""`faceattr serve` under load: many concurrent clients, bad uploads, slow clients and traversal attempts.

Starts `faceattr serve` (a subprocess on a free 127.0.0.1 port) over a small index built from the
shipped sample portraits and a few CelebA images, sends a warm-up, then `--requests` requests with
`--concurrency` clients: good photos, group photos (three faces side by side), oversize bodies, corrupt
files, decompression bombs (PNGs that declare a huge size), /explain, /search, /search/like, crops,
static files and path-traversal attempts (raw bytes, so nothing normalises the `..`). Slow clients
run alongside: one that connects and says nothing, one that trickles its headers, one that trickles
its body, and one that never reads a 1.5 MB answer.

Prints throughput, p50/p95/p99 latency per endpoint, answers by status, the server's memory (VmRSS
and VmHWM from /proc) after warm-up and at the end, and VmRSS after each tenth of the run (a leak
climbs all the way; an allocator settling in levels off), then PASS/FAIL for: no 5xx and no dropped
connection, the server still up, memory flat (end within 10% of after warm-up), every good request
answered exactly as its reference (its answer in a first sequential pass) and every bad one with its
expected 4xx, traversal refused, and each slow client cut off within its stated bound. Exits 1 on a FAIL.

    nice -n 19 .venv/bin/python benchmarks/serve_load.py --requests 2000 --concurrency 16

tests/serve/test_load.py runs these same functions against a fake model in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
# The server as a user starts it; extra lines (a test's fake model) can be put before `main` runs.
SERVE_CODE = "import sys\n{prelude}\nfrom faceattr.cli import main\nsys.exit(main(['serve', *sys.argv[1:]]))\n"
# Requests the server must refuse, every one of them with exactly these bytes (httpx would resolve the dots).
TRAVERSALS = [
    b"/static/../../../../etc/passwd",
    b"/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    b"/static/..%2f..%2f..%2fetc%2fpasswd",
    b"/static/%252e%252e/%252e%252e/etc/passwd",
    b"/static/....//....//etc/passwd",
    b"/static/..\\..\\..\\etc\\passwd",
    b"/samples/..%2f..%2f..%2fetc%2fpasswd",
    b"/image/1/..%2f..%2f..%2fetc%2fpasswd",
    b"/static-offline-docs/../../../../etc/passwd",
    b"/../../../../etc/passwd",
]
BIG_STATIC = "/static-offline-docs/swagger-ui-bundle.js"  # 1.5 MB, for the client that never reads


# ---- requests and their checks -------------------------------------------------------------------------


@dataclass
class Case:
    """One kind of request: how to send it, what status it must get, and (once known) the answer it must get."""

    label: str  # the endpoint, for the latency table
    kind: str  # good, group, explain, search, ... or a refusal: oversize, corrupt, bomb, traversal
    method: str = "GET"
    path: str = "/"
    params: dict[str, Any] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    data: dict[str, Any] | None = None
    raw_target: bytes | None = None  # sent over a bare socket as the request target, byte for byte
    expect: tuple[int, ...] = (200,)
    weight: float = 1.0
    reference: Any = None  # the answer a 200 must equal; set by `take_references` for `checked` cases
    checked: bool = False


@dataclass
class Outcome:
    """What one request got."""

    label: str
    kind: str
    status: int  # 0: no HTTP answer at all (refused, reset, timed out)
    seconds: float
    problem: str | None = None


def same(a: Any, b: Any, tol: float = 1e-4, where: str = "") -> str | None:
    """Where two JSON documents differ (floats within `tol`), or None when they agree."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{where or 'top'}: keys {sorted(set(a) ^ set(b))} differ"
        for k in a:
            d = same(a[k], b[k], tol, f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} items, reference {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = same(x, y, tol, f"{where}[{i}]")
            if d:
                return d
        return None
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= tol:
            return None
        return f"{where}: {a!r}, reference {b!r}"
    return None if a == b else f"{where}: {str(a)[:80]!r}, reference {str(b)[:80]!r}"


def _answer(content: bytes, content_type: str) -> Any:
    """A response body in comparable form: parsed JSON, else the bytes."""
    if content_type.startswith("application/json"):
        try:
            return json.loads(content)
        except ValueError:
            return content
    return content


def judge(case: Case, status: int, answer: Any) -> str | None:
    """Why an answer is wrong for its case, or None."""
    if status not in case.expect:
        detail = answer.get("detail") if isinstance(answer, dict) else (answer[:80] if isinstance(answer, bytes) else answer)
        return f"status {status}, expected {'/'.join(map(str, case.expect))}: {detail!r}"
    if case.kind == "traversal" and isinstance(answer, (bytes, str)) and b"root:" in (answer if isinstance(answer, bytes) else answer.encode()):
        return "a traversal got a system file"
    if case.checked and status == 200 and case.reference is not None:
        if isinstance(answer, bytes) or isinstance(case.reference, bytes):
            return None if answer == case.reference else f"body differs from the reference ({len(answer)} vs {len(case.reference)} bytes)"
        return same(answer, case.reference)
    return None


async def raw_request(host: str, port: int, method: bytes, target: bytes, timeout: float) -> tuple[int, bytes]:
    """Send one request with `target` exactly as given; returns (status, body) of the answer."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(method + b" " + target + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), body


async def send(client: httpx.AsyncClient, base: str, case: Case, timeout: float) -> tuple[Outcome, Any]:
    """Send one case; returns its outcome (judged) and the answer."""
    t0 = time.perf_counter()
    answer: Any = None
    try:
        if case.raw_target is not None:
            url = httpx.URL(base)
            status, answer = await raw_request(url.host, url.port or 80, case.method.encode(), case.raw_target, timeout)
        else:
            r = await client.request(case.method, base + case.path, params=case.params, files=case.files, data=case.data, timeout=timeout)
            status, answer = r.status_code, _answer(r.content, r.headers.get("content-type", ""))
    except (httpx.HTTPError, OSError, asyncio.TimeoutError) as e:
        return Outcome(case.label, case.kind, 0, time.perf_counter() - t0, f"no answer: {type(e).__name__}: {e}"), None
    seconds = time.perf_counter() - t0
    return Outcome(case.label, case.kind, status, seconds, judge(case, status, answer)), answer


async def take_references(base: str, cases: Sequence[Case], timeout: float = 300) -> list[str]:
    """Send every checked case once, one at a time; its answer becomes the one every later answer must equal."""
    problems = []
    async with httpx.AsyncClient() as client:
        for case in cases:
            if not case.checked:
                continue
            case.reference = None
            outcome, answer = await send(client, base, case, timeout)
            if outcome.status != 200:
                problems.append(f"reference for {case.label} ({case.kind}): {outcome.problem}")
            else:
                case.reference = answer
    return problems


def pick(cases: Sequence[Case], n: int, seed: int) -> list[Case]:
    """`n` cases drawn by weight, the same sequence for the same seed."""
    rng = random.Random(seed)
    return rng.choices(list(cases), weights=[c.weight for c in cases], k=n)


async def run_load(base: str, plan: Sequence[Case], concurrency: int, timeout: float = 300,
                   outcomes: list[Outcome] | None = None) -> tuple[list[Outcome], float]:
    """Send every case of `plan` with `concurrency` clients at once; returns the outcomes (appended to
    `outcomes` as they come, if given, so a caller can watch) and the wall time."""
    outcomes = [] if outcomes is None else outcomes
    queue = iter(plan)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(limits=limits) as client:
        async def worker() -> None:
            for case in queue:  # one shared iterator: each case is taken by exactly one worker
                outcome, _ = await send(client, base, case, timeout)
                outcomes.append(outcome)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return outcomes, wall


# ---- slow clients -------------------------------------------------------------------------------------


@dataclass
class SlowResult:
    """How a slow client was dealt with."""

    name: str
    seconds: float  # from connecting until the server closed or answered
    status: int  # 0: closed without an answer
    cut_off: bool  # closed (or answered) by the server before the client gave up
    bound: float
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.cut_off and self.seconds <= self.bound


async def _read_until_closed(reader: asyncio.StreamReader, limit_s: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (True) or `limit_s` passes (False)."""
    data = b""
    deadline = time.monotonic() + limit_s
    try:
        while (left := deadline - time.monotonic()) > 0:
            chunk = await asyncio.wait_for(reader.read(65536), left)
            if not chunk:
                return data, True
            data += chunk
    except asyncio.TimeoutError:
        return data, False
    except (ConnectionError, OSError):
        return data, True
    return data, False


def _status(data: bytes) -> int:
    """The status code of a raw HTTP answer, 0 if `data` is not one."""
    parts = data.split(b" ", 2)
    return int(parts[1]) if data.startswith(b"HTTP/") and len(parts) > 1 and parts[1].isdigit() else 0


async def slow_client(host: str, port: int, name: str, head: bytes, drip: bytes, interval: float, bound: float) -> SlowResult:
    """Send `head`, then `drip` one byte every `interval` s until the server closes or answers, or `bound` + 10 s pass."""
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    give_up = bound + 10
    reading = asyncio.ensure_future(_read_until_closed(reader, give_up))
    try:
        writer.write(head)
        for i in range(10**6):
            if reading.done() or time.monotonic() - t0 > give_up:
                break
            if drip:
                try:
                    writer.write(drip[i % len(drip) : i % len(drip) + 1])
                    await writer.drain()
                except (ConnectionError, OSError):
                    break
            await asyncio.sleep(interval)
        data, closed = await reading
    finally:
        writer.close()
    seconds = time.monotonic() - t0
    status = _status(data)
    return SlowResult(name, seconds, status, closed or status != 0, bound)


def server_holds(pid: int, server_port: int, client_port: int) -> bool:
    """Whether process `pid` (or a child: a worker) still has its end of the connection from `client_port` open.

    Read from /proc/net/tcp{,6}: a server that closed its socket leaves at most an orphan, owned by the
    kernel (inode 0), which delivers what it had already taken; that costs the server nothing.
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if int(f[1].rsplit(":", 1)[1], 16) == server_port and int(f[2].rsplit(":", 1)[1], 16) == client_port and f[9] != "0":
                inodes.add(f"socket:[{f[9]}]")
    if not inodes:
        return False
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            pids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    for p in pids:
        try:
            fds = list(Path(f"/proc/{p}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    return True
            except OSError:
                continue
    return False


async def never_reads(host: str, port: int, path: str, bound: float, server_pid: int, name: str = "never reads its answer") -> SlowResult:
    """Ask for `path` on a socket with a tiny receive buffer, read nothing for `bound` s, then see whether the server let go."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Set before connecting, so the window the server sees stays small and its send buffer fills.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (host, port))
        client_port = sock.getsockname()[1]
        await loop.sock_sendall(sock, f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await asyncio.sleep(bound)
        held = server_holds(server_pid, port, client_port)
        try:
            first = await asyncio.wait_for(loop.sock_recv(sock, 65536), 2)
        except (ConnectionError, OSError, asyncio.TimeoutError) as e:
            first = f"({type(e).__name__})".encode()
    finally:
        sock.close()
    answer = f"its answer had begun to arrive (HTTP {_status(first)})" if _status(first) else f"the client's first read: {first[:40]!r}"
    note = f"checked at {bound:g} s: the server {'still holds' if held else 'had let go of'} the connection; {answer}"
    return SlowResult(name, bound, 0, not held, bound, note)


async def slow_clients(base: str, server_pid: int, request_timeout: float, send_timeout: float, slack: float,
                       keep_alive: float = 5) -> list[SlowResult]:
    """The four slow clients, at once; each must be cut off within its timeout + `slack` seconds.

    The one that never reads is let go after `send_timeout` if its answer is stuck in the server, or
    after the keep-alive timeout if the kernel took it all (the 1.5 MB answer mostly is, on loopback).
    """
    url = httpx.URL(base)
    host, port = url.host, url.port or 80
    bound = request_timeout + slack
    body_head = (f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                 f"Content-Length: 100000\r\n\r\n").encode()
    return list(await asyncio.gather(
        slow_client(host, port, "connects, sends nothing", b"", b"", 0.2, bound),
        slow_client(host, port, "trickles its headers", b"GET /healthz HTTP/1.1\r\n", b"X-Slow: abcdefghij\r\n", 0.2, bound),
        slow_client(host, port, "trickles its body", body_head, b"--b\r\nContent-Disposition: form-data", 0.2, bound),
        never_reads(host, port, BIG_STATIC, max(send_timeout, keep_alive) + slack, server_pid, "never reads a 1.5 MB answer"),
    ))


# ---- the server -----------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on just now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (KiB) of a process plus its children (the workers of `--workers N`)."""
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    total = {"VmRSS": 0, "VmHWM": 0}
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in total:
                    total[key] += int(value.split()[0])
        except OSError:
            continue
    return total


@contextmanager
def serve(args: Sequence[str], prelude: str = "", startup_s: float = 300, env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run `faceattr serve ARGS --port P` in a subprocess (after `prelude`, e.g. a test's fake model); yields (base URL, process)."""
    port = free_port()
    code = SERVE_CODE.format(prelude=prelude)
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-c", code, *args, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"faceattr serve exited with {proc.returncode}:\n{log.read().decode(errors='replace')[-3000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"faceattr serve did not answer within {startup_s:g} s:\n{log.read().decode(errors='replace')[-3000:]}")
            time.sleep(0.2)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.seek(0)
        tail = log.read().decode(errors="replace")
        log.close()
        if "Traceback" in tail:
            print("server log (it raised):\n" + tail[-4000:], file=sys.stderr)


# ---- bad uploads --------------------------------------------------------------------------------------


def png_bomb(width: int, height: int, valid: bool = True) -> bytes:
    """A PNG declaring width x height: `valid` compresses every (black, 1-bit) row into a few KiB, else one row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\x00" * (1 + (width + 7) // 8)) * (height if valid else 1)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def refusal_cases(photo: bytes, max_upload_bytes: int, max_pixels: int) -> list[Case]:
    """Uploads the server must refuse, each with its status: oversize, corrupt, bombs; and traversal attempts."""
    oversize = os.urandom(1024) * ((max_upload_bytes + 2**20) // 1024)
    width = 10_000
    cases = [
        Case("POST /predict", "oversize", "POST", "/predict", files={"file": ("big.jpg", oversize, "image/jpeg")}, expect=(413,)),
        Case("POST /predict", "corrupt", "POST", "/predict", files={"file": ("cut.jpg", photo[: len(photo) // 2], "image/jpeg")},
             expect=(400,)),
        Case("POST /predict", "corrupt", "POST", "/predict", files={"file": ("notes.jpg", b"not an image at all " * 50, "image/jpeg")},
             expect=(415,)),
        Case("POST /predict", "corrupt", "POST", "/predict", files={"file": ("head.jpg", photo[: min(600, len(photo) // 4)], "image/jpeg")},
             expect=(400, 415)),  # a header cut short: unreadable (415) or undecodable (400), by format
        Case("POST /predict", "corrupt", "POST", "/predict", files={"file": ("empty.png", b"", "image/png")}, expect=(400,)),
        # Just over the pixel limit and decodable (a real bomb, a few KiB), and absurdly large with no data.
        Case("POST /predict", "bomb", "POST", "/predict",
             files={"file": ("bomb.png", png_bomb(width, max_pixels // width + 1), "image/png")}, expect=(413,)),
        Case("POST /predict", "bomb", "POST", "/predict", files={"file": ("huge.png", png_bomb(100_000, 100_000, valid=False), "image/png")},
             expect=(413,)),
        Case("POST /explain", "bomb", "POST", "/explain", files={"file": ("huge.png", png_bomb(100_000, 100_000, valid=False), "image/png")},
             data={"attribute": "Male"}, expect=(413,)),
    ]
    cases += [Case("GET traversal", "traversal", "GET", t.decode(), raw_target=t, expect=(400, 404)) for t in TRAVERSALS]
    return cases


# ---- the real model's cases ---------------------------------------------------------------------------


def _jpeg(im: Any) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def group_photo(paths: Sequence[Path]) -> bytes:
    """The photos side by side on a grey canvas, scaled to one height: a group photo with one face per photo."""
    from PIL import Image

    ims = [Image.open(p).convert("RGB") for p in paths]
    h = min(im.height for im in ims)
    ims = [im.resize((round(im.width * h / im.height), h)) for im in ims]
    pad = h // 4
    canvas = Image.new("RGB", (sum(im.width for im in ims) + pad * (len(ims) + 1), h + 2 * pad), (128, 128, 128))
    x = pad
    for im in ims:
        canvas.paste(im, (x, pad))
        x += im.width + pad
    return _jpeg(canvas)


def real_cases(singles: Sequence[Path], groups: Sequence[bytes], face_ids: Sequence[int], attributes: Sequence[str],
               max_upload_bytes: int, max_pixels: int, predicts_age: bool) -> list[Case]:
    """The benchmark's request mix for a real model: weights are shares of all requests."""
    cases: list[Case] = []
    for p in singles:
        data = p.read_bytes()
        cases.append(Case("POST /predict", "good", "POST", "/predict", files={"file": (p.name, data, "image/jpeg")}, weight=30 / len(singles),
                          checked=True))
    for i, g in enumerate(groups):
        cases.append(Case("POST /predict", "group", "POST", "/predict", files={"file": (f"group{i}.jpg", g, "image/jpeg")},
                          weight=10 / len(groups), checked=True))
    explained = singles[:2]
    for p in explained:
        cases.append(Case("POST /explain", "explain", "POST", "/explain", files={"file": (p.name, p.read_bytes(), "image/jpeg")},
                          data={"attribute": "Eyeglasses" if "Eyeglasses" in attributes else attributes[0]},
                          weight=4 / len(explained), checked=True))
    queries = ["Male=0", "Eyeglasses=1", "Smiling=1 Young>0.5", "Male=1 No_Beard=1", "Wearing_Hat=0 Blond_Hair=1"]
    queries = [q for q in queries if all(t.split("=")[0].split(">")[0] in attributes for t in q.split())]
    if predicts_age:
        queries += ["age<40", "Male=1 age>=30"]
    for q in queries:
        cases.append(Case("GET /search", "search", "GET", "/search", params={"where": q, "top": 20}, weight=15 / len(queries), checked=True))
    cases.append(Case("GET /search", "bad query", "GET", "/search", params={"where": "Not_An_Attribute=1"}, expect=(400,), weight=1))
    like = singles[0]
    cases.append(Case("POST /search/like", "like", "POST", "/search/like", files={"file": (like.name, like.read_bytes(), "image/jpeg")},
                      weight=5, checked=True))
    for fid in face_ids[:4]:
        cases.append(Case("GET /image", "crop", "GET", f"/image/{fid}", weight=4 / min(4, len(face_ids)), checked=True))
    for path in ("/", "/static/app.js", "/info", "/healthz"):
        cases.append(Case("GET page/static/info", "page", "GET", path, weight=1.5, checked=path != "/healthz"))
    refusals = refusal_cases(singles[0].read_bytes(), max_upload_bytes, max_pixels)
    shares = {"oversize": 4, "corrupt": 10, "bomb": 6, "traversal": 6}
    counts = Counter(c.kind for c in refusals)
    for c in refusals:
        c.weight = shares[c.kind] / counts[c.kind]
    return cases + refusals


# ---- report -------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def latency_table(outcomes: Sequence[Outcome]) -> str:
    """Requests, p50/p95/p99 (ms) and statuses per endpoint."""
    by: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by[o.label].append(o)
    lines = [f"  {'endpoint':<22} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  statuses"]
    for label in sorted(by):
        os_ = by[label]
        ms = [o.seconds * 1000 for o in os_]
        statuses = ", ".join(f"{s}x{n}" for s, n in sorted(Counter(o.status for o in os_).items()))
        lines.append(f"  {label:<22} {len(os_):>5} {percentile(ms, 50):>8.1f} {percentile(ms, 95):>8.1f} {percentile(ms, 99):>8.1f}  {statuses}")
    return "\n".join(lines)


def requirements(outcomes: Sequence[Outcome], alive: bool, mem_start: int, mem_end: int, slow: Sequence[SlowResult],
                 flat: float = 0.10) -> list[tuple[str, bool, str]]:
    """(requirement, met, evidence) for everything the load run checks."""
    server_errors = [o for o in outcomes if o.status >= 500]
    dropped = [o for o in outcomes if o.status == 0]
    wrong = [o for o in outcomes if o.problem and o.status not in (0,) and o.status < 500 and o.kind != "traversal"]
    trav = [o for o in outcomes if o.kind == "traversal"]
    trav_bad = [o for o in trav if o.problem]
    growth = (mem_end - mem_start) / mem_start if mem_start else float("inf")
    first = lambda xs: f"; first: {xs[0].kind} {xs[0].label}: {xs[0].problem}" if xs else ""  # noqa: E731
    reqs = [
        ("no 5xx", not server_errors, f"{len(server_errors)} answers >= 500{first(server_errors)}"),
        ("no crash, no dropped request", alive and not dropped,
         f"server {'up' if alive else 'DOWN'} at the end, {len(dropped)} requests without an answer{first(dropped)}"),
        (f"memory flat (end within {flat:.0%} of after warm-up)", growth <= flat,
         f"VmRSS {mem_start / 1024:.0f} -> {mem_end / 1024:.0f} MiB ({growth:+.1%})"),
        ("every request answered correctly", not wrong,
         f"{len(wrong)} of {len(outcomes)} wrong (good ones must equal their reference, bad ones get their 4xx){first(wrong)}"),
        ("traversal refused", bool(trav) and not trav_bad, f"{len(trav) - len(trav_bad)} of {len(trav)} refused{first(trav_bad)}"),
    ]
    for s in slow:
        if s.note:
            how = s.note
        elif s.cut_off:
            how = f"{'HTTP ' + str(s.status) if s.status else 'closed without an answer'} after {s.seconds:.1f} s"
        else:
            how = f"still open after {s.seconds:.1f} s"
        reqs.append((f"slow client cut off within {s.bound:g} s: {s.name}", s.ok, how))
    return reqs


# ---- main ---------------------------------------------------------------------------------------------


def _index(folder: Path, out: Path, model: str) -> list[int]:
    """Index `folder` with `faceattr index` (a subprocess, as a user would); returns its face ids."""
    import sqlite3

    code = "import sys\nfrom faceattr.cli import main\nsys.exit(main(sys.argv[1:]))"
    subprocess.run([sys.executable, "-c", code, "index", str(folder), "--out", str(out), "--model", model], check=True,
                   stdout=subprocess.DEVNULL)
    con = sqlite3.connect(out)
    try:
        return [r[0] for r in con.execute("SELECT id FROM faces ORDER BY id")]
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    """Run the load test; 0 when every requirement is met."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000, help="requests in the measured run (default 2000)")
    p.add_argument("--concurrency", type=int, default=16, help="clients at once (default 16)")
    # 500: under 16 clients the default model's server settles in over its first ~600 requests (glibc and
    # ONNX Runtime arenas), then stays flat; a leak would go on growing with every tenth of the run.
    p.add_argument("--warmup", type=int, default=500, help="requests (same mix, same concurrency) before memory is first read (default 500)")
    p.add_argument("--model", default="default", help="model to serve (default: the shipped 'default')")
    p.add_argument("--celeba", default=str(ROOT.parent / "shared" / "celeba"), help="CelebA folder for extra photos (skipped if absent)")
    p.add_argument("--photos", type=int, default=12, help="CelebA photos in the mix and the index (default 12)")
    p.add_argument("--workers", type=int, default=1, help="faceattr serve --workers (default 1; memory is then summed over the workers)")
    p.add_argument("--max-in-flight", type=int, default=32, help="faceattr serve --max-in-flight (default 32)")
    p.add_argument("--request-timeout", type=float, default=30.0, help="faceattr serve --request-timeout (default 30)")
    p.add_argument("--send-timeout", type=float, default=30.0, help="faceattr serve --send-timeout (default 30)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a client waits for an answer (default 600)")
    p.add_argument("--no-slow-clients", action="store_true", help="skip the slow clients")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from PIL import Image

    from faceattr.infer import samples_dir
    from faceattr.infer.image_io import MAX_PIXELS

    slack = 5.0  # scheduling delay allowed on top of each timeout (the machine may be busy)
    max_upload = 15 * 2**20
    with tempfile.TemporaryDirectory(prefix="serve_load_") as tmp_:
        tmp = Path(tmp_)
        photos = tmp / "photos"
        photos.mkdir()
        singles = sorted(samples_dir().glob("*.jpg"))
        celeba = Path(args.celeba) / "img_align_celeba"
        if celeba.is_dir():
            singles += sorted(celeba.glob("*.jpg"))[: args.photos]
        for s in singles:
            shutil.copy(s, photos / s.name)
        singles = sorted(photos.glob("*.jpg"))
        groups = [group_photo(singles[i : i + 3]) for i in range(0, min(len(singles), 9) - 2, 3)]
        for i, g in enumerate(groups):
            (photos / f"group{i}.jpg").write_bytes(g)
        t = time.perf_counter()
        face_ids = _index(photos, tmp / "index.sqlite", args.model)
        print(f"indexed {len(singles) + len(groups)} photos ({len(face_ids)} faces) in {time.perf_counter() - t:.1f} s")

        serve_args = ["--index", str(tmp / "index.sqlite"), "--model", args.model, "--workers", str(args.workers),
                      "--max-in-flight", str(args.max_in_flight), "--request-timeout", str(args.request_timeout),
                      "--send-timeout", str(args.send_timeout)]
        with serve(serve_args) as (base, proc):
            info = httpx.get(f"{base}/info", timeout=30).json()
            cases = real_cases(singles, groups, face_ids, info["attributes"], max_upload, MAX_PIXELS, info["age"])
            t = time.perf_counter()
            problems = asyncio.run(take_references(base, cases, timeout=args.timeout))
            faces = {c.files["file"][0]: len(c.reference["faces"]) for c in cases if c.kind in ("good", "group") and c.reference}
            print(f"references: {sum(c.checked for c in cases)} answers in {time.perf_counter() - t:.1f} s; faces per group photo: "
                  + ", ".join(f"{k} {v}" for k, v in faces.items() if k.startswith("group")))
            for prob in problems:
                print("  reference FAILED:", prob)
            cases = [c for c in cases if not c.checked or c.reference is not None]
            asyncio.run(run_load(base, pick(cases, args.warmup, args.seed + 1), args.concurrency, args.timeout))
            mem_start = memory_kib(proc.pid)

            async def measured() -> tuple[list[Outcome], float, list[SlowResult]]:
                done: list[Outcome] = []
                load = asyncio.ensure_future(run_load(base, pick(cases, args.requests, args.seed), args.concurrency, args.timeout, done))

                async def sample() -> None:
                    while not load.done():
                        curve.append((len(done), memory_kib(proc.pid)["VmRSS"]))
                        await asyncio.sleep(1)

                sampler = asyncio.ensure_future(sample())
                slow: list[SlowResult] = []
                if not args.no_slow_clients:
                    slow = await slow_clients(base, proc.pid, args.request_timeout, args.send_timeout, slack)
                outcomes, wall = await load
                await sampler
                return outcomes, wall, slow

            curve: list[tuple[int, int]] = []
            outcomes, wall, slow = asyncio.run(measured())
            time.sleep(1)  # let the last connections close before the final reading
            mem_end = memory_kib(proc.pid)
            try:
                alive = proc.poll() is None and httpx.get(f"{base}/healthz", timeout=30).status_code == 200
            except httpx.HTTPError:
                alive = False

    cpu = os.cpu_count()
    load1 = os.getloadavg()[0]
    print(f"\nfaceattr serve --model {args.model} --workers {args.workers} --max-in-flight {args.max_in_flight}: "
          f"{args.requests} requests, {args.concurrency} concurrent, after {args.warmup} warm-up")
    print(f"machine: {os.uname().machine} | os.cpu_count()={cpu} | python {sys.version.split()[0]} | nice {os.nice(0)} | "
          f"load average {load1:.1f} at the end")
    print(f"throughput: {len(outcomes) / wall:.1f} requests/s ({len(outcomes)} in {wall:.1f} s)")
    print(latency_table(outcomes))
    by_status = Counter(o.status for o in outcomes)
    print("answers by status: " + ", ".join(f"{s or 'no answer'}: {n}" for s, n in sorted(by_status.items())))
    print(f"server memory (KiB): after warm-up VmRSS {mem_start['VmRSS']:,} VmHWM {mem_start['VmHWM']:,}; "
          f"at the end VmRSS {mem_end['VmRSS']:,} VmHWM {mem_end['VmHWM']:,}")
    # A leak grows with the requests served; an allocator settling in levels off.
    marks = [next((kib for n, kib in curve if n >= args.requests * k // 10), mem_end["VmRSS"]) for k in range(11)]
    print("VmRSS (MiB) after each tenth of the run: " + " ".join(f"{kib / 1024:.0f}" for kib in marks))
    reqs = requirements(outcomes, alive, mem_start["VmRSS"], mem_end["VmRSS"], slow)
    if problems:
        reqs.append(("every reference answered", False, "; ".join(problems)))
    for name, ok, evidence in reqs:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {evidence}")
    return 0 if all(ok for _, ok, _ in reqs) else 1


if __name__ == "__main__":
    sys.exit(main())
