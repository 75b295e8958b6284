"""Plots of a sweep folder (index.csv and sweep.yaml): final error against a swept key (heatmaps: heatmap.py).

Final errors are means over seeds with their spread; drop probabilities are shown as the paper's
retention probability 1 - p, and controls, whose dropout settings are not the sweep's, as a reference line.
"""

from __future__ import annotations

import csv
import json
import math
import textwrap
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from .config import yaml_load  # noqa: E402
from .readback import Damaged, read_env, read_summary, run_dirs  # noqa: E402
from .results import save_figure  # noqa: E402

DROPOUT_COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"]
CONTROL_COLOR = "#555555"
METRICS = {"test_error": "final_test_error", "train_error": "final_train_error", "best_test_error": "best_test_error"}
METRIC_TITLES = {"test_error": "final test error (clean pass, dropout off)",
                 "train_error": "final train error (as trained, dropout on)",
                 "best_test_error": "best test error over the epochs"}
DROP_KEYS = {"model.dropout.p_hidden": "hidden", "model.dropout.p_input": "input"}
# a control's value of these is set by Config.control(), not by the sweep: they cannot place it on an axis
CONTROL_SET = ("model.dropout.", "optim.max_norm", "model.width_rule")
KEY_LABELS = {"optim.max_norm": "max-norm bound c on incoming weights",
              "optim.momentum_end": "final momentum", "optim.lr_decay": "learning-rate decay (factor per epoch)",
              "optim.lr": "initial learning rate", "optim.epochs": "epochs", "model.hidden": "hidden widths",
              "model.width_rule": "width rule", "model.dropout.kind": "dropout noise",
              "data.train_size": "training set size"}


# ----- values of swept keys: parsing, order and wording


def _get(cfg: dict, key: str):
    for part in key.split("."):
        cfg = cfg.get(part) if isinstance(cfg, dict) else None
    return cfg


def _h(v):
    return tuple(v) if isinstance(v, list) else v  # list values ([800, 800]) as dict keys


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _distinct(rows: list[dict], key: str) -> list:
    return list(dict.fromkeys(_h(r.get(key)) for r in rows))


def _rank(v):
    return (0, 0) if v is None else (1, v) if _num(v) else (2, str(v))


def _fmt(key: str | None, v) -> str:
    if v is None:
        return "all" if key == "data.train_size" else "off"
    if key in DROP_KEYS and _num(v):
        return f"{1 - v:g}"
    if isinstance(v, (list, tuple)):
        return "x".join(map(str, v))
    return f"{v:,g}" if _num(v) else str(v)


def _value_label(key: str, v) -> str:
    """A line's name in the paper's words where it has them (Figure 9's two width rules, retention p)."""
    if key == "model.width_rule":
        return {"fixed": "fixed n (Fig. 9a)", "scaled": "pn fixed: n scaled by 1/p (Fig. 9b)"}.get(v, str(v))
    if key in DROP_KEYS:
        return f"retain {DROP_KEYS[key]} {_fmt(key, v)}"
    if key == "optim.max_norm":
        return f"max-norm {_fmt(key, v)}"
    if key == "data.train_size":
        return f"{_fmt(key, v)} training examples"
    return f"{key.rsplit('.', 1)[-1]} {_fmt(key, v)}"


def _categories(key: str | None, values: list) -> tuple[list, list[str]]:
    """Axis order: None ('off') first, numbers ascending (by retention for drop keys), anything else as swept."""
    nums = sorted((v for v in values if _num(v)), reverse=key in DROP_KEYS)
    order = [None] * (None in values) + nums + [v for v in values if v is not None and not _num(v)]
    return order, [_fmt(key, v) for v in order]


def _key_label(key: str) -> str:
    if key in DROP_KEYS:
        return f"retention p of {DROP_KEYS[key]} units (1 - {key})"
    return f"{KEY_LABELS[key]} ({key})" if key in KEY_LABELS else key


# ----- the index of a sweep folder


def is_sweep(folder: Path) -> bool:
    return (Path(folder) / "index.csv").is_file() and (Path(folder) / "sweep.yaml").is_file()


def _cell(text: str | None):
    """Empty is None, numbers and lists are JSON, True/False are Python's spelling, the rest are strings."""
    if text in ("", None):
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_index(folder: Path) -> tuple[dict, list[dict]]:
    """sweep.yaml and the parsed rows of index.csv, one per run_id (a control shared by points counts once)."""
    folder = Path(folder)
    sweep = yaml_load((folder / "sweep.yaml").read_text()) or {}
    with open(folder / "index.csv", newline="") as f:
        rows = {r["run_id"]: {k: _cell(v) for k, v in r.items()} for r in csv.DictReader(f)}
    return sweep, list(rows.values())


def _swept_keys(sweep: dict, rows: list[dict]) -> list[str]:
    cols = list(rows[0]) if rows else []
    if not sweep.get("keys") and {"status", "seed"} <= set(cols):
        return cols[cols.index("status") + 1:cols.index("seed")]
    return [k for k in sweep.get("keys") or [] if not cols or k in cols]


