"""Schedules and update rules against explicit formulas, deepnet's rule against a numpy transcription of the
authors' code, and Adam against torch.optim.Adam."""

import math

import numpy as np
import pytest
import torch

from dropout_lab.nets.optim import Hyper, adam_update_, learning_rate, momentum, sgd_update_
from dropout_lab.training import data as data_mod
from dropout_lab.training.train import StackTrainer

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


def test_momentum_without_a_ramp_is_the_final_one_from_the_first_step():
    for schedule in ("linear", "exponential"):
        h = hyper(["optim.momentum_start=0.5", "optim.momentum_end=0.99", "optim.momentum_ramp_epochs=0",
                   f"optim.momentum_schedule={schedule}"])
        assert momentum(h, 0).item() == pytest.approx(0.99)
        assert momentum(h, 3.5).item() == pytest.approx(0.99)


def test_exponential_momentum_is_deepnets_approach():
    """deepnet parameter.py GetMomentumAndEpsilon: m = m_f - (m_f - m_i) exp(-t / T)."""
    h = hyper(["optim.momentum_start=0.5", "optim.momentum_end=0.99", "optim.momentum_ramp_epochs=200",
               "optim.momentum_schedule=exponential"])
    for t in (0, 1, 50, 200, 1000):
        assert momentum(h, t).item() == pytest.approx(0.99 - 0.49 * math.exp(-t / 200), rel=1e-6)


@pytest.mark.parametrize("rule", ["hinton", "classical", "deepnet"])
def test_sgd_momentum_rules(rule):
    h = hyper([f"optim.momentum_rule={rule}", "optim.weight_decay=0.01"])
    w = torch.randn(1, 4, 3)
    b = torch.randn(1, 1, 3)
    dw, db = torch.randn(1, 4, 3), torch.randn(1, 1, 3)
    gw, gb = torch.randn(1, 4, 3), torch.randn(1, 1, 3)
    lr, m = torch.tensor(0.2).view(1, 1, 1), torch.tensor(0.9).view(1, 1, 1)
    factor = {"hinton": (1 - 0.9) * 0.2, "classical": 0.2, "deepnet": 1.0}[rule]
    want_dw = 0.9 * dw + factor * (gw + 0.01 * w)  # L2 on weights...
    want_db = 0.9 * db + factor * gb  # ...not on biases
    step = 0.2 if rule == "deepnet" else 1.0  # deepnet: D <- m D + g, w <- w - lr * D
    want_w, want_b = w - step * want_dw, b - step * want_db
    for live in (torch.ones(1, 1, 1, dtype=torch.bool), None):  # None: every model live, deepnet's fused kernel
        dw1, db1, w1, b1 = dw.clone(), db.clone(), w.clone(), b.clone()
        sgd_update_([w1, b1], [dw1, db1], [gw, gb], [True, False], lr, m, h, live)
        assert torch.allclose(dw1, want_dw) and torch.allclose(db1, want_db)
        assert torch.allclose(w1, want_w) and torch.allclose(b1, want_b)


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


# ----- deepnet's update rule, step for step against a numpy transcription of the authors' code


def deepnet_transcription(W, b, batches, *, eps0, half_life, m_i, m_f, T, l2, l1, l1_after, c):
    """nitishsrivastava/deepnet, transcribed in float64 for a ReLU net with a softmax output.

    neuralnet.py: gradients are batch means (mult=1.0/numcases); parameter.py Update:
        D <- m*D; D += l2*W; D += l1*sign(W) when step > apply_l1decay_after; D += grad
        W <- W - eps*D; then norm_limit(c, axis=0): each column (a unit's incoming weights) to norm <= c
    biases: Update('bias', step, no_reg=True). GetMomentumAndEpsilon:
        m = m_f - (m_f - m_i) * exp(-step / momentum_change_steps); eps = eps0 / (1 + step / half_life)
    """
    W, b, rescaled = [w.copy() for w in W], [x.copy() for x in b], 0
    DW, Db = [np.zeros_like(w) for w in W], [np.zeros_like(x) for x in b]
    for step, (x, y) in enumerate(batches):
        hs = [x]
        for i, (w, bias) in enumerate(zip(W, b)):
            z = hs[-1] @ w + bias
            hs.append(np.maximum(z, 0) if i < len(W) - 1 else z)
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        d = p / len(y)
        gW, gb = [None] * len(W), [None] * len(W)
        for i in reversed(range(len(W))):
            gW[i], gb[i] = hs[i].T @ d, d.sum(0)
            d = (d @ W[i].T) * (hs[i] > 0)
        m = m_f - (m_f - m_i) * np.exp(-step / T)
        eps = eps0 / (1 + step / half_life)
        for i in range(len(W)):
            DW[i] = m * DW[i] + l2 * W[i] + (l1 * np.sign(W[i]) if step > l1_after else 0) + gW[i]
            W[i] = W[i] - eps * DW[i]
            norms = np.sqrt((W[i] ** 2).sum(0))
            W[i] = W[i] * np.where(norms < c, 1.0, c / norms)
            rescaled += int((norms >= c).sum())
            Db[i] = m * Db[i] + gb[i]
            b[i] = b[i] - eps * Db[i]
    return W, b, rescaled


