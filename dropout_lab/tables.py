"""The tables the command line prints, built from its results: each function returns rich Tables, cli.py
prints them. Numbers are percentages on screen (fractions in files); narrow terminals keep them whole."""

from __future__ import annotations

import statistics
import textwrap
from dataclasses import dataclass, field, replace

from rich import box
from rich.table import Table


@dataclass
class Col:
    head: str
    cells: list[str] = field(default_factory=list)
    short: str | None = None  # the header where the full one does not fit
    right: bool = False
    wrap: bool = False  # text that may wrap at its spaces; numbers and ids never do
    brief: list[str] | None = None  # shorter cells where the full ones do not fit (a run id's hash)
    drop: int | None = None  # left out where nothing else makes the table fit, lowest first; None: never


def _natural(c: Col, wrapped: bool = False) -> int:
    """The column's width unwrapped, or where it wraps at spaces, its longest word's."""
    cells = [w for cell in c.cells for w in cell.split()] if wrapped else c.cells
    return max(len(c.head), *map(len, cells or [""]))


def _frame(n: int, compact: bool) -> int:
    """Characters a table of n columns spends on borders and padding (rich's box and padding below)."""
    return 2 * (n - 1) if compact else 3 * n + 1


def _need(cols: list[Col], compact: bool) -> int:
    return sum(_natural(c, c.wrap) for c in cols) + _frame(len(cols), compact)


