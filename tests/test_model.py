"""The stacked model and trainer: gradients, max-norm, divergence, and stack equivalence."""

import math

import pytest
import torch
import torch.nn.functional as F

from dropout_lab.nets.model import StackedMLP
from dropout_lab.nets.optim import at_max_norm, learning_rate, max_norm_, momentum, sgd_update_
from dropout_lab.training.data import spiral
from dropout_lab.training.train import StackTrainer, pack, train_stack

from conftest import tiny_config

# the GPU variants run where CUDA is (`make gpu-check`); CI has only the CPU
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device")])]


def test_dropped_unit_gets_no_outgoing_gradient_but_next_bias_does():
    torch.manual_seed(0)
    m = StackedMLP([4, 30, 3], seeds=[5], p_input=[0.0], p_hidden=[0.5], init_std=0.5).train()
    seen = {}
    m.drops[0].register_forward_hook(lambda mod, inp, out: seen.update(inp=inp[0], out=out))
    x = torch.rand(1, 4)  # one example
    m(x)[0].logsumexp(-1).sum().backward()
    active = seen["inp"][0, 0] != 0  # relu let it through
    dropped = active & (seen["out"][0, 0] == 0)
    kept = active & (seen["out"][0, 0] != 0)
    assert dropped.any() and kept.any()
    g_out = m.weights[1].grad[0].t()  # (30, 3): row j = unit j's outgoing weights
    assert torch.all(g_out[dropped] == 0)
    assert torch.all(g_out[kept].abs().sum(1) > 0)
    assert m.biases[1].grad.abs().sum() > 0  # the next layer's bias still learns from the example


def test_max_norm_caps_incoming_rows_per_unit():
    torch.manual_seed(0)
    # weights are (K, n_out, n_in): unit j's incoming weights are row j. Rows from well under to well
    # over c; rows and columns differ in length, so a column-wise implementation cannot pass
    w = torch.randn(3, 7, 20) * torch.linspace(0.05, 1.5, 7).view(7, 1)
    c = torch.tensor([1.0, 2.5, math.inf]).view(3, 1, 1)
    before = w.clone()
    max_norm_([w], c)
    for k in range(3):
        for j in range(7):
            row = before[k, j]  # unit j's incoming weights
            want = row * min(1.0, c[k].item() / row.norm().item())
            assert torch.allclose(w[k, j], want, atol=1e-6)
    norms = w.norm(dim=2)
    assert torch.all(norms[:2] <= c[:2].view(2, 1) + 1e-5)
    assert (before[1].norm(dim=1) < 2.5).any() and (before[1].norm(dim=1) > 2.5).any()  # both cases hit
    assert torch.equal(w[2], before[2])  # c = inf: off


def test_init_is_normal_with_init_std():
    m = StackedMLP([784, 500, 10], seeds=[0, 1], p_input=[0, 0], p_hidden=[0, 0], init_std=0.01)
    w = m.weights[0]
    assert abs(w.std().item() - 0.01) < 2e-4 and abs(w.mean().item()) < 2e-4
    assert not torch.equal(w[0], w[1])
    assert torch.all(m.biases[0] == 0)


def test_fan_out_init_is_what_deepnet_computes():
    """deepnet's DENSE_GAUSSIAN_SQRT_FAN_IN divides sigma by sqrt(dimensions[1]) = n_out for a dense edge; its
    example model leaves the first edge's sigma at the proto default 0.001."""
    cfg = tiny_config("model.hidden=[400,300]", "model.init=fan_out", "model.init_std=1.0",
                      "model.init_std_first=0.001", "seed=2")
    m = StackedMLP.from_configs([cfg], 784, 10)
    for w, want in zip(m.weights, [0.001 / 400 ** 0.5, 1 / 300 ** 0.5, 1 / 10 ** 0.5]):
        assert w.std().item() == pytest.approx(want, rel=0.03)
    fan_in = StackedMLP.from_configs([tiny_config("model.hidden=[400,300]", "model.init=fan_in",
                                                  "model.init_std=1.0")], 784, 10)
    for w, n_in in zip(fan_in.weights, [784, 400, 300]):
        assert w.std().item() == pytest.approx(n_in ** -0.5, rel=0.03)


def _paper_convention(scaling: str, *more):
    return tiny_config(f"model.dropout.scaling={scaling}", "model.dropout.p_input=0.2", "model.dropout.p_hidden=0.5",
                       "optim.momentum_rule=deepnet", "optim.momentum_schedule=exponential", "optim.lr=0.3",
                       "optim.lr_schedule=inverse_t", "optim.lr_half_life=10", "optim.momentum_ramp_epochs=1",
                       "optim.max_norm=1.5", "model.init_std=0.5", "seed=4", *more)


