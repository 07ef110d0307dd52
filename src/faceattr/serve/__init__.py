"""The web service and page: `create_app(model, index_path)` builds a FastAPI app; `faceattr serve` runs it.

    import faceattr
    from faceattr.serve import create_app
    app = create_app(faceattr.load("default"), "photos.sqlite")   # then: uvicorn.run(app, host="127.0.0.1")

Nothing in faceattr imports this package. Names are loaded on first use, so the CLI stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from faceattr._lazy import lazy_exports

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_UPLOAD_BYTES", "create_app", "static_dir"]

if TYPE_CHECKING:
    from faceattr.serve.app import DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES, create_app, static_dir


__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(__all__, "app"))
