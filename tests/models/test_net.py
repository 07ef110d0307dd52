"""AttributeNet, freezing by stage, optimizer parameter groups, parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import faceattr.models as fm
from faceattr.errors import FaceattrError
from faceattr.models.net import StagedBackbone, global_pool, make_head

from .conftest import to_batch


@pytest.fixture
def resnet() -> fm.AttributeNet:
    """resnet18 (stem + layer1..4, BatchNorm everywhere) with 3 outputs."""
    torch.manual_seed(0)
    return fm.create_model("resnet18", num_outputs=3)


@pytest.fixture
def batch(faces) -> torch.Tensor:
    """Four real faces at 64x64, ImageNet-normalised."""
    spec = fm.get_spec("resnet18")
    return to_batch(faces[0], (64, 64), spec.mean, spec.std)


def _bn_stats(module: nn.Module) -> list[torch.Tensor]:
    """Copies of every BatchNorm running mean/var in `module`."""
    return [
        t.clone()
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for t in (m.running_mean, m.running_var)
    ]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_stages_are_the_backbone_in_forward_order(resnet: fm.AttributeNet, batch: torch.Tensor) -> None:
    stages = resnet.stages
    assert len(stages) == 5
    assert stages[1] is resnet.backbone.stages[1]
    # Every backbone parameter lives in exactly one stage, so freezing by stage covers the backbone.
    in_stages = {id(p) for s in stages for p in s.parameters()}
    assert in_stages == {id(p) for p in resnet.backbone.parameters()}
    # Running the stages by hand then pooling gives the backbone's features, then the logits.
    resnet.eval()
    x = batch
    for s in stages:
        x = s(x)
    feats = x.mean(dim=(2, 3))
    assert torch.allclose(resnet.backbone(batch), feats, atol=1e-6)
    assert torch.allclose(resnet(batch), resnet.head(feats), atol=1e-5)


def test_forward_returns_logits_not_probabilities(resnet: fm.AttributeNet, batch: torch.Tensor) -> None:
    with torch.no_grad():
        resnet.head[-1].bias.fill_(-20.0)
        assert (resnet.eval()(batch) < 0).all()


def test_head_layout() -> None:
    plain = make_head(8, 3, dropout=0.25)
    assert [type(m) for m in plain] == [nn.Dropout, nn.Linear]
    assert plain[0].p == 0.25 and (plain[1].in_features, plain[1].out_features) == (8, 3)
    deep = make_head(8, 3, hidden=5, dropout=0.25)
    assert [type(m) for m in deep] == [nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert (deep[1].out_features, deep[4].in_features, deep[3].p) == (5, 5, 0.25)
    model = fm.create_model("celeb_cnn", num_outputs=7, hidden=16, dropout=0.3)
    assert model.head[1].in_features == model.num_features == 512 and model.head[-1].out_features == 7


def test_pool_with_parameters_is_rejected() -> None:
    with pytest.raises(ValueError, match="pool"):
        StagedBackbone([nn.Conv2d(3, 4, 3)], nn.Sequential(global_pool(), nn.Linear(4, 4)))


def test_trainable_0_freezes_backbone_and_its_bn_stats(resnet: fm.AttributeNet, batch: torch.Tensor) -> None:
    fm.set_trainable(resnet, 0)
    assert not any(p.requires_grad for p in resnet.backbone.parameters())
    assert all(p.requires_grad for p in resnet.head.parameters())
    weights = {k: v.clone() for k, v in resnet.backbone.state_dict().items()}

    resnet.eval()
    resnet.train()  # a training loop calls this every epoch; frozen stages must stay in eval
    assert resnet.training and resnet.head.training
    assert not any(s.training for s in resnet.stages)
    opt = torch.optim.SGD(fm.param_groups(resnet, lr=0.1, backbone_lr_mult=1.0, weight_decay=0.0), lr=0.1)
    head_before = resnet.head[-1].weight.clone()
    for _ in range(2):
        opt.zero_grad()
        resnet(batch).square().mean().backward()
        opt.step()
    after = resnet.backbone.state_dict()
    assert all(torch.equal(weights[k], after[k]) for k in weights), "frozen backbone changed (weights or BN stats)"
    assert not torch.equal(head_before, resnet.head[-1].weight)


def test_trainable_k_unfreezes_only_the_last_k_stages(resnet: fm.AttributeNet, batch: torch.Tensor) -> None:
    fm.set_trainable(resnet, 2)
    stages = resnet.stages
    for i, stage in enumerate(stages):
        trainable = i >= len(stages) - 2
        assert all(p.requires_grad == trainable for p in stage.parameters()), i
    resnet.train()
    assert [s.training for s in stages] == [False, False, False, True, True]
    frozen_before = _bn_stats(nn.Sequential(*stages[:3]))
    live_before = _bn_stats(nn.Sequential(*stages[3:]))
    resnet(batch)
    assert _same(frozen_before, _bn_stats(nn.Sequential(*stages[:3])))
    assert not _same(live_before, _bn_stats(nn.Sequential(*stages[3:])))
    assert fm.count_parameters(resnet, trainable_only=True) == sum(
        p.numel() for m in (*stages[3:], resnet.head) for p in m.parameters()
    )


def test_trainable_all_and_refreezing(resnet: fm.AttributeNet, batch: torch.Tensor) -> None:
    fm.set_trainable(resnet, 0)
    fm.set_trainable(resnet, -1)
    assert all(p.requires_grad for p in resnet.parameters())
    resnet.train()
    assert all(m.training for m in resnet.modules())
    before = _bn_stats(resnet.stages[0])
    resnet(batch)
    assert not _same(before, _bn_stats(resnet.stages[0]))
    # More stages than exist means all of them; going back to 0 freezes immediately, even mid-training.
    fm.set_trainable(resnet, 99)
    assert all(p.requires_grad for p in resnet.parameters())
    fm.set_trainable(resnet, 0)
    assert resnet.training and not any(s.training for s in resnet.stages)
    resnet.eval()
    assert not any(m.training for m in resnet.modules())


@pytest.mark.parametrize("bad", [-2, 1.5, True])
def test_bad_trainable_stages(resnet: fm.AttributeNet, bad: object) -> None:
    with pytest.raises(FaceattrError):
        fm.set_trainable(resnet, bad)  # type: ignore[arg-type]


def test_param_groups_lrs_decay_and_coverage(resnet: fm.AttributeNet) -> None:
    fm.set_trainable(resnet, 1)
    groups = fm.param_groups(resnet, lr=0.1, backbone_lr_mult=0.01, weight_decay=1e-4)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"head", "head_no_decay", "backbone", "backbone_no_decay"}
    assert by_name["head"]["lr"] == by_name["head_no_decay"]["lr"] == 0.1
    assert by_name["backbone"]["lr"] == by_name["backbone_no_decay"]["lr"] == pytest.approx(0.1 * 0.01)
    assert by_name["head"]["weight_decay"] == by_name["backbone"]["weight_decay"] == 1e-4
    assert by_name["head_no_decay"]["weight_decay"] == by_name["backbone_no_decay"]["weight_decay"] == 0.0

    # Biases and BatchNorm weights never decay; conv and linear weights do.
    bn_weight = resnet.stages[-1][0].bn1.weight
    ids = {name: {id(p) for p in g["params"]} for name, g in by_name.items()}
    assert id(bn_weight) in ids["backbone_no_decay"]
    assert id(resnet.head[-1].bias) in ids["head_no_decay"]
    assert id(resnet.head[-1].weight) in ids["head"]
    assert id(resnet.stages[-1][0].conv1.weight) in ids["backbone"]

    # Exactly the trainable parameters, each once: frozen stages are left out.
    listed = [id(p) for g in groups for p in g["params"]]
    assert len(listed) == len(set(listed))
    assert set(listed) == {id(p) for p in resnet.parameters() if p.requires_grad}
    assert id(resnet.stages[0][0].weight) not in set(listed)

    # A real optimizer accepts them and keeps the per-group lr.
    opt = torch.optim.AdamW(groups, lr=0.1)
    assert sorted({g["lr"] for g in opt.param_groups}) == [pytest.approx(0.001), 0.1]


def test_param_groups_rejects_bad_values(resnet: fm.AttributeNet) -> None:
    with pytest.raises(FaceattrError):
        fm.param_groups(resnet, lr=0.0, backbone_lr_mult=1.0, weight_decay=0.0)
    with pytest.raises(FaceattrError):
        fm.param_groups(resnet, lr=0.1, backbone_lr_mult=-1.0, weight_decay=0.0)


def test_count_parameters(resnet: fm.AttributeNet) -> None:
    total = sum(p.numel() for p in resnet.parameters())
    assert fm.count_parameters(resnet) == total
    # resnet18 without its 1000-way fc (512*1000 + 1000) plus a 3-way head (512*3 + 3).
    assert total == 11_689_512 - 513_000 + 1_539
    fm.set_trainable(resnet, 0)
    assert fm.count_parameters(resnet, trainable_only=True) == 1_539
    assert fm.count_parameters(resnet) == total
