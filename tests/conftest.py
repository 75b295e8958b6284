import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dropout_lab import data as data_mod
from dropout_lab.config import load
from dropout_lab.readback import read_metrics

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, cwd=None, timeout=600, columns=200):
    """Run `python -m dropout_lab ARGS` as a user would, its output piped (as into a file or a CI log) at
    `columns` characters; returns the CompletedProcess."""
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "dropout_lab", *map(str, args)], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


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
        return data_mod.load_mnist()
    except data_mod.DataError as e:
        pytest.skip(f"MNIST not fetchable here: {e}")
