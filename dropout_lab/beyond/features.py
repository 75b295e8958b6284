"""Paper Figures 7 and 8: first-layer features and the sparsity of hidden activations, with and without dropout.

The paper trains autoencoders with one hidden layer of 256 ReLUs and shows that dropout gives features
that look like strokes (Figure 7) and sparser activations (Figure 8: mean activation about 2.0 without
dropout, 0.7 with). We look at the first hidden layer of the classifier instead. The dropout net and its
control train as one stack of K=2 from one seed, so they start from the same weights and see the same
images in the same order: tile i of both panels of tiles.png grew from the same random vector.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from ..config import Config, ConfigError, load  # noqa: E402
from ..store.results import atomic_write, env_info, save_figure  # noqa: E402
from ..sweeps.runner import check_sizes  # noqa: E402
from ..sweeps.stacks import check_memory  # noqa: E402
from ..training import data as data_mod  # noqa: E402
from ..training.train import StackTrainer, pack, resolve_device  # noqa: E402

LOW = 0.1  # a unit whose mean activation over the test images is below this counts as near-silent
BINS = 50  # bins of the histogram of all activations
TILES = 100  # first-layer weight vectors drawn per model (a 10x10 grid)
KEYS = ("no_dropout", "dropout")  # stack order: the control first, as in the paper's panels (a) and (b)


def label(cfg: Config) -> str:
    d = cfg.model.dropout
    if not cfg.has_dropout:
        return "no dropout"
    kept = [f"{1 - p:g} {where}" for p, where in ((d.p_input, "input"), (d.p_hidden, "hidden")) if p > 0]
    return f"dropout (retain {', '.join(kept)})"


def train_pair(cfg: Config) -> StackTrainer:
    """The control and the dropout net of `cfg`, trained for all epochs in one stack (index 0 = control)."""
    if cfg.sweep is not None:
        raise ConfigError("sweep: this experiment takes a plain run config, without a sweep section")
    if not cfg.has_dropout:
        raise ConfigError("model.dropout: the config has no dropout, so there is nothing to compare with")
    pair = [cfg.control(), cfg.run_config()]
    if len(pack(pair)) != 1:  # e.g. width_rule: scaled widens only the dropout net
        raise ConfigError("the dropout net and its control differ in structure and cannot share one stack "
                          "(use model.width_rule=fixed)")
    device = resolve_device(cfg.device)
    check_memory(pair, device)
    data = data_mod.load(cfg.data.dataset)
    check_sizes(cfg, data)
    tr = StackTrainer(pair, data, device)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
               TimeElapsedColumn(), TextColumn("{task.fields[note]}"))
    with Progress(*columns) as progress:
        task = progress.add_task(f"{cfg.name}: dropout + control, K=2", total=tr.epochs, note="")
        while tr.epoch < tr.epochs:
            err = tr.train_epoch()["train_error"].tolist()  # the one host read of the epoch
            progress.update(task, advance=1, note=f"train err (noisy): control {err[0]:.2%} | dropout {err[1]:.2%}")
    return tr


@torch.no_grad()
def hidden_stats(trainer: StackTrainer, x: torch.Tensor, low: float = LOW, bins: int = BINS) -> dict:
    """First-hidden-layer activations of every model on x (N, n_in), dropout off; numpy arrays, model first.

    unit_mean (K, H): mean activation of each unit over the N images (Figure 8, left panels).
    hist_counts (K, bins) over the shared hist_edges (bins+1,): all N*H activations (right panels).
    mean_activation, frac_zero (activations exactly 0), frac_low_units (units with unit_mean < low) and
    frac_dead_units (units that are 0 on every image), each (K,).
    """
    model = trainer.model
    model.eval()  # the test-time net: no noise
    w, b = model.weights[0].mT, model.biases[0]  # (K, n_in, H), (K, 1, H)
    # identity under inverted scaling; x * (1 - p_input), one copy per model, under the paper's weight scaling
    x = model.drop_in(x.to(w.device, w.dtype))
    h = model.act(torch.matmul(x, w) + b)  # one batched matmul for all K models: (K, N, H)
    lo, hi = min(float(h.min()), 0.0), float(h.max())
    hi = hi if hi > lo else lo + 1.0
    counts = torch.stack([torch.histc(hk, bins, lo, hi) for hk in h])  # a histogram, not a second forward
    unit_mean = h.mean(dim=1)
    out = {
        "labels": [label(c) for c in trainer.cfgs],
        "n_images": h.shape[1],
        "low": low,
        "unit_mean": unit_mean,
        "hist_counts": counts.round().long(),
        "hist_edges": torch.linspace(lo, hi, bins + 1, dtype=torch.float64),
        "mean_activation": h.mean(dim=(1, 2)),
        "frac_zero": (h == 0).float().mean(dim=(1, 2)),
        "frac_low_units": (unit_mean < low).float().mean(dim=1),
        "frac_dead_units": (h == 0).all(dim=1).float().mean(dim=1),
    }
    return {k: v.cpu().numpy() if torch.is_tensor(v) else v for k, v in out.items()}


# ----------------------------------------------------------------------------------------------
# plots


def tile_shape(n_in: int) -> tuple[int, int]:
    """(rows, cols) of one weight tile: 28x28 for MNIST; near-square, padded at the end, for any other n_in."""
    rows = math.isqrt(n_in - 1) + 1  # ceil(sqrt(n_in))
    return rows, -(-n_in // rows)


def tile_mosaic(w: np.ndarray, n: int = TILES, gap: int = 1) -> np.ndarray:
    """The first n columns of w (n_in, H), each scaled to [0, 1] by its own range, as a grid of tiles.

    Gaps and padding are NaN (drawn blank). A constant column is drawn mid-gray.
    """
    n_in, n = w.shape[0], min(n, w.shape[1])
    th, tw = tile_shape(n_in)
    cols = math.isqrt(n - 1) + 1
    rows = -(-n // cols)
    mosaic = np.full((rows * (th + gap) - gap, cols * (tw + gap) - gap), np.nan)
    for i in range(n):
        v = w[:, i].astype(np.float64)
        span = v.max() - v.min()
        tile = np.full(th * tw, np.nan)
        tile[:n_in] = (v - v.min()) / span if span > 0 else 0.5
        r, c = divmod(i, cols)
        mosaic[r * (th + gap):r * (th + gap) + th, c * (tw + gap):c * (tw + gap) + tw] = tile.reshape(th, tw)
    return mosaic


def _save_png(fig, path: Path) -> Path:
    try:
        return save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)


def _err(stats: dict, k: int) -> str:
    e = stats.get("test_error")
    return "" if e is None else f", test error {e[k]:.2%}"


def plot_features(stats: dict, weights, out: Path) -> list[Path]:
    """sparsity.png (Figure 8) and tiles.png (Figure 7); weights: the first layer, (K, n_in, H)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    w = weights.detach().cpu().numpy() if torch.is_tensor(weights) else np.asarray(weights)
    K, (n_in, H), N = len(stats["labels"]), w.shape[1:], stats["n_images"]
    means, edges = stats["unit_mean"], stats["hist_edges"]
    mean_bins = np.linspace(0.0, max(float(means.max()), stats["low"]) * 1.02, 41)

    fig, axes = plt.subplots(K, 2, figsize=(11, 3.4 * K), sharex="col", squeeze=False)
    for k in range(K):
        a, b = axes[k]
        a.hist(means[k], bins=mean_bins, color="#1f77b4" if k else "#555555")
        a.axvline(stats["low"], color="k", ls="--", lw=1)
        a.set_title(f"{stats['labels'][k]}: mean activation of each unit", fontsize=10)
        a.set_ylabel("hidden units")
        a.text(0.97, 0.93, f"{stats['frac_low_units'][k]:.0%} of units below {stats['low']:g} (dashed)\n"
               f"{stats['frac_dead_units'][k]:.0%} zero on every image", transform=a.transAxes,
               ha="right", va="top", fontsize=9)
        b.hist(edges[:-1], bins=edges, weights=stats["hist_counts"][k], log=True,
               color="#1f77b4" if k else "#555555")
        b.set_title(f"{stats['labels'][k]}: all activations", fontsize=10)
        b.set_ylabel("count (log scale)")
        b.text(0.97, 0.93, f"mean activation {stats['mean_activation'][k]:.3f}\n"
               f"{stats['frac_zero'][k]:.1%} exactly zero", transform=b.transAxes, ha="right", va="top", fontsize=9)
    axes[-1, 0].set_xlabel(f"mean activation over {N:,} test images")
    axes[-1, 1].set_xlabel("activation")
    fig.suptitle(f"Sparsity of the first hidden layer ({H} units, dropout off at test) - cf. paper Figure 8")
    fig.tight_layout()
    paths = [_save_png(fig, out / "sparsity.png")]

    fig, axes = plt.subplots(1, K, figsize=(5.6 * K, 6.2), squeeze=False)
    cmap = plt.get_cmap("gray").with_extremes(bad="white")
    th, tw = tile_shape(n_in)
    for k, ax in enumerate(axes[0]):
        ax.imshow(tile_mosaic(w[k]), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{stats['labels'][k]}{_err(stats, k)}", fontsize=10)
        ax.set_axis_off()
    fig.suptitle(f"Incoming weights of hidden units 0-{min(TILES, H) - 1} as {th}x{tw} tiles, each scaled to its "
                 "own range (black = most negative) - cf. paper Figure 7", fontsize=10)
    fig.tight_layout()
    paths.append(_save_png(fig, out / "tiles.png"))
    return paths


# ----------------------------------------------------------------------------------------------
# the experiment


def experiment(config_path, out: Path, overrides: Sequence[str] = (), command: str = "") -> dict:
    """Train the pair, write features.json, sparsity.png and tiles.png into `out`; return the JSON dict."""
    cfg = load(config_path, list(overrides))
    t0 = time.perf_counter()
    tr = train_pair(cfg)
    seconds = time.perf_counter() - t0
    test_loss, test_err = (t.tolist() for t in tr.evaluate(tr.x_test, tr.y_test))
    _, train_err = tr.evaluate(tr.x_pool[tr.train_idx], tr.y_pool[tr.train_idx])  # clean, dropout off
    stats = hidden_stats(tr, tr.x_test)
    stats["test_error"] = test_err
    env = {**env_info(tr.device), "command": command}

    def r(v):
        return round(float(v), 6)

    models = {}
    for k, (key, c) in enumerate(zip(KEYS, tr.cfgs)):
        models[key] = {
            "label": stats["labels"][k], "run_id": c.run_id(),
            "test_error": r(test_err[k]), "test_loss": r(test_loss[k]), "train_error": r(train_err[k]),
            "mean_activation": r(stats["mean_activation"][k]), "frac_zero": r(stats["frac_zero"][k]),
            "frac_low_units": r(stats["frac_low_units"][k]), "frac_dead_units": r(stats["frac_dead_units"][k]),
            "unit_mean": [r(v) for v in stats["unit_mean"][k]],
            "hist_counts": stats["hist_counts"][k].tolist(),
            "provenance": env,
        }
    result = {
        "figure": "paper Figures 7 and 8: first-layer features and hidden-unit sparsity (classifier, not autoencoder)",
        "definitions": {
            "activations": f"first hidden layer on the {stats['n_images']} test images, dropout off",
            "mean_activation": "mean over all images and units", "frac_zero": "fraction of activations exactly 0",
            "frac_low_units": f"fraction of units whose mean activation over the images is < {LOW:g}",
            "frac_dead_units": "fraction of units that are 0 on every image",
        },
        "hist_edges": [r(v) for v in stats["hist_edges"]],
        "train_seconds": round(seconds, 1),
        "config": cfg.model_dump(mode="json"),
        "models": models,
    }
    out = Path(out)
    atomic_write(out / "features.json", json.dumps(result, indent=2) + "\n")
    plot_features(stats, tr.model.weights[0].mT, out)
    return result
