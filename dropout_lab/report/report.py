"""`dropout-lab report`: the paper's MNIST numbers next to ours, from results folders, with no training.

For each paper table, a row per paper row: the paper's error, ours as mean ± std over seeds, the
difference, the scale and updates run, and the device. For each qualitative claim, a verdict computed
from the data (verdicts.py), the long-term targets, figures and provenance. Full and quick results
are never mixed in one row: each scale gets its own table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..store.readback import RECENT
from ..store.results import atomic_write
from . import paper, tuning, verdicts
from .report_plots import plot_curves, plot_fig11, plot_table
from .verdicts import (
    Result,
    mc_results,
    met_line,
    pm,
    precision_of,
    short_commit,
    stats,
    targets,
    verdict,
    verdict_conv,
    verdict_line,
)

# ----------------------------------------------------------------------------------------------
# tables


def at_c(runs: list[dict]) -> str:
    """Mean share of units whose incoming norm sits at c after training: is max-norm live? '—' without it."""
    v = [r.get("final_max_norm_bound") for r in runs]
    v = [x for x in v if isinstance(x, (int, float)) and x == x]
    return f"{100 * np.mean(v):.1f}%" if v else "—"


SCALES = ("full", "medium", "quick")  # the order a report shows them in


def hours(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def table(t: paper.Table, res: Result, ran_only: bool = False) -> list[str]:
    """A row per paper row (ran_only: only those with finished runs); runs of another precision are
    another row: seeds are averaged, arithmetic never is."""
    key = lambda r: (r.get("label"), precision_of(r))  # noqa: E731
    groups, stopped = res.by(key), res.by(key, stopped=True)
    lines = [f"| {t.title} row | paper % | ours % (mean ± std, n seeds) | ours − paper | units at c | scale | updates "
             "| precision | device | wall time per run |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in t.rows:
        ref = f"{row.error:.2f}" + (f" ± {row.std:.2f}" if row.std else "")
        found = sorted(p for label, p in groups if label == row.label)
        halted = sorted(p for label, p in stopped if label == row.label)
        if not found and not halted and not ran_only:
            lines.append(f"| {row.label} | {ref} | not run | | | {res.scale} | | | | |")
        for precision in found:
            runs = groups[(row.label, precision)]
            m, s, n = stats(runs)
            steps = sorted({int(r.get("steps_completed") or 0) for r in runs})
            wall = np.mean([r.get("wall_seconds") or 0.0 for r in runs])
            lines.append(f"| {row.label} | {ref} | {pm(m, s, n)} | {m - row.error:+.2f} | {at_c(runs)} | {res.scale} | "
                         f"{'/'.join(f'{x:,}' for x in steps)} | {precision} | {', '.join(res.devices_of(runs))} | "
                         f"{hours(wall)} |")
        for precision in halted:  # a stopped run's curve so far: its last test passes, never a final result
            runs = sorted(stopped[(row.label, precision)], key=lambda r: str(r.get("seed")))
            m, s, n = stats(runs, "recent_test_error")
            wall = np.mean([r["wall_seconds"] for r in runs])
            lines.append(f"| {row.label} | {ref} | **stopped**: {pm(m, s, n)}, each seed's mean of its last "
                         f"{min(r['recent_passes'] for r in runs)} test passes | {m - row.error:+.2f} | {at_c(runs)} | "
                         f"{res.scale} | {'/'.join(format(r['steps_completed'], ',') for r in runs)} of "
                         f"{runs[0]['planned_steps']:,} | {precision} | {', '.join(res.devices_of(runs))} | "
                         f"{hours(wall)} so far |")
    return lines


def misses(t: paper.Table, res: Result, points: float = 0.10) -> list[str]:
    """The finished rows whose mean is further than `points` from the paper's: the report shows their curves."""
    return [row.label for row in t.rows if (runs := res.by(lambda r: r.get("label")).get(row.label))
            and abs(stats(runs)[0] - row.error) > points]


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
    md += conv_lines(folder / "conv", base)
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


