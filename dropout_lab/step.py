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
  scalar fallback, about 100x slower than fp32 (`dropout-lab bench` probes it). There the same
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


def bf16_kernels(device: torch.device) -> str:
    """'native' where torch has fast bf16 GEMMs on this device, else 'emulated' (see the module doc)."""
    if device.type == "cuda":
        return "native"
    return "native" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "emulated"


class Gemm:
    """Batched GEMMs in one precision: cast() puts an operand in the form mm() takes."""

    def __init__(self, precision: str, device: torch.device):
        if precision not in PRECISIONS:
            raise ValueError(f"precision = {precision!r}: allowed {', '.join(PRECISIONS)}")
        if precision == "tf32" and device.type != "cuda":
            raise ValueError(f"precision = tf32: only on CUDA (on {device.type}: fp32 or bf16)")
        self.precision, self.device = precision, device
        self.kernels = bf16_kernels(device) if precision == "bf16" else precision
        self.low = precision == "bf16"

    def cast(self, x: torch.Tensor) -> torch.Tensor:
        if not self.low:
            return x
        return x.bfloat16() if self.kernels == "native" else x.bfloat16().float()

    def mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a @ b in this precision, as fp32: (K, m, k) x (K, k, n) -> (K, m, n)."""
        if self.device.type == "cuda":  # a process-wide switch: set for every GEMM of this stack
            torch.backends.cuda.matmul.allow_tf32 = self.precision == "tf32"
        out = torch.bmm(a, b)
        if not self.low:
            return out
        # the native kernel rounds its fp32 accumulators to bf16; the emulation rounds the same sums
        return out.float() if self.kernels == "native" else out.bfloat16().float()

    def linear(self, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """h @ w^T + b for rows w (K, n_out, n_in): one fused baddbmm in fp32."""
        if not self.low:
            if self.device.type == "cuda":
                torch.backends.cuda.matmul.allow_tf32 = self.precision == "tf32"
            return torch.baddbmm(b, h, w.mT)
        return self.mm(h, w.mT).add_(b)


def multiplier(d: Dropout, shape: Sequence[int], device, on: torch.Tensor | None = None) -> torch.Tensor | None:
    """The training-time factor of a dropout layer (layers.Dropout says what each kind does) as one fp32
    tensor, zeroed where the bool `on` is False (a ReLU's z > 0, its derivative). None: identity.

    One torch.where writes it: a bool mask times a float would first be converted, a pass of its own."""
    if d.off:
        return None if on is None else on.float()
    if d.kind == "gaussian":
        m = d.sigma * noise(shape, d.generators, device, normal=True) + 1.0
        return m if on is None else torch.where(on, m, 0.0)
    keep = keep_mask(shape, d.p, d.generators, device, d.threshold)
    if on is not None:
        keep &= on
    return torch.where(keep, d.inv_keep if d.scaling == "inverted" else 1.0, 0.0)


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
                     kl: tuple[torch.Tensor, torch.Tensor] | None = None):
    """Loss and gradients of every model's mean cross-entropy (+ its KL-sparsity term).

    x (K, B, D), y (K, B). kl: (beta (K,), rho (K, 1)) or None. Returns (nll (K, B), logits (K, B, C),
    grads in the order [*weights, *biases]), the gradient of each model's own loss.
    """
    dev = x.device
    weights = [gemm.cast(w) for w in model.weights]  # the bf16 copies: once per step
    m_in = multiplier(model.drop_in, x.shape, dev)
    h = x if m_in is None else x * m_in
    inputs, gates, derivs, kgrads = [], [], [], []
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, model.biases)):
        inputs.append(gemm.cast(h))  # kept for this layer's weight gradient
        z = gemm.linear(inputs[-1], w, b)
        if i == last:
            break
        if model.activation == "relu":  # relu(z) * mask = z * gate, and gate is also the backward's factor
            deriv = z > 0
            gate = multiplier(model.drops[i], z.shape, dev, on=deriv)
            h = z * gate
            a = torch.relu(z) if kl is not None else None
        else:
            m = multiplier(model.drops[i], z.shape, dev)
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
        d = gemm.cast(dz)
        gw[i] = gemm.mm(d.mT, inputs[i])  # (K, n_out, n_in), the rows' layout
        gb[i] = dz.sum(dim=1, keepdim=True)
        if i > 0:
            dh = gemm.mm(d, weights[i])  # (K, B, n_in)
            dz = dh.mul_(gates[i - 1])
            if kl is not None:
                dz.addcmul_(derivs[i - 1], kgrads[i - 1])
    return nll, logits, [*gw, *gb]
