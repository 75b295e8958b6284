"""`dropout-lab beyond conv`: the masks of each variant, the note's verdict, the runs written and resumed, and
bad input refused in one line."""

import json

import pytest
import torch

from dropout_lab.beyond import conv
from dropout_lab.config import ConvConfig
from dropout_lab.nets.model import generator
from dropout_lab.report.verdicts import UNRESOLVED, verdict_conv

from conftest import cli


def test_channel_dropout_zeroes_whole_feature_maps_and_element_wise_does_not():
    shape = (64, 16, 7, 7)
    whole = conv.dropout_mask(shape, 0.75, True, generator(1), torch.device("cpu"))
    per_unit = conv.dropout_mask(shape, 0.75, False, generator(1), torch.device("cpu"))
    assert whole.shape == (64, 16, 1, 1)  # one decision per example and map, broadcast over the map
    maps = whole.expand(shape).reshape(64 * 16, -1)
    zero_maps = (maps == 0).all(dim=1)
    assert zero_maps.any() and ((maps == 0).any(dim=1) == zero_maps).all()  # a map is dropped whole or not at all
    unit_maps = per_unit.reshape(64 * 16, -1)
    mixed = (unit_maps == 0).any(dim=1) & (unit_maps != 0).any(dim=1)
    assert mixed.float().mean() > 0.9  # almost every map keeps some units and drops others
    assert torch.unique(per_unit).tolist() == [0.0, pytest.approx(1 / 0.75)]  # inverted scaling


@pytest.mark.parametrize("keep,whole", [(0.9, False), (0.75, False), (0.9, True), (0.75, True), (0.5, False)])
def test_each_variants_keep_rate_matches_its_retention(keep, whole):
    """Over many draws the share of kept units (or maps) is the retention, within 4 standard errors."""
    shape = (100, 32, 7, 7) if whole or keep != 0.5 else (100, 256)
    g = generator(7)
    decisions = []
    for _ in range(20):
        m = conv.dropout_mask(shape, keep, whole, g, torch.device("cpu"))
        decisions.append((m.reshape(shape[0], shape[1], -1)[..., 0] if whole else m) != 0)
    kept = torch.stack(decisions).float()
    se = (keep * (1 - keep) / kept.numel()) ** 0.5
    assert abs(kept.mean().item() - keep) < 4 * se


def _cell(values):
    t = torch.tensor(values)
    return {"mean": t.mean().item(), "std": t.std().item() if len(values) > 1 else 0.0, "n": len(values),
            "test": values, "train_mean": 0.0}


def test_the_notes_claim_holds_fails_or_is_not_resolved_by_the_noise_rule():
    worse = {"1000": {"fc": _cell([2.0, 2.1, 1.9]), "conv_element": _cell([2.6, 2.7, 2.5])}}
    better = {"1000": {"fc": _cell([2.0, 2.1, 1.9]), "conv_element": _cell([1.5, 1.6, 1.4])},
              "5000": {"fc": _cell([1.0, 1.1, 0.9]), "conv_element": _cell([1.0, 1.2, 0.8])}}
    noisy = {"1000": {"fc": _cell([2.0, 2.6, 1.5]), "conv_element": _cell([1.8, 2.4, 1.7])}}
    assert verdict_conv(worse)[0] is True  # worse beyond noise at every size: "does not help" holds
    assert verdict_conv(better)[0] is False  # better beyond noise at one size is enough to refute it
    v, text = verdict_conv(noisy)
    assert v == UNRESOLVED and "1,000 images" in text
    one_seed = {"1000": {"fc": _cell([2.0]), "conv_element": _cell([1.0])}}
    assert verdict_conv(one_seed)[0] == UNRESOLVED  # one seed has no spread: never resolved
    assert verdict_conv({"1000": {"none": _cell([2.0])}})[0] is None


