"""The index of a sweep folder (index.csv and sweep.yaml) read as data: the swept keys, their values in the
paper's words, and the lines a sweep plot draws (sweep_plot.py draws them, heatmap.py and plot.py reuse them).

Final errors are means over seeds with their spread; drop probabilities are worded as the paper's retention
probability 1 - p, and controls, whose dropout settings are not the sweep's, as reference lines.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..config import yaml_load
from .readback import Damaged, read_env, read_summary, run_dirs

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


def get_key(cfg: dict, key: str):
    for part in key.split("."):
        cfg = cfg.get(part) if isinstance(cfg, dict) else None
    return cfg


def hashable(v):
    return tuple(v) if isinstance(v, list) else v  # list values ([800, 800]) as dict keys


def is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def distinct(rows: list[dict], key: str) -> list:
    return list(dict.fromkeys(hashable(r.get(key)) for r in rows))


def _rank(v):
    return (0, 0) if v is None else (1, v) if is_num(v) else (2, str(v))


def _fmt(key: str | None, v) -> str:
    if v is None:
        return "all" if key == "data.train_size" else "off"
    if key in DROP_KEYS and is_num(v):
        return f"{1 - v:g}"
    if isinstance(v, (list, tuple)):
        return "x".join(map(str, v))
    return f"{v:,g}" if is_num(v) else str(v)


def value_label(key: str, v) -> str:
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


def categories(key: str | None, values: list) -> tuple[list, list[str]]:
    """Axis order: None ('off') first, numbers ascending (by retention for drop keys), anything else as swept."""
    nums = sorted((v for v in values if is_num(v)), reverse=key in DROP_KEYS)
    order = [None] * (None in values) + nums + [v for v in values if v is not None and not is_num(v)]
    return order, [_fmt(key, v) for v in order]


def key_label(key: str) -> str:
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


def swept_keys(sweep: dict, rows: list[dict]) -> list[str]:
    cols = list(rows[0]) if rows else []
    if not sweep.get("keys") and {"status", "seed"} <= set(cols):
        return cols[cols.index("status") + 1:cols.index("seed")]
    return [k for k in sweep.get("keys") or [] if not cols or k in cols]


def usable(rows: list[dict], column: str) -> tuple[list[dict], list[dict]]:
    """Completed rows with a finite value, as (dropout rows, controls); with no dropout rows every row is plain."""
    done = [r for r in rows if r.get("status") == "completed" and is_num(r.get(column)) and math.isfinite(r[column])]
    drop = [r for r in done if r.get("dropout")]
    return (drop, [r for r in done if not r.get("dropout")]) if drop else (done, [])


def resolve_x(keys: list[str], rows: list[dict], x: str | None, y: str | None,
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
        return any(len(distinct(base, k)) < len(distinct(base, j)) for j in zipped_with(sweep or {}, k))
    varied = [k for k in keys if len(distinct(base, k)) > 1 and not pools(k)]
    numeric = [k for k in varied if all(is_num(v) or v is None for v in distinct(base, k))]
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
    if all(is_num(v) for v in values):
        if key in DROP_KEYS:
            unit = "a hidden" if DROP_KEYS[key] == "hidden" else "an input"
            label = f"probability of retaining {unit} unit, p\n(paper's convention; 1 - drop probability)"
            return XAxis(key, label, ticks=sorted(1 - v for v in values)), lambda v: 1 - v
        log = key == "data.train_size" or (min(values) > 0 and max(values) >= 50 * min(values))
        label = "training set size (examples, log scale)" if key == "data.train_size" else \
            key_label(key) + (" (log scale)" if log else "")
        return XAxis(key, label, log=log, ticks=sorted(values)), float
    order, labels = categories(key, values)
    return XAxis(key, key_label(key), labels=labels), order.index


def seed_std(values) -> float:
    """Spread over seeds: the sample std (ddof 1), as the report and verdicts use; 0 for one value."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _points(rows: list[dict], x: str, column: str, pos) -> tuple[np.ndarray, ...]:
    at = defaultdict(list)
    for r in rows:
        at[pos(hashable(r.get(x)))].append(100 * r[column])
    xs = sorted(at)
    return (np.array(xs, float), np.array([np.mean(at[p]) for p in xs]), np.array([seed_std(at[p]) for p in xs]),
            np.array([len(at[p]) for p in xs]))


def _seeds(n: np.ndarray) -> str:
    lo, hi = int(n.min()), int(n.max())
    return "1 seed" if hi == 1 else f"mean ± std over {lo if lo == hi else f'{lo}-{hi}'} seeds"


def group_rows(rows: list[dict], keys: list[str]) -> list[tuple[tuple, list[dict]]]:
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(hashable(r.get(k)) for k in keys)].append(r)
    return sorted(groups.items(), key=lambda kv: [_rank(v) for v in kv[0]])


def zipped_with(sweep: dict, x: str) -> set[str]:
    """Keys of x's zip entry: they advance with x (epochs with train size, say), so they split no line."""
    return {k for z in sweep.get("zip") or [] if isinstance(z, dict) and x in z for k in z} - {x}


def build_series(rows: list[dict], keys: list[str], x: str, column: str, linked: set[str] = frozenset(),
            baseline: bool = True) -> tuple[list[Series], XAxis | None]:
    drop, ctrl = usable(rows, column)
    if not drop:
        return [], None
    # baseline controls get these keys from Config.control(); no-dropout grid points keep the swept value
    set_by_control = baseline and x.startswith(CONTROL_SET)
    axis, pos = _x_axis(x, distinct(drop + ([] if set_by_control else ctrl), x))
    others = [k for k in keys if k != x and k not in linked and len(distinct(drop, k)) > 1]
    out = []
    for values, members in group_rows(drop, others):
        xs, mean, std, n = _points(members, x, column, pos)
        name = ", ".join(value_label(k, v) for k, v in zip(others, values)) or "dropout"
        out.append(Series(f"{name} ({_seeds(n)})", xs, mean, std, n, group=values))
    shared = [k for k in others if not k.startswith(CONTROL_SET)]
    groups = group_rows(ctrl, shared)
    for values, members in groups:
        xs, mean, std, n = _points(members, x, column, (lambda v: 0.0) if set_by_control else pos)
        which = "".join(f", {value_label(k, v)}" for k, v in zip(shared, values)) if len(groups) > 1 else ""
        pair = values if len(groups) > 1 and shared == others else None  # one control per dropout line
        out.append(Series(f"no dropout (control){which}, {_seeds(n)}", xs, mean, std, n, True, set_by_control, pair))
    return out, axis


def sweep_series(folder: Path, x: str | None = None, y: str = "test_error") -> tuple[list[Series], XAxis | None]:
    """The lines plot_sweep draws for metric y against x (by default the key plot_sweep picks), and their axis."""
    sweep, rows = read_index(folder)
    keys = swept_keys(sweep, rows)
    x = resolve_x(keys, rows, x, y, sweep)
    if x is None:
        return [], None
    return build_series(rows, keys, x, METRICS[y], zipped_with(sweep, x), sweep.get("baseline", True))


# ----- what a reader must know to weigh a folder's curves


def scale_note(folder: Path, swept: list[str] = (), runs: bool = True) -> str:
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
    done = sum(map(_completed, dirs)) if runs else len(dirs)
    if done < len(dirs):  # a folder drawn while it trains, or with runs stopped before the end
        parts.append(f"{done} of {len(dirs)} runs completed so far")
    return ", ".join(parts)


def _completed(run_dir: Path) -> bool:
    try:
        s = read_summary(run_dir)
    except Damaged:
        return False
    return s is not None and s["status"] == "completed"
