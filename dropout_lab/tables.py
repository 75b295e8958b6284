"""The tables the command line prints, built from its results: each function returns rich Tables, cli.py
prints them. Numbers are percentages on screen (fractions in files); narrow terminals keep them whole."""

from __future__ import annotations

import statistics

from rich import box
from rich.table import Table


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
        return f"partial (epoch {r.progress[0]}/{r.cfg.optim.epochs})" if r.progress != (0, 0) else "partial (restarts)"
    if r.status == "diverged":
        return "diverged (kept; --force retrains)" if r.skipped else "diverged"
    return {"completed": "done", "failed": "failed (retried)"}.get(r.status, r.status)


def run_table(name: str, runs) -> Table:
    """`dropout-lab run`: the dropout model and its control, side by side."""
    table = Table(title=f"{name}: test error")
    for col in ("model", "status", "final test", "best test", "final train", "epochs", "seconds"):
        table.add_column(col, justify="left" if col in ("model", "status") else "right")
    for r in runs:
        s = r.summary
        state = s["status"] + (" (earlier)" if r.status == "completed" else " (kept; --force retrains)") \
            if r.skipped else s["status"]
        table.add_row("dropout" if s.get("dropout") else "control", state, pct(s["final_test_error"]),
                      pct(s["best_test_error"]), pct(s["final_train_error"]), str(s["epochs_completed"]),
                      f"{s['wall_seconds']:.1f}")
    return table


def plan_tables(sw, runs, stacks) -> list[Table]:
    """`sweep --dry-run`: every run with its swept values and state, then the stacks they train in."""
    t = Table(title=f"{sw.base.name}: {plural(len(runs), 'run')}", title_justify="left")
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("run id", overflow="fold")  # the one column that wraps on a narrow terminal
    for col in (*map(head, sw.keys), "seed", "dropout", "status"):
        t.add_column(col, no_wrap=True)
    for i, r in enumerate(runs, 1):
        t.add_row(str(i), r.id, *(fmt(r.values[k]) for k in sw.keys), str(r.cfg.seed),
                  "yes" if r.cfg.has_dropout else "no", status(r))
    if not stacks:
        return [t]
    s_t = Table(title=f"{plural(len(stacks), 'stack')} (runs of one structure train together, as one set of "
                      "batched ops)", title_justify="left")
    for col in ("stack", "K", "layers", "act.", "dropout", "train n", "batch", "epochs", "from"):
        s_t.add_column(col, no_wrap=True)
    for n, s in enumerate(stacks, 1):
        c = s[0].cfg
        kinds = {r.cfg.model.dropout.kind for r in s if r.cfg.has_dropout} or {"none"}
        s_t.add_row(str(n), str(len(s)), "-".join(map(str, c.widths())), c.model.activation, kinds.pop(),
                    str(c.data.train_size or "all"), str(c.optim.batch_size), str(c.optim.epochs),
                    f"epoch {s[0].progress[0]}" if s[0].progress != (0, 0) else "start")
    return [t, s_t]


def results_table(sw, runs) -> Table:
    """The end of a sweep: mean ± std over seeds of each point."""
    groups: dict[tuple, list] = {}
    for r in sorted(runs, key=lambda r: not r.cfg.has_dropout):  # controls last
        groups.setdefault((*(fmt(r.values[k]) for k in sw.keys), r.cfg.has_dropout), []).append(r)
    t = Table(title=f"{sw.base.name}: final error, mean ± std over seeds", title_justify="left")
    heads = [*map(head, sw.keys), "dropout"]
    for col in (*heads, "seeds", "test error", "train error", "status"):
        t.add_column(col, justify="left" if col in (*heads, "status") else "right")

    def ms(xs):
        xs = [100 * x for x in xs if x is not None]
        if not xs:
            return "-"
        return f"{statistics.fmean(xs):.2f} ± {statistics.pstdev(xs):.2f}%" if len(xs) > 1 else f"{xs[0]:.2f}%"

    for key, members in groups.items():
        done = [r.summary for r in members if r.status == "completed"]
        t.add_row(*key[:-1], "yes" if key[-1] else "no", str(len(done)),
                  ms([s["final_test_error"] for s in done]), ms([s["final_train_error"] for s in done]),
                  ", ".join(sorted({r.status for r in members})))
    return t


