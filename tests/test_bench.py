"""The benchmark: every trainer timed on one footing, and the record holds what the README table needs."""

import json

import torch

from dropout_lab import bench

from conftest import cli


def test_benchmark_times_baseline_and_stacks_on_the_same_footing():
    r = bench.benchmark("784-16-10", [1, 3], torch.device("cpu"), steps=5, warmup=2)
    assert r["arch"] == "784-16-10" and r["device_type"] == "cpu" and r["baseline_steps_per_s"] > 0
    assert set(r["stacks"]) == {"1", "3"}
    for s in r["stacks"].values():
        assert s["steps_per_s_per_model"] > 0 and s["seconds"] > 0
        assert abs(s["ratio_vs_baseline"] - s["steps_per_s_per_model"] / r["baseline_steps_per_s"]) < 1e-9
        # 6 x params x batch per model-step: 784*16+16 + 16*10+10 = 12730 params
        assert abs(s["tflops"] - s["steps_per_s_per_model"] * 6 * 12730 * 100 / 1e12) < 1e-12
    assert r["stacks"]["1"]["peak_fraction"] is None  # no published peak for a CPU


def test_flops_formula():
    assert bench.flops_per_model_step([784, 1024, 10], batch=100) == 6 * (784 * 1024 + 1024 + 1024 * 10 + 10) * 100


def test_bench_command_writes_json_and_rejects_bad_stacks(tmp_path):
    out = tmp_path / "b.json"
    r = cli("bench", "--device", "cpu", "--arch", "784-8-10", "--stack", "1,2", "--steps", "3", "--json", out)
    assert r.returncode == 0, r.stderr
    assert "baseline" in r.stdout and "K=2" in r.stdout
    assert set(json.loads(out.read_text())["stacks"]) == {"1", "2"}
    r = cli("bench", "--device", "cpu", "--stack", "0,4")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    r = cli("bench", "--device", "cpu", "--arch", "100-10")
    assert r.returncode == 2 and "--arch 100-10" in r.stderr
