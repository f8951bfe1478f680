"""DPO and KTO losses on fixed log-probs, against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.objectives import dpo_loss, kto_losses, kto_reference_point


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_dpo_loss_by_hand():
    # logits = (pi_c - pi_r) - (ref_c - ref_r) = (-2 + 5) - (-3 + 4) = 2
    loss = dpo_loss(t(-2.0), t(-5.0), t(-3.0), t(-4.0), beta=1.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2.0)))  # 0.126928
    assert loss.item() == pytest.approx(0.126928, abs=1e-6)
    # beta scales the logits: -log sigmoid(0.5 * 2) = log(1 + e^-1)
    assert dpo_loss(t(-2.0), t(-5.0), t(-3.0), t(-4.0), beta=0.5).item() == \
        pytest.approx(0.313262, abs=1e-6)
    # A policy that prefers the rejected reply more than the reference does loses more.
    assert dpo_loss(t(-5.0), t(-2.0), t(-3.0), t(-4.0), beta=1.0).item() == \
        pytest.approx(math.log(1 + math.exp(4.0)))


def test_dpo_at_the_reference_is_log_two():
    assert dpo_loss(t(-7.0), t(-1.0), t(-7.0), t(-1.0), beta=1.0).item() == \
        pytest.approx(math.log(2))


def test_kto_losses_by_hand():
    policy, reference = t(-2.0, -6.0), t(-3.0, -5.0)  # log-ratios +1 and -1
    desirable = torch.tensor([True, False])
    losses = kto_losses(policy, reference, desirable, z0=0.5, beta=1.0, desirable_weight=1.0,
                        undesirable_weight=1.0)
    # desirable: 1 - sigmoid(1 - 0.5); undesirable: 1 - sigmoid(0.5 - (-1))
    assert losses.tolist() == pytest.approx([1 - 1 / (1 + math.exp(-0.5)),
                                             1 - 1 / (1 + math.exp(-1.5))])
    assert losses.tolist() == pytest.approx([0.377541, 0.182426], abs=1e-6)
    weighted = kto_losses(policy, reference, desirable, z0=0.5, beta=2.0, desirable_weight=0.0,
                          undesirable_weight=0.8)
    assert weighted.tolist() == pytest.approx([0.0, 0.8 * (1 - 1 / (1 + math.exp(-3.0)))])


def test_kto_reference_point_is_a_clamped_detached_mean():
    assert kto_reference_point(t(1.0, 3.0), t(0.0, 0.0)).item() == pytest.approx(2.0)
    assert kto_reference_point(t(-4.0, -4.0), t(-1.0, -1.0)).item() == 0.0  # clamped at 0
    policy = t(1.0, 3.0).requires_grad_()
    assert not kto_reference_point(policy, t(0.0, 0.0)).requires_grad
