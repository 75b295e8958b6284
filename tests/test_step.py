"""The hand-written step (step.py) against autograd, bf16 against its emulation, and the mask bits."""

import math

import pytest
import torch
import torch.nn.functional as F

from dropout_lab.nets import step
from dropout_lab.nets.layers import MASK_BITS, drop_threshold, keep_mask, uniform16
from dropout_lab.nets.model import StackedMLP, generator
from dropout_lab.nets.optim import kl_sparsity


def stack(activation="relu", kind="bernoulli", scaling="inverted"):
    # three models of one shape, one of them without dropout (p = 0 in the stack)
    return StackedMLP([12, 20, 16, 5], seeds=[3, 4, 5], p_input=[0.2, 0.0, 0.1], p_hidden=[0.5, 0.0, 0.3],
                      activation=activation, kind=kind, scaling=scaling, init_std=0.3).train()


def rng_states(m):
    return [[g.get_state() for g in d.generators] for d in [m.drop_in, *m.drops]]


def set_rng(m, states):
    for d, st in zip([m.drop_in, *m.drops], states):
        for g, s in zip(d.generators, st):
            g.set_state(s)


def autograd_reference(m, x, y, kl=None):
    """The same loss through the model's own forward (layers.Dropout) and autograd."""
    for p in m.parameters():
        p.grad = None
    acts = [] if kl is not None else None
    logits = m(x, acts)
    nll = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")
    loss = nll.mean(dim=1)
    if kl is not None:
        loss = loss + kl[0] * kl_sparsity(acts, kl[1], m.activation == "logistic")
    loss.sum().backward()
    return nll.detach(), logits.detach(), [p.grad.clone() for p in [*m.weights, *m.biases]]


CASES = [("relu", "bernoulli", "inverted"), ("relu", "bernoulli", "weight"), ("relu", "gaussian", "inverted"),
         ("relu", "none", "inverted"), ("logistic", "bernoulli", "inverted"), ("tanh", "gaussian", "inverted")]


