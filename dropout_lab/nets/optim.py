"""Schedules, constraints and update rules for a stack of K models, one (K, 1, 1) tensor per hyperparameter.

The learning-rate and momentum schedules, max-norm and how much of it binds, the L1/L2/sparsity penalties,
and the SGD (three momentum rules: config.OptimConfig.momentum_rule) and Adam updates. Each is a small
function of the step; train.py's loop calls them in order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..config import Config
from . import kernel

SCHEDULES = {"constant": 0, "exponential": 1, "inverse_t": 2}
RULES = {"hinton": 0, "classical": 1, "deepnet": 2}


@dataclass
class Hyper:
    """Per-model hyperparameters as (K, 1, 1) tensors on the training device."""

    lr: torch.Tensor
    schedule: torch.Tensor  # SCHEDULES code
    lr_decay: torch.Tensor
    lr_half_life: torch.Tensor
    m_start: torch.Tensor
    m_end: torch.Tensor
    m_ramp: torch.Tensor
    m_exponential: torch.Tensor  # bool: exponential approach rather than a linear ramp
    rule: torch.Tensor  # RULES code of the momentum rule
    max_norm: torch.Tensor  # inf = off
    weight_decay: torch.Tensor
    l1: torch.Tensor
    l1_after: torch.Tensor  # (K, 1, 1) updates without L1
    kl_beta: torch.Tensor  # (K,): weight of the KL-sparsity term in each model's loss
    kl_rho: torch.Tensor  # (K, 1): its target mean activation
    beta1: torch.Tensor
    beta2: torch.Tensor
    eps: torch.Tensor
    # host-side facts, so that work nobody asked for is skipped without reading the device
    any_weight_decay: bool = True
    any_max_norm: bool = True
    any_l1: bool = True
    any_deepnet: bool = True
    any_kl: bool = True
    # per model: its SGD update can be torch's fused CPU kernel (the deepnet rule, no L1), and its L2 factor
    fusable: tuple[bool, ...] = ()
    weight_decays: tuple[float, ...] = ()
    max_norms: tuple[float, ...] = ()  # per model: c as float32 rounds it, inf = off (the one-pass update's)

    @classmethod
    def from_configs(cls, cfgs: Sequence[Config], device) -> Hyper:
        def col(values, dtype=torch.float32):
            return torch.tensor(values, dtype=dtype, device=device).view(-1, 1, 1)

        def col64(values):  # schedules run in float64: 0.998**3000 drifts by 1e-4 in float32
            return col(values, torch.float64)

        o = [c.optim for c in cfgs]
        return cls(
            lr=col64([x.lr for x in o]),
            schedule=col([SCHEDULES[x.lr_schedule] for x in o]),
            lr_decay=col64([x.lr_decay for x in o]),
            lr_half_life=col64([x.lr_half_life for x in o]),
            m_start=col64([x.momentum_start for x in o]),
            m_end=col64([x.momentum_end for x in o]),
            m_ramp=col64([x.momentum_ramp_epochs for x in o]),
            m_exponential=col([x.momentum_schedule == "exponential" for x in o], torch.bool),
            rule=col([RULES[x.momentum_rule] for x in o]),
            max_norm=col([math.inf if x.max_norm is None else x.max_norm for x in o]),
            weight_decay=col([x.weight_decay for x in o]),
            l1=col([x.l1 for x in o]),
            l1_after=col([x.l1_after for x in o]),
            kl_beta=col([x.kl_sparsity for x in o]).view(-1),
            kl_rho=col([x.kl_target for x in o]).view(-1, 1),
            beta1=col([x.adam_beta1 for x in o]),
            beta2=col([x.adam_beta2 for x in o]),
            eps=col([x.adam_eps for x in o]),
            any_weight_decay=any(x.weight_decay > 0 for x in o),
            any_max_norm=any(x.max_norm is not None for x in o),
            any_l1=any(x.l1 > 0 for x in o),
            any_deepnet=any(x.momentum_rule == "deepnet" for x in o),
            any_kl=any(x.kl_sparsity > 0 for x in o),
            fusable=tuple(x.momentum_rule == "deepnet" and x.l1 == 0 for x in o),
            weight_decays=tuple(float(torch.tensor(x.weight_decay, dtype=torch.float32)) for x in o),
            max_norms=tuple(math.inf if x.max_norm is None else float(torch.tensor(x.max_norm, dtype=torch.float32))
                            for x in o),
        )


def learning_rate(h: Hyper, epoch: int, step: int) -> torch.Tensor:
    """eps_t: constant, eps_0 * decay^epoch, or eps_0 / (1 + step / half_life)."""
    exponential = h.lr * h.lr_decay ** epoch
    inverse_t = h.lr / (1.0 + step / h.lr_half_life)
    lr = torch.where(h.schedule == 1, exponential, torch.where(h.schedule == 2, inverse_t, h.lr))
    return lr.float()


def momentum(h: Hyper, epochs_done: float) -> torch.Tensor:
    """m_t: a linear ramp from m_start to m_end over m_ramp epochs (2012 arXiv paper, Appendix A.2), or
    deepnet's exponential approach m_end - (m_end - m_start) exp(-t / m_ramp). m_ramp = 0: m_end throughout."""
    t = torch.where(h.m_ramp > 0, epochs_done / h.m_ramp, math.inf)  # m_ramp = 0: both forms give m_end
    left = torch.where(h.m_exponential, torch.exp(-t), 1.0 - t.clamp(max=1.0))  # share of the gap still to go
    return (h.m_end - (h.m_end - h.m_start) * left).float()


