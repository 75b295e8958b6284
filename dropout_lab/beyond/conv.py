"""Does dropout work on convolutional layers? `dropout-lab beyond conv`, measured on MNIST.

One of the notes the project grew from says dropout should not be used on conv nets, "because it does not
actually work". The paper disagrees (Section 6.1.2, Table 3: on SVHN, dropout in the conv layers too took
the error from 3.02% to 2.55%); later work found unit-wise dropout on feature maps weaker than dropping
whole maps (Tompson et al. 2015). Here a small conv net (config.ConvNetConfig) trains on a small MNIST
subset, where the net without dropout overfits, in four variants (config.ConvConfig.variants) on the same
recipe, 3 seeds each; verdicts.verdict_conv judges the note's claim with the project's noise rule.

The recipe, the same for every variant:
- the deepnet update D <- m D + g, w <- w - eps D (deepnet parameter.py Update), constant eps and m, as
  deepnet's conv example keeps its conv layers' momentum at 0.9 (examples/convnet/model_conv.pbtxt);
- max-norm on every unit's incoming weights after each update, a conv filter being one unit; c = 4, the
  top of the range the paper gives for c (Section 5.1: "typical values of c range from 3 to 4");
- inverted dropout (kept units scaled by 1/p in training, the net used as it is at test), the same
  function in expectation as the paper's weight scaling at test (Section 10 and layers.Dropout);
- masks from the project's 16-bit decisions (layers.keep_mask), from each seed's own generators;
- init: conv filters N(0, 0.01^2) (deepnet's conv example, DENSE_GAUSSIAN sigma 0.01), fully
  connected weights N(0, 1/n_out) (deepnet DENSE_GAUSSIAN_SQRT_FAN_IN, sigma 1.0), biases 0.
A seed fixes the subset, the init, the batch order and the masks: the variants of one seed start from the
same weights and see the same images in the same order, so their differences are the variants'.

The step uses autograd: this is a small experiment beside the project's hand-written MLP step, and a run
takes seconds. Each run is written (atomically) when it completes, so an interrupted experiment resumes at
the next run and never loses a finished one.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ConvConfig, to_yaml
from ..nets.layers import keep_mask
from ..nets.model import STREAM_INIT, STREAM_NOISE, STREAM_ORDER, derive_seed, generator
from ..store.results import atomic_write, env_info
from ..training import data as data_mod

KERNEL, PAD, POOL = 5, 2, 2
# feature maps stored channels-last: oneDNN's convolutions and pooling skip a reorder each call (measured:
# 36 against 40 ms a step for 16/32 maps, batch 100, 2-core CPU)
LAYOUT = torch.channels_last  # 5x5 filters, padding 2 (deepnet's conv example), 2x2 max-pooling
CURVE_FIELDS = ["updates", "test_error", "train_error"]


def run_id(variant: str, size: int, seed: int) -> str:
    return f"{variant}-n{size}-s{seed}"


def dropout_mask(shape: tuple[int, ...], keep: float, whole_maps: bool, gen: torch.Generator,
                 device: torch.device) -> torch.Tensor:
    """The inverted-dropout factor of a (B, C, H, W) or (B, n) activation: 0 or 1/keep. whole_maps: one
    decision per example and feature map (channel dropout), else one per unit."""
    drawn = shape[:2] if whole_maps else shape
    p = torch.tensor(1.0 - keep)
    kept = keep_mask((1, *drawn), p, [gen], device)[0]  # 16-bit decisions from this layer's own stream
    if whole_maps:
        kept = kept.view(*drawn, *[1] * (len(shape) - 2))
    return kept.to(torch.float32) / keep


class ConvNet:
    """The net of one run: conv layers (ReLU, 2x2 max-pool), one fully connected ReLU layer, softmax."""

    def __init__(self, cfg: ConvConfig, seed: int, device: torch.device):
        g = generator(derive_seed(seed, STREAM_INIT))
        chans, side = [1, *cfg.net.channels], 28
        self.convs = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            w = torch.randn(c_out, c_in, KERNEL, KERNEL, generator=g) * 0.01
            w = w.to(device).contiguous(memory_format=LAYOUT)
            self.convs.append((w, torch.zeros(c_out, device=device)))
            side //= POOL
        flat = chans[-1] * side * side

        def dense(n_in, n_out):
            return (torch.randn(n_out, n_in, generator=g) / n_out ** 0.5).to(device), torch.zeros(n_out, device=device)
        self.fc, self.out = dense(flat, cfg.net.hidden), dense(cfg.net.hidden, 10)
        self.params = [t for pair in (*self.convs, self.fc, self.out) for t in pair]
        self.weights = [w for w, _ in (*self.convs, self.fc, self.out)]

    def forward(self, x: torch.Tensor, masks: list[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Logits of x (B, 784); masks: a factor per conv layer and one for the fc layer (None: no dropout)."""
        masks = masks or [None] * (len(self.convs) + 1)
        h = x.view(-1, 1, 28, 28).contiguous(memory_format=LAYOUT)
        for (w, b), m in zip(self.convs, masks):
            h = F.max_pool2d(F.relu(F.conv2d(h, w, b, padding=PAD)), POOL)
            h = h if m is None else h * m
        h = F.relu(F.linear(h.flatten(1), *self.fc))
        h = h if masks[-1] is None else h * masks[-1]
        return F.linear(h, *self.out)

    @torch.no_grad()
    def error(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 2000) -> float:
        wrong = sum(int((self.forward(x[i:i + chunk]).argmax(1) != y[i:i + chunk]).sum())
                    for i in range(0, len(y), chunk))
        return wrong / len(y)


