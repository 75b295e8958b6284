"""The CUDA path on a CPU-only machine: under torch's FakeTensorMode tensors claim to live on `cuda` and no kernel
runs, but every op checks its operands' devices, so a CPU tensor that reaches a CUDA op fails here as it would on a
GPU (FakeTensorDeviceMismatchError). A torch built without CUDA cannot make a CUDA generator; the seam
`model.generator` hands each model a CPU generator instead, which the fake ops never use."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.overrides import TorchFunctionMode

from dropout_lab.config import load
from dropout_lab.nets import model as model_mod
from dropout_lab.nets.optim import at_max_norm, max_norm_
from dropout_lab.speed import bench
from dropout_lab.training import data as data_mod
from dropout_lab.training import evaluate as evaluate_mod
from dropout_lab.training.evaluate import mc_evaluate
from dropout_lab.training.train import StackTrainer

CUDA = torch.device("cuda")


class HostToCuda(TorchFunctionMode):
    """A host-to-device transfer, which a torch built without CUDA refuses even for fake tensors, made as a fake
    CUDA tensor of the same shape and dtype (its values are never read: no kernel runs); each one is counted in
    `transfers`, so that a test can say none happens inside a step."""

    transfers: list = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in [*args[:3], *kwargs.values()] if isinstance(a, torch.Tensor)]
        moved = func in (torch.Tensor.to, torch.Tensor.cuda) and (func is torch.Tensor.cuda or any(
            isinstance(a, (str, torch.device)) and torch.device(a).type != args[0].device.type
            for a in [*args[1:], kwargs.get("device")] if a is not None))
        if moved or len({t.device.type for t in tensors}) > 1 or func is torch.as_tensor:
            HostToCuda.transfers.append(func.__name__)  # between devices, as a step must never be
        if func in (torch.Tensor.to, torch.Tensor.cuda):
            src = args[0]
            dev = "cuda" if func is torch.Tensor.cuda else kwargs.get("device") or next(
                (a for a in args[1:] if isinstance(a, (str, torch.device))), None)
            dtype = kwargs.get("dtype") or next((a for a in args[1:] if isinstance(a, torch.dtype)), src.dtype)
            if dev is not None and torch.device(dev).type == "cuda" and src.device.type != "cuda":
                return torch.empty(src.shape, dtype=dtype, device="cuda")
        if func is torch.as_tensor and isinstance(args[0], np.ndarray) and kwargs.get("device") is not None \
                and torch.device(kwargs["device"]).type == "cuda":  # the data's arrays onto the device
            return torch.empty(args[0].shape, dtype=torch.from_numpy(args[0][:0]).dtype, device="cuda")
        if func is torch.Tensor.copy_ and args[0].device.type == "cuda":
            if args[1].device.type != "cuda":
                return args[0]  # a host tensor loaded into a device one (a checkpoint's slice)
            return torch.ops.aten.copy_.default(args[0], args[1])  # the Python binding guards the device
        if func is torch.Tensor.contiguous and args[0].device.type == "cuda" and not args[0].is_contiguous():
            src = args[0]  # a copy into a fresh tensor, as contiguous() makes it
            return torch.ops.aten.copy_.default(torch.empty(src.shape, dtype=src.dtype, device="cuda"), src)
        if func is torch.Tensor.__invert__ and args[0].device.type == "cuda":
            return torch.bitwise_not(args[0])
        if func is torch.Tensor.__setitem__ and args[0].device.type == "cuda":
            view, value = _getitem(args[0], args[1]), args[2]
            if isinstance(value, torch.Tensor) and value.device.type == "cuda":
                torch.ops.aten.copy_.default(view, value)
            return None  # a host value written into the device tensor: nothing to check
        if func is torch.Tensor.__getitem__ and args[0].device.type == "cuda":
            return _getitem(*args)  # Python indexing guards the device first, which a CPU build cannot
        if func is F.cross_entropy and args[0].device.type == "cuda":  # its binding guards the device too
            logits, target = args[0].transpose(1, -1), args[1]  # (N, C, ...) with the classes last again
            picked = F.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
            return -picked if kwargs.get("reduction") == "none" else -picked.mean()
        if func in (torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__):  # a value read back to the
            zero = False if args[0].dtype == torch.bool else 0 if not args[0].is_floating_point() else 0.0  # host
            if func is torch.Tensor.__bool__:
                return False
            if func is torch.Tensor.item:
                return zero
            out = zero
            for n in reversed(args[0].shape):
                out = [out] * n if not isinstance(out, list) else [list(out) for _ in range(n)]
            return out
        return func(*args, **kwargs)


def _getitem(t: torch.Tensor, key) -> torch.Tensor:
    """t[key] through aten ops: ints, slices, None, ... and one long tensor (a gather, as index_select)."""
    aten = torch.ops.aten
    key = key if isinstance(key, tuple) else (key,)
    if Ellipsis in key:
        i = key.index(Ellipsis)
        fill = t.dim() - sum(k is not None for k in key if k is not Ellipsis)
        key = key[:i] + (slice(None),) * fill + key[i + 1:]
    dim = 0
    for k in key:
        if k is None:
            t, dim = t.unsqueeze(dim), dim + 1
        elif isinstance(k, int):
            t = aten.select.int(t, dim, k)
        elif isinstance(k, slice):
            t, dim = aten.slice.Tensor(t, dim, k.start, k.stop, k.step or 1), dim + 1
        elif isinstance(k, torch.Tensor):
            if k.device != t.device:
                raise AssertionError(f"an index on {k.device} into a tensor on {t.device}")
            flat = aten.index_select.default(t, dim, k.reshape(-1))
            t = flat.view(*t.shape[:dim], *k.shape, *t.shape[dim + 1:])
            dim += k.dim()
        else:
            raise NotImplementedError(f"fake CUDA indexing by {type(k).__name__}")
    return t


@pytest.fixture
def fake_cuda(monkeypatch):
    real = model_mod.generator
    for module in (model_mod, evaluate_mod):  # the seam: every generator a run makes, made on the host
        monkeypatch.setattr(module, "generator", lambda seed, device="cpu": real(seed, "cpu"))
    monkeypatch.setattr(bench, "_sync", lambda device: None)  # nothing to wait for: no kernel runs
    monkeypatch.setattr(bench, "_prime", lambda device: None)
    # no_grad: autograd records a device guard for every op on a tensor that requires grad, and on a torch
    # without CUDA that aborts the process (no exception to catch); the step is written by hand and needs none
    with torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True), HostToCuda():
        yield


def spiral():
    return data_mod.load("spiral")


def configs(kind, scaling, precision, k=2):
    drop = "model.dropout.kind=none" if kind == "none" else f"model.dropout.kind={kind}"
    return [load(None, ["data.dataset=spiral", "model.hidden=[32,32]", f"seed={s}", drop,
                        f"model.dropout.scaling={scaling}", f"precision={precision}", "optim.max_norm=2.0",
                        "model.dropout.p_input=0.2", f"model.dropout.p_hidden={0.5 - 0.1 * s}",
                        "eval.mc_samples=[1,2]", "eval.mc_repeats=1"]) for s in range(k)]


def on_cuda(tensors):
    return all(t.device.type == "cuda" for t in tensors)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "tf32"])
@pytest.mark.parametrize("kind, scaling", [("bernoulli", "inverted"), ("bernoulli", "weight"),
                                           ("gaussian", "inverted"), ("none", "inverted")])
def test_every_path_of_a_stack_runs_on_cuda(fake_cuda, kind, scaling, precision):
    data = spiral()
    tr = StackTrainer(configs(kind, scaling, precision), data, CUDA)
    tr.begin_epoch()
    tr.train_step()  # the first step makes its kept buffers
    HostToCuda.transfers.clear()
    tr.train_step()
    assert HostToCuda.transfers == []  # nothing moved or copied between devices inside a step
    assert on_cuda([*tr.params, *tr._optim_tensors(), tr.loss_sum])
    metrics = tr.end_epoch()
    metrics.update(tr.epoch_metrics())  # evaluate() on the test and validation sets
    assert on_cuda(metrics.values())
    max_norm_(tr.model.weights, tr.hyper.max_norm)
    assert at_max_norm(tr.model.weights, tr.hyper.max_norm).device.type == "cuda"
    mc_evaluate(tr, [1, 2], 1, [0, 1])
    state = tr.model_state(1)  # a checkpoint's slice, on the host, and back onto the device
    assert all(t.device.type == "cpu" for t in state["params"])
    tr.load_model_state(1, state)
    assert on_cuda(tr.params)


def test_every_parameter_and_buffer_of_a_model_is_on_its_device(fake_cuda):
    m = model_mod.StackedMLP.from_configs(configs("bernoulli", "weight", "fp32"), 2, 3, CUDA)
    found = [*m.named_parameters(), *m.named_buffers()]
    assert found and all(t.device.type == "cuda" for _, t in found), [n for n, t in found if t.device.type != "cuda"]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "tf32"])
def test_the_benchs_stacked_trainer_runs_on_cuda(fake_cuda, precision, monkeypatch):
    """The bench's own trainer; its two baselines are torch's nn.Sequential and optim.SGD under autograd, which
    cannot run here (see fake_cuda), and which place everything on the device through nn.Module.to."""
    for name, value in (("empty_cache", None), ("reset_peak_memory_stats", None), ("memory_allocated", 0),
                        ("max_memory_allocated", 0)):  # the memory window of a device that is not there
        monkeypatch.setattr(torch.cuda, name, lambda *a, _v=value, **kw: _v)
    data = bench.synthetic(n_train=1000, n_test=100)
    timing = bench.stacked([784, 16, 10], 2, data, CUDA, steps=2, warmup=1, precision=precision)
    assert timing.steps == 2 and timing.K == 2
