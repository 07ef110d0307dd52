"""A small fake AttributeModel that follows faceattr.infer's contract, and images it can read exactly.

The fake reads its answers out of the picture: a synthetic image is a row of vertical stripes, one per
attribute, whose grey level is that attribute's probability, plus a last stripe whose level says how
many faces the image "holds" (0, 1 or 2; 2 also adds a face too small to classify; 3 means only a too-small one). So tests know the right answer for every image they write,
and a broken index, query or engine gives visibly wrong results. The blank band at the right end
holds the age of every face in the image (grey level = 2 x years); only a FakeModel made with
`age=True` reads it, as only a model trained with an age source predicts age.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from faceattr.errors import FaceattrError

ATTRS = ["Eyeglasses", "Male", "Smiling", "Young", "Blond_Hair", "5_o_Clock_Shadow"]
STRIPE = 8
HEIGHT = 48
FACE_LEVEL = 80  # marker grey level per face
AGE_BAND = 16  # width of the age band after the marker stripe


@dataclass
class FakeFace:
    box: tuple[float, float, float, float]
    score: float
    landmarks: list[tuple[float, float]]
    probabilities: dict[str, float]
    present: list[str]
    crop: Any = None
    age: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"box": list(self.box), "score": self.score, "landmarks": [list(p) for p in self.landmarks],
                "attributes": self.probabilities, "present": self.present, "age": self.age}


@dataclass
class FakeImageResult:
    image: str
    faces: list[FakeFace] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"image": self.image, "faces": [f.to_dict() for f in self.faces]}
        if self.error:
            d["error"] = self.error
        return d


def image_array(probs: Sequence[float], n_faces: int = 1, age: float | None = None) -> np.ndarray:
    """A synthetic RGB image whose fake-model answer is `probs` for `n_faces` faces (3: one too-small face),
    each `age` years old (0-127, in steps of half a year) for a fake model with age."""
    a = np.zeros((HEIGHT, STRIPE * (len(ATTRS) + 1) + AGE_BAND, 3), np.uint8)
    for j, p in enumerate(probs):
        a[:, j * STRIPE : (j + 1) * STRIPE] = round(p * 255)
    a[:, len(ATTRS) * STRIPE : (len(ATTRS) + 1) * STRIPE] = n_faces * FACE_LEVEL
    if age is not None:
        a[:, (len(ATTRS) + 1) * STRIPE :] = round(age * 2)
    return a


def image_bytes(probs: Sequence[float], n_faces: int = 1, age: float | None = None) -> bytes:
    """PNG bytes of `image_array`."""
    import io

    buf = io.BytesIO()
    Image.fromarray(image_array(probs, n_faces, age)).save(buf, format="PNG")
    return buf.getvalue()


def write_image(path: Path, probs: Sequence[float], n_faces: int = 1, fmt: str = "PNG", age: float | None = None) -> Path:
    """Write `image_array(probs, n_faces, age)` to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_array(probs, n_faces, age)).save(path, format=fmt)
    return path


def read_answer(a: np.ndarray) -> tuple[list[float], int]:
    """Decode (probabilities, number of faces) from a synthetic image array."""
    probs = [float(a[:, j * STRIPE + 2 : (j + 1) * STRIPE - 2].mean()) / 255 for j in range(len(ATTRS))]
    marker = float(a[:, len(ATTRS) * STRIPE + 2 : (len(ATTRS) + 1) * STRIPE - 2].mean())
    return probs, round(marker / FACE_LEVEL)


def read_age(a: np.ndarray) -> float:
    """Decode the age (years) written by `image_array(..., age=)`; 0.0 for an image written without one."""
    return float(a[:, (len(ATTRS) + 1) * STRIPE + 2 : -2].mean()) / 2


