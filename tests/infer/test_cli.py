"""`faceattr predict` and `faceattr export`, end to end through faceattr.cli.main."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceattr.cli import main
from faceattr.infer import load
from faceattr.infer.cli import expand_inputs

from .helpers import build_checkpoint


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, grace: Path, astronaut: Path) -> Path:
    """A folder: two portraits (one in a subfolder), a blank image, a truncated JPEG, a text file named .jpg."""
    d = tmp_path_factory.mktemp("photos")
    shutil.copy(grace, d / "grace.jpg")
    (d / "sub").mkdir()
    shutil.copy(astronaut, d / "sub" / "astro.jpg")
    Image.new("RGB", (320, 240), (30, 60, 90)).save(d / "blank.png")
    (d / "notes.txt").write_text("ignored: not an image extension")
    return d


@pytest.fixture(scope="module")
def age_ckpt(ckpt_dir: Path) -> Path:
    """Like small_ckpt, plus the age output that models trained with an age source have."""
    return build_checkpoint(ckpt_dir / "small_age.safetensors", "celeb_cnn", size=(64, 64), crop=[25, 45, 153, 173], age=True)


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory, grace: Path) -> tuple[Path, Path]:
    """A truncated JPEG and a text file named .jpg."""
    d = tmp_path_factory.mktemp("broken")
    cut = d / "cut.jpg"
    cut.write_bytes(grace.read_bytes()[:4000])
    text = d / "letter.jpg"
    text.write_text("Dear reader, this is not a JPEG.")
    return cut, text


def test_predict_human_output(capsys: pytest.CaptureFixture[str], small_ckpt: Path, grace: Path) -> None:
    assert main(["predict", str(grace), "--model", str(small_ckpt)]) == 0
    out = capsys.readouterr().out
    model = load(small_ckpt)
    (face,) = model.predict(grace)
    assert f"{grace}: 1 face" in out
    assert "box x=183 y=120 w=170 h=212" in out
    assert "present: " + ", ".join(face.present) in out
    # The table lists every attribute once, most probable first, present ones marked.
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("attr_")]
    assert [r[0] for r in rows] == sorted(face.probabilities, key=lambda a: -face.probabilities[a])
    assert all((len(r) == 3) == (face.probabilities[r[0]] >= 0.5) for r in rows)
    assert "age" not in out  # a model without age shows none


def test_black_and_white_photos_are_flagged_in_text_and_json(capsys: pytest.CaptureFixture[str], small_ckpt: Path,
                                                            grace: Path, tmp_path: Path) -> None:
    bw = tmp_path / "grace_bw.png"
    Image.open(grace).convert("L").save(bw)
    assert main(["predict", str(bw), str(grace), "--model", str(small_ckpt)]) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if "black-and-white photo" in line]
    assert len(notes) == 1 and out.index(notes[0]) > out.index(f"{bw}: 1 face")  # under the gray one only
    assert main(["predict", str(bw), str(grace), "--model", str(small_ckpt), "--json"]) == 0
    gray_doc, colour_doc = json.loads(capsys.readouterr().out)
    assert gray_doc["grayscale"] is True and "grayscale" not in colour_doc


def test_predict_json_is_the_only_stdout(capsys: pytest.CaptureFixture[str], small_ckpt: Path, photos: Path) -> None:
    code = main(["-q", "predict", str(photos), "--model", str(small_ckpt), "--json", "--batch-size", "2"])
    captured = capsys.readouterr()
    assert code == 0
    results = json.loads(captured.out)  # stdout is exactly one JSON document
    names = [Path(r["image"]).name for r in results]
    assert names == ["blank.png", "grace.jpg", "astro.jpg"]  # recursive, sorted, .txt skipped
    by = {Path(r["image"]).name: r for r in results}
    assert by["blank.png"]["faces"] == []
    assert "no face found" in captured.err and "blank.png" in captured.err
    (g,) = by["grace.jpg"]["faces"]
    assert set(g) == {"box", "score", "landmarks", "attributes", "present", "age"} and g["age"] is None
    assert len(g["landmarks"]) == 5 and len(g["attributes"]) == 40
    ref = load(small_ckpt).predict(photos / "grace.jpg")[0]
    assert g["present"] == ref.present
    assert np.allclose([g["attributes"][a] for a in ref.probabilities], list(ref.probabilities.values()), atol=1e-5)


def test_bad_files_one_line_each_and_nonzero_exit(
    capsys: pytest.CaptureFixture[str], small_ckpt: Path, grace: Path, broken: tuple[Path, Path]
) -> None:
    cut, text = broken
    code = main(["predict", str(cut), str(grace), str(text), "--model", str(small_ckpt), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    results = json.loads(captured.out)
    assert [Path(r["image"]).name for r in results] == ["cut.jpg", grace.name, "letter.jpg"]
    assert len(results[1]["faces"]) == 1  # the batch went on past the bad file
    assert "error" in results[0] and "error" in results[2] and "error" not in results[1]
    err_lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len([line for line in err_lines if "cut.jpg" in line]) == 1
    assert len([line for line in err_lines if "letter.jpg" in line]) == 1
    # Human mode: same exit code, errors on stderr only.
    code = main(["predict", str(text), str(grace), "--model", str(small_ckpt)])
    captured = capsys.readouterr()
    assert code == 1 and "letter.jpg" not in captured.out and "letter.jpg" in captured.err
    assert f"{grace}: 1 face" in captured.out


def test_no_face_message_and_no_detect(capsys: pytest.CaptureFixture[str], small_ckpt: Path, photos: Path) -> None:
    blank = photos / "blank.png"
    assert main(["predict", str(blank), "--model", str(small_ckpt)]) == 0
    out = capsys.readouterr().out
    assert "no face found" in out and "--no-detect" in out
    assert main(["predict", str(blank), "--model", str(small_ckpt), "--no-detect", "--json"]) == 0
    (res,) = json.loads(capsys.readouterr().out)
    (face,) = res["faces"]
    assert face["box"] == [0, 0, 320, 240] and face["score"] is None and face["landmarks"] == []


def test_no_align_threshold_max_faces(capsys: pytest.CaptureFixture[str], small_ckpt: Path, celeba_root: Path, tmp_path: Path) -> None:
    crop = next((celeba_root / "img_align_celeba").glob("*.jpg"))
    assert main(["predict", str(crop), "--model", str(small_ckpt), "--no-align", "--json", "--threshold", "0.0"]) == 0
    (res,) = json.loads(capsys.readouterr().out)
    (face,) = res["faces"]
    assert len(face["present"]) == 40  # threshold 0: everything present
    model = load(small_ckpt)
    direct = model.predict_aligned([Image.open(crop).convert("RGB")])[0]
    assert np.allclose([face["attributes"][a] for a in model.attributes], direct, atol=1e-5)
    assert main(["predict", str(crop), "--model", str(small_ckpt), "--threshold", "1.5"]) == 2
    assert "--threshold" in capsys.readouterr().err


def test_max_faces_and_saved_crops_and_annotations(
    capsys: pytest.CaptureFixture[str], small_ckpt: Path, celeba_root: Path, tmp_path: Path
) -> None:
    from .helpers import celeba_crops, noise_canvas, paste

    rng = np.random.default_rng(8)
    scene = noise_canvas(rng, 480, 900)
    for (_, crop), scale, cx in zip(celeba_crops(celeba_root, 3, seed=11), (0.8, 1.6, 1.15), (150, 440, 740)):
        scene, _ = paste(scene, crop, scale=scale, center=(cx, 240))
    group = tmp_path / "group.png"
    Image.fromarray(scene).save(group)
    crops, annot = tmp_path / "crops", tmp_path / "annot"
    args = ["predict", str(group), "--model", str(small_ckpt), "--json", "--save-crops", str(crops), "--annotate", str(annot)]
    assert main(args) == 0
    (res,) = json.loads(capsys.readouterr().out)
    assert len(res["faces"]) == 3
    saved = sorted(crops.glob("*.png"))
    assert [p.name for p in saved] == ["group_face1.png", "group_face2.png", "group_face3.png"]
    assert all(Image.open(p).size == (178, 218) for p in saved)
    (drawn,) = annot.glob("*.jpg")
    assert Image.open(drawn).size == (900, 480)
    assert np.abs(np.asarray(Image.open(drawn)).astype(int) - scene).mean() > 0.2  # boxes were drawn
    assert main(["predict", str(group), "--model", str(small_ckpt), "--json", "--max-faces", "2"]) == 0
    (two,) = json.loads(capsys.readouterr().out)
    assert [f["box"] for f in two["faces"]] == [f["box"] for f in res["faces"][:2]]


def test_an_age_model_prints_each_faces_age_and_puts_it_in_the_json(
    capsys: pytest.CaptureFixture[str], age_ckpt: Path, celeba_root: Path, tmp_path: Path
) -> None:
    from .helpers import celeba_crops, noise_canvas, paste

    scene = noise_canvas(np.random.default_rng(3), 480, 900)
    for (_, crop), scale, cx in zip(celeba_crops(celeba_root, 2, seed=5), (1.4, 1.0), (250, 650)):
        scene, _ = paste(scene, crop, scale=scale, center=(cx, 240))
    group = tmp_path / "pair.png"
    Image.fromarray(scene).save(group)
    faces = load(age_ckpt).predict(group)
    assert len(faces) == 2 and all(isinstance(f.age, float) for f in faces)

    annot = tmp_path / "annot"
    assert main(["predict", str(group), "--model", str(age_ckpt), "--annotate", str(annot)]) == 0
    lines = capsys.readouterr().out.splitlines()
    boxes = [i for i, line in enumerate(lines) if line.lstrip().startswith("face ") and "box" in line]
    assert len(boxes) == 2
    # One age line per face, right under its box line, in whole years.
    assert [lines[i + 1] for i in boxes] == [f"    age ~{f.age:.0f}" for f in faces]
    assert len(list(annot.glob("*.jpg"))) == 1

    assert main(["predict", str(group), "--model", str(age_ckpt), "--json"]) == 0
    (res,) = json.loads(capsys.readouterr().out)
    assert [f["age"] for f in res["faces"]] == [round(f.age, 1) for f in faces]  # type: ignore[arg-type]
    assert all(isinstance(f["age"], float) and 1 <= f["age"] <= 100 for f in res["faces"])


def test_demo_shows_the_age_once_the_shipped_model_predicts_it(
    capsys: pytest.CaptureFixture[str], age_ckpt: Path, grace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import faceattr.checkpoint

    shipped = tmp_path / "models"
    shipped.mkdir()
    shutil.copy(age_ckpt, shipped / "default.safetensors")
    monkeypatch.setattr(faceattr.checkpoint, "shipped_models_dir", lambda: shipped)
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    (face,) = load(age_ckpt).predict(grace)
    assert "grace_hopper.jpg: 1 face" in out and f"    age ~{face.age:.0f}\n" in out


def test_globs_and_missing_inputs(photos: Path, tmp_path: Path) -> None:
    paths, errors = expand_inputs([str(photos / "**" / "*.jpg")])
    assert sorted(Path(p).name for p in paths) == ["astro.jpg", "grace.jpg"] and errors == []
    paths, errors = expand_inputs([str(photos / "grace.jpg"), str(photos / "grace.jpg"), str(tmp_path / "nope.jpg")])
    assert len(paths) == 1 and len(errors) == 1 and "nope.jpg" in errors[0]
    paths, errors = expand_inputs([str(tmp_path / "*.png")])
    assert paths == [] and "matches no images" in errors[0]


def test_missing_default_model_is_one_clear_line(capsys: pytest.CaptureFixture[str], grace: Path) -> None:
    from faceattr.checkpoint import shipped_models_dir

    if (shipped_models_dir() / "default.safetensors").is_file():
        pytest.skip("the default model is shipped in this build")
    assert main(["predict", str(grace)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "default" in err[0] and "checkpoint path" in err[0]


def test_export_then_predict_with_onnx_backend(capsys: pytest.CaptureFixture[str], small_ckpt: Path, grace: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported" / "small.onnx"
    assert main(["export", str(small_ckpt), "--onnx", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert main(["predict", str(grace), "--model", str(out), "--backend", "onnx", "--json"]) == 0
    (onnx_res,) = json.loads(capsys.readouterr().out)
    assert main(["predict", str(grace), "--model", str(small_ckpt), "--json"]) == 0
    (torch_res,) = json.loads(capsys.readouterr().out)
    a, b = onnx_res["faces"][0], torch_res["faces"][0]
    assert a["box"] == b["box"] and a["present"] == b["present"]
    assert max(abs(a["attributes"][k] - b["attributes"][k]) for k in a["attributes"]) < 1e-4
    # Asking for the ONNX backend of a checkpoint with no export beside it: a clear error.
    assert main(["predict", str(grace), "--model", str(small_ckpt), "--backend", "onnx"]) == 2
    assert "faceattr export" in capsys.readouterr().err
