"""Attribute search: index every face under a folder into SQLite, then query it by attributes or by example.

    from faceattr.search import build_index, search
    build_index("photos/", "photos.sqlite", model="default")
    result = search("photos.sqlite", "Male=0 Eyeglasses=1 Smiling=1", top=20)

The index schema is documented in `faceattr.search.store`, the query language in
`faceattr.search.query`. This package imports `faceattr.infer` (never `serve` or `train`). Names are
loaded on first use, so importing the package (and the CLI) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from faceattr._lazy import lazy_exports

__all__ = [
    "IMAGE_EXTENSIONS",
    "FaceRow",
    "IndexStats",
    "IndexStore",
    "Match",
    "ModelIdentity",
    "Predictor",
    "SearchResult",
    "Term",
    "build_index",
    "face_thumbnail",
    "face_vector",
    "index_batch",
    "load_image",
    "load_model",
    "model_identity",
    "parse_where",
    "plan_update",
    "probe_vector",
    "safe_join",
    "scan_folder",
    "search",
    "thumbnail_jpeg",
    "write_sheet",
]

_WHERE = {
    "IMAGE_EXTENSIONS": "indexer",
    "IndexStats": "indexer",
    "build_index": "indexer",
    "index_batch": "indexer",
    "load_model": "indexer",
    "model_identity": "indexer",
    "plan_update": "indexer",
    "scan_folder": "indexer",
    "Match": "query",
    "SearchResult": "query",
    "Term": "query",
    "parse_where": "query",
    "probe_vector": "query",
    "face_vector": "query",
    "search": "query",
    "face_thumbnail": "sheet",
    "load_image": "sheet",
    "thumbnail_jpeg": "sheet",
    "write_sheet": "sheet",
    "FaceRow": "store",
    "IndexStore": "store",
    "ModelIdentity": "store",
    "Predictor": "protocol",
    "safe_join": "store",
}

if TYPE_CHECKING:
    from faceattr.search.indexer import (
        IMAGE_EXTENSIONS,
        IndexStats,
        build_index,
        index_batch,
        load_model,
        model_identity,
        plan_update,
        scan_folder,
    )
    from faceattr.search.protocol import Predictor
    from faceattr.search.query import Match, SearchResult, Term, face_vector, parse_where, probe_vector, search
    from faceattr.search.sheet import face_thumbnail, load_image, thumbnail_jpeg, write_sheet
    from faceattr.search.store import FaceRow, IndexStore, ModelIdentity, safe_join


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
