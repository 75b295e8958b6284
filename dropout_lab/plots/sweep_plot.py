"""Plots of a sweep folder: final error against a swept key, a line per combination of the others
(the lines: sweep_index.py; heatmaps: heatmap.py)."""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from ..store.results import save_figure  # noqa: E402
from ..store.sweep_index import (  # noqa: E402
    DROP_KEYS,
    METRIC_TITLES,
    METRICS,
    Series,
    XAxis,
    build_series,
    key_label,
    read_index,
    resolve_x,
    scale_note,
    swept_keys,
    zipped_with,
)

DROPOUT_COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"]
CONTROL_COLOR = "#555555"


def _draw_series(ax, series: list[Series]) -> list:
    """Draws the lines; returns their legend handles in series order (dropout lines first, then controls)."""
    n = sum(not s.control for s in series)
    colors = iter(DROPOUT_COLORS if n <= len(DROPOUT_COLORS) else plt.cm.viridis(np.linspace(0, 0.9, n)))
    control_styles = iter(["--", "-.", ":"] * 10)
    paired, handles = {}, []
    for s in series:
        if s.control:
            color = paired.get(s.group, CONTROL_COLOR)
            ls = "--" if s.group in paired else next(control_styles)
        else:
            color, ls = next(colors), "-"
            paired.setdefault(s.group, color)
        if s.reference:  # the control has no p (or c) to sit at: a level to compare every point with
            handles.append(ax.axhline(s.mean[0], color=color, ls=ls, lw=1.6, label=s.label, zorder=1))
            ax.axhspan(s.mean[0] - s.std[0], s.mean[0] + s.std[0], color=color, alpha=0.12, lw=0, zorder=0)
            continue
        handles.append(ax.errorbar(s.x, s.mean, yerr=s.std, color=color, ls=ls, marker="s" if s.control else "o",
                                   ms=5, lw=1.6, capsize=3, label=s.label, alpha=0.75 if s.control else 1))
        if len(s.x) > 1:
            ax.fill_between(s.x, s.mean - s.std, s.mean + s.std, color=color, alpha=0.1, lw=0)
    return handles


# log-axis ticks: fine over less than two decades, 1-2-5 over more, so the labels never overlap
Y_TICKS = ([0, 0.1, 0.2, 0.5, 1, 1.5, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50, 70, 100],
           [0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100])


def _style_y(ax, series: list[Series]) -> None:
    """Linear, unless the means span a factor of 5 or more (retention 0.1 next to 0.5, a seed that diverged):
    then log, so the points that differ by tenths stay apart; log above 0.1% where an error reaches 0."""
    means = np.concatenate([s.mean for s in series])
    top = float(np.max(np.concatenate([s.mean + s.std for s in series])))
    pos = means[means > 0]
    if not len(pos) or pos.max() < 5 * pos.min():
        lo, hi = ax.get_ylim()
        if lo < 0:  # an error is never negative: a band reaching below 0 does not move the axis there
            ax.set_ylim(0, max(hi, 0.1))
        ax.set_ylabel("error (%)")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{round(v, 6) + 0:g}%"))  # + 0: no "-0%"
        return
    if (means <= 0).any():
        ax.set_yscale("symlog", linthresh=0.1, linscale=0.3)
        ax.set_ylim(0, min(100, 1.3 * top))
        ax.set_ylabel("error (%, log scale above 0.1%)")
    else:  # bands reaching below 0 are clipped at the frame, not drawn to 0
        ax.set_yscale("log")
        ax.set_ylim(0.8 * pos.min(), min(100, 1.3 * top))
        ax.set_ylabel("error (%, log scale)")
    lo, hi = ax.get_ylim()
    ax.yaxis.set_major_locator(FixedLocator(Y_TICKS[int(hi > 100 * max(lo, 0.1))]))  # after set_yscale, which resets it
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
    ax.yaxis.set_minor_locator(NullLocator())


