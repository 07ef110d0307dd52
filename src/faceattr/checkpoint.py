"""Self-describing, safe checkpoints: safetensors weights with the metadata as JSON.

A checkpoint is one ``.safetensors`` file. Its header metadata holds a JSON document (schema below)
that is enough to rebuild the model and its preprocessing, so no pickle is ever loaded. The same
JSON is written beside it (``.json``) for people and tools that want to read it without torch.

Metadata schema (``format_version`` 1)::

    {"format": "faceattr-checkpoint", "format_version": 1,
     "model": {"name": str, "kwargs": {"num_outputs": int, "hidden": int, "dropout": float}},
              # or {"name": "ensemble", "members": [{"name", "kwargs", "mean", "std"}, ...]}
              # (faceattr.models.ensemble; preprocess then leaves pixels in 0..1)
     "attributes": [str, ...],
     "output": "sigmoid" | "softmax",   # sigmoid: one logit per attribute;
                                        # softmax: one attribute, 2 logits, class 1 = present
     "preprocess": {"size": [h, w], "crop": [x0, y0, x1, y1] | null, "mean": [3], "std": [3]},
     "thresholds": [float, ...] | null, # per attribute; null means 0.5
     "config": {...} | null,            # the resolved TrainConfig
     "metrics": {...}, "epoch": int, "step": int,
     "versions": {"faceattr": str, "torch": str, "torchvision": str}, "created": str,
     "train_state": {...}}              # only in resumable 'last' checkpoints

Tensors are stored under ``model.<name>``; resumable checkpoints add ``optim.<i>.<key>``.
Writes go to a temp file that is then ``os.replace``d, so a kill mid-write never leaves a torn file.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceattr._atomic import atomic_output
from faceattr.errors import FaceattrError

if TYPE_CHECKING:  # torch is imported where it is used: the ONNX predict path reads this module without it
    import torch
    from torch import nn

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "save_checkpoint",
    "read_metadata",
    "load_checkpoint",
    "load_tensors",
    "update_metadata",
    "unwrap_model",
    "versions",
    "shipped_models_dir",
    "resolve_checkpoint",
    "file_sha256",
    "check_metadata",
    "metadata_problem",
]

logger = logging.getLogger(__name__)

FORMAT = "faceattr-checkpoint"
FORMAT_VERSION = 1
_META_KEY = "faceattr"


def versions() -> dict[str, str]:
    """Versions of the libraries that shape a checkpoint."""
    import torch
    import torchvision

    from faceattr import __version__

    return {"faceattr": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__}


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DataParallel/DDP (`.module`) and torch.compile (`._orig_mod`) wrappers before saving."""
    from torch import nn

    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def _write_pair(path: Path, blob: bytes, meta: dict[str, Any]) -> None:
    """Write the .safetensors and its .json atomically: both temp files first, so a full disk changes neither."""
    side = path.with_suffix(".json")
    # Exits run innermost first: the checkpoint itself is replaced before its JSON copy.
    with atomic_output(side, "checkpoint metadata") as tmp_side, atomic_output(path, "checkpoint") as tmp:
        tmp.write_bytes(blob)
        tmp_side.write_bytes(json.dumps(meta, indent=2).encode("utf-8"))


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    meta: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
    *,
    half: bool = False,
) -> Path:
    """Write weights (+ optional extra tensors) and metadata atomically; returns the path."""
    from safetensors.torch import save as st_save

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FaceattrError(f"cannot create the folder {path.parent} for checkpoint {path.name}: {e.strerror or e}") from None
    meta = dict(meta)
    meta.setdefault("format", FORMAT)
    meta.setdefault("format_version", FORMAT_VERSION)
    meta.setdefault("versions", versions())
    meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    tensors: dict[str, torch.Tensor] = {}
    for k, v in unwrap_model(model).state_dict().items():
        v = v.detach().cpu()
        if half and v.is_floating_point():
            v = v.half()
        tensors[f"model.{k}"] = v.contiguous()
    for k, v in (extra or {}).items():
        tensors[k] = v.detach().cpu().contiguous()
    blob = st_save(tensors, metadata={_META_KEY: json.dumps(meta)})
    _write_pair(path, blob, meta)
    return path