def shipped_table(found) -> Table:
    """`dropout-lab sweep` with no config: the sweeps that ship, (path, description, runs) each."""
    t = Table(title="shipped sweeps: dropout-lab sweep FILE [--dry-run] [--scale quick]", title_justify="left")
    for col in ("config", "runs", "what it reproduces"):
        t.add_column(col, overflow="fold")
    for path, description, count in found:
        t.add_row(str(path), str(count), description)
    return t


def bench_header(result: dict) -> str:
    probe = result.get("gemm_probe", {})
    peaks = "; ".join(f"{p} " + ("-" if v["tflops"] is None else f"{v['tflops']:.3f}") for p, v in probe.items())
    return (f"{result['arch']}, batch {result['batch']}, dropout 0.2/0.5, max-norm\n"
            f"{result['device']}, torch {result['torch']}, {result['date']}\n"
            f"stacks: {result.get('precision', 'fp32')} ({result.get('gemm_kernels', 'fp32')} GEMMs); "
            f"baselines: fp32\nGEMM probe peak, TFLOP/s: {peaks or '-'}\n"
            f"{result['steps_timed']} steps after {result['warmup_steps']} warm-up, median of "
            f"{plural(result.get('rounds', 1), 'round')}; steps/s: model-steps (K x steps)\n"
            "vs tuned, vs loader: over the tuned loop (the baseline) and the DataLoader loop")


def bench_table(result: dict) -> Table:
    # no borders and short headers: it fits 80 columns
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 0, 0, 1))
    for col in ("trainer", "steps/s", "vs tuned", "vs loader", "TFLOP/s", "of peak", "peak MiB", "1M steps"):
        table.add_column(col, justify="left" if col == "trainer" else "right")
    for t in result["timings"]:
        table.add_row(t["name"], f"{t['steps_per_s_per_model']:,.0f}", f"{t['ratio_vs_baseline']:.2f}x",
                      f"{t['ratio_vs_dataloader']:.2f}x", f"{t['tflops']:.3f}",
                      "-" if t["peak_fraction"] is None else f"{100 * t['peak_fraction']:.0f}%",
                      "-" if t["peak_memory_mb"] is None else f"{t['peak_memory_mb']:,.0f}",
                      f"{1e6 / t['steps_per_s_per_model'] / 60:,.0f} min")
    return table


def ridge_table(summary: dict) -> Table:
    t = Table(title="section 9.1 on MNIST softmax regression (short CPU run)")
    for col in ("method", "drop q", "test error", "train error", "seeds"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for r in summary["results"]:
        t.add_row(r["label"], f"{r['q']:g}", f"{100 * r['test_error_mean']:.2f} ± {100 * r['test_error_std']:.2f}%",
                  f"{100 * r['train_error_mean']:.2f}%", str(r["n_seeds"]))
    return t


def features_table(result: dict) -> Table:
    t = Table(title="first hidden layer on the test images, dropout off")
    for col in ("net", "test error", "mean activation", "activations = 0", "units with mean < 0.1"):
        t.add_column(col, justify="left" if col == "net" else "right")
    for name, m in result["models"].items():
        t.add_row(name.replace("_", " "), f"{100 * m['test_error']:.2f}%", f"{m['mean_activation']:.3f}",
                  f"{100 * m['frac_zero']:.1f}%", f"{100 * m['frac_low_units']:.1f}%")
    return t


def control_line(drop: float, ctrl: float) -> str:
    """`run`'s last line: the dropout net against its control."""
    verdict = "beats" if drop < ctrl else "does not beat"
    return (f"dropout {verdict} its control: {pct(drop)} vs {pct(ctrl)} final test error "
            f"({100 * (drop - ctrl):+.2f} percentage points)")


def mnist_table(path, d) -> Table:
    """`data info`: each split's size, shape, pixel statistics and label counts."""
    import numpy as np

    table = Table(title=f"MNIST ({path}, checksums verified)")
    for col in ("split", "images", "shape", "pixel mean", "pixel std", "label counts 0-9"):
        table.add_column(col)
    for split, x, y in (("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test)):
        table.add_row(split, str(len(y)), "x".join(map(str, x.shape)), f"{x.mean():.4f}", f"{x.std():.4f}",
                      " ".join(map(str, np.bincount(y, minlength=10))))
    return table
