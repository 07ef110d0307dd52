"""Checkpoints that are tampered with, foreign, truncated or written onto a full disk (issue 17).

tests/test_checkpoint.py covers the plain torn file and a safetensors without our metadata; this file
adds what an attacker or a failing disk produces: a pickle renamed .safetensors (whose payload must
never run), a damaged header, metadata that lies about the architecture or its shapes, and ENOSPC.
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from safetensors.torch import save as st_save

from faceattr.checkpoint import load_checkpoint, read_metadata, save_checkpoint, update_metadata
from faceattr.errors import FaceattrError
from faceattr.models import create_model

META = {"model": {"name": "celeb_cnn", "kwargs": {"num_outputs": 3, "hidden": 0, "dropout": 0.0}},
        "attributes": ["Male", "Smiling", "Young"], "output": "sigmoid",
        "preprocess": {"size": [64, 64], "crop": None, "mean": [0.5] * 3, "std": [0.5] * 3}, "thresholds": None}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "good.safetensors", create_model("celeb_cnn", num_outputs=3), META)


def _refused(path: Path, *needles: str) -> str:
    """Both loaders refuse `path` with one FaceattrError line holding every needle."""
    from faceattr.infer import load

    messages = []
    for loader in (load_checkpoint, lambda p: load(p, backend="torch")):
        with pytest.raises(FaceattrError) as info:
            loader(path)
        msg = str(info.value)
        assert "\n" not in msg and all(n in msg for n in needles), msg
        messages.append(msg)
    return messages[0]


class _Payload:
    """Unpickling this creates the file named `marker`: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_pickle_renamed_safetensors_is_refused_and_never_unpickled(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "model.safetensors"
    if kind == "pickle":
        evil.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    else:  # the zip format of `torch.save`, as a pytorch_model.bin renamed by hand
        torch.save({"model": _Payload(marker), "w": torch.zeros(2)}, evil)
    pickle.loads(pickle.dumps(_Payload(marker)))  # the payload does work when unpickled...
    assert marker.exists()
    marker.unlink()
    _refused(evil, "not a readable faceattr checkpoint")
    with pytest.raises(FaceattrError):
        read_metadata(evil)
    assert not marker.exists()  # ...and faceattr never unpickled it


def _with_header(good: Path, out: Path, edit: Any) -> Path:
    """Rewrite the safetensors header (8-byte length, then JSON) of `good` through `edit(length, json) -> (length, json)`."""
    data = good.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    length, header = edit(n, data[8 : 8 + n])
    out.write_bytes(struct.pack("<Q", length) + header + data[8 + n :])
    return out


@pytest.mark.parametrize(
    ("name", "edit"),
    [
        ("not-json", lambda n, h: (n, b"[" + h[1:])),
        ("length-beyond-file", lambda n, h: (2**40, h)),
        ("length-zero", lambda n, h: (0, h)),
        ("offsets-past-the-end", lambda n, h: (n, h.replace(b'"data_offsets":[0,', b'"data_offsets":[9,', 1))),
        ("dtype-unknown", lambda n, h: (n, h.replace(b'"dtype":"F32"', b'"dtype":"Q99"', 1))),
    ],
)
def test_a_damaged_header_is_refused(good: Path, tmp_path: Path, name: str, edit: Any) -> None:
    assert b'"data_offsets":[0,' in good.read_bytes()[:2000] and b'"dtype":"F32"' in good.read_bytes()[:2000]
    _refused(_with_header(good, tmp_path / f"{name}.safetensors", edit), "not a readable faceattr checkpoint")


@pytest.mark.parametrize("keep", [0, 7, 8, 100, 0.5, -1])
def test_truncated_anywhere_is_refused(good: Path, tmp_path: Path, keep: float) -> None:
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    _refused(cut, "not a readable faceattr checkpoint")


def _tampered(good: Path, out: Path, meta_edit: Any = None, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """`good` with its metadata passed through `meta_edit(meta) -> meta` and/or other tensors."""
    meta = read_metadata(good)
    meta = meta_edit(json.loads(json.dumps(meta))) if meta_edit else meta
    out.write_bytes(st_save(tensors if tensors is not None else load_file(str(good)), metadata={"faceattr": json.dumps(meta)}))
    return out


def _set(path: str, value: Any) -> Any:
    def edit(meta: dict) -> dict:
        node = meta
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
        return meta

    return edit


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda m: [m], "JSON list, not an object"),
        (_set("format_version", "1"), "format_version is '1'"),
        (_set("model", "celeb_cnn"), "names no model"),
        (_set("model.kwargs", [3]), "no kwargs"),
        (_set("model.kwargs.evil", 1), "unexpected keyword argument 'evil'"),
        (_set("model.name", "resnet18"), "weights do not fit resnet18: tensor"),  # another architecture
        (_set("model.kwargs.num_outputs", 5), "has shape [3, 512], the model expects [5, 512]"),
        (_set("model.kwargs.hidden", 10**9), "weights do not fit celeb_cnn"),  # refused before allocating it
        (_set("attributes", "Male"), "attributes must be a non-empty list"),
        (_set("preprocess.size", [10**6, 10**6]), "above 2048 px"),
        (_set("preprocess.std", [0, 1, 1]), "std must be positive"),
        (_set("thresholds", [0.5, float("nan"), 0.5]), "thresholds must be one probability"),
        (_set("output", "relu"), "output is 'relu'"),
        (_set("age", {"mean": "old"}), "age must give a numeric mean"),
    ],
)
def test_metadata_that_lies_is_refused_before_any_weights_load(good: Path, tmp_path: Path, edit: Any, needle: str) -> None:
    _refused(_tampered(good, tmp_path / "lying.safetensors", edit), needle)


