"""Combine trained checkpoints into one ensemble checkpoint (logits averaged), loadable like any model.

    faceattr ensemble runs/a/best.safetensors runs/b/best.safetensors --out runs/ab/best.safetensors

The result is an ordinary faceattr checkpoint: `faceattr evaluate` calibrates it, `predict`,
`export --onnx`, `index` and `serve` use it, and `scripts/ship_model.py` ships it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from faceattr.checkpoint import load_checkpoint, load_tensors, read_metadata, resolve_checkpoint, save_checkpoint
from faceattr.errors import FaceattrError, did_you_mean
from faceattr.models.ensemble import ENSEMBLE, FULL_FRAME, EnsembleNet, enough_members

__all__ = ["make_ensemble", "parse_weight", "split_ensemble", "interpolate_checkpoints"]

logger = logging.getLogger(__name__)


def _data_split_key(meta: dict[str, Any]) -> tuple[Any, ...] | None:
    """What decides which images a member trained on and which it held out (None: unknown)."""
    cfg = meta.get("config")
    if not isinstance(cfg, dict):
        return None
    data = cfg.get("data") or {}
    return (data.get("train_split"), data.get("holdout_fraction"), data.get("limit"), cfg.get("seed"))


def _check_members(paths: Sequence[Path], metas: Sequence[dict[str, Any]]) -> None:
    """Raise FaceattrError unless every member predicts the same outputs and was trained on the same split."""
    first_path, first = paths[0], metas[0]
    for path, meta in zip(paths, metas, strict=True):
        if meta["model"]["name"] == ENSEMBLE:
            raise FaceattrError(f"{path} is already an ensemble; list its members instead")
        if bool(meta.get("age")) != bool(first.get("age")):
            raise FaceattrError(f"{path} and {first_path} differ in whether they predict age; ensemble members need the same outputs")
        if list(meta["attributes"]) != list(first["attributes"]) or meta.get("output", "sigmoid") != first.get("output", "sigmoid"):
            raise FaceattrError(
                f"{path} predicts {len(meta['attributes'])} {meta.get('output', 'sigmoid')} attribute(s), {first_path} "
                f"{len(first['attributes'])} {first.get('output', 'sigmoid')}: ensemble members need the same attributes in the same order"
            )
        # A member trained on another's holdout would make the ensemble's holdout figures (and any
        # threshold calibrated there) optimistic.
        if _data_split_key(meta) != _data_split_key(first):
            raise FaceattrError(
                f"{path} was trained on another split (train_split, holdout_fraction, limit, seed = {_data_split_key(meta)}) "
                f"than {first_path} ({_data_split_key(first)}): one may have trained on the other's holdout; "
                "combine checkpoints trained with the same data settings"
            )


def split_ensemble(checkpoint: str | Path, out_dir: str | Path) -> list[Path]:
    """Write each member of an ensemble checkpoint as a checkpoint of its own (float32), e.g. to refine
    it with `model.init_from`; returns `out_dir/member{i}/best.safetensors` paths."""
    from faceattr.models import create_model

    path = resolve_checkpoint(checkpoint)
    meta = read_metadata(path)
    if meta["model"]["name"] != ENSEMBLE:
        raise FaceattrError(f"{path} is a single {meta['model']['name']}, not an ensemble; use it as it is")
    tensors = load_tensors(path, "model.members.")
    written = []
    for i, m in enumerate(meta["model"]["members"]):
        net = create_model(m["name"], pretrained=False, **m["kwargs"])
        net.load_state_dict({k.split(".", 1)[1]: v.float() for k, v in tensors.items() if k.split(".", 1)[0] == str(i)})
        member_meta = {**{k: v for k, v in meta.items() if k not in ("format", "format_version", "versions", "created")},
                       "model": {"name": m["name"], "kwargs": m["kwargs"]},
                       # A mirrored view is test-time flipping, not preprocessing: the member alone sees its view.
                       "preprocess": {**meta["preprocess"], **{k: v for k, v in m.get("view", {}).items() if k != "mirror"},
                                      "mean": m["mean"], "std": m["std"]},
                       "split_from": {"ensemble": str(path), "member": i}}
        written.append(save_checkpoint(Path(out_dir) / f"member{i}" / "best.safetensors", net, member_meta))
    return written


def _weight_matrix(outputs: Sequence[str], n_members: int, given: Mapping[str, Sequence[float]]) -> list[list[float]]:
    """Rows per member, columns per output: equal shares, except the outputs in `given` (normalised to sum 1).

    The name "*" stands for every output not named on its own, e.g. {"*": [1, 1, 0], "age": [0, 1, 3]}.
    """
    rows = [[1.0 / n_members] * len(outputs) for _ in range(n_members)]
    # Checked as the user wrote them, before "*" expands: an error names "*", not the first output it stands for.
    for name, weights in given.items():
        if name != "*" and name not in outputs:
            raise FaceattrError(f"--weight names '{name}', which the members do not predict{did_you_mean(name, outputs)}")
        if len(weights) != n_members or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise FaceattrError(f"--weight {name} needs {n_members} non-negative weights, one per member, not all 0; got {list(weights)}")
    named = [n for n in given if n != "*"]
    if "*" in given:
        given = {**{o: given["*"] for o in outputs if o not in named}, **{n: given[n] for n in named}}
    for name, weights in given.items():
        j = outputs.index(name)
        for i, w in enumerate(weights):
            rows[i][j] = float(w) / float(sum(weights))
    return rows


def parse_weight(text: str) -> tuple[str, list[float]]:
    """'Male=1,1,2' -> ('Male', [1.0, 1.0, 2.0]): one output's weight per member, in the members' order."""
    name, sep, values = text.partition("=")
    try:
        weights = [float(v) for v in values.split(",")]
    except ValueError:
        weights = []
    if not sep or not name.strip() or not weights:
        raise FaceattrError(f"--weight '{text}' is not OUTPUT=W1,W2,... (e.g. Male=1,1,2: the third member counts double)")
    return name.strip(), weights


def make_ensemble(checkpoints: Sequence[str | Path], out: str | Path, *, half: bool = False, overwrite: bool = False,
                  output_weights: Mapping[str, Sequence[float]] | None = None, mirror: Sequence[int] = ()) -> Path:
    """Write one checkpoint averaging the logits of `checkpoints` (run folders, files or shipped names).

    `output_weights` maps an output (an attribute, or "age") to one weight per member: that output's
    logits are averaged with those weights (normalised), the other outputs equally ("*": every output
    not named on its own). `mirror` lists members (0-based) that also see the mirror image of their
    view, their logits averaged over the two (test-time flip for one more forward pass of each).
    """
    # One checkpoint is allowed with --mirror: a single network with its test-time flip inside one graph
    # (e.g. a face-only member shipped on its own as a fast model). The same rule as the graph's own; a
    # --mirror that names no member is caught just below.
    if not enough_members([{"mirror": bool(mirror)}] * len(checkpoints)):
        raise FaceattrError(f"an ensemble needs at least 2 checkpoints, or 1 with --mirror 1 (its test-time flip), "
                            f"got {len(checkpoints)}")
    bad = [i for i in mirror if not 0 <= i < len(checkpoints)]
    if bad:
        raise FaceattrError(f"--mirror {bad[0] + 1} names no member: give a number from 1 to {len(checkpoints)}, in the order listed")
    paths = [resolve_checkpoint(c) for c in checkpoints]
    out = Path(out)
    if out.suffix != ".safetensors":
        raise FaceattrError(f"--out {out} must end in .safetensors")
    if any(out.resolve() == p.resolve() for p in paths):
        raise FaceattrError(f"--out {out} is one of the members; write the ensemble to a new file")
    if out.exists() and not overwrite:
        # It may hold calibrated thresholds; never replace it silently.
        raise FaceattrError(f"{out} already exists; choose another --out or pass --overwrite")
    metas = [read_metadata(p) for p in paths]  # cheap checks before any weights load
    _check_members(paths, metas)
    nets = [load_checkpoint(p)[0] for p in paths]
    means = [list(m["preprocess"]["mean"]) for m in metas]
    stds = [list(m["preprocess"]["std"]) for m in metas]
    first = metas[0]
    outputs = [*first["attributes"], *(["age"] if first.get("age") else [])]
    weights = _weight_matrix(outputs, len(paths), output_weights) if output_weights else None
    # Members that take other input sizes or crops of the aligned frame each get their own view of it.
    pres = [{"size": list(m["preprocess"]["size"]), "crop": m["preprocess"].get("crop")} for m in metas]
    # A mirrored member needs the view matrices even when every member sees the same frame.
    views = pres if any(p != pres[0] for p in pres) or mirror else None
    if views is not None:
        views = [{**v, "mirror": True} if i in mirror else v for i, v in enumerate(views)]
    model = EnsembleNet(nets, means, stds, weights, views)
    meta: dict[str, Any] = {
        "model": {
            "name": ENSEMBLE,
            "members": [
                {"name": m["model"]["name"], "kwargs": m["model"]["kwargs"], "mean": mean, "std": std,
                 **({"view": views[i]} if views is not None else {})}
                for i, (m, mean, std) in enumerate(zip(metas, means, stds, strict=True))
            ],
            **({"output_weights": weights} if weights is not None else {}),
        },
        "attributes": list(first["attributes"]),
        "output": first.get("output", "sigmoid"),
        "age": first.get("age"),
        # Members normalise inside the graph, so the shared step only resizes and scales to 0..1; with
        # views it passes the whole aligned frame at full resolution and each member cuts its own.
        "preprocess": {**({"size": list(FULL_FRAME), "crop": None} if views is not None else first["preprocess"]),
                       "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        # Members' thresholds do not carry over to averaged logits: calibrate the ensemble itself.
        "thresholds": None,
        # The shared data settings (checked above), so evaluate knows which holdout it never saw.
        "config": first.get("config"),
        "sources": [
            {"checkpoint": str(p), "architecture": m["model"]["name"], "metrics": m.get("metrics"), "epoch": m.get("epoch")}
            for p, m in zip(paths, metas, strict=True)
        ],
    }
    written = save_checkpoint(out, model, meta, half=half)
    logger.info("wrote an ensemble of %d models (%s) to %s", len(paths), ", ".join(m["model"]["name"] for m in metas), written)
    return written


def interpolate_checkpoints(first: str | Path, second: str | Path, out: str | Path, *, alpha: float = 0.5,
                            overwrite: bool = False) -> Path:
    """Write the model whose weights are (1 - alpha) x `first` + alpha x `second` (same network and attributes).

    For a model and its own fine-tuned copy this is weight-space ensembling (Wortsman et al., "Robust
    fine-tuning of zero-shot models", 2022): a fine-tune at a low learning rate stays in its start's
    basin, so points on the line between them are good models mixing both. Every float tensor,
    batch-norm statistics included, is interpolated; the result runs at the cost of one network.
    """
    import torch

    if not 0.0 <= alpha <= 1.0:
        raise FaceattrError(f"alpha must be in [0, 1] (0: the first model, 1: the second), got {alpha}")
    a_path, b_path = resolve_checkpoint(first), resolve_checkpoint(second)
    out = Path(out)
    if out.resolve() in (a_path.resolve(), b_path.resolve()):
        raise FaceattrError(f"{out} is one of the checkpoints being interpolated; choose another output")
    if out.exists() and not overwrite:
        raise FaceattrError(f"{out} already exists; choose another --out or pass overwrite")
    model_a, meta_a = load_checkpoint(a_path)
    model_b, meta_b = load_checkpoint(b_path)
    # A fine-tune that added an age output (data.sources with UTKFace) still interpolates with its
    # start: the attribute rows mix, the age row is the fine-tune's own.
    grew_age = bool(meta_b.get("age")) and not meta_a.get("age")
    model_spec_a = dict(meta_a["model"])
    if grew_age and "kwargs" in model_spec_a:
        model_spec_a["kwargs"] = {**model_spec_a["kwargs"], "num_outputs": model_spec_a["kwargs"]["num_outputs"] + 1}
    if bool(meta_a.get("age")) and not meta_b.get("age"):
        raise FaceattrError(f"{a_path} predicts age and {b_path} does not; put the model with the age output second")
    if model_spec_a != meta_b["model"] or list(meta_a["attributes"]) != list(meta_b["attributes"]):
        raise FaceattrError(f"{a_path} and {b_path} are different networks or predict different attributes; "
                            "only a model and a fine-tuned copy of it can be interpolated")
    if meta_a["model"]["name"] == ENSEMBLE:
        raise FaceattrError("interpolate the members of an ensemble, then ensemble the results")
    if _data_split_key(meta_a) != _data_split_key(meta_b):
        raise FaceattrError(f"{a_path} and {b_path} were trained on different data splits")
    sa, sb = model_a.state_dict(), model_b.state_dict()
    if grew_age:  # give the first model the second's age row, so it drops out of the mix
        n = len(meta_a["attributes"])
        sa = {k: torch.cat([v, sb[k][n:].to(v.dtype)]) if v.shape != sb[k].shape and v.shape[0] == n else v
              for k, v in sa.items()}
    model_b.load_state_dict({k: torch.lerp(v.float(), sb[k].float(), alpha).to(v.dtype) if v.is_floating_point() else sb[k]
                             for k, v in sa.items()})
    meta = {k: v for k, v in meta_b.items() if k not in ("train_state", "thresholds", "calibration", "shipped_as")}
    meta["interpolated"] = {"first": str(a_path), "second": str(b_path), "alpha": alpha}
    logger.info("interpolated %s and %s at alpha %.2f", a_path, b_path, alpha)
    return save_checkpoint(out, model_b, meta)
