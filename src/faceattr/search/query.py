"""Attribute queries over an index: a small `--where` language, joint-probability ranking, look-alikes.

The language is a list of terms separated by spaces or commas, names case-insensitive::

    Male=0 Eyeglasses=1 Smiling=1      presence: p >= the model's threshold (=1) or p < it (=0)
    Young>0.8  Blond_Hair<0.2          bounds on the probability (also >= and <=)
    age<30  age>=65  age>20 age<=40    bounds on the estimated age in years (an index whose model predicts age)

A face matches when every term holds; a face without an age matches no age bound. Matches are
ranked by the joint probability: the product of p for every `=1` or `>` term and (1 - p) for every
`=0` or `<` term; age bounds only filter. With a probe face (`--like`), matches are ranked instead by
the cosine similarity of their attribute vectors to the probe's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceattr.errors import FaceattrError, resolve_names
from faceattr.search.protocol import Predictor
from faceattr.search.store import FaceMatrix, IndexStore

__all__ = ["AGE", "MAX_AGE", "SPACES", "Match", "SearchResult", "Term", "face_vector", "parse_where", "probe_vector", "search"]

SPACES = ("logits", "probs")
AGE = "age"  # the query word for the estimated age; attribute names never clash with it (CelebA has Young)
MAX_AGE = 120.0

_TERM = re.compile(r"\s*([A-Za-z0-9_][A-Za-z0-9_\-]*)\s*(>=|<=|==|=|>|<)\s*([^\s,]*)\s*(?:,|\s|$)")
_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"0", "false", "no", "n"}
_SYNTAX = "write terms like Male=0 Eyeglasses=1 Young>0.8 Blond_Hair<0.2"


@dataclass(frozen=True)
class Term:
    """One constraint: `op` is '=1', '=0', '>', '>=', '<' or '<=' (bounds carry `value`); `attribute` "age" bounds years."""

    attribute: str
    op: str
    value: float | None = None

    def __str__(self) -> str:
        return f"{self.attribute}{self.op}" if self.value is None else f"{self.attribute}{self.op}{self.value:g}"

    @property
    def is_age(self) -> bool:
        """Whether this is a bound on the estimated age (years) rather than on a probability."""
        return self.attribute == AGE

    @property
    def wants_present(self) -> bool:
        """Whether a higher probability ranks higher for this term."""
        return self.op in ("=1", ">", ">=")


def parse_where(text: str, attributes: Sequence[str]) -> list[Term]:
    """Parse a `--where` string against the index's attribute names; raises FaceattrError with a hint."""
    text = (text or "").strip()
    terms: list[Term] = []
    pos = 0
    while pos < len(text):
        if text[pos] in " ,\t":
            pos += 1
            continue
        m = _TERM.match(text, pos)
        if m is None:
            bad = text[pos:].split()[0] if text[pos:].split() else text[pos:]
            raise FaceattrError(f"cannot read '{bad}' in --where; {_SYNTAX}")
        name, op, raw = m.group(1), m.group(2), m.group(3)
        pos = m.end()
        is_age = name.lower() == AGE
        (attr,) = [AGE] if is_age else resolve_names([name], list(attributes))
        token = f"{name}{op}{raw}"
        if not raw:
            raise FaceattrError(f"'{token}' has no value; {_SYNTAX}")
        if is_age:
            terms.append(_age_term(token, op, raw))
            continue
        if op in ("=", "=="):
            if raw.lower() in _TRUE:
                terms.append(Term(attr, "=1"))
            elif raw.lower() in _FALSE:
                terms.append(Term(attr, "=0"))
            else:
                raise FaceattrError(f"'{token}': use {attr}=1 or {attr}=0, or a bound such as {attr}>0.8")
            continue
        try:
            value = float(raw)
        except ValueError:
            raise FaceattrError(f"'{token}': the bound must be a probability between 0 and 1") from None
        if not 0.0 <= value <= 1.0:
            raise FaceattrError(f"'{token}': the bound must be a probability between 0 and 1")
        terms.append(Term(attr, op, value))
    return terms