def _inverted_step(tr: StackTrainer, keep: list[float], convert: bool) -> None:
    """One step of an inverted-dropout net in the weight-scaled net's coordinates W_inv = keep * W: the lr
    of layer l's weights is lr * keep_l^2 and its constraint c * keep_l (keep_l: the retention of its input)."""
    h, B = tr.hyper, tr.batch
    idx = tr.order[:, tr.s * B:(tr.s + 1) * B]
    x, y = tr.x_pool[idx], tr.y_pool[idx]
    lr, m = learning_rate(h, tr.epoch, tr.step), momentum(h, tr.step / tr.steps_per_epoch)
    tr.model.train()
    F.cross_entropy(tr.model(x).transpose(1, 2), y).backward()
    L = len(tr.model.weights)
    for layer, (w, b) in enumerate(zip(tr.model.weights, tr.model.biases)):
        k = keep[layer] if convert else 1.0
        sgd_update_([w], [tr.state[layer]], [w.grad], [True], lr * k * k, m, h, None, tr.step)
        sgd_update_([b], [tr.state[L + layer]], [b.grad], [False], lr, m, h, None, tr.step)
        max_norm_([w], h.max_norm * k)
        w.grad = b.grad = None
    tr.step += 1
    tr.s += 1


def test_inverted_and_weight_scaled_nets_train_the_same_function_under_max_norm():
    """An inverted net with W_inv = (1-p) W computes what a weight-scaled net with W computes. Trained with the
    lr and c converted (lr (1-p)^2, c (1-p)), it stays that net step for step; with the same c it does not."""
    data = spiral()
    ws = StackTrainer([_paper_convention("weight")], data)
    keep = [0.8, 0.5, 0.5]  # retention of each weight layer's input: pixels, then hidden units
    twins = []
    for convert in (True, False):
        inv = StackTrainer([_paper_convention("inverted")], data)
        with torch.no_grad():
            for w_inv, w, k in zip(inv.model.weights, ws.model.weights, keep):
                w_inv.copy_(k * w)
        twins.append((inv, convert))
    for tr in [ws] + [t for t, _ in twins]:
        tr.begin_epoch()
    x_test = torch.as_tensor(data.x_test)
    bound, gaps = [], {True: [], False: []}
    for step in range(60):
        if ws.s == ws.steps_per_epoch:  # past an epoch's last batch: the next epoch, for every twin
            for tr in [ws] + [t for t, _ in twins]:
                tr.epoch += 1
                tr.begin_epoch()
        ws.train_step()
        for inv, convert in twins:
            _inverted_step(inv, keep, convert)
        if step % 10 == 9:
            bound.append(at_max_norm(ws.model.weights, ws.hyper.max_norm).item())
            with torch.no_grad():
                want = ws.model.eval()(x_test)
                for inv, convert in twins:
                    gaps[convert].append((inv.model.eval()(x_test) - want).abs().max().item())
    assert max(bound) > 0.1  # the constraint is live in this test
    assert max(gaps[True]) < 1e-4  # the same function, step for step
    assert gaps[False][-1] > 1e-2  # an inverted net under the same c and lr is another net


