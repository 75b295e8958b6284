"""`dropout-lab report`: the paper's MNIST numbers next to ours, from results folders, with no training.

For each paper table, a row per paper row: the paper's error, ours as mean ± std over seeds, the
difference, the scale and updates run, and the device. For each qualitative claim, a verdict computed
from the data (holds / does not hold / not run) with the numbers it rests on. Full and quick results
are never mixed in one row: each scale gets its own table.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from . import paper
from .results import atomic_write
from .sweep_plot import is_sweep, read_index

SCALE_NOTE = {"full": "full", "quick": "quick (scale.py: widths /8, updates /500, 10k images)"}


# ----------------------------------------------------------------------------------------------
# reading results


class Result:
    """One results folder of a paper config: its index rows (completed runs only) and provenance."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.meta, rows = read_index(folder)
        self.rows = [r for r in rows if r.get("status") == "completed" and r.get("final_test_error") is not None]
        self.scale = (self.meta.get("base") or {}).get("scale", "full")
        self.key = self.meta.get("name", folder.name).removesuffix("-quick")
        envs = [json.loads(p.read_text()) for p in sorted(folder.glob("*/env.json"))]
        self.devices = sorted({e.get("device_name", "?") for e in envs})
        self.commits = sorted({(e.get("git_commit") or "?")[:12] for e in envs})
        self.versions = sorted({f"torch {e.get('torch')}, python {e.get('python')}" for e in envs})
        self.seconds = sum(r.get("wall_seconds") or 0.0 for r in self.rows)

    def by(self, key) -> dict:
        out = defaultdict(list)
        for r in self.rows:
            out[key(r)].append(r)
        return out


def find(roots: list[Path]) -> dict[tuple[str, str], Result]:
    """(config key, scale) -> Result, for every paper sweep folder in or under the given folders."""
    found = {}
    for root in roots:
        for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []:
            if is_sweep(folder):
                res = Result(folder)
                if res.key in paper.CONFIGS:
                    found[(res.key, res.scale)] = res
    return found


def stats(rows: list[dict], column: str = "final_test_error") -> tuple[float, float, int]:
    """Mean and sample std (ddof 1) in percent, and n."""
    v = np.array([r[column] for r in rows], dtype=float) * 100
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def pm(m: float, s: float, n: int) -> str:
    return f"{m:.2f} ± {s:.2f} (n={n})"


def retention(r: dict) -> float:
    return round(1 - r["model.dropout.p_hidden"], 3)


# ----------------------------------------------------------------------------------------------
# tables


def table(t: paper.Table, res: Result) -> list[str]:
    groups = res.by(lambda r: r.get("label"))
    lines = [f"| {t.title} row | paper % | ours % (mean ± std, n seeds) | ours − paper | scale | updates | device |",
             "|---|---|---|---|---|---|---|"]
    for row in t.rows:
        ref = f"{row.error:.2f}" + (f" ± {row.std:.2f}" if row.std else "")
        runs = groups.get(row.label)
        if not runs:
            lines.append(f"| {row.label} | {ref} | not run | | {res.scale} | | |")
            continue
        m, s, n = stats(runs)
        steps = sorted({int(r.get("steps_completed") or 0) for r in runs})
        lines.append(f"| {row.label} | {ref} | {pm(m, s, n)} | {m - row.error:+.2f} | {res.scale} | "
                     f"{'/'.join(f'{x:,}' for x in steps)} | {', '.join(res.devices)} |")
    return lines


# ----------------------------------------------------------------------------------------------
# verdicts: each returns (holds: bool | None, the numbers it rests on)


def verdict_table9(res: Result):
    g = {k: stats(v)[0] for k, v in res.by(lambda r: r.get("label")).items() if k}
    if any(label not in g for grp in paper.TABLE9_ORDER for label in grp):
        return None, "some rows not run"
    ok = all(max(g[a] for a in worse) > min(g[b] for b in better)
             for worse, better in zip(paper.TABLE9_ORDER, paper.TABLE9_ORDER[1:]))
    nums = "; ".join(f"{label} {g[label]:.2f}%" for grp in paper.TABLE9_ORDER for label in grp)
    return ok, f"means: {nums}"