def _style_x(ax, axis: XAxis) -> None:
    ax.set_xlabel(axis.label)
    if axis.labels is not None:
        tilt = max(map(len, axis.labels)) > 8
        ax.set_xticks(range(len(axis.labels)), axis.labels, rotation=25 * tilt, ha="right" if tilt else "center")
        ax.set_xlim(-0.5, len(axis.labels) - 0.5)
        return
    if axis.log:
        ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(axis.ticks))  # ticks where the runs are, not at round numbers
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    if axis.key in DROP_KEYS:  # the number the config was written with, for whoever edits it
        top = ax.secondary_xaxis("top", functions=(lambda r: 1 - r, lambda q: 1 - q))
        top.set_xlabel(f"drop probability ({axis.key} in the config)", fontsize=9)


def titles_band(fig, title: str, sub: list[str]) -> None:
    """The title and smaller lines under it, in a band kept free of the (constrained) layout."""
    h = fig.get_figheight()
    width = int(12 * fig.get_figwidth())  # characters of 9-point text that fit across the figure
    lines = [w for line in sub for w in textwrap.wrap(line, width) or [""]]
    fig.get_layout_engine().set(rect=(0, 0, 1, 1 - (0.5 + 0.19 * len(lines)) / h))
    fig.text(0.5, 1 - 0.12 / h, title, ha="center", va="top", fontsize=12)
    fig.text(0.5, 1 - 0.42 / h, "\n".join(lines), ha="center", va="top", fontsize=9, color="#444444")


def subtitle(folder: Path, sweep: dict, rows: list[dict], keys: list[str], extra: str = "") -> list[str]:
    config = f" (sweep of {sweep['config']})" if sweep.get("config") else ""
    left = Counter(str(r.get("status")) for r in rows if r.get("status") != "completed")
    status = f"{sum(left.values())} of {len(rows)} runs not completed, not plotted: " + \
        ", ".join(f"{n} {s}" for s, n in left.items()) if left else ""
    note = ", ".join(s for s in (scale_note(folder, keys, runs=False), extra) if s)  # the index says which
    lines = (f"{sweep.get('description') or ''}{config}".strip(), note, status)
    return [s for s in lines if s]


def save_plots(fig, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    try:
        return [save_figure(fig, p) for p in paths]
    finally:
        plt.close(fig)


def plot_sweep(folder: Path, out_dir: Path, x: str | None = None, y: str | None = None) -> list[Path]:
    """Final error against one swept key, a line per combination of the other keys, seeds as mean ± std.

    y None: final test and train error side by side (sweep_<x>.*); a named y: that metric alone (sweep_<x>_<y>.*).
    """
    folder = Path(folder)
    sweep, rows = read_index(folder)
    keys = swept_keys(sweep, rows)
    x = resolve_x(keys, rows, x, y, sweep)
    metrics = [y] if y else ["test_error", "train_error"]
    linked, baseline = zipped_with(sweep, x), sweep.get("baseline", True)
    panels = [(m, *build_series(rows, keys, x, METRICS[m], linked, baseline)) for m in metrics] if x else []
    panels = [p for p in panels if p[1]]
    if not panels:
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 5.8), layout="constrained", squeeze=False)
    handles = None
    for ax, (metric, series, axis) in zip(axes[0], panels):
        drawn = _draw_series(ax, series)
        handles = handles or drawn
        _style_x(ax, axis)
        _style_y(ax, series)
        ax.set_title(METRIC_TITLES[metric], fontsize=11)
        ax.grid(True, alpha=0.3)
    fig.legend(handles=handles, loc="outside lower center", ncol=1 if len(handles) <= 4 else 2, fontsize=9,
               frameon=False)
    titles_band(fig, f"{sweep.get('name') or folder.name}: final error against {key_label(x)}",
            subtitle(folder, sweep, rows, keys))
    return save_plots(fig, Path(out_dir), f"sweep_{x.rsplit('.', 1)[-1]}" + (f"_{y}" if y else ""))
