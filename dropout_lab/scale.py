"""Run scales. `full` trains a config as written; `quick` shrinks every run by the factors below, so a
2-core CPU shows a paper config's trends in minutes. Quick runs say so in their config (scale: quick),
their results folder (<name>-quick) and every report row, and are never mixed with full ones.

Quick, stated once:
- hidden widths / 8 (at least 8 units), so a 2x8192 net becomes 2x1024. Under `init: normal` the layers
  after the first get init_std x sqrt(8), so a hidden layer keeps its signal gain init_std * sqrt(fan-in)
  (with N(0, 0.01^2) a deep net of 128-unit layers starts with a signal too small to learn from in a
  short run: measured, it stayed at chance); the first layer's fan-in (784) is not reduced, so it keeps
  its std. Under `init: fan_in` or `fan_out` the std follows the widths by itself;
- weight updates / 500, but never fewer than min(the full count, 1000): the paper's 1,000,000
  become 2,000;
- training on 10,000 images of the pool unless the config sets data.train_size itself (Figure 10's
  subsets are kept), and at most 2,000 held out for validation;
- schedules are compressed with the run: the stretch before L1 switches on (l1_after) and a linear
  momentum ramp cover the same fraction of the updates, an exponential decay reaches the same final
  learning rate, and the inverse-t half-life becomes at most a tenth of the run (the paper's 10,000 of
  1,000,000 would leave a 2,000-update run at a hundredth of its learning rate for most of it;
  measured on the Figure 11 net under the 2012 (1-m) rule: 5.2% test error with a tenth, 8.5% with
  the same 1%). Under inverse-t the momentum's ramp or time constant shrinks by the half-life's
  factor (never by more than the run's), so the lr and the momentum keep their timing: deepnet's
  step is lr / (1 - m), and with the momentum compressed like the run it reached 0.95 while the lr
  was still ~10 times above the full run's at that point. Measured on Table 2's 3x1024 max-norm row
  at the quick scale (seed 0): 11.1% test error and 25.6% train error with the time constant at a
  tenth of the run, 5.6% and 10.3% with it in step with the lr (the whole run);
- test passes as often relative to training (eval.every), Monte-Carlo repeats at most 3.
"""

from __future__ import annotations

import math

from .config import Config
from .data import TRAIN_POOL
from .train import steps_per_epoch

SCALES = ("full", "quick")
QUICK_WIDTH = 8  # hidden widths are divided by this
QUICK_STEPS = 500  # weight updates are divided by this ...
QUICK_MIN_STEPS = 1000  # ... but a run keeps at least min(its full count, this many)
QUICK_TRAIN = 10_000  # images trained on, where the config does not choose a subset
QUICK_VALIDATION = 2_000  # at most this many held out
QUICK_MC_REPEATS = 3


def quick(cfg: Config) -> Config:
    """The quick version of one run config."""
    if cfg.scale == "quick":
        return cfg
    c = cfg.model_copy(deep=True)
    c.scale = "quick"
    c.model.hidden = [max(8, round(n / QUICK_WIDTH)) for n in cfg.model.hidden]
    if cfg.model.init == "normal" and cfg.model.init_std is not None:
        c.model.init_std_first = cfg.model.init_std_first or cfg.model.init_std
        c.model.init_std = cfg.model.init_std * math.sqrt(QUICK_WIDTH)
    pool = TRAIN_POOL[cfg.data.dataset]
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
    c.optim.lr_half_life = max(1.0, min(cfg.optim.lr_half_life, c.optim.epochs * per_quick / 10))
    g = f  # the factor applied to the momentum's ramp or time constant
    if cfg.optim.lr_schedule == "inverse_t":  # keep the momentum in step with the lr (see the top)
        g = max(f, c.optim.lr_half_life / cfg.optim.lr_half_life)
    c.optim.momentum_ramp_epochs = cfg.optim.momentum_ramp_epochs * per_full * g / per_quick
    c.optim.l1_after = round(cfg.optim.l1_after * f)
    c.optim.lr_decay = cfg.optim.lr_decay ** (cfg.optim.epochs / c.optim.epochs)
    c.eval.every = max(1, round(cfg.eval.every * c.optim.epochs / cfg.optim.epochs))
    c.eval.mc_repeats = min(cfg.eval.mc_repeats, QUICK_MC_REPEATS)
    return c


def apply(cfg: Config, scale: str) -> Config:
    """scale is one of SCALES (sweep.expand checks it once, with the error a user sees)."""
    return quick(cfg) if scale == "quick" else cfg


def updates(cfg: Config, pool: int | None = None) -> int:
    """Weight updates of one run."""
    pool = TRAIN_POOL[cfg.data.dataset] if pool is None else pool
    n = cfg.data.train_size or pool - cfg.data.validation_size
    return cfg.optim.epochs * steps_per_epoch(n, cfg.optim.batch_size)