def verdict_fig4(res: Result):
    net = lambda r: "x".join(str(n) for n in r["model.hidden"])  # noqa: E731
    drop = {k: stats(v)[0] for k, v in res.by(lambda r: net(r) if r["dropout"] else None).items() if k}
    ctrl = {k: stats(v)[0] for k, v in res.by(lambda r: None if r["dropout"] else net(r)).items() if k}
    if not drop or not ctrl:
        return None, "no dropout or no control runs"
    ok = max(drop.values()) < min(ctrl.values())
    return ok, (f"with dropout {min(drop.values()):.2f}-{max(drop.values()):.2f}% over {len(drop)} nets, "
                f"without {min(ctrl.values()):.2f}-{max(ctrl.values()):.2f}% over {len(ctrl)} nets "
                "(holds when the clusters do not overlap)")


def _curve(res: Result) -> dict[float, tuple[float, float, int]]:
    return {p: stats(v) for p, v in sorted(res.by(retention).items())}


def verdict_fig9a(res: Result):
    c = _curve(res)
    flat = [c[p][0] for p in c if 0.4 <= p <= 0.8]
    if 0.1 not in c or len(flat) < 3:
        return None, "retention 0.1 or the 0.4-0.8 range not run"
    rise = c[0.1][0] - min(m for m, _, _ in c.values())
    spread = max(flat) - min(flat)
    ok = rise > 0 and spread <= 0.25 * rise
    return ok, (f"error at p = 0.1 is {c[0.1][0]:.2f}%, {rise:.2f} points above the best; over 0.4 <= p <= 0.8 "
                f"the means span {spread:.2f} points (holds when that span is at most a quarter of the rise)")


def verdict_fig9b(res: Result):
    c = _curve(res)
    if 0.5 not in c or len(c) < 3:
        return None, "too few retention values run"
    best = min(c, key=lambda p: c[p][0])
    gap = c[0.5][0] - c[best][0]
    ok = 0.5 <= best <= 0.7 and gap <= max(0.1, c[best][1])
    return ok, (f"best p = {best:g} at {c[best][0]:.2f}%; p = 0.5 is {gap:.2f} points behind (holds when the "
                "best p is 0.5-0.7 and p = 0.5 is within 0.1 points or one std of it)")


def verdict_fig10(res: Result):
    drop = {k: stats(v) for k, v in res.by(lambda r: r["data.train_size"] if r["dropout"] else None).items() if k}
    ctrl = {k: stats(v) for k, v in res.by(lambda r: None if r["dropout"] else r["data.train_size"]).items() if k}
    sizes = sorted(set(drop) & set(ctrl))
    if len(sizes) < 4:
        return None, "fewer than 4 sizes run with and without dropout"
    gain = {n: ctrl[n][0] - drop[n][0] for n in sizes}
    noise = {n: max(drop[n][1], ctrl[n][1]) for n in sizes}
    small = [n for n in sizes if n <= 500]
    peak = max(sizes, key=gain.get)
    ok = (all(gain[n] <= noise[n] for n in small) and peak not in small and peak != sizes[-1]
          and gain[peak] > gain[sizes[-1]])
    nums = ", ".join(f"{n:,}: {gain[n]:+.2f}" for n in sizes)
    return ok, (f"gain of dropout (control − dropout, points) by size: {nums} (holds when the gain at 100 and 500 "
                "is within one std of zero or below, and it peaks at a middle size)")


def mc_results(res: Result) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(res.folder.glob("*/mc.json"))]


def verdict_fig11(res: Result):
    mcs = mc_results(res)
    if not mcs:
        return None, "no mc.json"
    ks = [e["k"] for e in mcs[0]["mc"]]
    mc = {k: np.mean([m["mc"][i]["mean"] for m in mcs]) * 100 for i, k in enumerate(ks)}
    sd = {k: np.mean([m["mc"][i]["std"] for m in mcs]) * 100 for i, k in enumerate(ks)}
    ws = np.mean([m["weight_scaling"]["test_error"] for m in mcs]) * 100
    if 50 not in mc or max(ks) <= 50:
        return None, "k = 50 and a larger k not both run"
    big = max(ks)
    ok = abs(mc[50] - ws) <= sd[50] and mc[big] <= ws + sd[big] and mc[1] > mc[big]
    return ok, (f"weight scaling {ws:.2f}%; MC k=1 {mc[1]:.2f}%, k=50 {mc[50]:.2f} ± {sd[50]:.2f}%, "
                f"k={big} {mc[big]:.2f} ± {sd[big]:.2f}% over {len(mcs)} nets (holds when k=50 is within one std "
                f"of weight scaling, k={big} is no worse than it by more than one std, and k=1 is worse than k={big})")


