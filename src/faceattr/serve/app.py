"""The web service: a FastAPI app around one loaded model (AttributeModel) and, optionally, one attribute index.

Endpoints (OpenAPI docs at /docs and /redoc, with their scripts served locally)::

    GET  /                    the web page (serve/static/)
    GET  /healthz             liveness: model name, index counts
    GET  /info                attributes, thresholds, whether age is predicted, limits and index status, for the page
    POST /predict             multipart `file` -> ImageResult.to_dict() (each face's "age": years or null) plus width/height
    POST /explain             multipart `file`, `attribute` (+ face, scale) -> occlusion figures and a PNG data URL
    GET  /search              ?where=Male=0 Eyeglasses=1 age<30&top=20 -> ranked faces from the index
    POST /search/like         multipart `file` (+ where, top, face) -> faces most like a face in the photo
    GET  /image/{face_id}     JPEG crop of an indexed face (?size=)
    GET  /image/{face_id}/full  the whole indexed image (upright, re-encoded as JPEG)
    GET  /samples/{name}      the shipped public-domain sample portraits

Safety: request bodies are capped (413) before they are read in full, uploads must decode as an
image (415 if not an image at all, 400 if corrupt), images above `max_pixels` are refused from their
header (413), images are only ever served from files recorded in the index and lying inside its
folder, and model calls run one at a time, in arrival order, on one thread of their own, so the event
loop never blocks on them.
At most `max_in_flight` requests are handled at once; more are answered 503 with Retry-After at once
(queueing them would only grow memory and latency). Slow clients are bounded by the server, not the
app: see serve/server.py.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from PIL import Image, UnidentifiedImageError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceattr.errors import FaceattrError
from faceattr.infer.image_io import MAX_PIXELS
from faceattr.search.protocol import Predictor

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_UPLOAD_BYTES", "create_app", "static_dir"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MAX_UPLOAD_BYTES = 15 * 1024 * 1024
# The library's own limit (infer.image_io.MAX_PIXELS), so the page accepts every photo `predict` reads.
DEFAULT_MAX_PIXELS = MAX_PIXELS
# Model calls take turns on one thread, so requests beyond a few only wait, each holding its upload and
# decoded image (up to 15 MiB + 150 MB); 32 keeps that bounded and stays under anyio's 40 worker threads.
DEFAULT_MAX_IN_FLIGHT = 32
# Occluded copies classified per model call in /explain. ONNX Runtime's arena keeps its peak for the
# process's life: one explanation in batches of 64 grew the default model's server from 0.2 to 1.2 GB,
# of 16 to 0.5 GB, of 8 to 0.37 GB. Batches of 8 cost 16's CPU time (64's is ~20% less) and hold the
# model for less time, so predictions interleave sooner (measured 2026-12-06, 2-core CPU).
_EXPLAIN_BATCH = 8
# Paths answered even when the server is full, so a liveness probe does not restart a busy, healthy server.
_NEVER_BUSY = frozenset({"/healthz"})
# Room for the multipart boundary, headers and small form fields around the file itself.
_MULTIPART_OVERHEAD = 64 * 1024
_PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'"


def static_dir() -> Path:
    """Folder of the web page's HTML, CSS and JS."""
    return Path(__file__).resolve().parent / "static"


