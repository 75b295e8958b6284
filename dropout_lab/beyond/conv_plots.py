"""The conv experiment's figures (conv.py): test-error curves per training-set size, and the final errors as
bars with each seed shown, so that the spread the verdict weighs is in sight."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import ConvConfig
from ..store.results import save_figure

NAMES = {"none": "no dropout", "fc": "dropout on the fc layer", "conv_element": "+ conv layers, unit by unit",
         "conv_channel": "+ conv layers, whole feature maps"}
COLOURS = {"none": "tab:gray", "fc": "tab:blue", "conv_element": "tab:orange", "conv_channel": "tab:green"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw(cfg: ConvConfig, out: Path, table: dict) -> list[Path]:
    from .conv import plan, read_curve, run_id

    plt = _plt()
    sizes = [n for n in cfg.train_sizes if str(n) in table]
    paths = []
    if not sizes:
        return paths
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.2 * len(sizes), 4), squeeze=False)
    for ax, n in zip(axes[0], sizes):
        for v in cfg.variants:
            curves = [read_curve(out / "runs" / f"{run_id(v, m, s)}.csv") for v_, m, s in plan(cfg)
                      if v_ == v and m == n and (out / "runs" / f"{run_id(v, m, s)}.csv").is_file()]
            if not curves:
                continue
            steps = [r["updates"] for r in curves[0]]
            errs = np.array([[100 * r["test_error"] for r in c[:len(steps)]] for c in curves if len(c) >= len(steps)])
            m = errs.mean(axis=0)
            ax.plot(steps, m, marker="o", ms=3, color=COLOURS[v], label=f"{NAMES[v]} (n={len(errs)})")
            if len(errs) > 1:
                s = errs.std(axis=0, ddof=1)
                ax.fill_between(steps, m - s, m + s, color=COLOURS[v], alpha=0.15, lw=0)
        ax.set_title(f"{n:,} training images", fontsize=10)
        ax.set_xlabel("weight updates")
        ax.set_ylabel("MNIST test error (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Dropout on a small conv net: test error, mean ± std over seeds", fontsize=11)
    fig.tight_layout()
    paths.append(save_figure(fig, out / "curves.png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(2.2 + 2.4 * len(sizes), 4))
    width = 0.8 / len(cfg.variants)
    for j, v in enumerate(cfg.variants):
        for i, n in enumerate(sizes):
            cell = table[str(n)].get(v)
            if not cell:
                continue
            x = i + (j - (len(cfg.variants) - 1) / 2) * width
            ax.bar(x, cell["mean"], width * 0.9, color=COLOURS[v], alpha=0.8, label=NAMES[v] if i == 0 else None,
                   yerr=cell["std"] if cell["n"] > 1 else None, capsize=3)
            ax.scatter([x] * len(cell["test"]), cell["test"], s=10, color="black", zorder=3)
    ax.set_xticks(range(len(sizes)), [f"{n:,} images" for n in sizes])
    ax.set_ylabel("final MNIST test error (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Final test error: bars mean ± std, dots the seeds", fontsize=10)
    fig.tight_layout()
    paths.append(save_figure(fig, out / "bars.png"))
    plt.close(fig)
    return paths
