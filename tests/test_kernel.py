"""The one-pass update (update.c through kernel.py) against torch's ops: the same SGD numbers bit for bit, the same
max-norm to its last bit, the bf16 copies of what it wrote, and training that takes it or not to the same place."""

import math

import pytest
import torch

from dropout_lab.nets import kernel, optim
from dropout_lab.nets.optim import Hyper, max_norm_, max_norm_rest_, sgd_update_
from dropout_lab.training.data import spiral
from dropout_lab.training.train import StackTrainer

from conftest import tiny_config

pytestmark = pytest.mark.skipif(kernel.library() is None, reason=f"no kernel here: {kernel.why_not()}")


def _case(K=3, shapes=((48, 33), (16, 48)), seed=0):
    """Weights (K, n_out, n_in) and biases (K, 1, n_out); every parameter's length per model a multiple of 16,
    where torch's vector code covers it all (its scalar tail may contract the momentum into an fma)."""
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(K, o, i, generator=g) * 0.3 for o, i in shapes]
    bs = [torch.randn(K, 1, o, generator=g) for o, _ in shapes]
    params = [*ws, *bs]
    bufs = [torch.randn(p.shape, generator=g) * 0.1 for p in params]
    grads = [torch.randn(p.shape, generator=g) * 0.1 for p in params]
    return params, bufs, grads, [True] * len(ws) + [False] * len(bs)


def _torch_ops(params, bufs, grads, is_weight, lr, m, wd, c):
    """The reference: torch._fused_sgd_ per model and parameter kind, then optim.max_norm_."""
    for k in range(params[0].shape[0]):
        for decays in (True, False):
            chosen = [i for i, w in enumerate(is_weight) if w == decays]
            torch._fused_sgd_([params[i][k] for i in chosen], [grads[i][k].float() for i in chosen],
                              [bufs[i][k] for i in chosen], weight_decay=wd[k] if decays else 0.0, momentum=m[k],
                              lr=lr[k], dampening=0.0, nesterov=False, maximize=False, is_first_step=False)
    weights = [p for p, w in zip(params, is_weight) if w]
    max_norm_(weights, torch.tensor(c).view(-1, 1, 1))


@pytest.mark.parametrize("bf16_grads", [False, True])
def test_the_sgd_step_is_torchs_fused_kernel_bit_for_bit(bf16_grads):
    """Without max-norm every weight, bias and momentum buffer equals torch._fused_sgd_'s exactly, per model
    with its own lr, momentum and L2 (0 included), from fp32 or bf16 gradients."""
    params, bufs, grads, is_weight = _case()
    if bf16_grads:
        grads = [g.bfloat16() for g in grads]
    lr, m, wd, c = [0.05, 0.3, 1.7], [0.95, 0.5, 0.1], [1e-3, 0.0, 0.25], [math.inf] * 3
    want = [t.clone() for t in (*params, *bufs)]
    _torch_ops(want[:len(params)], want[len(params):], grads, is_weight, lr, m, wd, c)
    kernel.sgd_rows_(params, bufs, grads, is_weight, [None] * len(params), lr, m, wd, c)
    for got, w in zip((*params, *bufs), want):
        assert torch.equal(got, w)
    assert not torch.equal(want[0], _case()[0][0])  # it moved


def test_ragged_lengths_differ_from_torch_by_an_ulp_at_most():
    """A bias of 10 (the output layer's) lies wholly in torch's scalar tail; the step agrees to float rounding."""
    params, bufs, grads, is_weight = _case(shapes=((10, 7), (5, 10)), seed=4)
    lr, m, wd, c = [0.05, 0.3, 1.7], [0.95, 0.5, 0.9], [1e-3, 0.0, 0.25], [math.inf] * 3
    want = [t.clone() for t in (*params, *bufs)]
    _torch_ops(want[:len(params)], want[len(params):], grads, is_weight, lr, m, wd, c)
    kernel.sgd_rows_(params, bufs, grads, is_weight, [None] * len(params), lr, m, wd, c)
    for got, w in zip((*params, *bufs), want):
        torch.testing.assert_close(got, w, rtol=2.5e-7, atol=1e-8)


