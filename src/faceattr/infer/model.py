"""AttributeModel: photo in, faces with attribute probabilities out (detect -> align -> classify).

`load()` builds one from a shipped model name or a checkpoint path, with a torch or an ONNX Runtime
backend. By default ("auto") it takes ONNX Runtime wherever onnxruntime is installed and the
checkpoint has an up-to-date export beside it (the shipped models do), so a one-photo predict never
imports torch: importing torch alone costs more than the whole ONNX predict. Probabilities are computed
here in numpy (`logits_to_probs`) for both backends; thresholds come from the checkpoint (0.5 where it
has none).

Faces smaller than `min_face` px are reported, flagged `too_small`, with no probabilities: below
that size the aligned crop is mostly upsampling blur and the classifier would only guess.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from faceattr.errors import FaceattrError
from faceattr.infer.backends import Backend, OnnxBackend, TorchBackend, onnx_backend
from faceattr.infer.image_io import ImageSource, describe, is_grayscale, load_rgb

__all__ = [
    "AttributeModel",
    "Face",
    "ImageResult",
    "load",
    "export",
    "samples_dir",
    "sample_path",
    "logits_to_probs",
    "BACKENDS",
]

logger = logging.getLogger(__name__)

# "auto": ONNX Runtime when it is installed and an up-to-date export exists, else torch.
BACKENDS = ("auto", "onnx", "torch")


def logits_to_probs(logits: np.ndarray, output: str = "sigmoid") -> np.ndarray:
    """Logits [N, K] -> float32 probabilities [N, A] ('softmax': 2 classes, class 1 = present)."""
    # In float64 and then rounded, so it agrees with torch's float32 sigmoid/softmax to float32
    # rounding; a huge logit overflows exp() to inf, which still gives the right limit (0 or 1).
    x = np.asarray(logits, dtype=np.float64)
    with np.errstate(over="ignore"):
        if output == "softmax":
            z = np.exp(x - x.max(axis=1, keepdims=True))
            return (z[:, 1:2] / z.sum(axis=1, keepdims=True)).astype(np.float32)
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


@dataclass
class Face:
    """One face in a photo and its attributes.

    `score` is the detector's confidence, None when detection was skipped (then `landmarks` is empty
    and `box` the whole image). A `too_small` face is listed but not classified: `probabilities` and
    `present` are empty.
    """

    box: tuple[float, float, float, float]  # x, y, w, h in the (EXIF-corrected) image
    score: float | None
    landmarks: list[tuple[float, float]]  # 5 points (YuNet order), or [] without detection
    probabilities: dict[str, float]
    present: list[str]  # probability >= threshold, most probable first
    crop: Image.Image | None = field(default=None, repr=False, compare=False)  # aligned 178x218
    too_small: bool = False
    age: float | None = None  # estimated age in years, when the model predicts age

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the crop is not serialised); "age" is years, or null for a model without age."""
        d: dict[str, Any] = {
            "box": [round(float(v), 2) for v in self.box],
            "score": None if self.score is None else round(float(self.score), 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "attributes": {k: round(float(v), 6) for k, v in self.probabilities.items()},
            "present": list(self.present),
            "age": None if self.age is None else round(float(self.age), 1),
        }
        if self.too_small:
            d["too_small"] = True
        return d


@dataclass
class ImageResult:
    """All faces of one image, or the one-line reason it could not be read."""

    image: str
    faces: list[Face]
    error: str | None = None
    # A black-and-white photo: colour attributes (hair colours, Pale_Skin, Rosy_Cheeks, make-up)
    # cannot really be read from it, whatever their probabilities say.
    grayscale: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: {"image", "faces"} plus "error" and "grayscale": true when set."""
        d: dict[str, Any] = {"image": self.image, "faces": [f.to_dict() for f in self.faces]}
        if self.error is not None:
            d["error"] = self.error
        if self.grayscale:
            d["grayscale"] = True
        return d


@dataclass
class _Pending:
    """Faces of one image located, cropped and resized for the classifier, waiting for their probabilities."""

    result: ImageResult
    inputs: list[np.ndarray]  # the faces to classify, uint8 [H, W, 3] at the model's input size, in `targets` order
    targets: list[int]  # indices into result.faces


class AttributeModel:
    """A loaded attribute classifier plus the detection and alignment that feed it."""

    def __init__(
        self,
        backend: Backend,
        meta: dict[str, Any],
        *,
        name: str,
        detector: Any | None = None,
        refine_passes: int = 1,
    ) -> None:
        """Wrap a backend and its checkpoint metadata; use `load()` rather than calling this."""
        from faceattr.data.transforms import Preprocess

        self.backend = backend
        self.meta = meta
        self.name = name
        self.attributes: list[str] = [str(a) for a in meta["attributes"]]
        self.output: str = meta.get("output", "sigmoid")
        self.preprocess = Preprocess.from_dict(meta["preprocess"])
        raw = meta.get("thresholds")
        if raw is None:
            self.thresholds = np.full(len(self.attributes), 0.5, dtype=np.float32)
        else:
            self.thresholds = np.asarray([0.5 if t is None else t for t in raw], dtype=np.float32)
            if self.thresholds.shape != (len(self.attributes),):
                raise FaceattrError(
                    f"model '{name}' has {self.thresholds.size} thresholds for {len(self.attributes)} attributes"
                )
        self._detector = detector
        self.refine_passes = refine_passes
        # Models trained with an age source have one more output after the attributes: standardised age.
        age = meta.get("age")
        self.age_scale: tuple[float, float] | None = None
        if age:
            self.age_scale = (float(age["mean"]), float(age["std"]))

    @property
    def predicts_age(self) -> bool:
        """True when the model estimates age (years) besides the attributes."""
        return self.age_scale is not None

    def __repr__(self) -> str:
        arch = self.meta.get("model", {}).get("name", "?")
        return f"AttributeModel(name={self.name!r}, model={arch!r}, backend={self.backend.name!r}, attributes={len(self.attributes)})"

    @property
    def detector(self) -> Any:
        """The face detector (a FaceDetector, created on first use)."""
        if self._detector is None:
            from faceattr.infer.detect import FaceDetector

            self._detector = FaceDetector()
        return self._detector

    @detector.setter
    def detector(self, value: Any) -> None:
        self._detector = value

    # ---- classification -------------------------------------------------------------------

    def _outputs(
        self, crops: Sequence[np.ndarray | Image.Image], batch_size: int, flip: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities float32 [N, A], ages in years float32 [N] or None) for aligned crops."""
        return self._classify([self._input(c) for c in crops], batch_size, flip)

    def _input(self, crop: np.ndarray | Image.Image) -> np.ndarray:
        """One aligned crop resized (and cropped) to the model's input: uint8 [H, W, 3]."""
        from faceattr.data.transforms import prepare_image

        return prepare_image(crop if isinstance(crop, Image.Image) else Image.fromarray(crop), self.preprocess)

    def _classify(
        self, inputs: Sequence[np.ndarray], batch_size: int, flip: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities [N, A], ages [N] or None) for faces already at the input size (`_input`)."""
        if len(inputs) == 0:
            empty = np.zeros((0, len(self.attributes)), dtype=np.float32)
            return empty, (np.zeros(0, dtype=np.float32) if self.predicts_age else None)
        logits = self.backend.logits(np.stack(inputs), batch_size=batch_size, flip=flip)
        ages = None
        if self.age_scale is not None:
            if logits.shape[1] != len(self.attributes) + 1:
                raise FaceattrError(
                    f"model '{self.name}' returned {logits.shape[1]} outputs for {len(self.attributes)} attributes and age"
                )
            mean, std = self.age_scale
            # Clipped to UTKFace's range: a standardised output far outside it is extrapolation.
            ages = np.clip(mean + std * logits[:, -1], 1.0, 100.0).astype(np.float32)
            logits = logits[:, :-1]
        probs = logits_to_probs(logits, self.output)
        if probs.shape != (len(inputs), len(self.attributes)):
            raise FaceattrError(
                f"model '{self.name}' returned {probs.shape[1]} outputs for {len(self.attributes)} attributes"
            )
        return probs, ages

    def _probabilities(self, crops: Sequence[np.ndarray | Image.Image], batch_size: int, flip: bool = False) -> np.ndarray:
        return self._outputs(crops, batch_size, flip)[0]

    def predict_aligned(
        self, crops: Sequence[Image.Image] | np.ndarray, *, batch_size: int = 64, flip: bool = False
    ) -> np.ndarray:
        """Aligned 178x218 crops (PIL list or uint8 [N, 218, 178, 3]) -> probabilities float32 [N, A]."""
        if isinstance(crops, np.ndarray):
            if crops.ndim == 3:
                crops = crops[None]
            if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
                raise FaceattrError(f"expected uint8 crops [N, 218, 178, 3], got {crops.dtype} {tuple(crops.shape)}")
            items: list[np.ndarray | Image.Image] = list(crops)
        else:
            items = [c if isinstance(c, Image.Image) else np.asarray(c, dtype=np.uint8) for c in crops]
        return self._probabilities(items, batch_size, flip)

    def predict_aligned_age(
        self, crops: Sequence[Image.Image] | np.ndarray, *, batch_size: int = 64, flip: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Like `predict_aligned`, plus ages in years float32 [N] (None for a model without age)."""
        if isinstance(crops, np.ndarray):
            crops = list(crops[None] if crops.ndim == 3 else crops)
        return self._outputs([c if isinstance(c, Image.Image) else np.asarray(c, dtype=np.uint8) for c in crops],
                             batch_size, flip)

    # ---- detection + alignment -------------------------------------------------------------

    def _locate(
        self, rgb: np.ndarray, *, detect: bool, align: bool, max_faces: int, min_face: int
    ) -> tuple[list[Face], list[np.ndarray], list[int]]:
        """Find and crop the faces of one image; returns (faces without probabilities, crops, indices
        of the faces to classify)."""
        from faceattr.infer import align as al

        h, w = rgb.shape[:2]
        if not align:
            # The input is an already aligned CelebA-style crop.
            crop = al.fit_aligned(rgb)
            return [Face((0.0, 0.0, float(w), float(h)), None, [], {}, [], Image.fromarray(crop))], [crop], [0]
        if not detect:
            crop, _ = al.frame_whole_image(rgb)
            return [Face((0.0, 0.0, float(w), float(h)), None, [], {}, [], Image.fromarray(crop))], [crop], [0]
        if max_faces < 1:
            raise FaceattrError(f"max_faces must be at least 1, got {max_faces}")
        found = self.detector.detect(rgb)[:max_faces]  # largest first
        faces: list[Face] = []
        crops: list[np.ndarray] = []
        targets: list[int] = []
        for det in found:
            lm = [(float(x), float(y)) for x, y in det.landmarks]
            if det.size < min_face:
                faces.append(Face(det.box, det.score, lm, {}, [], None, too_small=True))
                continue
            points = det.landmarks
            if self.refine_passes > 0:
                points = al.refine_landmarks(rgb, points, self.detector.detect, passes=self.refine_passes)
            crop, _ = al.align_face(rgb, points)
            targets.append(len(faces))
            faces.append(Face(det.box, det.score, lm, {}, [], Image.fromarray(crop)))
            crops.append(crop)
        return faces, crops, targets

    def _fill(self, face: Face, probs: np.ndarray, age: float | None = None) -> None:
        face.age = None if age is None else float(age)
        face.probabilities = {a: float(p) for a, p in zip(self.attributes, probs)}
        order = np.argsort(-probs, kind="stable")
        face.present = [self.attributes[j] for j in order if probs[j] >= self.thresholds[j]]

    def predict(
        self,
        image: ImageSource,
        *,
        detect: bool = True,
        align: bool = True,
        max_faces: int = 10,
        min_face: int = 24,
    ) -> list[Face]:
        """Faces in one photo (path, PIL or RGB array), largest first, each with its attributes.

        `detect=False` takes the whole image as one face; `align=False` takes it as an already
        aligned CelebA crop. Returns [] when no face is found.
        """
        rgb = load_rgb(image)
        faces, crops, targets = self._locate(rgb, detect=detect, align=align, max_faces=max_faces, min_face=min_face)
        probs, ages = self._outputs(crops, batch_size=64)
        for k, i in enumerate(targets):
            self._fill(faces[i], probs[k], None if ages is None else ages[k])
        return faces

    def _prepare(self, src: str | Path, *, detect: bool, align: bool, max_faces: int, min_face: int) -> _Pending:
        """Read, detect, align and resize one file for the classifier; a failure becomes an ImageResult
        with `error` set. Runs on the pipeline's threads: it touches nothing shared but the detector
        (one cv2 detector per thread)."""
        name = str(src)
        try:
            rgb = load_rgb(src)
            faces, crops, targets = self._locate(rgb, detect=detect, align=align, max_faces=max_faces, min_face=min_face)
            # The resize to the input size is done here rather than at classify time, so that it too
            # runs while the classifier works on the previous batch.
            inputs = [self._input(c) for c in crops]
            grayscale = is_grayscale(rgb)
        except FaceattrError as e:
            return _Pending(ImageResult(name, [], str(e)), [], [])
        except Exception as e:  # one odd file (e.g. an OpenCV error on a strange image) must not end the batch
            logger.debug("failed on %s", name, exc_info=True)
            return _Pending(ImageResult(name, [], f"{describe(src)}: {type(e).__name__}: {e}"), [], [])
        return _Pending(ImageResult(name, faces, grayscale=grayscale), inputs, targets)

    def predict_many(
        self,
        images: Iterable[str | Path],
        *,
        batch_size: int = 32,
        detect: bool = True,
        align: bool = True,
        max_faces: int = 10,
        min_face: int = 24,
        prefetch: int = 0,
        workers: int = 1,
    ) -> Iterator[ImageResult]:
        """Results for many image files, in input order, classifying faces in batches across images.

        A file that cannot be read yields an ImageResult with `error` set; the rest go on. The
        probabilities are the same as one `predict()` per file (within float rounding of the batch).

        With `prefetch` > 0, up to that many files are read, detected, aligned and resized on
        `workers` background threads while the classifier runs on this one (OpenCV, Pillow, ONNX
        Runtime and torch release the GIL), so the decode side and the classifier share the cores
        instead of taking turns. Memory stays bounded: at most `prefetch` files are in flight, only
        their face crops are kept once detected, and results are handed out as soon as their batch is
        classified. Off by default for the library; `faceattr predict` turns it on.
        """
        import concurrent.futures as cf

        if batch_size < 1:
            raise FaceattrError(f"batch_size must be at least 1, got {batch_size}")
        if workers < 1:
            raise FaceattrError(f"workers must be at least 1, got {workers}")
        kw: dict[str, Any] = {"detect": detect, "align": align, "max_faces": max_faces, "min_face": min_face}
        queue: deque[_Pending] = deque()
        waiting = 0  # faces in the queue not yet classified

        def flush() -> Iterator[ImageResult]:
            nonlocal waiting
            probs, ages = self._classify([x for p in queue for x in p.inputs], batch_size=batch_size)
            waiting = 0
            k = 0
            while queue:
                p = queue.popleft()
                for i in p.targets:
                    self._fill(p.result.faces[i], probs[k], None if ages is None else ages[k])
                    k += 1
                p.inputs = []  # the classifier is done with them; only the result travels on
                yield p.result

        def take(p: _Pending) -> Iterator[ImageResult]:
            nonlocal waiting
            queue.append(p)
            waiting += len(p.inputs)
            if waiting >= batch_size:
                yield from flush()
            elif waiting == 0:
                # Nothing to classify ahead of these: hand them out now rather than holding them.
                while queue:
                    yield queue.popleft().result

        if prefetch <= 0:
            for src in images:
                yield from take(self._prepare(src, **kw))
            yield from flush()
            return
        if detect and align:
            _ = self.detector  # created here, once, rather than by two threads at the same time
        source = iter(images)
        # Spinning ONNX Runtime threads would take the cores the prefetch threads decode and detect on.
        ort = onnx_backend(self)
        spun = bool(ort is not None and ort.spin)
        if ort is not None:
            ort.set_threads(ort.threads, spin=False)
        with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="faceattr-prefetch") as pool:
            ahead: deque[cf.Future[_Pending]] = deque()
            try:
                while True:
                    # Top the window up before waiting on its oldest file, so the threads always
                    # have files to work on while this thread classifies or the caller writes.
                    while len(ahead) < prefetch:
                        nxt = next(source, None)
                        if nxt is None:
                            break
                        ahead.append(pool.submit(self._prepare, nxt, **kw))
                    if not ahead:
                        break
                    yield from take(ahead.popleft().result())
                yield from flush()
            finally:
                for f in ahead:  # the caller stopped early: do not read files nobody will see
                    f.cancel()
                if ort is not None:
                    ort.set_threads(ort.threads, spin=spun)


