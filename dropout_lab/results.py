"""The results layout: one folder per run, written so that a crash never corrupts a finished run.

<out>/<name>/<run_id>/
    config.yaml    the resolved config
    env.json       versions, device, git commit, command line
    metrics.csv    one row per epoch, appended and flushed as training goes
    summary.json   written last, atomically; its presence with status 'completed' marks a finished run
Errors are fractions in files and percentages on screen.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import __version__
from .config import Config, to_yaml

METRIC_COLUMNS = ["epoch", "step", "lr", "momentum", "train_loss", "train_error", "test_loss", "test_error",
                  "val_error", "seconds"]


def atomic_write(path: Path, text: str) -> None:
    """Write via a temp file in the same folder and rename: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are for reading
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_summary(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if not sha:
            return None
        # changed results are not changed code: only the rest of the tree decides "-dirty"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                               cwd=root, capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
           f"{torch.get_num_threads()} torch threads)"


def env_info(device: torch.device) -> dict:
    import numpy

    argv = [Path(sys.argv[0]).name, *sys.argv[1:]]  # no machine path in the record
    return {
        "dropout_lab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "device": str(device),
        "device_name": device_name(device),
        "cuda": torch.version.cuda,
        "git_commit": git_commit(),
        "command": shlex.join(argv),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


class RunWriter:
    """Opens a run folder fresh (any partial leftovers are replaced) and writes it as training goes."""

    def __init__(self, run_dir: Path, cfg: Config, env: dict):
        self.dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "summary.json").unlink(missing_ok=True)  # not finished until written again
        atomic_write(run_dir / "config.yaml", to_yaml(cfg))
        atomic_write(run_dir / "env.json", json.dumps(env, indent=2) + "\n")
        self.cfg = cfg
        self._f = open(run_dir / "metrics.csv", "w", newline="")
        self._csv = csv.DictWriter(self._f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        self._csv.writeheader()
        self._f.flush()
        self.rows: list[dict] = []

    def add(self, row: dict) -> None:
        if not self.cfg.data.validation_size:
            row = {**row, "val_error": ""}
        self._csv.writerow(row)
        self._f.flush()
        self.rows.append(row)

    def close(self) -> None:
        """Leave the run partial: rows so far are on disk, no summary."""
        self._f.close()

    def finish(self, status: str, wall_seconds: float, error: str | None = None) -> dict:
        self._f.close()
        finite = [r for r in self.rows if r["test_error"] == r["test_error"]]  # NaN-free rows
        summary = {
            "run_id": self.dir.name,
            "status": status,
            "final_test_error": finite[-1]["test_error"] if finite else None,
            "best_test_error": min(r["test_error"] for r in finite) if finite else None,
            "final_train_error": finite[-1]["train_error"] if finite else None,
            "epochs_completed": len(self.rows),
            "steps_completed": self.rows[-1]["step"] if self.rows else 0,
            "wall_seconds": round(wall_seconds, 3),
            "dropout": self.cfg.has_dropout,
        }
        if error:
            summary["error"] = error
        atomic_write(self.dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary


def read_metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]


def run_dirs(results_dir: Path) -> list[Path]:
    """Run folders under a results folder (those with a config.yaml), sorted."""
    return sorted(p.parent for p in Path(results_dir).glob("*/config.yaml"))
