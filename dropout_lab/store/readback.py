"""Reading a results folder back: every file is checked, so a damaged one is named instead of trusted.

The layout is results.py's. Readers of a run folder (resume, plot, report) go through these functions: a
file that is there but cut short, not UTF-8 or not what it should hold raises Damaged, whose message is
one line naming the file and what is wrong.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import yaml

from ..config import yaml_load

# max_norm_bound: the share of units whose incoming weight norm sits at c after the epoch (train.at_max_norm);
# empty for a model without max-norm
METRIC_COLUMNS = ["epoch", "step", "lr", "momentum", "train_loss", "train_error", "test_loss", "test_error",
                  "val_error", "max_norm_bound", "seconds"]


class Damaged(ValueError):
    """A results file that is there but cannot be trusted; the message is one line: the file and what is wrong.

    A ValueError, so a read-only command that reports bad input as one line does so for this too.
    """

    def __init__(self, path: Path, why: str):
        super().__init__(f"{path} is damaged ({why})")
        self.path = path


def _text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:  # a folder in the file's place, no permission: named, never a traceback
        raise Damaged(path, f"cannot be read: {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Damaged(path, "not UTF-8") from None


def _json_object(path: Path) -> dict | None:
    text = _text(path)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise Damaged(path, "not JSON: cut short or overwritten") from None
    if not isinstance(value, dict):
        raise Damaged(path, f"holds {_clip(text.strip())}, not a JSON object")
    return value


def _clip(x, n: int = 40) -> str:
    s = x if isinstance(x, str) else repr(x)
    return s if len(s) <= n else s[:n] + "..."


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


STATUSES = ("completed", "diverged", "failed")  # the statuses a summary records; partial runs have none
# key: (required, check, what it must be). Older summaries lack the optional keys; the rest is what is read back.
SUMMARY_KEYS = {
    "run_id": (True, lambda v: isinstance(v, str), "a string"),
    "status": (True, lambda v: v in STATUSES, "one of " + ", ".join(STATUSES)),
    "final_test_error": (True, lambda v: v is None or _number(v) and 0 <= v <= 1, "an error fraction or null"),
    "best_test_error": (True, lambda v: v is None or _number(v) and 0 <= v <= 1, "an error fraction or null"),
    "final_train_error": (True, lambda v: v is None or _number(v) and 0 <= v <= 1, "an error fraction or null"),
    "epochs_completed": (True, _count, "a count"),
    "wall_seconds": (True, lambda v: _number(v) and v >= 0, "seconds"),
    "dropout": (True, lambda v: isinstance(v, bool), "true or false"),
    "steps_completed": (False, _count, "a count"),
    "final_max_norm_bound": (False, lambda v: v is None or _number(v) and 0 <= v <= 1, "a fraction or null"),
    "error": (False, lambda v: isinstance(v, str), "a string"),
}


def read_summary(run_dir: Path) -> dict | None:
    """The run's summary.json, checked key by key; None when there is none (the run is unfinished)."""
    path = run_dir / "summary.json"
    s = _json_object(path)
    if s is None:
        return None
    missing = [k for k, (required, _, _) in SUMMARY_KEYS.items() if required and k not in s]
    if missing:
        raise Damaged(path, "no " + ", ".join(missing))
    for k, (_, ok, what) in SUMMARY_KEYS.items():
        if k in s and not ok(s[k]):
            raise Damaged(path, f"{k} = {_clip(s[k])}: must be {what}")
    if s["run_id"] != run_dir.name:  # a copy of another run's file would lend this run its numbers
        raise Damaged(path, f"run_id = {_clip(s['run_id'])} is another run's")
    return s


def read_mc(run_dir: Path) -> dict | None:
    """The run's mc.json (Monte-Carlo averaging against weight scaling), checked; None when there is none."""
    path = run_dir / "mc.json"
    m = _json_object(path)
    if m is None:
        return None
    try:
        ok = _number(m["weight_scaling"]["test_error"]) and m["mc"] and all(
            isinstance(e["k"], int) and _number(e["mean"]) and _number(e["std"]) for e in m["mc"])
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise Damaged(path, "not the weight_scaling and mc records the evaluation writes")
    return m


def read_env(run_dir: Path) -> dict | None:
    """The run's env.json (its provenance); None when there is none."""
    return _json_object(run_dir / "env.json")


OPTIONAL_COLUMNS = ("val_error", "max_norm_bound")  # empty where the run has no validation set or no max-norm
CORE_COLUMNS = ("epoch", "step", "train_error", "test_error")


