"""Run scales. `full` trains a config as written; `quick` and `medium` shrink every run by the factors
below, stated once here. A shrunk run says so in its config (scale: quick | medium), its results folder
(<name>-quick, <name>-medium) and every report row, and is never mixed with runs of another scale.

- quick: a paper config's trends in minutes on a 2-core CPU. Its nets are undertrained (2,000 updates),
  so most of the paper's claims do not show at this scale.
- medium: every claim of the paper on a 2-core CPU in hours (`make paper SCALE=medium`). The factors
  were chosen by measurement on that CPU (README, "The medium scale"); OVERRIDES gives the three
  configs whose own differ, with the reason for each.

The factors, and why:
- hidden widths / `width` (at least 8 units): quick /8, so a 2x8192 net becomes 2x1024; medium /4,
  which keeps the suite within hours (a 3x256 net trains 8 times faster per update than 3x1024 on one
  core). Under `init: normal` the layers after the first get init_std x sqrt(width), so a hidden layer
  keeps its signal gain init_std * sqrt(fan-in) (with N(0, 0.01^2) a deep net of 128-unit layers starts
  with a signal too small to learn from in a short run: measured, it stayed at chance); the first
  layer's fan-in (784) is not reduced, so it keeps its std. Under `init: fan_in` or `fan_out` the std
  follows the widths by itself. A width rule (Figure 9b's n = pn / p) applies to the shrunk pn, so p*n
  stays fixed across a sweep, as the figure needs;
- weight updates: quick divides them by 500 but keeps at least min(the full count, 1,000), so the
  paper's 1,000,000 become 2,000; medium keeps at most 20,000 and shorter runs as they are;
- training images: 10,000 of the pool unless the config sets data.train_size itself (Figure 10's
  subsets are kept at every scale), at most 2,000 held out. At medium this is what lets the paper's
  claims show within 20,000 updates of /4 nets: on all 60,000 images such nets are still learning and
  dropout does not yet pay (Figure 4's 2x256 net, seed 0: 2.03% with dropout against 1.86% without,
  30,000 updates); on 10,000 the nets without dropout overfit as the paper's do, and dropout wins
  (3.06% against 3.89%, 20,000 updates);
- schedules are compressed with the run: the stretch before L1 switches on (l1_after) and a linear
  momentum ramp cover the same fraction of the updates, and an exponential decay reaches the same
  final learning rate. Under inverse-t (the authors' rule) each scale has its rule (`schedule`):
  - quick, "tenth": the half-life becomes at most a tenth of the run (the paper's 10,000 of 1,000,000
    would leave a 2,000-update run at a hundredth of its learning rate for most of it; measured on the
    Figure 11 net under the 2012 (1-m) rule: 5.2% test error with a tenth, 8.5% with the same 1%), and
    the momentum's time constant shrinks by the half-life's factor (never by more than the run's), so
    the lr and the momentum keep their timing: deepnet's step is lr / (1 - m), and with the momentum
    compressed like the run it reached 0.95 while the lr was still ~10 times above the full run's at
    that point. Measured on Table 2's 3x1024 max-norm row at the quick scale (seed 0): 11.1% test error
    and 25.6% train error with the time constant at a tenth of the run, 5.6% and 10.3% with it in step
    with the lr (the whole run);
  - medium, "squeeze": the half-life and the time constant both shrink by the run's own factor, so
    lr / (1 - m) follows the full run's curve, squeezed in time, and ends as annealed as the full run.
    Measured on Table 2's two 3x1024 ReLU rows at /4 (seed 0, 30,000 updates on 60,000 images): 2.18%
    and 1.97% test error squeezed, 2.23% and 2.28% with "tenth", 2.22% and 2.45% with the full run's
    schedule unchanged (its first 30,000 updates);
- test passes as often relative to training (eval.every), and at medium at most 50 a run (on 10,000
  images an epoch is 100 updates, and a pass over the 10,000 test images at each would add a third);
  Monte-Carlo repeats at most `mc_repeats`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..config import Config
from ..training.data import TRAIN_POOL
from ..training.train import steps_per_epoch


@dataclass(frozen=True)
class Scale:
    width: int  # hidden widths are divided by this
    step_divisor: float  # weight updates are divided by this ...
    min_steps: int  # ... but a run keeps at least min(its full count, this many)
    max_steps: int | None  # and at most this many (None: no cap)
    train: int | None  # images trained on where the config does not choose a subset; None: as configured
    validation: int | None  # at most this many held out; None: as configured
    mc_repeats: int  # at most this many Monte-Carlo repeats of each k
    # how the lr half-life and the momentum's time constant follow the shorter run (inverse-t configs):
    # "tenth": the half-life at most a tenth of the run, the momentum in step with it (see the top);
    # "squeeze": both shrink by the run's own factor, the full run's lr / (1 - m) curve squeezed in time;
    # "keep": both as the full run has them, so the run is the full run's first updates
    schedule: str = "tenth"
    max_evals: int | None = None  # at most this many test passes a run (the last epoch always has one)


SCALE_SPECS = {
    "quick": Scale(width=8, step_divisor=500, min_steps=1000, max_steps=None, train=10_000, validation=2_000,
                   mc_repeats=3),
    "medium": Scale(width=4, step_divisor=math.inf, min_steps=20_000, max_steps=20_000, train=10_000,
                    validation=2_000, mc_repeats=10, schedule="squeeze", max_evals=50),
}
SCALES = ("full", *SCALE_SPECS)

# a config's own factors where the scale's would change what its claim means (README, "The medium scale")
OVERRIDES = {
    "medium": {
        # Figures 9a and 9b sweep the retention with no control. On 10,000 images the nets that keep 0.7-0.8
        # of their units overfit, which the paper's nets on 60,000 do not (Figure 9a at /4, seed 0, 12,800
        # updates: 4.46% and 4.06% against 3.38% at 0.6); on all 60,000 with 30,000 updates the error over
        # retention 0.4-0.8 spans 0.18 points (1.71-1.89%), as flat as the paper's figure
        "fig9a": {"train": None, "min_steps": 30_000, "max_steps": 30_000},
        "fig9b": {"train": None, "min_steps": 30_000, "max_steps": 30_000},
        # Table 2 states no claim; at /4 its 2x8192 row alone (2x2048) would take a sixth of the suite
        "table2": {"width": 8},
        # Figure 10's controls are picked on the held-out images: 2,000 would leave a validation error's
        # standard error near 0.4 points at 3%, larger than the gaps between the grid's choices
        "fig10_controls": {"validation": 10_000},
    },
}


def spec_of(cfg: Config, scale: str) -> Scale:
    """The factors `scale` applies to this config (by its name: configs/paper/<name>.yaml)."""
    name = cfg.name.removesuffix(f"-{scale}")
    return replace(SCALE_SPECS[scale], **OVERRIDES.get(scale, {}).get(name, {}))


def scaled_steps(full: int, spec: Scale) -> int:
    """The updates a run of `full` updates makes at this scale."""
    steps = max(min(full, spec.min_steps), math.ceil(full / spec.step_divisor))
    return min(steps, spec.max_steps) if spec.max_steps else steps


def shrink(cfg: Config, scale: str) -> Config:
    """The run config at `scale` (one of SCALE_SPECS) of one full run config."""
    if cfg.scale == scale:
        return cfg
    spec = spec_of(cfg, scale)
    c = cfg.model_copy(deep=True)
    c.scale = scale
    c.model.hidden = [max(8, round(n / spec.width)) for n in cfg.model.hidden]
    if cfg.model.init == "normal" and cfg.model.init_std is not None:
        c.model.init_std_first = cfg.model.init_std_first or cfg.model.init_std
        c.model.init_std = cfg.model.init_std * math.sqrt(spec.width)
    pool = TRAIN_POOL[cfg.data.dataset]
    if spec.validation is not None:
        c.data.validation_size = min(cfg.data.validation_size, spec.validation)
    if cfg.data.train_size is None and spec.train is not None:
        c.data.train_size = min(spec.train, pool - c.data.validation_size)
    n_full = cfg.data.train_size or pool - cfg.data.validation_size
    n_scaled = c.data.train_size or pool - c.data.validation_size
    per_full = steps_per_epoch(n_full, cfg.optim.batch_size)
    per_scaled = steps_per_epoch(n_scaled, cfg.optim.batch_size)
    steps_full = cfg.optim.epochs * per_full
    c.optim.epochs = max(1, round(scaled_steps(steps_full, spec) / per_scaled))
    f = c.optim.epochs * per_scaled / steps_full  # the factor actually applied to the updates
    g = f  # the factor applied to the momentum's ramp or time constant
    if spec.schedule == "tenth":
        c.optim.lr_half_life = max(1.0, min(cfg.optim.lr_half_life, c.optim.epochs * per_scaled / 10))
        if cfg.optim.lr_schedule == "inverse_t":  # keep the momentum in step with the lr (see the top)
            g = max(f, c.optim.lr_half_life / cfg.optim.lr_half_life)
    elif spec.schedule == "squeeze":
        c.optim.lr_half_life = max(1.0, cfg.optim.lr_half_life * f)
    elif cfg.optim.lr_schedule == "inverse_t":  # keep: the full run's first updates
        g = 1.0
    c.optim.momentum_ramp_epochs = cfg.optim.momentum_ramp_epochs * per_full * g / per_scaled
    c.optim.l1_after = round(cfg.optim.l1_after * f)
    c.optim.lr_decay = cfg.optim.lr_decay ** (cfg.optim.epochs / c.optim.epochs)
    c.eval.every = max(1, round(cfg.eval.every * c.optim.epochs / cfg.optim.epochs))
    if spec.max_evals:  # on a small training set an epoch is short: a test pass each would cost a third
        c.eval.every = max(c.eval.every, math.ceil(c.optim.epochs / spec.max_evals))
    c.eval.mc_repeats = min(cfg.eval.mc_repeats, spec.mc_repeats)
    return c


def quick(cfg: Config) -> Config:
    return shrink(cfg, "quick")


def medium(cfg: Config) -> Config:
    return shrink(cfg, "medium")


def apply(cfg: Config, scale: str) -> Config:
    """scale is one of SCALES (sweep.expand checks it once, with the error a user sees)."""
    return cfg if scale == "full" else shrink(cfg, scale)


def updates(cfg: Config, pool: int | None = None) -> int:
    """Weight updates of one run."""
    pool = TRAIN_POOL[cfg.data.dataset] if pool is None else pool
    n = cfg.data.train_size or pool - cfg.data.validation_size
    return cfg.optim.epochs * steps_per_epoch(n, cfg.optim.batch_size)