def _age_term(token: str, op: str, raw: str) -> Term:
    """An age bound in years; an exact age (`age=30`) is refused, since no face shows its age that precisely."""
    if op in ("=", "=="):
        raise FaceattrError(f"'{token}': age takes bounds in years, such as age<30, age>=65 or age>20 age<=40, not an exact value")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= MAX_AGE:  # also refuses nan and inf
        raise FaceattrError(f"'{token}': the age bound must be a number of years between 0 and {MAX_AGE:g}, e.g. age<30")
    return Term(AGE, op, value)


def _bound(x: np.ndarray, op: str, value: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # NaN (an unknown age) compares False: it matches no bound
        if op == ">":
            return x > value
        if op == ">=":
            return x >= value
        if op == "<":
            return x < value
        return x <= value


def _mask_and_joint(
    terms: Sequence[Term], probs: np.ndarray, ages: np.ndarray, attributes: Sequence[str], thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    index = {a: i for i, a in enumerate(attributes)}
    mask = np.ones(len(probs), dtype=bool)
    joint = np.ones(len(probs), dtype=np.float64)
    for t in terms:
        if t.is_age:
            mask &= _bound(ages.astype(np.float64), t.op, t.value)  # type: ignore[arg-type]
            continue  # an age bound filters; it has no probability to rank by
        j = index[t.attribute]
        p = probs[:, j].astype(np.float64)
        if t.op == "=1":
            mask &= p >= thresholds[j]
        elif t.op == "=0":
            mask &= p < thresholds[j]
        else:
            mask &= _bound(p, t.op, t.value)  # type: ignore[arg-type]
        joint *= p if t.wants_present else 1.0 - p
    return mask, joint


def _embed(probs: np.ndarray, space: str) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if space == "logits":
        # Logits spread confident attributes apart; clipping keeps p=0/1 finite.
        p = np.clip(p, 1e-4, 1 - 1e-4)
        return np.log(p / (1 - p))
    if space == "probs":
        return p
    raise FaceattrError(f"unknown similarity space '{space}'; choose from: {', '.join(SPACES)}")


def _cosine(query: np.ndarray, rows: np.ndarray) -> np.ndarray:
    qn = query / max(float(np.linalg.norm(query)), 1e-12)
    norms = np.maximum(np.linalg.norm(rows, axis=1), 1e-12)
    return (rows @ qn) / norms


@dataclass
class Match:
    """One face that matched a query."""

    face_id: int
    image: str  # relative to the index root
    box: tuple[float, float, float, float]
    score: float  # what the ranking used: joint probability, or similarity with a probe
    joint: float | None
    similarity: float | None
    probabilities: dict[str, float]
    age: float | None = None  # estimated years, None when the index's model does not predict age

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; "age" is years, or null."""
        return {
            "face_id": self.face_id,
            "image": self.image,
            "box": [round(float(v), 2) for v in self.box],
            "score": round(self.score, 6),
            "joint": None if self.joint is None else round(self.joint, 6),
            "similarity": None if self.similarity is None else round(self.similarity, 6),
            "attributes": {k: round(v, 6) for k, v in self.probabilities.items()},
            "age": None if self.age is None else round(self.age, 1),
        }


@dataclass
class SearchResult:
    """The top matches of a query, how many faces matched in all, and how many were searched."""

    terms: list[Term]
    matches: list[Match]
    total: int
    searched: int
    like: bool = False
    root: str = ""
    attributes: list[str] = field(default_factory=list)
    predicts_age: bool = False  # the index's faces carry an age

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "where": " ".join(str(t) for t in self.terms),
            "like": self.like,
            "total": self.total,
            "searched": self.searched,
            "matches": [m.to_dict() for m in self.matches],
        }


def face_vector(faces: Sequence[Any], attributes: Sequence[str], *, what: str = "the probe image") -> np.ndarray:
    """Attribute probabilities of the largest classified face among `faces`, in the index's attribute order."""
    # Faces too small to classify come back without probabilities; they cannot be a probe.
    faces = [f for f in faces if f.probabilities]
    if not faces:
        raise FaceattrError(f"no face found in {what}; a look-alike search needs a photo with a visible face")
    face = max(faces, key=lambda f: float(f.box[2]) * float(f.box[3]))
    missing = [a for a in attributes if a not in face.probabilities]
    if missing:
        raise FaceattrError(
            f"the model does not predict {', '.join(missing[:5])}, which the index holds; "
            "use the model the index was built with (--model)"
        )
    return np.asarray([face.probabilities[a] for a in attributes], dtype=np.float32)


def probe_vector(model: Predictor, image: Any, attributes: Sequence[str]) -> np.ndarray:
    """Attribute probabilities of the largest face in `image` (a path, PIL image or array), in the index's order."""
    what = str(image) if isinstance(image, (str, Path)) else "the probe image"
    return face_vector(model.predict(image), attributes, what=what)


def search(
    index: str | Path | IndexStore,
    where: str = "",
    *,
    like: np.ndarray | None = None,
    top: int = 20,
    space: str = "logits",
    matrix: FaceMatrix | None = None,
) -> SearchResult:
    """Run a query: faces matching every `where` term, best first, at most `top` of them."""
    if top < 1:
        raise FaceattrError("--top must be at least 1")
    if isinstance(index, IndexStore):
        return _search(index, where, like, top, space, matrix)
    with IndexStore(index, readonly=True) as store:
        return _search(store, where, like, top, space, matrix)


def _search(store: IndexStore, where: str, like: np.ndarray | None, top: int, space: str, matrix: FaceMatrix | None) -> SearchResult:
    attributes = store.attributes
    if not attributes:
        raise FaceattrError(f"{store.path} holds no indexed model yet; run `faceattr index` first")
    terms = parse_where(where, attributes)
    if not terms and like is None:
        raise FaceattrError(f"nothing to search for: give --where terms ({_SYNTAX}) and/or --like IMAGE")
    predicts_age = store.predicts_age
    if not predicts_age and any(t.is_age for t in terms):
        raise FaceattrError(
            f"the faces in {store.path} have no age: its model '{store.get_meta('model_name')}' does not predict age; "
            f"re-index with one that does (faceattr index {store.get_meta('root') or 'FOLDER'} --out {store.path} --model MODEL --rebuild)"
        )
    m = matrix if matrix is not None else store.face_matrix()
    thresholds = store.thresholds
    mask, joint = _mask_and_joint(terms, m.probs, m.ages, attributes, thresholds)
    similarity: np.ndarray | None = None
    if like is not None:
        like = np.asarray(like, dtype=np.float32).ravel()
        if like.shape != (len(attributes),):
            raise FaceattrError(f"the probe has {like.size} attributes; the index has {len(attributes)}")
        similarity = _cosine(_embed(like, space), _embed(m.probs, space)) if len(m.probs) else np.zeros(0)
        score = similarity
    else:
        score = joint
    candidates = np.flatnonzero(mask)
    # Best score first; ties go to the older face id so results are stable run to run.
    order = candidates[np.lexsort((m.ids[candidates], -score[candidates]))][:top]
    matches = [
        Match(
            face_id=int(m.ids[i]),
            image=m.paths[i],
            box=tuple(float(v) for v in m.boxes[i]),  # type: ignore[arg-type]
            score=float(score[i]),
            joint=float(joint[i]) if terms else None,
            similarity=None if similarity is None else float(similarity[i]),
            probabilities={a: float(p) for a, p in zip(attributes, m.probs[i])},
            age=None if np.isnan(m.ages[i]) else float(m.ages[i]),
        )
        for i in order
    ]
    root = str(store.get_meta("root") or "")
    return SearchResult(terms, matches, int(mask.sum()), len(m.ids), like is not None, root, attributes, predicts_age)
