"""L1, KL-sparsity, evaluation intervals and Monte-Carlo evaluation, each against an explicit formula."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dropout_lab.nets.optim import kl_sparsity
from dropout_lab.training import data as data_mod
from dropout_lab.training.evaluate import MC_BLOCK, entropy, expected_calibration_error, mc_evaluate
from dropout_lab.training.train import StackTrainer, train_stack

from conftest import tiny_config


@pytest.fixture(scope="module")
def spiral():
    return data_mod.load("spiral")


def test_l1_and_kl_step_match_autograd_of_the_penalised_loss(spiral):
    """One SGD step with L1 and KL-sparsity equals a step on nll + l1*|W| + beta*KL from autograd, per model."""
    regs = [("optim.l1=0.003", "optim.kl_sparsity=0.0"), ("optim.l1=0.0", "optim.kl_sparsity=0.05"),
            ("optim.l1=0.001", "optim.kl_sparsity=0.02")]
    cfgs = [tiny_config("model.dropout.kind=none", "optim.max_norm=null", "optim.kl_target=0.1",
                        "model.activation=logistic", f"seed={k}", *r) for k, r in enumerate(regs)]
    tr = StackTrainer(cfgs, spiral)
    w0 = [w.detach().clone() for w in tr.model.weights]
    b0 = [b.detach().clone() for b in tr.model.biases]
    tr.begin_epoch()
    idx = tr.order[:, :tr.batch]
    tr.train_step()
    for k, c in enumerate(cfgs):
        ws = [w[k].clone().requires_grad_() for w in w0]
        bs = [b[k].clone().requires_grad_() for b in b0]
        h, acts = torch.as_tensor(spiral.x_train)[idx[k]], []
        for i, (w, b) in enumerate(zip(ws, bs)):
            h = h @ w.t() + b  # rows: (n_out, n_in)
            if i < len(ws) - 1:
                h = torch.sigmoid(h)
                acts.append(h)
        loss = F.cross_entropy(h, torch.as_tensor(spiral.y_train)[idx[k]])
        rho = c.optim.kl_target
        for a in acts:
            r = a.mean(0)
            kl = rho * torch.log(rho / r) + (1 - rho) * torch.log((1 - rho) / (1 - r))
            loss = loss + c.optim.kl_sparsity * kl.sum()
        loss = loss + c.optim.l1 * sum(w.abs().sum() for w in ws)
        loss.backward()
        scale = (1 - c.optim.momentum_start) * c.optim.lr  # hinton rule, first step: dw = -(1-m) lr g
        for w, w_start, got in zip(ws, w0, tr.model.weights):
            torch.testing.assert_close(got[k].detach(), w_start[k] - scale * w.grad, rtol=1e-4, atol=1e-6)


def test_kl_sparsity_formula():
    a = torch.tensor([[[0.2, 0.5], [0.4, 0.1]]])  # (K=1, B=2, n=2): means 0.3, 0.3
    rho = torch.tensor([[0.1]])
    want = 2 * (0.1 * math.log(0.1 / 0.3) + 0.9 * math.log(0.9 / 0.7))
    assert kl_sparsity([a], rho, logistic=True).item() == pytest.approx(want, rel=1e-5)


def test_relu_sparsity_gradient_is_deepnets_at_means_below_above_one_and_zero():
    """For ReLU units the penalty's gradient w.r.t. each activation is (rho_hat - rho) / B, as deepnet's
    layer.py adds cost * (rho_hat - rho) to every case's derivative: right for means of 0.6, 2.5 and 0."""
    B, rho = 4, 0.05
    cols = np.array([[0.0, 1.2, 0.0, 1.2],  # mean 0.6
                     [0.0, 5.0, 5.0, 0.0],  # mean 2.5: a Bernoulli KL is undefined here; the old clamp gave 0
                     [0.0, 0.0, 0.0, 0.0]]).T  # mean 0: a dead unit
    a = torch.tensor(cols[None], requires_grad=True)  # (K=1, B, n=3)
    kl_sparsity([a], torch.tensor([[rho]], dtype=torch.float64), logistic=False).sum().backward()
    want = np.broadcast_to((cols.mean(axis=0) - rho) / B, (B, 3))
    np.testing.assert_allclose(a.grad[0].numpy(), want, rtol=1e-12)
    g = a.grad[0, 0]
    assert g[1] > g[0] > 0 > g[2]  # the mean of 2.5 is pulled down hardest; the dead unit is pushed up


def test_eval_every_leaves_nan_between_test_passes_and_always_tests_the_last_epoch(spiral):
    cfg = tiny_config("optim.epochs=5", "eval.every=2")
    tested = [r[0]["epoch"] for r in train_stack([cfg], spiral) if not math.isnan(r[0]["test_error"])]
    assert tested == [2, 4, 5]


