"""The training loop for a stack of K models, written out by hand, with its schedules and max-norm.

Per-model hyperparameters live in (K, 1, 1) tensors, so one update serves every model in the stack.
Nothing inside an epoch reads a value back to the host: losses and error counts accumulate on the
device and are read once per epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import Config
from .data import Dataset, split
from .model import STREAM_ORDER, StackedMLP, derive_seed, generator

SCHEDULES = {"constant": 0, "exponential": 1, "inverse_t": 2}
RULES = {"hinton": 0, "classical": 1, "deepnet": 2}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device = cuda: no CUDA device is available (allowed here: auto, cpu)")
    return torch.device(name)


def structure_key(cfg: Config) -> tuple:
    """Runs with equal keys can share a stack; everything numeric varies inside it."""
    d = cfg.model.dropout
    kind = (d.kind, d.scaling) if cfg.has_dropout else None  # no dropout fits any stack, as p = 0
    return (cfg.data.dataset, cfg.data.train_size, cfg.data.validation_size, tuple(cfg.widths()),
            cfg.model.activation, cfg.optim.name, cfg.optim.batch_size, cfg.optim.epochs,
            cfg.eval.every, tuple(cfg.eval.mc_samples), cfg.eval.mc_repeats, kind)


def pack(cfgs: Sequence[Config]) -> list[list[int]]:
    """Indices of `cfgs` grouped into stacks of equal structure (in first-seen order)."""
    groups: list[list] = []  # [shared key, dropout kind or None, member indices]
    for i, c in enumerate(cfgs):
        *shared, kind = structure_key(c)
        for g in groups:
            if g[0] == shared and (g[1] is None or kind is None or g[1] == kind):
                g[1] = g[1] or kind
                g[2].append(i)
                break
        else:
            groups.append([shared, kind, [i]])
    return [g[2] for g in groups]


def steps_per_epoch(n_train: int, batch: int) -> int:
    # drop the last partial batch: every step has the same shape; the permutation changes each epoch
    return max(1, n_train // min(batch, n_train))


# ----------------------------------------------------------------------------------------------
# schedules and constraints


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
    """Rescale each unit's *incoming* weight vector (a column of (K, n_in, n_out)) to L2 norm <= c.

    Shorter columns are untouched; c = inf turns it off. Rows would be the outgoing weights: the
    reproduction bug this guards against. deepnet does the same after every update (parameter.py
    Update, `norm_limit(weight_norm, axis=0)` on an (n_in, n_out) weight).
    """
    for w in weights:
        norms = w.norm(dim=1, keepdim=True)  # (K, 1, n_out)
        w.mul_(torch.clamp(c / norms, max=1.0))  # norm 0 gives inf, clamped to 1


BOUND_RTOL = 1e-3  # a unit "sits at c" when its incoming norm is within 0.1% of c


@torch.no_grad()
def at_max_norm(weights: Sequence[torch.Tensor], c: torch.Tensor) -> torch.Tensor:
    """(K,) share of units, over all layers, whose incoming norm sits at c: is the constraint live?

    NaN for a model without max-norm. A unit whose last update pointed inwards sits just below c,
    hence the tolerance.
    """
    c = c.view(-1, 1)
    at = sum((w.norm(dim=1) >= c * (1 - BOUND_RTOL)).sum(dim=1) for w in weights)
    frac = at / sum(w.shape[2] for w in weights)
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


@torch.no_grad()
def sgd_update_(params, velocities, grads, is_weight, lr, m, h: Hyper, live, step: int = 0) -> None:
    """One SGD step with momentum under each model's rule (config.OptimConfig.momentum_rule).

    All three rules are written as v <- m*v - a*g; w <- w + b*v, with (a, b) = ((1-m)*lr, 1) for hinton,
    (lr, 1) for classical and (1, lr) for deepnet, where v is minus deepnet's accumulated D.
    L2 and L1 act on weights, not biases (deepnet: Update('bias', no_reg=True)).
    live: (K, 1, 1) bool, or None when every model is live (the common case, one pass cheaper).
    """
    deepnet = h.rule == RULES["deepnet"]
    a = torch.where(deepnet, 1.0, lr * (1.0 - m * (h.rule == RULES["hinton"])))
    b = torch.where(deepnet, lr, 1.0) if h.any_deepnet else None  # None: b = 1 for every model
    l1 = l1_now(h, step) if h.any_l1 else None
    for p, v, g, decays in zip(params, velocities, grads, is_weight):
        if decays:
            g = regularised_grad(g, p, h, l1)
        v.mul_(m).addcmul_(a, g, value=-1.0)  # fused: no (K, n_in, n_out) temporary
        if live is None:
            p.add_(v) if b is None else p.addcmul_(b, v)
        else:  # a diverged model is frozen
            p.add_(torch.where(live, v if b is None else b * v, 0.0))


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


# ----------------------------------------------------------------------------------------------
# the stack trainer


class StackTrainer:
    """K models of one structure, their optimiser state and data order, stepped together."""

    def __init__(self, cfgs: Sequence[Config], data: Dataset, device: torch.device | str = "cpu"):
        keys = {structure_key(c)[:-1] for c in cfgs}
        if len(keys) != 1:
            raise ValueError("a stack needs runs of one structure; use train.pack() to group them")
        self.cfgs, self.K, self.device = list(cfgs), len(cfgs), torch.device(device)
        first = cfgs[0]
        self.epochs, self.batch = first.optim.epochs, first.optim.batch_size
        self.eval_every = first.eval.every
        self.model = StackedMLP.from_configs(cfgs, data.n_features, data.n_classes, self.device)
        self.hyper = Hyper.from_configs(cfgs, self.device)
        self.optimizer = first.optim.name

        splits = [split(data.y_train, c.data.train_size, c.data.validation_size, c.seed) for c in cfgs]
        self.n_train = len(splits[0][0])
        dev = self.device
        self.train_idx = torch.stack([torch.as_tensor(t) for t, _ in splits]).to(dev)  # (K, n_train)
        val_idx = torch.stack([torch.as_tensor(v) for _, v in splits]).to(dev)  # (K, n_val)
        self.x_pool = torch.as_tensor(data.x_train, device=dev)
        self.y_pool = torch.as_tensor(data.y_train, device=dev)
        self.x_val, self.y_val = self.x_pool[val_idx], self.y_pool[val_idx]  # gathered once, not every epoch
        self.x_test = torch.as_tensor(data.x_test, device=dev)
        self.y_test = torch.as_tensor(data.y_test, device=dev)
        self.order_gens = [generator(derive_seed(c.seed, STREAM_ORDER)) for c in cfgs]

        self.params = [*self.model.weights, *self.model.biases]
        self.is_weight = [True] * len(self.model.weights) + [False] * len(self.model.biases)
        if self.optimizer == "sgd":
            self.state = [torch.zeros_like(p) for p in self.params]
        else:
            self.state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self.params]
        self.live = torch.ones(self.K, 1, 1, dtype=torch.bool, device=dev)
        self.all_live = True  # host copy of live.all(): set False by train_stack when a model diverges
        self.epoch, self.step = 0, 0  # epochs and steps completed
        self.s = 0  # steps done in the current epoch
        self.order: torch.Tensor | None = None  # (K, n_train) pool indices of the epoch in progress
        self.loss_sum = torch.zeros(self.K, device=dev)
        self.wrong = torch.zeros(self.K, device=dev)

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.n_train, self.batch)

    def begin_epoch(self) -> None:
        perms = torch.stack([torch.randperm(self.n_train, generator=g) for g in self.order_gens])
        self.order = torch.gather(self.train_idx, 1, perms.to(self.device))
        self.s = 0
        self.loss_sum.zero_()
        self.wrong.zero_()

    def train_step(self) -> None:
        self.model.train()
        B = min(self.batch, self.n_train)
        h = self.hyper
        idx = self.order[:, self.s * B:(self.s + 1) * B]
        x, y = self.x_pool[idx], self.y_pool[idx]  # (K, B, D), (K, B)
        lr = learning_rate(h, self.epoch, self.step)
        acts: list[torch.Tensor] | None = [] if h.any_kl else None
        logits = self.model(x, acts)
        nll = -F.log_softmax(logits, dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)  # (K, B)
        loss = nll.mean(dim=1)
        if acts is not None:
            loss = loss + h.kl_beta * kl_sparsity(acts, h.kl_rho, self.model.activation == "logistic")
        # the sum over models keeps each model's gradient that of its own mean loss
        loss.sum().backward()
        grads = [p.grad for p in self.params]
        live = None if self.all_live else self.live
        if self.optimizer == "sgd":
            m = momentum(h, self.step / self.steps_per_epoch)
            sgd_update_(self.params, self.state, grads, self.is_weight, lr, m, h, live, self.step)
        else:
            adam_update_(self.params, self.state, grads, self.is_weight, lr, self.step + 1, h, live)
        if h.any_max_norm:
            max_norm_(self.model.weights, h.max_norm)
        for p in self.params:
            p.grad = None
        with torch.no_grad():
            self.loss_sum += nll.sum(dim=1)
            self.wrong += (logits.argmax(dim=-1) != y).sum(dim=1)
        self.step += 1
        self.s += 1

    def end_epoch(self) -> dict[str, torch.Tensor]:
        """Close the epoch: mean train loss and error of each model, as (K,) tensors."""
        self.epoch += 1
        self.order = None
        n = self.s * min(self.batch, self.n_train)
        bound = (at_max_norm(self.model.weights, self.hyper.max_norm) if self.hyper.any_max_norm
                 else torch.full((self.K,), math.nan))
        return {"train_loss": self.loss_sum / n, "train_error": self.wrong / n, "max_norm_bound": bound}

    def train_epoch(self) -> dict[str, torch.Tensor]:
        """One pass over each model's own permutation of its training set."""
        self.begin_epoch()
        while self.s < self.steps_per_epoch:
            self.train_step()
        return self.end_epoch()

    # ----- checkpoints: one model's slice of everything that decides its future numbers -----
    def _generators(self, k: int) -> list[torch.Generator]:
        return [self.order_gens[k], *(d.generators[k] for d in [self.model.drop_in, *self.model.drops])]

    def _optim_tensors(self) -> list[torch.Tensor]:
        return [t for st in self.state for t in (st if isinstance(st, tuple) else (st,))]

    def model_state(self, k: int) -> dict:
        cpu = lambda t: t[k].detach().to("cpu", copy=True)  # noqa: E731
        flat = self._optim_tensors()
        return {"epoch": self.epoch, "step": self.step, "s": self.s,
                "params": [cpu(p) for p in self.params], "optim": [cpu(t) for t in flat],
                "rng": [g.get_state() for g in self._generators(k)],
                "order": None if self.order is None else cpu(self.order),
                "loss_sum": cpu(self.loss_sum), "wrong": cpu(self.wrong)}

    @torch.no_grad()
    def load_model_state(self, k: int, st: dict) -> None:
        if (st["epoch"], st["step"], st["s"]) != (self.epoch, self.step, self.s) and k > 0:
            raise ValueError("models of one stack must resume from the same step")
        self.epoch, self.step, self.s = st["epoch"], st["step"], st["s"]
        flat = self._optim_tensors()
        for dst, src in zip([*self.params, *flat], [*st["params"], *st["optim"]]):
            dst[k].copy_(src)
        for g, state in zip(self._generators(k), st["rng"]):
            g.set_state(state)
        if st["order"] is not None:
            if self.order is None:
                self.order = torch.zeros(self.K, self.n_train, dtype=torch.long, device=self.device)
            self.order[k] = st["order"]
        self.loss_sum[k], self.wrong[k] = st["loss_sum"], st["wrong"]

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean pass (dropout off, weight scaling on where chosen): (loss, error), each (K,).

        x is (N, D) shared by all models or (K, N, D); chunked so K x chunk x width stays small.
        """
        self.model.eval()
        n = x.shape[-2]
        chunk = max(256, min(n, (1 << 24) // (self.K * max(self.model.sizes))))
        loss = torch.zeros(self.K, device=self.device)
        wrong = torch.zeros(self.K, device=self.device)
        for i in range(0, n, chunk):
            xs, ys = x[..., i:i + chunk, :], y[..., i:i + chunk]
            logits = self.model(xs)
            ys = ys.expand(self.K, -1) if ys.dim() == 1 else ys
            loss += F.cross_entropy(logits.transpose(1, 2), ys, reduction="none").sum(dim=1)
            wrong += (logits.argmax(dim=-1) != ys).sum(dim=1)
        return loss / n, wrong / n

    def epoch_metrics(self) -> dict[str, torch.Tensor]:
        test_loss, test_error = self.evaluate(self.x_test, self.y_test)
        out = {"test_loss": test_loss, "test_error": test_error}
        if self.y_val.shape[1]:
            _, out["val_error"] = self.evaluate(self.x_val, self.y_val)
        return out


def train_stack(cfgs: Sequence[Config], data: Dataset, device="cpu", states: Sequence[dict | None] | None = None,
                on_step: Callable[[StackTrainer], None] | None = None,
                on_end: Callable[[StackTrainer], None] | None = None) -> Iterator[list[dict | None]]:
    """Train a stack, yielding after every epoch one metrics row per model (None once it has stopped).

    `states` resumes each model from its checkpoint (all from one step); `on_step(trainer)` runs after
    every step, where the caller may checkpoint or stop. A row whose `diverged` is True is that
    model's last: a NaN or inf loss froze it, the rest go on. `on_end(trainer)` runs once after the
    last epoch's rows, while the trained nets are still there (final evaluations).
    """
    tr = StackTrainer(cfgs, data, device)
    seconds0 = 0.0
    for k, st in enumerate(states or []):
        if st is not None:
            tr.load_model_state(k, st)
            seconds0 = max(seconds0, st.get("seconds", 0.0))
    t0 = time.perf_counter() - seconds0
    stopped = [False] * tr.K
    while tr.epoch < tr.epochs:
        if tr.order is None:
            tr.begin_epoch()
        while tr.s < tr.steps_per_epoch:
            tr.train_step()
            if on_step is not None:
                on_step(tr)
        metrics = tr.end_epoch()
        if tr.epoch % tr.eval_every == 0 or tr.epoch == tr.epochs:
            metrics.update(tr.epoch_metrics())
        else:  # rows without a test pass keep their columns, as nan, so every epoch has one row
            nan = torch.full((tr.K,), math.nan)
            metrics.update(test_loss=nan, test_error=nan, **({"val_error": nan} if tr.y_val.shape[1] else {}))
        lr = learning_rate(tr.hyper, tr.epoch - 1, tr.step - 1).flatten()
        m = momentum(tr.hyper, (tr.step - 1) / tr.steps_per_epoch).flatten()  # as used by the last step
        host = {k: v.tolist() for k, v in metrics.items()}  # the one sync of the epoch
        lr, m = lr.tolist(), m.tolist()
        seconds = time.perf_counter() - t0
        rows: list[dict | None] = []
        for k in range(tr.K):
            if stopped[k]:
                rows.append(None)
                continue
            diverged = not math.isfinite(host["train_loss"][k])
            row = {"epoch": tr.epoch, "step": tr.step, "lr": lr[k],
                   "momentum": m[k] if tr.optimizer == "sgd" else float("nan"),
                   **{key: vals[k] for key, vals in host.items()}, "seconds": seconds, "diverged": diverged}
            if diverged:
                stopped[k] = True
                tr.live[k] = False
                tr.all_live = False
            rows.append(row)
        yield rows
        if all(stopped):
            return
    if on_end is not None:
        on_end(tr)