@torch.no_grad()
def max_norm_(weights: Sequence[torch.Tensor], c: torch.Tensor) -> None:
    """Rescale each unit's *incoming* weight vector (a row of (K, n_out, n_in)) to L2 norm <= c.

    Shorter rows are untouched; c = inf turns it off. Columns would be the outgoing weights: the
    reproduction bug this guards against. deepnet does the same after every update (parameter.py
    Update, `norm_limit(weight_norm, axis=0)` on its (n_in, n_out) weight: the same units).
    """
    for w in weights:
        norms = torch.linalg.vector_norm(w, dim=2, keepdim=True)  # (K, n_out, 1), a contiguous reduction
        w.mul_(torch.clamp(c / norms, max=1.0))  # norm 0 gives inf, clamped to 1


@torch.no_grad()
def max_norm_rest_(weights: Sequence[torch.Tensor], c: torch.Tensor, done: Sequence[bool]) -> None:
    """max_norm_ on the models whose update has not applied it already (sgd_update_'s one pass): once only,
    since a second rescale of a row sitting at c would move its last bit."""
    if all(done):
        return
    max_norm_(weights, c if not any(done) else torch.where(torch.tensor(done, device=c.device).view(-1, 1, 1),
                                                            math.inf, c))


BOUND_RTOL = 1e-3  # a unit "sits at c" when its incoming norm is within 0.1% of c


@torch.no_grad()
def at_max_norm(weights: Sequence[torch.Tensor], c: torch.Tensor) -> torch.Tensor:
    """(K,) share of units, over all layers, whose incoming norm sits at c: is the constraint live?

    NaN for a model without max-norm. A unit whose last update pointed inwards sits just below c,
    hence the tolerance.
    """
    c = c.view(-1, 1)
    at = sum((w.norm(dim=2) >= c * (1 - BOUND_RTOL)).sum(dim=1) for w in weights)
    frac = at / sum(w.shape[1] for w in weights)
    return torch.where(torch.isinf(c.view(-1)), math.nan, frac)


