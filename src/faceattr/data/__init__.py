"""CelebA loading, decode-once image cache, preprocessing and batched augmentation."""

from __future__ import annotations

from faceattr.data.augment import augment_batch
from faceattr.data.cache import ImageCache, build_cache, default_cache_dir
from faceattr.data.celeba import LAYOUTS, SPLITS, CelebaSplit, detect_layout, load_celeba, read_attribute_names
from faceattr.data.transforms import Preprocess, normalize_batch, prepare_image, to_tensor_batch

__all__ = [
    "LAYOUTS",
    "SPLITS",
    "CelebaSplit",
    "detect_layout",
    "read_attribute_names",
    "load_celeba",
    "Preprocess",
    "prepare_image",
    "to_tensor_batch",
    "normalize_batch",
    "ImageCache",
    "build_cache",
    "default_cache_dir",
    "augment_batch",
]
