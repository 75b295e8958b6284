"""The `dropout-lab` command line.

Exit codes: 0 all completed; 1 a run failed or diverged, in this invocation or kept from an earlier one (a
diverged run is kept until --force, and the results still lack it), or another process holds the results
folder; 2 bad input, refused before any work (campaign.preflight, guard.py), a damaged results file for
`plot` included (`run` and `sweep` retrain a run whose files are damaged, and say so); 130 interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from . import tables
from .config import ConfigError
from .training import data as data_mod

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train MLPs on MNIST with and without dropout, and see what dropout does.")
data_app = typer.Typer(no_args_is_help=True, help="Fetch, verify and describe MNIST.")
app.add_typer(data_app, name="data")
beyond_app = typer.Typer(no_args_is_help=True, help="Small measured experiments beyond the paper's tables.")
app.add_typer(beyond_app, name="beyond")

out_console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int) -> None:
    """One line on stderr and a non-zero exit: the contract for bad input."""
    err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


SCALE_HELP = ("full (as written) | quick (minutes: widths /8, 2,000 updates, 10k images) | medium (hours: "
              "widths /4, 20,000 updates, 10k images; Figure 9 and Table 2 differ); every run shrunk and "
              "labelled, see scale.py")
PRECISION_HELP = "fp32 | bf16 | tf32 (CUDA only); overrides the config (step.py says what each computes)"


def _resolve(cfg_device: str, device: str | None, cfgs=(), precision: str | None = None):
    """The device, and the runs' precisions checked against it; both refused before any work."""
    from .nets.step import precision_note, precision_problem
    from .training.train import resolve_device

    try:
        dev = resolve_device(device or cfg_device)
    except ValueError as e:
        raise ConfigError(str(e).replace("device =", "--device =" if device else "device =")) from None
    problem = precision_problem(cfgs, dev, "--precision" if precision else "precision")
    if problem:
        raise ConfigError(problem)
    if note := precision_note(cfgs, dev):
        err_console.print(f"note: {note}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    return dev


def _writable(path: Path, option: str, folder: bool = True) -> None:
    """A destination refused before any work, so that nothing is computed only to be lost."""
    from .store.guard import check_destination

    try:
        check_destination(path, option, folder)
    except ValueError as e:
        fail(str(e), 2)


def _log(s: str) -> None:
    err_console.print(f"[dim]{s}[/dim]")


@app.command()
def run(
    config: Path = typer.Argument(..., help="YAML config, e.g. configs/mnist.yaml"),
    set_: list[str] = typer.Option([], "--set", help="override a key: --set optim.epochs=3 (value parsed as YAML)"),
    out: Path = typer.Option(Path("results"), "--out", help="results root, a folder: runs go to "
                                                            "OUT/<name>/<run_id>/"),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N (overrides the config)"),
    precision: str | None = typer.Option(None, "--precision", help=PRECISION_HELP),
    force: bool = typer.Option(False, "--force", help="retrain runs that already completed or diverged"),
    restart: bool = typer.Option(False, "--restart", help="train runs that stopped with no checkpoint to resume "
                                                        "from again, from scratch; their curves so far move to "
                                                        "RUN/earlier/N/ (without it such runs are kept as they are)"),
    scale: str = typer.Option("full", "--scale", help=SCALE_HELP),
) -> None:
    """Train the config's dropout model and (with baseline: true) its no-dropout control, as one stack.

    A config's sweep: section is ignored here; `dropout-lab sweep CONFIG` runs it.
    """
    from .store.results import FolderBusy
    from .sweeps.campaign import preflight, seed_pairs, train_run
    from .sweeps.runner import load_datasets
    from .sweeps.sweep import load_sweep

    try:
        sw = load_sweep(config, [*set_, *([f"precision={precision}"] if precision else [])], use_sweep=False,
                        scale=scale)
        cfg, root = sw.base, out / sw.base.name
        dev = _resolve(cfg.device, device, sw.runs, precision)
        for note in preflight(sw.runs, root, config, dev):
            _warn(note)
        datasets = load_datasets(sw.runs, log=_log)
    except ConfigError as e:
        fail(str(e), 2)
    except data_mod.DataError as e:
        fail(str(e), 1)
    err_console.print(f"[bold]{cfg.name}[/bold]: {len(sw.runs)} model(s) on {dev} in {cfg.precision}, "
                      f"{tables.plural(cfg.optim.epochs, 'epoch')}, results in {root}/")
    try:
        runs = train_run(sw, root, config, dev, datasets, force, err_console, _notes, _log, restart)
    except FolderBusy as e:
        fail(str(e), 1)
    except KeyboardInterrupt:
        fail("interrupted: finished runs are kept, unfinished ones are checkpointed; the same command resumes", 130)

    name = cfg.name + (" (MNIST)" if cfg.data.dataset == "mnist" else "")
    out_console.print(tables.run_table(name, runs, out_console.width))
    for r in runs:
        out_console.print(f"  {'dropout' if r.cfg.has_dropout else 'control'}: {r.dir}", highlight=False)
    if len(runs) == 2 and all(r.status == "completed" for r in runs) and (pairs := seed_pairs(root, sw.runs[0])):
        out_console.print(tables.control_line(pairs), highlight=False)
    _exit_on_failures(runs)


def _exit_on_failures(runs) -> None:
    bad = [r for r in runs if r.status in ("failed", "diverged")]
    held = [r for r in runs if r.held]
    if bad:
        err_console.print(f"{len(bad)} run(s) did not complete:", style="red")
        for r in bad:
            kept = " (kept from an earlier invocation; --force retrains)" if r.skipped else ""
            err_console.print(f"  {r.id}: {r.status}{kept}: {(r.summary or {}).get('error', '')}", markup=False)
    if held:  # the results still lack them: say so, and how to train them, rather than exit as if done
        err_console.print(f"{len(held)} run(s) stopped earlier with no checkpoint to resume from, kept as they are "
                          "and not trained: --restart trains them from scratch (their curves move to earlier/)",
                          style="yellow", markup=False, highlight=False, soft_wrap=True)
    if bad or held:
        raise typer.Exit(1)


def _warn(line: str) -> None:
    err_console.print(f"warning: {line}", style="yellow", markup=False, highlight=False, soft_wrap=True)


def _notes(runs) -> None:
    """survey()'s line per run with a damaged file or an unusable checkpoint: what was found, what is done."""
    for r in (r for r in runs if r.note):
        _warn(r.note)


@app.command()
def sweep(
    config: Path | None = typer.Argument(None, help="YAML config with a sweep: section; none lists configs/sweeps/"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan (runs, stacks, cost) and train nothing"),
    set_: list[str] = typer.Option([], "--set", help="override a base key before expansion: --set optim.epochs=3"),
    grid: list[str] = typer.Option([], "--grid", help="add an axis: --grid model.dropout.p_hidden=0.3,0.5"),
    only: list[str] = typer.Option([], "--only", help="train only the runs with KEY=VALUE, e.g. --only seed=0 or "
                                                      "--only label=\"dropout ReLU 3x1024\"; repeat a key for "
                                                      "several values; the index still lists every run"),
    out: Path = typer.Option(Path("results"), "--out", help="results root, a folder: runs go to "
                                                            "OUT/<name>/<run_id>/"),
    backend: str = typer.Option("local", "--backend", help="local (stacks in this process) | ray (a task each)"),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (default: a local instance)"),
    gpus_per_stack: float = typer.Option(0.0, "--gpus-per-stack", help="GPUs a Ray task reserves; 0.25 shares 4/GPU"),
    max_stack: int | None = typer.Option(None, "--max-stack", help="at most K models per stack (default: memory)"),
    workers: int | None = typer.Option(None, "--workers", help="local backend: train this many stacks at a time, a "
                                                            "CPU core each (default: one per core; 1 on a GPU)"),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N (overrides the config)"),
    precision: str | None = typer.Option(None, "--precision", help=PRECISION_HELP),
    force: bool = typer.Option(False, "--force", help="retrain runs that already completed or diverged"),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="stop at the first failed or diverged run"),
    restart: bool = typer.Option(False, "--restart", help="train runs that stopped with no checkpoint to resume "
                                                        "from again, from scratch; their curves so far move to "
                                                        "RUN/earlier/N/ (without it such runs are kept as they are)"),
    keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints", help="keep checkpoint.pt of completed runs"),
    scale: str = typer.Option("full", "--scale", help=SCALE_HELP),
) -> None:
    """Train every run of a sweep, packed into stacks; skip finished runs, resume partial ones."""
    from .store.results import FolderBusy
    from .sweeps.campaign import Invocation, check_options, preflight
    from .sweeps.local import default_workers
    from .sweeps.runner import load_datasets
    from .sweeps.stacks import workers_that_fit
    from .sweeps.sweep import load_sweep, select, shipped

    if config is None:
        found = [x for folder in (Path("configs/sweeps"), Path("configs/paper")) for x in shipped(folder)]
        out_console.print(tables.shipped_table(found, out_console.width))
        return
    try:
        check_options(backend, max_stack, workers, gpus_per_stack)
        sw = load_sweep(config, [*set_, *([f"precision={precision}"] if precision else [])], grid, scale=scale)
        keep = select(sw, only)
        dev = _resolve(sw.base.device, device, sw.runs, precision)
        if workers is not None and workers > 1 and dev.type != "cpu":
            raise ConfigError(f"--workers = {workers}: side-by-side stacks are for a CPU, a core each; on {dev} "
                              "one stack at a time fills the device")
        # by default as many side by side as there are cores and as fit in memory
        workers = workers or (workers_that_fit(sw.runs, dev, default_workers(dev)) if backend == "local" else 1)
        for note in preflight(sw.runs, out / sw.base.name, config, dev, max_stack, workers):
            _warn(note)
        datasets = load_datasets(sw.runs, log=_log)
    except ConfigError as e:
        fail(str(e), 2)
    except data_mod.DataError as e:
        fail(str(e), 1)

    inv = Invocation(sw, keep, out / sw.base.name, dev, datasets, backend, workers, max_stack, force, restart)
    if dry_run:
        inv.dry_run(out_console, _notes)
        return
    try:
        runs = inv.train(str(config), err_console, _notes, address, gpus_per_stack, keep_checkpoints, fail_fast)
    except ConfigError as e:
        fail(str(e), 2)
    except FolderBusy as e:
        fail(str(e), 1)
    except KeyboardInterrupt:
        fail("interrupted: finished runs are kept, unfinished ones are checkpointed; the same command resumes", 130)
    out_console.print(tables.results_table(sw, runs, out_console.width))
    out_console.print(f"index: {inv.root / 'index.csv'}   plots: dropout-lab plot {inv.root}", highlight=False)
    _exit_on_failures(runs)


@app.command()
def plot(
    results: list[Path] = typer.Argument(None, help="results folders (default: every folder under results/ "
                                                    "whose runs' files changed since it was last plotted)"),
    x: str | None = typer.Option(None, "--x", help="swept key on the x-axis of a sweep plot, e.g. optim.max_norm"),
    y: str | None = typer.Option(None, "--y", help="test_error | train_error | best_test_error (default: both "
                                                  "final errors)"),
    watch: float | None = typer.Option(None, "--watch", help="SECONDS: check the folders this often and redraw "
                                                            "those whose runs changed, until Ctrl-C: live curves "
                                                            "of a sweep that trains"),
) -> None:
    """Plot learning curves, and for a sweep its final errors against a swept key and heatmaps.

    Files go to <folder>/plots/*.png and .svg. Runs that are still training are drawn as far as they have
    gone (a folder's plots can be drawn while its sweep trains; --watch keeps them current).
    """
    from .plots.plot import choose_folders
    from .store.guard import check_destination, check_files
    from .store.readback import listed_runs, run_dirs

    if watch is not None and not 0 < watch <= 86400:
        fail(f"--watch = {watch:g}: must be a number of seconds > 0, at most a day (86400)", 2)
    try:
        folders, current = choose_folders(list(results or []), x, y)
        for folder in [*folders, *current]:
            check_files(folder, sorted({*run_dirs(folder), *listed_runs(folder)}), write=False)
            check_destination(folder / "plots", f"results folder '{folder}': its plots/")
    except ValueError as e:
        fail(str(e), 2)
    for f in current:
        out_console.print(f"{f}: plots up to date", highlight=False)
    damaged = _plot(folders, x, y)
    if watch is None:
        if damaged:
            raise typer.Exit(2)
        return
    import time

    from .plots.plot import stale

    watched = list(results or []) or sorted({*folders, *current})
    out_console.print(f"watching {', '.join(map(str, watched))}: redrawn when their runs change, checked every "
                      f"{watch:g} s; Ctrl-C stops", highlight=False)
    try:
        while True:
            time.sleep(watch)
            _plot([f for f in watched if stale(f)], x, y)
    except KeyboardInterrupt:
        out_console.print("stopped watching", highlight=False)


def _plot(folders: list[Path], x: str | None, y: str | None) -> bool:
    """Draw each folder's plots; True where a folder was left undrawn for a damaged file."""
    from .plots.plot import plot_folder
    from .store.readback import Damaged, check_folder

    damaged = False
    for folder in folders:
        try:  # nothing is drawn from a damaged file: one line for the folder, the others are still plotted
            check_folder(folder)
        except Damaged as e:
            err_console.print(f"error: {e}: run the `dropout-lab sweep` (or `run`) command that wrote '{folder}' "
                              "again to retrain that run, then plot", markup=False, highlight=False, soft_wrap=True)
            damaged = True
            continue
        try:
            paths = plot_folder(folder, x, y, note=_note)
        except ValueError as e:
            fail(str(e), 2)
        for path in paths:
            out_console.print(f"wrote {path}", highlight=False)
    return damaged


def _note(line: str) -> None:
    err_console.print(f"note: {line}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def report(
    results: list[Path] = typer.Argument(None, help="results folders to read (default: results/, where the paper "
                                                    "configs write)"),
    out: Path | None = typer.Option(None, "--out", help="the Markdown report to write, its figures next to it in "
                                                       "report/ (default: REPORT.md in the one folder reported, "
                                                       "results/REPORT.md for results/)"),
) -> None:
    """The paper's MNIST tables and claims next to ours, from finished and stopped runs; trains nothing."""
    from .report.report import build
    from .store.results import command_line

    roots = list(results or [Path("results")])
    for r in roots:
        if not r.is_dir():
            fail(f"results folder '{r}' " + ("is a file, not a folder" if r.exists() else "not found"), 2)
    if out is None:  # a report of other folders never replaces the committed one: it goes next to them
        if len(roots) > 1:
            fail(f"--out is needed to report {len(roots)} folders together (say where REPORT.md goes)", 2)
        out = roots[0] / "REPORT.md"
    if out.suffix != ".md":
        fail(f"--out = {out}: must be a .md file (its figures go next to it, in report/)", 2)
    _writable(out, "--out", folder=False)
    _writable(out.parent / "report", "--out", folder=True)
    try:
        # the command as the README gives it, however it was started: reporting the same results again from
        # `python -m dropout_lab` or `dropout-lab` writes the same bytes
        command = command_line().replace("python -m dropout_lab", "dropout-lab", 1)
        headline = build(roots, out, command, _warn)
    except OSError as e:
        fail(f"--out = {out}: cannot write the report there ({e.strerror})", 1)
    # Markdown as is: a table row wrapped at the terminal's width (or a pipe's 80) is no longer a row
    out_console.print(headline or "no Table 2 results yet", highlight=False, markup=False, soft_wrap=True)
    out_console.print(f"report: {out}", highlight=False)


@app.command("resume-point")
def resume_point(
    results: list[Path] = typer.Argument(..., help="results folders whose unfinished runs get a resume point"),
) -> None:
    """Copy each unfinished run's checkpoint to RUN/resume.pt, the one checkpoint git keeps.

    Checkpoints are git-ignored; commit the resume points, and a run of hours resumes on another machine
    (`sweep` and `run` take the further of a checkpoint and a resume point). Each call replaces a run's
    earlier point; a run removes its own when it completes.
    """
    from .store.guard import check_files
    from .store.readback import run_dirs
    from .store.results import RESUME_POINT, keep_resume_point

    for folder in results:
        if not folder.is_dir():
            fail(f"results folder '{folder}' " + ("is a file, not a folder" if folder.exists() else "not found"), 2)
        try:
            check_files(folder, run_dirs(folder))
        except ValueError as e:
            fail(str(e), 2)
    kept = 0
    for folder in results:
        for d in run_dirs(folder):
            if (d / "summary.json").exists():
                continue
            state = keep_resume_point(d)
            if state is None:
                err_console.print(f"{d}: no checkpoint to keep (it restarts from update 0)", markup=False,
                                  highlight=False, soft_wrap=True)
                continue
            kept += 1
            size = (d / RESUME_POINT).stat().st_size / 1e6
            out_console.print(f"{d / RESUME_POINT}: update {state['step']:,}, epoch {state['epoch']:,}, "
                              f"{size:.1f} MB", highlight=False, soft_wrap=True)
    out_console.print(f"{kept} resume point(s): commit them (git add {' '.join(map(str, results))})" if kept else
                      "no unfinished run with a checkpoint", highlight=False)


@beyond_app.command("ridge")
def beyond_ridge(
    out: Path = typer.Option(Path("results/beyond/ridge"), "--out", help="folder for ridge.csv, summary.json, PNG"),
    quick: bool = typer.Option(False, "--quick", help="a smaller run, well under a minute"),
) -> None:
    """Section 9.1: is dropout just L2? Input dropout vs its ridge penalty on MNIST softmax regression."""
    from .beyond.ridge import experiment
    from .store.results import command_line

    _writable(out, "--out")
    try:
        summary = experiment(out, quick=quick, command=command_line())
    except data_mod.DataError as e:
        fail(str(e), 1)
    out_console.print(tables.ridge_table(summary, out_console.width))
    out_console.print(f"results: {out}", highlight=False)


@beyond_app.command("features")
def beyond_features(
    config: Path = typer.Argument(Path("configs/paper/fig8.yaml"), help="a run config with dropout"),
    set_: list[str] = typer.Option([], "--set", help="override a key: --set optim.epochs=3"),
    out: Path = typer.Option(Path("results/beyond/features"), "--out", help="folder for features.json and PNGs"),
) -> None:
    """Figures 7 and 8: first-layer features and hidden-unit sparsity, with and without dropout."""
    from .beyond.features import experiment
    from .store.results import command_line

    _writable(out, "--out")
    try:
        result = experiment(config, out, set_, command=command_line())
    except ConfigError as e:
        fail(str(e), 2)
    except data_mod.DataError as e:
        fail(str(e), 1)
    except ValueError as e:
        fail(str(e), 2)
    out_console.print(tables.features_table(result, out_console.width))
    out_console.print(f"results: {out}", highlight=False)


@beyond_app.command("conv")
def beyond_conv(
    config: Path = typer.Argument(Path("configs/beyond/conv.yaml"), help="a `beyond conv` config (config.ConvConfig)"),
    set_: list[str] = typer.Option([], "--set", help="override a key: --set updates=500"),
    out: Path | None = typer.Option(None, "--out", help="folder for the runs, summary.json and PNGs "
                                                        "(default results/beyond/NAME)"),
) -> None:
    """Does dropout work on conv layers? A small conv net on MNIST subsets, four dropout variants, 3 seeds."""
    from .beyond.conv import experiment
    from .config import load_conv
    from .report.verdicts import verdict_conv, verdict_line
    from .store.results import command_line

    try:
        cfg = load_conv(config, set_)
    except ConfigError as e:
        fail(str(e), 2)
    out = out or Path("results/beyond") / cfg.name
    _writable(out, "--out")
    try:
        summary = experiment(cfg, out, command=command_line(),
                             log=lambda line: out_console.print(line, highlight=False, soft_wrap=True))
    except data_mod.DataError as e:
        fail(str(e), 1)
    except ValueError as e:
        fail(str(e), 2)
    v, text = verdict_conv(summary["table"])
    out_console.print(f"claim \"{summary['claim']}\": {verdict_line(v).strip('*')}: {text}", highlight=False,
                      soft_wrap=True)
    out_console.print(f"results: {out}", highlight=False)


@app.command()
def bench(
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    arch: str = typer.Option("784-1024-1024-2048-10", "--arch", help="layer widths, input to output"),
    stack: str = typer.Option("1,8,32", "--stack", help="stack sizes K to time, comma-separated"),
    steps: int = typer.Option(200, "--steps", help="timed steps per measurement (after 20 warm-up steps)"),
    rounds: int = typer.Option(1, "--rounds", help="time every trainer this many times, in turn; report medians"),
    json_path: Path | None = typer.Option(None, "--json", "--out", help="also write the result as JSON to this "
                                                                     "file (--out, as report names its file)"),
    precision: str = typer.Option("fp32", "--precision", help="of the stacks: fp32 | bf16 | tf32 (CUDA only); "
                                                             "the baselines are fp32"),
    workers: int = typer.Option(1, "--workers", help="CPU: also time each stack size as this many stacks side by "
                                                     "side, as sweep --workers trains them"),
) -> None:
    """Time the stacked trainer against two plain PyTorch loops on one device: a tuned one (the baseline:
    data on the device, randperm batches) and a typical one (a DataLoader)."""
    from .speed.bench import benchmark, check_args, write_json

    try:
        dev = _resolve("auto", device)
        ks = check_args(arch, stack, steps, rounds, workers, precision, dev)
    except ConfigError as e:
        fail(str(e), 2)
    if json_path is not None:
        _writable(json_path, "--out" if "--out" in sys.argv else "--json", folder=False)
    err_console.print(f"[dim]timing {arch} on {dev}: a GEMM probe, a bandwidth probe, fp32 baselines (three "
                      f"optim.SGD kinds, a DataLoader), {precision} stacks of {stack}, {steps} steps each, "
                      f"{tables.plural(rounds, 'round')}[/dim]")
    try:
        result = benchmark(arch, ks, dev, steps, precision=precision, rounds=rounds, workers=workers)
    except ValueError as e:
        fail(str(e), 2)
    out_console.print(tables.bench_header(result), highlight=False, markup=False)
    out_console.print(tables.bench_table(result, min(out_console.width, 80)))  # as its header: the README's 80
    if json_path is not None:
        write_json(result, json_path)
        out_console.print(f"wrote {json_path}", highlight=False)


@data_app.command("fetch")
def data_fetch(
    from_dir: Path | None = typer.Option(None, "--from", help="a folder of MNIST IDX files (or torchvision's root)"),
) -> None:
    """Fetch MNIST into the cache, verified by checksum (no-op when the cache verifies)."""
    if from_dir is not None and not from_dir.is_dir():
        fail(f"--from '{from_dir}': not a folder", 2)
    try:
        path = data_mod.fetch(from_dir, log=lambda s: err_console.print(f"[dim]{s}[/dim]"))
    except data_mod.DataError as e:
        fail(str(e), 1)
    out_console.print(f"MNIST verified: {path}")


@data_app.command("info")
def data_info() -> None:
    """Describe the cached MNIST: location, shapes, label counts, pixel statistics, checksums."""
    path = data_mod.cache_dir() / data_mod.CACHE_FILE
    if not path.is_file():
        fail(f"no MNIST cache at {path}; run `dropout-lab data fetch`", 1)
    try:
        d = data_mod.load_mnist()
    except data_mod.DataError as e:
        fail(str(e), 1)
    out_console.print(tables.mnist_table(path, d, out_console.width))


def main() -> None:  # pragma: no cover
    sys.exit(app())