def kl_sparsity(acts: Sequence[torch.Tensor], rho: torch.Tensor, logistic: bool) -> torch.Tensor:
    """(K,) sparsity penalty summed over hidden units, on rho_hat, a unit's batch-mean activation.

    acts are (K, B, n) activations before dropout. Logistic units: KL(rho || rho_hat), clamped so
    that a saturated unit keeps a finite log. Other units: (rho_hat - rho)^2 / 2, deepnet's form for
    them (layer.py: gradient rho_hat - rho). Its gradient is right where the Bernoulli KL is not: a
    ReLU mean above 1 (where the KL is undefined) is pulled down hardest, a dead unit (rho_hat = 0)
    is pushed up.
    """
    total = 0.0
    for a in acts:
        r = a.mean(dim=1)  # (K, n)
        if logistic:
            r = r.clamp(1e-6, 1 - 1e-6)
            pen = rho * torch.log(rho / r) + (1 - rho) * torch.log((1 - rho) / (1 - r))
        else:
            pen = 0.5 * (r - rho) ** 2
        total = total + pen.sum(dim=1)
    return total


def regularised_grad(g: torch.Tensor, p: torch.Tensor, h: Hyper, l1: torch.Tensor) -> torch.Tensor:
    """L2 and L1 on a weight: g + wd * w + l1 * sign(w); skipped where no model asks for it.

    l1: (K, 1, 1), the L1 coefficient of this step (l1_now).
    """
    if h.any_weight_decay:
        g = g + h.weight_decay * p
    if h.any_l1:
        g = g + l1 * torch.sign(p)
    return g


def l1_now(h: Hyper, step: int) -> torch.Tensor:
    """The L1 coefficient of update `step` (counted from 0): 0 for the first l1_after updates."""
    return torch.where(step >= h.l1_after, h.l1, 0.0)


FUSED_SGD = hasattr(torch, "_fused_sgd_")  # torch's one-pass CPU SGD kernel (torch.optim.SGD(fused=True))


@torch.no_grad()
def sgd_update_(params, buffers, grads, is_weight, lr, m, h: Hyper, live, step: int = 0, one_pass: bool = False,
                lows=None) -> list[bool]:
    """One SGD step with momentum under each model's rule (config.OptimConfig.momentum_rule).

    All three rules are written as D <- m*D + a*g; w <- w - b*D, with (a, b) = ((1-m)*lr, 1) for hinton,
    (lr, 1) for classical and (1, lr) for deepnet, whose accumulated update D this is (parameter.py:
    D <- m*D + g, w <- w - eps*D). L2 and L1 act on weights, not biases (deepnet: Update('bias',
    no_reg=True)). live: (K, 1, 1) bool, or None when every model is live (the common case).

    On a CPU, a live model under the deepnet rule without L1 takes one pass: torch's fused kernel
    (_fused_sgd_: reads w, g and D and writes w and D, where the ops below make five passes; L2 is its
    weight_decay, on the weights only), or with one_pass (one_pass_ready) the project's kernel, which also
    applies max-norm and, where `lows` is given (every model fused), writes the bf16 copies of the new
    weights. Returns, per model, whether max-norm is already done (the caller applies it to the others).
    The choice is each model's own, so a model alone and the same model in a stack take the same arithmetic.
    """
    K = params[0].shape[0]
    on_cpu = params[0].device.type == "cpu" and (FUSED_SGD or one_pass)
    alive = [True] * K if live is None else live.flatten().tolist()
    fused = [on_cpu and f and a for f, a in zip(h.fusable, alive)]
    if lows is not None and not all(fused):
        raise ValueError("the bf16 weight copies need every model in the one-pass update")
    done = []
    if any(fused):
        if one_pass:
            kernel.sgd_rows_(params, buffers, grads, is_weight, [*(lows or []), *[None] * len(params)],
                             lr.flatten().tolist(), m.flatten().tolist(), h.weight_decays, h.max_norms,
                             None if all(fused) else fused)
        else:
            _fused_(params, buffers, grads, is_weight, lr, m, h, [k for k in range(K) if fused[k]])
        if all(fused):
            return [one_pass] * K
        # a mixed stack: the ops below run on every model, as each of the others runs them alone; the fused
        # models' new weights and buffers are put back after them
        idx = torch.tensor([k for k in range(K) if fused[k]], device=params[0].device)
        done = [(t, t[idx].clone()) for t in (*params, *buffers)]
    _ops_(params, buffers, grads, is_weight, lr, m, h, live, step)
    for t, kept in done:
        t[idx] = kept
    return [one_pass and f for f in fused]