def _check_meta(meta: Any, where: str) -> dict[str, Any]:
    """`meta` if it is faceattr model metadata, else a FaceattrError naming `where`."""
    from faceattr.checkpoint import FORMAT, metadata_problem

    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "attributes" not in meta or "preprocess" not in meta:
        raise FaceattrError(f"{where}: not faceattr model metadata (written by `faceattr export`)")
    why = metadata_problem(meta)  # e.g. an edited file: fields that would fail later, mid-prediction
    if why is not None:
        raise FaceattrError(f"{where}: invalid faceattr model metadata ({why}); re-export the model with `faceattr export`")
    return meta


def _read_json_meta(path: Path) -> dict[str, Any]:
    """Metadata from the JSON beside an export (where `faceattr export` put it before it went inside)."""
    import json

    if not path.is_file():
        raise FaceattrError(f"no metadata {path} beside the ONNX model; re-export it with `faceattr export`")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FaceattrError(f"{path}: unreadable model metadata ({e})") from None
    return _check_meta(meta, str(path))


def _onnx_meta(backend: OnnxBackend) -> dict[str, Any]:
    """The metadata inside an exported .onnx; exports older than that carry it in a JSON beside them."""
    import json

    from faceattr.infer.backends import META_KEY

    raw = backend.metadata.get(META_KEY)
    if raw is None:
        return _read_json_meta(backend.path.with_suffix(".json"))
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise FaceattrError(f"{backend.path}: unreadable model metadata inside the file ({e})") from None
    return _check_meta(meta, str(backend.path))


