"""Schedules and update rules against explicit formulas, and Adam against torch.optim.Adam."""

import pytest
import torch

from dropout_lab.train import Hyper, adam_update_, learning_rate, momentum, sgd_update_

from conftest import tiny_config


def hyper(*overrides):
    return Hyper.from_configs([tiny_config(*o) for o in overrides], "cpu")


def test_learning_rate_schedules():
    h = hyper(["optim.lr_schedule=constant", "optim.lr=0.3"],
              ["optim.lr_schedule=exponential", "optim.lr=10", "optim.lr_decay=0.998"],
              ["optim.lr_schedule=inverse_t", "optim.lr=1.0", "optim.lr_half_life=10000"])
    lr = learning_rate(h, epoch=500, step=10_000).flatten()
    assert lr[0].item() == pytest.approx(0.3)
    assert lr[1].item() == pytest.approx(10 * 0.998 ** 500, rel=1e-5)
    assert lr[2].item() == pytest.approx(0.5)  # halved at the half-life
    assert learning_rate(h, 0, 0).flatten().tolist() == pytest.approx([0.3, 10, 1.0])


def test_momentum_ramp():
    h = hyper(["optim.momentum_start=0.5", "optim.momentum_end=0.99", "optim.momentum_ramp_epochs=500"],
              ["optim.momentum_start=0.9", "optim.momentum_end=0.9", "optim.momentum_ramp_epochs=0"])
    assert momentum(h, 0).flatten().tolist() == pytest.approx([0.5, 0.9])
    assert momentum(h, 250).flatten()[0].item() == pytest.approx(0.745)
    assert momentum(h, 500).flatten()[0].item() == pytest.approx(0.99)
    assert momentum(h, 10_000).flatten()[0].item() == pytest.approx(0.99)


@pytest.mark.parametrize("rule", ["hinton", "classical"])
def test_sgd_momentum_rules(rule):
    h = hyper([f"optim.momentum_rule={rule}", "optim.weight_decay=0.01"])
    w = torch.randn(1, 4, 3)
    b = torch.randn(1, 1, 3)
    vw, vb = torch.randn(1, 4, 3), torch.randn(1, 1, 3)
    gw, gb = torch.randn(1, 4, 3), torch.randn(1, 1, 3)
    lr, m = torch.tensor(0.2).view(1, 1, 1), torch.tensor(0.9).view(1, 1, 1)
    factor = (1 - 0.9) * 0.2 if rule == "hinton" else 0.2
    want_vw = 0.9 * vw - factor * (gw + 0.01 * w)  # L2 on weights...
    want_vb = 0.9 * vb - factor * gb  # ...not on biases
    want_w, want_b = w + want_vw, b + want_vb
    live = torch.ones(1, 1, 1, dtype=torch.bool)
    sgd_update_([w, b], [vw, vb], [gw, gb], [True, False], lr, m, h, live)
    assert torch.allclose(vw, want_vw) and torch.allclose(vb, want_vb)
    assert torch.allclose(w, want_w) and torch.allclose(b, want_b)


def test_frozen_model_does_not_move():
    h = hyper([], [])
    w = torch.randn(2, 4, 3)
    before = w.clone()
    live = torch.tensor([True, False]).view(2, 1, 1)
    sgd_update_([w], [torch.zeros_like(w)], [torch.full_like(w, float("nan"))], [True], torch.ones(2, 1, 1),
                torch.zeros(2, 1, 1), h, live)
    assert torch.equal(w[1], before[1])


def test_adam_matches_torch_optim_adam():
    torch.manual_seed(0)
    h = hyper(["optim.name=adam", "optim.weight_decay=0.001", "optim.lr=0.01"])
    w0 = torch.randn(1, 5, 4)
    ours = w0.clone()
    ref = torch.nn.Parameter(w0[0].clone())
    opt = torch.optim.Adam([ref], lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.001)
    state = [(torch.zeros_like(ours), torch.zeros_like(ours))]
    live = torch.ones(1, 1, 1, dtype=torch.bool)
    for t in range(1, 6):
        g = torch.randn(5, 4)
        ref.grad = g.clone()
        opt.step()
        adam_update_([ours], state, [g.unsqueeze(0)], [True], torch.tensor(0.01).view(1, 1, 1), t, h, live)
    assert torch.allclose(ours[0], ref.detach(), atol=1e-6)