def _open_error(path: Path, why: str) -> FaceattrError:
    return FaceattrError(f"{path} is not a readable faceattr checkpoint ({why}); pass a .safetensors file written by `faceattr train`")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint's metadata without loading its tensors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FaceattrError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
    except Exception as e:  # safetensors raises several types for torn or foreign files
        raise _open_error(path, f"{type(e).__name__}: {e}") from None
    if raw is None:
        raise _open_error(path, "no faceattr metadata")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise _open_error(path, f"bad metadata JSON: {e}") from None
    return check_metadata(meta, path)


# Larger inputs than any registry model takes: a tampered size would otherwise allocate gigabytes per face.
_MAX_INPUT_SIDE = 2048


def check_metadata(meta: Any, path: str | Path) -> dict[str, Any]:
    """`meta` if it is well-formed checkpoint metadata (the fields loaders rely on), else a one-line error."""
    path = Path(path)
    why = metadata_problem(meta)
    if why is not None:
        raise _open_error(path, why)
    if meta["format_version"] > FORMAT_VERSION:
        raise FaceattrError(
            f"{path} uses checkpoint format {meta['format_version']}, newer than this faceattr reads "
            f"({FORMAT_VERSION}); upgrade faceattr"
        )
    return meta  # type: ignore[no-any-return]


def metadata_problem(meta: Any) -> str | None:
    """What makes `meta` unusable as faceattr model metadata (a checkpoint's or an ONNX export's), or None."""
    from faceattr.data.transforms import Preprocess  # numpy and Pillow only: the ONNX path stays torch-free

    if not isinstance(meta, dict):
        return f"the metadata is a JSON {type(meta).__name__}, not an object"
    if meta.get("format") != FORMAT:
        return f"format is {meta.get('format')!r}"
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        return f"format_version is {version!r}"
    spec = meta.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        return "the metadata names no model"
    if "members" not in spec and not isinstance(spec.get("kwargs"), dict):  # an ensemble lists members instead
        return f"the metadata gives model '{spec['name']}' no kwargs"
    attributes = meta.get("attributes")
    if not isinstance(attributes, list) or not attributes or not all(isinstance(a, str) and a for a in attributes):
        return "attributes must be a non-empty list of names"
    output = meta.get("output", "sigmoid")
    if output not in ("sigmoid", "softmax"):
        return f"output is {output!r}, not 'sigmoid' or 'softmax'"
    try:
        pre = Preprocess.from_dict(meta.get("preprocess"))  # type: ignore[arg-type]
    except FaceattrError as e:
        return str(e)
    if max(pre.size) > _MAX_INPUT_SIDE:
        return f"preprocess size {list(pre.size)} is above {_MAX_INPUT_SIDE} px"
    thresholds = meta.get("thresholds")
    if thresholds is not None and not (
        isinstance(thresholds, list)
        and len(thresholds) == len(attributes)
        and all(t is None or (_is_number(t) and 0.0 <= t <= 1.0) for t in thresholds)
    ):
        return f"thresholds must be one probability (or null) per attribute ({len(attributes)})"
    age = meta.get("age")
    if age and not (isinstance(age, dict) and _is_number(age.get("mean")) and _is_number(age.get("std"))):
        return "age must give a numeric mean and std"
    return None