def _refresh_hint(ckpt: Path) -> str:
    """The command that re-exports `ckpt` (the shipped models have their own script)."""
    from faceattr.checkpoint import shipped_models_dir

    if ckpt.resolve().parent == shipped_models_dir():
        return "python scripts/export_shipped_onnx.py"
    return f"faceattr export {ckpt} --onnx {ckpt.with_suffix('.onnx')}"


def _load_torch(ckpt: Path, device: str) -> AttributeModel:
    """The checkpoint on torch (imported here, and only here on the predict path)."""
    from faceattr.checkpoint import load_checkpoint
    from faceattr.data.transforms import Preprocess
    from faceattr.runtime import resolve_device

    dev = resolve_device(device)
    model, meta = load_checkpoint(ckpt, device=str(dev))
    return AttributeModel(TorchBackend(model, Preprocess.from_dict(meta["preprocess"]), dev), meta, name=ckpt.stem)


def _onnx_device(device: str) -> str | None:
    """The device ONNX Runtime would run on for `device`, or None where this onnxruntime cannot."""
    if device in ("cpu", "auto"):
        return "cpu"
    import onnxruntime as ort

    return device if "CUDAExecutionProvider" in ort.get_available_providers() else None


def load(name_or_path: str | Path = "default", *, device: str = "cpu", backend: str = "auto",
         spin: bool = True) -> AttributeModel:
    """Load a shipped model by name, a checkpoint by path, or an exported .onnx file.

    `backend="auto"` (the default) runs ONNX Runtime where onnxruntime is installed, the device is one
    it can use, and the checkpoint has an export beside it (`<checkpoint>.onnx`) that records this
    checkpoint's sha256; otherwise torch. `"onnx"` insists on the export (a stale one is an error),
    `"torch"` on torch. `spin=False` keeps ONNX Runtime's threads from busy-waiting between operators:
    less CPU per face for many photos at once, more latency for one (`predict_many` with prefetch
    turns it off for its run).
    """
    import importlib.util

    from faceattr.checkpoint import file_sha256, read_metadata, resolve_checkpoint
    from faceattr.infer.backends import SOURCE_SHA256_KEY

    if backend not in BACKENDS:
        raise FaceattrError(f"unknown backend '{backend}'; use one of: {', '.join(BACKENDS)}")
    path = Path(name_or_path)
    if path.suffix == ".onnx":
        if backend == "torch":
            raise FaceattrError(f"{path} is an ONNX model; load it with backend='onnx' (--backend onnx)")
        if not path.is_file():
            raise FaceattrError(f"ONNX model not found: {path}")
        ob = OnnxBackend(path, _onnx_device(device) or device, spin=spin)
        return _onnx_model(ob, _onnx_meta(ob), path.stem)
    ckpt = resolve_checkpoint(name_or_path)
    if backend == "torch":
        return _load_torch(ckpt, device)
    onnx_path = ckpt.with_suffix(".onnx")
    if backend == "auto":
        if importlib.util.find_spec("onnxruntime") is None:
            logger.debug("onnxruntime is not installed: using torch")
            return _load_torch(ckpt, device)
        if not onnx_path.is_file():
            logger.debug("no ONNX export %s: using torch", onnx_path)
            return _load_torch(ckpt, device)
        onnx_device = _onnx_device(device)
        if onnx_device is None:
            logger.debug("this onnxruntime cannot run on %s: using torch", device)
            return _load_torch(ckpt, device)
    elif not onnx_path.is_file():
        raise FaceattrError(
            f"no ONNX export of '{name_or_path}' (looked for {onnx_path}); create it with "
            f"`{_refresh_hint(ckpt)}` or use --backend torch"
        )
    else:
        onnx_device = _onnx_device(device) or device  # OnnxBackend explains a device it cannot use
    try:
        ob = OnnxBackend(onnx_path, onnx_device, spin=spin)
    except FaceattrError as e:
        if backend != "auto":
            raise FaceattrError(f"{e}; or use --backend torch") from None
        # A damaged export must not stop predict when the checkpoint beside it is fine.
        logger.warning("%s (using torch meanwhile; re-export it with `%s`)", e, _refresh_hint(ckpt))
        return _load_torch(ckpt, device)
    recorded = ob.metadata.get(SOURCE_SHA256_KEY)
    if recorded is None:
        # An export from before sources were recorded: used when asked for, never picked silently.
        if backend == "auto":
            logger.info("%s does not record which checkpoint it came from: using torch; re-export it with `%s` "
                        "to make ONNX Runtime the default for it", onnx_path, _refresh_hint(ckpt))
            return _load_torch(ckpt, device)
        logger.warning("%s does not record which checkpoint it came from, so it may be stale; re-export it with `%s`",
                       onnx_path, _refresh_hint(ckpt))
        json_path = onnx_path.with_suffix(".json")
        meta = _onnx_meta(ob) if json_path.is_file() else read_metadata(ckpt)
        return _onnx_model(ob, meta, onnx_path.stem)
    if recorded != file_sha256(ckpt):
        msg = f"{onnx_path} was exported from another version of {ckpt.name}; re-export it with `{_refresh_hint(ckpt)}`"
        if backend == "auto":
            logger.warning("%s (using torch meanwhile)", msg)
            return _load_torch(ckpt, device)
        raise FaceattrError(msg + " or use --backend torch")
    try:
        return _onnx_model(ob, _onnx_meta(ob), onnx_path.stem)
    except FaceattrError as e:
        if backend != "auto":
            raise
        logger.warning("%s (using torch meanwhile)", e)
        return _load_torch(ckpt, device)


