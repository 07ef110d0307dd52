"""Group-balanced loss weights on real CelebA labels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from faceattr.config import BalanceConfig, TrainConfig
from faceattr.errors import FaceattrError
from faceattr.train.balance import group_weights
from faceattr.train.loop import _train_loss, prepare_run


def test_every_cell_gets_equal_total_weight(tiny_cfg: TrainConfig) -> None:
    run = prepare_run(dataclasses.replace(tiny_cfg, balance=BalanceConfig(attribute="Male", by=["Young"], max_weight=100)))
    y = np.asarray(run.train_labels) > 0.5
    m, yo = y[:, run.attributes.index("Male")], y[:, run.attributes.index("Young")]
    w = run.balance_weights
    assert w is not None and run.balance_column == run.attributes.index("Male")
    assert w.mean() == pytest.approx(1.0, abs=1e-5)
    totals = [w[(m == a) & (yo == b)].sum() for a in (False, True) for b in (False, True)]
    np.testing.assert_allclose(totals, np.mean(totals), rtol=1e-4)
    # The rarest cell (older women in this sample) weighs most per image.
    sizes = [((m == a) & (yo == b)).sum() for a in (False, True) for b in (False, True)]
    rarest = int(np.argmin(sizes))
    cell = [(m == a) & (yo == b) for a in (False, True) for b in (False, True)][rarest]
    assert w[cell][0] == w.max()


def test_cap_limits_the_rarest_cell() -> None:
    labels = np.array([[1, 1]] * 2 + [[1, 0]] * 98 + [[0, 0]] * 100, dtype=np.float32)
    _, w = group_weights(labels, ["Male", "Wearing_Lipstick"], BalanceConfig(attribute="Male", by=["Wearing_Lipstick"], max_weight=5))
    assert w.mean() == pytest.approx(1.0, abs=1e-6)
    assert w[0] / w[-1] == pytest.approx(5 / (200 / (3 * 100)), rel=1e-5)  # capped at 5 before renormalising


def test_weighted_loss_only_changes_the_balanced_column(tiny_cfg: TrainConfig) -> None:
    run = prepare_run(dataclasses.replace(tiny_cfg, balance=BalanceConfig(attribute="Male", by=["Young"])))
    idx = np.arange(8)
    logits = torch.randn(8, len(run.attributes))
    y = torch.from_numpy(np.asarray(run.train_labels[idx], dtype=np.float32))
    per = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    w = torch.ones_like(per)
    w[:, run.balance_column] = torch.from_numpy(run.balance_weights[idx])
    assert float(_train_loss(run, logits, y, idx)) == pytest.approx(float((per * w).mean()), rel=1e-6)
    assert float(_train_loss(run, logits, y, idx)) != pytest.approx(float(per.mean()), rel=1e-6)


@pytest.mark.parametrize(
    ("balance", "match"),
    [
        (BalanceConfig(attribute="Mal", by=["Young"]), r"did you mean Male\?"),
        (BalanceConfig(attribute="Male", by=[]), "balance.by is empty"),
        (BalanceConfig(attribute="Male", by=["Bald"]), "'Bald' is not among this run's attributes"),
        (BalanceConfig(attribute="Male", by=["Young"], max_weight=0.5), "max_weight must be >= 1"),
    ],
)
def test_bad_balance_settings_are_one_clear_error(tiny_cfg: TrainConfig, balance: BalanceConfig, match: str) -> None:
    with pytest.raises(FaceattrError, match=match):
        prepare_run(dataclasses.replace(tiny_cfg, balance=balance))
