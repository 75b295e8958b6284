"""Sweeps: expansion and its errors, packing, skip and resume, interruption, failures, the lock, the index."""

import functools
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from dropout_lab.config import ConfigError
from dropout_lab.store.readback import read_metrics, read_sessions, read_summary
from dropout_lab.store.results import INDEX_METRICS, FolderBusy, folder_lock, load_checkpoint
from dropout_lab.sweeps import local, runner, stacks
from dropout_lab.sweeps.runner import survey
from dropout_lab.sweeps.stacks import plan
from dropout_lab.sweeps.sweep import expand, load_sweep, select, shipped

from conftest import ROOT, cli, curves, index, spawn, tree_bytes

# checkpoints at the default interval (a minute): no test here runs that long, so a run that is stopped
# checkpoints at its stop and never before, except where a test sets checkpoint_seconds (KILLED)
BASE = {
    "name": "tiny", "device": "cpu",
    "data": {"dataset": "spiral"},
    "model": {"hidden": [32, 32], "init_std": None},
    "optim": {"epochs": 6, "lr": 0.1, "lr_decay": 0.95, "momentum_ramp_epochs": 3, "max_norm": 2.0},
}


def write_config(tmp_path, sweep=None, name="tiny", **top):
    raw = {**BASE, "name": name, **top}
    if sweep is not None:
        raw["sweep"] = sweep
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# ----------------------------------------------------------------------------------------------
# expansion


def test_grid_zip_seeds_expand_to_the_full_product():
    raw = {**BASE, "baseline": False, "sweep": {
        "grid": {"model.dropout.p_hidden": [0.2, 0.5], "model.width_rule": ["fixed", "scaled"]},
        "zip": [{"optim.lr": [0.1, 0.05, 0.02], "optim.momentum_end": [0.9, 0.95, 0.99]}],
        "seeds": [0, 1]}}
    sw = expand(raw)
    assert len(sw.runs) == 2 * 2 * 3 * 2
    assert sw.keys == ["model.dropout.p_hidden", "model.width_rule", "optim.lr", "optim.momentum_end"]
    pairs = {(v["optim.lr"], v["optim.momentum_end"]) for v in sw.values}
    assert pairs == {(0.1, 0.9), (0.05, 0.95), (0.02, 0.99)}  # zipped, not crossed
    widths = {(v["model.dropout.p_hidden"], v["model.width_rule"]): tuple(c.widths())
              for c, v in zip(sw.runs, sw.values)}
    assert widths[(0.5, "scaled")] == (64, 64) and widths[(0.2, "scaled")] == (40, 40)
    assert widths[(0.5, "fixed")] == (32, 32)


def test_a_seed_grid_is_the_seed_axis_and_nothing_asked_for_is_dropped(tmp_path):
    path = write_config(tmp_path, {"grid": {"model.dropout.p_hidden": [0.2, 0.5, 0.8]}})
    sw = load_sweep(path, [], ["seed=0,1"])
    dropout = [v for v in sw.values if v["dropout"]]
    assert len(dropout) == 6 and {(v["model.dropout.p_hidden"], v["seed"]) for v in dropout} == {
        (p, s) for p in (0.2, 0.5, 0.8) for s in (0, 1)}
    assert "seed" not in sw.keys  # one seed column in index.csv, not two
    with pytest.raises(ConfigError, match=r"--grid seed = \[3\]: this sweep already repeats sweep.seeds"):
        load_sweep(write_config(tmp_path, {"seeds": [0, 1]}, name="s"), [], ["seed=3"])
    with pytest.raises(ConfigError, match="sweep.zip.0..seed: seeds repeat every point"):
        expand({**BASE, "sweep": {"zip": [{"seed": [0, 1], "optim.lr": [0.1, 0.2]}]}})
    # two points that scaling makes one run: refused, naming both, rather than one silently dropped
    with pytest.raises(ConfigError, match="data.validation_size=5000 and data.validation_size=10000 give the same"):
        expand({**BASE, "sweep": {"grid": {"data.validation_size": [5000, 10000]}}}, scale="quick")