def _is_number(v: Any) -> bool:
    """A finite JSON number (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def load_tensors(path: str | Path, prefix: str = "", device: str = "cpu") -> dict[str, torch.Tensor]:
    """Load the tensors whose names start with `prefix` (prefix stripped)."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        tensors = load_file(str(path), device=device)
    except Exception as e:
        raise _open_error(path, f"{type(e).__name__}: {e}") from None
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights; returns (model in eval mode, metadata)."""
    import torch

    from faceattr.models import create_model
    from faceattr.models.ensemble import ENSEMBLE, ensemble_from_spec

    meta = read_metadata(path)
    spec = meta["model"]

    def build() -> nn.Module:
        try:
            if spec["name"] == ENSEMBLE:
                return ensemble_from_spec(spec)
            return create_model(spec["name"], pretrained=False, **spec["kwargs"])
        except (TypeError, ValueError) as e:  # kwargs the builder does not take, values of the wrong type
            raise _open_error(Path(path), f"the metadata describes no buildable {spec['name']}: {e}") from None

    # First on the meta device (no memory, no init): a file whose tensors do not fit the metadata's model,
    # or metadata asking for a huge one, is refused before anything is allocated.
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    _check_shapes(Path(path), spec["name"], expected)
    model = build()
    state = load_tensors(path, "model.", device="cpu")
    ref = model.state_dict()
    # fp16-shipped weights load back into the model's own dtype.
    state = {k: v.to(ref[k].dtype) if k in ref else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise _open_error(Path(path), f"weights do not fit {spec['name']}: {str(e).splitlines()[0]}") from None
    model.to(device).eval()
    return model, meta


def _check_shapes(path: Path, name: str, expected: dict[str, tuple[int, ...]]) -> None:
    """Compare the file's `model.*` tensor shapes (read from its header) with what the model expects."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            found = {k[len("model.") :]: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith("model.")}
    except Exception as e:  # safetensors raises several types for torn or foreign files
        raise _open_error(path, f"{type(e).__name__}: {e}") from None
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = [k for k in expected if k in found and found[k] != expected[k]]
    if wrong:
        k = wrong[0]
        why = f"tensor {k} has shape {list(found[k])}, the model expects {list(expected[k])}"
    elif missing or extra:
        why = f"{len(missing)} tensor(s) missing (e.g. {missing[0]})" if missing else f"unexpected tensor {extra[0]}"
    else:
        return
    raise _open_error(path, f"weights do not fit {name}: {why}")


def update_metadata(path: str | Path, changes: dict[str, Any]) -> dict[str, Any]:
    """Merge `changes` into a checkpoint's metadata in place (atomically); returns the new metadata."""
    from safetensors.torch import save as st_save

    path = Path(path)
    meta = read_metadata(path)
    meta.update(changes)
    check_metadata(meta, path)
    tensors = load_tensors(path)
    _write_pair(path, st_save(tensors, metadata={_META_KEY: json.dumps(meta)}), meta)
    return meta


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes: the identity an ONNX export records of the checkpoint it came from."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shipped_models_dir() -> Path:
    """Folder inside the installed package that holds shipped models (`<name>.safetensors`)."""
    return Path(__file__).resolve().parent / "assets" / "models"


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """Turn a shipped model name ('default') or a path into a checkpoint path, with a clear error."""
    p = Path(name_or_path)
    if p.suffix == ".safetensors" or p.exists() or os.sep in str(name_or_path):
        if p.is_dir():
            for candidate in ("best.safetensors", "last.safetensors"):
                if (p / candidate).is_file():
                    return p / candidate
            raise FaceattrError(f"{p} holds no best.safetensors or last.safetensors; pass a checkpoint file or a run folder")
        if not p.is_file():
            raise FaceattrError(f"checkpoint not found: {p}")
        return p
    shipped = shipped_models_dir() / f"{name_or_path}.safetensors"
    if shipped.is_file():
        return shipped
    names = sorted(q.stem for q in shipped_models_dir().glob("*.safetensors"))
    from faceattr.errors import did_you_mean

    raise FaceattrError(
        f"no shipped model named '{name_or_path}'{did_you_mean(str(name_or_path), names)}; "
        f"shipped: {', '.join(names) or 'none in this build'}; or pass a checkpoint path"
    )