def _onnx_model(ob: OnnxBackend, meta: dict[str, Any], name: str) -> AttributeModel:
    """An AttributeModel on an ONNX session, once the graph's input is checked against the metadata."""
    from faceattr.data.transforms import Preprocess

    ob.check_fits(Preprocess.from_dict(meta["preprocess"]).size)
    return AttributeModel(ob, meta, name=name)


def samples_dir() -> Path:
    """Folder of the public-domain sample portraits shipped in the package."""
    return Path(__file__).resolve().parents[1] / "assets" / "samples"


def sample_path(name: str = "grace_hopper") -> Path:
    """Path of a shipped sample portrait ('grace_hopper' or 'astronaut'; extension optional)."""
    d = samples_dir()
    hits = [p for p in sorted(d.glob("*.jpg")) if p.stem == name or p.name == name]
    if not hits:
        from faceattr.errors import did_you_mean

        names = sorted(p.stem for p in d.glob("*.jpg"))
        raise FaceattrError(f"no sample image '{name}'{did_you_mean(name, names)}; samples: {', '.join(names)}")
    return hits[0]


def update_metadata(ckpt: str | Path, changes: dict[str, Any]) -> dict[str, Any]:
    """`checkpoint.update_metadata`, keeping a current ONNX export beside the checkpoint current; returns the new metadata.

    Thresholds and other metadata live in the export too, and it records the checkpoint's sha256, so
    without this a calibration would turn the export stale and send `predict` back to torch.
    """
    from faceattr.checkpoint import file_sha256
    from faceattr.checkpoint import update_metadata as update_checkpoint
    from faceattr.infer.backends import SOURCE_SHA256_KEY, export_metadata, rewrite_export_metadata

    ckpt = Path(ckpt)
    onnx_path = ckpt.with_suffix(".onnx")
    current = False
    if onnx_path.is_file():
        try:
            current = export_metadata(onnx_path.read_bytes()).get(SOURCE_SHA256_KEY) == file_sha256(ckpt)
        except (OSError, ValueError):
            current = False  # unreadable: `load` says so when it meets it; the checkpoint is what matters here
    meta = update_checkpoint(ckpt, changes)
    if current:
        try:
            rewrite_export_metadata(onnx_path, meta, file_sha256(ckpt))
            logger.info("updated the metadata inside %s too, so it stays the export of %s", onnx_path, ckpt.name)
        except FaceattrError as e:
            logger.warning("%s; it is now stale (re-export it with `%s`)", e, _refresh_hint(ckpt))
    return meta