VERDICTS = {"table9": verdict_table9, "fig4": verdict_fig4, "fig9a": verdict_fig9a, "fig9b": verdict_fig9b,
            "fig10": verdict_fig10, "fig11": verdict_fig11}


def verdict_line(v: bool | None) -> str:
    return {True: "**holds**", False: "**does not hold**", None: "not run"}[v]


# ----------------------------------------------------------------------------------------------
# figures: ours against the paper's numbers


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_table(t: paper.Table, res: Result, out: Path) -> Path:
    plt = _plt()
    groups = res.by(lambda r: r.get("label"))
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(t.rows) + 1.8))
    labelled = False
    for i, row in enumerate(t.rows):
        ax.plot(row.error, i, marker="|", ms=18, mew=3, color="black", label="paper" if i == 0 else None)
        if groups.get(row.label):
            m, s, n = stats(groups[row.label])
            ax.errorbar(m, i, xerr=s, fmt="o", color="tab:blue", capsize=4,
                        label=None if labelled else f"ours, mean ± std ({res.scale})")
            labelled = True
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    _plt().close(fig)
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------------------------
# the report


def uncertainty_lines(res: Result) -> list[str]:
    mcs = mc_results(res)
    if not mcs:
        return []
    k = mcs[0]["mc_uncertainty"]["k"]
    lines = ["| prediction | test error % | NLL | ECE % | entropy, correct (nats) | entropy, wrong (nats) |",
             "|---|---|---|---|---|---|"]
    for name, key in (("weight scaling", "weight_scaling"), (f"MC, k = {k}", "mc_uncertainty")):
        col = lambda c, f=1.0, key=key: np.array([m[key][c] for m in mcs]) * f  # noqa: E731
        cells = [col("test_error", 100), col("nll"), col("ece", 100), col("entropy_correct"), col("entropy_wrong")]
        lines.append(f"| {name} | " + " | ".join(f"{c.mean():.3f} ± {c.std(ddof=1) if len(c) > 1 else 0:.3f}"
                                                 for c in cells) + " |")
    return lines