class _BodyLimit:
    """ASGI middleware: refuse request bodies over `limit` bytes with 413, without reading them whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.limit
            except ValueError:
                too_big = False  # the server rejects a malformed length itself
            if too_big:
                await JSONResponse({"detail": self._message()}, status_code=413)(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # Raised inside the body read, so FastAPI turns it into the response (chunked uploads).
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"request body is larger than the {(self.limit - _MULTIPART_OVERHEAD) / 2**20:.1f} MiB upload limit"


class _InFlightLimit:
    """ASGI middleware: answer 503 with Retry-After while `limit` requests are already being handled."""

    def __init__(self, app: ASGIApp, limit: int, retry_after_s: int) -> None:
        self.app = app
        self.limit = limit
        self.retry_after_s = retry_after_s
        # Only the event loop touches this (middleware runs there, never in a worker thread): no lock needed.
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _NEVER_BUSY:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            logger.warning("busy: %d requests in flight, answering 503 to %s %s", self.in_flight, scope["method"], scope["path"])
            busy = JSONResponse(
                {"detail": f"the server is busy ({self.limit} requests in progress); retry in {self.retry_after_s} s"},
                status_code=503,
                headers={"Retry-After": str(self.retry_after_s)},
            )
            await busy(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class _ModelThread:
    """Every model call on one dedicated thread, one at a time, in the order they come.

    The detector and backend are not safe to share between threads, so calls had to take turns anyway;
    making them on one thread also keeps each library's per-thread buffers to one set. Under a lock,
    called from whichever of anyio's 40 worker threads, 16 concurrent clients uploading photos grew the
    default model's server from 0.24 to 0.62 GB (on one thread: 0.27 to 0.29 GB), and the load
    benchmark's mix from 0.66 to 0.82 GB over 6,000 requests, still climbing (on one thread: 0.40 to
    0.42 GB, levelling off; 2026-12-06, 2-core CPU). The queue is also first come, first served,
    which a lock is not.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faceattr-model")

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` on the model thread and wait for it (call from a worker thread, not the event loop)."""
        return self._pool.submit(fn, *args, **kwargs).result()


class _Service:
    """What the endpoints share: the model (and the thread it runs on), the index path and its cached face matrix."""

    def __init__(self, model: Predictor, index_path: Path | None, max_upload_bytes: int, max_pixels: int) -> None:
        from faceattr.search.store import CachedMatrix, IndexStore

        self.model = model
        self.model_thread = _ModelThread()
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.index_path = index_path
        self.matrix = CachedMatrix(index_path) if index_path is not None else None
        self.root: Path | None = None
        if index_path is not None:
            with IndexStore(index_path, readonly=True) as store:
                self.root = store.root
                attrs = store.attributes
            if attrs and list(attrs) != list(model.attributes):
                raise FaceattrError(
                    f"{index_path} was built with a model of other attributes than '{model.name}'; "
                    "serve it with the model it was built with (--model)"
                )

    def store(self) -> Any:
        """A read-only connection to the index (one per request), or 404 when none is served."""
        from faceattr.search.store import IndexStore

        if self.index_path is None:
            raise HTTPException(404, "no index is loaded; start the server with --index INDEX.sqlite")
        try:
            return IndexStore(self.index_path, readonly=True)
        except FaceattrError as e:
            raise HTTPException(503, str(e)) from None

    def predict(self, rgb: np.ndarray) -> list[Any]:
        """The model's faces for an image, computed on the model thread."""
        return self.model_thread.call(lambda: list(self.model.predict(rgb)))

    def explain(self, rgb: np.ndarray, attribute: str, face: int, patch: int = 32, stride: int = 16,
                scale: str = "probability") -> dict[str, Any]:
        """Occlusion explanation of face `face` (0-based, /predict's order), its PNG inlined as a data URL."""
        import base64

        from faceattr.infer.explain import check_attribute, explain_crop, render_explanation

        if not hasattr(self.model, "predict_aligned"):
            raise HTTPException(501, f"model '{self.model.name}' cannot classify aligned crops, so it cannot be explained")
        check_attribute(self.model, attribute)  # type: ignore[arg-type]  # a FaceattrError: the app's handler answers 400
        faces = self.predict(rgb)
        if face >= len(faces):
            raise HTTPException(422, f"the photo has no face number {face} ({len(faces)} found; faces count from 0, in /predict's order)")
        if getattr(faces[face], "too_small", False):
            raise HTTPException(422, f"face {face} is too small to classify, so it cannot be explained")
        crop = getattr(faces[face], "crop", None)
        if crop is None:
            raise HTTPException(422, f"face {face} came without an aligned crop, so it cannot be explained")
        try:
            e = explain_crop(_QueuedCrops(self.model, self.model_thread), crop, attribute, patch=patch, stride=stride, scale=scale,
                             batch_size=_EXPLAIN_BATCH)
        except FaceattrError as err:
            raise HTTPException(422, str(err)) from None
        png = base64.b64encode(render_explanation(e)).decode("ascii")
        return {"face": face, **e.to_dict(), "image": f"data:image/png;base64,{png}"}


class _QueuedCrops:
    """The model's predict_aligned on the model thread, one call (one batch) at a time, so a long
    explanation lets other requests in between its batches instead of holding the model throughout."""

    def __init__(self, model: Any, model_thread: _ModelThread) -> None:
        self.model, self.model_thread = model, model_thread
        self.name, self.attributes = model.name, model.attributes

    def predict_aligned(self, crops: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        """Probabilities of a batch of aligned crops, computed on the model thread."""
        return self.model_thread.call(self.model.predict_aligned, crops, batch_size=batch_size)


def _decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """Bytes of an uploaded file -> upright RGB array, or the HTTP error that explains why not."""
    from faceattr.infer.image_io import load_rgb

    if not data:
        raise HTTPException(400, "the uploaded file is empty")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit (below Pillow's) is checked from the header right after this.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise HTTPException(415, "the upload is not an image this server can read; send a JPEG, PNG, WebP, BMP, GIF or TIFF") from None
    except Image.DecompressionBombError:
        raise HTTPException(413, f"the image has more than {max_pixels:,} pixels; downscale it first") from None
    except Exception as e:  # noqa: BLE001  (a header Pillow recognises but cannot parse)
        raise HTTPException(400, f"the image header could not be read ({type(e).__name__})") from None
    w, h = im.size
    if w * h > max_pixels:
        raise HTTPException(413, f"the image is {w}x{h} = {w * h:,} pixels, above the {max_pixels:,} pixel limit; downscale it first")
    try:
        im.load()
        return load_rgb(im, max_pixels=max_pixels)
    except FaceattrError as e:
        raise HTTPException(400, str(e)) from None
    except Exception as e:  # noqa: BLE001  (truncated or corrupt data surfaces as several Pillow exception types)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HTTPException(400, f"the image could not be decoded (corrupt or truncated: {reason})") from None


async def _read_upload(file: UploadFile, limit: int) -> bytes:
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"the file is larger than the {limit / 2**20:.1f} MiB upload limit")
    return data


def _match_urls(d: dict[str, Any]) -> dict[str, Any]:
    for m in d["matches"]:
        m["image_url"] = f"/image/{m['face_id']}"
        m["full_url"] = f"/image/{m['face_id']}/full"
    return d


def create_app(
    model: Predictor,
    index_path: str | Path | None = None,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    retry_after_s: int = 1,
) -> FastAPI:
    """Build the app around an already loaded model (loaded once, shared by all requests) and an optional index."""
    from faceattr import __version__
    from faceattr.search.query import face_vector, search
    from faceattr.search.sheet import load_image, thumbnail_jpeg
    from faceattr.search.store import safe_join

    if max_in_flight < 1 or retry_after_s < 0:
        raise FaceattrError(f"max_in_flight must be at least 1 and retry_after_s at least 0, not {max_in_flight} and {retry_after_s}")
    svc = _Service(model, Path(index_path) if index_path is not None else None, max_upload_bytes, max_pixels)
    # FastAPI's own /docs page loads Swagger UI from a CDN, so offline it is blank; fastapi-offline
    # serves the same page with the scripts from its package (/static-offline-docs/).
    app = FastAPIOffline(
        title="faceattr",
        version=__version__,
        description="Facial attribute prediction and attribute search. Upload a photo to `/predict`; "
        "query an index with `/search`.",
    )
    app.state.service = svc
    app.add_middleware(_BodyLimit, limit=max_upload_bytes + _MULTIPART_OVERHEAD)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.url.path == "/" or request.url.path.startswith("/static/"):
            response.headers.setdefault("Content-Security-Policy", _PAGE_CSP)
        return response

    # Added last, so outermost: a refused request costs no other middleware, and the count covers the
    # whole request, the answer's sending included.
    app.add_middleware(_InFlightLimit, limit=max_in_flight, retry_after_s=retry_after_s)

    @app.exception_handler(FaceattrError)
    async def _user_error(request: Request, exc: FaceattrError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    app.mount("/static", StaticFiles(directory=static_dir()), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(static_dir() / "index.html", media_type="text/html")

    @app.get("/healthz", summary="Liveness and what is loaded")
    def healthz() -> dict[str, Any]:
        index = None
        if svc.index_path is not None:
            with svc.store() as store:
                index = {"path": str(svc.index_path), **store.counts()}
        return {"status": "ok", "model": model.name, "attributes": len(model.attributes), "index": index}

    @app.get("/info", summary="Model attributes, thresholds, limits and index status")
    def info() -> dict[str, Any]:
        index = None
        if svc.index_path is not None:
            with svc.store() as store:
                index = {"path": str(svc.index_path), "root": str(store.root), "model": store.get_meta("model_name"),
                         "age": store.predicts_age, **store.counts()}
        return {
            "version": __version__,
            "model": model.name,
            "age": bool(getattr(model, "predicts_age", False)),
            "attributes": list(model.attributes),
            "thresholds": [round(float(t), 4) for t in np.asarray(model.thresholds).ravel()],
            "max_upload_bytes": max_upload_bytes,
            "max_pixels": max_pixels,
            "max_in_flight": max_in_flight,
            "index": index,
        }

    @app.post("/predict", summary="Faces, attributes and (for a model that predicts it) age of an uploaded photo")
    async def predict(file: Annotated[UploadFile, File(description="an image: JPEG, PNG, WebP, BMP, GIF or TIFF")]) -> dict[str, Any]:
        from faceattr.infer import ImageResult
        from faceattr.infer.image_io import is_grayscale

        data = await _read_upload(file, max_upload_bytes)
        rgb = await run_in_threadpool(_decode_upload, data, max_pixels)
        faces = await run_in_threadpool(svc.predict, rgb)
        name = Path(file.filename or "upload").name[:200]
        result = ImageResult(name, faces, grayscale=is_grayscale(rgb))
        return {**result.to_dict(), "width": int(rgb.shape[1]), "height": int(rgb.shape[0])}

    @app.post("/explain", summary="Which parts of a face drive one attribute (occlusion), with a PNG of it")
    async def explain(
        file: Annotated[UploadFile, File(description="the photo")],
        attribute: Annotated[str, Form(max_length=100, description="e.g. Male or Eyeglasses")],
        face: Annotated[int, Form(ge=0, le=100, description="which face of the photo (order of /predict)")] = 0,
        patch: Annotated[int, Form(ge=16, le=178, description="side of the sliding grey square, px of the 178x218 crop")] = 32,
        stride: Annotated[int, Form(ge=8, le=178, description="step of the sliding square (at most the patch)")] = 16,
        scale: Annotated[Literal["probability", "logit"],
                         Form(description="drops in probability, or in log-odds (shows more on a confident prediction)")] = "probability",
    ) -> dict[str, Any]:
        data = await _read_upload(file, max_upload_bytes)
        rgb = await run_in_threadpool(_decode_upload, data, max_pixels)
        return await run_in_threadpool(svc.explain, rgb, attribute, face, patch, stride, scale)

    @app.get("/search", summary="Faces in the index that match attribute terms, best first")
    def search_get(
        where: Annotated[str, Query(max_length=2000, description="terms like `Male=0 Eyeglasses=1 Young>0.8`, and `age<30` (years) "
                                    "when the index's model predicts age")],
        top: Annotated[int, Query(ge=1, le=500)] = 20,
    ) -> dict[str, Any]:
        with svc.store() as store:
            assert svc.matrix is not None  # store() has already answered 404 when no index is served
            try:
                result = search(store, where, top=top, matrix=svc.matrix.get(store))
            except FaceattrError as e:
                raise HTTPException(400, str(e)) from None
        return _match_urls(result.to_dict())

    @app.post("/search/like", summary="Faces in the index that look most like a face in an uploaded photo")
    async def search_like(
        file: Annotated[UploadFile, File(description="a photo with the face to look for")],
        where: Annotated[str, Form(max_length=2000)] = "",
        top: Annotated[int, Form(ge=1, le=500)] = 20,
        face: Annotated[int | None, Form(ge=0, le=100, description="which face of the photo (order of /predict); default the largest")] = None,
    ) -> dict[str, Any]:
        if svc.index_path is None:
            raise HTTPException(404, "no index is loaded; start the server with --index INDEX.sqlite")
        data = await _read_upload(file, max_upload_bytes)
        rgb = await run_in_threadpool(_decode_upload, data, max_pixels)
        faces = await run_in_threadpool(svc.predict, rgb)

        def run() -> dict[str, Any]:
            with svc.store() as store:
                attrs = store.attributes
                if face is None:
                    vec = face_vector(faces, attrs, what="the uploaded photo")
                else:
                    if face >= len(faces) or not faces[face].probabilities:
                        raise HTTPException(422, f"the photo has no classified face number {face} ({len(faces)} faces found)")
                    vec = np.asarray([faces[face].probabilities[a] for a in attrs], np.float32)
                assert svc.matrix is not None
                return _match_urls(search(store, where, like=vec, top=top, matrix=svc.matrix.get(store)).to_dict())

        try:
            return await run_in_threadpool(run)
        except FaceattrError as e:
            raise HTTPException(422 if "no face" in str(e) else 400, str(e)) from None

    def _face_file(face_id: int) -> tuple[Path, Any]:
        with svc.store() as store:
            row = store.face(face_id)
        if row is None or svc.root is None:
            raise HTTPException(404, f"no face {face_id} in the index")
        try:
            path = safe_join(svc.root, row.path)
        except FaceattrError:
            logger.warning("refusing to serve %r: outside the indexed folder", row.path)
            raise HTTPException(404, f"no face {face_id} in the index") from None
        if not path.is_file():
            raise HTTPException(404, f"{row.path} is no longer in the indexed folder; re-run `faceattr index`")
        return path, row

    @app.get("/image/{face_id}", summary="JPEG crop of an indexed face", response_class=Response)
    def face_image(face_id: Annotated[int, PathParam(ge=1, le=2**62)], size: Annotated[int, Query(ge=16, le=512)] = 160) -> Response:
        _, row = _face_file(face_id)
        try:
            data = thumbnail_jpeg(svc.root, row.path, row.box, size)  # type: ignore[arg-type]
        except (FaceattrError, OSError) as e:
            raise HTTPException(404, f"{row.path} can no longer be read ({e})") from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    @app.get("/image/{face_id}/full", summary="The indexed image a face was found in (upright, as JPEG)", response_class=Response)
    def face_full(face_id: Annotated[int, PathParam(ge=1, le=2**62)]) -> Response:
        path, row = _face_file(face_id)
        try:
            im = load_image(path)  # upright and decodable: never hand out a file that is not an image
        except (FaceattrError, OSError) as e:
            raise HTTPException(404, f"{row.path} can no longer be read ({e})") from None
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=92)
        return Response(buf.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    @app.get("/samples/{name}", summary="A shipped public-domain sample portrait", response_class=FileResponse)
    def sample(name: Annotated[str, PathParam(max_length=64, pattern=r"^[A-Za-z0-9_]+(\.jpg)?$")]) -> FileResponse:
        from faceattr.infer import sample_path

        try:
            return FileResponse(sample_path(name), media_type="image/jpeg")
        except FaceattrError as e:
            raise HTTPException(404, str(e)) from None

    return app