def _ops_(params, buffers, grads, is_weight, lr, m, h: Hyper, live, step: int) -> None:
    """The update as tensor ops on every model of the stack, each with its own rule's (a, b)."""
    deepnet = h.rule == RULES["deepnet"]
    a = torch.where(deepnet, 1.0, lr * (1.0 - m * (h.rule == RULES["hinton"])))
    b = torch.where(deepnet, lr, 1.0) if h.any_deepnet else None  # None: b = 1 for every model
    l1 = l1_now(h, step) if h.any_l1 else None
    for p, d, g, decays in zip(params, buffers, grads, is_weight):
        if decays:
            g = regularised_grad(g, p, h, l1)
        d.mul_(m).addcmul_(a, g)  # fused: no (K, n_out, n_in) temporary
        if live is None:
            p.sub_(d) if b is None else p.addcmul_(b, d, value=-1.0)
        else:  # a diverged model is frozen
            p.sub_(torch.where(live, d if b is None else b * d, 0.0))


def _fused_(params, buffers, grads, is_weight, lr, m, h: Hyper, models: list[int]) -> None:
    """The deepnet rule through torch._fused_sgd_ for these models: their weights with their L2, their
    biases without; models with the same lr, momentum and L2 in one call (all of them, when they agree,
    as whole (K, ...) tensors)."""
    lrs, ms = lr.flatten().tolist(), m.flatten().tolist()
    groups: dict[tuple, list[int]] = {}
    for k in models:
        groups.setdefault((lrs[k], ms[k], h.weight_decays[k]), []).append(k)
    whole = len(groups) == 1 and len(models) == params[0].shape[0]
    for (lr_k, m_k, wd), ks in groups.items():
        for decays, l2 in ((True, wd), (False, 0.0)):
            chosen = [i for i, w in enumerate(is_weight) if w == decays]
            if not chosen:
                continue
            p, g, d = ([ts[i] for i in chosen] if whole else [ts[i][k] for i in chosen for k in ks]
                       for ts in (params, grads, buffers))
            if m_k == 0.0:  # the kernel takes no buffers without momentum; D = g + wd w starts the next step's
                for p_i, g_i, d_i in zip(p, g, d):
                    torch.add(g_i, p_i, alpha=l2, out=d_i)
                    p_i.add_(d_i, alpha=-lr_k)
                continue
            torch._fused_sgd_(p, g, d, weight_decay=l2, momentum=m_k, lr=lr_k, dampening=0.0, nesterov=False,
                              maximize=False, is_first_step=False)


def one_pass_ready(device: torch.device) -> bool:
    """Whether the one-pass update (kernel.py) can run here: on a CPU, with the kernel built."""
    return device.type == "cpu" and kernel.library() is not None


@torch.no_grad()
def adam_update_(params, moments, grads, is_weight, lr, t: int, h: Hyper, live) -> None:
    """Adam (Kingma & Ba) with per-model lr; L2 (and L1) added to the gradient, as torch.optim.Adam does."""
    l1 = l1_now(h, t - 1) if h.any_l1 else None
    for p, (m1, m2), g, decays in zip(params, moments, grads, is_weight):
        if decays:
            g = regularised_grad(g, p, h, l1)
        m1.mul_(h.beta1).add_((1 - h.beta1) * g)
        m2.mul_(h.beta2).add_((1 - h.beta2) * g * g)
        m1_hat = m1 / (1 - h.beta1 ** t)
        m2_hat = m2 / (1 - h.beta2 ** t)
        step = lr * m1_hat / (m2_hat.sqrt() + h.eps)
        p.sub_(step if live is None else torch.where(live, step, 0.0))
