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


class Dropout(nn.Module):
    """Bernoulli (inverted or weight scaling) or multiplicative Gaussian dropout.

    - bernoulli/inverted: train x * mask / (1-p); test x.
    - bernoulli/weight:   train x * mask;         test x * (1-p)  (the paper's "scale weights by p").
    - gaussian:           train x * r, r ~ N(1, p/(1-p)), the same mean and variance as inverted
                          Bernoulli (paper section 10); test x.
    Setting `mc = True` keeps the training-time noise at evaluation (Monte-Carlo model averaging).
    """

    def __init__(self, p: float | Sequence[float] = 0.5, kind: str = "bernoulli", scaling: str = "inverted",
                 generators: Sequence[torch.Generator] | None = None):
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
        self.register_buffer("p", torch.tensor(ps).view(-1, 1, 1) if stacked else torch.tensor(ps[0]))
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
            return x * (1.0 + torch.sqrt(p / (1.0 - p)) * z)
        keep = noise(x.shape, self.generators, x.device) >= p  # P(keep) = 1 - p
        if self.scaling == "inverted":
            return x * keep / (1.0 - p)
        return x * keep
