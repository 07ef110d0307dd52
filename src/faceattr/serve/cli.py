"""`faceattr serve`: run the web page and JSON API on this machine (127.0.0.1 by default)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

__all__ = ["register", "worker_app"]

# How `--workers N` hands the settings to each worker process, which builds its own app (worker_app).
_SETTINGS_ENV = "FACEATTR_SERVE_SETTINGS"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `serve` subcommand."""
    p = subparsers.add_parser(
        "serve",
        help="serve the web page and JSON API (predict on uploads, search an index)",
        description="Load the model once and serve a web page plus a JSON API (/predict, /search; docs at "
        "/docs). Binds 127.0.0.1 unless --host says otherwise; there is no authentication.",
    )
    p.add_argument("--model", default=None, help="shipped model name or checkpoint path (default: the index's model, else 'default')")
    p.add_argument("--index", metavar="INDEX", help="attribute index to search (written by `faceattr index`)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto",
                   help="classifier runtime: 'auto' takes ONNX Runtime when the model has an up-to-date .onnx export "
                   "(the shipped models do), else torch (default auto)")
    p.add_argument("--max-upload-mb", type=float, default=15.0, help="largest accepted upload in MiB (default 15)")
    # default None, resolved in _cmd_serve: importing image_io here would load numpy and PIL on every `faceattr` run.
    p.add_argument("--max-pixels", type=int, default=None,
                   help="largest accepted image in pixels (default: the limit `faceattr predict` uses, "
                   "faceattr.infer.image_io.MAX_PIXELS)")
    # Defaults are literals here (and checked against the library's constants by a test), so that
    # `faceattr --help` imports neither uvicorn nor the app.
    p.add_argument("--workers", type=int, default=1,
                   help="processes, each with its own copy of the model, sharing the port; CPU threads are split "
                   "between them (default 1: model calls take turns on one thread, everything else runs concurrently)")
    p.add_argument("--max-in-flight", type=int, default=32, metavar="N",
                   help="requests handled at once per worker; beyond N the server answers 503 with Retry-After: 1 "
                   "at once instead of queueing (default 32; /healthz is always answered)")
    p.add_argument("--request-timeout", type=float, default=30.0, metavar="S",
                   help="seconds for a request, headers and body, to arrive; a slower client gets 408 and is "
                   "disconnected (default 30)")
    p.add_argument("--send-timeout", type=float, default=30.0, metavar="S",
                   help="seconds a client may leave a pending answer unread before it is disconnected (default 30)")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from faceattr.errors import FaceattrError
    from faceattr.infer.image_io import MAX_PIXELS
    from faceattr.search.store import IndexStore
    from faceattr.serve.server import ServeConfig, ServerLimits, cap_malloc_arenas, run

    log = logging.getLogger("faceattr.serve")
    # First, before the model's and the server's threads exist (see cap_malloc_arenas for the figures).
    if not cap_malloc_arenas():
        log.debug("could not cap malloc arenas (not glibc); memory may grow for a while under load")
    if not 0 < args.port < 65536:
        raise FaceattrError(f"--port must be between 1 and 65535, not {args.port}")
    max_pixels = MAX_PIXELS if args.max_pixels is None else args.max_pixels
    if max_pixels <= 0:
        raise FaceattrError(f"--max-pixels must be positive, not {max_pixels}")
    if args.workers < 1 or args.max_in_flight < 1:
        raise FaceattrError(f"--workers and --max-in-flight must be at least 1, not {args.workers} and {args.max_in_flight}")
    if args.request_timeout <= 0 or args.send_timeout <= 0:
        raise FaceattrError("--request-timeout and --send-timeout must be positive")
    source = args.model
    if source is None:
        source = "default"
        if args.index:
            with IndexStore(args.index, readonly=True) as store:
                ident = store.model_identity()
            if ident is not None:
                source = ident.source
    settings = {"source": source, "index": args.index, "device": args.device, "backend": args.backend,
                "max_upload_bytes": int(args.max_upload_mb * 2**20), "max_pixels": max_pixels,
                "max_in_flight": args.max_in_flight, "threads": None}
    limits = ServerLimits(request_timeout=args.request_timeout, send_timeout=args.send_timeout)
    # Built here even with several workers: a bad model or index is one error line now, not a crash per worker.
    app = _build_app(settings)
    name = app.state.service.model.name
    if args.workers > 1:
        from faceattr.serve.server import worker_threads

        del app  # each worker loads its own model; this one only checked that it loads
        os.environ[_SETTINGS_ENV] = json.dumps({**settings, "threads": worker_threads(args.workers)})
        config = ServeConfig("faceattr.serve.cli:worker_app", factory=True, workers=args.workers, host=args.host,
                             port=args.port, log_level="warning", limits=limits)
    else:
        config = ServeConfig(app, host=args.host, port=args.port, log_level="warning", limits=limits)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who can reach this machine can use the service (there is no authentication)", args.host)
    workers = f", {args.workers} workers" if args.workers > 1 else ""
    print(f"faceattr serving model '{name}' at http://{args.host}:{args.port}/ (API docs at /docs{workers}); Ctrl-C stops", flush=True)
    run(config)
    return 0


def _build_app(settings: dict[str, Any]) -> Any:
    """Load the model and build the app from `_cmd_serve`'s settings (in this process or in a worker)."""
    from faceattr.search.indexer import load_model
    from faceattr.serve.app import create_app

    threads = settings["threads"]
    if threads is not None:
        # Before the model's libraries start their thread pools (torch and OpenCV read these at import).
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(threads)
    model = load_model(settings["source"], device=settings["device"], backend=settings["backend"])
    if threads is not None:
        # ONNX Runtime reads none of those variables: its session is reopened with this worker's share.
        backend = getattr(model, "backend", None)
        if hasattr(backend, "set_threads"):
            backend.set_threads(threads)
    return create_app(model, settings["index"], max_upload_bytes=settings["max_upload_bytes"],
                      max_pixels=settings["max_pixels"], max_in_flight=settings["max_in_flight"])


def worker_app() -> Any:
    """App factory each `--workers` process calls (uvicorn factory=True), from the settings the parent left in the environment."""
    from faceattr.serve.server import cap_malloc_arenas

    cap_malloc_arenas()
    return _build_app(json.loads(os.environ[_SETTINGS_ENV]))