def fitted(cols: list[Col], width: int, title: str = "", borders: bool = True) -> Table:
    """A table of these columns that fits `width` characters without cutting a cell: where the full table
    is too wide it loses its borders, then takes the short headers and the brief cells, then lets text wrap,
    and last leaves columns out (lowest `drop` first), which its title names."""
    full = [replace(c, wrap=False) for c in cols]
    cols = [replace(c, head=c.short or c.head, cells=c.brief or c.cells) for c in cols]
    stages = [(full, not borders), (full, True), ([replace(c, wrap=False) for c in cols], True), (cols, True)]
    for rank in sorted({c.drop for c in cols if c.drop is not None}):
        cols = [c for c in cols if c.drop != rank]
        stages.append((cols, True))
    n = next((i for i, (cs, k) in enumerate(stages) if _need(cs, k) <= width), len(stages) - 1)
    shown, compact = stages[n]
    left = [c.head for c in stages[3][0] if n > 3 and c.head not in {s.head for s in shown}]
    note = f" ({', '.join(left)}: left out to fit {width} columns)" if left else ""
    wraps = [c for c in shown if c.wrap]
    if wraps:  # share the room left among the wrapping columns, as wide as their text up to that
        room = width - _frame(len(shown), compact) - sum(_natural(c) for c in shown if not c.wrap)
        least = {id(c): _natural(c, True) for c in wraps}  # each its longest word, the rest shared out
        spare, extra = max(0, room - sum(least.values())), sum(_natural(c) - least[id(c)] for c in wraps) or 1
        widths = {id(c): min(_natural(c), least[id(c)] + spare * (_natural(c) - least[id(c)]) // extra)
                  for c in wraps}
    t = Table(title=title + note if title else None, caption=note.strip(" ()") if note and not title else None,
              caption_justify="left", title_justify="left", box=box.SIMPLE_HEAD if compact
              else box.HEAVY_HEAD, show_edge=not compact, pad_edge=not compact,
              padding=(0, 0, 0, 1) if compact else (0, 1))
    for c in shown:
        t.add_column(c.head, justify="right" if c.right else "left", no_wrap=not c.wrap,
                     overflow="fold" if c.wrap else "ellipsis",
                     width=widths[id(c)] if c.wrap else None, min_width=None if c.wrap else _natural(c))
    for row in zip(*(c.cells for c in shown)):
        t.add_row(*row)
    return t


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def fmt(v) -> str:
    """A swept value as a cell: None is 'off', a list of widths 800x800."""
    if v is None:
        return "off"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return "x".join(map(str, v))
    return str(v)


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def head(key: str) -> str:
    return key.rsplit(".", 1)[-1]  # model.dropout.p_hidden -> p_hidden: narrow tables stay legible


def duration(seconds: float) -> str:
    """An estimate in the unit a person plans with: 1.4 min, 7.2 h, 51 days."""
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 48 * 3600 else f"{seconds / 86400:,.0f} days"


def status(r) -> str:
    """A run's state in a plan: what this invocation does with it."""
    if r.status == "partial":
        if r.held:
            return "stopped (kept; --restart retrains)"
        return f"partial (epoch {r.progress[0]}/{r.cfg.optim.epochs})" if r.progress != (0, 0) else "partial (restarts)"
    if r.status == "diverged":
        return "diverged (kept; --force retrains)" if r.skipped else "diverged"
    return {"completed": "done", "failed": "failed (retried)"}.get(r.status, r.status)


def run_table(name: str, runs, width: int = 80) -> Table:
    """`dropout-lab run`: the dropout model and its control, side by side."""
    ss = [r.summary or {} for r in runs]  # a run held as stopped (no resume point) has no summary
    states = [status(r) if r.held else s["status"] + (" (earlier)" if r.status == "completed" else
                                                       " (kept; --force retrains)") if r.skipped else s["status"]
              for r, s in zip(runs, ss)]
    cols = [Col("model", ["dropout" if r.cfg.has_dropout else "control" for r in runs]),
            Col("status", states, wrap=True),
            *(Col(head, [pct(s.get(key)) for s in ss], right=True, short=short) for head, key, short in (
                ("final test", "final_test_error", "test"), ("best test", "best_test_error", "best"),
                ("final train", "final_train_error", "train"))),
            Col("epochs", [str(s.get("epochs_completed", "-")) for s in ss], right=True),
            Col("seconds", [f"{s['wall_seconds']:.1f}" if "wall_seconds" in s else "-" for s in ss], short="s",
                right=True)]
    return fitted(cols, width, f"{name}: test error")


def plan_tables(sw, runs, stacks, width: int = 80) -> list[Table]:
    """`sweep --dry-run`: every run with its swept values and state, then the stacks they train in."""
    cols = [Col("#", [str(i) for i in range(1, len(runs) + 1)], right=True),
            Col("run id", [r.id for r in runs], short="id", brief=[r.id.rsplit("-", 1)[-1] for r in runs], drop=2),
            *(text_col(head(k), [fmt(r.values[k]) for r in runs]) for k in sw.keys),
            Col("seed", [str(r.cfg.seed) for r in runs]),
            Col("dropout", ["yes" if r.cfg.has_dropout else "no" for r in runs], short="drop", drop=1),
            Col("status", [status(r) for r in runs], wrap=True)]
    t = fitted(cols, width, f"{sw.base.name}: {plural(len(runs), 'run')}")
    if not stacks:
        return [t]
    cs = [s[0].cfg for s in stacks]
    kinds = [({r.cfg.model.dropout.kind for r in s if r.cfg.has_dropout} or {"none"}).pop() for s in stacks]
    s_cols = [Col("stack", [str(n) for n in range(1, len(stacks) + 1)], short="#", right=True),
              Col("K", [str(len(s)) for s in stacks], right=True),
              Col("layers", ["-".join(map(str, c.widths())) for c in cs]),
              Col("act.", [c.model.activation for c in cs]),
              Col("dropout", kinds),
              Col("train n", [str(c.data.train_size or "all") for c in cs], short="n", right=True),
              Col("batch", [str(c.optim.batch_size) for c in cs], right=True, drop=1),
              Col("epochs", [str(c.optim.epochs) for c in cs], right=True),
              Col("from", [f"epoch {s[0].progress[0]}" if s[0].progress != (0, 0) else "start" for s in stacks])]
    return [t, fitted(s_cols, width, f"{plural(len(stacks), 'stack')} (runs of one structure train together, "
                                     "as one set of batched ops)")]


def text_col(name: str, cells: list[str]) -> Col:
    """A swept key's column: its values wrap where they are text with spaces (a label), never otherwise."""
    return Col(name, cells, short=SHORT.get(name), wrap=any(" " in c for c in cells))


# headers of swept keys where the full one does not fit
SHORT = {"activation": "act.", "max_norm": "c", "p_hidden": "p_h", "p_input": "p_in", "momentum_end": "m_end",
         "weight_decay": "L2", "train_size": "n", "width_rule": "rule", "precision": "prec."}


def results_table(sw, runs, width: int = 80) -> Table:
    """The end of a sweep: mean ± std over seeds of each point."""
    groups: dict[tuple, list] = {}
    for r in sorted(runs, key=lambda r: not r.cfg.has_dropout):  # controls last
        groups.setdefault((*(fmt(r.values[k]) for k in sw.keys), r.cfg.has_dropout), []).append(r)

    def ms(xs):
        xs = [100 * x for x in xs if x is not None]
        if not xs:
            return "-"
        return f"{statistics.fmean(xs):.2f} ± {statistics.stdev(xs):.2f}%" if len(xs) > 1 else f"{xs[0]:.2f}%"

    done = [[r.summary for r in members if r.status == "completed"] for members in groups.values()]
    keys = list(groups)
    cols = [*(text_col(head(k), [key[i] for key in keys]) for i, k in enumerate(sw.keys)),
            Col("dropout", ["yes" if key[-1] else "no" for key in keys], short="drop", drop=1),
            Col("seeds", [str(len(d)) for d in done], short="n", right=True),
            Col("test error", [ms([s["final_test_error"] for s in d]) for d in done], short="test", right=True),
            Col("train error", [ms([s["final_train_error"] for s in d]) for d in done], short="train", right=True,
                drop=2),
            Col("status", [", ".join(sorted({r.status for r in m})) for m in groups.values()], wrap=True)]
    return fitted(cols, width, f"{sw.base.name}: final error, mean ± std over seeds")


def shipped_table(found, width: int = 80) -> Table:
    """`dropout-lab sweep` with no config: the sweeps that ship, (path, description, runs) each."""
    cols = [Col("config", [str(p) for p, _, _ in found]),
            Col("runs", [str(n) for _, _, n in found], right=True, wrap=any(isinstance(n, str) for _, _, n in found)),
            Col("what it reproduces", [d for _, d, _ in found], short="what", wrap=True)]
    return fitted(cols, width, "shipped sweeps: dropout-lab sweep FILE [--dry-run] [--scale quick|medium]")


def bench_header(result: dict, width: int = 80) -> str:
    """The bench's context lines, each wrapped at `width` (the README's 80 by default, whatever the terminal):
    a CPU's marketing name alone can run past 60 characters."""
    probe = result.get("gemm_probe", {})
    peaks = "; ".join(f"{p} " + ("-" if v["tflops"] is None else f"{v['tflops']:.3f}") for p, v in probe.items())
    lines = [f"{result['arch']}, batch {result['batch']}, dropout 0.2/0.5, max-norm",
             f"{result['device']}, torch {result['torch']}, {result['date']}",
             f"stacks: {result.get('precision', 'fp32')} ({result.get('gemm_kernels', 'fp32')} GEMMs); "
             "baselines: fp32",
             f"GEMM probe peak, TFLOP/s: {peaks or '-'}",
             f"{result['steps_timed']} steps after {result['warmup_steps']} warm-up, median of "
             f"{plural(result.get('rounds', 1), 'round')}; steps/s: model-steps (K x steps)",
             "vs tuned, vs loader: over the fastest tuned loop (the baseline"
             + (f": optim.SGD {result['baseline_optimizer']}" if "baseline_optimizer" in result else "")
             + ") and the DataLoader loop"]
    for p, f in (result.get("floor") or {}).items():
        if f.get("seconds"):
            lines.append(f"floor, {p}: {f['gemm_seconds'] * 1e3:.2f} ms of GEMMs at the probe's peak + "
                         f"{f['memory_seconds'] * 1e3:.2f} ms for {f['bytes']['total'] / 1e6:.0f} MB at "
                         f"{result['bandwidth_probe']['gb_per_s']:.1f} GB/s = {f['seconds'] * 1e3:.2f} ms a step; "
                         "x floor: a step over it")
    return "\n".join(textwrap.fill(line, width, subsequent_indent="  ", break_on_hyphens=False) for line in lines)


def bench_table(result: dict, width: int = 80) -> Table:
    ts = result["timings"]

    def col(head, f, **kw):
        return Col(head, [f(t) for t in ts], right=True, **kw)

    cols = [Col("trainer", [t["name"] for t in ts]),
            col("steps/s", lambda t: f"{t['steps_per_s_per_model']:,.0f}"),
            col("vs tuned", lambda t: f"{t['ratio_vs_baseline']:.2f}x"),
            col("vs loader", lambda t: f"{t['ratio_vs_dataloader']:.2f}x", drop=3),
            col("TFLOP/s", lambda t: f"{t['tflops']:.3f}"),
            col("of peak", lambda t: "-" if t["peak_fraction"] is None else f"{100 * t['peak_fraction']:.0f}%"),
            col("x floor", lambda t: "-" if t.get("floor_multiple") is None else f"{t['floor_multiple']:.2f}"),
            col("peak MiB", lambda t: "-" if t["peak_memory_mb"] is None else f"{t['peak_memory_mb']:,.0f}",
                short="MiB", drop=1 if all(t["peak_memory_mb"] is None for t in ts) else 2),
            col("1M steps", lambda t: f"{1e6 / t['steps_per_s_per_model'] / 60:,.0f} min")]
    return fitted(cols, width, borders=False)  # no borders: it fits 80 columns as it is


def ridge_table(summary: dict, width: int = 80) -> Table:
    rs = summary["results"]
    cols = [Col("method", [r["label"] for r in rs], wrap=True),
            Col("drop q", [f"{r['q']:g}" for r in rs], short="q", right=True),
            Col("test error", [f"{100 * r['test_error_mean']:.2f} ± {100 * r['test_error_std']:.2f}%" for r in rs],
                short="test", right=True),
            Col("train error", [f"{100 * r['train_error_mean']:.2f}%" for r in rs], short="train", right=True),
            Col("seeds", [str(r["n_seeds"]) for r in rs], short="n", right=True)]
    return fitted(cols, width, "section 9.1 on MNIST softmax regression (short CPU run)")


def features_table(result: dict, width: int = 80) -> Table:
    ms = list(result["models"].items())
    cols = [Col("net", [name.replace("_", " ") for name, _ in ms], wrap=True),
            Col("test error", [f"{100 * m['test_error']:.2f}%" for _, m in ms], short="test", right=True),
            Col("mean activation", [f"{m['mean_activation']:.3f}" for _, m in ms], short="mean", right=True),
            Col("activations = 0", [f"{100 * m['frac_zero']:.1f}%" for _, m in ms], short="= 0", right=True),
            Col("units with mean < 0.1", [f"{100 * m['frac_low_units']:.1f}%" for _, m in ms],
                short="mean < 0.1", right=True)]
    return fitted(cols, width, "first hidden layer on the test images, dropout off")


def control_line(pairs) -> str:
    """`run`'s last line: the dropout net against its control over every seed done, [(seed, drop, ctrl)], with
    the gap against its spread; one seed's gap is shown as what it is."""
    gaps = [100 * (d - c) for _, d, c in pairs]
    if len(pairs) == 1:
        seed, d, c = pairs[0]
        return (f"seed {seed}: dropout {pct(d)} vs control {pct(c)} final test error ({gaps[0]:+.2f} points); one "
                "seed cannot tell a gap from seed noise: --set seed=1 and seed=2 add seeds to this folder")
    mean, sd = statistics.fmean(gaps), statistics.stdev(gaps)
    se = sd / len(gaps) ** 0.5
    ahead = sum(g < 0 for g in gaps)
    verdict = ("dropout beats its control" if mean < -2 * se else
               "dropout does worse than its control" if mean > 2 * se else
               "dropout and its control are within seed noise")
    return (f"{verdict} over {len(pairs)} seeds: gap {mean:+.2f} ± {sd:.2f} points (mean ± std; dropout ahead "
            f"on {ahead} of {len(pairs)}), {'beyond' if abs(mean) > 2 * se else 'within'} twice its standard "
            f"error {se:.2f}")


def mnist_table(path, d, width: int = 80) -> Table:
    """`data info`: each split's size, shape, pixel statistics and label counts."""
    import numpy as np

    splits = (("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test))
    cols = [Col("split", [s for s, _, _ in splits]),
            Col("images", [f"{len(y):,}" for _, _, y in splits], right=True),
            Col("shape", ["x".join(map(str, x.shape)) for _, x, _ in splits], drop=1),
            Col("pixel mean", [f"{x.mean():.4f}" for _, x, _ in splits], short="mean", right=True),
            Col("pixel std", [f"{x.std():.4f}" for _, x, _ in splits], short="std", right=True),
            Col("label counts 0-9", [" ".join(map(str, np.bincount(y, minlength=10))) for _, _, y in splits],
                short="labels 0-9", wrap=True)]
    return fitted(cols, width, f"MNIST ({path}, checksums verified)")
