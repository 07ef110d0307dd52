"""Attribute search: index every face under a folder into SQLite, then query it by attributes or by example.

    from faceattr.search import build_index, search
    build_index("photos/", "photos.sqlite", model="default")
    result = search("photos.sqlite", "Male=0 Eyeglasses=1 Smiling=1", top=20)

The index schema is documented in `faceattr.search.store`; the query language in `faceattr.search.query`.
"""

from __future__ import annotations

from faceattr.search.indexer import IMAGE_EXTENSIONS, IndexStats, build_index, index_batch, model_identity, plan_update, scan_folder
from faceattr.search.query import Match, SearchResult, Term, parse_where, probe_vector, search
from faceattr.search.sheet import face_thumbnail, load_image, thumbnail_jpeg, write_sheet
from faceattr.search.store import FaceRow, IndexStore, ModelIdentity, safe_join

__all__ = [
    "IMAGE_EXTENSIONS",
    "IndexStats",
    "IndexStore",
    "FaceRow",
    "Match",
    "ModelIdentity",
    "SearchResult",
    "Term",
    "build_index",
    "face_thumbnail",
    "index_batch",
    "load_image",
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