def test_tensors_that_do_not_fit_the_metadata_are_refused(good: Path, tmp_path: Path) -> None:
    tensors = load_file(str(good))
    name = "model.head.1.weight"
    assert name in tensors
    wrong = {**tensors, name: torch.zeros(7, 7)}
    _refused(_tampered(good, tmp_path / "shape.safetensors", tensors=wrong), f"tensor {name[6:]} has shape [7, 7]")
    missing = {k: v for k, v in tensors.items() if k != name}
    _refused(_tampered(good, tmp_path / "missing.safetensors", tensors=missing), "1 tensor(s) missing")
    extra = {**tensors, "model.backdoor": torch.zeros(1)}
    _refused(_tampered(good, tmp_path / "extra.safetensors", tensors=extra), "unexpected tensor backdoor")


# ---- a full disk -------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [0, 4096, 10**9])
def test_disk_full_while_saving_leaves_the_previous_checkpoint_whole(good: Path, tmp_path: Path, disk_full: Any,
                                                                    budget: int) -> None:
    path = tmp_path / "run" / "best.safetensors"
    path.parent.mkdir()
    path.write_bytes(good.read_bytes())
    path.with_suffix(".json").write_bytes(good.with_suffix(".json").read_bytes())
    before = {p.name: p.read_bytes() for p in path.parent.iterdir()}
    torch.manual_seed(1)
    newer = create_model("celeb_cnn", num_outputs=3)
    # budget 0: nothing fits; 4096: a short write mid-file; 1e9: every write fits but the rename fails.
    disk_full(path.parent, budget=budget, rename=budget == 10**9)
    with pytest.raises(FaceattrError) as info:
        save_checkpoint(path, newer, META)
    msg = str(info.value)
    assert "\n" not in msg and "no space left on the disk; free some space" in msg and str(path.parent) in msg
    # The previous checkpoint and its JSON are byte for byte what they were, and nothing else is left.
    assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == before
    model, _ = load_checkpoint(path)
    ref, _ = load_checkpoint(good)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


def test_disk_full_while_updating_metadata_keeps_the_old_metadata(good: Path, tmp_path: Path, disk_full: Any) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(good.read_bytes())
    disk_full(tmp_path, budget=100)
    with pytest.raises(FaceattrError, match="no space left"):
        update_metadata(path, {"thresholds": [0.3, 0.4, 0.5]})
    assert read_metadata(path)["thresholds"] is None and sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
