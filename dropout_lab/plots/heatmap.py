"""Heatmaps of a sweep folder: the final error over the grid of two numeric swept keys, a panel per
combination of the others; the cells are means over seeds with their sample std."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..store.sweep_index import (
    METRIC_TITLES,
    METRICS,
    categories,
    distinct,
    group_rows,
    hashable,
    is_num,
    key_label,
    read_index,
    resolve_x,
    seed_std,
    swept_keys,
    usable,
    value_label,
    zipped_with,
)
from .sweep_plot import plt, save_plots, subtitle, titles_band


@dataclass
class Heatmap:
    """Error in % over seeds on the grid of two keys: columns follow keys[0], rows keys[1]; a panel per
    combination of the other swept keys, as (title, mean, std, seeds), NaN where no run finished."""
    keys: tuple[str, str]
    labels: tuple[list[str], list[str]]
    panels: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]
    titles: tuple[str, str]  # the figure's title and subtitle


def heatmap_data(folder: Path, keys: list[str] | None = None, y: str = "test_error") -> Heatmap | None:
    """Dropout rows only where there are any (the controls are no point of the grid); None without two keys."""
    folder = Path(folder)
    sweep, rows = read_index(folder)
    swept = swept_keys(sweep, rows)
    for k in keys or [None]:
        resolve_x(swept, rows, k, y)
    if keys is not None and len(keys) != 2:
        raise ValueError(f"heatmap keys: give two swept keys, got {len(keys)} ({', '.join(keys)})")
    use, _ = usable(rows, METRICS[y])
    grid = [k for k in swept if len(distinct(use, k)) > 1 and all(is_num(v) or v is None for v in distinct(use, k))]
    # two keys of one zip entry advance together: they fill a diagonal, not a grid
    pairs = [(a, b) for i, a in enumerate(grid) for b in grid[i + 1:] if b not in zipped_with(sweep, a)]
    if keys is None and not pairs:
        return None
    k1, k2 = keys or pairs[0]
    rest = [k for k in swept if k not in (k1, k2) and len(distinct(use, k)) > 1]
    (v1, l1), (v2, l2) = categories(k1, distinct(use, k1)), categories(k2, distinct(use, k2))
    panels = []
    for values, members in group_rows(use, rest):
        cells = defaultdict(list)
        for r in members:
            cells[v2.index(hashable(r.get(k2))), v1.index(hashable(r.get(k1)))].append(100 * r[METRICS[y]])
        mean, std, n = (np.full((len(v2), len(v1)), np.nan) for _ in range(3))
        for ij, vals in cells.items():
            mean[ij], std[ij], n[ij] = np.mean(vals), seed_std(vals), len(vals)
        panels.append((", ".join(value_label(k, v) for k, v in zip(rest, values)), mean, std, n))
    only = "dropout runs only" if any(r.get("dropout") for r in rows) else ""
    titles = (f"{sweep.get('name') or folder.name}: {y.replace('_', ' ')} over {k1} and {k2}",
              subtitle(folder, sweep, rows, swept, only))
    return Heatmap((k1, k2), (l1, l2), panels, titles)


def plot_heatmap(folder: Path, out_dir: Path, keys: list[str] | None = None, y: str = "test_error") -> list[Path]:
    data = heatmap_data(folder, keys, y)
    if data is None or not data.panels:
        return []
    (k1, k2), (l1, l2) = data.keys, data.labels
    ncol = min(3, len(data.panels))
    nrow = math.ceil(len(data.panels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(ncol * (0.95 * len(l1) + 2.6) + 1.2, nrow * (0.6 * len(l2) + 2.2)
                                                  + 1.2), layout="constrained", squeeze=False)
    means = np.concatenate([m.ravel() for _, m, _, _ in data.panels])
    for ax, (title, mean, std, n) in zip(axes.flat, data.panels):
        im = ax.imshow(mean, origin="lower", cmap="viridis_r", vmin=np.nanmin(means), vmax=np.nanmax(means),
                       aspect="auto")
        for (i, j), m in np.ndenumerate(mean):
            dark = np.isfinite(m) and im.norm(m) > 0.55  # viridis_r is dark at high error
            text = "no run" if not np.isfinite(m) else f"{m:.2f}%" + (f"\n±{std[i, j]:.2f}" if n[i, j] > 1 else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
        ax.set_xticks(range(len(l1)), l1)
        ax.set_yticks(range(len(l2)), l2)
        ax.set_xlabel(key_label(k1))
        ax.set_ylabel(key_label(k2))
        ax.set_title(title, fontsize=10)
    for ax in axes.flat[len(data.panels):]:
        ax.set_visible(False)
    fig.colorbar(im, ax=axes, label=f"{METRIC_TITLES[y]}, % (mean over seeds)", shrink=0.9)
    titles_band(fig, *data.titles)
    return save_plots(fig, Path(out_dir), f"heatmap_{k1.rsplit('.', 1)[-1]}_{k2.rsplit('.', 1)[-1]}")
