"""Classifier backends: a torch module or an ONNX Runtime session behind one `logits(images)` call.

Both take the same input, aligned faces already resized by `prepare_image` (uint8 [N, H, W, 3]),
and return float32 logits [N, K]. The exported ONNX graph includes the normalisation, so its input is
the raw uint8 batch [N, 3, H, W] and the two backends cannot drift apart on mean/std.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from faceattr._atomic import atomic_output, write_error
from faceattr.errors import FaceattrError

__all__ = [
    "Backend",
    "TorchBackend",
    "OnnxBackend",
    "export_onnx",
    "ONNX_INPUT",
    "ONNX_OUTPUT",
    "DEFAULT_OPSET",
    "META_KEY",
    "SOURCE_SHA256_KEY",
    "CONTENT_SHA256_KEY",
    "content_sha256",
    "export_metadata",
    "rewrite_export_metadata",
]

logger = logging.getLogger(__name__)

ONNX_INPUT = "images"  # uint8 [N, 3, H, W], RGB, 0..255
ONNX_OUTPUT = "logits"  # float32 [N, K]
# Opset 17 is run by every onnxruntime release since 1.14 and covers all ops our models use.
DEFAULT_OPSET = 17
# Keys of the ONNX file's own metadata (metadata_props): the checkpoint's metadata JSON, so the file is
# self-describing and loads without torch or a sidecar, and the sha256 of the checkpoint it was
# exported from, so a stale export (the checkpoint changed since) is caught rather than used.
META_KEY = "faceattr"
SOURCE_SHA256_KEY = "faceattr_source_sha256"
# The sha256 of the file's own bytes outside its metadata (see `content_sha256`): a flipped byte in the
# weights still parses and runs, so without it a damaged export would predict garbage without a word.
# It detects damage, not a deliberate edit (whoever edits the graph can recompute it).
CONTENT_SHA256_KEY = "faceattr_content_sha256"
_METADATA_FIELD = 14  # ModelProto.metadata_props in onnx.proto


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a protobuf varint at `pos`; returns (value, position after it)."""
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or malformed varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _top_level_fields(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of every top-level field of a serialized protobuf message."""
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
        yield field, start, pos


def _payload(data: bytes, start: int, end: int) -> bytes:
    """The payload of the length-delimited field at data[start:end] (as `_top_level_fields` gives it)."""
    _, pos = _varint(data, start)  # the tag
    _, pos = _varint(data, pos)  # the length
    return data[pos:end]


def content_sha256(data: bytes) -> str:
    """sha256 of a serialized ONNX model's top-level fields except its metadata_props (where it is kept)."""
    h = hashlib.sha256()
    view = memoryview(data)
    for field, start, end in _top_level_fields(data):
        if field != _METADATA_FIELD:
            h.update(view[start:end])
    return h.hexdigest()


def _length_delimited(field: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (tag, varint length, payload)."""
    out = bytearray()
    for value in ((field << 3) | 2, len(payload)):
        while value >= 0x80:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out) + payload


def _metadata_entry(key: str, value: str) -> bytes:
    """A serialized metadata_props entry; appending it to a model file adds it (protobuf merges repeated fields)."""
    entry = _length_delimited(1, key.encode("utf-8")) + _length_delimited(2, value.encode("utf-8"))
    return _length_delimited(_METADATA_FIELD, entry)


class Backend(Protocol):
    """What AttributeModel needs from a classifier."""

    name: str

    def logits(self, images: np.ndarray, *, batch_size: int = 64, flip: bool = False) -> np.ndarray:
        """uint8 [N, H, W, 3] (already resized) -> float32 logits [N, K]."""
        ...


class TorchBackend:
    """Runs a torch module through `faceattr.runtime.predict_logits`."""

    name = "torch"

    def __init__(self, model: Any, preprocess: Any, device: Any) -> None:
        """`model` is an nn.Module in eval mode, `preprocess` a Preprocess, `device` a torch.device."""
        self.model = model
        self.preprocess = preprocess
        self.device = device

    def logits(self, images: np.ndarray, *, batch_size: int = 64, flip: bool = False) -> np.ndarray:
        """uint8 [N, H, W, 3] -> float32 logits [N, K]."""
        from faceattr.data.transforms import normalize_batch
        from faceattr.runtime import predict_logits

        pre = self.preprocess
        return predict_logits(
            self.model,
            images,
            lambda x: normalize_batch(x, pre),
            batch_size=batch_size,
            device=self.device,
            flip=flip,
        )


class OnnxBackend:
    """Runs an exported graph (see `export_onnx`) with ONNX Runtime."""

    name = "onnx"

    def __init__(self, path: str | Path, device: str = "cpu", *, threads: int = 0, spin: bool = True) -> None:
        """Open `path` on the CPU (or CUDA when asked for and onnxruntime-gpu is installed);
        `threads` > 0 caps ONNX Runtime's intra-op threads (0: its default, one per core); `spin`: see `set_threads`."""
        import onnxruntime as ort

        self.path = Path(path)
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise FaceattrError(
                    f"device '{device}' asked for with --backend onnx, but this onnxruntime has no CUDA "
                    "provider; use --device cpu or install onnxruntime-gpu"
                )
            providers.insert(0, "CUDAExecutionProvider")
        self.providers = providers
        self.threads = threads
        self.spin = spin
        self.session = self._open(threads, spin)
        # Sessions already opened, by (threads, spin): `predict_many` turns spinning off for its run and back
        # on after it, and a model loaded for single photos (spin on) would otherwise pay a new session twice
        # per call. At most two are kept (the current one and the one before it).
        self._sessions: dict[tuple[int, bool], Any] = {(threads, spin): self.session}
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != ONNX_INPUT:
            raise FaceattrError(
                f"{self.path}: expected one input named '{ONNX_INPUT}' (a file written by `faceattr export`), "
                f"got {[i.name for i in inputs]}"
            )
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        recorded = self.metadata.get(CONTENT_SHA256_KEY)
        if recorded is not None:  # exports from before the digest carry none; they are taken as they are
            try:
                actual = content_sha256(self.path.read_bytes())
            except (OSError, ValueError) as e:
                raise FaceattrError(f"{self.path}: cannot check the file ({e})") from None
            if actual != recorded:
                raise FaceattrError(
                    f"{self.path} was changed or damaged after `faceattr export` wrote it (its content digest "
                    "differs); export it again"
                )

    def check_fits(self, size: tuple[int, int]) -> None:
        """Raise unless the graph takes uint8 [N, 3, H, W] at `size` (H, W) and returns the logits output."""
        inp = self.session.get_inputs()[0]
        shape = list(inp.shape)
        h, w = size
        if inp.type != "tensor(uint8)" or len(shape) != 4 or shape[1:] != [3, h, w]:
            raise FaceattrError(
                f"{self.path}: the graph takes {inp.type} {shape}, but its metadata says uint8 [N, 3, {h}, {w}]; "
                "the file does not belong to this metadata, export it again"
            )
        outputs = [o.name for o in self.session.get_outputs()]
        if ONNX_OUTPUT not in outputs:
            raise FaceattrError(f"{self.path}: no output named '{ONNX_OUTPUT}' (got {outputs}); export it again")

    def _open(self, threads: int, spin: bool) -> Any:
        """A new ONNX Runtime session on `self.path` with `threads` intra-op threads (0: ORT's default), spinning or not."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: ORT's warnings are about its own graph rewrites
        # ORT's pool threads spin (busy-wait) between the operators of a run by default. For one face at
        # a time that is what keeps a run short (the shipped default: 9.6 ms at batch 1 with spinning,
        # 15.8 without, on the 2-core machine), but it doubles the CPU time per face (28.7 ms against
        # 14.8) and takes the core that `predict_many` decodes and detects on while the classifier
        # runs, so that pipeline and index workers turn it off (`set_threads(..., spin=False)`). The
        # logits are the same either way.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        if threads > 0:
            opts.intra_op_num_threads = threads
        try:
            return ort.InferenceSession(str(self.path), sess_options=opts, providers=self.providers)
        except Exception as e:
            raise FaceattrError(f"{self.path}: not a loadable ONNX model ({str(e).splitlines()[0]})") from None

    def set_threads(self, threads: int, *, spin: bool | None = None) -> None:
        """Run on a session with `threads` intra-op threads (0: ORT's default), e.g. one share of the cores per
        worker, and with its threads spinning between operators or not (None: as before); opened unless kept."""
        # ORT fixes its thread pool when a session is created and ignores OMP_NUM_THREADS, so capping
        # it means a new session (tens of ms for our models).
        spin = self.spin if spin is None else spin
        if threads != self.threads or spin != self.spin:
            key = (threads, spin)
            if key not in self._sessions:
                self._sessions = {(self.threads, self.spin): self.session, key: self._open(threads, spin)}
            self.spin, self.threads = spin, threads
            self.session = self._sessions[key]

    def logits(self, images: np.ndarray, *, batch_size: int = 64, flip: bool = False) -> np.ndarray:
        """uint8 [N, H, W, 3] -> float32 logits [N, K]."""
        out: list[np.ndarray] = []
        for start in range(0, len(images), batch_size):
            x = np.ascontiguousarray(images[start : start + batch_size].transpose(0, 3, 1, 2))
            logits = self.session.run([ONNX_OUTPUT], {ONNX_INPUT: x})[0]
            if flip:  # same test-time augmentation as runtime.predict_logits: mean of the two logits
                mirrored = np.ascontiguousarray(x[..., ::-1])
                logits = (logits + self.session.run([ONNX_OUTPUT], {ONNX_INPUT: mirrored})[0]) / 2
            out.append(np.asarray(logits, dtype=np.float32))
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(out)


def onnx_backend(model: object) -> Any:
    """The model's ONNX Runtime backend (the one with `set_threads`, e.g. to stop its threads spinning),
    or None for a torch model or any other predictor."""
    backend = getattr(model, "backend", None)
    return backend if hasattr(backend, "set_threads") else None


def _wrapper(model: Any, preprocess: Any) -> Any:
    """nn.Module taking uint8 [N, 3, H, W] and returning logits: normalisation baked into the graph."""
    import torch

    from faceattr.data.transforms import normalize_batch

    class _WithNormalize(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(normalize_batch(x, preprocess))

    return _WithNormalize().eval()


def export_metadata(data: bytes) -> dict[str, str]:
    """The metadata_props (key -> value) of a serialized ONNX model, read without onnx or onnxruntime."""
    props: dict[str, str] = {}
    for field, start, end in _top_level_fields(data):
        if field != _METADATA_FIELD:
            continue
        entry = _payload(data, start, end)  # a StringStringEntryProto: key = field 1, value = field 2
        kv = {sub: _payload(entry, s0, s1).decode("utf-8") for sub, s0, s1 in _top_level_fields(entry)}
        if 1 in kv:
            props[kv[1]] = kv.get(2, "")  # protobuf: a repeated key's last entry wins, as ONNX Runtime reads it
    return props


def rewrite_export_metadata(path: str | Path, meta: dict[str, Any], source_sha256: str) -> Path:
    """Put a checkpoint's new metadata and sha256 into its export in place (atomically), graph bytes untouched.

    For metadata-only changes to a checkpoint (calibrated thresholds, an age calibration): the export
    stays the checkpoint's, so ONNX Runtime keeps running it instead of it turning stale. A file whose
    content digest does not match (damaged, or edited since `faceattr export`) is refused.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        old = export_metadata(data)
        digest = content_sha256(data)
    except (OSError, ValueError) as e:
        raise FaceattrError(f"{path}: cannot read the export ({e}); export it again") from None
    if old.get(CONTENT_SHA256_KEY) not in (None, digest):
        raise FaceattrError(f"{path} was changed or damaged after `faceattr export` wrote it; export it again")
    side = dict(meta)
    try:
        onnx_block = json.loads(old.get(META_KEY, "{}")).get("onnx")
    except (ValueError, AttributeError):
        onnx_block = None
    if isinstance(onnx_block, dict):
        side["onnx"] = {**onnx_block, "source_sha256": source_sha256}
    body = b"".join(
        bytes(memoryview(data)[start:end]) for field, start, end in _top_level_fields(data) if field != _METADATA_FIELD
    )
    kept = {k: v for k, v in old.items() if k not in (META_KEY, SOURCE_SHA256_KEY, CONTENT_SHA256_KEY)}
    props = {**kept, META_KEY: json.dumps(side), SOURCE_SHA256_KEY: source_sha256, CONTENT_SHA256_KEY: digest}
    with atomic_output(path, "ONNX export") as tmp:
        tmp.write_bytes(body + b"".join(_metadata_entry(k, v) for k, v in props.items()))
    return path


def _store_half(proto: Any) -> int:
    """Replace each float32 initializer that fp16 represents exactly by an fp16 one plus a Cast back; returns how many."""
    from onnx import TensorProto, helper, numpy_helper

    kept, casts, n = [], [], 0
    for init in proto.graph.initializer:
        a = numpy_helper.to_array(init)
        # Tiny tensors (shapes, scalars) are not worth a node each.
        if a.dtype == np.float32 and a.size > 16 and np.array_equal(a.astype(np.float16).astype(np.float32), a):
            half = numpy_helper.from_array(a.astype(np.float16), f"{init.name}__fp16")
            kept.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                          name=f"{init.name}__to_fp32"))
            n += 1
        else:
            kept.append(init)
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(casts + nodes)  # a Cast must come before the nodes that read its output
    return n


def export_onnx(
    model: Any,
    preprocess: Any,
    meta: dict[str, Any],
    out: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    check_images: np.ndarray | None = None,
    atol: float = 1e-4,
    source_sha256: str | None = None,
    sidecar_json: bool = True,
    half_weights: bool = False,
) -> tuple[Path, float]:
    """Export a torch attribute model to ONNX (dynamic batch axis), its metadata inside the file and,
    with `sidecar_json`, also as JSON beside it.

    `half_weights` stores every weight that fp16 holds exactly (all of them for a checkpoint saved
    in half precision) as fp16 with a Cast to fp32 in the graph: half the file, the same numbers.

    The export is checked on `check_images` (uint8 [N, H, W, 3] at the model's input size; random
    images when None): ONNX Runtime's logits must match torch's within `atol`, else FaceattrError.
    `source_sha256` (of the checkpoint file) is recorded so loaders can tell a stale export.
    Returns (path of the .onnx, max abs logit difference).
    """
    import onnx
    import torch

    out = Path(out)
    if out.suffix != ".onnx":
        raise FaceattrError(f"ONNX output must end in .onnx, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    h, w = preprocess.size
    module = _wrapper(model.to("cpu").eval(), preprocess)
    example = torch.zeros((2, 3, h, w), dtype=torch.uint8)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with warnings.catch_warnings():
            # The TorchScript-based exporter is deprecated in favour of the dynamo one, which needs
            # the optional onnxscript package; the classic one is exact for these plain CNNs.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                str(tmp),
                dynamo=False,
                input_names=[ONNX_INPUT],
                output_names=[ONNX_OUTPUT],
                dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                # Folding BatchNorm into the convolutions would give weights fp16 cannot hold exactly;
                # ONNX Runtime folds them itself when it loads the graph, so the speed is the same.
                training=torch.onnx.TrainingMode.PRESERVE if half_weights else torch.onnx.TrainingMode.EVAL,
            )
        if half_weights:
            proto = onnx.load(str(tmp))
            _store_half(proto)
            onnx.save(proto, str(tmp))
        if check_images is None:
            rng = np.random.default_rng(0)
            check_images = rng.integers(0, 256, size=(3, h, w, 3), dtype=np.uint8)
        with torch.inference_mode():
            ref = module(torch.from_numpy(np.ascontiguousarray(check_images.transpose(0, 3, 1, 2)))).float().numpy()
        got = OnnxBackend(tmp).logits(check_images)
        diff = float(np.abs(got - ref).max())
        if not diff <= atol:  # also catches NaN
            raise FaceattrError(
                f"ONNX export of {meta.get('model', {}).get('name', 'the model')} does not match torch: "
                f"max |logit difference| {diff:.3g} > {atol:g}; try another --opset"
            )
        # The full checkpoint metadata plus an "onnx" entry: a superset, so when the JSON sits beside
        # its checkpoint under the same name, the checkpoint's own JSON stays valid.
        side = dict(meta)
        side["onnx"] = {
            "file": out.name,
            "input": ONNX_INPUT,
            "input_layout": "uint8 [N, 3, H, W], RGB 0..255 (normalisation is inside the graph)",
            "output": ONNX_OUTPUT,
            "opset": opset,
            "max_abs_logit_diff_vs_torch": diff,
            "checked_on_images": len(check_images),
            "source_sha256": source_sha256,
        }
        proto = onnx.load(str(tmp))
        props = {META_KEY: json.dumps(side)}
        if source_sha256 is not None:
            props[SOURCE_SHA256_KEY] = source_sha256
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        data = proto.SerializeToString()
        data += _metadata_entry(CONTENT_SHA256_KEY, content_sha256(data))
        # The .onnx and its JSON are both written before either replaces its old version, so a full
        # disk leaves the previous export whole.
        json_path = out.with_suffix(".json")
        with contextlib.ExitStack() as stack:
            if sidecar_json:
                tmp_json = stack.enter_context(atomic_output(json_path, "ONNX metadata"))
                tmp_json.write_text(json.dumps(side, indent=2), encoding="utf-8")
            final = stack.enter_context(atomic_output(out, "ONNX export"))
            final.write_bytes(data)
    except OSError as e:  # torch's exporter writing the first draft, or reading it back
        raise write_error(out, e, "ONNX export") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    logger.info("exported %s (opset %d); max |logit diff| vs torch %.2g on %d images", out, opset, diff, len(check_images))
    return out, diff