@torch.no_grad()
def max_norm_(weights: list[torch.Tensor], c: float) -> None:
    """Each unit's incoming weights (a row of a dense layer, a whole filter of a conv layer) to norm <= c."""
    for w in weights:
        norms = w.flatten(1).norm(dim=1).view(-1, *[1] * (w.dim() - 1))
        w.mul_(torch.clamp(c / norms, max=1.0))


def train_run(cfg: ConvConfig, variant: str, size: int, seed: int, data: data_mod.Dataset,
              device: torch.device) -> list[dict]:
    """One run; returns its curve: test (and training-set) error every eval_every updates and at the end."""
    train_idx, _ = data_mod.split(data.y_train, size, 0, seed)
    x_train = torch.as_tensor(data.x_train[train_idx], device=device)
    y_train = torch.as_tensor(data.y_train[train_idx], device=device)
    x_test, y_test = torch.as_tensor(data.x_test, device=device), torch.as_tensor(data.y_test, device=device)
    net = ConvNet(cfg, seed, device)
    for p in net.params:
        p.requires_grad_(True)
    moms = [torch.zeros_like(p) for p in net.params]
    order_gen = generator(derive_seed(seed, STREAM_ORDER))
    mask_gens = [generator(derive_seed(seed, STREAM_NOISE, layer)) for layer in range(len(net.convs) + 1)]
    on_conv = variant in ("conv_element", "conv_channel")
    B = min(cfg.batch_size, size)
    per_epoch = size // B
    curve, order = [], None
    for step in range(cfg.updates):
        if step % per_epoch == 0:
            order = torch.randperm(size, generator=order_gen).to(device)
        idx = order[(step % per_epoch) * B:(step % per_epoch + 1) * B]
        x, y = x_train[idx], y_train[idx]
        masks: list[torch.Tensor | None] = [None] * (len(net.convs) + 1)
        if variant != "none":
            side = 28
            for i, c in enumerate(cfg.net.channels):
                side //= POOL
                if on_conv:
                    masks[i] = dropout_mask((B, c, side, side), cfg.conv_keep[i], variant == "conv_channel",
                                            mask_gens[i], device)
            masks[-1] = dropout_mask((B, cfg.net.hidden), cfg.fc_keep, False, mask_gens[-1], device)
        loss = F.cross_entropy(net.forward(x, masks), y)
        grads = torch.autograd.grad(loss, net.params)
        with torch.no_grad():
            for p, d, g in zip(net.params, moms, grads):  # deepnet parameter.py Update
                d.mul_(cfg.momentum).add_(g)
                p.sub_(cfg.lr * d)
            if cfg.max_norm is not None:
                max_norm_(net.weights, cfg.max_norm)
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.updates:
            curve.append({"updates": done, "test_error": net.error(x_test, y_test),
                          "train_error": net.error(x_train, y_train)})
            if not np.isfinite(loss.item()):
                break  # diverged: the curve says where
    return curve


