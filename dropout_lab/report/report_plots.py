"""The report's figures: each paper table against ours, Table 2's learning curves against the paper's value,
and Figure 11's Monte-Carlo averages against weight scaling. report.py places them in results/REPORT.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..store.readback import Damaged, read_metrics
from ..store.results import save_figure
from . import paper
from .verdicts import Result, mc_results, stats


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_table(t: paper.Table, res: Result, out: Path) -> Path:
    plt = _plt()
    groups, stopped = res.by(lambda r: r.get("label")), res.by(lambda r: r.get("label"), stopped=True)
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(t.rows) + 1.8))
    labelled = set()
    for i, row in enumerate(t.rows):
        ax.plot(row.error, i, marker="|", ms=18, mew=3, color="black", label="paper" if i == 0 else None)
        for runs, column, style, what in (
                (groups.get(row.label), "final_test_error", dict(fmt="o", color="tab:blue"),
                 f"ours, mean ± std ({res.scale})"),
                (stopped.get(row.label), "recent_test_error", dict(fmt="o", mfc="white", color="tab:orange"),
                 "ours, stopped before the end: recent test error")):
            if runs:
                m, s, n = stats(runs, column)
                ax.errorbar(m, i, xerr=s, capsize=4, label=None if what in labelled else what, **style)
                labelled.add(what)
                ax.annotate(f"{m:.2f}", (m, i), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    ax.set_yticks(range(len(t.rows)), [r.label for r in t.rows])
    ax.set_ylim(len(t.rows) - 0.4, -0.7)  # top to bottom in the paper's order, room for the labels
    ax.set_xlabel("MNIST test error (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35 / (0.3 * len(t.rows) + 0.5)), ncol=2, fontsize=8,
              frameon=False)
    ax.set_title(f"{t.title}: ours ({res.scale} scale) vs the paper", fontsize=10)
    fig.tight_layout()
    return _save(fig, out / f"{t.key}-{res.scale}.png")


def curve_groups(res: Result) -> dict[str, list[dict]]:
    """label -> its finished runs, or its stopped ones where none finished: the runs whose curves are shown."""
    done, stopped = res.by(lambda r: r.get("label")), res.by(lambda r: r.get("label"), stopped=True)
    return {**stopped, **done}


def plot_curves(t: paper.Table, res: Result, out: Path) -> Path | None:
    """Test error against updates for each seed of each row that ran, with the paper's value: where a row
    misses, is it still falling at the end, or has it settled above the paper?"""
    groups = curve_groups(res)
    rows = [row for row in t.rows if groups.get(row.label)]
    if not rows:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.4), squeeze=False)
    for ax, row in zip(axes[0], rows):
        for j, r in enumerate(sorted(groups[row.label], key=lambda r: str(r.get("seed")))):
            try:
                m = read_metrics(res.folder / str(r["run_id"]))
            except Damaged:
                continue
            ax.plot([x["step"] for x in m], [100 * x["test_error"] for x in m], lw=1, color=plt.cm.tab10(j),
                    label=f"seed {r.get('seed')}")
        ax.axhline(row.error, color="black", ls="--", lw=1, label=f"paper {row.error:.2f}%")
        ax.set_xscale("log")
        ax.set_ylim(max(0.0, row.error - 0.5), row.error + 1.5)
        ax.set_xlabel("weight updates")
        ax.set_ylabel("test error (%)")
        halted = [r for r in groups[row.label] if "planned_steps" in r]
        if halted:  # the axis runs to the planned end, so the gap left is seen
            ax.set_xlim(right=1.2 * halted[0]["planned_steps"])
            ax.axvline(halted[0]["planned_steps"], color="grey", lw=1, ls=":", label="planned end")
        ax.set_title(row.label + (f"\nstopped at {max(r['steps_completed'] for r in halted):,} of "
                                  f"{halted[0]['planned_steps']:,} updates" if halted else ""), fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(f"{t.title}: test error during training ({res.scale} scale)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out / f"{t.key}-{res.scale}-curves.png")


def plot_fig11(res: Result, out: Path) -> Path | None:
    mcs = mc_results(res)
    if not mcs:
        return None
    plt = _plt()
    ks = np.array([e["k"] for e in mcs[0]["mc"]])
    fig, ax = plt.subplots(figsize=(6, 4))
    for j, m in enumerate(mcs):
        mean = np.array([e["mean"] for e in m["mc"]]) * 100
        std = np.array([e["std"] for e in m["mc"]]) * 100
        ws = m["weight_scaling"]["test_error"] * 100
        color = plt.cm.tab10(j)
        ax.errorbar(ks, mean, yerr=std, marker="o", ms=3, capsize=3, color=color, label=f"MC, net {j + 1}")
        ax.axhline(ws, color=color, ls="--", lw=1, label=f"weight scaling, net {j + 1}")
    ax.set_xscale("log")
    ax.set_xlabel("k, thinned nets averaged")
    ax.set_ylabel("test error (%)")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_title(f"Figure 11: Monte-Carlo averaging vs weight scaling ({res.scale} scale)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _save(fig, out / f"fig11-{res.scale}.png")


def _save(fig, path: Path) -> Path:
    try:
        return save_figure(fig, path)
    finally:
        _plt().close(fig)