def read_metrics(run_dir: Path, raw: bool = False, upto: int | None = None) -> list[dict]:
    """metrics.csv's rows ([] without the file), every one checked: whole, numeric, epochs 1, 2, 3, ...

    upto=n checks and returns the first n rows only: those a resume keeps (later ones are redone).
    A last line with no line end is a row cut by a kill mid-append: dropped while the run is unfinished,
    damage once it has a summary.json (its file was closed whole). Raises Damaged for anything else.
    """
    path = run_dir / "metrics.csv"
    text = _text(path)
    if text is None:
        return []
    try:
        table = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise Damaged(path, f"not CSV: {e}") from None
    header, body = (table[0], table[1:]) if table else ([], [])
    if header != [c for c in METRIC_COLUMNS if c in header] or not set(CORE_COLUMNS) <= set(header):
        raise Damaged(path, f"its header {_clip(','.join(header))} is not metrics.csv's")
    if body and not text.endswith(("\n", "\r")):
        if (run_dir / "summary.json").exists() and (upto is None or len(body) <= upto):
            raise Damaged(path, f"line {len(body) + 1} is cut short")
        body.pop()
    rows = []
    for n, fields in enumerate(body[:upto], 1):
        why = _row_problem(header, fields, n)
        if why:
            raise Damaged(path, f"line {n + 1}: {why}")
        rows.append(dict(zip(header, fields)))
    if raw:
        return rows
    return [{k: (float(v) if v != "" else None) for k, v in row.items()} for row in rows]


def _row_problem(header: list[str], fields: list[str], n: int) -> str | None:
    """What makes row n (epoch n) of metrics.csv unusable, or None."""
    if len(fields) != len(header):
        return f"{len(fields)} fields where the header has {len(header)}"
    row = dict(zip(header, fields))
    for k, v in row.items():
        if v == "" and k in OPTIONAL_COLUMNS:
            continue
        try:
            float(v)  # nan is a number here: an epoch with no test pass, or a diverged model
        except ValueError:
            return f"{k} = {_clip(v)} is not a number"
    if float(row["epoch"]) != n:
        return f"epoch {row['epoch']} where epoch {n} belongs"
    return None


def check_run(run_dir: Path, listed: str | None = None) -> dict | None:
    """What a reader takes from a run folder, checked as a whole: its summary (returned; None when unfinished)
    and every metrics row, as many as the summary counts epochs. `listed`: the status index.csv gives the run;
    one listed as completed must have a completed summary. Raises Damaged naming the first bad file.
    env.json is left to read_env: a reader may go on without provenance, not without results.
    """
    summary = read_summary(run_dir)
    rows = read_metrics(run_dir, raw=True)
    if summary is not None and len(rows) != summary["epochs_completed"]:
        raise Damaged(run_dir / "metrics.csv", f"{len(rows)} rows, but summary.json counts "
                                               f"{summary['epochs_completed']} epochs")
    if listed == "completed" and (summary or {}).get("status") != "completed":
        found = "missing" if summary is None else f"status {summary['status']}"
        raise Damaged(run_dir / "summary.json", f"{found}, though index.csv lists the run as completed")
    return summary


RECENT = 10  # a stopped run's error is the mean of its last 10 test passes: one pass is a noisy reading


def read_progress(run_dir: Path) -> dict | None:
    """How far an unfinished run got, from its metrics.csv and config.yaml; None before its first test pass.

    Full-length runs outlast a sitting, and a run whose checkpoint is gone restarts from epoch 0: its curve
    up to the stop is still a measurement, which the report shows labelled as stopped, never as a result.
    """
    rows = read_metrics(run_dir)
    tested = [r for r in rows if r["test_error"] == r["test_error"]]  # nan: an epoch without a test pass
    if not tested:
        return None
    path = run_dir / "config.yaml"
    try:
        epochs = yaml_load(path.read_text())["optim"]["epochs"]  # the loader every config goes through
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError):
        epochs = None
    if not _count(epochs) or epochs < rows[-1]["epoch"]:
        raise Damaged(path, "no optim.epochs at least as many as metrics.csv has run")
    last = rows[-1]
    recent = [r["test_error"] for r in tested[-RECENT:]]
    return {"steps_completed": int(last["step"]), "planned_steps": round(epochs * last["step"] / last["epoch"]),
            "recent_test_error": float(sum(recent) / len(recent)), "recent_passes": len(recent),
            "final_max_norm_bound": last.get("max_norm_bound"),
            "wall_seconds": last.get("seconds") or 0.0}


def check_folder(folder: Path) -> None:
    """Every run folder under a results folder, env.json included, against index.csv where there is one.

    Raises Damaged for the first bad file. A run index.csv lists without a folder is not checked: the index
    is the record of a sweep whose run folders may have been moved or pruned.
    """
    listed = _listed(folder)
    for d in run_dirs(folder):
        check_run(d, listed.get(d.name))
        read_env(d)


def _listed(folder: Path) -> dict[str, str]:
    """run_id -> status as index.csv lists them ({} where it cannot be read: the plot's own reader judges it)."""
    with contextlib.suppress(OSError, ValueError, KeyError, csv.Error):
        with open(folder / "index.csv", newline="") as f:
            return {r["run_id"]: r["status"] for r in csv.DictReader(f) if r.get("run_id")}
    return {}


def listed_runs(folder: Path) -> list[Path]:
    """The run folders index.csv names."""
    return [folder / run_id for run_id in _listed(folder)]


def read_sessions(folder: Path) -> list[dict]:
    path = folder / "sessions.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line cut by a crash is skipped, not fatal
            out.append(json.loads(line))
    return out


def run_dirs(results_dir: Path) -> list[Path]:
    """Run folders under a results folder (those with a config.yaml), sorted."""
    return sorted(p.parent for p in Path(results_dir).glob("*/config.yaml"))
