"""Ensembles of trained checkpoints: one checkpoint whose logits are the members' mean, on real faces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from infer.helpers import build_checkpoint, celeba_crops  # tests/ is on sys.path (tests/infer is a package)
from safetensors import safe_open

from faceattr.checkpoint import load_checkpoint, read_metadata
from faceattr.cli import main
from faceattr.errors import FaceattrError
from faceattr.infer import export, load
from faceattr.train import make_ensemble

ATTRS = ["Male", "Smiling", "Eyeglasses", "Blond_Hair", "Young"]
# What a training run records about its split; members must agree on it.
SPLIT_CFG = {"seed": 0, "data": {"train_split": "train", "holdout_fraction": 0.1, "limit": 0}}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny forward passes run faster on one thread of the shared 2-core machine; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two different architectures with different normalisations (celeb_cnn's and ImageNet's), 64x64."""
    d = tmp_path_factory.mktemp("members")
    a = build_checkpoint(d / "a.safetensors", "celeb_cnn", num_outputs=5, size=(64, 64), attributes=ATTRS, config=SPLIT_CFG)
    b = build_checkpoint(d / "b.safetensors", "mobilenet_v2", num_outputs=5, seed=1, size=(64, 64),
                         attributes=ATTRS, config=SPLIT_CFG)
    return a, b


