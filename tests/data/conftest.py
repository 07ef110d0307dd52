"""Fixtures for the data tests: CelebA folders in every layout, built in tmp from the real subset.

Nothing is copied from CelebA into the repository: folders are made of symlinks to the shared
subset, plus annotation files rewritten (restricted rows, other formats) under tmp_path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ATTR, PARTITION, IDENTITY, IMAGES = "list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt", "img_align_celeba"


@dataclass
class Reference:
    """The real annotation files, parsed the slow obvious way (independent of faceattr's parser)."""

    names: list[str]
    filenames: list[str]
    values: np.ndarray  # int [N, 40] of -1/1
    partition: np.ndarray
    identity: np.ndarray
    attr_lines: list[str]  # the raw row lines (no line ending), for writing restricted copies
    partition_lines: list[str]
    identity_lines: list[str]
    header: list[str]  # first two lines of list_attr_celeba.txt

    def rows(self, filenames: Sequence[str]) -> np.ndarray:
        """Row indices of `filenames`."""
        index = {f: i for i, f in enumerate(self.filenames)}
        return np.array([index[f] for f in filenames], dtype=np.int64)


@pytest.fixture(scope="session")
def reference(celeba_root: Path) -> Reference:
    """Parse the real subset's annotation files with plain str.split."""
    attr = (celeba_root / ATTR).read_text().splitlines()
    names = attr[1].split()
    rows = [line.split() for line in attr[2:] if line.strip()]
    part = (celeba_root / PARTITION).read_text().splitlines()
    ident = (celeba_root / IDENTITY).read_text().splitlines()
    part_map = dict(line.split() for line in part if line.strip())
    id_map = dict(line.split() for line in ident if line.strip())
    filenames = [r[0] for r in rows]
    return Reference(
        names=names,
        filenames=filenames,
        values=np.array([[int(v) for v in r[1:]] for r in rows]),
        partition=np.array([int(part_map[f]) for f in filenames]),
        identity=np.array([int(id_map[f]) for f in filenames]),
        attr_lines=[line for line in attr[2:] if line.strip()],
        partition_lines=[line for line in part if line.strip()],
        identity_lines=[line for line in ident if line.strip()],
        header=attr[:2],
    )


MakeCeleba = Callable[..., Path]


@pytest.fixture
def make_celeba(tmp_path: Path, celeba_root: Path, reference: Reference) -> MakeCeleba:
    """Factory: build a CelebA folder in one layout from the real subset and return the root to load.

    rows: restrict the annotation files to these file names (None: all 16,000, symlinked as-is).
    images: which image files exist (None: all, via one symlinked folder).
    partition / identity: whether those files exist.
    """
    counter = iter(range(1000))

    def make(
        layout: str = "official",
        rows: Sequence[str] | None = None,
        images: Sequence[str] | None = None,
        partition: bool = True,
        identity: bool = True,
    ) -> Path:
        root = tmp_path / f"{layout}{next(counter)}"
        ann = root / "celeba" if layout == "torchvision" else root
        ann.mkdir(parents=True)
        image_parent = ann / IMAGES if layout == "kaggle" else ann  # Kaggle nests img_align_celeba twice
        image_parent.mkdir(exist_ok=True)
        if images is None:
            (image_parent / IMAGES).symlink_to(celeba_root / IMAGES, target_is_directory=True)
        else:
            folder = image_parent / IMAGES
            folder.mkdir()
            for name in images:
                (folder / name).symlink_to(celeba_root / IMAGES / name)

        keep = None if rows is None else reference.rows(rows)
        attr_lines = reference.attr_lines if keep is None else [reference.attr_lines[i] for i in keep]
        part_lines = reference.partition_lines if keep is None else [reference.partition_lines[i] for i in keep]
        id_lines = reference.identity_lines if keep is None else [reference.identity_lines[i] for i in keep]
        if layout == "kaggle":
            names = reference.names
            body = [",".join(line.split()) for line in attr_lines]
            (ann / "list_attr_celeba.csv").write_text("\n".join([",".join(["image_id", *names]), *body]) + "\n")
            if partition:
                lines = ["image_id,partition", *(",".join(line.split()) for line in part_lines)]
                (ann / "list_eval_partition.csv").write_text("\n".join(lines) + "\n")
            return root
        if keep is None:
            (ann / ATTR).symlink_to(celeba_root / ATTR)
            if partition:
                (ann / PARTITION).symlink_to(celeba_root / PARTITION)
            if identity:
                (ann / IDENTITY).symlink_to(celeba_root / IDENTITY)
            return root
        # Restricted copies in the official format: count line, header, CRLF endings.
        crlf = "\r\n"
        (ann / ATTR).write_bytes(crlf.join([str(len(attr_lines)), reference.header[1], *attr_lines, ""]).encode())
        if partition:
            (ann / PARTITION).write_bytes(crlf.join([*part_lines, ""]).encode())
        if identity:
            (ann / IDENTITY).write_bytes(crlf.join([*id_lines, ""]).encode())
        return root

    return make


@pytest.fixture
def real_images(celeba_root: Path) -> Callable[[int], list[Path]]:
    """Factory: the first n real image paths (sorted by name)."""
    names = sorted(os.listdir(celeba_root / IMAGES))

    def pick(n: int) -> list[Path]:
        return [celeba_root / IMAGES / name for name in names[:n]]

    return pick


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """From now on, record each path the cache decodes, in order (in-process builds only: worker processes are not seen)."""
    import faceattr.data.cache as cache_mod
    from faceattr.data.transforms import Preprocess

    calls: list[Path] = []
    real = cache_mod._decode_one

    def counting(path: Path, pre: Preprocess, frame: object = None) -> np.ndarray:
        calls.append(path)
        return real(path, pre, frame)

    monkeypatch.setattr(cache_mod, "_decode_one", counting)
    return calls