def test_max_norm_and_the_bf16_copies_in_the_same_pass():
    """With max-norm binding on some rows, weights equal max_norm_'s to a few ulps (the row norm is summed in
    another order), every row ends within c, the buffers stay exact, and the bf16 copy is the rounding of
    exactly the weights written."""
    params, bufs, grads, is_weight = _case(seed=1)
    lr, m, wd, c = [0.05, 0.3, 1.7], [0.95, 0.5, 0.9], [1e-3, 0.0, 0.25], [2.0, math.inf, 1.5]
    want = [t.clone() for t in (*params, *bufs)]
    _torch_ops(want[:len(params)], want[len(params):], grads, is_weight, lr, m, wd, c)
    lows = [torch.empty_like(p, dtype=torch.bfloat16) for p in params[:2]]
    kernel.sgd_rows_(params, bufs, grads, is_weight, [*lows, None, None], lr, m, wd, c)
    for got, w in zip(params, want):
        torch.testing.assert_close(got, w, rtol=4e-7, atol=0)
    for got, w in zip(bufs, want[len(params):]):
        assert torch.equal(got, w)
    for w, low in zip(params[:2], lows):
        assert torch.equal(low, w.bfloat16())
    norms = torch.cat([w.norm(dim=2) for w in params[:2]], dim=1)  # (K, units)
    bound = (norms > torch.tensor([2.0, math.inf, 1.5]).view(-1, 1) * (1 - 1e-3))
    assert bound[0].any() and bound[2].any() and not bound[2].all()  # binds on some rows, not all
    assert (norms[0] <= 2.0 * (1 + 1e-6)).all() and (norms[2] <= 1.5 * (1 + 1e-6)).all()


def test_models_left_out_are_not_touched():
    params, bufs, grads, is_weight = _case(seed=2)
    before = [t.clone() for t in (*params, *bufs)]
    kernel.sgd_rows_(params, bufs, grads, is_weight, [None] * 4, [0.1] * 3, [0.9] * 3, [0.0] * 3, [1.0] * 3,
                     on=[True, False, True])
    for got, was in zip((*params, *bufs), before):
        assert torch.equal(got[1], was[1]) and not torch.equal(got[0], was[0]) and not torch.equal(got[2], was[2])


def _hyper(*overrides_per_model):
    return Hyper.from_configs([tiny_config(*o) for o in overrides_per_model], "cpu")


def test_in_a_mixed_stack_each_model_gets_what_it_gets_alone():
    """One-pass models beside a hinton model and an L1 model (both on the ops) and a frozen one: each model's
    numbers, max-norm included, are exactly those it gets alone; the returned flags say whose max-norm is done."""
    cfgs = [["optim.momentum_rule=deepnet", "optim.lr=0.1", "optim.max_norm=1.0"],
            ["optim.momentum_rule=hinton", "optim.lr=0.3", "optim.max_norm=1.0"],
            ["optim.momentum_rule=deepnet", "optim.lr=0.2", "optim.weight_decay=0.01", "optim.max_norm=0.8"],
            ["optim.momentum_rule=deepnet", "optim.l1=0.001", "optim.max_norm=1.0"]]
    h = _hyper(*cfgs)
    params, bufs, grads, is_weight = _case(K=4, seed=3)
    lr, m = torch.tensor([0.1, 0.3, 0.2, 0.1]).view(4, 1, 1), torch.tensor([0.9, 0.8, 0.7, 0.6]).view(4, 1, 1)

    def update(ps, bs, gs, hh, lr_, m_):
        done = sgd_update_(ps, bs, gs, is_weight, lr_, m_, hh, None, one_pass=True)
        max_norm_rest_(ps[:2], hh.max_norm, done)  # as the trainer does
        return done

    stacked = [t.clone() for t in (*params, *bufs)]
    assert update(stacked[:4], stacked[4:], grads, h, lr, m) == [True, False, True, False]
    for k, c in enumerate(cfgs):
        alone = [t[k:k + 1].clone() for t in (*params, *bufs)]
        update(alone[:4], alone[4:], [g[k:k + 1] for g in grads], _hyper(c), lr[k:k + 1], m[k:k + 1])
        for s, a in zip(stacked, alone):
            assert torch.equal(s[k:k + 1], a), k
    # the one-pass models' max-norm is the kernel's alone: a second rescale would move rows sitting at c
    direct = [t[:1].clone() for t in (*params, *bufs)]
    kernel.sgd_rows_(direct[:4], direct[4:], [g[:1] for g in grads], is_weight, [None] * 4, [0.1], [0.9], [0.0], [1.0])
    for s, d in zip(stacked, direct):
        assert torch.equal(s[:1], d)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_with_the_kernel_follows_training_without(precision):
    """A stack trained 100 steps with the kernel against the same stack on torch ops (the paper's recipe:
    deepnet rule, max-norm binding): equal to float rounding, and the bf16 weights the GEMMs read are
    those of the weights, never a stale copy."""
    data = spiral()
    cfgs = [tiny_config(f"seed={s}", "optim.momentum_rule=deepnet", "optim.max_norm=0.5", "optim.lr=0.5",
                        f"precision={precision}") for s in (0, 1)]
    with_k, without = StackTrainer(cfgs, data), StackTrainer(cfgs, data)
    without.one_pass = False
    assert with_k.one_pass
    for tr in (with_k, without):
        for _ in range(4):
            last = tr.train_epoch()
    assert with_k.step == 120
    assert last["max_norm_bound"].min() > 0  # the constraint binds
    for a, b in zip(with_k.model.weights, without.model.weights):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    if precision == "bf16":  # the copy the next step reads is the rounding of the weights as they are now
        for i, w in enumerate(with_k.model.weights):
            assert torch.equal(with_k.gemm.cast(w, f"w{i}"), w.bfloat16())
        with torch.no_grad():  # a write by torch (a checkpoint's load) makes the kept copy stale: cast redoes it
            with_k.model.weights[0].mul_(0.5)
        assert torch.equal(with_k.gemm.cast(with_k.model.weights[0], "w0"), with_k.model.weights[0].bfloat16())