def _usable(rows: list[dict], column: str) -> tuple[list[dict], list[dict]]:
    """Completed rows with a finite value, as (dropout rows, controls); with no dropout rows every row is plain."""
    done = [r for r in rows if r.get("status") == "completed" and _num(r.get(column)) and math.isfinite(r[column])]
    drop = [r for r in done if r.get("dropout")]
    return (drop, [r for r in done if not r.get("dropout")]) if drop else (done, [])


def _resolve(keys: list[str], rows: list[dict], x: str | None, y: str | None,
             sweep: dict | None = None) -> str | None:
    """The x key to plot against; a bad x or y is a one-line ValueError naming what is allowed."""
    if y is not None and y not in METRICS:
        raise ValueError(f"unknown metric y='{y}' (allowed: {', '.join(METRICS)})")
    if x is not None and x not in keys:
        raise ValueError(f"unknown x='{x}': not a swept key of this sweep (swept: {', '.join(keys) or 'none'})")
    if x is not None:
        return x
    base = [r for r in rows if r.get("dropout")] or rows  # all rows, whatever their status: a stable choice

    def pools(k):  # a zipped key with fewer values than a partner (Table 2's c = 2 on four rows) would pool rows
        return any(len(_distinct(base, k)) < len(_distinct(base, j)) for j in _zipped_with(sweep or {}, k))
    varied = [k for k in keys if len(_distinct(base, k)) > 1 and not pools(k)]
    numeric = [k for k in varied if all(_num(v) or v is None for v in _distinct(base, k))]
    prefer = [k for k in DROP_KEYS if k in varied] + numeric + varied + keys
    return prefer[0] if prefer else None


# ----- final error against one swept key


@dataclass
class Series:
    """One line of a sweep plot: error in % at each x position, mean and sample std (ddof 1) over seeds."""
    label: str
    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: np.ndarray  # seeds per point
    control: bool = False
    reference: bool = False  # a horizontal line: x does not apply to the control (it has no dropout)
    group: tuple | None = None  # a control drawn in the colour of the dropout line with the same group


@dataclass
class XAxis:
    key: str
    label: str
    log: bool = False
    ticks: list | None = None  # numeric axis: where the data are
    labels: list | None = None  # categorical axis: tick labels at 0..k-1


def _x_axis(key: str, values: list):
    """The axis for x and the position of each value on it."""
    if all(_num(v) for v in values):
        if key in DROP_KEYS:
            unit = "a hidden" if DROP_KEYS[key] == "hidden" else "an input"
            label = f"probability of retaining {unit} unit, p\n(paper's convention; 1 - drop probability)"
            return XAxis(key, label, ticks=sorted(1 - v for v in values)), lambda v: 1 - v
        log = key == "data.train_size" or (min(values) > 0 and max(values) >= 50 * min(values))
        label = "training set size (examples, log scale)" if key == "data.train_size" else \
            _key_label(key) + (" (log scale)" if log else "")
        return XAxis(key, label, log=log, ticks=sorted(values)), float
    order, labels = _categories(key, values)
    return XAxis(key, _key_label(key), labels=labels), order.index


def seed_std(values) -> float:
    """Spread over seeds: the sample std (ddof 1), as the report and verdicts use; 0 for one value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _points(rows: list[dict], x: str, column: str, pos) -> tuple[np.ndarray, ...]:
    at = defaultdict(list)
    for r in rows:
        at[pos(_h(r.get(x)))].append(100 * r[column])
    xs = sorted(at)
    return (np.array(xs, float), np.array([np.mean(at[p]) for p in xs]), np.array([seed_std(at[p]) for p in xs]),
            np.array([len(at[p]) for p in xs]))


def _seeds(n: np.ndarray) -> str:
    lo, hi = int(n.min()), int(n.max())
    return "1 seed" if hi == 1 else f"mean ± std over {lo if lo == hi else f'{lo}-{hi}'} seeds"


def _group(rows: list[dict], keys: list[str]) -> list[tuple[tuple, list[dict]]]:
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(_h(r.get(k)) for k in keys)].append(r)
    return sorted(groups.items(), key=lambda kv: [_rank(v) for v in kv[0]])


def _zipped_with(sweep: dict, x: str) -> set[str]:
    """Keys of x's zip entry: they advance with x (epochs with train size, say), so they split no line."""
    return {k for z in sweep.get("zip") or [] if isinstance(z, dict) and x in z for k in z} - {x}


