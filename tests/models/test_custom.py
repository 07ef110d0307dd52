"""The from-scratch networks: celeb_cnn and the classic Keras-style gender_cnn."""

from __future__ import annotations

import torch
from torch import nn

import faceattr.models as fm


def test_celeb_cnn_layout() -> None:
    model = fm.create_model("celeb_cnn", num_outputs=40)
    assert len(model.stages) == 5
    for stage in model.stages:
        assert [type(m) for m in stage] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Dropout2d]
    assert [s[0].out_channels for s in model.stages] == [32, 64, 128, 256, 512]
    assert model.num_features == 512


def test_celeb_cnn_accepts_sizes_other_than_its_default() -> None:
    model = fm.create_model("celeb_cnn", num_outputs=2).eval()
    with torch.no_grad():
        for size in ((32, 32), (128, 128), (218, 178)):
            assert model(torch.randn(1, 3, *size)).shape == (1, 2)


def test_celeb_cnn_block_dropout_is_off_in_eval() -> None:
    model = fm.create_model("celeb_cnn", num_outputs=2).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_gender_cnn_is_the_classic_keras_net() -> None:
    model = fm.create_model("gender_cnn", num_outputs=1)
    convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (32, (3, 3), (0, 0)), (64, (3, 3), (0, 0)), (128, (3, 3), (0, 0)), (128, (3, 3), (0, 0)),
    ]  # fmt: skip
    # Keras summary of this net with Dense(1): 3,453,121 parameters.
    assert fm.count_parameters(model) == 3_453_121
    # At its default 150x150, the conv stack ends at 128x7x7, so the adaptive pool is the classic Flatten.
    seen = []
    model.stages[4].register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape))
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 150, 150)).shape == (1, 1)
    assert tuple(seen[0]) == (1, 128, 7, 7)