def export(
    name_or_path: str | Path, onnx_path: str | Path, *, opset: int | None = None, sidecar_json: bool = True,
    half_weights: bool = False,
) -> tuple[Path, float]:
    """Export a checkpoint (or shipped model) to ONNX, verified against torch on the aligned sample
    portraits; returns (path, max abs logit difference).

    The file holds the checkpoint's metadata and sha256; `sidecar_json` also writes the metadata as
    JSON beside it (off for the shipped models, whose JSON beside them is the checkpoint's own).
    `half_weights` stores the weights fp16 holds exactly in fp16 (see `export_onnx`).
    """
    from faceattr.checkpoint import file_sha256, load_checkpoint, resolve_checkpoint
    from faceattr.data.transforms import Preprocess, prepare_image
    from faceattr.infer.backends import DEFAULT_OPSET, export_onnx

    ckpt = resolve_checkpoint(name_or_path)
    model, meta = load_checkpoint(ckpt, device="cpu")
    pre = Preprocess.from_dict(meta["preprocess"])
    am = AttributeModel(TorchBackend(model, pre, "cpu"), meta, name=ckpt.stem)
    # Real faces for the check (the two sample portraits, aligned as predict() would), plus noise
    # images so the batch axis is exercised with more than one kind of input.
    crops = [f.crop for p in sorted(samples_dir().glob("*.jpg")) for f in am.predict(p) if f.crop is not None]
    rng = np.random.default_rng(0)
    check = [prepare_image(c, pre) for c in crops]
    check += list(rng.integers(0, 256, size=(2, *pre.size, 3), dtype=np.uint8))
    return export_onnx(model, pre, meta, onnx_path, opset=opset or DEFAULT_OPSET, check_images=np.stack(check),
                       source_sha256=file_sha256(ckpt), sidecar_json=sidecar_json, half_weights=half_weights)
