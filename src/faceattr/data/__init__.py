"""CelebA loading, decode-once image cache, preprocessing and batched augmentation.

The names below load their module on first use (PEP 562), so that `faceattr.infer`, which needs only
`faceattr.data.transforms`, does not import the CelebA, cache and augmentation code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from faceattr._lazy import lazy_exports

if TYPE_CHECKING:
    from faceattr.data.augment import augment_batch
    from faceattr.data.cache import ImageCache, build_cache, default_cache_dir
    from faceattr.data.celeba import LAYOUTS, SPLITS, CelebaSplit, detect_layout, load_celeba, read_attribute_names
    from faceattr.data.transforms import Preprocess, normalize_batch, prepare_image, to_tensor_batch

_HOME = {
    **dict.fromkeys(["LAYOUTS", "SPLITS", "CelebaSplit", "detect_layout", "read_attribute_names", "load_celeba"], "celeba"),
    **dict.fromkeys(["Preprocess", "prepare_image", "to_tensor_batch", "normalize_batch"], "transforms"),
    **dict.fromkeys(["ImageCache", "build_cache", "default_cache_dir"], "cache"),
    "augment_batch": "augment",
}

__all__ = list(_HOME)

__getattr__, __dir__ = lazy_exports(__name__, _HOME)
