"""The `dropout-lab` command line. Exit codes: 0 all completed, 1 a run failed or diverged, 2 bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from . import data as data_mod
from .config import ConfigError, load, validate

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train MLPs on MNIST with and without dropout, and see what dropout does.")
data_app = typer.Typer(no_args_is_help=True, help="Fetch, verify and describe MNIST.")
app.add_typer(data_app, name="data")

out_console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int) -> None:
    """One line on stderr and a non-zero exit: the contract for bad input."""
    err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


@app.command()
def run(
    config: Path = typer.Argument(..., help="YAML config, e.g. configs/mnist.yaml"),
    set_: list[str] = typer.Option([], "--set", help="override a key: --set optim.epochs=3 (value parsed as YAML)"),
    out: Path = typer.Option(Path("results"), "--out", help="results root; runs go to OUT/<name>/<run_id>/"),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda (overrides the config)"),
    force: bool = typer.Option(False, "--force", help="retrain runs that already completed"),
) -> None:
    """Train the config's dropout model and (with baseline: true) its no-dropout control, as one stack."""
    from .runner import execute, load_datasets
    from .train import resolve_device

    try:
        cfg = load(config, set_)
        if device is not None:
            cfg = validate({**cfg.model_dump(), "device": device})
        try:
            dev = resolve_device(cfg.device)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        runs = [cfg.run_config()]
        if cfg.baseline and cfg.control().run_id() != runs[0].run_id():
            runs.append(cfg.control())
        datasets = load_datasets(runs, log=lambda s: err_console.print(f"[dim]{s}[/dim]"))
    except ConfigError as e:
        fail(str(e), 2)
    except data_mod.DataError as e:
        fail(str(e), 1)

    err_console.print(f"[bold]{cfg.name}[/bold]: {len(runs)} model(s) on {dev}, "
                      f"{cfg.optim.epochs} epochs, results in {out / cfg.name}/")
    try:
        outcomes = execute(runs, datasets, dev, out / cfg.name, force=force, console=err_console)
    except KeyboardInterrupt:
        fail("interrupted: finished runs are kept; unfinished ones have no summary.json and will be retrained", 130)

    table = Table(title=f"{cfg.name}: test error" + (" (MNIST)" if cfg.data.dataset == "mnist" else ""))
    for col in ("model", "status", "final test", "best test", "final train", "epochs", "seconds"):
        table.add_column(col, justify="left" if col in ("model", "status") else "right")
    for o in outcomes:
        s = o.summary
        status = s["status"] + (" (earlier)" if o.skipped else "")
        table.add_row("dropout" if s.get("dropout") else "control", status, pct(s["final_test_error"]),
                      pct(s["best_test_error"]), pct(s["final_train_error"]), str(s["epochs_completed"]),
                      f"{s['wall_seconds']:.1f}")
    out_console.print(table)
    for o in outcomes:
        out_console.print(f"  {'dropout' if o.summary.get('dropout') else 'control'}: {o.dir}", highlight=False)
    if len(outcomes) == 2 and all(o.summary["status"] == "completed" for o in outcomes):
        drop, ctrl = (o.summary["final_test_error"] for o in outcomes)
        verdict = "beats" if drop < ctrl else "does not beat"
        out_console.print(f"dropout {verdict} its control: {pct(drop)} vs {pct(ctrl)} final test error "
                          f"({100 * (drop - ctrl):+.2f} percentage points)")
    bad = [o for o in outcomes if o.summary["status"] != "completed"]
    if bad:
        for o in bad:
            err_console.print(f"{o.dir.name}: {o.summary['status']} {o.summary.get('error', '')}", markup=False)
        raise typer.Exit(1)


@app.command()
def plot(
    results: list[Path] = typer.Argument(None, help="results folders (default: every folder under results/)"),
) -> None:
    """Plot learning curves of every run in each results folder to <folder>/plots/*.png and .svg."""
    from .plot import plot_folder
    from .results import run_dirs

    folders = results or sorted(p for p in Path("results").glob("*") if p.is_dir() and run_dirs(p))
    if not folders:
        fail("no results folders to plot (run `dropout-lab run CONFIG` first)", 2)
    for folder in folders:
        if not folder.is_dir() or not run_dirs(folder):
            fail(f"results folder '{folder}' has no runs", 2)
        for path in plot_folder(folder):
            out_console.print(f"wrote {path}")


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
    import numpy as np

    path = data_mod.cache_dir() / data_mod.CACHE_FILE
    if not path.is_file():
        fail(f"no MNIST cache at {path}; run `dropout-lab data fetch`", 1)
    try:
        d = data_mod.load_mnist()
    except data_mod.DataError as e:
        fail(str(e), 1)
    table = Table(title=f"MNIST ({path}, checksums verified)")
    for col in ("split", "images", "shape", "pixel mean", "pixel std", "label counts 0-9"):
        table.add_column(col)
    for split, x, y in (("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test)):
        table.add_row(split, str(len(y)), "x".join(map(str, x.shape)), f"{x.mean():.4f}", f"{x.std():.4f}",
                      " ".join(map(str, np.bincount(y, minlength=10))))
    out_console.print(table)


def main() -> None:  # pragma: no cover
    sys.exit(app())
