"""The results layout: one folder per run, written so that a crash never corrupts a finished run.

<out>/<name>/<run_id>/
    config.yaml    the resolved config
    env.json       versions, device, git commit, command line
    metrics.csv    one row per epoch, appended and flushed as training goes
    mc.json        Monte-Carlo averaging vs weight scaling of the final nets (when eval.mc_samples is set)
    summary.json   written last, atomically; its presence with status 'completed' marks a finished run
    checkpoint.pt  model, optimiser and RNG state of an unfinished run (git-ignored, removed on completion)
<out>/<name>/index.csv, sweep.yaml   one row per run of the last sweep; the sweep as resolved
<out>/<name>/sessions.jsonl          one line per `sweep` invocation that trained: its wall time, device, outcome
                                     (kept current while it trains, so a killed sweep still counts)
<out>/<name>/.lock                   held by the one process writing into the folder
Errors are fractions in files and percentages on screen. Every file is checked as it is read back
(readback.py): one that cannot be trusted raises Damaged, naming it, rather than lending a run garbage.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import filecmp
import io
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

from .. import __version__
from ..config import Config, to_yaml
from .readback import METRIC_COLUMNS, Damaged, read_env, read_metrics


def _replace(path: Path, write: Callable[[str], None], keep_same: bool = False) -> None:
    """write(tmp) fills a temp file in the same folder, then a rename: readers see the old file or the new one.
    keep_same: where the new bytes equal the file's, the file is left as it was (its time too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        if keep_same and path.is_file() and filecmp.cmp(tmp, path, shallow=False):
            Path(tmp).unlink()
            return
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are for reading
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    _replace(path, write)


def save_figure(fig, path: Path, dpi: int = 120) -> Path:
    """A matplotlib figure saved atomically, in the format its suffix names (.png, .svg). The same figure gives
    the same bytes (an SVG's date and random ids would change every time), and a file that already holds them
    is not rewritten: redrawing unchanged results changes no committed file."""
    import matplotlib

    fmt = path.suffix[1:]
    metadata = {"Date": None} if fmt == "svg" else None  # the SVG's own dc:date
    with matplotlib.rc_context({"svg.hashsalt": "dropout-lab"}):  # its element ids, else random per save
        _replace(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=fmt, metadata=metadata), keep_same=True)
    return path


def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]  # dropout_lab/store/results.py -> the checkout
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


def cpu_model() -> str:
    """The CPU's marketing name where the OS tells it (Linux: /proc/cpuinfo), else its architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_kind() -> str:
    """Which of the CPU kinds that decide the step's speed this is, from the flags the OS reports: amx-bf16
    (bf16 GEMMs on AMX tiles), avx512-bf16, avx2 (no bf16 instructions: bf16 is emulated), or the
    architecture where there are no flags to read."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        flags = []
    for flag, kind in (("amx_bf16", "amx-bf16"), ("avx512_bf16", "avx512-bf16"), ("avx2", "avx2")):
        if flag in flags:
            return kind
    return platform.machine()


def device_name(device: torch.device, workers: int = 1) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if workers > 1:  # local.py: that many stacks side by side, one torch thread each
        return f"cpu ({cpu_model()}, {os.cpu_count()} cores, {workers} stacks at a time on 1 torch thread each)"
    return f"cpu ({cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def precision_info(precision: str, device: torch.device) -> dict:
    """What env.json says of the arithmetic: the precision and, for bf16, which GEMM kernels ran it."""
    from ..nets.kernel import describe
    from ..nets.step import bf16_kernels

    out = {"precision": precision}
    if precision == "bf16":
        out["bf16_gemm"] = bf16_kernels(device)  # native | emulated (step.py says what each means)
    if device.type == "cpu":  # the deepnet rule's update: update.c, or torch ops (max-norm's last bit differs)
        out["cpu_update"] = describe()
    return out


def command_line() -> str:
    """The command as typed, with no machine path in it."""
    program = [Path(sys.argv[0]).name]
    if program == ["__main__.py"]:  # as typed: python -m dropout_lab
        program = ["python", "-m", "dropout_lab"]
    return shlex.join([*program, *sys.argv[1:]])


