"""One training step of a stack, forward and backward written out by hand, in the chosen precision.

Autograd would record every intermediate and free it again each step. Here a step is the GEMMs plus a
few elementwise passes per layer. A ReLU layer's derivative and its dropout multiplier are one tensor
G = (z > 0) * mask / (1 - p), so that the layer's output is h = z * G and its backward is dz = dh * G.
Masks come four to a random word (layers.keep_mask). Weights are rows (model.py), so the max-norm after
each update is a contiguous reduction. tests/test_step.py checks all of it against autograd.

Precision (config.Config.precision):
- fp32: everything in fp32.
- tf32 (CUDA only): fp32 tensors, GEMMs on the tensor cores with 10-bit mantissas.
- bf16: each GEMM's operands are rounded to bf16, and so is its result, with fp32 accumulation (what
  torch.autocast does). The master weights, the optimiser state, the update, max-norm, the loss and the
  softmax stay in fp32. The bf16 copies of the weights are made once per step, not inside each op.
  Where the CPU has no bf16 instructions (oneDNN's test: AVX-512 BF16 or AMX), torch's bf16 GEMM is a
  scalar fallback, about 150x slower than fp32 on a 2-core AVX2 CPU (`dropout-lab bench` probes it). There the same
  arithmetic runs as fp32 GEMMs on operands already rounded to bf16. A product of two bf16 numbers is
  exact in fp32, so only the order of the fp32 sums differs: the numbers of bf16, at fp32's speed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .layers import Dropout, keep_mask, noise
from .model import StackedMLP

PRECISIONS = ("fp32", "bf16", "tf32")


def precision_error(precision: str, device: torch.device, key: str = "precision") -> str | None:
    """Why this precision cannot run on this device, as one line naming `key`, or None."""
    if precision not in PRECISIONS:
        return f"{key} = {precision!r}: allowed {', '.join(PRECISIONS)}"
    if precision == "tf32" and device.type != "cuda":  # TF32 is a tensor-core format
        return f"{key} = tf32: only on CUDA (device {device.type}: allowed fp32, bf16)"
    return None


def precision_problem(cfgs, device: torch.device, key: str = "precision") -> str | None:
    """Why these runs cannot train on this device, or None."""
    return next((e for e in (precision_error(c.precision, device, key) for c in cfgs) if e), None)


def precision_note(cfgs, device: torch.device) -> str | None:
    """What a user should know before bf16 runs on a CPU without bf16 instructions."""
    if any(c.precision == "bf16" for c in cfgs) and bf16_kernels(device) == "emulated":
        return ("this CPU has no bf16 instructions (AVX-512 BF16 or AMX): bf16 runs as fp32 GEMMs on "
                "bf16-rounded operands, bf16's numbers without its speed (step.py)")
    return None


def bf16_kernels(device: torch.device) -> str:
    """'native' where torch has fast bf16 GEMMs on this device, else 'emulated' (see the module doc)."""
    if device.type == "cuda":
        return "native"
    try:  # oneDNN's own test, the one torch uses to route bf16 matmuls to it
        return "native" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "emulated"
    except (AttributeError, RuntimeError):  # a torch without it: the safe assumption
        return "emulated"


class Gemm:
    """Batched GEMMs in one precision, and the tensors a step keeps from one step to the next.

    Every large tensor of a step is written into a buffer made at the first step and reused (`buf`):
    glibc gives freed megabyte blocks back to the OS and faults them in again, zeroed, at the next
    allocation, 2,800 page faults a step for 784-1024-1024-1024-10 (about a fifth of its time on a
    2-core CPU). cast() puts an operand in the form mm() takes; each op names its buffer.
    """

    def __init__(self, precision: str, device: torch.device):
        if error := precision_error(precision, device):
            raise ValueError(error)
        self.precision, self.device = precision, device
        self.kernels = bf16_kernels(device) if precision == "bf16" else precision
        self.low = precision == "bf16"
        self._bufs: dict[str, torch.Tensor] = {}
        self._current: dict[str, int] = {}  # bf16 weight copies the update wrote: name -> the weight's _version

    def buf(self, name: str, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The step's tensor `name`: made once, then the same memory every step (overwritten)."""
        t = self._bufs.get(name)
        if t is None or t.shape != tuple(shape) or t.dtype != dtype:
            t = self._bufs[name] = torch.empty(tuple(shape), dtype=dtype, device=self.device)
        return t

    def _switch(self) -> None:
        if self.device.type == "cuda":  # a process-wide switch: set for every GEMM of this stack
            torch.backends.cuda.matmul.allow_tf32 = self.precision == "tf32"

    def _round_(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """x rounded to bf16 in place (copy_ rounds to nearest even), through a kept bf16 buffer."""
        return x.copy_(self.buf(name + "/bf16", x.shape, torch.bfloat16).copy_(x))

    def cast(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if not self.low:
            return x
        if self._current.get(name) == x._version:  # the update wrote it with x (weight_copies), x unchanged since
            return self._bufs[name + "/bf16"]
        low = self.buf(name + "/bf16", x.shape, torch.bfloat16).copy_(x)
        return low if self.kernels == "native" else self.buf(name, x.shape).copy_(low)

    def weight_copies(self, weights: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
        """Where an update that writes the bf16 copies of the new weights itself (kernel.py) puts them; the
        next step's cast() then takes them as they are. Only with native bf16 GEMMs; None elsewhere. The
        weight's _version (bumped by any torch op that writes it, a checkpoint's load among them) tells a
        copy still current from a stale one; the kernel writes through raw pointers, which bump nothing."""
        if self.kernels != "native":
            return [None] * len(weights)
        self._current.update({f"w{i}": w._version for i, w in enumerate(weights)})
        return [self.buf(f"w{i}/bf16", w.shape, torch.bfloat16) for i, w in enumerate(weights)]

    def mm(self, a: torch.Tensor, b: torch.Tensor, name: str, low: bool = False) -> torch.Tensor:
        """a @ b in this precision, as fp32 (or, with low and native bf16 GEMMs, as the GEMM's own bf16
        result, for a consumer that widens it itself): (K, m, k) x (K, k, n) -> (K, m, n)."""
        self._switch()
        shape = (a.shape[0], a.shape[1], b.shape[2])
        if self.kernels == "native":  # bf16 in, bf16 out: the kernel rounds its fp32 accumulators
            out = torch.bmm(a, b, out=self.buf(name + "/bf16", shape, torch.bfloat16))
            return out if low else self.buf(name, shape).copy_(out)
        out = torch.bmm(a, b, out=self.buf(name, shape))
        return self._round_(out, name) if self.low else out  # emulated: the same rounding of the same sums

    def linear(self, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, name: str) -> torch.Tensor:
        """h @ w^T + b for rows w (K, n_out, n_in): one fused baddbmm in fp32."""
        if not self.low:
            self._switch()
            return torch.baddbmm(b, h, w.mT, out=self.buf(name, (h.shape[0], h.shape[1], w.shape[1])))
        return self.mm(h, w.mT, name).add_(b)


def multiplier(d: Dropout, shape: Sequence[int], gemm: Gemm, name: str,
               on: torch.Tensor | None = None) -> torch.Tensor | None:
    """The training-time factor of a dropout layer (layers.Dropout says what each kind does) as one fp32
    tensor, zeroed where the bool `on` is False (a ReLU's z > 0, its derivative). None: identity.

    A bool mask becomes 0.0/1.0 by copying its bytes as uint8: torch converts uint8 to float in vector
    code and bool one element at a time (17 us against 59 us for (100, 1024); torch.where: 155 us)."""
    if d.off:
        return None if on is None else gemm.buf(name, shape).copy_(on.view(torch.uint8))
    if d.kind == "gaussian":
        m = d.sigma * noise(shape, d.generators, gemm.device, normal=True) + 1.0
        return m if on is None else m.mul_(on.view(torch.uint8))
    words = gemm.buf(name + "/words", (*shape[:-1], -(-shape[-1] // 4)), torch.int64)
    keep = keep_mask(shape, d.p, d.generators, gemm.device, d.threshold, words=words,
                     out=gemm.buf(name + "/keep", shape, torch.bool))
    if on is not None:
        keep &= on
    g = gemm.buf(name, shape).copy_(keep.view(torch.uint8))
    return g.mul_(d.inv_keep) if d.scaling == "inverted" else g


def kl_grad(a: torch.Tensor, rho: torch.Tensor, beta: torch.Tensor, logistic: bool) -> torch.Tensor:
    """d(beta * optim.kl_sparsity)/da for activations a (K, B, n): (K, 1, n), the same for every example."""
    r = a.mean(dim=1, keepdim=True)
    if logistic:  # the clamp of kl_sparsity passes no gradient where it binds
        inside = (r >= 1e-6) & (r <= 1 - 1e-6)
        rc = r.clamp(1e-6, 1 - 1e-6)
        d = torch.where(inside, (1 - rho.unsqueeze(-1)) / (1 - rc) - rho.unsqueeze(-1) / rc, 0.0)
    else:
        d = r - rho.unsqueeze(-1)
    return d * (beta.view(-1, 1, 1) / a.shape[1])


@torch.no_grad()
def forward_backward(model: StackedMLP, x: torch.Tensor, y: torch.Tensor, gemm: Gemm,
                     kl: tuple[torch.Tensor, torch.Tensor] | None = None, low_grads: bool = False):
    """Loss and gradients of every model's mean cross-entropy (+ its KL-sparsity term).

    x (K, B, D), y (K, B). kl: (beta (K,), rho (K, 1)) or None. Returns (nll (K, B), logits (K, B, C),
    grads in the order [*weights, *biases]), the gradient of each model's own loss. The logits and the
    weight gradients live in gemm's buffers: read them before the next step. low_grads: with native bf16
    GEMMs the weight gradients stay the GEMMs' bf16 results (the same numbers: widening is exact), for an
    update that reads bf16 itself (kernel.py), which saves a pass over every weight.
    """
    weights = [gemm.cast(w, f"w{i}") for i, w in enumerate(model.weights)]  # the bf16 copies: once per step
    m_in = multiplier(model.drop_in, x.shape, gemm, "m_in")
    h = x if m_in is None else torch.mul(x, m_in, out=gemm.buf("x_in", x.shape))
    inputs, gates, derivs, kgrads = [], [], [], []
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, model.biases)):
        inputs.append(gemm.cast(h, f"in{i}"))  # kept for this layer's weight gradient
        z = gemm.linear(inputs[-1], w, b, f"z{i}")
        if i == last:
            break
        if model.activation == "relu":  # relu(z) * mask = z * gate, and gate is also the backward's factor
            deriv = torch.gt(z, 0, out=gemm.buf(f"pos{i}", z.shape, torch.bool))
            gate = multiplier(model.drops[i], z.shape, gemm, f"gate{i}", on=deriv)
            h = torch.mul(z, gate, out=gemm.buf(f"h{i}", z.shape))
            a = torch.relu(z) if kl is not None else None
        else:
            m = multiplier(model.drops[i], z.shape, gemm, f"mask{i}")
            a = model.act(z)
            deriv = a * (1 - a) if model.activation == "logistic" else 1 - a * a
            gate = deriv if m is None else deriv * m
            h = a if m is None else a * m
        gates.append(gate)
        if kl is not None:
            derivs.append(deriv.float())
            kgrads.append(kl_grad(a, kl[1], kl[0], model.activation == "logistic"))
    logits = z
    logp = F.log_softmax(logits, dim=-1)
    nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    dz = logp.exp_()  # d(mean NLL)/dz = (softmax - onehot) / B for each model
    dz.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(nll, -1.0).unsqueeze(-1)).div_(x.shape[1])
    gw, gb = [None] * len(weights), [None] * len(weights)
    for i in range(last, -1, -1):
        d = gemm.cast(dz, f"d{i}")
        gw[i] = gemm.mm(d.mT, inputs[i], f"gw{i}", low=low_grads)  # (K, n_out, n_in), the rows' layout
        gb[i] = dz.sum(dim=1, keepdim=True)
        if i > 0:
            dh = gemm.mm(d, weights[i], f"dh{i}")  # (K, B, n_in)
            dz = dh.mul_(gates[i - 1])
            if kl is not None:
                dz.addcmul_(derivs[i - 1], kgrads[i - 1])
    return nll, logits, [*gw, *gb]