def beyond_lines(folder: Path, base: Path) -> list[str]:
    """The experiments of `dropout-lab beyond`, where their results are present."""
    md = []
    ridge, feats = folder / "ridge" / "summary.json", folder / "features" / "features.json"
    if ridge.is_file():
        d = json.loads(ridge.read_text())
        md += ["## Is dropout just L2? (section 9.1)", "",
               f"`{d['env'].get('command', 'dropout-lab beyond ridge')}`: MNIST softmax regression on "
               f"{d['settings']['n_train']:,} images, {len(d['settings']['seeds'])} seeds, "
               f"{d['env'].get('device_name', '?')}. For linear regression input dropout is exactly ridge with "
               "penalty p(1−p)‖Γw‖² (tests/test_ridge.py checks the closed form); for softmax regression that "
               "penalty is only a second-order approximation. Measured:", "",
               "| method | drop q | test error % | train error % |", "|---|---|---|---|"]
        md += [f"| {r['label']} | {r['q']:g} | {100 * r['test_error_mean']:.2f} ± {100 * r['test_error_std']:.2f} | "
               f"{100 * r['train_error_mean']:.2f} |" for r in d["results"]]
        md += ["", f"![section 9.1]({_rel(ridge.parent / 'ridge.png', base)})", ""]
    if feats.is_file():
        d = json.loads(feats.read_text())
        md += ["## Features and sparsity (Figures 7 and 8)", "",
               f"`dropout-lab beyond features`: {d['figure']}.", "",
               "| net | test error % | mean activation | activations = 0 | units with mean < 0.1 |",
               "|---|---|---|---|---|"]
        md += [f"| {m['label']} | {100 * m['test_error']:.2f} | {m['mean_activation']:.3f} | "
               f"{100 * m['frac_zero']:.1f}% | {100 * m['frac_low_units']:.1f}% |" for m in d["models"].values()]
        md += ["", f"![sparsity]({_rel(feats.parent / 'sparsity.png', base)})",
               f"![features]({_rel(feats.parent / 'tiles.png', base)})", ""]
    return md


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def build(roots: list[Path], out: Path, command: str) -> str:
    found = find(roots)
    fig_dir = out.parent / "report"
    md = ["# dropout-lab: the paper's MNIST results next to ours", "",
          f"Made by `{command}` from the results folders, with no training. Errors are MNIST test errors in %, "
          "ours as mean ± sample std over seeds (n seeds). *quick* rows ran at the quick scale (scale.py: hidden "
          "widths / 8, weight updates / 500, 10,000 training images): they show trends, not the paper's numbers. "
          "Full-scale rows need a GPU.", ""]
    headline = []
    for key, t in paper.TABLES.items():
        md += [f"## {t.title}: {t.caption}", ""]
        present = [s for s in ("full", "quick") if (key, s) in found]
        if not present:
            md += [f"Not run: `dropout-lab sweep configs/paper/{key}.yaml` (add `--scale quick` on a CPU).", ""]
        for scale in present:
            res = found[(key, scale)]
            md += table(t, res) + [""]
            png = plot_table(t, res, fig_dir)
            md += [f"![{t.title}, {scale}]({_rel(png, out.parent)})", ""]
            if key == "table2":
                headline = table(t, res)
        if t.out_of_scope:
            md += ["Out of scope: " + "; ".join(f"{r.label} ({r.error:.2f})" for r in t.out_of_scope)
                   + f": {t.why_out}.", ""]
    md += ["## The paper's claims", "", "| claim | paper | verdict | scale | the numbers |", "|---|---|---|---|---|"]
    for key, (title, text) in paper.CLAIMS.items():
        present = [s for s in ("full", "quick") if (key, s) in found] or [None]
        for scale in present:
            v, nums = VERDICTS[key](found[(key, scale)]) if scale else (None, "")
            md.append(f"| {title} | {text} | {verdict_line(v)} | {scale or ''} | {nums} |")
    md.append("")
    figures = []
    for key in ("fig4", "fig9a", "fig9b", "fig10"):
        for scale in ("full", "quick"):
            if (key, scale) in found:
                res = found[(key, scale)]
                plots = sorted((res.folder / "plots").glob("sweep_*.png")) + sorted(
                    (res.folder / "plots").glob("curves.png"))
                figures += [f"![{key} {scale}: {p.stem}]({_rel(p, out.parent)})" for p in plots]
    if (("fig11", "quick") in found) or (("fig11", "full") in found):
        res = found.get(("fig11", "full")) or found[("fig11", "quick")]
        png = plot_fig11(res, fig_dir)
        figures.append(f"![fig11 {res.scale}]({_rel(png, out.parent)})")
        md += [f"## Predictive uncertainty from MC dropout (Figure 11's nets, {res.scale})", "",
               "Entropy of the predicted distribution on correct and on wrong test images, and expected calibration "
               "error (15 bins), for weight scaling and for the Monte-Carlo average, mean ± std over nets.", ""]
        md += uncertainty_lines(res) + [""]
    for root in roots:
        md += beyond_lines(root / "beyond", out.parent)
    if figures:
        md += ["## Figures", "", "Made by `dropout-lab plot` in each results folder.", ""]
        md += [f + "\n" for f in figures]
    md += ["## Provenance", "", "| config | scale | runs | compute (s) | devices | commits | versions |",
           "|---|---|---|---|---|---|---|"]
    total = 0.0
    for (key, scale), res in sorted(found.items()):
        total += res.seconds
        md.append(f"| {key} | {scale} | {len(res.rows)} | {res.seconds:,.0f} | {', '.join(res.devices)} | "
                  f"{', '.join(res.commits)} | {'; '.join(res.versions)} |")
    md += ["", f"Total compute over these runs: {total / 60:,.1f} min (sum of each run's wall time; stacked runs "
           "share their time, so the wall time of the sweeps is smaller).", ""]
    atomic_write(out, "\n".join(md))
    return "\n".join(headline)
