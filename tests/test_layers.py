"""Dropout layers against their defining statistics and against a numpy reference."""

import numpy as np
import pytest
import torch

from dropout_lab.nets.layers import MASK_BITS, Dropout, keep_mask, noise, uniform16
from dropout_lab.nets.model import StackedMLP


def gen(seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_bernoulli_inverted_statistics(p):
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = Dropout(p, "bernoulli", "inverted").train()(x)
    assert abs((y == 0).float().mean().item() - p) < 0.005  # fraction zeroed = p
    assert abs(y.mean().item() - 1.0) < 0.01  # mean output = input
    assert torch.allclose(y[y != 0], torch.tensor(1 / (1 - p)))


def test_weight_scaling_statistics_and_test_time():
    torch.manual_seed(0)
    p = 0.3
    d = Dropout(p, "bernoulli", "weight")
    x = torch.full((400_000,), 2.0)
    y = d.train()(x)
    assert abs((y == 0).float().mean().item() - p) < 0.005
    assert set(y.unique().tolist()) == {0.0, 2.0}  # kept units are not rescaled in training
    assert torch.allclose(d.eval()(x), x * (1 - p))  # the paper's "multiply by retention at test"


@pytest.mark.parametrize("scaling", ["inverted", "weight"])
def test_training_mean_equals_test_output(scaling):
    # whatever the scaling, the test-time output is the expectation of the training-time output
    torch.manual_seed(1)
    d = Dropout(0.4, "bernoulli", scaling)
    x = torch.rand(50)
    mean = d.train()(x.expand(20_000, 50)).mean(0)  # 20,000 independent masks in one call
    assert torch.allclose(mean, d.eval()(x), atol=0.02)


def test_inverted_and_weight_scaling_nets_agree_in_training_and_test():
    # A weight-scaled net whose post-dropout weights are W/(1-p) is the inverted net with W:
    # the same function in training (same masks) and at test. A scaling bug breaks one of the two.
    kw = dict(sizes=[6, 5, 4, 3], seeds=[3], p_input=[0.2], p_hidden=[0.5], init_std=0.3)
    inv = StackedMLP(**kw, scaling="inverted")
    wgt = StackedMLP(**kw, scaling="weight")
    with torch.no_grad():
        wgt.weights[0].div_(1 - 0.2)
        for w in list(wgt.weights)[1:]:
            w.div_(1 - 0.5)
    x = torch.rand(10, 6)
    assert torch.allclose(inv.train()(x), wgt.train()(x), atol=1e-6)
    assert torch.allclose(inv.eval()(x), wgt.eval()(x), atol=1e-6)
    assert not torch.allclose(inv.train()(x), inv.eval()(x))


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_gaussian_mean_and_variance(p):
    torch.manual_seed(0)
    d = Dropout(p, "gaussian")
    y = d.train()(torch.ones(400_000))
    assert abs(y.mean().item() - 1.0) < 0.01
    assert abs(y.var().item() - p / (1 - p)) / (p / (1 - p)) < 0.02  # sigma^2 = p/(1-p)
    assert torch.equal(d.eval()(torch.ones(10)), torch.ones(10))


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1])
def test_p_outside_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(bad)


def test_monte_carlo_mode_keeps_noise_at_eval():
    d = Dropout(0.5).eval()
    x = torch.ones(1000)
    assert torch.equal(d(x), x)
    d.mc = True
    assert (d(x) == 0).any()


# ---- numpy reference: the classic module of the seed notes (mask saved in forward, reused in backward)

class NumpyDropout:
    def __init__(self, p, scaling="inverted", kind="bernoulli", grid=None):
        # grid: the drop probability as the masks realise it (p rounded to their resolution)
        self.p, self.scaling, self.kind, self.grid = p, scaling, kind, p if grid is None else grid

    def forward(self, x, u):
        # u: the uniform (or normal) draws, so the reference sees the same randomness as torch
        if self.kind == "gaussian":
            p = np.float32(self.p)  # in float32 as the module computes it: near 1 + sigma * u = 0 a float64
            self.mask = np.float32(1) + np.sqrt(p / (np.float32(1) - p)) * u  # sigma would differ past rtol
        else:
            self.mask = (u >= self.grid).astype(np.float32)
            if self.scaling == "inverted":
                self.mask /= 1 - self.p
        return self.mask * x

    def backward(self, grad_out):
        return self.mask * grad_out


@pytest.mark.parametrize("kind,scaling", [("bernoulli", "inverted"), ("bernoulli", "weight"), ("gaussian", "inverted")])
def test_matches_numpy_reference_forward_and_backward(kind, scaling):
    K, B, n, p = 3, 8, 20, 0.35
    torch.manual_seed(0)  # x and grad_out from the global generator: the same whichever tests ran before
    gens = [gen(100 + k) for k in range(K)]
    twins = [gen(100 + k) for k in range(K)]
    d = Dropout([p] * K, kind, scaling, generators=gens).train()
    x = torch.randn(K, B, n, requires_grad=True)
    y = d(x)
    grad_out = torch.randn(K, B, n)
    y.backward(grad_out)

    if kind == "gaussian":
        u = noise((K, B, n), twins, "cpu", normal=True).numpy()
        ref = NumpyDropout(p, scaling, kind)
    else:  # 16-bit uniforms on [0, 1), against p on the same 2^-16 grid (layers.MASK_BITS)
        u = (uniform16((K, B, n), twins, "cpu").numpy().astype(np.float64) + 2**15) / 2**MASK_BITS
        ref = NumpyDropout(p, scaling, kind, grid=round(p * 2**MASK_BITS) / 2**MASK_BITS)
    y_ref = ref.forward(x.detach().numpy(), u)
    np.testing.assert_allclose(y.detach().numpy(), y_ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(x.grad.numpy(), ref.backward(grad_out.numpy()), rtol=1e-6, atol=1e-7)


def test_masks_come_from_each_models_own_generator():
    d = Dropout([0.5, 0.5], generators=[gen(7), gen(7)]).train()
    y = d(torch.ones(2, 4, 50))
    assert torch.equal(y[0], y[1])  # same seed, same mask, whatever the slot
    d2 = Dropout([0.5, 0.5], generators=[gen(7), gen(8)]).train()
    y2 = d2(torch.ones(2, 4, 50))
    assert torch.equal(y2[0], y[0]) and not torch.equal(y2[1], y[1])


def test_dropout_really_feeds_the_next_layer():
    # A seed note computed dropout1.forward(...) and then fed the *undropped* activations to the next
    # layer. Rebuild the forward pass by hand with the same masks: the model must use the dropped ones.
    torch.manual_seed(0)
    m = StackedMLP([5, 40, 3], seeds=[11], p_input=[0.0], p_hidden=[0.5], init_std=0.5).train()
    twin = gen(0)
    twin.set_state(m.drops[0].generators[0].get_state())
    x = torch.rand(16, 5)
    out = m(x)[0]
    w1, w2, b1, b2 = m.weights[0][0].t(), m.weights[1][0].t(), m.biases[0][0], m.biases[1][0]
    h = torch.relu(x @ w1 + b1)
    keep = keep_mask((1, *h.shape), torch.tensor(0.5), [twin], "cpu")[0].float()
    assert torch.allclose(out, (h * keep / 0.5) @ w2 + b2, atol=1e-6)
    assert not torch.allclose(out, h @ w2 + b2, atol=1e-3)  # the undropped path is not what runs