def test_seed_grid_on_the_command_line(tmp_path):
    r = cli("sweep", "configs/mnist.yaml", "--grid", "model.dropout.p_hidden=0.2,0.5,0.8", "--grid", "seed=0,1",
            "--dry-run", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "8 runs" in r.stdout  # 3 p x 2 seeds, and one control per seed
    r = cli("sweep", "configs/sweeps/p_fixed_n.yaml", "--grid", "seed=5", "--dry-run", "--out", tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "sweep.seeds" in r.stderr


def test_a_p_sweep_shares_one_control_per_seed():
    raw = {**BASE, "baseline": True,
           "sweep": {"grid": {"model.dropout.p_hidden": [0.1, 0.3, 0.5], "optim.max_norm": [2.0, 3.0]},
                     "seeds": [0, 1, 2]}}
    sw = expand(raw)
    controls = [c for c in sw.runs if not c.has_dropout]
    assert len(controls) == 3  # not 3 x 3 x 2
    assert len(sw.runs) == 3 * 2 * 3 + 3
    assert {c.seed for c in controls} == {0, 1, 2}
    assert all(c.optim.max_norm is None and c.model.dropout.p_hidden == 0 for c in controls)


def test_overrides_apply_before_expansion_and_grid_adds_an_axis(tmp_path):
    path = write_config(tmp_path, {"grid": {"model.dropout.p_hidden": [0.2, 0.5]}})
    sw = load_sweep(path, ["optim.epochs=2"], ["optim.lr=0.1,0.02", "model.hidden=[16],[8,8]"])
    assert len(sw.runs) == 2 * 2 * 2 + 2 * 2  # controls: one per (lr, hidden)
    assert {c.optim.epochs for c in sw.runs} == {2}
    assert {tuple(c.model.hidden) for c in sw.runs} == {(16,), (8, 8)}


@pytest.mark.parametrize("sweep, message", [
    ({"grid": {"model.dropout.p_hiden": [0.1]}}, "sweep.grid.model.dropout.p_hiden: unknown key"),
    ({"grid": {"optim.lr": []}}, "sweep.grid.optim.lr = []: an axis needs at least one value"),
    ({"zip": [{"optim.lr": [0.1, 0.2], "optim.lr_decay": [0.9]}]}, "zipped lists must have equal lengths"),
    ({"grid": {"optim.lr": [0.1]}, "zip": [{"optim.lr": [0.2]}]}, "'optim.lr' is already swept in grid"),
    ({"grid": {"model.dropout": [0.1]}}, "'model.dropout' is a section"),
    ({"grid": {"name": ["a", "b"]}}, "cannot be swept"),
    ({"grid": {"model.dropout.p_hidden": [0.5, 1.0]}}, "model.dropout.p_hidden = 1.0: must be in [0, 1)"),
    ({"seeds": []}, "sweep.seeds = []"),
    ({"grid": {"optim.lr": 0.1}}, "sweep.grid.optim.lr"),
    # a value given twice would be one run, the second dropped without a word
    ({"grid": {"optim.lr": [0.1, 0.2, 0.10]}}, "sweep.grid.optim.lr = [0.1, 0.2, 0.1]: 0.1 is given twice"),
    ({"grid": {"model.hidden": [[8], [8]]}}, "[8] is given twice"),
    ({"zip": [{"optim.lr": [0.1, 0.1], "optim.lr_decay": [0.9, 0.9]}]}, "is given twice"),
    ({"seeds": [0, 1, 0]}, "sweep.seeds = [0, 1, 0]: 0 is given twice"),
])
def test_bad_sweeps_are_one_line_errors(sweep, message):
    with pytest.raises(ConfigError) as e:
        expand({**BASE, "sweep": sweep})
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_sweep_on_the_command_line_exits_2_with_one_line(tmp_path):
    path = write_config(tmp_path, {"grid": {"model.dropout.p_hidden": [0.2, 0.5]}})
    r = cli("sweep", path, "--grid", "optim.bogus=1,2", "--out", tmp_path / "res")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "unknown key 'optim.bogus'" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "res").exists()
    r = cli("sweep", path, "--backend", "slurm", "--out", tmp_path / "res")
    assert r.returncode == 2 and "--backend = 'slurm': allowed: local, ray" in r.stderr


def test_shipped_sweeps_expand_and_are_listed():
    found = {p.name: (d, n) for p, d, n in shipped(ROOT / "configs" / "sweeps")}
    assert set(found) >= {"p_fixed_n.yaml", "p_fixed_pn.yaml", "momentum_lr_decay.yaml", "max_norm.yaml",
                          "data_size.yaml"}
    for name, (description, count) in found.items():
        assert isinstance(count, int) and count > 1, (name, count)
        assert description, name
    r = cli("sweep")
    assert r.returncode == 0 and "p_fixed_n.yaml" in r.stdout and "Fig. 9a" in r.stdout


def test_only_keeps_the_runs_that_match_every_key_and_refuses_a_filter_that_matches_nothing():
    sw = expand({**BASE, "baseline": False, "sweep": {"zip": [{"label": ["a b, c", "d"],
                                                            "model.dropout.p_hidden": [0.2, 0.5]}],
                                                    "seeds": [0, 1, 2]}})
    kept = lambda *only: [(c.label, c.seed) for c, k in zip(sw.runs, select(sw, only)) if k]  # noqa: E731
    assert kept() == [(c.label, c.seed) for c in sw.runs]
    assert kept("label=a b, c") == [("a b, c", 0), ("a b, c", 1), ("a b, c", 2)]  # one value, commas and all
    assert kept("label=d", "seed=1", "seed=2") == [("d", 1), ("d", 2)]  # a key repeated: any of its values
    assert kept("model.dropout.p_hidden=0.5", "seed=0") == [("d", 0)]
    for only, message in ((["label=dropout"], "--only label='dropout': matches none of the 6 runs; label takes "
                                              "'a b, c', 'd'"),
                          (["seed=7"], "seed takes 0, 1, 2"),
                          (["label=d", "model.dropout.p_hidden=0.2"], "no run matches every filter at once"),
                          (["optim.bogus=1"], "unknown key 'optim.bogus'"),
                          (["seed"], "expected KEY=VALUE")):
        with pytest.raises(ConfigError) as e:
            select(sw, only)
        assert message in str(e.value) and "\n" not in str(e.value)


def test_only_trains_the_chosen_runs_and_the_index_lists_them_all(tmp_path):
    path = write_config(tmp_path, SWEEP)
    folder = tmp_path / "res" / "tiny"
    r = cli("sweep", path, "--out", tmp_path / "res", "--only", "model.dropout.p_hidden=0.5", "--dry-run")
    assert r.returncode == 0 and "2 runs (of 6, by --only): 2 new" in " ".join(r.stdout.split())
    r = cli("sweep", path, "--out", tmp_path / "res", "--only", "model.dropout.p_hidden=0.5")
    assert r.returncode == 0, r.stderr
    rows = index(folder)
    assert len(rows) == 6
    assert sorted((x["model.dropout.p_hidden"], x["status"]) for x in rows) == \
        [("0.0", "new")] * 2 + [("0.2", "new")] * 2 + [("0.5", "completed")] * 2
    r = cli("sweep", path, "--out", tmp_path / "res", "--only", "label=nothing")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "matches none of the 6 runs" in r.stderr
    assert cli("sweep", path, "--out", tmp_path / "res").returncode == 0  # the rest; the chosen ones are kept
    assert {x["status"] for x in index(folder)} == {"completed"}
    assert [x["runs"] for x in read_sessions(folder)] == [2, 4]


# ----------------------------------------------------------------------------------------------
# packing


def test_packing_keeps_one_structure_per_stack_and_respects_the_cap(tmp_path):
    raw = {**BASE, "baseline": True, "model": {**BASE["model"], "width_rule": "scaled"},
           "sweep": {"grid": {"model.dropout.p_hidden": [0.5, 0.75], "optim.lr": [0.1, 0.05]}, "seeds": [0, 1]}}
    sw = expand(raw)
    runs = survey(sw.runs, tmp_path, sw.values)
    stacks = plan(runs, runner.torch.device("cpu"))
    shapes = [{tuple(r.cfg.widths()) for r in s} for s in stacks]
    assert all(len(s) == 1 for s in shapes)  # one shape per stack
    assert sorted(next(iter(s)) for s in shapes) == [(32, 32), (64, 64), (128, 128)]
    assert sorted(len(s) for s in stacks) == [4, 4, 4]  # the controls (32x32, lr x seed) form their own
    capped = plan(runs, runner.torch.device("cpu"), max_stack=3)
    assert sorted(len(s) for s in capped) == [1, 1, 1, 3, 3, 3]
    assert sorted(r.id for s in capped for r in s) == sorted(r.id for r in runs)


def test_memory_cap_shrinks_with_model_size():
    small = expand({**BASE}).runs[0]
    big = expand({**BASE, "model": {"hidden": [4096, 4096, 4096]}}).runs[0]
    assert stacks.model_bytes(big) > 100 * stacks.model_bytes(small)
    cpu = runner.torch.device("cpu")
    assert stacks.stack_cap(big, cpu) < stacks.stack_cap(small, cpu)
    assert stacks.stack_cap(big, cpu, max_stack=2) == 2


# ----------------------------------------------------------------------------------------------
# running: skip, resume, interrupt, failures, lock, index

SWEEP = {"grid": {"model.dropout.p_hidden": [0.2, 0.5]}, "seeds": [0, 1]}
# the sweeps that real signals stop: long enough that a signal sent at epoch 14 finds them still training on a
# loaded machine, and checkpointing every 50 ms, so that a SIGKILL resumes from a step in the middle of an epoch
LONG = {**BASE["optim"], "epochs": 60}
KILLED = {"checkpoint_seconds": 0.05, "optim": LONG}


def trained_once(tmp_path_factory, optim):
    """(config, results root): SWEEP trained once, uninterrupted, for the tests that compare against it or read it."""
    root = tmp_path_factory.mktemp("trained")
    path = write_config(root, SWEEP, optim=optim)
    r = cli("sweep", path, "--out", root / "res", "--workers", "1")  # one stack of all six runs
    assert r.returncode == 0, r.stderr
    return path, root / "res"


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """SWEEP at 6 epochs; a test that changes it works on a copy (`copied`)."""
    return trained_once(tmp_path_factory, BASE["optim"])


@pytest.fixture(scope="module")
def swept_long(tmp_path_factory):
    """SWEEP at LONG's 60 epochs: the numbers every interrupted and resumed run must end with."""
    return trained_once(tmp_path_factory, LONG)


def copied(swept, tmp_path, name="res"):
    """A copy of a trained sweep's results root, and the same config written next to it."""
    path, res = swept
    shutil.copytree(res, tmp_path / name)
    return write_config(tmp_path, SWEEP, optim=yaml.safe_load(path.read_text())["optim"]), tmp_path / name


def same_curves(reference, folder):
    """Every run of `reference` (a sweep folder) ended with the same metrics in `folder`."""
    runs = [d for d in reference.glob("*/") if (d / "metrics.csv").exists()]
    assert len(runs) == 6
    for d in runs:
        assert curves(d) == curves(folder / d.name), d.name


def test_sweep_writes_index_and_a_rerun_skips_everything(swept, tmp_path):
    path, res = copied(swept, tmp_path)
    folder = res / "tiny"
    rows = index(folder)
    assert list(rows[0]) == ["run_id", "status", "model.dropout.p_hidden", "seed", "precision", "dropout",
                             *INDEX_METRICS]
    assert {r["precision"] for r in rows} == {"fp32"}
    assert len(rows) == 6 and {x["status"] for x in rows} == {"completed"}
    assert sorted((x["model.dropout.p_hidden"], x["dropout"]) for x in rows) == \
        [("0.0", "False")] * 2 + [("0.2", "True")] * 2 + [("0.5", "True")] * 2
    for x in rows:
        s = read_summary(folder / x["run_id"])
        assert float(x["final_test_error"]) == s["final_test_error"] and int(x["epochs_completed"]) == 6
        assert not (folder / x["run_id"] / "checkpoint.pt").exists()  # removed once complete
    recorded = yaml.safe_load((folder / "sweep.yaml").read_text())
    assert recorded["keys"] == ["model.dropout.p_hidden"] and recorded["runs"] == 6 and recorded["seeds"] == [0, 1]

    stamps = {x["run_id"]: (folder / x["run_id"] / "summary.json").stat().st_mtime_ns for x in rows}
    r = cli("sweep", path, "--out", tmp_path / "res", "--dry-run")
    assert r.returncode == 0 and r.stdout.count("done") >= 6 and "0 model-steps" in r.stdout
    r = cli("sweep", path, "--out", tmp_path / "res")
    assert r.returncode == 0 and "6 already done; 0 stacks" in " ".join(r.stderr.split())
    assert stamps == {x["run_id"]: (folder / x["run_id"] / "summary.json").stat().st_mtime_ns for x in rows}
    # one session for the invocation that trained, none for the one that had nothing to do
    [session] = read_sessions(folder)
    assert session["outcome"] == "completed" and session["runs"] == 6 and session["device"] == "cpu"
    assert session["model_steps"] == sum(int(x["steps_completed"]) for x in rows) > 0
    assert 0 < session["wall_seconds"] < 600
    assert cli("sweep", path, "--out", tmp_path / "res", "--force").returncode == 0
    assert len(read_sessions(folder)) == 1  # --force retrains everything: the earlier session is void


def test_dry_run_trains_nothing(tmp_path):
    path = write_config(tmp_path, SWEEP)
    r = cli("sweep", path, "--out", tmp_path / "res", "--dry-run", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert "6 new" in r.stdout and "in 1 stack;" in " ".join(r.stdout.split()) and "model-steps" in r.stdout
    assert "1 stack at a time" in " ".join(r.stdout.split())
    assert not list((tmp_path / "res").glob("tiny/*/metrics.csv"))


def test_dry_run_times_a_training_set_of_one_batch(tmp_path):
    """Figure 10's 100 images are one step an epoch: the plan's timing steps run across epochs."""
    path = write_config(tmp_path, {"grid": {"optim.lr": [0.1, 0.3]}}, data={"dataset": "spiral", "train_size": 100})
    r = cli("sweep", path, "--out", tmp_path / "res", "--dry-run", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert "model-steps left" in r.stdout and "Traceback" not in r.stderr


class StopAfter(runner.Stop):
    """A Ctrl-C that arrives after `steps` training steps, without a signal."""

    def __init__(self, steps):
        super().__init__()
        self.left = steps

    @property
    def requested(self):
        self.left -= 1
        return self.left < 0

    @requested.setter
    def requested(self, value):
        pass


def train_plain(sw, root, stop=None):
    """Every run of `sw` in `root` through survey, plan and run_stack, as `sweep` trains them, with no display."""
    cpu = runner.torch.device("cpu")
    env = {"started": "-", "command": "-", "git_commit": "-", "device": "cpu", "device_name": "cpu"}
    runs = survey(sw.runs, root, sw.values)
    for s in plan(runs, cpu):
        local.record(s, runner.run_stack(s, runner.data_mod.load("spiral"), cpu, env, stop))
    return runs


def test_interrupted_runs_resume_to_the_uninterrupted_numbers(tmp_path, monkeypatch):
    sw = expand({**BASE, "sweep": SWEEP})
    go = functools.partial(train_plain, sw)

    whole = go(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        go(tmp_path / "cut", StopAfter(100))  # mid-epoch: 30 steps an epoch
    runs = survey(sw.runs, tmp_path / "cut", sw.values)
    assert {r.status for r in runs} == {"partial"} and {r.progress for r in runs} == {(3, 101)}
    assert all(read_summary(r.dir) is None for r in runs)
    resumed = go(tmp_path / "cut")
    assert [r.status for r in resumed] == ["completed"] * 6
    for a, b in zip(whole, resumed):
        assert curves(a.dir) == curves(b.dir) and len(curves(b.dir)) == 6


def epochs_written(folder):
    """Epochs in each run's metrics.csv under a sweep folder."""
    return {d.name: len(read_metrics(d)) for d in folder.glob("*/") if (d / "metrics.csv").exists()}


def wait_until(p, folder, ready):
    """Until ready(epochs_written(folder)); the sweep must still be training then, or the test would prove nothing."""
    deadline = time.time() + 120
    while time.time() < deadline:
        if ready(epochs_written(folder)):
            return
        assert p.poll() is None, "the sweep ended before the signal: " + p.communicate()[1]
        time.sleep(0.02)
    raise AssertionError(f"no progress in {folder} within 120 s")


def every_run_done_or_checkpointed(folder):
    """After a stop: each run either completed or keeps a checkpoint to resume from; at least one was stopped."""
    unfinished = [d for d in folder.glob("*/") if read_summary(d) is None]
    assert unfinished and all((d / "checkpoint.pt").is_file() for d in unfinished)
    assert all(read_summary(d)["status"] == "completed" for d in folder.glob("*/") if d not in unfinished)


def test_ctrl_c_then_kill_then_rerun_loses_nothing(swept_long, tmp_path):
    """A real SIGINT, a SIGTERM, then a SIGKILL mid-run, then a rerun: the numbers of one uninterrupted sweep,
    and a session line for every invocation, the killed one's kept current while it trained."""
    path = write_config(tmp_path, SWEEP, **KILLED)
    folder = tmp_path / "cut" / "tiny"
    cmd = [sys.executable, "-m", "dropout_lab", "sweep", str(path), "--out", str(tmp_path / "cut")]
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 130), (signal.SIGKILL, -9)):
        before = epochs_written(folder)
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        if sig == signal.SIGINT:  # every run training, 5 epochs in
            wait_until(p, folder, lambda now: len(now) == 6 and min(now.values()) >= 5)
        else:  # resumed runs that stopped at different steps train as separate stacks: one of them 2 epochs on
            wait_until(p, folder, lambda now, was=before: any(was[r] + 2 <= n <= LONG["epochs"] // 2
                                                              for r, n in now.items()))
        if sig == signal.SIGKILL:
            time.sleep(0.2)  # 4 checkpoint intervals of training: the kill must find a checkpoint made since
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
        assert p.returncode == code, err
        if sig != signal.SIGKILL:
            assert "interrupted" in err and "Traceback" not in err
            every_run_done_or_checkpointed(folder)
            if sig == signal.SIGINT:
                assert len(list(folder.glob("*/checkpoint.pt"))) == 6
        else:  # killed outright: its line says it was still training, with the time it had trained
            last = read_sessions(folder)[-1]
            assert last["outcome"] == "running" and last["wall_seconds"] > 0
            # and a run that trained 2 epochs and 0.2 s or more before the kill resumes from a checkpoint made
            # while it trained (every 50 ms), not from the one the SIGTERM left
            now = epochs_written(folder)
            moved = [r for r in now if now[r] >= before[r] + 2 and read_summary(folder / r) is None]
            assert moved and all(load_checkpoint(folder / r)["epoch"] > before[r] for r in moved)
    r = cli("sweep", path, "--out", tmp_path / "cut")
    assert r.returncode == 0, r.stderr
    # the next invocation, holding the lock, knows the killed one is gone and marks its line 'stopped'
    sessions = read_sessions(folder)
    assert [x["outcome"] for x in sessions] == ["interrupted", "interrupted", "stopped", "completed"]
    assert all(x["wall_seconds"] > 0 for x in sessions)
    same_curves(swept_long[1] / "tiny", folder)
    assert [x["status"] for x in index(folder)] == ["completed"] * 6


def test_workers_train_stacks_side_by_side_to_the_same_numbers_and_stop_together(swept_long, tmp_path):
    """--workers 2: the plan is split in two, the curves are those of one stack at a time, a SIGTERM
    checkpoints both running stacks, and a resume with one worker ends with the same numbers."""
    path = write_config(tmp_path, SWEEP, **KILLED)
    runs = survey(load_sweep(path).runs, tmp_path / "x")
    assert [len(s) for s in plan(runs, runner.torch.device("cpu"), workers=2)] == [3, 3]
    assert [len(s) for s in plan(runs, runner.torch.device("cpu"), workers=1)] == [6]  # the reference: one stack
    cmd = [sys.executable, "-m", "dropout_lab", "sweep", str(path), "--out", str(tmp_path / "two"), "--workers", "2"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(p, tmp_path / "two" / "tiny", lambda now: len(now) == 6 and min(now.values()) >= 3)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in err, err
    assert len(list((tmp_path / "two" / "tiny").glob("*/checkpoint.pt"))) == 6
    r = cli("sweep", path, "--out", tmp_path / "two", "--workers", "1")
    assert r.returncode == 0, r.stderr
    same_curves(swept_long[1] / "tiny", tmp_path / "two" / "tiny")
    first = read_sessions(tmp_path / "two" / "tiny")[0]
    assert first["stacks"] == 2 and "2 stacks at a time on 1 torch thread each" in first["device_name"]
    for bad, message in ((["--workers", "0"], "--workers = 0: must be >= 1"),
                         (["--workers", "2", "--backend", "ray"], "--workers = 2: side-by-side stacks are for")):
        r = cli("sweep", path, "--out", tmp_path / "bad", *bad)
        assert r.returncode == 2 and message in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr


def test_a_diverging_run_is_isolated_and_listed(tmp_path):
    path = write_config(tmp_path, {"grid": {"optim.lr": [0.1, 1e6]}}, baseline=False,
                        optim={**BASE["optim"], "max_norm": None, "lr_decay": 1.0})
    r = cli("sweep", path, "--out", tmp_path / "res")
    assert r.returncode == 1
    rows = {x["optim.lr"]: x for x in index(tmp_path / "res" / "tiny")}
    assert rows["0.1"]["status"] == "completed" and rows["0.1"]["epochs_completed"] == "6"
    assert rows["1000000.0"]["status"] == "diverged"
    assert "did not complete" in r.stderr and rows["1000000.0"]["run_id"] in r.stderr


def test_fail_fast_stops_at_a_divergence_and_checkpoints_the_rest(tmp_path):
    path = write_config(tmp_path, {"grid": {"optim.lr": [0.1, 1e6]}}, baseline=False,
                        optim={**BASE["optim"], "max_norm": None, "lr_decay": 1.0})
    r = cli("sweep", path, "--out", tmp_path / "res", "--fail-fast", "--workers", "1")  # one stack: no race
    assert r.returncode == 1 and "--fail-fast" in r.stderr
    rows = {x["optim.lr"]: x for x in index(tmp_path / "res" / "tiny")}
    assert rows["1000000.0"]["status"] == "diverged" and rows["0.1"]["status"] == "partial"
    assert (tmp_path / "res" / "tiny" / rows["0.1"]["run_id"] / "checkpoint.pt").exists()
    r = cli("sweep", path, "--out", tmp_path / "res")  # without --fail-fast the sweep goes on from there
    rows = {x["optim.lr"]: x for x in index(tmp_path / "res" / "tiny")}
    assert r.returncode == 1 and rows["0.1"]["status"] == "completed" and rows["0.1"]["epochs_completed"] == "6"


def stopped_without_resume_point(tmp_path, damage):
    """A sweep stopped by --fail-fast, with the 0.1 run's checkpoint then damaged by `damage(path)`: (config, run)."""
    path = write_config(tmp_path, {"grid": {"optim.lr": [0.1, 1e6]}}, baseline=False,
                        optim={**BASE["optim"], "max_norm": None, "lr_decay": 1.0})
    # one stack, so that the divergence stops the other run at the same step, however loaded the machine
    cli("sweep", path, "--out", tmp_path / "res", "--fail-fast", "--workers", "1")
    rows = {x["optim.lr"]: x for x in index(tmp_path / "res" / "tiny")}
    run = tmp_path / "res" / "tiny" / rows["0.1"]["run_id"]
    assert rows["0.1"]["status"] == "partial" and len(read_metrics(run)) > 0
    damage(run / "checkpoint.pt")
    return path, run


def held_then_restarted(tmp_path, path, run, says):
    """Without --restart the run is kept byte for byte, and the command says why and exits 1; with it, the run
    trains from scratch and its earlier curve is kept in earlier/1/."""
    folder = run.parent
    before, curve = tree_bytes(folder), (run / "metrics.csv").read_bytes()
    r = cli("sweep", path, "--out", tmp_path / "res", "--dry-run")
    assert r.returncode == 0 and says in " ".join(r.stderr.split()) and "kept as it is, not trained" in r.stderr
    assert "stopped (kept; --restart retrains)" in " ".join(r.stdout.split())
    for command in (("sweep", path), ("run", path)):  # the sweep, and `run` of the same file: its first point
        r = cli(*command, "--out", tmp_path / "res")
        assert r.returncode == 1 and "--restart trains them from scratch" in " ".join(r.stderr.split()), r.stderr
        assert tree_bytes(folder) == before  # not a byte changed
    r = cli("sweep", path, "--out", tmp_path / "res", "--restart")
    assert r.returncode == 1 and "diverged (kept from an earlier invocation" in r.stderr  # the lr 1e6 run's exit
    assert "--restart trains that run from scratch" in " ".join(r.stderr.split())
    assert "--restart trains them" not in " ".join(r.stderr.split())  # no run held any more
    rows = {x["optim.lr"]: x for x in index(folder)}
    assert rows["0.1"]["status"] == "completed" and rows["0.1"]["epochs_completed"] == "6"
    assert (run / "earlier" / "1" / "metrics.csv").read_bytes() == curve


def test_a_checkpoint_of_an_older_trainer_is_not_resumed(tmp_path):
    """Weights were (K, n_in, n_out) before checkpoint format 2: a square layer would load transposed."""
    import torch

    def older(ckpt):
        state = torch.load(ckpt, weights_only=True)
        assert state.pop("format") == 3 and state["epoch"] > 0
        torch.save(state, ckpt)  # as the trainer before format 2 wrote it

    path, run = stopped_without_resume_point(tmp_path, older)
    held_then_restarted(tmp_path, path, run, "an older trainer's")


def test_a_partial_run_without_its_checkpoint_is_kept_until_restart(tmp_path):
    """A checkpoint lost with its machine: the run's curve is kept as it is, never replaced by an ordinary command;
    --restart trains it again and keeps the curve in earlier/."""
    path, run = stopped_without_resume_point(tmp_path, lambda ckpt: ckpt.unlink())
    epochs = len(read_metrics(run))
    held_then_restarted(tmp_path, path, run, f"{epochs} epochs recorded and no checkpoint to resume from")


def test_a_failing_stack_does_not_stop_the_sweep_and_fail_fast_does(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from dropout_lab.cli import app

    real = runner.train_stack

    def broken(cfgs, *a, **k):
        if cfgs[0].widths() == [16]:
            raise RuntimeError("injected failure")
        return real(cfgs, *a, **k)

    monkeypatch.setattr(runner, "train_stack", broken)
    path = write_config(tmp_path, {"grid": {"model.hidden": [[16], [8]]}}, baseline=False)
    res = CliRunner().invoke(app, ["sweep", str(path), "--out", str(tmp_path / "res")])
    assert res.exit_code == 1
    rows = {x["model.hidden"]: x for x in index(tmp_path / "res" / "tiny")}
    assert rows["[16]"]["status"] == "failed" and rows["[8]"]["status"] == "completed"
    assert "injected failure" in read_summary(tmp_path / "res" / "tiny" / rows["[16]"]["run_id"])["error"]

    res = CliRunner().invoke(app, ["sweep", str(path), "--out", str(tmp_path / "ff"), "--fail-fast", "--workers", "1"])
    assert res.exit_code == 1
    statuses = sorted(x["status"] for x in index(tmp_path / "ff" / "tiny"))
    assert statuses == ["failed", "new"]  # the second stack never started
    # side by side, the other stack was already training: it stops at its next step, checkpointed
    res = CliRunner().invoke(app, ["sweep", str(path), "--out", str(tmp_path / "f2"), "--fail-fast", "--workers", "2"])
    assert res.exit_code == 1
    rows = {x["model.hidden"]: x for x in index(tmp_path / "f2" / "tiny")}
    assert rows["[16]"]["status"] == "failed" and rows["[8]"]["status"] in ("partial", "completed")
    if rows["[8]"]["status"] == "partial":
        assert (tmp_path / "f2" / "tiny" / rows["[8]"]["run_id"] / "checkpoint.pt").is_file()


def test_a_second_writer_is_refused_clearly(swept, tmp_path):
    path = write_config(tmp_path, SWEEP)
    folder = tmp_path / "res" / "tiny"
    with folder_lock(folder):
        with pytest.raises(FolderBusy):
            with folder_lock(folder):
                pass
        r = spawn("sweep", path, "--out", tmp_path / "res")  # another process, as a second user's would be
        assert r.returncode == 1 and f"is in use by dropout-lab pid {os.getpid()}" in r.stderr
        assert r.stderr.strip().count("\n") == 0
        assert not list(folder.glob("*/metrics.csv"))
    shutil.copytree(swept[1], tmp_path / "res", dirs_exist_ok=True)  # the finished sweep, in the folder held
    r = cli("sweep", path, "--out", tmp_path / "res")  # released with its holder: the folder is this invocation's
    assert r.returncode == 0 and "6 already done" in " ".join(r.stderr.split())


def test_ray_backend_gives_the_local_index(swept, tmp_path):
    pytest.importorskip("ray")
    path, local_root = swept  # trained as one stack of 6; Ray's tasks train stacks of 3
    r = spawn("sweep", path, "--out", tmp_path / "ray", "--backend", "ray", "--max-stack", "3")
    assert r.returncode == 0, r.stderr
    keep = ["run_id", "status", "model.dropout.p_hidden", "seed", "dropout", "final_test_error",
            "best_test_error", "final_train_error", "epochs_completed"]
    local, ray = ([{k: x[k] for k in keep} for x in index(root / "tiny")] for root in (local_root, tmp_path / "ray"))
    assert local == ray
    env = (tmp_path / "ray" / "tiny" / local[0]["run_id"] / "env.json").read_text()
    assert '"backend": "ray"' in env


def test_plot_draws_curves_and_the_sweep_and_replots_only_what_changed(swept, tmp_path):
    _, res = copied(swept, tmp_path, "results")
    folder = res / "tiny"
    r = cli("plot", folder)
    assert r.returncode == 0, r.stderr
    for name in ("curves.png", "curves.svg", "sweep_p_hidden.png", "sweep_p_hidden.svg"):
        assert (folder / "plots" / name).stat().st_size > 5_000, name
    r = cli("plot", folder, "--x", "optim.lr")
    assert r.returncode == 2 and "optim.lr" in r.stderr and r.stderr.strip().count("\n") == 0
    r = cli("plot", folder, "--y", "val_error")
    assert r.returncode == 2 and "val_error" in r.stderr
    # no argument: every folder under ./results whose plots were drawn from other files than its runs' now
    r = cli("plot", cwd=tmp_path)
    assert r.returncode == 0 and "plots up to date" in r.stdout and "wrote" not in r.stdout
    (folder / "index.csv").touch()  # a new time, the same bytes: nothing to redraw
    r = cli("plot", cwd=tmp_path)
    assert r.returncode == 0 and "plots up to date" in r.stdout
    (folder / "sweep.yaml").write_text((folder / "sweep.yaml").read_text() + "# edited\n")
    r = cli("plot", cwd=tmp_path)
    assert r.returncode == 0 and "sweep_p_hidden.png" in r.stdout


def test_a_committed_resume_point_resumes_exactly_on_a_fresh_clone(tmp_path):
    """A run stopped mid-way keeps a resume point; on another machine (the checkpoint, git-ignored, is gone) the
    sweep resumes from it to the uninterrupted run's numbers, and the point goes when the run completes."""
    sw = expand({**BASE, "sweep": SWEEP})
    go = functools.partial(train_plain, sw)

    whole = go(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        go(tmp_path / "cut", StopAfter(100))
    r = cli("resume-point", tmp_path / "cut")
    assert r.returncode == 0 and "6 resume point(s)" in r.stdout and "update 101" in r.stdout, r.stdout + r.stderr
    r = cli("resume-point", tmp_path / "nowhere")
    assert r.returncode == 2 and r.stderr.strip() == f"error: results folder '{tmp_path / 'nowhere'}' not found"
    clone = tmp_path / "clone"  # what a clone has: everything git keeps, no checkpoint.pt
    shutil.copytree(tmp_path / "cut", clone, ignore=shutil.ignore_patterns("checkpoint.pt", ".lock"))
    runs = survey(sw.runs, clone, sw.values)
    assert {r.progress for r in runs} == {(3, 101)} and not any(r.held for r in runs)
    resumed = go(clone)
    for a, b in zip(whole, resumed):
        assert curves(a.dir) == curves(b.dir) and len(curves(b.dir)) == 6
        assert not (b.dir / "resume.pt").exists() and not (b.dir / "checkpoint.pt").exists()


def test_a_resume_point_of_a_3x1024_net_fits_in_25_mb(tmp_path):
    """fp32 weights and optimiser state, generator states, the epoch's order and the step of a 784-1024x3-10
    net, as the resume point holds them."""
    import torch

    from dropout_lab.config import load
    from dropout_lab.speed import bench
    from dropout_lab.training.train import StackTrainer

    tr = StackTrainer([load(None, ["model.hidden=[1024,1024,1024]", "optim.max_norm=2.0"])], bench.synthetic())
    tr.begin_epoch()
    tr.train_step()
    torch.save(tr.model_state(0), tmp_path / "resume.pt")
    assert (tmp_path / "resume.pt").stat().st_size <= 25_000_000


def test_a_folder_swept_in_two_precisions_lists_both_in_its_index(tmp_path):
    """bf16 and fp32 runs of one sweep are different runs in one folder: each invocation keeps the other's rows."""
    cfg = write_config(tmp_path, {"seeds": [0]}, name="twice", optim={"epochs": 1})
    assert cli("sweep", cfg, "--out", tmp_path / "r", "--precision", "bf16").returncode == 0
    assert cli("sweep", cfg, "--out", tmp_path / "r").returncode == 0
    rows = index(tmp_path / "r" / "twice")
    assert sorted(r["precision"] for r in rows) == ["bf16", "bf16", "fp32", "fp32"]
    assert {r["status"] for r in rows} == {"completed"}
    before = tree_bytes(tmp_path / "r")
    assert cli("sweep", cfg, "--out", tmp_path / "r", "--precision", "bf16").returncode == 0  # and back:
    assert tree_bytes(tmp_path / "r") == before  # the same index and sweep.yaml, whichever precision wrote last