def test_without_a_compiler_training_says_so_once_and_uses_torch_ops(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(kernel, "_lib", None)
    monkeypatch.setattr(kernel, "_why_not", None)
    monkeypatch.setattr(kernel, "_said", False)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("DROPOUT_LAB_DATA", str(tmp_path))  # no cached build to find
    assert kernel.library() is None and "no-such-cc" in kernel.why_not()
    cfg = tiny_config("optim.momentum_rule=deepnet", "optim.max_norm=0.5")
    tr = StackTrainer([cfg], spiral())
    assert not tr.one_pass
    tr.train_epoch()
    assert torch.isfinite(tr.model.weights[0]).all()
    err = capsys.readouterr().err
    assert err.count("one-pass update kernel is not used") == 1 and len(err.strip().splitlines()) == 1
    assert not optim.one_pass_ready(torch.device("cpu"))


def test_the_deepnet_rule_trains_from_zero_momentum():
    """A momentum ramp that starts at 0: D <- g + wd w, then w <- w - lr D (torch's fused kernel takes no
    buffer at m = 0, so that step is written out); the one pass and torch's path agree step by step."""
    cfg = tiny_config("optim.momentum_rule=deepnet", "optim.momentum_start=0.0", "optim.momentum_ramp_epochs=2",
                      "optim.weight_decay=0.1", "optim.max_norm=null")
    one, ops = StackTrainer([cfg], spiral()), StackTrainer([cfg], spiral())
    ops.one_pass = False
    w0 = [p.detach().clone() for p in ops.params]
    for tr in (one, ops):
        tr.begin_epoch()
        tr.train_step()  # m = 0 at the first step
    lr = float(cfg.optim.lr)
    for p, d, was in zip(ops.params, ops.state, w0):
        torch.testing.assert_close(p, was - lr * d, rtol=1e-6, atol=1e-7)
    for a, b in zip((*one.params, *one.state), (*ops.params, *ops.state)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    for tr in (one, ops):
        tr.train_epoch()
    for a, b in zip(one.params, ops.params):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_denormals_are_flushed_inside_the_update_and_nowhere_else():
    """A dead unit's momentum decays through the denormal range, where x86 arithmetic is ~100x slower (the update
    ran 10x slower after a few thousand steps); the kernel flushes them to 0 in its own threads and restores
    the caller's mode, so torch's arithmetic outside it keeps its denormals."""
    tiny = torch.finfo(torch.float32).tiny  # the smallest normal float
    params, bufs, grads, is_weight = _case(K=1, shapes=((16, 16),), seed=5)
    bufs[0].fill_(tiny * 0.5)  # denormal
    grads[0].zero_()
    kernel.sgd_rows_(params, bufs, grads, is_weight, [None, None], [0.1], [0.9], [0.0], [math.inf])
    if kernel.FLUSHES_DENORMALS:
        assert (bufs[0] == 0).all()
    else:
        assert (bufs[0] > 0).all()
    assert (torch.full((4,), tiny) * 0.5 > 0).all()  # the mode is restored for torch's own ops
