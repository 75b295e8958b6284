"""Plots of results folders: learning curves, dropout against its control, seeds as mean and band."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from .results import read_metrics, read_summary, run_dirs  # noqa: E402

DROPOUT_COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"]
CONTROL_COLOR = "#555555"


def _label(cfg: dict) -> str:
    d, m = cfg["model"]["dropout"], cfg["model"]
    width = "x".join(str(n) for n in m["hidden"])
    if d["kind"] == "none":
        head = "no dropout"
    else:  # plots speak the paper's convention: retention probability
        head = f"{d['kind']} dropout, retain {1 - d['p_input']:g} in / {1 - d['p_hidden']:g} hidden"
    c = cfg["optim"]["max_norm"]
    return f"{head}, {m['activation']} {width}" + (f", max-norm {c:g}" if c else "")


def _groups(folder: Path) -> dict[str, list[tuple[dict, list[dict]]]]:
    """Runs grouped by their config minus the seed: each group is one line, its seeds a band."""
    groups: dict[str, list] = defaultdict(list)
    for d in run_dirs(folder):
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        rows = [r for r in read_metrics(d) if r["test_error"] is not None and np.isfinite(r["test_error"])]
        if not rows:
            continue
        key = yaml.safe_dump({k: v for k, v in cfg.items() if k != "seed"}, sort_keys=True)
        groups[key].append((cfg, rows))
    return groups


def _mean_band(runs: list[list[dict]], key: str):
    n = min(len(r) for r in runs)
    x = np.array([r["epoch"] for r in runs[0][:n]])
    ys = np.array([[row[key] * 100 for row in r[:n]] for r in runs])
    return x, ys.mean(0), ys.std(0)


def _scale_note(folder: Path) -> str:
    """What a reader must know to weigh the curves: data size, length, device, unfinished runs."""
    dirs = run_dirs(folder)
    cfg = yaml.safe_load((dirs[0] / "config.yaml").read_text())
    n = cfg["data"]["train_size"]
    parts = [f"{cfg['data']['dataset']} {'all' if n is None else f'{n:,}'} training examples",
             f"{cfg['optim']['epochs']} epochs"]
    try:
        parts.append(json.loads((dirs[0] / "env.json").read_text())["device"].split(":")[0] + " run")
    except (OSError, KeyError, ValueError):
        pass
    if not all((s := read_summary(d)) and s.get("status") == "completed" for d in dirs):
        parts.append("some runs unfinished")
    return ", ".join(parts)


def plot_curves(folder: Path, out_dir: Path) -> list[Path]:
    groups = _groups(folder)
    if not groups:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4), sharex=True)
    colors = iter(DROPOUT_COLORS * 10)
    lows, finals = [], []
    for _key, members in sorted(groups.items(), key=lambda kv: kv[1][0][0]["model"]["dropout"]["kind"] == "none"):
        cfg = members[0][0]
        dropout = cfg["model"]["dropout"]["kind"] != "none"
        color = next(colors) if dropout else CONTROL_COLOR
        style = "-" if dropout else "--"
        seeds = len(members)
        label = _label(cfg) + (f" (mean ± std, {seeds} seeds)" if seeds > 1 else f" (seed {cfg['seed']})")
        for ax, metric in zip(axes, ("test_error", "train_error")):
            x, mean, std = _mean_band([rows for _, rows in members], metric)
            ax.plot(x, mean, style, color=color, lw=1.8, label=label)
            if seeds > 1:
                ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, lw=0)
            if metric == "test_error":
                lows.append(float(mean.min()))
                finals.append(float(mean[-1]))
                ax.annotate(f"{mean[-1]:.2f}%", (x[-1], mean[-1]), textcoords="offset points", xytext=(4, 0),
                            color=color, fontsize=9, va="center")
    name = folder.name
    # test error: log scale, framed on where the runs end up rather than on the first epoch
    axes[0].set_yscale("log")
    axes[0].set_ylim(0.85 * min(lows), min(100, 4 * max(finals)))
    axes[0].set_ylabel("error (%, log scale)")
    # train error often reaches 0: log above 0.1%, linear below, so 0 stays on the plot
    axes[1].set_yscale("symlog", linthresh=0.1, linscale=0.3)
    axes[1].set_ylim(0, 100)
    axes[1].set_ylabel("error (%, log scale above 0.1%)")
    ticks = ([0.5, 1, 1.5, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50, 100], [0, 0.1, 0.5, 1, 2, 5, 10, 20, 50, 100])
    for ax, title, where in zip(axes, ("test error (clean pass, dropout off)", "train error (as trained, dropout on)"),
                                ticks):
        ax.yaxis.set_major_locator(FixedLocator(where))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=11)
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=1, fontsize=9, frameon=False)
    fig.suptitle(f"{name}: learning curves, {_scale_note(folder)}", fontsize=12)
    fig.tight_layout(rect=(0, 0.03 + 0.035 * len(handles), 1, 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "curves.png", out_dir / "curves.svg"]
    for p in paths:
        fig.savefig(p, dpi=120)
    plt.close(fig)
    return paths


def plot_folder(folder: Path) -> list[Path]:
    return plot_curves(Path(folder), Path(folder) / "plots")