def test_deepnet_rule_matches_the_authors_code_step_for_step():
    """Eight updates with a changing eps and m, L2, L1 switched on after three updates and a binding
    max-norm: the trainer (momentum_rule deepnet) against the transcription above."""
    spiral = data_mod.load("spiral")
    cfg = tiny_config("model.dropout.kind=none", "optim.momentum_rule=deepnet", "optim.momentum_schedule=exponential",
                      "optim.momentum_start=0.5", "optim.momentum_end=0.99", "optim.momentum_ramp_epochs=0.1",
                      "optim.lr_schedule=inverse_t", "optim.lr=0.5", "optim.lr_half_life=2",
                      "optim.weight_decay=0.01", "optim.l1=0.002", "optim.l1_after=3", "optim.max_norm=1.0")
    tr = StackTrainer([cfg], spiral)
    W0 = [w[0].detach().double().numpy().T for w in tr.model.weights]  # deepnet's (n_in, n_out)
    b0 = [x[0, 0].detach().double().numpy() for x in tr.model.biases]
    tr.begin_epoch()
    B, steps = cfg.optim.batch_size, 8
    idx = tr.order[0].numpy()
    batches = [(spiral.x_train[idx[s * B:(s + 1) * B]].astype(np.float64), spiral.y_train[idx[s * B:(s + 1) * B]])
               for s in range(steps)]
    for _ in range(steps):
        tr.train_step()
    W, b, rescaled = deepnet_transcription(W0, b0, batches, eps0=0.5, half_life=2, m_i=0.5, m_f=0.99,
                                 T=0.1 * tr.steps_per_epoch, l2=0.01, l1=0.002, l1_after=3 - 1, c=1.0)
    for got, want in zip(tr.model.weights, W):
        np.testing.assert_allclose(got[0].detach().numpy().T, want, rtol=1e-4, atol=1e-5)
    assert rescaled > 0  # the constraint bound along the way
    for got, want in zip(tr.model.biases, b):
        np.testing.assert_allclose(got[0, 0].detach().numpy(), want, rtol=1e-4, atol=1e-5)
    # another rule is not this one once eps changes
    classical = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"momentum_rule": "classical"})})
    other = StackTrainer([classical], spiral)
    other.begin_epoch()
    for _ in range(steps):
        other.train_step()
    assert not np.allclose(other.model.weights[1][0].detach().numpy().T, W[1], rtol=1e-3, atol=1e-4)


def test_each_model_takes_its_own_update_path_so_alone_equals_stacked():
    """deepnet models without L1 take torch's fused kernel, the others the ops; in a mixed stack each model's
    numbers are exactly those it gets alone, and the fused one's are the rule's (to float rounding)."""
    from dropout_lab.nets import optim

    cfgs = [["optim.momentum_rule=deepnet", "optim.lr=0.1"],
            ["optim.momentum_rule=deepnet", "optim.lr=0.2", "optim.weight_decay=0.01"],
            ["optim.momentum_rule=hinton", "optim.lr=0.3"],
            ["optim.momentum_rule=deepnet", "optim.l1=0.001"]]  # L1: the ops, not the kernel
    h = hyper(*cfgs)
    assert h.fusable == (True, True, False, False)
    torch.manual_seed(0)
    w, b = torch.randn(4, 5, 3), torch.randn(4, 1, 5)
    d_w, d_b = torch.randn(4, 5, 3), torch.randn(4, 1, 5)
    g_w, g_b = torch.randn(4, 5, 3), torch.randn(4, 1, 5)
    lr, m = torch.tensor([0.1, 0.2, 0.3, 0.1]).view(4, 1, 1), torch.tensor([0.9, 0.8, 0.7, 0.6]).view(4, 1, 1)
    stacked = [t.clone() for t in (w, b, d_w, d_b)]
    sgd_update_(stacked[:2], stacked[2:], [g_w, g_b], [True, False], lr, m, h, None)
    for k, c in enumerate(cfgs):
        alone = [t[k:k + 1].clone() for t in (w, b, d_w, d_b)]
        sgd_update_(alone[:2], alone[2:], [g_w[k:k + 1], g_b[k:k + 1]], [True, False], lr[k:k + 1], m[k:k + 1],
                    hyper(c), None)
        for s, a in zip(stacked, alone):
            assert torch.equal(s[k:k + 1], a), k
    # the fused model 1 against the rule by hand: D <- m D + (g + wd w) on weights, w <- w - lr D
    want_d = 0.8 * d_w[1] + (g_w[1] + 0.01 * w[1])
    assert torch.allclose(stacked[2][1], want_d, atol=1e-6) and torch.allclose(stacked[0][1], w[1] - 0.2 * want_d,
                                                                               atol=1e-6)
    assert torch.allclose(stacked[3][1], 0.8 * d_b[1] + g_b[1], atol=1e-6)  # no L2 on the bias
    # without the kernel (an older torch) the same numbers, to float rounding
    saved, optim.FUSED_SGD = optim.FUSED_SGD, False
    try:
        eager = [t.clone() for t in (w, b, d_w, d_b)]
        sgd_update_(eager[:2], eager[2:], [g_w, g_b], [True, False], lr, m, h, None)
    finally:
        optim.FUSED_SGD = saved
    for s, e in zip(stacked, eager):
        assert torch.allclose(s, e, atol=1e-6)


def test_a_checkpoint_of_the_previous_format_resumes_with_its_momentum_turned(tmp_path):
    """Format 2 stored v = -D; a resumed run continues from the same momentum either way."""
    data = data_mod.load("spiral")
    cfg = tiny_config("optim.momentum_rule=deepnet")
    tr = StackTrainer([cfg], data)
    tr.begin_epoch()
    for _ in range(3):
        tr.train_step()
    st = tr.model_state(0)
    old = {**st, "format": 2, "optim": [-t for t in st["optim"]]}
    a, b = StackTrainer([cfg], data), StackTrainer([cfg], data)
    a.load_model_state(0, st)
    b.load_model_state(0, old)
    for x, y in zip(a._optim_tensors(), b._optim_tensors()):
        assert torch.equal(x, y) and x.abs().sum() > 0
