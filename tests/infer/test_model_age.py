"""Age, the output after the attributes: `face.age` in years for a model trained with it, None otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceattr.infer import load

from .helpers import build_checkpoint


@pytest.fixture(scope="module")
def age_model(ckpt_dir: Path):
    """A small random checkpoint with the age output (35 + 20 x its last logit, in years)."""
    return load(build_checkpoint(ckpt_dir / "age_model.safetensors", "celeb_cnn", size=(64, 64), crop=[25, 45, 153, 173], age=True))


def test_an_age_model_gives_every_classified_face_an_age_in_years(age_model, grace: Path, astronaut: Path) -> None:
    from faceattr.data.transforms import prepare_image

    assert age_model.predicts_age and len(age_model.attributes) == 40
    (face,) = age_model.predict(grace)
    assert isinstance(face.age, float) and 1.0 <= face.age <= 100.0
    assert len(face.probabilities) == 40  # the age output is not read as a 41st attribute
    # The age is the checkpoint's scale applied to the last output, for the same aligned crop.
    logits = age_model.backend.logits(np.stack([prepare_image(face.crop, age_model.preprocess)]), batch_size=1)
    assert logits.shape == (1, 41)
    assert face.age == pytest.approx(float(np.clip(35.0 + 20.0 * logits[0, -1], 1.0, 100.0)), abs=1e-3)
    assert face.to_dict()["age"] == round(face.age, 1)
    # Batched over several images, each face keeps its own age.
    results = list(age_model.predict_many([grace, astronaut], batch_size=1))
    assert [f.age for f in results[0].faces] == pytest.approx([face.age], abs=1e-3)
    assert all(isinstance(f.age, float) for r in results for f in r.faces)


def test_a_model_without_age_gives_none(small_model, grace: Path) -> None:
    assert not small_model.predicts_age
    (face,) = small_model.predict(grace)
    assert face.age is None and face.to_dict()["age"] is None
    (res,) = small_model.predict_many([grace])
    assert [f.age for f in res.faces] == [None]


def test_a_face_too_small_to_classify_has_no_age(age_model, grace: Path) -> None:
    (face,) = age_model.predict(grace, min_face=10_000)
    assert face.too_small and face.age is None and face.to_dict()["age"] is None