def env_info(device: torch.device, workers: int = 1) -> dict:
    import numpy

    return {
        "dropout_lab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "device": str(device),
        "device_name": device_name(device, workers),
        "cpu_kind": cpu_kind(),
        "cuda": torch.version.cuda,
        "git_commit": git_commit(),
        "command": command_line(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


class RunWriter:
    """Opens a run folder and writes it as training goes.

    keep_rows=0 starts fresh (partial leftovers are replaced); keep_rows=n resumes from a checkpoint
    taken after n epochs: later rows, written after that checkpoint, are dropped and will be redone.
    """

    def __init__(self, run_dir: Path, cfg: Config, env: dict, keep_rows: int = 0):
        self.dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "summary.json").unlink(missing_ok=True)  # not finished until written again
        (run_dir / "mc.json").unlink(missing_ok=True)  # belongs to the final nets: written at the end
        atomic_write(run_dir / "config.yaml", to_yaml(cfg))
        env = {**env, **precision_info(cfg.precision, torch.device(env["device"]))}
        kept = read_metrics(run_dir, raw=True, upto=keep_rows) if keep_rows else []
        if keep_rows:  # provenance of the first start stays; each resumption is appended
            try:  # survey() resumes no run whose env.json is damaged; this is for a file gone since
                first = read_env(run_dir) or dict(env)
            except Damaged:
                first = dict(env)
            first.setdefault("resumed", []).append({k: env.get(k) for k in ("started", "command", "git_commit",
                                                                            "device", "device_name", "cpu_kind")})
            env = first
        atomic_write(run_dir / "env.json", json.dumps(env, indent=2) + "\n")
        self.cfg = cfg
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
        atomic_write(run_dir / "metrics.csv", buf.getvalue())
        self._f = open(run_dir / "metrics.csv", "a", newline="")
        self._csv = csv.DictWriter(self._f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        self.rows: list[dict] = [{k: (float(v) if v else float("nan")) for k, v in r.items()} for r in kept]

    def add(self, row: dict) -> None:
        if not self.cfg.data.validation_size:
            row = {**row, "val_error": ""}
        if self.cfg.optim.max_norm is None:
            row = {**row, "max_norm_bound": ""}
        self._csv.writerow(row)
        self._f.flush()
        self.rows.append(row)

    def close(self) -> None:
        """Leave the run partial: rows so far are on disk, no summary."""
        self._f.close()

    def finish(self, status: str, wall_seconds: float, error: str | None = None) -> dict:
        self._f.close()
        finite = [r for r in self.rows if r["test_error"] == r["test_error"]]  # NaN-free rows
        if self.rows:  # cumulative over interruptions, as the rows count it
            wall_seconds = self.rows[-1]["seconds"]
        summary = {
            "run_id": self.dir.name,
            "status": status,
            "final_test_error": finite[-1]["test_error"] if finite else None,
            "best_test_error": min(r["test_error"] for r in finite) if finite else None,
            "final_train_error": finite[-1]["train_error"] if finite else None,
            "final_max_norm_bound": _finite(self.rows[-1].get("max_norm_bound")) if self.rows else None,
            "epochs_completed": len(self.rows),
            "steps_completed": self.rows[-1]["step"] if self.rows else 0,
            "wall_seconds": round(wall_seconds, 3),
            "dropout": self.cfg.has_dropout,
        }
        if error:
            summary["error"] = error
        atomic_write(self.dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary


def _finite(x) -> float | None:
    """A number for JSON, or None where there is none (NaN, or a row written before the column existed)."""
    return float(x) if isinstance(x, (int, float)) and x == x else None


# ----------------------------------------------------------------------------------------------
# checkpoints


CHECKPOINT = "checkpoint.pt"


# 2: weights as rows (K, n_out, n_in) and 16-bit masks (model.py, layers.py). A checkpoint of another
# format would load a square layer transposed without a word: such a run restarts instead.
CHECKPOINT_FORMAT = 3  # 3: SGD's state is deepnet's D; 2 held v = -D (train.load_model_state turns it)
READABLE_FORMATS = (2, 3)


def save_checkpoint(run_dir: Path, state: dict) -> None:
    """Atomic: a kill during the write leaves the previous checkpoint, never half of a new one."""
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{CHECKPOINT}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, run_dir / CHECKPOINT)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# A resume point is a checkpoint meant for git: checkpoints are ignored, so a paper-length run that outlasts
# a sitting would restart from update 0 on another machine. `dropout-lab resume-point FOLDER` copies each
# unfinished run's checkpoint here (fp32 weights, optimiser state, generator states, the step: 24 MB for
# a 3x1024 net); a run resumes from whichever of the two is further on, and both go when it completes.
RESUME_POINT = "resume.pt"


def load_checkpoint(run_dir: Path, run_id: str | None = None, mmap: bool = False) -> dict | None:
    """The furthest of the run's checkpoint and its resume point, or None when neither is usable (missing,
    unreadable, another config's, an older trainer's).

    Raises Damaged when the metrics rows it would keep are torn: a resume would keep them as they are.
    """
    found = _furthest(run_dir, run_id, mmap)
    return found[1] if found else None


def _furthest(run_dir: Path, run_id: str | None, mmap: bool) -> tuple[Path, dict] | None:
    """(file, state) of the further of the run's checkpoint and resume point, where either is usable."""
    found = [(run_dir / name, s) for name in (CHECKPOINT, RESUME_POINT)
             if (s := _load(run_dir / name, run_dir, run_id, mmap))]
    return max(found, key=lambda f: f[1].get("step", 0), default=None)


def _load(path: Path, run_dir: Path, run_id: str | None, mmap: bool) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception:  # a foreign or damaged file: the run restarts rather than crash the sweep
        return None
    if run_id is not None and state.get("run_id") != run_id:
        return None
    if state.get("format") not in READABLE_FORMATS:  # an older trainer's: its weights are laid out otherwise
        return None
    epoch = state.get("epoch", 0)
    if len(read_metrics(run_dir, raw=True, upto=epoch)) < epoch:
        return None  # its rows are gone: the curve could not be completed
    return state


def remove_checkpoint(run_dir: Path, keep_checkpoint: bool = False) -> None:
    """A completed run, or a fresh start: neither its checkpoint nor its resume point resumes anything now
    (keep_checkpoint: `--keep-checkpoints` keeps the checkpoint of a completed run; its resume point goes)."""
    if not keep_checkpoint:
        (run_dir / CHECKPOINT).unlink(missing_ok=True)
    (run_dir / RESUME_POINT).unlink(missing_ok=True)


def keep_resume_point(run_dir: Path) -> dict | None:
    """Copy the run's furthest checkpoint to its resume point (atomically, replacing the previous point);
    returns that state, or None for a run with nothing to resume from."""
    found = _furthest(run_dir, run_dir.name, True)
    if found is None:
        return None
    source = found[0]
    if source.name != RESUME_POINT:
        fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{RESUME_POINT}.", suffix=".tmp")
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, run_dir / RESUME_POINT)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return torch.load(run_dir / RESUME_POINT, map_location="cpu", weights_only=True, mmap=True)


EARLIER = "earlier"  # <run>/earlier/N/: the record of attempt N, kept when the run starts again from scratch
RECORD = ("metrics.csv", "summary.json", "env.json", "config.yaml", "mc.json")


def keep_earlier(run_dir: Path) -> Path | None:
    """Before a fresh start over a folder with recorded epochs (--restart, --force, a damaged record), its
    record moves to earlier/N/, N one past the last: a restart never erases a curve. Returns that folder."""
    metrics = run_dir / "metrics.csv"
    try:
        with open(metrics, "rb") as f:
            if len(f.read(1 << 16).splitlines()) < 2:  # a header at most: nothing was recorded
                return None
    except OSError:
        return None
    taken = [int(p.name) for p in (run_dir / EARLIER).glob("*") if p.name.isdigit()]
    dest = run_dir / EARLIER / str(max(taken, default=0) + 1)
    dest.mkdir(parents=True)
    for name in RECORD:
        if (run_dir / name).is_file():
            os.replace(run_dir / name, dest / name)
    return dest


# ----------------------------------------------------------------------------------------------
# the folder lock and the sweep index


class FolderBusy(RuntimeError):
    pass


@contextlib.contextmanager
def folder_lock(folder: Path):
    """Hold <folder>/.lock for the life of the block; a second writer gets FolderBusy, not a mixed folder.

    flock is released by the kernel when the holder dies, so a crash never leaves a stale lock.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    f = open(path, "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise FolderBusy(f"results folder '{folder}' is in use by {holder}; wait for it to finish, "
                             "or write elsewhere with --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"dropout-lab pid {os.getpid()} ({command_line()})\n")
        f.flush()
        yield
    finally:
        f.close()


INDEX_METRICS = ["final_test_error", "best_test_error", "final_train_error", "final_max_norm_bound",
                 "epochs_completed", "steps_completed", "wall_seconds"]


def cell(value) -> str | int | float:
    """One index.csv cell: None empty, lists as JSON, so pandas reads the file with no arguments."""
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def write_index(folder: Path, rows: list[dict], keys: list[str]) -> None:
    """rows: run_id, status, the swept keys, seed, dropout and the summary numbers; rewritten atomically.

    The rows of another precision that the index already lists stay with them, in one order whichever
    precision wrote last: a sweep run in bf16 and again in fp32 is two sets of runs in one folder (their
    ids differ), and neither invocation may drop the other's from the record the report and plots read."""
    buf = io.StringIO()
    columns = ["run_id", "status", *keys, "seed", *(["precision"] if "precision" not in keys else []), "dropout",
               *INDEX_METRICS]
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    ours = {str(r.get("precision") or "fp32") for r in rows}
    kept = _other_precisions(folder, {r["run_id"] for r in rows}, ours)
    lines = [{c: cell(r.get(c)) for c in columns} for r in rows] + [{c: r.get(c, "") for c in columns} for r in kept]
    order = ("fp32", "bf16", "tf32")  # one order whichever precision wrote last: the same bytes either way
    lines.sort(key=lambda r: order.index(r.get("precision")) if r.get("precision") in order else len(order))
    for line in lines:
        w.writerow(line)
    write_if_changed(folder / "index.csv", buf.getvalue())


def _other_precisions(folder: Path, ids: set[str], precisions: set[str]) -> list[dict]:
    with contextlib.suppress(OSError, UnicodeDecodeError, csv.Error):
        with open(folder / "index.csv", newline="") as f:
            return [r for r in csv.DictReader(f) if r.get("run_id") not in ids and (r.get("precision") or "fp32")
                    not in precisions]
    return []


def write_if_changed(path: Path, text: str, same: Callable[[str], bool] | None = None) -> None:
    """atomic_write, unless the file already holds this (same(old text) decides where given): a finished
    sweep run again leaves its committed records, and git, as they were."""
    try:
        old = path.read_text()
        if (same or text.__eq__)(old):
            return
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write(path, text)


class Session:
    """One `sweep` invocation's line in sessions.jsonl, kept current while it trains.

    The sum of the lines' wall times is the time a sweep took, resumptions included; per-run wall times
    cannot give it, since a stack's runs share it. The line is written when training starts and rewritten
    (the whole small file, atomically) at most every `every` seconds and at the end, so a process killed
    outright (SIGKILL, a machine taken away) still leaves its time to within `every`, marked 'running'.
    The next invocation, which holds the folder's lock and so knows that process is gone, marks such a
    line 'stopped'. env (env_info) gives the start, the device and the commit; fields the rest.
    """

    def __init__(self, folder: Path, env: dict, every: float = 10.0, **fields):
        self.path = folder / "sessions.jsonl"
        self.every = every
        self.earlier = []
        if self.path.is_file():
            for line in self.path.read_text(errors="replace").splitlines():
                with contextlib.suppress(json.JSONDecodeError):  # a line cut by a crash is dropped
                    rec = json.loads(line)
                    if isinstance(rec, dict) and rec.get("outcome") == "running":
                        rec["outcome"] = "stopped"
                    self.earlier.append(json.dumps(rec))
        self.record = {"started": env["started"], "wall_seconds": 0.0, "outcome": "running",
                       "backend": fields.pop("backend"), "device": env["device"], "device_name": env["device_name"],
                       **fields, "git_commit": env["git_commit"]}
        self.t0 = time.perf_counter()
        self.last = -float("inf")
        self.update()

    def update(self, outcome: str = "running") -> None:
        """Rewrite this session's line: at most every `every` seconds while running, always at the end."""
        now = time.perf_counter()
        if outcome == "running" and now - self.last < self.every:
            return
        self.last = now
        self.record.update(wall_seconds=round(now - self.t0, 2), outcome=outcome)
        atomic_write(self.path, "".join(line + "\n" for line in [*self.earlier, json.dumps(self.record)]))
