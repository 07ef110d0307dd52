"""Finding pretrained weight files, offline first, and turning a failed fetch into a FaceattrError.

torchvision weights go through torchvision's own weights API and torch.hub's cache
(`$TORCH_HOME/hub/checkpoints/`), so users with network still get the normal download. Files that
have no download URL (EfficientNet-Lite0) are looked up in `$FACEATTR_WEIGHTS_DIR`, then in the
same torch.hub cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from faceattr.errors import FaceattrError

__all__ = ["hub_checkpoint_path", "load_torchvision_model", "find_weights_file"]

logger = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "FACEATTR_WEIGHTS_DIR"


def hub_checkpoint_path(url: str) -> Path:
    """Where torch.hub keeps (or would download) the file at `url`: $TORCH_HOME/hub/checkpoints/<name>."""
    # Resolved at call time: torch.hub.get_dir() reads TORCH_HOME on every call.
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def load_torchvision_model(name: str, tag: str, **build_kwargs: Any) -> nn.Module:
    """Build torchvision model `name` with weights `tag` via torch.hub's cache; FaceattrError if unobtainable."""
    # Imported here: torchvision takes seconds to import and only builders need it.
    import torchvision

    weights = torchvision.models.get_model_weights(name)[tag]
    path = hub_checkpoint_path(weights.url)
    if path.is_file():
        logger.info("loading %s weights %s from %s", name, tag, path)
    else:
        logger.info("%s not found; downloading %s", path, weights.url)
    try:
        # progress=False: the library reports through logging, not a progress bar on stderr.
        return torchvision.models.get_model(name, weights=weights, progress=False, **build_kwargs)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        # A failed download is an OSError (URLError, socket errors); a bad hash, a truncated or a
        # non-checkpoint file raise the others. All mean the user must fix the file: say which and how.
        if path.is_file():
            raise FaceattrError(
                f"could not load pretrained weights for '{name}' from {path} ({exc}); "
                f"the file may be corrupt: delete it and download {weights.url} again"
            ) from exc
        raise FaceattrError(
            f"pretrained weights for '{name}' need {path}, which is missing and could not be downloaded "
            f"({type(exc).__name__}: {exc}); download {weights.url} into {path.parent}, or set TORCH_HOME "
            f"to a folder whose hub/checkpoints/ holds {path.name}"
        ) from exc


def _sha256_prefix_matches(path: Path, prefix: str) -> bool:
    """True when the file's sha256 starts with `prefix` (torch.hub's file-naming convention)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest().startswith(prefix)


def find_weights_file(filename: str, subdir: str, *, sha256_prefix: str = "", how_to_get: str = "") -> Path:
    """Find `filename` in $FACEATTR_WEIGHTS_DIR/<subdir>/, then $TORCH_HOME/hub/checkpoints/; else FaceattrError."""
    candidates: list[Path] = []
    root = os.environ.get(WEIGHTS_DIR_ENV)
    if root:
        candidates.append(Path(root) / subdir / filename)
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / filename)
    for path in candidates:
        if not path.is_file():
            continue
        if sha256_prefix and not _sha256_prefix_matches(path, sha256_prefix):
            raise FaceattrError(
                f"{path} does not match its expected sha256 prefix {sha256_prefix}; the file is corrupt "
                f"or a different file: replace it"
            )
        logger.info("loading pretrained weights from %s", path)
        return path
    looked = " or ".join(str(p) for p in candidates)
    hint = f"; {how_to_get}" if how_to_get else ""
    raise FaceattrError(
        f"pretrained weights file {filename} not found (looked for {looked}); put it in "
        f"${WEIGHTS_DIR_ENV}/{subdir}/ or $TORCH_HOME/hub/checkpoints/{hint}"
    )