def _curve_csv(curve: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CURVE_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(curve)
    return buf.getvalue()


def read_curve(path: Path) -> list[dict]:
    """A finished run's curve. ValueError, one line naming the file, where it is damaged: it is never
    silently trained over."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [{"updates": int(r["updates"]), "test_error": float(r["test_error"]),
                     "train_error": float(r["train_error"])} for r in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: damaged ({type(e).__name__}); move it away and the run trains again") from None
    if not rows or any(not 0 <= r["test_error"] <= 1 or not 0 <= r["train_error"] <= 1 for r in rows):
        raise ValueError(f"{path}: damaged (no rows, or an error outside 0-1); move it away and the run trains again")
    return rows


def plan(cfg: ConvConfig) -> list[tuple[str, int, int]]:
    """Every run, seeds innermost within a size, so that a stopped experiment has whole comparisons first."""
    return [(v, n, s) for n in cfg.train_sizes for s in cfg.seeds for v in cfg.variants]


def summarise(cfg: ConvConfig, out: Path) -> dict:
    """Per size and variant: each seed's final test and train error, and their mean and sample std."""
    table: dict = {}
    for v, n, s in plan(cfg):
        path = out / "runs" / f"{run_id(v, n, s)}.csv"
        if not path.is_file():
            continue
        last = read_curve(path)[-1]
        cell = table.setdefault(str(n), {}).setdefault(v, {"seeds": [], "test": [], "train": []})
        cell["seeds"].append(s)
        cell["test"].append(100 * last["test_error"])
        cell["train"].append(100 * last["train_error"])
    for by_variant in table.values():
        for cell in by_variant.values():
            t = np.array(cell["test"])
            cell["mean"] = float(t.mean())
            cell["std"] = float(t.std(ddof=1)) if len(t) > 1 else 0.0
            cell["n"] = len(t)
            cell["train_mean"] = float(np.mean(cell["train"]))
    return table


def experiment(cfg: ConvConfig, out: Path, command: str, log=print) -> dict:
    """Train every run not already in out/runs/, then write summary.json and the figures."""
    from ..training.train import resolve_device
    from .conv_plots import draw

    device = resolve_device(cfg.device)
    for v, n, s in plan(cfg):  # a damaged finished run is refused before any work
        if (out / "runs" / f"{run_id(v, n, s)}.csv").is_file():
            read_curve(out / "runs" / f"{run_id(v, n, s)}.csv")
    data = data_mod.load("mnist")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.yaml", to_yaml(cfg))
    runs = plan(cfg)
    todo = [r for r in runs if not (out / "runs" / f"{run_id(*r)}.csv").is_file()]
    log(f"conv: {len(runs)} runs ({len(runs) - len(todo)} already done), {cfg.updates:,} updates each; "
        f"results in {out}/")
    t0, env = time.perf_counter(), env_info(device)
    for i, (v, n, s) in enumerate(todo):
        start = time.perf_counter()
        curve = train_run(cfg, v, n, s, data, device)
        atomic_write(out / "runs" / f"{run_id(v, n, s)}.csv", _curve_csv(curve))
        took = time.perf_counter() - start
        spent = time.perf_counter() - t0
        left = spent / (i + 1) * (len(todo) - i - 1)
        log(f"  {run_id(v, n, s):<24} test {100 * curve[-1]['test_error']:5.2f}%  train "
            f"{100 * curve[-1]['train_error']:5.2f}%  {took:5.1f} s   ({i + 1}/{len(todo)}, left {left / 60:.1f} min)")
    table = summarise(cfg, out)
    if todo:  # a sitting that trained adds itself to the record; one that found everything done changes nothing
        env["wall_seconds"] = round(time.perf_counter() - t0, 1)
        env["runs_trained"] = len(todo)
        try:
            record = json.loads((out / "env.json").read_text())
            record.setdefault("resumed", []).append(env)
        except (OSError, ValueError):  # the first sitting (or an unreadable record: this one replaces it)
            record = env
        atomic_write(out / "env.json", json.dumps(record, indent=2) + "\n")
    summary = {"claim": "element-wise dropout on conv layers does not help",
               "updates": cfg.updates, "table": table}
    atomic_write(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    draw(cfg, out, table)
    return summary