@pytest.fixture(scope="module")
def ensemble(members: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ensemble(list(members), tmp_path_factory.mktemp("ens") / "ens.safetensors")


@pytest.fixture(scope="module")
def crops(celeba_root: Path) -> np.ndarray:
    return np.stack([c for _, c in celeba_crops(celeba_root, 6, seed=7)])


def test_logits_are_the_mean_of_each_members_own_logits_on_real_faces(members: tuple[Path, Path], ensemble: Path,
                                                                       crops: np.ndarray) -> None:
    ens = load(ensemble)
    a, b = (load(m) for m in members)
    # Each model prepares pixels its own way; the ensemble's members normalise inside its graph.
    la, lb = (m.backend.logits(np.stack([_prepared(m, c) for c in crops])) for m in (a, b))
    le = ens.backend.logits(np.stack([_prepared(ens, c) for c in crops]))
    assert np.abs(la - lb).mean() > 0.5  # the members disagree, so the mean is not trivially either
    np.testing.assert_allclose(le, (la + lb) / 2, atol=1e-5)
    assert ens.attributes == ATTRS


def _prepared(model, crop: np.ndarray) -> np.ndarray:
    from PIL import Image

    from faceattr.data.transforms import prepare_image

    return prepare_image(Image.fromarray(crop), model.preprocess)


def test_checkpoint_describes_its_members_and_stores_only_their_weights(members: tuple[Path, Path], ensemble: Path) -> None:
    meta = read_metadata(ensemble)
    assert meta["model"]["name"] == "ensemble"
    assert [m["name"] for m in meta["model"]["members"]] == ["celeb_cnn", "mobilenet_v2"]
    assert meta["model"]["members"][1]["mean"] == [0.485, 0.456, 0.406]
    assert meta["preprocess"] == {"size": [64, 64], "crop": None, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    assert meta["thresholds"] is None and meta["config"] == SPLIT_CFG
    assert [s["checkpoint"] for s in meta["sources"]] == [str(m) for m in members]
    assert json.loads(ensemble.with_suffix(".json").read_text()) == meta
    with safe_open(str(ensemble), framework="pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith(("model.members.0.", "model.members.1.")) for k in keys)
    model, _ = load_checkpoint(ensemble)
    assert len(model.members) == 2 and not model.training


def test_onnx_export_matches_torch(ensemble: Path, crops: np.ndarray) -> None:
    path, diff = export(ensemble, ensemble.with_suffix(".onnx"))
    assert diff < 1e-4
    pt = load(ensemble, backend="torch").predict_aligned(crops)  # an export beside it makes 'auto' pick ONNX
    ox = load(ensemble, backend="onnx").predict_aligned(crops)
    assert pt.std() > 0.1 and np.abs(pt - ox).max() < 1e-4


def test_weighted_outputs_take_their_members_shares_on_real_faces(members: tuple[Path, Path], crops: np.ndarray,
                                                                 tmp_path: Path) -> None:
    out = make_ensemble(list(members), tmp_path / "w.safetensors", output_weights={"Male": [0.0, 2.0], "Young": [3, 1]})
    ens, a, b = load(out, backend="torch"), *(load(m, backend="torch") for m in members)
    la, lb = (m.backend.logits(np.stack([_prepared(m, c) for c in crops])) for m in (a, b))
    le = ens.backend.logits(np.stack([_prepared(ens, c) for c in crops]))
    male, young = ATTRS.index("Male"), ATTRS.index("Young")
    np.testing.assert_allclose(le[:, male], lb[:, male], atol=1e-5)  # weights 0 and 2: the second member alone
    np.testing.assert_allclose(le[:, young], 0.75 * la[:, young] + 0.25 * lb[:, young], atol=1e-5)
    rest = [i for i in range(len(ATTRS)) if i not in (male, young)]
    np.testing.assert_allclose(le[:, rest], (la[:, rest] + lb[:, rest]) / 2, atol=1e-5)
    assert read_metadata(out)["model"]["output_weights"][1][male] == 1.0
    # The weights live in the metadata and the exported graph, not only in this process.
    _, diff = export(out, tmp_path / "w.onnx")
    assert diff < 1e-4
    np.testing.assert_allclose(load(out, backend="onnx").predict_aligned(crops), ens.predict_aligned(crops), atol=1e-4)


def test_members_with_their_own_view_of_the_face_see_what_they_saw_in_training(tmp_path: Path, crops: np.ndarray) -> None:
    from faceattr.train.ensemble import split_ensemble

    whole = build_checkpoint(tmp_path / "whole.safetensors", "mobilenet_v2", num_outputs=5, size=(80, 64),
                             attributes=ATTRS, config=SPLIT_CFG)
    face = build_checkpoint(tmp_path / "face.safetensors", "celeb_cnn", num_outputs=5, seed=1, size=(56, 56),
                            attributes=ATTRS, config=SPLIT_CFG, crop=(41, 84, 141, 184))
    out = make_ensemble([whole, face], tmp_path / "views.safetensors")
    meta = read_metadata(out)
    assert meta["preprocess"]["size"] == [218, 178] and meta["preprocess"]["crop"] is None  # the full frame
    assert [m["view"] for m in meta["model"]["members"]] == [{"size": [80, 64], "crop": None},
                                                             {"size": [56, 56], "crop": [41, 84, 141, 184]}]
    ens, a, b = (load(p, backend="torch") for p in (out, whole, face))
    la, lb = (m.backend.logits(np.stack([_prepared(m, c) for c in crops])) for m in (a, b))
    le = ens.backend.logits(np.stack([_prepared(ens, c) for c in crops]))
    # Pillow's filter, applied in the graph to the full frame: the same pixels up to uint8 rounding.
    assert np.abs(la - lb).mean() > 0.1
    np.testing.assert_allclose(le, (la + lb) / 2, atol=0.02 * np.abs(la + lb).max())
    _, diff = export(out, tmp_path / "views.onnx")
    assert diff < 1e-4
    # Split again, each member is itself once more: its own size and crop.
    parts = split_ensemble(out, tmp_path / "split")
    assert read_metadata(parts[1])["preprocess"]["crop"] == [41, 84, 141, 184]
    np.testing.assert_allclose(load(parts[1], backend="torch").backend.logits(np.stack([_prepared(b, c) for c in crops])),
                               lb, atol=1e-5)


def test_weights_name_real_outputs_and_one_share_per_member(members: tuple[Path, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FaceattrError, match=r"did you mean Male\?"):
        make_ensemble(list(members), tmp_path / "a.safetensors", output_weights={"Mal": [1, 1]})
    with pytest.raises(FaceattrError, match="2 non-negative weights"):
        make_ensemble(list(members), tmp_path / "b.safetensors", output_weights={"Male": [1, 1, 1]})
    with pytest.raises(FaceattrError, match="not all 0"):
        make_ensemble(list(members), tmp_path / "c.safetensors", output_weights={"Male": [0, 0]})
    with pytest.raises(FaceattrError, match=r"--weight \* needs 2"):  # "*" by its own name, not an output it expands to
        make_ensemble(list(members), tmp_path / "e.safetensors", output_weights={"*": [1, 1, 1], "Male": [1, 3]})
    assert not any(tmp_path.iterdir())
    out = tmp_path / "cli.safetensors"
    assert main(["-q", "ensemble", *map(str, members), "--out", str(out), "--weight", "Smiling=1,0"]) == 0
    assert read_metadata(out)["model"]["output_weights"][0][ATTRS.index("Smiling")] == 1.0
    capsys.readouterr()
    assert main(["-q", "ensemble", *map(str, members), "--out", str(tmp_path / "d.safetensors"), "--weight", "Smiling"]) == 2
    assert "OUTPUT=W1,W2" in capsys.readouterr().err


def test_star_weighs_every_output_not_named_on_its_own(members: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "star.safetensors"
    assert main(["-q", "ensemble", *map(str, members), "--out", str(out), "--weight", "*=1,0", "--weight", "Male=1,3"]) == 0
    first, second = read_metadata(out)["model"]["output_weights"]
    male = ATTRS.index("Male")
    assert (first[male], second[male]) == (0.25, 0.75)
    assert all((first[j], second[j]) == (1.0, 0.0) for j in range(len(ATTRS)) if j != male)


def test_evaluate_calibrates_an_ensemble_and_predict_uses_its_thresholds(ensemble: Path, celeba_root: Path,
                                                                          tmp_path: Path) -> None:
    from faceattr.evaluate import EvalConfig, evaluate_model

    ens = tmp_path / "ens.safetensors"
    ens.write_bytes(ensemble.read_bytes())
    ev = evaluate_model(EvalConfig(model=str(ens), data_root=str(celeba_root), split="valid", limit=64,
                                   calibrate="accuracy", calibrate_split="valid", progress=False, device="cpu"))
    assert ev.result["architecture"] == "ensemble" and ev.result["n_images"] == 64
    stored = read_metadata(ens)["thresholds"]
    assert stored is not None and len(stored) == len(ATTRS)
    assert load(ens).thresholds == pytest.approx(stored)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"attributes": ["Male", "Smiling"], "num_outputs": 2}, "same attributes"),
        ({"config": {"seed": 1, "data": SPLIT_CFG["data"]}}, "other's holdout"),
    ],
)
def test_refuses_members_that_do_not_fit_together(members: tuple[Path, Path], tmp_path: Path, change: dict, message: str) -> None:
    kw = {"num_outputs": 5, "size": (64, 64), "attributes": ATTRS, "config": SPLIT_CFG, **change}
    odd = build_checkpoint(tmp_path / "odd.safetensors", "celeb_cnn", **kw)
    with pytest.raises(FaceattrError, match=message):
        make_ensemble([members[0], odd], tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_refuses_bad_requests_and_never_overwrites(members: tuple[Path, Path], ensemble: Path, tmp_path: Path) -> None:
    with pytest.raises(FaceattrError, match="at least 2 checkpoints, or 1 with --mirror 1"):
        make_ensemble([members[0]], tmp_path / "one.safetensors")
    with pytest.raises(FaceattrError, match="already an ensemble"):
        make_ensemble([ensemble, members[0]], tmp_path / "nested.safetensors")
    with pytest.raises(FaceattrError, match="one of the members"):
        make_ensemble(list(members), members[0])
    with pytest.raises(FaceattrError, match="must end in .safetensors"):
        make_ensemble(list(members), tmp_path / "ens.pt")
    before = ensemble.read_bytes()
    with pytest.raises(FaceattrError, match="already exists"):
        make_ensemble(list(members), ensemble)
    assert ensemble.read_bytes() == before
    with pytest.raises(FaceattrError, match="checkpoint not found"):
        make_ensemble([members[0], tmp_path / "missing.safetensors"], tmp_path / "x.safetensors")


def test_cli_writes_an_ensemble_and_reports_errors_in_one_line(members: tuple[Path, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.safetensors"
    assert main(["-q", "ensemble", str(members[0]), str(members[1]), "--out", str(out)]) == 0
    assert "an ensemble of 2 models" in capsys.readouterr().out and read_metadata(out)["model"]["name"] == "ensemble"
    assert main(["-q", "ensemble", str(members[0]), str(members[1]), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("faceattr: error:") and "--overwrite" in err and "\n" not in err
    assert main(["-q", "ensemble", str(members[0]), str(members[1]), "--out", str(out), "--overwrite", "--half"]) == 0
    assert out.stat().st_size < (members[0].stat().st_size + members[1].stat().st_size) * 0.6
    # --mirror counts members from 1, as listed; one past the end is a one-line error and writes nothing.
    assert main(["-q", "ensemble", str(members[0]), str(members[1]), "--out", str(tmp_path / "m.safetensors"), "--mirror", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--mirror 3 names no member" in err and "\n" not in err and not (tmp_path / "m.safetensors").exists()
    assert main(["-q", "ensemble", str(members[0]), str(members[1]), "--out", str(tmp_path / "m.safetensors"), "--mirror", "2"]) == 0
    assert [m["view"].get("mirror", False) for m in read_metadata(tmp_path / "m.safetensors")["model"]["members"]] == [False, True]


def test_interpolation_lies_on_the_line_between_a_model_and_its_copy(members: tuple[Path, Path],
                                                                    tmp_path: Path) -> None:
    from faceattr.train import interpolate_checkpoints

    a = members[0]
    b = build_checkpoint(tmp_path / "b.safetensors", "celeb_cnn", num_outputs=5, seed=3, size=(64, 64),
                         attributes=ATTRS, config=SPLIT_CFG)
    (ma, _), (mb, _) = load_checkpoint(a), load_checkpoint(b)
    sa, sb = ma.state_dict(), mb.state_dict()
    for alpha in (0.0, 0.25, 1.0):
        out = interpolate_checkpoints(a, b, tmp_path / f"mix{alpha}.safetensors", alpha=alpha)
        mixed, meta = load_checkpoint(out)
        for k, v in mixed.state_dict().items():
            if v.is_floating_point():
                assert torch.allclose(v, (1 - alpha) * sa[k] + alpha * sb[k], atol=1e-6), k
        assert meta["interpolated"]["alpha"] == alpha and meta["attributes"] == ATTRS
    # The ends are the models themselves, so their predictions are too.
    x = torch.rand(2, 3, 64, 64)
    end, _ = load_checkpoint(tmp_path / "mix1.0.safetensors")
    with torch.no_grad():
        assert torch.allclose(end(x), mb(x), atol=1e-5)


def test_interpolation_with_a_fine_tune_that_grew_an_age_output(members: tuple[Path, Path], tmp_path: Path) -> None:
    # Attribute rows and the backbone mix; the age row is the fine-tune's own at every alpha.
    from faceattr.train import interpolate_checkpoints

    a = members[0]
    b = build_checkpoint(tmp_path / "b.safetensors", "celeb_cnn", num_outputs=5, seed=3, size=(64, 64),
                         attributes=ATTRS, config=SPLIT_CFG, age=True)
    (ma, _), (mb, _) = load_checkpoint(a), load_checkpoint(b)
    sa, sb = ma.state_dict(), mb.state_dict()
    out = interpolate_checkpoints(a, b, tmp_path / "mix.safetensors", alpha=0.25)
    mixed, meta = load_checkpoint(out)
    assert meta["age"] == {"mean": 35.0, "std": 20.0} and meta["model"]["kwargs"]["num_outputs"] == 6
    for k, v in mixed.state_dict().items():
        if not v.is_floating_point():
            continue
        if v.shape != sa[k].shape:  # the head: 5 attribute rows, then age
            assert torch.allclose(v[:5], 0.75 * sa[k] + 0.25 * sb[k][:5], atol=1e-6), k
            assert torch.allclose(v[5:], sb[k][5:], atol=1e-6), k
        else:
            assert torch.allclose(v, 0.75 * sa[k] + 0.25 * sb[k], atol=1e-6), k
    with pytest.raises(FaceattrError, match="put the model with the age output second"):
        interpolate_checkpoints(b, a, tmp_path / "x.safetensors")


def test_interpolation_refuses_different_networks_attributes_or_splits(members: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    from faceattr.train import interpolate_checkpoints

    a, other_arch = members
    with pytest.raises(FaceattrError, match="different networks"):
        interpolate_checkpoints(a, other_arch, tmp_path / "x.safetensors")
    fewer = build_checkpoint(tmp_path / "f.safetensors", "celeb_cnn", num_outputs=4, size=(64, 64),
                             attributes=ATTRS[:4], config=SPLIT_CFG)
    with pytest.raises(FaceattrError, match="different networks or predict different attributes"):
        interpolate_checkpoints(a, fewer, tmp_path / "x.safetensors")
    split = build_checkpoint(tmp_path / "s.safetensors", "celeb_cnn", num_outputs=5, size=(64, 64),
                             attributes=ATTRS, config={**SPLIT_CFG, "seed": 1})
    with pytest.raises(FaceattrError, match="different data splits"):
        interpolate_checkpoints(a, split, tmp_path / "x.safetensors")
    with pytest.raises(FaceattrError, match="alpha"):
        interpolate_checkpoints(a, a, tmp_path / "x.safetensors", alpha=1.5)
    with pytest.raises(FaceattrError, match="one of the checkpoints"):
        interpolate_checkpoints(a, a, a)
    assert not (tmp_path / "x.safetensors").exists()


def test_split_ensemble_gives_members_whose_mean_is_the_ensemble(tmp_path: Path) -> None:
    # The shipped default is an ensemble; its members, split out in float32, average back to it.
    from faceattr.checkpoint import resolve_checkpoint
    from faceattr.train.ensemble import split_ensemble

    paths = split_ensemble("default", tmp_path / "members")
    ens, meta = load_checkpoint(resolve_checkpoint("default"))
    assert [p.parent.name for p in paths] == [f"member{i}" for i in range(len(meta["model"]["members"]))]
    x = torch.rand(4, 3, *meta["preprocess"]["size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ens(x)
        got = []
        for spec, p in zip(meta["model"]["members"], paths, strict=True):
            m, mm = load_checkpoint(p)
            assert mm["model"]["name"] != "ensemble" and mm["attributes"] == meta["attributes"]
            assert mm.get("age") == meta.get("age")
            mean = torch.tensor(mm["preprocess"]["mean"]).view(1, 3, 1, 1)
            std = torch.tensor(mm["preprocess"]["std"]).view(1, 3, 1, 1)
            xi = x
            if any("view" in spec for spec in meta["model"]["members"]):
                # Members with their own view (size, crop) see that cut of the full frame, resized with
                # Pillow's bilinear weights: the full matrices here, not the ensemble's shared, banded ones.
                from faceattr.models.ensemble import resize_matrix

                (hh, ww), (fh, fw) = mm["preprocess"]["size"], meta["preprocess"]["size"]
                x0, y0, x1, y1 = mm["preprocess"]["crop"] or (0, 0, fw, fh)
                xi = resize_matrix(fh, hh, y0, y1) @ x @ resize_matrix(fw, ww, x0, x1).T
            out = m((xi - mean) / std)
            if spec.get("view", {}).get("mirror"):
                # A mirrored member (the shipped face member) averages its view and the view's mirror image.
                out = (out + m((xi.flip(-1) - mean) / std)) / 2
            got.append(out)
    # Per-output weights (the shipped default reads age mostly from one member), else the plain mean.
    n_out = want.shape[1]
    weights = torch.tensor(meta["model"].get("output_weights") or [[1 / len(paths)] * n_out] * len(paths))
    torch.testing.assert_close((torch.stack(got) * weights[:, None, :]).sum(0), want, rtol=0, atol=1e-3)
    assert read_metadata(paths[1])["split_from"]["member"] == 1
    with pytest.raises(FaceattrError, match="not an ensemble"):
        split_ensemble(paths[0], tmp_path / "again")


def test_views_are_shared_between_members_and_cut_to_the_band_they_read() -> None:
    import torch

    from faceattr.models.ensemble import FULL_FRAME, EnsembleNet, resize_matrix

    class Probe(torch.nn.Module):  # returns its input, flattened: what the member was shown
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)

    views = [{"size": [40, 32], "crop": None}, {"size": [24, 24], "crop": [41, 84, 141, 184]},
             {"size": [40, 32], "crop": None}]
    net = EnsembleNet([Probe(), Probe(), Probe()], [[0.0] * 3] * 3, [[1.0] * 3] * 3, views=views)
    assert net.view_of == [0, 1, 0] and len(net._bands) == 2  # two members, one resize
    ya, yb, xa, xb = net._bands[1]
    assert 80 <= ya <= 84 and 184 <= yb <= 188 and 37 <= xa <= 41 and 141 <= xb <= 145  # the crop and its filter's reach
    x = torch.rand(2, 3, *FULL_FRAME, generator=torch.Generator().manual_seed(0))
    h, w = FULL_FRAME
    for i, view in enumerate(views):
        x0, y0, x1, y1 = view["crop"] or (0, 0, w, h)
        full = resize_matrix(h, view["size"][0], y0, y1) @ x @ resize_matrix(w, view["size"][1], x0, x1).T
        single = EnsembleNet([Probe(), Probe()], [[0.0] * 3] * 2, [[1.0] * 3] * 2, views=[view, view])
        torch.testing.assert_close(single(x), full.flatten(1), atol=1e-5, rtol=1e-5)


def test_a_mirrored_member_averages_its_view_and_the_mirror_image() -> None:
    import torch

    from faceattr.models.ensemble import FULL_FRAME, EnsembleNet

    torch.manual_seed(0)
    # A member that is not left-right symmetric, so mirroring changes its answer.
    member = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 24 * 24, 4))
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 24 * 24, 4))
    face = {"size": [24, 24], "crop": [41, 84, 141, 184]}
    plain = EnsembleNet([member, other], [[0.0] * 3] * 2, [[1.0] * 3] * 2, views=[face, face])
    mirrored = EnsembleNet([member, other], [[0.0] * 3] * 2, [[1.0] * 3] * 2, views=[{**face, "mirror": True}, face])
    x = torch.rand(3, 3, *FULL_FRAME)
    with torch.no_grad():
        seen = torch.matmul(torch.matmul(plain.wy_0, x[:, :, slice(*plain._bands[0][:2]), slice(*plain._bands[0][2:])]), plain.wx_0)
        want = ((member(seen) + member(seen.flip(-1))) / 2 + other(seen)) / 2
        torch.testing.assert_close(mirrored(x), want, atol=1e-5, rtol=1e-5)
        assert (mirrored(x) - plain(x)).abs().max() > 1e-3


def test_make_ensemble_mirror_is_saved_exported_and_checked(tmp_path: Path, crops: np.ndarray) -> None:
    from faceattr.train.ensemble import split_ensemble

    whole = build_checkpoint(tmp_path / "whole.safetensors", "mobilenet_v2", num_outputs=5, size=(80, 64),
                             attributes=ATTRS, config=SPLIT_CFG)
    face = build_checkpoint(tmp_path / "face.safetensors", "celeb_cnn", num_outputs=5, seed=1, size=(56, 56),
                            attributes=ATTRS, config=SPLIT_CFG, crop=(41, 84, 141, 184))
    with pytest.raises(FaceattrError, match="--mirror 3 names no member"):
        make_ensemble([whole, face], tmp_path / "bad.safetensors", mirror=[2])
    out = make_ensemble([whole, face], tmp_path / "m.safetensors", mirror=[1])
    assert [m["view"].get("mirror", False) for m in read_metadata(out)["model"]["members"]] == [False, True]
    ens, a, b = (load(p, backend="torch") for p in (out, whole, face))
    le = ens.backend.logits(np.stack([_prepared(ens, c) for c in crops]))
    la = a.backend.logits(np.stack([_prepared(a, c) for c in crops]))
    views = np.stack([_prepared(b, c) for c in crops])
    lb, lbm = b.backend.logits(views), b.backend.logits(np.ascontiguousarray(views[:, :, ::-1]))  # [N, H, W, 3]: mirrored
    assert np.abs(lb - lbm).mean() > 0.01  # mirroring changes this member's answer, so the check below can fail
    np.testing.assert_allclose(le, (la + (lb + lbm) / 2) / 2, atol=0.02 * np.abs(la + lb).max())
    _, diff = export(out, tmp_path / "m.onnx")
    assert diff < 1e-4
    # Split again, the member is plain: mirroring is the ensemble's test-time choice, not its preprocessing.
    assert "mirror" not in read_metadata(split_ensemble(out, tmp_path / "split")[1])["preprocess"]


def test_one_mirrored_checkpoint_is_a_network_with_its_test_time_flip(tmp_path: Path, crops: np.ndarray) -> None:
    # How the shipped 'fast' model is built: the face member alone, mirrored, as one graph on the full frame.
    face = build_checkpoint(tmp_path / "face.safetensors", "celeb_cnn", num_outputs=5, seed=1, size=(56, 56),
                            attributes=ATTRS, config=SPLIT_CFG, crop=(41, 84, 141, 184))
    out = make_ensemble([face], tmp_path / "one.safetensors", mirror=[0])
    spec = read_metadata(out)["model"]
    assert len(spec["members"]) == 1 and spec["members"][0]["view"]["mirror"] is True
    one, b = load(out, backend="torch"), load(face, backend="torch")
    views = np.stack([_prepared(b, c) for c in crops])
    lb, lbm = b.backend.logits(views), b.backend.logits(np.ascontiguousarray(views[:, :, ::-1]))
    assert np.abs(lb - lbm).mean() > 0.01  # mirroring changes the answer, so the check below can fail
    le = one.backend.logits(np.stack([_prepared(one, c) for c in crops]))
    np.testing.assert_allclose(le, (lb + lbm) / 2, atol=0.02 * np.abs(lb).max())
    _, diff = export(out, tmp_path / "one.onnx")
    assert diff < 1e-4
    with pytest.raises(FaceattrError, match="at least 2 members .or 1 with a mirrored view"):
        from faceattr.models.ensemble import EnsembleNet

        EnsembleNet([object()], [[0.0] * 3], [[1.0] * 3], views=[{"size": [56, 56], "crop": None}])
