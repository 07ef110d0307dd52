"""`faceattr index` and `faceattr search`: build an attribute index over a folder, then query it."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `index` and `search` subcommands."""
    p = subparsers.add_parser(
        "index",
        help="index every face under a folder into an SQLite file for search",
        description="Detect, align and predict every image under FOLDER (recursively) and store each face's "
        "attributes in INDEX. Re-running updates only new or changed files and drops deleted ones; a killed "
        "run resumes where it stopped.",
    )
    p.add_argument("folder", help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, metavar="INDEX", help="index file to create or update (e.g. photos.sqlite)")
    p.add_argument("--model", default=None, help="shipped model name or checkpoint path (default: the index's model, else 'default')")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch; each batch is committed on its own (default 32)")
    p.add_argument("--workers", type=int, default=1, help="processes, each with its own model; CPU threads are split between them")
    p.add_argument("--engine", choices=("local", "ray"), default="local", help="'ray' runs the batches as a local Ray Data job")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for all processes together, split between workers (default: all cores); "
                   "on a busy shared machine, 1 per process is often fastest")
    p.add_argument("--rebuild", action="store_true", help="drop everything in the index and start again (e.g. with another model)")
    p.add_argument("--retry-errors", action="store_true", help="process files recorded as unreadable again")
    p.add_argument("--max-faces", type=int, default=10, help="most faces kept per image (default 10)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto",
                   help="classifier runtime: 'auto' takes ONNX Runtime when the model has an up-to-date .onnx export "
                   "(the shipped models do), else torch (default auto)")
    p.set_defaults(func=_cmd_index)

    s = subparsers.add_parser(
        "search",
        help="find faces in an index by attributes or by a look-alike photo",
        description="Find faces by attribute terms (--where 'Male=0 Eyeglasses=1 Young>0.8'), ranked by joint "
        "probability, and/or by similarity to the face in a photo (--like). With a model that predicts age, "
        "age bounds in years filter too (--where 'age>20 age<=40 Smiling=1').",
    )
    s.add_argument("index", help="index file written by `faceattr index`")
    s.add_argument("--where", default="", help="terms like 'Male=0 Eyeglasses=1 Smiling=1 Young>0.8 Blond_Hair<0.2 age<30'")
    s.add_argument("--like", metavar="IMAGE", help="rank by similarity to the largest face in this photo")
    s.add_argument("--space", choices=("logits", "probs"), default="logits", help="vector space for --like cosine similarity")
    s.add_argument("--top", type=int, default=20, help="how many matches to show (default 20)")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.add_argument("--sheet", metavar="OUT", help="write a contact sheet of the matches: OUT.html or OUT.png")
    s.add_argument("--model", default=None, help="model for --like (default: the one the index was built with)")
    s.add_argument("--device", default="cpu", help="device for --like (default cpu)")
    s.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto", help="classifier runtime for --like (default auto)")
    s.set_defaults(func=_cmd_search)


def _cmd_index(args: argparse.Namespace) -> int:
    from pathlib import Path

    from faceattr.search.indexer import build_index
    from faceattr.search.store import IndexStore

    model = args.model
    if model is None:
        model = "default"
        if Path(args.out).is_file():
            with IndexStore(args.out, readonly=True) as store:
                ident = store.model_identity()
            if ident is not None and not args.rebuild:
                model = ident.source
    stats = build_index(
        args.folder,
        args.out,
        model,
        batch_size=args.batch_size,
        workers=args.workers,
        engine=args.engine,
        rebuild=args.rebuild,
        retry_errors=args.retry_errors,
        max_faces=args.max_faces,
        device=args.device,
        backend=args.backend,
        threads=args.threads,
        progress=not getattr(args, "quiet", False),
    )
    with IndexStore(args.out, readonly=True) as store:
        counts = store.counts()
        errors = store.errors()
    print(
        f"{args.out}: processed {stats.processed} of {stats.scanned} images ({stats.unchanged} unchanged, "
        f"{stats.deleted} removed) in {stats.seconds:.1f}s; the index holds {counts['faces']} faces in "
        f"{counts['files']} files ({counts['noface']} without a face, {counts['error']} unreadable)"
    )
    for path, err in errors[:5]:
        print(f"  unreadable: {path}: {err}")
    if len(errors) > 5:
        print(f"  ... and {len(errors) - 5} more (re-run with --retry-errors after fixing them)")
    return 0


def _format_table(result: object) -> str:
    from faceattr.search.query import SearchResult

    assert isinstance(result, SearchResult)
    attrs = [t.attribute for t in result.terms if not t.is_age]
    # The age column only for an index whose model estimates age; an unknown age shows as "-".
    age_head = ["age"] if result.predicts_age else []
    head = ["rank", "score", "face", "image", "box (x,y,w,h)", *age_head, *attrs]
    rows = []
    for i, m in enumerate(result.matches, 1):
        box = ",".join(f"{v:.0f}" for v in m.box)
        age = ["-" if m.age is None else f"{m.age:.0f}"] if result.predicts_age else []
        rows.append([str(i), f"{m.score:.4f}", str(m.face_id), m.image, box, *age, *(f"{m.probabilities[a]:.3f}" for a in attrs)])
    widths = [max(len(r[k]) for r in [head, *rows]) for k in range(len(head))]
    lines = ["  ".join(c.rjust(w) if k != 3 else c.ljust(w) for k, (c, w) in enumerate(zip(r, widths))) for r in [head, *rows]]
    lines.append(f"{result.total} of {result.searched} faces match" + (f"; showing the top {len(rows)}" if rows else ""))
    return "\n".join(lines)


def _cmd_search(args: argparse.Namespace) -> int:
    import json

    from faceattr.errors import FaceattrError
    from faceattr.search.query import probe_vector, search
    from faceattr.search.sheet import write_sheet
    from faceattr.search.store import IndexStore

    with IndexStore(args.index, readonly=True) as store:
        like = None
        if args.like:
            ident = store.model_identity()
            if ident is None:
                raise FaceattrError(f"{args.index} holds no indexed faces yet; run `faceattr index` first")
            from faceattr.search.indexer import load_model

            model = load_model(args.model or ident.source, device=args.device, backend=args.backend)
            like = probe_vector(model, args.like, store.attributes)
        result = search(store, args.where, like=like, top=args.top, space=args.space)
        root = store.root
    extra: dict[str, str] = {}
    if args.sheet:
        title = " ".join(str(t) for t in result.terms) or "faceattr search"
        if args.like:
            title = f"like {args.like}" + (f" where {title}" if result.terms else "")
        extra["sheet"] = str(write_sheet(result, root, args.sheet, title=title))
    if args.json:
        print(json.dumps({"index": str(args.index), "root": str(root), **extra, **result.to_dict()}, indent=2))
    else:
        print(_format_table(result))
        if extra:
            print(f"wrote {extra['sheet']}")
    return 0
