"""What a person sees while a plan trains: the progress line, its time left, the plain log lines, what is said at
the start, and the dry run's estimate, all on a fake clock (never a timed test)."""

import io

import pytest
import torch
from rich.console import Console

from dropout_lab.store.results import env_info
from dropout_lab.sweeps import watch
from dropout_lab.sweeps.local import execute
from dropout_lab.sweeps.runner import survey
from dropout_lab.sweeps.stacks import estimate_seconds, plan
from dropout_lab.sweeps.sweep import load_sweep
from dropout_lab.training import data as data_mod
from dropout_lab.training import train as train_mod

from conftest import ROOT, cli


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(watch, "now", c)
    return c


def two_stacks(big_work=4.0):
    """A plan of two stacks of 2 models: 10 epochs of 10 steps each, one pass every epoch; the second's
    updates cost 4 times the first's."""
    return [watch.Stack(["a", "b"], 10, 10, 1, update_work=1.0, eval_work=5.0, live=2),
            watch.Stack(["c", "d"], 10, 10, 1, update_work=big_work, eval_work=20.0, live=2)]


def drive(meter, clock, n, epochs, rate, rows=lambda e: [{"step": 0, "test_error": 0.1, "diverged": False}] * 2):
    """Train stack n for `epochs` epochs on a machine doing `rate` work units a second."""
    s = meter.stacks[n]
    for _ in range(epochs):
        for _ in range(s.steps_per_epoch):
            clock.t += s.live * s.update_work / rate
            meter.step(n)
        clock.t += s.live * s.eval_work / rate
        meter.epoch(n, [{**r, "step": s.step} for r in rows(s.step)])


def test_time_left_is_the_remaining_work_at_the_measured_rate_waiting_stacks_included(clock):
    meter = watch.Meter(two_stacks(), runs_total=4, runs_done=0, updates_done_before=0)
    assert meter.time_left() is None and "left ?" in meter.line()  # nothing measured yet
    drive(meter, clock, 0, 5, rate=10.0)
    truth = (5 * (2 * 10 * 1.0 + 2 * 5.0) + 10 * (2 * 10 * 4.0 + 2 * 20.0)) / 10.0  # stack 0's rest, then stack 1
    assert meter.time_left() == pytest.approx(truth, rel=1e-9)
    drive(meter, clock, 0, 5, rate=10.0)
    meter.finish(0, completed=2)
    start = clock.t
    drive(meter, clock, 1, 3, rate=10.0)
    assert meter.time_left() == pytest.approx(7 * (2 * 10 * 4.0 + 2 * 20.0) / 10.0, rel=1e-9)
    assert meter.runs_done == 2 and meter.updates == 2 * 100 + 2 * 30 and meter.planned == 400
    assert clock.t > start


def test_the_rate_is_this_sittings_recent_one(clock):
    """A machine that slows down: within the window the estimate follows it, and the earlier rate is forgotten."""
    stack = watch.Stack(["a"], 1000, 100, 1, update_work=1.0, eval_work=0.0, live=1)
    meter = watch.Meter([stack], 1, 0, 0, window=60.0)
    drive(meter, clock, 0, 20, rate=100.0)
    fast = meter.time_left()
    drive(meter, clock, 0, 20, rate=25.0)  # 80 s at the new rate, more than the window
    assert meter.time_left() == pytest.approx(4 * fast * (1000 - 40) / (1000 - 20), rel=0.05)


def test_a_diverged_model_no_longer_counts_and_a_resumed_stack_starts_where_it_stopped(clock):
    stack = watch.Stack(["a", "b"], 10, 10, 1, update_work=1.0, eval_work=0.0, step=50, live=2)
    meter = watch.Meter([stack], runs_total=3, runs_done=1, updates_done_before=100)
    assert meter.updates == 100 + 2 * 50 and meter.planned == 100 + 2 * 100
    drive(meter, clock, 0, 1, rate=10.0, rows=lambda s: [{"step": s, "test_error": float("nan"), "diverged": True},
                                                          {"step": s, "test_error": 0.2, "diverged": False}])
    assert stack.live == 1 and stack.work_left() == 40 * 1.0
    assert meter.error() == "20.00%"