def _series(rows: list[dict], keys: list[str], x: str, column: str, linked: set[str] = frozenset(),
            baseline: bool = True) -> tuple[list[Series], XAxis | None]:
    drop, ctrl = _usable(rows, column)
    if not drop:
        return [], None
    # baseline controls get these keys from Config.control(); no-dropout grid points keep the swept value
    set_by_control = baseline and x.startswith(CONTROL_SET)
    axis, pos = _x_axis(x, _distinct(drop + ([] if set_by_control else ctrl), x))
    others = [k for k in keys if k != x and k not in linked and len(_distinct(drop, k)) > 1]
    out = []
    for values, members in _group(drop, others):
        xs, mean, std, n = _points(members, x, column, pos)
        name = ", ".join(_value_label(k, v) for k, v in zip(others, values)) or "dropout"
        out.append(Series(f"{name} ({_seeds(n)})", xs, mean, std, n, group=values))
    shared = [k for k in others if not k.startswith(CONTROL_SET)]
    groups = _group(ctrl, shared)
    for values, members in groups:
        xs, mean, std, n = _points(members, x, column, (lambda v: 0.0) if set_by_control else pos)
        which = "".join(f", {_value_label(k, v)}" for k, v in zip(shared, values)) if len(groups) > 1 else ""
        pair = values if len(groups) > 1 and shared == others else None  # one control per dropout line
        out.append(Series(f"no dropout (control){which}, {_seeds(n)}", xs, mean, std, n, True, set_by_control, pair))
    return out, axis


def sweep_series(folder: Path, x: str | None = None, y: str = "test_error") -> tuple[list[Series], XAxis | None]:
    """The lines plot_sweep draws for metric y against x (by default the key plot_sweep picks), and their axis."""
    sweep, rows = read_index(folder)
    keys = _swept_keys(sweep, rows)
    x = _resolve(keys, rows, x, y, sweep)
    return _series(rows, keys, x, METRICS[y], _zipped_with(sweep, x), sweep.get("baseline", True)) if x else ([], None)


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


def _titles(fig, title: str, sub: list[str]) -> None:
    """The title and smaller lines under it, in a band kept free of the (constrained) layout."""
    h = fig.get_figheight()
    width = int(12 * fig.get_figwidth())  # characters of 9-point text that fit across the figure
    lines = [w for line in sub for w in textwrap.wrap(line, width) or [""]]
    fig.get_layout_engine().set(rect=(0, 0, 1, 1 - (0.5 + 0.19 * len(lines)) / h))
    fig.text(0.5, 1 - 0.12 / h, title, ha="center", va="top", fontsize=12)
    fig.text(0.5, 1 - 0.42 / h, "\n".join(lines), ha="center", va="top", fontsize=9, color="#444444")


def _subtitle(folder: Path, sweep: dict, rows: list[dict], keys: list[str], extra: str = "") -> list[str]:
    config = f" (sweep of {sweep['config']})" if sweep.get("config") else ""
    left = Counter(str(r.get("status")) for r in rows if r.get("status") != "completed")
    status = f"{sum(left.values())} of {len(rows)} runs not completed, not plotted: " + \
        ", ".join(f"{n} {s}" for s, n in left.items()) if left else ""
    note = ", ".join(s for s in (_scale_note(folder, keys, runs=False), extra) if s)  # the index says which
    lines = (f"{sweep.get('description') or ''}{config}".strip(), note, status)
    return [s for s in lines if s]


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
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
    keys = _swept_keys(sweep, rows)
    x = _resolve(keys, rows, x, y, sweep)
    metrics = [y] if y else ["test_error", "train_error"]
    linked, baseline = _zipped_with(sweep, x), sweep.get("baseline", True)
    panels = [(m, *_series(rows, keys, x, METRICS[m], linked, baseline)) for m in metrics] if x else []
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
    _titles(fig, f"{sweep.get('name') or folder.name}: final error against {_key_label(x)}",
            _subtitle(folder, sweep, rows, keys))
    return _save(fig, Path(out_dir), f"sweep_{x.rsplit('.', 1)[-1]}" + (f"_{y}" if y else ""))


def _scale_note(folder: Path, swept: list[str] = (), runs: bool = True) -> str:
    """What a reader must know to weigh the curves: data size, length, device, unfinished runs (when `runs`).

    Swept keys are left out: they differ between runs, so no one value describes the folder.
    """
    dirs = run_dirs(folder)
    if not dirs:
        return ""
    cfg = yaml.safe_load((dirs[0] / "config.yaml").read_text())
    n = cfg["data"]["train_size"]
    parts = [cfg["data"]["dataset"] + ("" if "data.train_size" in swept else
                                       f" {'all' if n is None else f'{n:,}'} training examples")]
    if "optim.epochs" not in swept:
        parts.append(f"{cfg['optim']['epochs']} epochs")
    if cfg.get("scale", "full") != "full":  # a shrunk run says so wherever it shows (scale.py)
        hidden = "" if "model.hidden" in swept else f", {'-'.join(map(str, cfg['model']['hidden']))} hidden units"
        parts.insert(0, f"{cfg['scale']} scale{hidden}")
    # a note, not a result: a damaged file leaves a part out here (`plot` refuses such a folder before drawing)
    try:
        parts.append((read_env(dirs[0]) or {})["device"].split(":")[0] + " run")
    except (Damaged, KeyError, AttributeError):
        pass
    if "precision" not in swept:
        parts.append(cfg.get("precision") or "fp32")
    if runs and not all(_completed(d) for d in dirs):
        parts.append("some runs unfinished")
    return ", ".join(parts)


def _completed(run_dir: Path) -> bool:
    try:
        s = read_summary(run_dir)
    except Damaged:
        return False
    return s is not None and s["status"] == "completed"
