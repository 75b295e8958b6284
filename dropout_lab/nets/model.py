"""A stack of K independent MLPs with identical layer shapes, run as one set of batched tensor ops.

Weights are (K, n_out, n_in), one row per unit as in nn.Linear, and biases (K, 1, n_out); a layer is
one `baddbmm` for all K models. Rows, because max-norm bounds each unit's incoming weights after every
update: a contiguous row norm costs 0.12 ms on a 1024x1024 layer, a strided column norm 2.7 ms, more
than the layer's three GEMMs (2-core CPU).
Each model's init and dropout noise come from generators seeded by its own seed, so a model gives
the same numbers alone or inside any stack (to floating-point tolerance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..config import Config
from .layers import Dropout

ACTIVATIONS = {"relu": torch.relu, "logistic": torch.sigmoid, "tanh": torch.tanh}

# independent random streams derived from one seed
STREAM_INIT, STREAM_ORDER, STREAM_NOISE = 1, 2, 3


def derive_seed(seed: int, *stream: int) -> int:
    """A 63-bit seed for one purpose of one run, so init, data order and masks never share a stream."""
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1, np.uint64)[0] >> 1)


def generator(seed: int, device="cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def layer_stds(sizes: Sequence[int], activation: str, rule: str = "normal", std: float | None = 0.01,
               first: float | None = None) -> list[float]:
    """The init std of each weight layer (config.ModelConfig.init says what each rule means)."""
    out = []
    for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        sigma = first if layer == 0 and first is not None else std
        if sigma is None:  # He for relu, LeCun otherwise
            out.append(math.sqrt((2.0 if activation == "relu" else 1.0) / n_in))
        else:
            out.append(sigma / math.sqrt({"normal": 1, "fan_in": n_in, "fan_out": n_out}[rule]))
    return out


class StackedMLP(nn.Module):
    def __init__(self, sizes: Sequence[int], seeds: Sequence[int], p_input: Sequence[float],
                 p_hidden: Sequence[float], activation: str = "relu", kind: str = "bernoulli",
                 scaling: str = "inverted", init_std: float | None | Sequence = 0.01, device="cpu"):
        """init_std: one std for every layer, None for He/LeCun, or per model a std, None or a list of
        per-layer stds (layer_stds() makes those from a config)."""
        super().__init__()
        K = len(seeds)
        if not (len(p_input) == len(p_hidden) == K):
            raise ValueError("seeds, p_input and p_hidden need one entry per model")
        self.K, self.sizes, self.activation = K, list(sizes), activation
        self.act = ACTIVATIONS[activation]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        init_gens = [generator(derive_seed(s, STREAM_INIT)) for s in seeds]
        per_model = list(init_std) if isinstance(init_std, Sequence) else [init_std] * K
        stds = [std if isinstance(std, Sequence) else layer_stds(sizes, activation, "normal", std)
                for std in per_model]
        for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            # drawn on the CPU so a seed gives the same init on every device
            # drawn (n_in, n_out) and stored transposed: the same init values as ever for a seed
            w = torch.stack([torch.randn(n_in, n_out, generator=g).t() * std[layer] for g, std in zip(init_gens, stds)])
            self.weights.append(nn.Parameter(w.contiguous().to(device)))
            self.biases.append(nn.Parameter(torch.zeros(K, 1, n_out, device=device)))

        # one generator per model per dropout layer: a layer that is off for a model never shifts the
        # masks of its other layers, whatever its stack-mates do
        def gens(layer: int):
            return [generator(derive_seed(s, STREAM_NOISE, layer), device) for s in seeds]

        n_hidden = len(sizes) - 2
        self.drop_in = Dropout(list(p_input), kind, scaling, gens(0), device)
        self.drops = nn.ModuleList(Dropout(list(p_hidden), kind, scaling, gens(i + 1), device)
                                   for i in range(n_hidden))

    @classmethod
    def from_configs(cls, cfgs: Sequence[Config], n_in: int, n_out: int, device="cpu") -> StackedMLP:
        first = cfgs[0]
        kinds = {c.model.dropout.kind for c in cfgs if c.has_dropout} or {"none"}
        scalings = {c.model.dropout.scaling for c in cfgs if c.has_dropout} or {"inverted"}
        if len(kinds) > 1 or len(scalings) > 1:
            raise ValueError(f"one stack needs one dropout kind and scaling, got {kinds} / {scalings}")
        return cls(
            sizes=[n_in, *first.widths(), n_out],
            seeds=[c.seed for c in cfgs],
            # a model without dropout joins any stack as p = 0: its noise is drawn and ignored
            p_input=[c.model.dropout.p_input if c.has_dropout else 0.0 for c in cfgs],
            p_hidden=[c.model.dropout.p_hidden if c.has_dropout else 0.0 for c in cfgs],
            activation=first.model.activation,
            kind=kinds.pop(),
            scaling=scalings.pop(),
            init_std=[layer_stds([n_in, *c.widths(), n_out], c.model.activation, c.model.init, c.model.init_std,
                                 c.model.init_std_first) for c in cfgs],
            device=device,
        )

    def forward(self, x: torch.Tensor, acts: list[torch.Tensor] | None = None) -> torch.Tensor:
        """x: (B, n_in) shared by all models, or (K, B, n_in) one batch per model. Returns (K, B, n_out).

        acts, when given, receives each hidden layer's activations before dropout (for KL-sparsity).
        """
        if x.dim() == 2 and not self.drop_in.off and (self.training or self.drop_in.mc):
            x = x.expand(self.K, -1, -1)  # each model drops its own input pixels
        h = self.drop_in(x)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            # a shared (B, n) input broadcasts against (K, n_out, n)^T without K copies of it
            h = torch.baddbmm(b, h, w.mT) if h.dim() == 3 else torch.matmul(h, w.mT) + b
            if i < last:
                h = self.act(h)
                if acts is not None:
                    acts.append(h)
                h = self.drops[i](h)
        return h

    def set_mc(self, on: bool) -> None:
        """Monte-Carlo evaluation: keep the dropout noise on outside training."""
        for d in [self.drop_in, *self.drops]:
            d.mc = on