@pytest.mark.parametrize("width", [80, 72, 64])
def test_the_progress_line_fits_and_shortens_labels_before_dropping_numbers(clock, width):
    stacks = [watch.Stack([f"r{i}" for i in range(3)], 1667, 600, 1, update_work=1e9, eval_work=1e9, live=3)
              for _ in range(7)]
    meter = watch.Meter(stacks, runs_total=21, runs_done=3, updates_done_before=3_000_600)
    clock.t += 123 * 3600 + 4 * 60 + 5  # elapsed past 99 hours
    drive(meter, clock, 0, 1, rate=1e9, rows=lambda s: [{"step": s, "test_error": e, "diverged": False}
                                                        for e in (0.0112, 0.0119, 0.0115)])
    line = meter.line(width)
    assert len(line) <= width
    for number in ("3/21", "1.12–1.19%", "5d 03h", "left "):
        assert number in line, (number, line)
    assert "3.00M/24.00M" in line, line  # 3,002,400 of 24,004,800 updates, shortened
    assert "updates 3,002,400/24,004,800" in meter.line(120)  # room enough: the exact counts, with their words


def test_a_log_gets_a_plain_flushed_line_after_the_first_epoch_then_at_most_one_a_minute(clock):
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=False)
    stack = watch.Stack(["a"], 100, 10, 1, update_work=1.0, eval_work=0.0, live=1)
    meter = watch.Meter([stack], 1, 0, 0)
    with watch.Display(meter, console) as display:
        for _ in range(30):  # epochs of 10 s: a line at the first, then one a minute
            drive(meter, clock, 0, 1, rate=1.0)
            display.plain()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 + 300 // 60 - 1 + 1  # the first epoch, each minute after it, and the last state
    assert all(len(x) <= 80 and x.startswith("runs 0/1") for x in lines)
    assert "elapsed 0:00:10" in lines[0] and "elapsed 0:05:00" in lines[-1]


def spiral_sweep(tmp_path, *sets, grid=()):
    path = tmp_path / "w.yaml"
    path.write_text("name: w\ndata: {dataset: spiral}\nbaseline: false\n")
    return load_sweep(path, list(sets), list(grid))


def test_the_start_says_which_runs_resume_which_start_and_where_checkpoints_go(tmp_path):
    sw = spiral_sweep(tmp_path, "model.hidden=[16]", "optim.epochs=2", "checkpoint_seconds=30", grid=["seed=0,1,2"])
    runs = survey(sw.runs, tmp_path / "x", sw.values)
    runs[0].progress, runs[0].status = (1, 30), "partial"
    runs[1].status = "failed"
    lines = watch.start_lines([runs], keep_checkpoints=False)
    assert lines[0] == f"resume from update 30 (epoch 1): {runs[0].id}"
    assert f"restart from update 0 (failed earlier): {runs[1].id}" in lines
    assert f"start: {runs[2].id}" in lines
    assert "replaced every 30 s" in lines[-1] and "removed when the run completes" in lines[-1]


def fake_machine(monkeypatch, clock, per_step=0.01, per_mac=2e-7, per_image=2e-6):
    """Training and evaluation advance the fake clock in proportion to what they compute, plus a fixed cost
    per step that the meter's multiply-add count does not see (a 2-64-3 net's step costs 1.3 times a
    2-256-3 net's per multiply-add), and take no real time to measure."""
    step, evaluate = train_mod.StackTrainer.train_step, train_mod.StackTrainer.evaluate

    def train_step(self):
        step(self)
        clock.t += self.K * (per_step + 3 * self.batch * watch.macs(self.model.sizes) * per_mac)

    def timed_evaluate(self, x, y):
        clock.t += self.K * x.shape[-2] * (per_image + watch.macs(self.model.sizes) * per_mac)
        return evaluate(self, x, y)

    monkeypatch.setattr(train_mod.StackTrainer, "train_step", train_step)
    monkeypatch.setattr(train_mod.StackTrainer, "evaluate", timed_evaluate)


