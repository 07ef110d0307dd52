"""Several trained attribute networks as one: each normalises the shared input its own way, logits averaged.

Members may also see the face differently (``view``: their own crop of the aligned frame and input
size, e.g. one network on the whole 178x218 frame at 160x128 and one on the face alone). The ensemble
then takes the full-resolution frame and each member's view is cut and resized inside the graph by two
constant matrices, computed with Pillow's own bilinear filter, so a member sees what `prepare_image`
showed it in training (to float rounding) and the ONNX export is plain MatMuls.

A member may also see its view mirrored (``"mirror": true`` in its view): it runs on the view and on
its left-right mirror image in one batch and its logits are the mean of the two (test-time flip
averaging, for one more forward pass of that member). The mirror is a second constant resize matrix
with its output columns reversed, so the graph stays plain MatMuls.

The average may be weighted per output (``output_weights``, one row per member, one column per output,
each column summing to 1): a member trained mostly for gender and age can own those outputs while the
others keep the attributes they learned better.

An ensemble is not a registry entry (it has no builder and no pretrained weights): it is rebuilt
from a checkpoint whose ``model`` block lists its members, each with the registry name, kwargs and
normalisation it was trained with::

    {"name": "ensemble", "members": [{"name": "mobilenet_v2", "kwargs": {...},
                                      "mean": [3], "std": [3]}, ...],
     "output_weights": [[...per output...], ...per member...]}    # optional: plain mean without it

The ensemble's own preprocessing resizes and crops like every member (they must agree) and leaves
pixels in 0..1 (mean 0, std 1); each member then applies its own mean/std inside the graph, so one
ONNX file holds the whole thing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from faceattr.errors import FaceattrError
from faceattr.models.registry import ENSEMBLE, create_model

__all__ = ["ENSEMBLE", "EnsembleNet", "ensemble_from_spec", "enough_members", "resize_matrix", "FULL_FRAME"]

# (height, width) of the aligned frame an ensemble with views takes: CelebA's 178x218 crop, unresized.
FULL_FRAME = (218, 178)


def resize_matrix(n_in: int, n_out: int, lo: float = 0.0, hi: float | None = None) -> torch.Tensor:
    """[n_out, n_in] weights of Pillow's bilinear resize of samples [lo, hi) of a line of n_in into n_out.

    Pillow widens the filter when it shrinks (antialiasing) and samples at pixel centres; resizing an
    identity image (one impulse per row) along one axis gives exactly the weights it applies.
    """
    import numpy as np
    from PIL import Image

    hi = float(n_in) if hi is None else float(hi)
    eye = Image.fromarray(np.eye(n_in, dtype=np.float32), mode="F")
    out = eye.resize((n_out, n_in), Image.Resampling.BILINEAR, box=(float(lo), 0.0, hi, float(n_in)))
    return torch.from_numpy(np.asarray(out, dtype=np.float32).T.copy())


def _band(m: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """A resize matrix [n_out, n_in] cut to the input samples it reads: (m[:, a:b], (a, b))."""
    used = torch.nonzero(m.abs().sum(0) > 0).flatten()
    a, b = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, m.shape[1])
    return m[:, a:b].contiguous(), (a, b)


class EnsembleNet(nn.Module):
    """Input 0..1 RGB [N, 3, H, W] -> (weighted) mean of the members' logits, each member fed its own normalisation."""

    def __init__(
        self,
        members: Sequence[nn.Module],
        means: Sequence[Sequence[float]],
        stds: Sequence[Sequence[float]],
        output_weights: Sequence[Sequence[float]] | None = None,
        views: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if not enough_members(list(views) if views is not None else [None] * len(members)):
            raise FaceattrError(f"an ensemble needs at least 2 members (or 1 with a mirrored view), got {len(members)}")
        if not len(members) == len(means) == len(stds):
            raise FaceattrError("an ensemble needs one mean and one std per member")
        self.members = nn.ModuleList(members)
        # Not persistent: they are rebuilt from the checkpoint's metadata, so the weights file holds
        # only the members' own tensors.
        for i, (mean, std) in enumerate(zip(means, stds, strict=True)):
            self.register_buffer(f"mean_{i}", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
            self.register_buffer(f"std_{i}", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.output_weights: torch.Tensor | None
        if output_weights is None:
            self.output_weights = None
        else:
            # Checked on plain floats: checkpoints are also built on the meta device, where tensors hold no values.
            rows = [[float(v) for v in row] for row in output_weights]
            if len(rows) != len(members) or len({len(r) for r in rows}) != 1:
                raise FaceattrError(f"output_weights needs one row per member ({len(members)}), all of one length")
            if any(v < 0 for r in rows for v in r) or any(abs(sum(col) - 1.0) > 1e-4 for col in zip(*rows, strict=True)):
                raise FaceattrError("output_weights must be >= 0 and sum to 1 over the members for every output")
            self.register_buffer("output_weights", torch.tensor(rows, dtype=torch.float32), persistent=False)
        # Views: the input is the FULL_FRAME crop and member i sees wy @ x @ wx^T of its view. Members
        # with the same view share one resize, and each matrix keeps only the rows/columns of the frame
        # it reads (a face crop reads a fifth of the frame): the same numbers, a fraction of the work.
        self.has_views = views is not None
        self.mirrored = [bool(view.get("mirror", False)) for view in views] if views is not None else [False] * len(members)
        self.view_of: list[int] = []
        self._bands: list[tuple[int, int, int, int]] = []
        if views is not None:
            if len(views) != len(members):
                raise FaceattrError(f"an ensemble with views needs one view per member ({len(members)}), got {len(views)}")
            frame_h, frame_w = FULL_FRAME
            keys: list[tuple[Any, ...]] = []
            for view in views:
                h, w = (int(v) for v in view["size"])
                x0, y0, x1, y1 = view.get("crop") or (0, 0, frame_w, frame_h)
                key = (h, w, float(x0), float(y0), float(x1), float(y1))
                if key not in keys:
                    k = len(keys)
                    keys.append(key)
                    wy, (ya, yb) = _band(resize_matrix(frame_h, h, y0, y1))
                    wx, (xa, xb) = _band(resize_matrix(frame_w, w, x0, x1))
                    self.register_buffer(f"wy_{k}", wy, persistent=False)
                    self.register_buffer(f"wx_{k}", wx.T.contiguous(), persistent=False)
                    # The mirror image: the same resize with its output columns in reverse order.
                    self.register_buffer(f"wxm_{k}", wx.T.flip(1).contiguous(), persistent=False)
                    self._bands.append((ya, yb, xa, xb))
                self.view_of.append(keys.index(key))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the members' logits averaged (same shape as one member's output)."""
        total: torch.Tensor | None = None
        rows: dict[int, torch.Tensor] = {}
        seen: dict[tuple[int, bool], torch.Tensor] = {}
        n = x.shape[0]

        def view(k: int, mirror: bool) -> torch.Tensor:
            if k not in rows:
                ya, yb, xa, xb = self._bands[k]
                rows[k] = torch.matmul(getattr(self, f"wy_{k}"), x[:, :, ya:yb, xa:xb])
            if (k, mirror) not in seen:
                seen[(k, mirror)] = torch.matmul(rows[k], getattr(self, f"wxm_{k}" if mirror else f"wx_{k}"))
            return seen[(k, mirror)]

        for i, member in enumerate(self.members):
            xi = x
            if self.has_views:
                xi = view(self.view_of[i], False)
                if self.mirrored[i]:
                    xi = torch.cat([xi, view(self.view_of[i], True)])
            logits = member((xi - getattr(self, f"mean_{i}")) / getattr(self, f"std_{i}"))
            if self.mirrored[i]:
                logits = (logits[:n] + logits[n:]) / 2
            if self.output_weights is not None:
                logits = logits * self.output_weights[i]
            total = logits if total is None else total + logits
        assert total is not None  # at least two members, checked in __init__
        return total if self.output_weights is not None else total / len(self.members)


def _member_error(i: int, why: str) -> FaceattrError:
    return FaceattrError(f"ensemble member {i} in the checkpoint metadata is invalid ({why}); rebuild it with `faceattr ensemble`")


def enough_members(views: Sequence[Mapping[str, Any] | None]) -> bool:
    """Two or more members, or one that also sees its view mirrored (a network with its test-time flip)."""
    return len(views) >= 2 or (len(views) == 1 and bool((views[0] or {}).get("mirror", False)))


def ensemble_from_spec(spec: Mapping[str, Any]) -> EnsembleNet:
    """Build an untrained EnsembleNet from a checkpoint's ``model`` block (name 'ensemble')."""
    members = spec.get("members")
    if not isinstance(members, list) or not enough_members([m.get("view") if isinstance(m, dict) else None for m in members]):
        raise FaceattrError("ensemble checkpoint metadata lists fewer than 2 members (and no single mirrored one); "
                            "rebuild it with `faceattr ensemble`")
    nets: list[nn.Module] = []
    means: list[list[float]] = []
    stds: list[list[float]] = []
    for i, m in enumerate(members):
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not isinstance(m.get("kwargs"), dict):
            raise _member_error(i, "needs 'name' and 'kwargs'")
        if m["name"] == ENSEMBLE:
            raise _member_error(i, "an ensemble cannot nest another ensemble")
        mean, std = m.get("mean"), m.get("std")
        if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == 3 and len(std) == 3):
            raise _member_error(i, "needs 3-value 'mean' and 'std'")
        nets.append(create_model(m["name"], pretrained=False, **m["kwargs"]))
        means.append([float(v) for v in mean])
        stds.append([float(v) for v in std])
    weights = spec.get("output_weights")
    if weights is not None and not (isinstance(weights, list) and all(isinstance(r, list) for r in weights)):
        raise FaceattrError("ensemble checkpoint metadata has malformed output_weights; rebuild it with `faceattr ensemble`")
    views = [m["view"] for m in members] if any("view" in m for m in members) else None
    if views is not None and not all(isinstance(v, dict) and isinstance(v.get("size"), list) for v in views):
        raise FaceattrError("ensemble checkpoint metadata gives some members a view and not others; rebuild it with `faceattr ensemble`")
    return EnsembleNet(nets, means, stds, weights, views)