def test_runs_are_written_resumed_and_reported(tmp_path, mnist):
    out = tmp_path / "conv"
    args = ["beyond", "conv", "configs/beyond/conv.yaml", "--set", "updates=6", "--set", "eval_every=3",
            "--set", "train_sizes=[100]", "--set", "seeds=[0, 1]", "--set", "variants=[fc, conv_element]",
            "--set", "net.channels=[4, 4]", "--set", "net.hidden=16", "--out", str(out)]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert "not resolved" in r.stdout or "holds" in r.stdout
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["conv_element-n100-s0.csv", "conv_element-n100-s1.csv", "fc-n100-s0.csv", "fc-n100-s1.csv"]
    curve = conv.read_curve(out / "runs" / "fc-n100-s0.csv")
    assert [row["updates"] for row in curve] == [3, 6]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["table"]["100"]["fc"]["n"] == 2
    env = json.loads((out / "env.json").read_text())
    assert {"git_commit", "command", "device", "cpu_kind"} <= set(env)
    assert (out / "curves.png").is_file() and (out / "bars.png").is_file() and (out / "config.yaml").is_file()
    kept = (out / "runs" / "fc-n100-s0.csv").stat().st_mtime_ns
    last = out / "runs" / "conv_element-n100-s1.csv"
    first_time = last.read_bytes()
    last.unlink()  # as if stopped before its last run
    r = cli(*args)
    assert r.returncode == 0 and "3 already done" in r.stdout
    assert (out / "runs" / "fc-n100-s0.csv").stat().st_mtime_ns == kept  # a finished run is never redone
    assert last.read_bytes() == first_time  # and the one retrained gives the same numbers
    env = json.loads((out / "env.json").read_text())
    assert env["runs_trained"] == 4 and [s["runs_trained"] for s in env["resumed"]] == [1]  # each sitting recorded
    record = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    r = cli(*args)  # everything done: nothing trained, no file changed
    assert r.returncode == 0 and "4 already done" in r.stdout
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == record
    from dropout_lab.report.report import conv_lines
    md = "\n".join(conv_lines(out, tmp_path))
    assert "element-wise dropout on conv layers does not help" in md and "| + conv layers, unit by unit |" in md


def test_one_seed_trains_the_same_numbers_and_the_variants_share_its_start(mnist):
    cfg = ConvConfig(updates=4, eval_every=4, train_sizes=[100], net={"channels": [4, 4], "hidden": 16})
    dev = torch.device("cpu")
    a = conv.train_run(cfg, "conv_channel", 100, 3, mnist, dev)
    b = conv.train_run(cfg, "conv_channel", 100, 3, mnist, dev)
    assert a == b
    n1, n2 = conv.ConvNet(cfg, 3, dev), conv.ConvNet(cfg, 3, dev)
    assert all(torch.equal(x, y) for x, y in zip(n1.params, n2.params))
    assert not torch.equal(conv.ConvNet(cfg, 4, dev).params[0], n1.params[0])


@pytest.mark.parametrize("override,message", [
    ("conv_keep=[0.9]", "conv_keep = [0.9]: 1 retention(s) for 2 conv layers"),
    ("variants=[fc, fc]", "variants = [\"fc\", \"fc\"]: must not repeat a value"),
    ("train_sizes=[70000]", "train_sizes = [70000]: must be from 10"),
    ("fc_keep=0", "fc_keep = 0"),
    ("colour=red", "unknown key 'colour'"),
])
def test_bad_input_is_refused_in_one_line_before_any_work(tmp_path, override, message):
    r = cli("beyond", "conv", "configs/beyond/conv.yaml", "--set", override, "--out", str(tmp_path / "c"))
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("text", ["updates,test_error\n500,oops\n", "updates,test_error,train_error\n500,1.5,0.1\n",
                                  "updates,test_error,train_error\n"])
def test_a_damaged_run_file_is_refused_before_any_work_and_not_trained_over(tmp_path, text):
    out = tmp_path / "conv"
    (out / "runs").mkdir(parents=True)
    bad = out / "runs" / "fc-n100-s1.csv"
    bad.write_text(text)
    r = cli("beyond", "conv", "configs/beyond/conv.yaml", "--set", "updates=2", "--set", "eval_every=2",
            "--set", "train_sizes=[100]", "--set", "net.channels=[2, 2]", "--set", "net.hidden=4", "--out", str(out))
    assert r.returncode == 2 and "fc-n100-s1.csv: damaged" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert bad.read_text() == text
    assert [p.name for p in (out / "runs").iterdir()] == ["fc-n100-s1.csv"]  # nothing trained first


def test_the_readmes_conv_numbers_are_the_committed_results():
    from dropout_lab.report.report import conv_lines

    from conftest import ROOT

    lines = conv_lines(ROOT / "results" / "beyond" / "conv", ROOT / "results")
    assert lines, "no conv results committed under results/beyond/conv"
    start = next(i for i, line in enumerate(lines) if line.startswith("| variant |"))
    table = [line for line in lines[start:] if line.startswith("|")]
    assert "\n".join(table) + "\n" in (ROOT / "docs" / "beyond.md").read_text()
    verdict = next(line for line in lines if line.startswith("Claim:")).split("Verdict: ")[1].split(":")[0]
    assert f"note's claim {verdict}" in (ROOT / "README.md").read_text()  # e.g. **does not hold**