class FakeModel:
    """Duck-typed AttributeModel: predict / predict_many / attributes / thresholds / meta / predicts_age.

    With `age=True` every classified face also gets the age written in its image, as a model trained
    with an age source would; otherwise `age` is None, as for the models without one.
    """

    def __init__(self, name: str = "fake", delay: float = 0.0, fail_after_batches: int | None = None, created: str = "2026-01-01",
                 age: bool = False) -> None:
        self.name = name
        self.attributes = list(ATTRS)
        self.thresholds = np.full(len(ATTRS), 0.5, np.float32)
        self.meta: dict[str, Any] = {"name": name, "created": created, "versions": {"faceattr": "test"},
                                     "age": {"mean": 35.0, "std": 20.0} if age else None}
        self.predicts_age = age
        self.delay = delay
        self.fail_after_batches = fail_after_batches
        self.seen: list[str] = []  # every path predict_many was asked about, in order
        self.batches = 0

    def _faces(self, a: np.ndarray) -> list[FakeFace]:
        probs, n = read_answer(a)
        age = read_age(a) if self.predicts_age else None
        out = []
        for k in range(n if n < 3 else 0):
            pd = {name: p for name, p in zip(self.attributes, probs)}
            box = (4.0 + 20 * k, 4.0, 18.0, 30.0 + k)
            lm = [(box[0] + 4, 10.0), (box[0] + 12, 10.0), (box[0] + 8, 16.0), (box[0] + 5, 24.0), (box[0] + 11, 24.0)]
            out.append(FakeFace(box, 0.9 - 0.1 * k, lm, pd, [n_ for n_, p in pd.items() if p >= 0.5], age=age))
        if n >= 2:
            # Like the real model: a face below min_face is listed, but unclassified (no probabilities).
            out.append(FakeFace((60.0, 40.0, 6.0, 6.0), 0.6, [(62.0, 42.0)] * 5, {}, []))
        return out

    def predict(self, image: Any, *, detect: bool = True, align: bool = True, max_faces: int = 10, min_face: int = 24) -> list[FakeFace]:
        from faceattr.infer.image_io import load_rgb

        return self._faces(load_rgb(image))[:max_faces]

    def predict_many(self, images: Iterable[str | Path], *, batch_size: int = 32, detect: bool = True, align: bool = True,
                     max_faces: int = 10) -> Iterator[FakeImageResult]:
        from faceattr.infer.image_io import load_rgb

        images = list(images)
        if self.fail_after_batches is not None and self.batches >= self.fail_after_batches:
            raise RuntimeError("injected failure")
        self.batches += 1
        if self.delay:
            time.sleep(self.delay)
        for p in images:
            self.seen.append(str(p))
            try:
                a = load_rgb(p)
            except FaceattrError as e:
                yield FakeImageResult(str(p), [], str(e))
                continue
            yield FakeImageResult(str(p), self._faces(a)[:max_faces])

    def predict_aligned(self, crops: Any, *, batch_size: int = 64) -> np.ndarray:
        return np.stack([read_answer(np.asarray(c))[0] for c in crops]).astype(np.float32)


def make_fake_model(name: str = "fake", delay: float = 0.0, age: bool = False) -> FakeModel:
    """Picklable loader for worker processes."""
    return FakeModel(name=name, delay=delay, age=age)


def dataset_age(i: int) -> float:
    """The age written into image `i` of `make_dataset`: spread over 8-82 years, whole and half years."""
    return 8.0 + (i * 29) % 75 + 0.5 * (i % 2)


def make_dataset(root: Path, n: int, seed: int = 0, ages: dict[str, float] | None = None) -> dict[str, tuple[list[float], int]]:
    """Write n synthetic images (some with 0 or 2 faces, one unreadable) under root; returns path -> answer.

    Every image also carries an age (`dataset_age(i)`, read only by a fake model with age); pass `ages`
    to have it filled with path -> that age.
    """
    rng = np.random.default_rng(seed)
    truth: dict[str, tuple[list[float], int]] = {}
    for i in range(n):
        rel = f"{'sub/' if i % 3 == 0 else ''}img_{i:04d}.png"
        probs = [round(float(v), 2) for v in rng.uniform(0.02, 0.98, len(ATTRS))]
        # Marker 3 means "only a face too small to classify": stored as no face.
        marker = 0 if i % 11 == 5 else 3 if i % 13 == 6 else 2 if i % 7 == 3 else 1
        write_image(root / rel, probs, marker, age=dataset_age(i))
        truth[rel] = (probs, marker % 3)
        if ages is not None:
            ages[rel] = dataset_age(i)
    (root / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "notes.txt").write_text("not an image, and not an image extension")
    return truth
