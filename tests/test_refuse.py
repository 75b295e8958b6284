"""Bad input is refused before any work: one line naming the key or path, the value and what is allowed,
exit 2, no traceback and nothing written. Then the output people read: tables at 80 columns and piped,
Markdown as it is."""

import csv
import json
import os
import re
import statistics
import sys

import pytest

from dropout_lab.store.readback import run_dirs

from conftest import ROOT, cli

SPIRAL = "name: s\ndata: {dataset: spiral}\nmodel: {hidden: [16]}\noptim: {epochs: 1}\n"


def refused(r, needle, *absent):
    """Exit 2 with one line holding `needle`, no traceback, and none of the paths in `absent` written."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr + r.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    for p in absent:
        assert not os.path.exists(p), p


def config(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# ----- configs that are empty, ambiguous or unreadable; folder names

CONFIG_FILES = [
    ("empty", "", "is empty"),
    ("only comments", "# nothing here\n", "is empty"),
    ("duplicate section", "name: x\noptim: {name: adam, lr: 0.01}\nmodel: {}\noptim: {epochs: 2}\n",
     "key 'optim' is given twice (lines 2 and 4)"),
    ("duplicate nested key", "name: x\noptim:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n",
     "key 'optim.lr' is given twice (lines 3 and 5)"),
    ("not UTF-8", b"name: x\noptim: {lr: 0.1}  # \xe9t\xe9\n", "not UTF-8"),
    ("reserved name", "name: report\n", "name = \"report\": is reserved"),
    ("reserved .md name", "name: REPORT.md\n", "is reserved"),
    ("a scale's folder", "name: fig4-quick\n", "names ending in -quick or -medium"),
    ("non-ASCII name", "name: Résumé\n", "name = \"Résumé\": must be a folder name: ASCII letters"),
    ("infinite lr", "name: x\noptim: {lr: .inf}\n", "optim.lr = inf: must be a finite number"),
    ("recursive alias", "name: x\nmodel: &m {hidden: *m}\n", "an alias (*m) at line 2: aliases are not allowed"),
    ("alias bomb", "name: x\na: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(  # 9^10 ones, were it expanded
        f"{k}: &{k} [{', '.join(['*' + p] * 9)}]\n" for p, k in zip("abcdefghi", "bcdefghij"))
     + "model: {hidden: *j}\n", "an alias (*a) at line 3"),
    ("nested without end", "name: x\nmodel: {hidden: " + "[" * 5000 + "]" * 5000 + "}\n", "nested more than 32 levels"),
    ("a megabyte of keys", "name: x\n" + "".join(f"k{i}: {i}\n" for i in range(120_000)), "a config is at most"),
]


@pytest.mark.parametrize("what,text,needle", CONFIG_FILES, ids=[c[0] for c in CONFIG_FILES])
def test_a_bad_config_file_is_refused(tmp_path, what, text, needle):
    out = tmp_path / "results"
    refused(cli("run", config(tmp_path, text), "--out", out), needle, out)
    refused(cli("sweep", config(tmp_path, text), "--out", out, "--dry-run"), needle, out)


def test_a_folder_as_config_and_a_file_name_that_cannot_be_a_folder(tmp_path):
    refused(cli("run", tmp_path, "--out", tmp_path / "r"), "is a folder", tmp_path / "r")
    bad = config(tmp_path, "data: {dataset: spiral}\n", name="my run.yaml")
    refused(cli("run", bad, "--out", tmp_path / "r"), "gives no name:", tmp_path / "r")


def test_a_config_without_a_name_is_named_after_its_file_and_another_file_cannot_mix_into_it(tmp_path):
    out = tmp_path / "results"
    first = config(tmp_path, SPIRAL.replace("name: s\n", ""), name="spiral_small.yaml")
    r = cli("run", first, "--out", out)
    assert r.returncode == 0, r.stderr
    assert len(run_dirs(out / "spiral_small")) == 2
    assert json.loads((out / "spiral_small" / "source.json").read_text())["config"] == str(first)
    env = json.loads(next((out / "spiral_small").glob("*/env.json")).read_text())
    assert env["command"].startswith("python -m dropout_lab run ")  # as typed, not __main__.py

    # another file that names the same folder is refused, whatever it trains; the first file is not
    other = config(tmp_path, SPIRAL.replace("name: s", "name: spiral_small").replace("[16]", "[8]"), name="o.yaml")
    before = sorted(p.name for p in (out / "spiral_small").iterdir())
    refused(cli("run", other, "--out", out), "holds the runs of")
    refused(cli("sweep", other, "--out", out, "--dry-run"), "holds the runs of")
    assert sorted(p.name for p in (out / "spiral_small").iterdir()) == before
    assert cli("run", first, "--out", out, "--set", "seed=1").returncode == 0  # the same file adds a seed
    # a copy with the same content is the same experiment
    copy = config(tmp_path, first.read_text(), name="copy.yaml")
    assert cli("run", copy, "--out", out, "--set", "name=spiral_small").returncode == 0



def test_the_same_config_from_another_working_folder_is_the_same_experiment(tmp_path):
    """A folder whose owner is known only by a relative path (no source.json: trained before it existed, or
    from a run's recorded command) accepts its config named from inside configs/, and refuses another file."""
    (tmp_path / "configs").mkdir()
    config(tmp_path / "configs", SPIRAL.replace("name: s", "name: own"), name="own.yaml")
    assert cli("run", "configs/own.yaml", "--out", "results", cwd=tmp_path).returncode == 0
    (tmp_path / "results" / "own" / "source.json").unlink()
    r = cli("run", "own.yaml", "--out", "../results", cwd=tmp_path / "configs")
    assert r.returncode == 0, r.stderr
    (tmp_path / "results" / "own" / "source.json").unlink()
    config(tmp_path / "configs", SPIRAL.replace("name: s", "name: own"), name="other.yaml")
    refused(cli("run", "other.yaml", "--out", "../results", cwd=tmp_path / "configs"), "holds the runs of")


# ----- values

VALUES = [
    (["optim.lr=1e400"], "optim.lr = inf: must be a finite number"),
    (["optim.weight_decay=.inf"], "optim.weight_decay = inf: must be a finite number"),
    (["model.init_std=.inf"], "model.init_std = inf"),
    (["optim.momentum_ramp_epochs=.nan"], "optim.momentum_ramp_epochs = nan"),
    (["data.validation_size=3000"], "data.validation_size = 3000: must be less than 3,000"),
    (["data.train_size=2000", "data.validation_size=1500"], "data.train_size = 2000 with data.validation_size"),
    (["data.train_size=1000", "optim.batch_size=5000"], "optim.batch_size = 5000: more than the 1,000 training"),
    (["optim.batch_size=4000"], "optim.batch_size = 4000: more than the 3,000 training images"),
    (["model.hidden=[100000000]"], "model.hidden = [100000000]: one 2-100000000-3 model needs about"),
    (["model.dropout.p_hidden=0.999999"], "model.dropout.p_hidden = 0.999999: must be at most 0.999"),
    (["model.dropout.p_input=0.9995"], "model.dropout.p_input = 0.9995: must be at most 0.999: a larger p keeps"),
]


@pytest.mark.parametrize("sets,needle", VALUES, ids=[v[1].split(":")[0] for v in VALUES])
def test_a_bad_value_is_refused(tmp_path, sets, needle):
    out = tmp_path / "results"
    r = cli("run", config(tmp_path, SPIRAL), "--out", out, *(a for s in sets for a in ("--set", s)))
    refused(r, needle, out)
    if "validation_size = 3000" in needle:
        assert "train_size" not in r.stderr  # the key that was set, not one the user never touched


# ----- destinations and devices

not_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")


def test_destinations_are_checked_before_any_work(tmp_path):
    a_file = config(tmp_path, "x\n", name="a_file")
    cfg = config(tmp_path, SPIRAL)
    refused(cli("run", cfg, "--out", a_file), f"--out = {a_file}/s: '{a_file}' is a file")
    refused(cli("sweep", cfg, "--out", a_file / "sub"), "is a file, not a folder")
    refused(cli("beyond", "ridge", "--quick", "--out", a_file), f"--out = {a_file}: is a file")
    refused(cli("beyond", "features", cfg, "--out", a_file), "is a file")
    refused(cli("report", "--out", tmp_path), "must be a .md file")
    (tmp_path / "sub").mkdir()
    refused(cli("report", tmp_path, tmp_path / "sub"), "--out is needed to report 2 folders together",
            tmp_path / "REPORT.md")
    refused(cli("bench", "--json", tmp_path, "--arch", "784-8-10", "--stack", "1", "--steps", "1"), "is a folder")
    assert a_file.read_text() == "x\n"


@not_linux
def test_unwritable_destinations_are_refused_before_any_work():
    refused(cli("run", ROOT / "configs/spiral.yaml", "--out", "/proc/x"), "--out = /proc/x/spiral: cannot write")
    refused(cli("report", "--out", "/proc/x.md"), "--out = /proc/x.md: cannot write")
    refused(cli("beyond", "ridge", "--quick", "--out", "/proc/x"), "cannot write")
    refused(cli("bench", "--json", "/proc/x.json", "--arch", "784-8-10", "--stack", "1", "--steps", "1"),
            "--json = /proc/x.json: cannot write")


def test_devices_are_checked_before_anything_is_written(tmp_path):
    import torch

    out = tmp_path / "results"
    cfg = config(tmp_path, SPIRAL)
    for cmd in (["run", cfg], ["sweep", cfg]):
        refused(cli(*cmd, "--out", out, "--device", "tpu"), "--device = 'tpu': not a device", out)
        if not torch.cuda.is_available():
            refused(cli(*cmd, "--out", out, "--device", "cuda:1"), "--device = 'cuda:1': no CUDA device", out)
    refused(cli("bench", "--device", "tpu"), "--device = 'tpu'")
    refused(cli("bench", "--arch", "784-abc-10"), "--arch = '784-abc-10': layer widths")
    refused(cli("bench", "--arch", "784-100000000-10", "--stack", "1"), "one model need")


def test_plot_of_a_folder_that_does_not_exist(tmp_path):
    refused(cli("plot", tmp_path / "nowhere"), "not found")


# ----- overrides that would change a sweep's meaning silently


def test_a_swept_key_is_not_swept_again_nor_set(tmp_path):
    sweep = ROOT / "configs/sweeps/p_fixed_n.yaml"
    out = tmp_path / "results"
    r = cli("sweep", sweep, "--out", out, "--dry-run", "--grid", "model.dropout.p_hidden=0.1,0.2")
    refused(r, "--grid model.dropout.p_hidden: sweep.grid already sweeps it (9 values", out)
    refused(cli("sweep", sweep, "--out", out, "--dry-run", "--set", "model.dropout.p_hidden=0.3"),
            "--set model.dropout.p_hidden: sweep.grid sweeps it", out)
    refused(cli("sweep", sweep, "--out", out, "--dry-run", "--set", "seed=4"), "--set seed: sweep.seeds", out)
    r = cli("sweep", sweep, "--out", out, "--dry-run", "--set", "optim.epochs=2")  # an unswept key is fine
    assert r.returncode == 0 and "20 runs" in r.stdout


def test_max_stack_past_memory_is_said_and_capped(monkeypatch):
    import torch

    from dropout_lab.config import load
    from dropout_lab.sweeps import stacks as runner

    cfg = load(None, ["model.hidden=[1024, 1024]"])
    monkeypatch.setattr(runner, "free_bytes", lambda device: 4 << 30)
    fit = runner.fits(cfg, torch.device("cpu"))
    assert 0 < fit < 1000
    [note] = runner.check_memory([cfg], torch.device("cpu"), max_stack=1000)
    assert "--max-stack 1000" in note and f"its stacks hold {fit}" in note
    assert runner.stack_cap(cfg, torch.device("cpu"), 1000) == fit
    assert runner.check_memory([cfg], torch.device("cpu"), max_stack=2) == []
    monkeypatch.setattr(runner, "free_bytes", lambda device: 1 << 20)
    with pytest.raises(runner.ConfigError, match="one 784-1024-1024-10 model needs about"):
        runner.check_memory([cfg], torch.device("cpu"))


# ----- output people can read: 80 columns, piped


def narrow(*args):
    return cli(*args, columns=80)


def test_dry_run_of_table2_fits_80_columns_piped(tmp_path, monkeypatch):
    from dropout_lab.sweeps import campaign

    # the estimate times a few steps and a test pass of each structure, 2x8192 nets among them (50 s on a
    # 2-core CPU); its line is what matters here, and test_sweep times small nets through the same code
    monkeypatch.setattr(campaign, "estimate_seconds", lambda stacks, *a: 3600.0 * 12.3)
    r = narrow("sweep", ROOT / "configs/paper/table2.yaml", "--dry-run", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "about 12.3 h on cpu" in " ".join(r.stdout.split())
    assert max(map(len, r.stdout.splitlines())) <= 80
    assert "…" not in r.stdout
    for line in r.stdout.splitlines()[3:24]:  # each run keeps its seed and status
        if line.strip() and line.split()[0].isdigit():
            assert re.search(r"\s[012]\s+new\s*$", line), line


def test_the_end_of_sweep_table_keeps_its_numbers_at_80_columns(tmp_path):
    text = SPIRAL + ("sweep:\n  seeds: [0, 1]\n  zip:\n    - label: [\"a long label for the first point, with words\", "
                     "\"a long label for the second point, with words\"]\n      model.hidden: [[16], [8]]\n")
    r = narrow("sweep", config(tmp_path, text), "--out", tmp_path / "r")
    assert r.returncode == 0, r.stderr
    assert max(map(len, r.stdout.splitlines())) <= 80
    assert len(re.findall(r"\d+\.\d\d ± \d+\.\d\d%", r.stdout)) >= 4  # dropout and control of each point
    assert "…" not in r.stdout
    groups = {}  # the spread is the sample std over seeds, as the report's: one std in the whole tool
    for row in csv.DictReader(open(tmp_path / "r" / "s" / "index.csv")):
        groups.setdefault((row["label"], row["dropout"]), []).append(100 * float(row["final_train_error"]))
    assert len(groups) == 4 and any(statistics.stdev(v) > 0.01 for v in groups.values())  # seeds that differ
    want = {f"{statistics.fmean(v):.2f} ± {statistics.stdev(v):.2f}%" for v in groups.values()}
    assert want <= set(re.findall(r"\d+\.\d\d ± \d+\.\d\d%", r.stdout))
    index = (tmp_path / "r" / "s" / "index.csv").read_bytes()
    record = (tmp_path / "r" / "s" / "sweep.yaml").read_bytes()
    again = narrow("sweep", config(tmp_path, text), "--out", tmp_path / "r")  # done: its records stay as they are
    assert again.returncode == 0 and "already done" in again.stderr
    assert (tmp_path / "r" / "s" / "index.csv").read_bytes() == index
    assert (tmp_path / "r" / "s" / "sweep.yaml").read_bytes() == record


def test_bench_names_stay_on_one_line_at_80_columns(monkeypatch):
    from dropout_lab.speed import peak

    monkeypatch.setattr(peak, "PROBE_SECONDS", 0.02)  # a shorter GEMM probe: its numbers are not read here
    r = narrow("bench", "--device", "cpu", "--arch", "784-16-10", "--stack", "1,2", "--steps", "2", "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert max(map(len, r.stdout.splitlines())) <= 80
    for name in ("tuned for-loop", "tuned foreach", "tuned fused", "dataloader", "stack K=1", "stack K=2",
                 "2x stack K=1", "2x stack K=2"):
        assert re.search(rf"^{re.escape(name)}\s+[\d,]+\s", r.stdout, re.M), name


def test_report_piped_to_a_file_is_valid_markdown(tmp_path):
    r = narrow("report", ROOT / "results", "--out", tmp_path / "REPORT.md")
    assert r.returncode == 0, r.stderr
    blocks, block = [], []
    for line in r.stdout.splitlines() + [""]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            blocks.append(block)
            block = []
    assert blocks, r.stdout
    for b in blocks:  # every row of a table whole, on one line: as many cells as its header
        assert len({len(re.findall(r"(?<!\\)\|", line)) for line in b}) == 1, b
        assert all(line.rstrip().endswith("|") for line in b), b


def test_more_classes_refused_before_any_work(tmp_path):
    out = tmp_path / "results"
    cfg = config(tmp_path, SPIRAL)
    # L1 that would never switch on: the run ends first
    refused(cli("run", cfg, "--out", out, "--set", "optim.l1=1e-5", "--set", "optim.l1_after=30"),
            "optim.l1_after = 30: the run makes 30 updates", out)
    # the scale is --scale's: as a key it would label a full-size run as shrunk
    refused(cli("run", cfg, "--out", out, "--set", "scale=quick"), "scale = 'quick': a run's scale is set by", out)
    # a device file is not a destination, even where it can be written
    if os.path.exists("/dev/null"):
        refused(cli("bench", "--json", "/dev/null", "--arch", "784-8-10", "--stack", "1", "--steps", "1"),
                "--json = /dev/null: is not a regular file")


def test_other_tables_fit_80_columns(tmp_path):
    r = narrow("run", config(tmp_path, SPIRAL), "--out", tmp_path / "r")
    assert r.returncode == 0, r.stderr
    assert max(map(len, r.stdout.splitlines())) <= 80 and "…" not in r.stdout
    assert re.search(r"dropout\s+completed\s+[\d.]+%\s+[\d.]+%\s+[\d.]+%", r.stdout), r.stdout