@pytest.mark.parametrize("activation,kind,scaling", CASES)
@pytest.mark.parametrize("with_kl", [False, True])
def test_hand_written_gradients_equal_autograd(activation, kind, scaling, with_kl):
    torch.manual_seed(0)
    m = stack(activation, kind, scaling)
    x, y = torch.rand(3, 9, 12), torch.randint(0, 5, (3, 9))
    kl = (torch.tensor([0.0, 0.3, 1.5]), torch.tensor([[0.05], [0.1], [0.2]])) if with_kl else None
    start = rng_states(m)
    nll, logits, grads = step.forward_backward(m, x, y, step.Gemm("fp32", torch.device("cpu")), kl)
    after = rng_states(m)
    set_rng(m, start)
    nll_ref, logits_ref, grads_ref = autograd_reference(m, x, y, kl)
    assert all(torch.equal(a, b) for la, lb in zip(after, rng_states(m)) for a, b in zip(la, lb))  # same draws
    torch.testing.assert_close(logits, logits_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(nll, nll_ref, rtol=1e-5, atol=1e-6)
    for g, r in zip(grads, grads_ref):
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    assert grads[0].abs().sum() > 0 and grads[-1].abs().sum() > 0


def test_bf16_emulation_gives_the_native_kernels_numbers():
    """Where the CPU lacks bf16 instructions the bf16 GEMM is emulated in fp32; both round the same exact
    products, so they differ at most where fp32 sums in another order cross a bf16 rounding boundary."""
    torch.manual_seed(1)
    cpu = torch.device("cpu")
    native, emulated = step.Gemm("bf16", cpu), step.Gemm("bf16", cpu)
    native.kernels, emulated.kernels = "native", "emulated"
    a, b = torch.randn(2, 16, 64), torch.randn(2, 64, 24)
    n = native.mm(native.cast(a, "a"), native.cast(b, "b"), "ab")
    e = emulated.mm(emulated.cast(a, "a"), emulated.cast(b, "b"), "ab")
    assert n.dtype == e.dtype == torch.float32
    assert torch.equal(e, e.bfloat16().float())  # bf16 values in an fp32 container
    ulp = 2.0 ** (torch.floor(torch.log2(n.abs().clamp_min(1e-30))) - 7)
    assert ((n - e).abs() <= ulp).all()
    assert (n == e).float().mean() > 0.95
    exact = torch.bmm(a, b)  # and both are bf16-rounded fp32 products, not fp32 ones
    assert not torch.equal(e, exact) and torch.allclose(e, exact, rtol=0.02, atol=0.15)


def test_bf16_step_follows_fp32_to_bf16_accuracy_and_keeps_fp32_masters():
    torch.manual_seed(2)
    m = stack()
    x, y = torch.rand(3, 9, 12), torch.randint(0, 5, (3, 9))
    start = rng_states(m)
    _, _, g32 = step.forward_backward(m, x, y, step.Gemm("fp32", torch.device("cpu")))
    set_rng(m, start)
    _, logits, g16 = step.forward_backward(m, x, y, step.Gemm("bf16", torch.device("cpu")))
    assert logits.dtype == torch.float32 and all(g.dtype == torch.float32 for g in g16)
    assert all(w.dtype == torch.float32 for w in m.weights)
    for a, b in zip(g16, g32):  # a whole-tensor bound: a unit near z = 0 may switch on in one and not the other
        assert (a - b).norm() <= 0.05 * b.norm()
    assert any(not torch.equal(a, b) for a, b in zip(g16, g32))  # bf16 really ran
    # both kernels, whichever this machine picks by default: torch's bf16 GEMM (however slow here) and the
    # fp32 emulation round the same sums, so they agree far more closely than either agrees with fp32; an
    # emulation that skipped a rounding would sit at fp32's distance from the native kernel
    got = {}
    for kernels in ("native", "emulated"):
        other = step.Gemm("bf16", torch.device("cpu"))
        other.kernels = kernels
        set_rng(m, start)
        _, _, got[kernels] = step.forward_backward(m, x, y, other)
    flat = {k: torch.cat([g.flatten() for g in gs]) for k, gs in (*got.items(), ("fp32", g32))}
    assert (flat["native"] - flat["emulated"]).norm() <= 0.1 * (flat["native"] - flat["fp32"]).norm()
    assert (flat["native"] - flat["fp32"]).norm() > 1e-3 * flat["fp32"].norm()  # bf16's own distance is there


def test_tf32_is_refused_off_cuda():
    with pytest.raises(ValueError, match="tf32: only on CUDA"):
        step.Gemm("tf32", torch.device("cpu"))


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.8])
def test_keep_rate_matches_p_within_sampling_error(p):
    n = 4_000_000
    keep = keep_mask((2, 1000, n // 2000), torch.full((2, 1, 1), p), [generator(1), generator(2)], "cpu")
    rate = keep.float().mean().item()
    sd = math.sqrt(p * (1 - p) / n)
    assert abs(rate - (1 - p)) <= 4 * sd + 1e-12
    # the 16-bit grid: P(drop) = round(p * 2^16) / 2^16 exactly
    t = drop_threshold(torch.tensor(p)).item()
    assert (t + 2 ** (MASK_BITS - 1)) / 2 ** MASK_BITS == round(p * 2 ** MASK_BITS) / 2 ** MASK_BITS


def test_every_bit_of_every_mask_lane_is_uniform():
    """Four 16-bit decisions share each 64-bit word: each of the 16 bits of each lane is set half the time, so a
    stuck or biased bit shows here, whichever bit it is (at p = 0.5 a decision reads only the sign bit)."""
    n = 400_000  # draws per lane
    u = uniform16((1, n // 100, 400), [generator(9)], "cpu").view(n // 100, 100, 4).to(torch.int32)  # lane j of a word
    bits = torch.stack([((u >> b) & 1).float().mean(dim=(0, 1)) for b in range(MASK_BITS)])  # (bit, lane)
    assert bits.shape == (16, 4)
    assert torch.all((bits - 0.5).abs() < 4 * math.sqrt(0.25 / n)), bits


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5, 0.7, 0.95])
def test_each_mask_lane_keeps_1_minus_p(p):
    """The decision of each lane of a word, at thresholds that read every bit: its keep rate is 1 - p."""
    n = 400_000
    keep = keep_mask((1, n // 100, 400), torch.full((1, 1, 1), p), [generator(11)], "cpu")
    lanes = keep.view(n // 100, 100, 4).float().mean(dim=(0, 1))
    assert torch.all((lanes - (1 - p)).abs() < 4 * math.sqrt(p * (1 - p) / n)), lanes


def test_a_p_next_to_one_drops_almost_all_rather_than_none():
    t = drop_threshold(torch.tensor(1 - 2.0 ** -20))
    assert t.item() == 2 ** 15 - 1
    keep = keep_mask((1, 100, 100), torch.tensor(1 - 2.0 ** -20), [generator(0)], "cpu")
    assert keep.float().mean() < 0.01
