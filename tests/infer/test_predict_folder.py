"""`faceattr predict DIR`: faces batched across photos, decoding and detection on background threads
(issue 16, "Folders, against a peer"), with the same answers, in the same order, as one photo at a time."""

from __future__ import annotations

import io
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from faceattr.cli import main
from faceattr.infer import AttributeModel
from faceattr.infer.cli import _JsonListWriter


@pytest.fixture(scope="module")
def utk_photos(utkface_root: Path) -> list[Path]:
    """14 real UTKFace photos, a seeded pick (children, old people, every race: whatever the draw gives)."""
    folder = utkface_root / "UTKFace"
    names = sorted(p.name for p in folder.glob("*.jpg"))
    return [folder / n for n in sorted(random.Random(16).sample(names, 14))]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, utk_photos: list[Path], grace: Path, astronaut: Path) -> Path:
    """A folder of real photos plus two bad files among them, in name order: a truncated JPEG and text named .jpg."""
    d = tmp_path_factory.mktemp("folder")
    for p in utk_photos:
        shutil.copy(p, d / p.name)
    shutil.copy(grace, d / "50_grace.jpg")
    shutil.copy(astronaut, d / "60_astronaut.jpg")
    (d / "30_cut.jpg").write_bytes(grace.read_bytes()[:3000])
    (d / "40_letter.jpg").write_text("Dear reader, this is not a JPEG.")
    return d


def _same(a: list[dict], b: list[dict], atol: float) -> None:
    """The two result lists agree: same images in the same order, same faces, probabilities within atol."""
    assert [r["image"] for r in a] == [r["image"] for r in b]
    for ra, rb in zip(a, b):
        assert ra.get("error") == rb.get("error")
        assert len(ra["faces"]) == len(rb["faces"]), ra["image"]
        for fa, fb in zip(ra["faces"], rb["faces"]):
            assert fa["box"] == fb["box"] and fa["landmarks"] == fb["landmarks"]
            assert list(fa["attributes"]) == list(fb["attributes"])
            got, want = np.array(list(fa["attributes"].values())), np.array(list(fb["attributes"].values()))
            assert np.abs(got - want).max(initial=0.0) <= atol, ra["image"]
            assert (fa["age"] is None) == (fb["age"] is None)
            if fa["age"] is not None:
                assert abs(fa["age"] - fb["age"]) <= 0.1 + 1e-9  # ages are rounded to 0.1 year


def test_batched_across_photos_on_threads_equals_one_photo_at_a_time(default_model: AttributeModel, folder: Path) -> None:
    # The shipped default (whichever is shipped), on ONNX Runtime as `faceattr predict` runs it.
    paths = sorted(folder.iterdir())
    rng = random.Random(3)
    shuffled = paths[:]
    rng.shuffle(shuffled)  # order must follow the input, not file names or finishing order
    one_by_one = []
    for p in shuffled:
        (single,) = default_model.predict_many([p], batch_size=1)
        one_by_one.append(single)
    # One photo at a time ran with ONNX Runtime's threads spinning (load()'s default, for latency); the
    # pipeline turns spinning off while it runs (the decode threads need the cores) and back on after.
    from faceattr.infer.backends import onnx_backend

    ort = onnx_backend(default_model)  # None only for a FACEATTR_TEST_MODEL without an export (torch)
    assert ort is None or ort.spin is True
    batched, spin_during = [], []
    for r in default_model.predict_many(shuffled, batch_size=5, prefetch=4, workers=2):
        batched.append(r)
        spin_during.append(None if ort is None else ort.spin)
    if ort is not None:
        assert spin_during and not any(spin_during)
        assert ort.spin is True
    assert [r.image for r in batched] == [str(p) for p in shuffled]
    # Batches of 5 faces cut across photos: several photos share one classifier call.
    assert sum(len(r.faces) for r in batched) >= 14
    _same([r.to_dict() for r in batched], [r.to_dict() for r in one_by_one], atol=1e-5)
    # And predict(), the one-photo API, gives the same probabilities as the folder path.
    for r, p in zip(batched, shuffled):
        if r.error is None:
            for f, g in zip(r.faces, default_model.predict(p)):
                want = np.array([g.probabilities[a] for a in default_model.attributes])
                got = np.array([f.probabilities[a] for a in default_model.attributes])
                assert np.abs(got - want).max() <= 1e-5
                assert (f.age is None and g.age is None) or abs(f.age - g.age) <= 1e-4