def test_max_norm_is_reached_and_held_and_recorded_per_epoch(mnist):
    """The paper's recipe in miniature (deepnet rule, weight scaling, fan-out init) on 2,000 MNIST images: few
    units start at c, most end there, and once there they stay. Every epoch's row says how many."""
    from dropout_lab.config import load

    cfg = load(None, ["data.train_size=2000", "model.hidden=[128,128]", "model.init=fan_out", "model.init_std=1.0",
                      "model.init_std_first=0.001", "model.dropout.scaling=weight", "optim.momentum_rule=deepnet",
                      "optim.momentum_schedule=exponential", "optim.momentum_ramp_epochs=2", "optim.lr=1.0",
                      "optim.lr_schedule=inverse_t", "optim.lr_half_life=200", "optim.epochs=12", "optim.max_norm=2.0",
                      "eval.every=100"])  # no test passes but the last: the bound is recorded at every epoch's end
    trainers = []
    rows = [r[0] for r in train_stack([cfg], mnist, on_step=lambda tr: trainers or trainers.append(tr))]
    fractions = [r["max_norm_bound"] for r in rows]
    assert fractions[0] < 0.1 and fractions[-1] > 0.5
    assert all(b >= a - 0.02 for a, b in zip(fractions, fractions[1:]))  # held: the share at c does not fall back
    assert all((w.norm(dim=2) <= 2.0 * (1 + 1e-5)).all() for w in trainers[0].model.weights)
    control = [r[0]["max_norm_bound"] for r in train_stack([cfg.control()], mnist)]
    assert all(math.isnan(f) for f in control)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_model_alone_equals_the_same_model_in_a_stack(device, precision):
    data = spiral()
    p = f"precision={precision}"
    target = tiny_config("seed=3", "model.dropout.p_input=0.1", "optim.epochs=10", p)  # 300 steps
    others = [
        tiny_config("seed=1", "model.dropout.p_hidden=0.2", "optim.lr=0.05", p),
        tiny_config("seed=3", p).control(),  # same seed, no dropout: its own masks are drawn and ignored
        tiny_config("seed=9", "optim.momentum_rule=classical", "optim.lr=0.01", "optim.max_norm=null", p),
    ]
    others = [c.model_copy(update={"optim": c.optim.model_copy(update={"epochs": 10})}) for c in others]
    alone = StackTrainer([target], data, device)
    stack = StackTrainer([others[0], target, *others[1:]], data, device)
    for _ in range(10):
        m_alone = alone.train_epoch()
        m_stack = stack.train_epoch()
    assert alone.step == 300
    for wa, ws in zip(alone.model.weights, stack.model.weights):
        assert torch.allclose(wa[0], ws[1], rtol=1e-4, atol=1e-5)
    assert torch.allclose(m_alone["train_loss"][0], m_stack["train_loss"][1], rtol=1e-4)
    ea, es = alone.epoch_metrics(), stack.epoch_metrics()
    assert abs(ea["test_error"][0] - es["test_error"][1]) <= 2 / len(data.y_test)
    # and the stack-mates really differ from it, so the comparison means something
    assert not torch.allclose(stack.model.weights[0][0], stack.model.weights[0][1])


def test_gaussian_model_alone_equals_stack():
    data = spiral()
    a = tiny_config("model.dropout.kind=gaussian", "optim.epochs=3")
    b = tiny_config("model.dropout.kind=gaussian", "seed=4", "model.dropout.p_hidden=0.3", "optim.epochs=3")
    alone, stack = StackTrainer([a], data), StackTrainer([b, a], data)
    for _ in range(3):
        alone.train_epoch(), stack.train_epoch()
    assert torch.allclose(alone.model.weights[1][0], stack.model.weights[1][1], rtol=1e-4, atol=1e-5)


def test_divergence_stops_only_that_model():
    data = spiral()
    good = tiny_config("optim.epochs=5")
    bad = tiny_config("seed=2", "optim.epochs=5", "optim.lr=1e6", "optim.max_norm=null",
                      "optim.momentum_rule=classical", "model.init_std=1.0")
    history = list(train_stack([bad, good], data))
    assert history[0][0]["diverged"]
    assert all(rows[0] is None for rows in history[1:])
    assert len(history) == 5 and all(not rows[1]["diverged"] for rows in history)
    # the good model's curve is the one it has in a stack without the diverging member: no NaN of its
    # neighbour leaks into it through a shared op (a summed loss, a stacked norm, a shared batch)
    alone = [rows[0] for rows in train_stack([good], data)]
    for got, want in zip([rows[1] for rows in history], alone, strict=True):
        for key in ("step", "lr", "momentum", "train_loss", "train_error", "test_loss", "test_error"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), key


def test_pack_groups_by_structure():
    a = tiny_config()
    b = tiny_config("model.dropout.p_hidden=0.3", "optim.lr=0.5", "seed=2")
    c = tiny_config("model.hidden=[16,16]")
    d = tiny_config("model.dropout.kind=gaussian")
    e = tiny_config().control()  # no dropout: joins any stack of its shape
    f = tiny_config("precision=bf16")  # another arithmetic: never in an fp32 stack
    assert pack([a, b, c, d, e, f]) == [[0, 1, 4], [2], [3], [5]]
    scaled = tiny_config("model.width_rule=scaled")
    assert scaled.widths() == [64, 64]
    assert pack([scaled, scaled.control()]) == [[0], [1]]  # the control keeps n units


def test_stack_rejects_mixed_structure():
    with pytest.raises(ValueError, match="one structure"):
        StackTrainer([tiny_config(), tiny_config("model.hidden=[8]")], spiral())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_same_config_and_seed_give_the_same_numbers(device, precision):
    data = spiral()
    cfg = tiny_config("model.dropout.p_input=0.1", f"precision={precision}")
    a = [rows[0] for rows in train_stack([cfg], data, device)]
    b = [rows[0] for rows in train_stack([cfg], data, device)]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b]
    seed1 = tiny_config("model.dropout.p_input=0.1", "seed=1", f"precision={precision}")
    other = [rows[0] for rows in train_stack([seed1], data, device)]
    assert other[-1]["train_loss"] != a[-1]["train_loss"]
