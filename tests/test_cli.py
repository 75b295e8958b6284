"""End to end through the command line, as a user runs it."""

import csv
import json
import os

import pytest

from dropout_lab.store.readback import METRIC_COLUMNS, run_dirs

from conftest import ROOT, cli, entry_point


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_run_folder(d, dropout):
    assert {p.name for p in d.iterdir()} >= {"config.yaml", "metrics.csv", "env.json", "summary.json"}
    rows = read_csv(d / "metrics.csv")
    assert list(rows[0]) == METRIC_COLUMNS
    summary = json.loads((d / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["dropout"] is dropout
    assert summary["epochs_completed"] == len(rows)
    assert summary["final_test_error"] == pytest.approx(float(rows[-1]["test_error"]))
    bound = rows[-1]["max_norm_bound"]  # the share of units at c: a number with max-norm, empty without
    if summary["final_max_norm_bound"] is None:
        assert bound == ""
    else:
        assert summary["final_max_norm_bound"] == pytest.approx(float(bound))
        assert 0 <= summary["final_max_norm_bound"] <= 1
    env = json.loads((d / "env.json").read_text())
    assert {"torch", "device", "git_commit", "command"} <= set(env)
    return rows, summary


def test_run_spiral_end_to_end(tmp_path):
    r = cli("run", ROOT / "configs/spiral.yaml", "--out", tmp_path, "--set", "optim.epochs=12", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    dirs = run_dirs(tmp_path / "spiral")
    assert len(dirs) == 2
    for d in dirs:
        rows, _ = check_run_folder(d, dropout=d.name.startswith("bern"))
        assert len(rows) == 12
        assert float(rows[-1]["test_error"]) < float(rows[0]["test_error"]) - 0.05  # it learns
    assert "control" in r.stdout and "dropout" in r.stdout

    again = cli("run", ROOT / "configs/spiral.yaml", "--out", tmp_path, "--set", "optim.epochs=12")
    assert again.returncode == 0 and again.stderr.count("already completed") == 2  # a finished run is kept

    p = cli("plot", tmp_path / "spiral")
    assert p.returncode == 0, p.stderr
    png = tmp_path / "spiral" / "plots" / "curves.png"
    assert png.stat().st_size > 10_000 and (png.with_suffix(".svg")).stat().st_size > 10_000


def test_run_mnist_subset_end_to_end(tmp_path, mnist):
    sets = ["optim.epochs=3", "data.train_size=2000", "data.validation_size=500", "model.hidden=[256,256]",
            "model.init_std=null", "optim.lr=0.5"]
    r = cli("run", ROOT / "configs/mnist.yaml", "--out", tmp_path, "--device", "cpu", *(f"--set={s}" for s in sets))
    assert r.returncode == 0, r.stderr
    dirs = run_dirs(tmp_path / "mnist")
    assert len(dirs) == 2
    for d in dirs:
        rows, summary = check_run_folder(d, dropout=d.name.startswith("bern"))
        assert [int(x["epoch"]) for x in rows] == [1, 2, 3]
        assert int(rows[0]["step"]) == 20  # 2,000 examples in batches of 100
        assert float(rows[-1]["test_error"]) < float(rows[0]["test_error"])
        assert summary["final_test_error"] < 0.3 and rows[-1]["val_error"] != ""
    assert "% vs" in r.stdout  # the comparison line


def test_an_unfinished_run_is_kept_until_restart_and_a_finished_one_kept(tmp_path):
    args = ("run", ROOT / "configs/spiral.yaml", "--out", tmp_path, "--set", "optim.epochs=3")
    assert cli(*args).returncode == 0
    drop, ctrl = sorted(run_dirs(tmp_path / "spiral"), key=lambda d: not d.name.startswith("bern"))
    kept = (ctrl / "summary.json").read_text()
    curve = (drop / "metrics.csv").read_bytes()
    (drop / "summary.json").unlink()  # as a crash mid-run leaves it: 3 epochs recorded, no checkpoint
    r = cli(*args)  # nothing replaces the recorded curve without --restart
    assert r.returncode == 1 and r.stderr.count("already completed") == 1
    assert "3 epochs recorded and no checkpoint to resume from: kept as it is" in " ".join(r.stderr.split())
    assert "stopped (kept; --restart retrains)" in " ".join(r.stdout.split())
    assert (drop / "metrics.csv").read_bytes() == curve and not (drop / "summary.json").exists()
    r = cli(*args, "--restart")
    assert r.returncode == 0 and r.stderr.count("already completed") == 1
    assert json.loads((drop / "summary.json").read_text())["status"] == "completed"
    assert (drop / "earlier" / "1" / "metrics.csv").read_bytes() == curve  # the earlier attempt, kept
    assert (ctrl / "summary.json").read_text() == kept


def test_a_diverging_model_exits_1_and_is_marked(tmp_path):
    sets = ["optim.epochs=3", "baseline=false", "optim.name=sgd", "optim.lr=1e9", "optim.momentum_rule=classical"]
    r = cli("run", ROOT / "configs/spiral.yaml", "--out", tmp_path, *(f"--set={s}" for s in sets))
    assert r.returncode == 1, r.stderr
    (d,) = run_dirs(tmp_path / "spiral")
    assert json.loads((d / "summary.json").read_text())["status"] == "diverged"
    assert "diverged" in r.stderr


def test_precision_is_in_the_run_id_config_and_env_and_bad_ones_are_refused(tmp_path):
    args = ("run", ROOT / "configs/spiral.yaml", "--out", tmp_path, "--set", "optim.epochs=2", "--device", "cpu")
    assert cli(*args).returncode == 0
    r = cli(*args, "--precision", "bf16")
    assert r.returncode == 0, r.stderr
    dirs = run_dirs(tmp_path / "spiral")
    bf16 = [d for d in dirs if "-bf16-" in d.name]
    assert len(dirs) == 4 and len(bf16) == 2  # another precision is another run, never the fp32 one resumed
    for d in bf16:
        assert "precision: bf16" in (d / "config.yaml").read_text()
        env = json.loads((d / "env.json").read_text())
        assert env["precision"] == "bf16" and env["bf16_gemm"] in ("native", "emulated")
    fp32 = [d for d in dirs if d not in bf16]
    assert all(json.loads((d / "env.json").read_text())["precision"] == "fp32" for d in fp32)
    # the two precisions trained different numbers from the same seeds
    assert (fp32[0] / "metrics.csv").read_text() != (bf16[0] / "metrics.csv").read_text()

    for bad, key in ((("--precision", "fp16"), "precision"), (("--precision", "tf32"), "--precision = tf32"),
                     (("--set", "precision=tf32"), "precision = tf32")):
        r = cli("run", ROOT / "configs/spiral.yaml", "--out", tmp_path / "bad", "--device", "cpu", *bad)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and key in r.stderr, r.stderr
        assert not (tmp_path / "bad").exists()  # refused before anything was written


# ----- the installed entry point: a new interpreter per command, as a shell starts it (the tests above run the
# same commands in this process, conftest.cli); every command once, and each of the exit codes 0, 1 and 2

ENTRY = [  # (what, arguments, exit code, a line of the output holds)
    ("run", ["run", "configs/spiral.yaml", "--out", "{tmp}", "--set", "optim.epochs=1", "--set", "seed=7"], 0,
     "dropout: "),
    ("run that diverges", ["run", "configs/spiral.yaml", "--out", "{tmp}", "--set", "optim.epochs=1",
                           "--set", "baseline=false", "--set", "optim.name=sgd", "--set", "optim.lr=1e9",
                           "--set", "optim.momentum_rule=classical"], 1, "1 run(s) did not complete"),
    ("sweep", ["sweep"], 0, "p_fixed_n.yaml"),
    ("plot", ["plot", "{tmp}/nowhere"], 2, "not found"),
    ("report", ["report", "--out", "{tmp}/report.txt"], 2, "must be a .md file"),
    ("bench", ["bench", "--device", "tpu"], 2, "--device = 'tpu'"),
    ("beyond ridge", ["beyond", "ridge", "--quick", "--out", "{tmp}/a_file"], 2, "is a file"),
    ("beyond features", ["beyond", "features", "--out", "{tmp}/a_file"], 2, "is a file"),
    ("data info", ["data", "info"], 0, "MNIST"),
    ("data fetch", ["data", "fetch", "--from", "{tmp}/nowhere"], 2, "not a folder"),
]


@pytest.mark.parametrize("what,args,code,needle", ENTRY, ids=[e[0] for e in ENTRY])
def test_every_command_through_the_installed_entry_point(tmp_path, mnist, what, args, code, needle):
    import subprocess

    (tmp_path / "a_file").write_text("x\n")
    argv = [entry_point(), *(a.format(tmp=tmp_path) for a in args)]
    env = {**os.environ, "COLUMNS": "100"}
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == code, r.stderr
    assert needle in r.stdout + r.stderr and "Traceback" not in r.stderr
    if code == 2:  # refused: one line, before any work
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    if what == "run":  # the command as typed, the program's own name first
        [env] = [json.loads(p.read_text()) for p in (tmp_path / "spiral").glob("bern*/env.json")]
        assert env["command"].startswith("dropout-lab run configs/spiral.yaml ")
