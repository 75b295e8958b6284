"""Dropout layers. `p` is the *drop* probability everywhere; the paper's retention probability is 1 - p.

One module serves a single net (p a float, any input shape) and a stack of K nets (p a list of K
floats, input (K, B, n)). In a stack each model draws its noise from its own generator, so a
model's masks do not depend on which models share its stack.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

KINDS = ("none", "bernoulli", "gaussian")
SCALINGS = ("inverted", "weight")


def check_p(p: float, name: str = "p") -> float:
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} = {p}: must be in [0, 1) (drop probability; the paper's retention is 1-p)")
    return p


def noise(shape: Sequence[int], generators: Sequence[torch.Generator] | None, device,
          normal: bool = False) -> torch.Tensor:
    """Uniform [0, 1) (or standard normal) noise. With generators, slice k of dim 0 comes from generator k.

    One draw per model costs K small kernels; it buys results that are independent of stacking.
    """
    draw = torch.randn if normal else torch.rand
    if generators is None:
        return draw(tuple(shape), device=device)
    if shape[0] != len(generators):
        raise ValueError(f"noise for {shape[0]} models but {len(generators)} generators")
    return torch.stack([draw(tuple(shape[1:]), generator=g, device=device) for g in generators])


# Bernoulli masks take 16 random bits per decision, four decisions from each 64-bit random word: the
# generator, not the comparison, is the cost (a (100, 1024) mask: 0.77 ms from torch.rand, 0.27 ms
# this way, 2-core CPU). P(drop) is round(p * 2^16) / 2^16, within 2^-17 of p (torch.rand's own
# grid is 2^-24): p = 0.5 is exact, p = 0.2 gives 0.199997, far inside one epoch's sampling error.
MASK_BITS = 16


def uniform16(shape: Sequence[int], generators: Sequence[torch.Generator] | None, device,
              words: torch.Tensor | None = None) -> torch.Tensor:
    """int16 noise uniform over all 2^16 values, slice k of dim 0 from generator k (as noise()).

    words: an int64 tensor of shape (*shape[:-1], ceil(n / 4)) to draw into, kept by the caller."""
    *lead, n = shape
    if words is None:
        words = torch.empty((*lead, -(-n // 4)), dtype=torch.int64, device=device)
    full = (-2**63, None)  # every 64-bit value: each int16 lane of a word is uniform
    if generators is None:
        words.random_(*full)
    else:
        if shape[0] != len(generators):
            raise ValueError(f"noise for {shape[0]} models but {len(generators)} generators")
        for k, g in enumerate(generators):  # in place: no per-model tensors to stack
            words[k].random_(*full, generator=g)
    return words.view(torch.int16)[..., :n]


def drop_threshold(p: torch.Tensor) -> torch.Tensor:
    """The int16 threshold t with P(uniform16 < t) = round(p * 2^16) / 2^16: a unit is kept where u >= t.

    A p within 2^-17 of 1 would round to "drop all", one past int16: it keeps 1 unit in 2^16 instead."""
    t = torch.round(p.double() * 2**MASK_BITS) - 2**(MASK_BITS - 1)
    return t.clamp(max=2**(MASK_BITS - 1) - 1).to(torch.int16)


def keep_mask(shape: Sequence[int], p: torch.Tensor, generators: Sequence[torch.Generator] | None,
              device, threshold: torch.Tensor | None = None, words: torch.Tensor | None = None,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean keep mask, P(keep) = 1 - p to within 2^-17 (p a float tensor, (K, 1, 1) in a stack).

    threshold: drop_threshold(p) when the caller keeps it (Dropout does), saving its small ops per call;
    words and out: buffers to draw and write into (step.py keeps them from step to step)."""
    t = drop_threshold(p).to(device) if threshold is None else threshold
    return torch.ge(uniform16(shape, generators, device, words), t, out=out)


class Dropout(nn.Module):
    """Bernoulli (inverted or weight scaling) or multiplicative Gaussian dropout.

    - bernoulli/inverted: train x * mask / (1-p); test x.
    - bernoulli/weight:   train x * mask;         test x * (1-p)  (the paper's "scale weights by p").
    - gaussian:           train x * r, r ~ N(1, p/(1-p)), the same mean and variance as inverted
                          Bernoulli (paper section 10); test x.
    Setting `mc = True` keeps the training-time noise at evaluation (Monte-Carlo model averaging).
    """

    def __init__(self, p: float | Sequence[float] = 0.5, kind: str = "bernoulli", scaling: str = "inverted",
                 generators: Sequence[torch.Generator] | None = None, device=None):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind = {kind!r}: allowed {', '.join(KINDS)}")
        if scaling not in SCALINGS:
            raise ValueError(f"scaling = {scaling!r}: allowed {', '.join(SCALINGS)}")
        stacked = isinstance(p, Sequence)
        ps = [check_p(v) for v in (p if stacked else [p])]
        if generators is not None and len(generators) != len(ps):
            raise ValueError(f"{len(ps)} drop probabilities but {len(generators)} generators")
        self.kind, self.scaling, self.generators = kind, scaling, generators
        # on the device of the activations they scale: a (K, 1, 1) CPU tensor cannot enter a CUDA op
        self.register_buffer("p", torch.tensor(ps, device=device).view(-1, 1, 1) if stacked
                             else torch.tensor(ps[0], device=device))
        # constants of every training step, made once: the mask threshold, 1/(1-p) and the Gaussian sigma
        self.register_buffer("threshold", drop_threshold(self.p))
        self.register_buffer("inv_keep", 1.0 / (1.0 - self.p))
        self.register_buffer("sigma", torch.sqrt(self.p / (1.0 - self.p)))
        self.off = kind == "none" or max(ps) == 0.0  # identity in every mode: skip the noise
        self.mc = False

    def extra_repr(self) -> str:
        return f"kind={self.kind}, scaling={self.scaling}, p={self.p.flatten().tolist()}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.off:
            return x
        p = self.p.to(x.dtype)
        if not (self.training or self.mc):
            if self.kind == "bernoulli" and self.scaling == "weight":
                return x * (1.0 - p)
            return x
        if self.kind == "gaussian":
            z = noise(x.shape, self.generators, x.device, normal=True)
            return x * (1.0 + self.sigma.to(x.dtype) * z)
        keep = keep_mask(x.shape, self.p, self.generators, x.device, self.threshold)
        if self.scaling == "inverted":
            return x * keep / (1.0 - p)
        return x * keep
