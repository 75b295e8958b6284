"""Plots of results folders: learning curves, dropout against its control, seeds as mean and band.

A sweep folder (with index.csv and sweep.yaml) also gets the plots of sweep_plot.py: final errors against a
swept key and, where two numeric keys span a grid, heatmaps.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from ..config import RESERVED_NAMES, yaml_load  # noqa: E402
from ..store.readback import read_metrics, run_dirs  # noqa: E402
from ..store.results import atomic_write  # noqa: E402
from ..store.sweep_index import (  # noqa: E402
    METRICS,
    categories,
    get_key,
    hashable,
    is_sweep,
    read_index,
    resolve_x,
    scale_note,
    swept_keys,
    value_label,
)
from .heatmap import plot_heatmap  # noqa: E402
from .sweep_plot import CONTROL_COLOR, DROPOUT_COLORS, plot_sweep, save_plots  # noqa: E402

MANY_LINES = 8  # above this many curves a legend entry per curve stops being readable
__all__ = ["METRICS", "plot_curves", "plot_folder", "plot_heatmap", "plot_sweep", "stale"]


def choose_folders(results: list[Path], x: str | None, y: str | None) -> tuple[list[Path], list[Path]]:
    """The folders `plot` draws, and those it leaves as up to date. ValueError: one line for the user.

    Named folders are drawn; with none, every folder under results/ whose inputs changed since it was
    last drawn (with --x, only sweeps; with --x or --y, all of them)."""
    for folder in results:
        if not folder.exists():
            raise ValueError(f"results folder '{folder}' not found")
        if not folder.is_dir():
            raise ValueError(f"results folder '{folder}' is a file, not a folder")
        if not run_dirs(folder):
            raise ValueError(f"results folder '{folder}' has no runs")
    if results:
        return results, []
    # the project's own folders (report/, bench/, beyond/) hold no runs of a config, whatever files they have
    found = sorted(p for p in Path("results").glob("*") if p.is_dir() and p.name not in RESERVED_NAMES and run_dirs(p))
    if not found:
        raise ValueError("no results folders to plot "
                         "(run `dropout-lab run CONFIG` or `dropout-lab sweep CONFIG` first)")
    if x is not None:
        found = [f for f in found if is_sweep(f)]
    folders = found if (x or y) else [f for f in found if stale(f)]
    return folders, sorted(set(found) - set(folders))


def _label(cfg: dict) -> str:
    d, m = cfg["model"]["dropout"], cfg["model"]
    width = "x".join(str(n) for n in m["hidden"])
    if d["kind"] == "none":
        head = "no dropout"
    else:  # plots speak the paper's convention: retention probability
        head = f"{d['kind']} dropout, retain {1 - d['p_input']:g} in / {1 - d['p_hidden']:g} hidden"
    c = cfg["optim"]["max_norm"]
    return f"{head}, {m['activation']} {width}" + (f", max-norm {c:g}" if c else "")


# ----- learning curves


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
    return x, ys.mean(0), ys.std(0, ddof=1) if len(ys) > 1 else np.zeros(n)  # sample std, as the report


def _keys_of(folder: Path) -> list[str]:
    try:
        return list((yaml_load((folder / "sweep.yaml").read_text()) or {}).get("keys") or [])
    except (OSError, yaml.YAMLError):
        return []


def _family(folder: Path, cfgs: list[dict]) -> tuple[list[tuple], list[Line2D]]:
    """Styles for many curves: colour on a sequential map over the first swept key, line style over the other
    varied keys, controls dashed; the legend names the colours and styles, not every curve."""
    keys = _keys_of(folder)
    drop = [c["model"]["dropout"]["kind"] != "none" for c in cfgs]
    if not keys:  # nothing to order by: a colour per curve, each named in full
        styles = [(c if d else CONTROL_COLOR, "-" if d else "--")
                  for c, d in zip(plt.cm.viridis(np.linspace(0, 0.9, len(cfgs))), drop)]
        return styles, [Line2D([], [], color=c, ls=ls, label=_label(cfg)) for (c, ls), cfg in zip(styles, cfgs)]
    dcfgs = [c for c, d in zip(cfgs, drop) if d]

    def at(c: dict, k: str):
        return hashable(get_key(c, k))
    first, rest = keys[0], [k for k in keys[1:] if len({at(c, k) for c in dcfgs}) > 1]
    order, _ = categories(first, list(dict.fromkeys(at(c, first) for c in dcfgs)))
    colors = dict(zip(order, plt.cm.viridis(np.linspace(0, 0.9, len(order)))))
    kinds = list(dict.fromkeys(tuple(at(c, k) for k in rest) for c in dcfgs))
    lines = ["-", "-.", ":", (0, (5, 1, 1, 1, 1, 1))]
    styles = [(colors[at(c, first)], lines[kinds.index(tuple(at(c, k) for k in rest)) % 4]) if d
              else (colors.get(at(c, first), CONTROL_COLOR), "--") for c, d in zip(cfgs, drop)]
    handles = [Line2D([], [], color=colors[v], lw=2, label=value_label(first, v)) for v in order]
    if len(kinds) > 1:
        handles += [Line2D([], [], color="k", ls=lines[i % 4], label=", ".join(map(value_label, rest, kind)))
                    for i, kind in enumerate(kinds)]
    if not all(drop):
        handles.append(Line2D([], [], color=CONTROL_COLOR, ls="--", label="no dropout (control)"))
    return styles, handles


def plot_curves(folder: Path, out_dir: Path) -> list[Path]:
    groups = _groups(folder)
    if not groups:
        return []
    ordered = sorted(groups.values(), key=lambda members: members[0][0]["model"]["dropout"]["kind"] == "none")
    many = len(ordered) > MANY_LINES
    styles, handles = _family(folder, [m[0][0] for m in ordered]) if many else (None, None)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4), sharex=True)
    colors = iter(DROPOUT_COLORS * 10)
    lows, finals = [], []
    for i, members in enumerate(ordered):
        cfg = members[0][0]
        dropout = cfg["model"]["dropout"]["kind"] != "none"
        color, style = styles[i] if many else (next(colors), "-") if dropout else (CONTROL_COLOR, "--")
        seeds = len(members)
        label = _label(cfg) + (f" (mean ± std, {seeds} seeds)" if seeds > 1 else f" (seed {cfg['seed']})")
        for ax, metric in zip(axes, ("test_error", "train_error")):
            x, mean, std = _mean_band([rows for _, rows in members], metric)
            ax.plot(x, mean, ls=style, color=color, lw=1.2 if many else 1.8, label=label)
            if seeds > 1:
                ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.08 if many else 0.2, lw=0)
            if metric == "test_error":
                lows.append(float(mean.min()))
                finals.append(float(mean[-1]))
                if not many:  # one number per curve stays readable only for a few curves
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
    if handles is None:
        handles = axes[0].get_legend_handles_labels()[0]
    ncol = 1 if not many else 2 if max(len(h.get_label()) for h in handles) > 45 else 3
    rows = math.ceil(len(handles) / ncol)
    fig.set_figheight(4.9 + 0.2 * rows)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8 if many else 9, frameon=False)
    fig.suptitle(f"{name}: learning curves, {scale_note(folder, _keys_of(folder))}", fontsize=12)
    fig.tight_layout(rect=(0, (0.15 + 0.2 * rows) / fig.get_figheight(), 1, 1))
    return save_plots(fig, out_dir, "curves")


INPUTS = "plots/inputs.json"  # what the plots of a folder were drawn from: a digest of the files, and the plots


def _inputs_digest(folder: Path) -> str:
    """sha256 over the names and bytes of every file a folder's plots read.

    Contents, not modification times: clocks, copies and checkouts reorder mtimes, bytes they keep.
    """
    h = hashlib.sha256()
    files = [folder / "index.csv", folder / "sweep.yaml", *folder.glob("*/summary.json"), *folder.glob("*/metrics.csv")]
    for path in sorted(p for p in files if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def stale(folder: Path) -> bool:
    """True when a folder's plots are missing or were drawn from other files than those there now, so a plain
    `plot` redoes only the folders that changed."""
    folder = Path(folder)
    try:
        record = json.loads((folder / INPUTS).read_text())
        plots, digest = list(record["plots"]), record["inputs_sha256"]
    except (OSError, ValueError, KeyError, TypeError):  # never plotted, or a record from elsewhere: redraw
        return True
    return digest != _inputs_digest(folder) or not all((folder / "plots" / name).is_file() for name in plots)


def plot_folder(folder: Path, x: str | None = None, y: str | None = None,
                note: Callable[[str], None] = lambda s: None) -> list[Path]:
    """Learning curves; for a sweep folder also final error against x and heatmaps (of y, default test error).

    x and y are checked before anything is drawn: a bad one is a one-line ValueError, also x for a folder
    that is not a sweep (see is_sweep). `note` hears of each plot the folder cannot have yet, and why.
    """
    folder = Path(folder)
    out = folder / "plots"
    sweep = is_sweep(folder)
    if sweep:
        meta, rows = read_index(folder)
        resolve_x(swept_keys(meta, rows), rows, x, y)
    elif y is not None:
        resolve_x([], [], None, y)
    if x is not None and not sweep:
        raise ValueError(f"x='{x}': '{folder}' is not a sweep folder (it has no index.csv and sweep.yaml)")
    digest = _inputs_digest(folder)  # before drawing: a run that changes meanwhile leaves the plots stale
    paths = plot_curves(folder, out)
    if not paths:
        note(f"{folder}: no learning curves yet: no run has finished an epoch with a test pass")
    if sweep:
        drawn = plot_sweep(folder, out, x, y)
        if not drawn and swept_keys(meta, rows):
            done = sum(r.get("status") == "completed" for r in rows)
            note(f"{folder}: no plot of final errors against a swept key " + (
                "yet: no run has finished (the learning curves show the runs so far)" if not done else
                f"from its {done} finished run(s): none gives a finite final error at a swept key's value"))
        paths += drawn + plot_heatmap(folder, out, y=y or "test_error")
    atomic_write(folder / INPUTS, json.dumps({"inputs_sha256": digest, "plots": sorted(p.name for p in paths)},
                                             indent=2) + "\n")
    return paths
