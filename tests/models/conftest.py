"""Fixtures for model tests: a few real CelebA faces with their labels, and ImageNet preprocessing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# The same four aligned faces every time, so failures are reproducible.
N_FACES = 4
ATTRS = ("Male", "Smiling", "Eyeglasses")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run model tests on one intra-op thread, restoring the setting afterwards.

    The test machine's 2 cores are shared; with 2 OpenMP threads each op spin-waits for a core that
    another process holds, which made these tests ~5x slower in CPU time. They check behaviour, not speed.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def faces(celeba_root: Path) -> tuple[list[Image.Image], torch.Tensor]:
    """First N_FACES CelebA images (RGB PIL) and their 0/1 labels for ATTRS, from the official files."""
    lines = (celeba_root / "list_attr_celeba.txt").read_text().splitlines()
    header = lines[1].split()
    cols = [header.index(a) for a in ATTRS]
    images, labels = [], []
    for line in lines[2 : 2 + N_FACES]:
        fields = line.split()
        with Image.open(celeba_root / "img_align_celeba" / fields[0]) as im:
            images.append(im.convert("RGB"))
        labels.append([(int(fields[1 + c]) + 1) / 2 for c in cols])
    return images, torch.tensor(labels)


def to_batch(
    images: Sequence[Image.Image], size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Resize PIL images to (height, width), scale to 0..1 and normalise: [N, 3, H, W] float32."""
    arrays = [np.asarray(im.resize((size[1], size[0]), Image.BILINEAR), dtype=np.float32) / 255.0 for im in images]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def imagenet_eval_batch(path: Path, mean: Sequence[float], std: Sequence[float], resample: int) -> torch.Tensor:
    """ImageNet eval preprocessing of one image: shorter side 256, center crop 224, normalise: [1, 3, 224, 224]."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = 256 / min(w, h)
        im = im.resize((round(w * scale), round(h * scale)), resample)
        w, h = im.size
        left, top = (w - 224) // 2, (h - 224) // 2
        im = im.crop((left, top, left + 224, top + 224))
    return to_batch([im], (224, 224), mean, std)


@pytest.fixture(scope="session")
def grace_hopper() -> Path:
    """matplotlib's sample photo grace_hopper.jpg, the image the weights README reports ImageNet top-5 for."""
    mpl = pytest.importorskip("matplotlib")
    path = Path(mpl.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every DNS lookup and connection fail, as on an offline machine; returns the hosts tried."""
    import socket

    attempts: list[str] = []

    def refuse(host: object, *args: object, **kwargs: object) -> None:
        attempts.append(str(host))
        raise socket.gaierror(socket.EAI_NONAME, "network blocked by test")

    def refuse_connect(address: object, *args: object, **kwargs: object) -> None:
        attempts.append(str(address))
        raise OSError("network blocked by test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse_connect)
    # Proxies would route around the DNS block; drop them for this test.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return attempts
