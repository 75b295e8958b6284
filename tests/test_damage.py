"""Results that survive damage, and diverged runs that are kept, through the CLI.

One tiny sweep is trained once for the module; each case damages a copy of it, runs one command on the copy
and checks that the command names the damaged file in one line and either retrains that run cleanly
(`run`, `sweep`) or refuses or leaves it out (`plot`, `report`), with no traceback and no garbage used.
"""

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from dropout_lab.store.readback import read_summary

from conftest import cli, curves, index

# "table2": a paper key, so `report` reads the folder; no label column, so its rows show as not run
BASE = {
    "name": "table2", "device": "cpu", "baseline": True, "checkpoint_seconds": 0,  # checkpoints to resume from
    "data": {"dataset": "spiral"},
    "model": {"hidden": [16], "init_std": None},
    "optim": {"epochs": 3, "lr": 0.1, "lr_decay": 0.95, "momentum_ramp_epochs": 2, "max_norm": 2.0},
    "sweep": {"seeds": [0]},  # no axis: the sweep's runs are the ones `run` trains, dropout and control
}


def write_config(folder, **top):
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({**BASE, **top}))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, results root, run id of the dropout run): a finished sweep, checkpoints kept for resume cases."""
    root = tmp_path_factory.mktemp("trained")
    config = write_config(root)
    r = cli("sweep", config, "--out", root / "res", "--keep-checkpoints")
    assert r.returncode == 0, r.stderr
    rows = index(root / "res" / "table2")
    assert len(rows) == 2 and {x["status"] for x in rows} == {"completed"}
    return config, root / "res", next(x["run_id"] for x in rows if x["dropout"] == "True")


# ----- the damage: each edits one run folder of a finished sweep, as a crash, a disk or a person might


def mark_unfinished(folder, run_id):
    """index.csv as a sweep interrupted while training the run leaves it."""
    rows = index(folder)
    for x in rows:
        if x["run_id"] == run_id:
            x.update({k: "" for k in x if k not in ("run_id", "model.hidden", "seed", "dropout")}, status="partial")
    with open(folder / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def tear_row(d, line=2):
    lines = (d / "metrics.csv").read_text().splitlines(keepends=True)
    lines[line] = lines[line][: len(lines[line]) // 2] + "\r\n"  # the row of epoch 2, cut halfway
    (d / "metrics.csv").write_text("".join(lines))


def finished(d):
    (d / "checkpoint.pt").unlink()  # a finished run keeps none (the fixture kept them for the resume cases)


def damage(kind, d):
    """Damages run folder d; returns the file a command must name."""
    if kind == "summary not UTF-8":
        finished(d)
        (d / "summary.json").write_bytes(b'{"status": "compl\xe9ted"}')
    elif kind == "summary not an object":
        finished(d)
        (d / "summary.json").write_text("1")
    elif kind == "summary lacks keys":
        finished(d)
        (d / "summary.json").write_text('{"status": "completed"}')
    elif kind == "env truncated":
        finished(d)
        text = (d / "env.json").read_text()
        (d / "env.json").write_text(text[: len(text) // 2])
        return "env.json"
    elif kind == "metrics torn":
        finished(d)
        tear_row(d)
        return "metrics.csv"
    elif kind == "metrics torn before the checkpoint":  # an unfinished run whose checkpoint would keep the row
        (d / "summary.json").unlink()
        mark_unfinished(d.parent, d.name)
        tear_row(d)
        return "metrics.csv"
    elif kind == "checkpoint corrupted":  # an unfinished run whose checkpoint cannot be read
        (d / "summary.json").unlink()
        mark_unfinished(d.parent, d.name)
        (d / "checkpoint.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
        return "checkpoint.pt"
    else:
        raise AssertionError(kind)
    return "summary.json"


KINDS = ["summary not UTF-8", "summary not an object", "summary lacks keys", "env truncated", "metrics torn",
         "metrics torn before the checkpoint", "checkpoint corrupted"]


@pytest.fixture
def damaged(trained, tmp_path, request):
    """A copy of the trained results with one run damaged: (config, results root, run folder, file to name)."""
    config, res, run_id = trained
    shutil.copytree(res, tmp_path / "res")
    d = tmp_path / "res" / "table2" / run_id
    return config, tmp_path / "res", d, damage(request.param, d)


def mentions(text, path):
    return [line for line in text.splitlines() if str(path) in line]


@pytest.mark.parametrize("damaged", KINDS, indirect=True)
@pytest.mark.parametrize("command", ["run", "sweep"])
def test_run_and_sweep_retrain_a_damaged_run_cleanly_and_say_so(trained, damaged, command):
    config, res, d, name = damaged
    r = cli(command, config, "--out", res)
    assert "Traceback" not in r.stderr
    [line] = mentions(r.stderr, d / name)  # one line names the file ...
    if name == "checkpoint.pt":  # ... an unfinished run with no resume point: kept as it is until --restart
        assert r.returncode == 1 and "kept as it is, not trained" in line
        assert not (d / "summary.json").exists() and not (d / "earlier").exists()
        r = cli(command, config, "--out", res, "--restart")
        [line] = mentions(r.stderr, d / name)
        assert "--restart trains that run from scratch" in line and (d / "earlier" / "1" / "metrics.csv").is_file()
    else:
        assert "retrained from scratch" in line  # ... and says what became of the run
    assert r.returncode == 0, r.stderr
    summary = read_summary(d)  # a whole, checked summary again
    assert summary["status"] == "completed" and summary["epochs_completed"] == 3
    assert curves(d) == curves(trained[1] / "table2" / d.name)  # the numbers of the undamaged run
    if command == "sweep":
        assert {x["status"] for x in index(res / "table2")} == {"completed"}
    assert cli(command, config, "--out", res).stderr.count("warning") == 0  # repaired: nothing left to say


@pytest.mark.parametrize("damaged", KINDS, indirect=True)
def test_plot_refuses_a_damaged_folder_in_one_line(damaged):
    _, res, d, name = damaged
    r = cli("plot", res / "table2")
    assert "Traceback" not in r.stderr
    if name == "checkpoint.pt":  # not a result: the unfinished run is plotted as unfinished
        assert r.returncode == 0, r.stderr
        return
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and str(d / name) in r.stderr
    assert "again to retrain that run" in r.stderr
    assert not (res / "table2" / "plots").exists()  # nothing drawn from it


@pytest.mark.parametrize("damaged", KINDS, indirect=True)
def test_report_leaves_a_damaged_run_out_and_says_so(damaged):
    _, res, d, name = damaged
    out = res.parent / "REPORT.md"
    r = cli("report", res, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    text = out.read_text()
    if name == "checkpoint.pt":  # not read by the report, and the run is listed as unfinished
        assert r.stderr == "" and "Damaged results" not in text
        return
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("warning: ") and str(d / name) in line
    provenance = name == "env.json"  # its numbers still count; where they were made is unknown
    assert ("provenance is shown as unknown" if provenance else "left out of the report") in line
    assert "## Damaged results" in text and str(d / name) in text
    [row] = [x for x in text.splitlines() if x.startswith("| table2 | full |")]
    runs = int(row.split("|")[3])
    assert runs == (2 if provenance else 1)  # the damaged run is not counted among the results
    assert ("| ?" in row or ", ?" in row) == provenance


# ----- item 5b: a diverged run keeps its verdict until --force


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_diverged_run_is_kept_until_force(tmp_path, command):
    config = write_config(tmp_path, baseline=False,
                          optim={**BASE["optim"], "lr": 1e6, "lr_decay": 1.0, "max_norm": None})
    args = (command, config, "--out", tmp_path / "res")
    r = cli(*args)
    assert r.returncode == 1 and "did not complete" in r.stderr
    [d] = [p.parent for p in (tmp_path / "res" / "table2").glob("*/summary.json")]
    summary = read_summary(d)
    assert summary["status"] == "diverged"
    # a mark only a retrain would remove: the summary stays valid
    (d / "summary.json").write_text(json.dumps({**summary, "error": "kept"}))

    r = cli(*args)
    assert r.returncode == 1  # the results still lack the run: a kept verdict is still a run that did not complete
    assert read_summary(d)["error"] == "kept"  # not retrained
    assert "kept from an earlier invocation; --force retrains" in r.stderr
    if command == "run":
        assert "diverged (kept; --force retrains)" in r.stdout
    else:
        assert "1 diverged earlier (kept; --force retrains)" in " ".join(r.stderr.split())
        dry = cli(*args, "--dry-run")
        assert dry.returncode == 0 and "diverged (kept; --force retrains)" in dry.stdout
        assert "0 model-steps" in dry.stdout and "nothing left to train" in dry.stdout

    r = cli(*args, "--force")
    assert r.returncode == 1
    assert read_summary(d)["error"] == "loss became NaN or inf"  # retrained, and diverged again


# ----- files replaced by other kinds of file, or made unreadable: refused before anything is written

SWAPS = {  # what sits where a results file belongs
    "index.csv is a folder": lambda root, d: _folder_for(root / "table2" / "index.csv"),
    "sweep.yaml is a folder": lambda root, d: _folder_for(root / "table2" / "sweep.yaml"),
    "source.json is a folder": lambda root, d: _folder_for(root / "table2" / "source.json"),
    "metrics.csv is a folder": lambda root, d: _folder_for(d / "metrics.csv"),
    "summary.json is a folder": lambda root, d: _folder_for(d / "summary.json"),
    "config.yaml is a folder": lambda root, d: _folder_for(d / "config.yaml"),
    "index.csv is a broken link": lambda root, d: _broken_link(root / "table2" / "index.csv"),
    "a run folder is a file": lambda root, d: (shutil.rmtree(d), d.write_text("x\n"), d)[-1],
}


def _folder_for(path):
    path.unlink()
    (path / "inside").mkdir(parents=True)
    return path


def _broken_link(path):
    path.unlink()
    path.symlink_to(path.parent / "gone")
    return path


@pytest.mark.parametrize("swap", SWAPS)
@pytest.mark.parametrize("command", ["run", "sweep", "plot"])
def test_a_results_file_of_another_kind_is_refused_in_one_line_before_any_write(trained, tmp_path, swap, command):
    from conftest import tree_bytes

    config, res, run_id = trained
    shutil.copytree(res, tmp_path / "res")
    root = tmp_path / "res"
    path = SWAPS[swap](root, root / "table2" / run_id)
    before = tree_bytes(root)
    args = ("plot", root / "table2") if command == "plot" else (command, config, "--out", root)
    r = cli(*args)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and str(path) in r.stderr, r.stderr
    assert tree_bytes(root) == before


def test_report_names_a_folder_it_cannot_read_and_leaves_it_out(trained, tmp_path):
    config, res, run_id = trained
    shutil.copytree(res, tmp_path / "res")
    _folder_for(tmp_path / "res" / "table2" / "index.csv")
    r = cli("report", tmp_path / "res", "--out", tmp_path / "r.md")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert "table2/index.csv: a folder, not a file: that folder is left out of the report" in r.stderr
    assert "left out of the report" in (tmp_path / "r.md").read_text()


def test_unreadable_or_unwritable_results_are_refused(trained, tmp_path, monkeypatch):
    """Permissions, as a user who is not root meets them (os.access says what the user may do)."""
    import os

    from dropout_lab.store import guard

    config, res, run_id = trained
    shutil.copytree(res, tmp_path / "res")
    root = tmp_path / "res"
    metrics = root / "table2" / run_id / "metrics.csv"
    denied = {metrics}
    monkeypatch.setattr(guard.os, "access", lambda p, mode: Path(p) not in denied and os.path.exists(p))
    for args in (("sweep", config, "--out", root), ("plot", root / "table2")):
        r = cli(*args)
        assert r.returncode == 2 and f"{metrics}: cannot be read" in r.stderr, r.stderr
    denied = {root / "table2"}  # a folder it cannot write in: `plot` still reads it, `sweep` cannot train there
    r = cli("sweep", config, "--out", root)
    assert r.returncode == 2 and "cannot write in this folder" in r.stderr, r.stderr