def conv_lines(folder: Path, base: Path) -> list[str]:
    """`dropout-lab beyond conv`: the note's claim about conv layers, its verdict and the table behind it."""
    summary, env_path = folder / "summary.json", folder / "env.json"
    if not summary.is_file():
        return []
    from ..beyond.conv_plots import NAMES

    d = json.loads(summary.read_text())
    env = json.loads(env_path.read_text()) if env_path.is_file() else {}
    v, text = verdict_conv(d["table"])
    sizes = list(d["table"])
    variants = [k for k in NAMES if any(k in d["table"][n] for n in sizes)]
    md = ["## Does dropout work on conv layers? (a note's claim)", "",
          f"Claim: \"{d['claim']}\". Verdict: {verdict_line(v)}: {text}.", "",
          f"`{env.get('command', 'dropout-lab beyond conv')}`: a conv net on MNIST subsets, {d['updates']:,} updates a "
          f"run, on {env.get('device_name', '?')} (commit {short_commit(env.get('git_commit'))}, fp32). Final test "
          "error %, mean ± std over seeds (train error % of the same nets in brackets):", "",
          "| variant | " + " | ".join(f"{int(n):,} images" for n in sizes) + " |",
          "|---|" + "---|" * len(sizes)]
    for k in variants:
        cells = [d["table"][n].get(k) for n in sizes]
        md.append(f"| {NAMES[k]} | " + " | ".join(
            f"{pm(c['mean'], c['std'], c['n'])} ({c['train_mean']:.2f})" if c else "—" for c in cells) + " |")
    md += ["", f"![conv curves]({_rel(folder / 'curves.png', base)})",
           f"![conv bars]({_rel(folder / 'bars.png', base)})", ""]
    return md


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def claims_table(found: dict, scales=SCALES, variants: list[Result] = ()) -> list[str]:
    """A row per claim and scale it ran at: the verdict and the numbers it rests on. A claim that fails
    names the variants at its scale on which it holds: what it needs is the first thing a reader asks."""
    md = ["| claim | paper | verdict | scale | the numbers |", "|---|---|---|---|---|"]
    for key, (title, text) in paper.CLAIMS.items():
        present = [s for s in scales if (key, s) in found] or [None]
        for scale in present:
            v, nums = verdict(key, found[(key, scale)]) if scale else (None, "")
            if scale and len(found[(key, scale)].precisions) > 1:  # a verdict over several precisions says so
                nums += f" (runs of {', '.join(found[(key, scale)].precisions)} together)"
            held = [r.folder.name for r in variants if v is False and r.scale == scale
                    and verdicts.claim_of(r) == key and verdict(key, r)[0] is True]
            where = f" (holds in variant {', '.join(held)}: see Variants)" if held else ""
            md.append(f"| {title} | {text} | {verdict_line(v)}{where} | {scale or ''} | {nums} |")
    return md


def variants_lines(variants: list[Result], found: dict) -> list[str]:
    """A row per variant folder: what it changed against its paper config's folder, and the claim's verdict."""
    if not variants:
        return []
    md = ["", "## Variants: what a claim needs", "",
          "Paper configs swept under a name of their own with a factor changed (`--set name=...`), to show what a "
          "claim needs where it does not hold at its scale. *changed* lists the resolved keys in which a variant "
          "differs from the paper config's folder at the same scale; `--only` filters show in the command.", "",
          "| claim | folder | scale | changed | runs | verdict | the numbers | sweep wall time | command |",
          "|---|---|---|---|---|---|---|---|---|"]
    for res in variants:
        key = verdicts.claim_of(res)
        v, nums = verdict(key, res)
        judged = verdict_line(v) if v is not None else "no verdict"  # too few runs to judge the claim
        changed = "; ".join(verdicts.differences(res, found.get((key, res.scale)))) or "—"
        wall = sum(s["wall_seconds"] for s in res.sessions)
        md.append(f"| {paper.CLAIMS[key][0] if key in paper.CLAIMS else key} | {res.folder.name} | {res.scale} | "
                  f"{changed} | {len(res.rows)} | {judged} | {nums} | {hours(wall)} | "
                  f"`{res.meta.get('command', '?')}` |")
    return md


