"""Run scales. `full` trains a config as written; `quick` shrinks every run by the factors below, so a
2-core CPU shows a paper config's trends in minutes. Quick runs say so in their config (scale: quick),
their results folder (<name>-quick) and every report row, and are never mixed with full ones.

Quick, stated once:
- hidden widths / 8 (at least 8 units), so a 2x8192 net becomes 2x1024;
- weight updates / 500, but never fewer than min(the full count, 1000): the paper's 1,000,000
  become 2,000;
- training on 10,000 images of the pool unless the config sets data.train_size itself (Figure 10's
  subsets are kept), and at most 2,000 held out for validation;
- schedules are compressed with the run, so they keep their shape over training: the momentum ramp
  and the inverse-t half-life cover the same fraction of the updates, and an exponential decay
  reaches the same final learning rate;
- test passes as often relative to training (eval.every), Monte-Carlo repeats at most 3.
"""

from __future__ import annotations

import math

from .config import Config
from .train import steps_per_epoch

SCALES = ("full", "quick")
QUICK_WIDTH = 8  # hidden widths are divided by this
QUICK_STEPS = 500  # weight updates are divided by this ...
QUICK_MIN_STEPS = 1000  # ... but a run keeps at least min(its full count, this many)
QUICK_TRAIN = 10_000  # images trained on, where the config does not choose a subset
QUICK_VALIDATION = 2_000  # at most this many held out
QUICK_MC_REPEATS = 3
POOL = {"mnist": 60_000, "spiral": 3_000}  # training pool sizes (data.py)


def quick(cfg: Config) -> Config:
    """The quick version of one run config."""
    if cfg.scale == "quick":
        return cfg
    c = cfg.model_copy(deep=True)
    c.scale = "quick"
    c.model.hidden = [max(8, round(n / QUICK_WIDTH)) for n in cfg.model.hidden]
    pool = POOL[cfg.data.dataset]
    c.data.validation_size = min(cfg.data.validation_size, QUICK_VALIDATION)
    if cfg.data.train_size is None:
        c.data.train_size = min(QUICK_TRAIN, pool - c.data.validation_size)
    n_full = cfg.data.train_size or pool - cfg.data.validation_size
    per_full = steps_per_epoch(n_full, cfg.optim.batch_size)
    per_quick = steps_per_epoch(c.data.train_size, cfg.optim.batch_size)
    steps_full = cfg.optim.epochs * per_full
    steps_quick = max(min(steps_full, QUICK_MIN_STEPS), math.ceil(steps_full / QUICK_STEPS))
    c.optim.epochs = max(1, round(steps_quick / per_quick))
    f = c.optim.epochs * per_quick / steps_full  # the factor actually applied to the updates
    c.optim.momentum_ramp_epochs = cfg.optim.momentum_ramp_epochs * per_full * f / per_quick
    c.optim.lr_half_life = max(1.0, cfg.optim.lr_half_life * f)
    c.optim.lr_decay = cfg.optim.lr_decay ** (cfg.optim.epochs / c.optim.epochs)
    c.eval.every = max(1, round(cfg.eval.every * c.optim.epochs / cfg.optim.epochs))
    c.eval.mc_repeats = min(cfg.eval.mc_repeats, QUICK_MC_REPEATS)
    return c


def apply(cfg: Config, scale: str) -> Config:
    if scale not in SCALES:
        raise ValueError(f"--scale {scale}: allowed {', '.join(SCALES)}")
    return quick(cfg) if scale == "quick" else cfg


def updates(cfg: Config, pool: int | None = None) -> int:
    """Weight updates of one run."""
    pool = POOL[cfg.data.dataset] if pool is None else pool
    n = cfg.data.train_size or pool - cfg.data.validation_size
    return cfg.optim.epochs * steps_per_epoch(n, cfg.optim.batch_size)