# README, "Watching a long run": the dry run times each structure, so on the fake machine it is all but exact;
# the time left weighs a structure it has not measured yet by multiply-adds, and its own rate once measured
DRY_FACTOR, LEFT_FACTOR, MEASURED_FACTOR = 1.1, 1.5, 1.05


def test_dry_run_and_time_left_are_within_the_stated_factors_of_the_time_taken(tmp_path, monkeypatch, clock):
    """Two structures of different cost, on a fake machine: the dry run's estimate, and every time left the
    progress line shows, against what the fake clock says the plan then took."""
    fake_machine(monkeypatch, clock)
    sw = spiral_sweep(tmp_path, "optim.epochs=12", "checkpoint_seconds=1e9",
                      grid=["model.hidden=[64],[256]", "seed=0,1"])
    datasets = {"spiral": data_mod.load("spiral")}
    runs = survey(sw.runs, tmp_path / "r", sw.values)
    stacks = plan(runs, torch.device("cpu"))
    assert len(stacks) == 2
    estimate = estimate_seconds(stacks, datasets, torch.device("cpu"))
    seen = []
    monkeypatch.setattr(watch.Display, "plain", lambda self, force=False: seen.append(
        (clock.t, self.meter.time_left(), len(self.meter.measured))))
    start = clock.t
    execute(runs, stacks, datasets, torch.device("cpu"), env_info(torch.device("cpu")), Console(file=io.StringIO()))
    taken = clock.t - start
    assert all(r.status == "completed" for r in runs) and taken > 60
    assert 1 / DRY_FACTOR <= estimate / taken <= DRY_FACTOR, (estimate, taken)
    lefts = [(left / (clock.t - t), measured) for t, left, measured in seen if left and clock.t > t]
    assert len(lefts) >= 10 and {m for _, m in lefts} == {1, 2}
    for ratio, measured in lefts:
        factor = MEASURED_FACTOR if measured == 2 else LEFT_FACTOR
        assert 1 / factor <= ratio <= factor, (ratio, measured)
    assert max(max(r, 1 / r) for r, m in lefts if m == 1) > MEASURED_FACTOR  # the unmeasured structure shows


def test_a_live_view_plot_watch_redraws_changed_folders_until_ctrl_c(tmp_path, monkeypatch):
    cfg = ROOT / "configs/spiral.yaml"
    assert cli("run", cfg, "--set", "optim.epochs=2", "--out", tmp_path).returncode == 0
    folder = tmp_path / "spiral"
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 2:  # a run changes between the first and the second check
            (next(folder.glob("nodrop-*")) / "summary.json").write_text(
                (next(folder.glob("nodrop-*")) / "summary.json").read_text() + " ")
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr("time.sleep", sleep)
    res = cli("plot", folder, "--watch", "30")
    assert res.returncode == 0, res.stderr
    assert sleeps == [30.0] * 3
    assert res.stdout.count("wrote") == 2 * 2  # drawn at the start, and once more after the change
    assert "watching" in res.stdout and "stopped watching" in res.stdout
    assert cli("plot", folder, "--watch", "0").returncode == 2
    assert cli("plot", folder, "--watch", "inf").returncode == 2


def test_each_stack_side_by_side_has_its_own_time_left(clock):
    """Two stacks training at once: each line gives that stack's work at its own measured rate."""
    stacks = [watch.Stack(["a"], 10, 10, 1, update_work=1.0, eval_work=0.0, live=1),
              watch.Stack(["b"], 20, 10, 1, update_work=2.0, eval_work=0.0, live=1)]
    meter = watch.Meter(stacks, 2, 0, 0, workers=2)
    for _ in range(20):  # interleaved, as two worker threads step them: a step of each takes 2 s
        clock.t += 1.0
        meter.step(0)
        clock.t += 1.0
        meter.step(1)
    a, b = meter.stack_lines(120)
    assert a.endswith("left 0:02:40") and b.endswith("left 0:06:00"), (a, b)  # 80 and 180 steps to go