def test_ece_against_a_numpy_loop():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(2, 500, 4, generator=g), dim=-1)
    y = torch.randint(0, 4, (500,), generator=g)
    p, yn = probs.numpy(), y.numpy()
    for k in range(2):
        conf, pred = p[k].max(-1), p[k].argmax(-1)
        want = 0.0
        for lo, hi in zip(np.linspace(0, 1, 16)[:-1], np.linspace(0, 1, 16)[1:]):
            inside = (conf > lo) & (conf <= hi)
            if inside.any():
                want += inside.mean() * abs(conf[inside].mean() - (pred[inside] == yn[inside]).mean())
        assert expected_calibration_error(probs, y)[k].item() == pytest.approx(want, abs=1e-6)
    assert entropy(torch.full((1, 4), 0.25)).item() == pytest.approx(math.log(4))


def test_mc_of_a_net_without_dropout_is_weight_scaling_and_dropout_repeats_differ(spiral):
    cfgs = [tiny_config("model.dropout.kind=none", "seed=0"), tiny_config("seed=1", "model.dropout.p_input=0.0")]
    tr = StackTrainer(cfgs, spiral)
    tr.train_epoch()
    out = mc_evaluate(tr, [1, 4, 16], repeats=3, seeds=[0, 1])
    _, ws_error = tr.evaluate(tr.x_test, tr.y_test)
    assert out[0]["weight_scaling"]["test_error"] == pytest.approx(ws_error[0].item(), abs=1e-6)
    for e in out[0]["mc"]:  # no noise: every k, every repeat is the clean pass
        assert e["errors"] == pytest.approx([ws_error[0].item()] * 3, abs=1e-6)
    assert len({round(x, 6) for x in out[1]["mc"][0]["errors"]}) > 1  # k = 1: independent thinned nets
    # reproducible, and the training masks are left where they were
    state = [g.get_state() for g in tr.model.drops[0].generators]
    again = mc_evaluate(tr, [1, 4, 16], repeats=3, seeds=[0, 1])
    assert again == out
    assert all(torch.equal(a, g.get_state()) for a, g in zip(state, tr.model.drops[0].generators))


def test_mc_evaluation_of_a_model_is_the_same_alone_and_in_a_stack(spiral):
    """Issue 12: a model's mc.json must not depend on how many models share its stack. The 700 test
    examples span three MC blocks. The old chunk, 2^24 // (K x max(sizes)), counts the input width:
    with 10,240 inputs (random Fourier features of the spiral) it split the test set at K = 3 (546) and
    not at K = 1 (1638), and the noise, drawn chunk by chunk, differed. No input dropout keeps the wide
    input cheap; few examples keep the passes few."""
    rng = np.random.default_rng(0)
    proj, phase = rng.normal(0.0, 3.0, (2, 10240)), rng.uniform(0.0, 2 * math.pi, 10240)
    wide = lambda x: np.cos(x @ proj + phase).astype(np.float32)  # noqa: E731
    data = data_mod.Dataset("wide-spiral", wide(spiral.x_train[:500]), spiral.y_train[:500],
                            wide(spiral.x_test[:700]), spiral.y_test[:700])
    common = ("model.hidden=[32,64]", "model.dropout.p_input=0.0")
    cfgs = [tiny_config(*common, "seed=0"),
            tiny_config(*common, "seed=1", "model.dropout.p_hidden=0.3"),
            tiny_config(*common, "seed=2", "model.dropout.kind=none")]
    tr = StackTrainer(cfgs, data)
    tr.begin_epoch()
    for _ in range(5):  # weights that are no longer the (stack-independent) init
        tr.train_step()
    tr.end_epoch()
    assert tr.x_test.shape[0] > 2 * MC_BLOCK
    ks, repeats = [1, 2], 2
    stacked = mc_evaluate(tr, ks, repeats, [c.seed for c in cfgs])
    for k, c in enumerate(cfgs):
        alone = StackTrainer([c], data)
        alone.load_model_state(0, tr.model_state(k))  # the same weights, a stack of one
        got = mc_evaluate(alone, ks, repeats, [c.seed])[0]
        want = stacked[k]
        # error counts over the same test set: equal, not close
        assert [e["errors"] for e in got["mc"]] == [e["errors"] for e in want["mc"]], f"model {k}"
        for part in ("weight_scaling", "mc_uncertainty"):
            assert got[part]["test_error"] == want[part]["test_error"], f"model {k} {part}"
            assert got[part] == pytest.approx(want[part], rel=1e-5, abs=1e-7), f"model {k} {part}"
    # the oracle can fail: models 0 and 1 do draw noise, so their k = 1 errors vary over the repeats
    assert all(len(set(stacked[k]["mc"][0]["errors"])) > 1 for k in (0, 1))
