"""Plots of results folders: learning curves, dropout against its control, seeds as mean and band."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

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


def plot_curves(folder: Path, out_dir: Path) -> list[Path]:
    groups = _groups(folder)
    if not groups:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharex=True)
    colors = iter(DROPOUT_COLORS * 10)
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
                ax.annotate(f"{mean[-1]:.2f}%", (x[-1], mean[-1]), textcoords="offset points", xytext=(4, 0),
                            color=color, fontsize=9, va="center")
    name = folder.name
    for ax, title in zip(axes, ("test error (clean pass, dropout off)", "train error (as trained, dropout on)")):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}%" if str(v)[0] in "235" else ""))
        ax.set_xlabel("epoch")
        ax.set_ylabel("error (%, log scale)")
        ax.set_title(title, fontsize=11)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper right")
    summaries = [read_summary(d) for d in run_dirs(folder)]
    scale = "" if all(s and s.get("status") == "completed" for s in summaries) else " (some runs unfinished)"
    fig.suptitle(f"{name}: learning curves{scale}", fontsize=13)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "curves.png", out_dir / "curves.svg"]
    for p in paths:
        fig.savefig(p, dpi=120)
    plt.close(fig)
    return paths


def plot_folder(folder: Path) -> list[Path]:
    return plot_curves(Path(folder), Path(folder) / "plots")
