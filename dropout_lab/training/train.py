"""The training loop for a stack of K models, written out by hand (its schedules and updates: optim.py).

Per-model hyperparameters live in (K, 1, 1) tensors, so one update serves every model in the stack.
Nothing inside an epoch reads a value back to the host: losses and error counts accumulate on the
device and are read once per epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence

import torch

from ..config import Config
from ..nets import step as fused
from ..nets.model import STREAM_ORDER, StackedMLP, derive_seed, generator
from ..nets.optim import (
    Hyper,
    adam_update_,
    at_max_norm,
    learning_rate,
    max_norm_rest_,
    momentum,
    one_pass_ready,
    sgd_update_,
)
from .data import Dataset, split
from .evaluate import CleanEvaluation
from .stack_state import CheckpointState


def resolve_device(name: str) -> torch.device:
    """auto, cpu, cuda or cuda:N, checked against this machine. ValueError: one line for the user."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    allowed = ", ".join(["auto", "cpu", *(["cuda"] + [f"cuda:{i}" for i in range(n)] if n else [])])
    if name == "auto":
        return torch.device("cuda" if n else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    head, _, index = name.partition(":")
    if head != "cuda" or (index and not index.isdigit()):
        raise ValueError(f"device = {name!r}: not a device dropout-lab trains on (allowed here: {allowed})")
    if not n:
        raise ValueError(f"device = {name!r}: no CUDA device is available (allowed here: {allowed})")
    if index and int(index) >= n:
        raise ValueError(f"device = {name!r}: this machine has {n} CUDA device(s) (allowed here: {allowed})")
    return torch.device(name)


def structure_key(cfg: Config) -> tuple:
    """Runs with equal keys can share a stack; everything numeric varies inside it."""
    d = cfg.model.dropout
    kind = (d.kind, d.scaling) if cfg.has_dropout else None  # no dropout fits any stack, as p = 0
    return (cfg.data.dataset, cfg.data.train_size, cfg.data.validation_size, tuple(cfg.widths()),
            cfg.model.activation, cfg.optim.name, cfg.optim.batch_size, cfg.optim.epochs,
            cfg.eval.every, tuple(cfg.eval.mc_samples), cfg.eval.mc_repeats, cfg.precision, kind)


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
# the stack trainer


class StackTrainer(CheckpointState, CleanEvaluation):
    """K models of one structure, their optimiser state and data order, stepped together.

    Its checkpoint state (stack_state.CheckpointState) and its clean test passes (evaluate.CleanEvaluation)
    are written apart; this class holds the data order, the step and the epoch."""

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
        self.gemm = fused.Gemm(first.precision, self.device)

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
        # the one-pass update (kernel.py) where every model can take it
        self.one_pass = self.optimizer == "sgd" and any(self.hyper.fusable) and one_pass_ready(self.device)
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
        if self.order is None or self.s >= self.steps_per_epoch:
            raise RuntimeError("train_step outside an epoch: call begin_epoch() first")
        B = min(self.batch, self.n_train)
        h = self.hyper
        idx = self.order[:, self.s * B:(self.s + 1) * B]
        # (K, B, D), gathered into the step's kept buffer (step.Gemm says why)
        x = torch.index_select(self.x_pool, 0, idx.reshape(-1),
                               out=self.gemm.buf("x", (idx.numel(), self.x_pool.shape[1])))
        x, y = x.view(*idx.shape, -1), self.y_pool[idx]
        lr = learning_rate(h, self.epoch, self.step)
        self.model.train()
        kl = (h.kl_beta, h.kl_rho) if h.any_kl else None
        # every model in the one-pass update: it reads the bf16 weight gradients and writes the bf16 weights
        whole = self.one_pass and self.all_live and all(h.fusable)
        nll, logits, grads = fused.forward_backward(self.model, x, y, self.gemm, kl, low_grads=whole)
        live = None if self.all_live else self.live
        done = [False] * self.K  # models whose max-norm the update applied
        if self.optimizer == "sgd":
            m = momentum(h, self.step / self.steps_per_epoch)
            lows = self.gemm.weight_copies(self.model.weights) if whole else None
            done = sgd_update_(self.params, self.state, grads, self.is_weight, lr, m, h, live, self.step,
                               one_pass=self.one_pass, lows=lows)
        else:
            adam_update_(self.params, self.state, grads, self.is_weight, lr, self.step + 1, h, live)
        if h.any_max_norm:
            max_norm_rest_(self.model.weights, h.max_norm, done)
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
