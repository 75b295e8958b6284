import csv
import os
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

from dropout_lab.config import load
from dropout_lab.store.readback import read_metrics
from dropout_lab.training import data as data_mod

ROOT = Path(__file__).resolve().parent.parent

if os.environ.get("PYTEST_XDIST_WORKER"):  # two test processes on two cores: one torch thread each
    import torch

    torch.set_num_threads(1)


@dataclass
class Ran:
    """What a command left: its exit code and what it printed on each stream (subprocess.CompletedProcess's names)."""
    returncode: int
    stdout: str
    stderr: str


_MNIST: dict = {}  # the verified cache, loaded once for every in-process command (keyed on the file's identity)


def _mnist_once(from_dir=None, log=lambda s: None):
    path = data_mod.cache_dir() / data_mod.CACHE_FILE
    if from_dir is not None:
        return _load_mnist(from_dir, log)
    if not path.is_file():  # fetched and verified here, then kept like a cache that was there
        _load_mnist(log=log)
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _MNIST:
        _MNIST.clear()
        _MNIST[key] = _load_mnist(log=log)
    return _MNIST[key]


_load_mnist = data_mod.load_mnist


def cli(*args, cwd=None, columns=200) -> Ran:
    """`dropout-lab ARGS` in this process, as a user's shell would run it with its output piped (as into a file or
    a CI log) at `columns` characters: the same argv, working folder, console width and exit code, and a traceback
    on stderr with exit 1 for an exception the command let through. The real process boundary, where it is the
    point (signals, the folder lock, worker processes, Ray, the installed entry point), is `spawn`'s."""
    from typer.testing import CliRunner

    from dropout_lab import cli as cli_mod

    argv = [str(a) for a in args]
    consoles = (cli_mod.out_console, cli_mod.err_console)
    saved = (sys.argv, os.getcwd(), [c._width for c in consoles], data_mod.load_mnist)
    sys.argv = [str(ROOT / "dropout_lab" / "__main__.py"), *argv]  # as `python -m dropout_lab ARGS` sets it
    os.chdir(cwd or ROOT)
    for c in consoles:
        c.width = columns
    data_mod.load_mnist = _mnist_once
    try:
        res = CliRunner().invoke(cli_mod.app, argv, env={"COLUMNS": str(columns)}, prog_name="dropout-lab")
    finally:
        sys.argv = saved[0]
        os.chdir(saved[1])
        for c, w in zip(consoles, saved[2]):
            c._width = w
        data_mod.load_mnist = saved[3]
    code, err = res.exit_code, res.stderr
    if res.exception is not None and not isinstance(res.exception, SystemExit):  # as the interpreter reports it
        err += "".join(traceback.format_exception(res.exception))
        code = 1
    return Ran(code, res.stdout, err)


def spawn(*args, cwd=None, timeout=600, columns=200) -> subprocess.CompletedProcess:
    """`python -m dropout_lab ARGS` in a new interpreter, its output piped at `columns` characters."""
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "dropout_lab", *map(str, args)], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def entry_point() -> str:
    """The installed `dropout-lab` script of this interpreter's environment."""
    script = Path(sys.executable).parent / "dropout-lab"
    return str(script) if script.exists() else shutil.which("dropout-lab")


def tree_bytes(root, checkpoints=True):
    """Every file under root by its path, as bytes, the folder lock and temp files aside; checkpoints=False leaves
    checkpoints out too: what git sees of a results folder."""
    def kept(p):
        return p.is_file() and p.name != ".lock" and not p.name.endswith(".tmp") and (
            checkpoints or not p.name.startswith("checkpoint"))
    return {p.relative_to(root): p.read_bytes() for p in sorted(Path(root).rglob("*")) if kept(p)}


def index(folder):
    """A sweep folder's index.csv as rows of strings."""
    with open(folder / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


def curves(run_dir):
    """metrics.csv without the wall-clock column: what must match exactly across interruptions and retrains."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(run_dir, raw=True)]


def tiny_config(*overrides):
    """A small spiral config: 2 hidden layers, momentum SGD with the paper's rule and max-norm."""
    base = ["data.dataset=spiral", "model.hidden=[32,32]", "model.init_std=null", "optim.epochs=4",
            "optim.lr=0.1", "optim.lr_decay=0.95", "optim.momentum_ramp_epochs=3", "optim.max_norm=2.0"]
    return load(None, [*base, *overrides])


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST through the project's fetch code; skipped where no source is reachable."""
    try:
        return _mnist_once()
    except data_mod.DataError as e:
        pytest.skip(f"MNIST not fetchable here: {e}")