def suite_times(found: dict) -> str:
    """The sweep sessions summed per scale: the suite's wall time, with how many of its configs ran."""
    parts = []
    for scale in SCALES:
        ran = [res for (k, s), res in found.items() if s == scale]
        if ran:
            w = sum(x["wall_seconds"] for res in ran for x in res.sessions)
            parts.append(f"{scale} {w / 60:,.1f} min ({len(ran)} of {len(paper.CONFIGS)} configs)")
    return ", ".join(parts)


def headline(found: dict, variants: list[Result] = ()) -> str:
    """The README's opening: Table 2's rows at the largest scale it ran (at full scale only the rows that
    ran), then the claims at the largest scale where any ran."""
    t2 = next((found[("table2", s)] for s in SCALES if ("table2", s) in found
               and (found[("table2", s)].rows or found[("table2", s)].stopped)), None)
    lines = table(paper.TABLES["table2"], t2, ran_only=t2.scale == "full") if t2 else []
    scale = next((s for s in SCALES if any((k, s) in found and found[(k, s)].rows for k in paper.CLAIMS)), None)
    if scale:
        lines += ["", *claims_table(found, (scale,), variants)]
    return "\n".join(lines)


def earlier_lines(results: list) -> list[str]:
    """Each earlier attempt of a run, kept in RUN/earlier/N/ when the run started again from scratch: what it
    reached, for what it is; never a result, never in the tables above."""
    rows = [(res, e) for res in results for e in res.earlier]
    if not rows:
        return []
    md = ["## Earlier attempts", "", "Records a fresh start kept (`--restart`, `--force`, or a damaged record) in "
          "`RUN/earlier/N/`, attempt N of the run: measurements of an attempt that was not finished or was "
          "replaced, never counted in the tables above. *recent test error*: the mean of its last "
          f"{RECENT} test passes.", "", "| folder | run | attempt | status | updates reached | recent test error |",
          "|---|---|---|---|---|---|"]
    for res, e in rows:
        md.append(f"| {res.folder.name} | {e['run_id']} | {e['attempt']} | {e['status']} | "
                  f"{e['steps_completed']:,} of {e['planned_steps']:,} | {100 * e['recent_test_error']:.2f}% |")
    return md + [""]


