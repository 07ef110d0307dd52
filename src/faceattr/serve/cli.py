"""`faceattr serve`: run the web page and JSON API on this machine (127.0.0.1 by default)."""

from __future__ import annotations

import argparse

__all__ = ["register"]


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
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from faceattr.errors import FaceattrError
    from faceattr.infer.image_io import MAX_PIXELS
    from faceattr.search.indexer import load_model
    from faceattr.search.store import IndexStore
    from faceattr.serve.app import create_app

    log = logging.getLogger("faceattr.serve")
    if not 0 < args.port < 65536:
        raise FaceattrError(f"--port must be between 1 and 65535, not {args.port}")
    max_pixels = MAX_PIXELS if args.max_pixels is None else args.max_pixels
    if max_pixels <= 0:
        raise FaceattrError(f"--max-pixels must be positive, not {max_pixels}")
    source = args.model
    if source is None:
        source = "default"
        if args.index:
            with IndexStore(args.index, readonly=True) as store:
                ident = store.model_identity()
            if ident is not None:
                source = ident.source
    model = load_model(source, device=args.device, backend=args.backend)
    app = create_app(model, args.index, max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=max_pixels)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who can reach this machine can use the service (there is no authentication)", args.host)
    print(f"faceattr serving model '{model.name}' at http://{args.host}:{args.port}/ (API docs at /docs); Ctrl-C stops", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