def test_a_corrupt_file_gives_its_line_and_keeps_the_others(
    capsys: pytest.CaptureFixture[str], default_model: AttributeModel, folder: Path
) -> None:
    code = main(["predict", str(folder), "--json", "--batch-size", "4", "--prefetch", "6"])
    captured = capsys.readouterr()
    assert code == 1  # some photos could not be read
    results = json.loads(captured.out)
    paths = sorted(folder.iterdir())
    assert [r["image"] for r in results] == [str(p) for p in paths]
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("faceattr: ")]
    assert len(errors) == 2 and "Traceback" not in captured.err
    assert "30_cut.jpg" in errors[0] and "corrupt or truncated" in errors[0]
    assert "40_letter.jpg" in errors[1] and "not an image file" in errors[1]
    by_name = {Path(r["image"]).name: r for r in results}
    assert by_name["30_cut.jpg"]["faces"] == [] and by_name["30_cut.jpg"]["error"] in errors[0]
    assert by_name["40_letter.jpg"]["faces"] == [] and by_name["40_letter.jpg"]["error"] in errors[1]
    # Every other photo has its faces, 40 attributes and an age where the model predicts one,
    # the same as predicted alone.
    good = [p for p in paths if not p.name.startswith(("30_", "40_"))]
    assert all(by_name[p.name]["faces"] for p in good)
    alone = [r.to_dict() for p in good for r in default_model.predict_many([p], batch_size=1)]
    _same([by_name[p.name] for p in good], alone, atol=1e-5)
    for r in alone:
        for f in r["faces"]:
            assert len(f["attributes"]) == len(default_model.attributes)
            assert (f["age"] is not None) == default_model.predicts_age


def test_the_json_is_the_same_with_and_without_the_pipeline(capsys: pytest.CaptureFixture[str], small_ckpt: Path,
                                                            folder: Path) -> None:
    # At one batch size the threads change nothing, byte for byte (other batch sizes agree within
    # 1e-5, above; torch's kernels may round differently by batch, which can move a 6th decimal).
    outs = []
    for prefetch in ("0", "3"):
        assert main(["predict", str(folder), "--json", "--model", str(small_ckpt), "--batch-size", "3",
                     "--prefetch", prefetch]) == 1
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]


def test_prefetch_must_not_be_negative(capsys: pytest.CaptureFixture[str], grace: Path) -> None:
    assert main(["predict", str(grace), "--prefetch", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["faceattr: error: --prefetch must be 0 or more, got -1"]


def test_predict_many_refuses_no_workers(small_model: AttributeModel, grace: Path) -> None:
    from faceattr.errors import FaceattrError

    with pytest.raises(FaceattrError, match="workers must be at least 1"):
        list(small_model.predict_many([grace], prefetch=2, workers=0))


def test_pipeline_stops_reading_when_the_caller_stops(small_model: AttributeModel, grace: Path) -> None:
    seen: list[int] = []

    def paths():
        for i in range(200):
            seen.append(i)
            yield grace

    it = small_model.predict_many(paths(), batch_size=4, prefetch=6, workers=2)
    assert len(next(it).faces) == 1
    it.close()
    assert len(seen) <= 4 + 6 + 1  # a batch, the read-ahead window and the one being taken


@pytest.mark.parametrize("n", [0, 1, 3])
def test_streamed_json_list_is_byte_for_byte_json_dump(n: int) -> None:
    items = [
        {"image": "a/b\n\"c\" é.jpg", "faces": []},
        {"image": "x.jpg", "faces": [{"box": [1.0, 2.5], "attributes": {"Male": 0.25}, "present": [], "age": None}],
         "grayscale": True},
        {"image": "y.jpg", "faces": [], "error": "y.jpg: not an image file"},
    ][:n]
    stream = io.StringIO()
    writer = _JsonListWriter(stream)
    for item in items:
        writer.add(item)
    writer.close()
    want = io.StringIO()
    json.dump(items, want, indent=2)
    assert stream.getvalue() == want.getvalue() + "\n"


def test_one_photo_runs_without_the_pipeline(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                             small_ckpt: Path, grace: Path) -> None:
    # A cold one-photo predict starts no thread pool: nothing to overlap.
    calls: list[int] = []
    original = AttributeModel.predict_many

    def spy(self: AttributeModel, images, **kw):  # type: ignore[no-untyped-def]
        calls.append(kw["prefetch"])
        return original(self, images, **kw)

    monkeypatch.setattr(AttributeModel, "predict_many", spy)
    assert main(["predict", str(grace), "--json", "--model", str(small_ckpt)]) == 0
    assert calls == [0] and json.loads(capsys.readouterr().out)[0]["faces"]


def test_cli_lets_onnx_runtime_spin_for_one_photo_only(grace: Path, astronaut: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # One photo: lowest latency (threads spin); a folder: the cores go to decoding and detection.
    import faceattr.infer as infer

    asked: list[bool] = []
    real_load = infer.load

    def recording_load(*args, **kw):  # type: ignore[no-untyped-def]
        asked.append(kw["spin"])
        return real_load(*args, **kw)

    monkeypatch.setattr(infer, "load", recording_load)  # `faceattr predict` imports it when it runs
    assert main(["predict", str(grace), "--json"]) == 0
    assert main(["predict", str(grace), str(astronaut), "--json"]) == 0
    capsys.readouterr()
    assert asked == [True, False]