def build(roots: list[Path], out: Path, command: str, warn: Callable[[str], None] = lambda line: None) -> str:
    """Writes the report to `out`; returns its headline (Table 2, then the claims). warn(line) hears of each
    damaged run file, which the report also lists: a run left out is never left out silently."""
    found, variants, skipped = verdicts.find_all(roots)
    variants = [r for r in variants if r.folder.name not in tuning.TUNED]  # a grid to pick from: shown below
    picks = tuning.find(roots)
    damaged = skipped + [w for res in [*found.values(), *variants, *(p.res for p in picks)] for w in res.warnings]
    for line in damaged:
        warn(line)
    fig_dir = out.parent / "report"
    md = ["# dropout-lab: the paper's MNIST results next to ours", "",
          f"Made by `{command}` from the results folders, with no training. Errors are MNIST test errors in %, "
          "ours as mean ± sample std over seeds (n seeds). *full* rows ran the config as written. *medium* rows "
          "ran at the medium scale (scale.py: hidden widths / 4, at most 20,000 weight updates, 10,000 training "
          "images unless the config chooses its subsets, and the exceptions in its OVERRIDES), *quick* rows at "
          "the quick scale (widths / 8, 2,000 updates, 10,000 training images): they show the paper's claims and "
          "trends, not its numbers. *units at c*: the share of units whose incoming weight "
          "vector ends at the max-norm bound c (mean over seeds; — for rows without max-norm), which says whether "
          "the constraint is live. *wall time per run*: each run's own wall time (the runs of a stack train "
          "together and share it).", ""]
    for key, t in paper.TABLES.items():
        md += [f"## {t.title}: {t.caption}", ""]
        present = [s for s in SCALES if (key, s) in found]
        if not present:
            md += [f"Not run: `dropout-lab sweep configs/paper/{key}.yaml` (add `--scale medium` or "
                   "`--scale quick` on a CPU).", ""]
        for scale in present:
            res = found[(key, scale)]
            md += table(t, res) + [""]
            png = plot_table(t, res, fig_dir)
            md += [f"![{t.title}, {scale}]({_rel(png, out.parent)})", ""]
            if scale == "full" and (curves := plot_curves(t, res, fig_dir)):
                missed, halted = misses(t, res), sorted({r["label"] for r in res.stopped})
                md += [(f"Rows more than 0.10 points from the paper: {', '.join(missed)}. " if missed else
                        "Every row that finished is within 0.10 points of the paper. " if res.rows else "")
                       + (f"Stopped before the end: {', '.join(halted)}; a stopped row's number is its seeds' "
                          "recent test error, which never counts as a result. " if halted else "")
                       + "Test error during training, against the paper's value:", "",
                       f"![{t.title}, {scale}, curves]({_rel(curves, out.parent)})", ""]
        if t.out_of_scope:
            md += ["Out of scope: " + "; ".join(f"{r.label} ({r.error:.2f})" for r in t.out_of_scope)
                   + f": {t.why_out}.", ""]
    md += ["## The paper's claims", "", *claims_table(found, variants=variants)]
    md += variants_lines(variants, found)
    md += tuning.lines(picks)
    md += ["", "## Long-term targets", "", "| target | met? | the numbers |", "|---|---|---|"]
    md += [f"| {t} | {met_line(v)} | {nums} |" for t, v, nums in targets(found)]
    md.append("")
    figures = []
    for key in ("fig4", "fig9a", "fig9b", "fig10"):
        for scale in SCALES:
            if (key, scale) in found:
                res = found[(key, scale)]
                plots = sorted((res.folder / "plots").glob("sweep_*.png")) + sorted(
                    (res.folder / "plots").glob("curves.png"))
                figures += [f"![{key} {scale}: {p.stem}]({_rel(p, out.parent)})" for p in plots]
    if fig11 := next((found[("fig11", s)] for s in SCALES if ("fig11", s) in found), None):
        res = fig11
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
    md += ["## Provenance", "", "| config | scale | runs | sweep wall time (s) | run time, summed (s) | devices | "
           "precision | commits | versions |", "|---|---|---|---|---|---|---|---|---|"]
    total = wall = 0.0
    for key, scale, res in [*((k, s, r) for (k, s), r in sorted(found.items())),
                            *((r.folder.name, r.scale, r) for r in [*variants, *(p.res for p in picks)])]:
        total += res.seconds
        w = sum(s["wall_seconds"] for s in res.sessions)
        wall += w
        runs = f"{len(res.rows)}" + (f" ({len(res.stopped)} stopped)" if res.stopped else "")
        md.append(f"| {key} | {scale} | {runs} | {f'{w:,.0f}' if res.sessions else 'not recorded'} | "
                  f"{res.seconds:,.0f} | {', '.join(res.devices)} | {', '.join(res.precisions)} | "
                  f"{', '.join(res.commits)} | "
                  f"{'; '.join(res.versions)} |")
    md += ["", f"Sweep wall time: {wall / 60:,.1f} min, the sum of the `sweep` sessions that trained these runs "
           f"(sessions.jsonl); the paper configs by scale, variants left out: {suite_times(found)}. Run time, "
           f"summed: {total / 60:,.1f} min, each run's own wall time; the runs of a stack train together and share "
           "it.", ""]
    md += earlier_lines([*found.values(), *variants])
    if damaged:
        md += ["## Damaged results", "", "Files that failed their checks when this report was made, and what the "
               "report did about each:", "", *(f"- {line}" for line in damaged), ""]
    atomic_write(out, "\n".join(md))
    return headline(found, variants)
