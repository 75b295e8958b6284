"""The benchmark: every trainer timed on one footing, and the record holds what the README table needs."""

import json
import re

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from dropout_lab.speed import bench, peak
from dropout_lab.training.train import StackTrainer

from conftest import cli


def test_benchmark_times_baseline_and_stacks_on_the_same_footing(monkeypatch):
    """Same Dataset, same steps, each timed region bracketed by syncs, ratios against the tuned loop.

    The clock is a fake one (its n-th read returns n**2), so the test watches which events fall
    between the clock reads without depending on how fast anything runs; every region has its own length.
    """
    events: list[str] = []  # S: device sync, C: clock read, .: one training step of any trainer
    reads: list[float] = []
    data_seen: list = []

    def clock():
        reads.append(float(len(reads) ** 2))
        events.append("C")
        return reads[-1]

    def init(self, cfgs, data, device):
        data_seen.append(data)
        real_init(self, cfgs, data, device)

    real_sync, real_data = bench._sync, bench.synthetic
    real_step, real_init = StackTrainer.train_step, StackTrainer.__init__
    made = []
    monkeypatch.setattr(bench, "_clock", clock)
    monkeypatch.setattr(bench, "_sync", lambda device: (events.append("S"), real_sync(device)))
    monkeypatch.setattr(StackTrainer, "train_step", lambda self: (events.append("."), real_step(self)))
    monkeypatch.setattr(StackTrainer, "__init__", init)  # the data a stack really trains on
    monkeypatch.setattr(bench, "synthetic", lambda *a, **kw: made.append(real_data(*a, **kw)) or made[-1])
    for name in ("tuned", "dataloader", "stacked"):  # every trainer and the Dataset it is handed
        def spy(*args, _real=getattr(bench, name), **kw):
            data_seen.extend(a for a in args if isinstance(a, bench.Dataset))
            return _real(*args, **kw)
        monkeypatch.setattr(bench, name, spy)
    passes = iter([0.5, 0.4])  # stand-in peaks, before and after the trainers: the fractions use the best
    monkeypatch.setattr(bench, "gemm_probe", lambda device, precision: {
        "tflops": (t := next(passes)), "shapes_tflops": {"a": t}, "what": "stand-in"})
    hook = register_optimizer_step_post_hook(lambda opt, args, kw: events.append("."))  # both baselines
    try:
        r = bench.benchmark("784-16-10", [1, 3], torch.device("cpu"), steps=5, warmup=2)
    finally:
        hook.remove()

    names = [t["name"] for t in r["timings"]]
    assert names == ["tuned for-loop", "tuned foreach", "tuned fused", "dataloader", "stack K=1", "stack K=3"]
    # one data set made, and each trainer (and each StackTrainer inside) handed that one
    assert len(made) == 1 and len(data_seen) == 8 and all(d is made[0] for d in data_seen)
    assert data_seen[0].x_train.shape == (60_000, 784)
    # per trainer: sync, clock, 2 warm-up steps, sync, clock; sync, clock, 5 timed steps, sync, clock;
    # no step outside a timed region, and no trainer with more or fewer steps than the others
    assert re.sub("S+", "S", "".join(events)) == ("SC..SC" "SC.....SC") * 6
    for j, t in enumerate(r["timings"]):  # the seconds are the clock's, over that trainer's own region
        assert t["steps"] == 5 and t["warmup_steps"] == 2
        assert t["warmup_seconds"] == reads[4 * j + 1] - reads[4 * j]
        assert t["seconds"] == reads[4 * j + 3] - reads[4 * j + 2]

    rates = [t["K"] * t["steps"] / t["seconds"] for t in r["timings"]]
    tuned, loader = max(rates[:3]), rates[3]  # the fastest tuned loop is the baseline
    assert tuned == rates[0] > rates[1] and tuned != loader  # the fake clock makes the for-loop one fastest
    assert r["baseline"] == "tuned for-loop" and r["baseline_optimizer"] == "for-loop"
    assert r["baseline_steps_per_s"] == tuned and r["dataloader_steps_per_s"] == loader
    assert set(r["baselines"]) == {"tuned for-loop", "tuned foreach", "tuned fused", "dataloader"}
    assert set(r["stacks"]) == {"1", "3"}
    flops = peak.flops_per_model_step([784, 16, 10])
    for t in r["timings"]:
        s = r["stacks"][str(t["K"])] if t["name"].startswith("stack") else r["baselines"][t["name"]]
        assert s["steps_per_s_per_model"] == t["K"] * 5 / t["seconds"]
        assert abs(s["ratio_vs_baseline"] - s["steps_per_s_per_model"] / tuned) < 1e-12
        assert abs(s["ratio_vs_dataloader"] - s["steps_per_s_per_model"] / loader) < 1e-12
        assert abs(s["tflops"] - s["steps_per_s_per_model"] * flops / 1e12) < 1e-15
        assert abs(s["peak_fraction"] - s["tflops"] / 0.5) < 1e-15  # of the probe's measured peak
        assert s["peak_memory_mb"] is None  # no CPU memory
        least = r["floor"]["fp32"]["seconds"]  # the roofline: a step's seconds over the floor's
        assert abs(s["floor_multiple"] - 1 / s["steps_per_s_per_model"] / least) < 1e-12
    assert r["precision"] == "fp32" and r["gemm_probe"]["fp32"]["tflops"] == 0.5 and r["cpu"]
    assert "CPU: not measured" in r["peak_memory_measured"]


def test_flops_formula():
    # 784-256-256-10 by hand, per example: forward 2ab + b per layer (weights, biases);
    # backward: weight gradients 2ab and bias gradients b per layer, input gradients 2ab for the
    # second and third layers only (the first layer's input is the data, and needs none)
    w1, w2, w3, biases = 784 * 256, 256 * 256, 256 * 10, 256 + 256 + 10
    forward = 2 * (w1 + w2 + w3) + biases
    backward = 2 * (w1 + w2 + w3) + biases + 2 * (w2 + w3)
    assert forward + backward == 1_212_436
    assert peak.flops_per_model_step([784, 256, 256, 10], batch=100) == 1_212_436 * 100
    # 6 x params x batch, the old count, overstated it by a third
    six_params = 6 * (w1 + w2 + w3 + biases) * 100
    assert 1.33 < six_params / peak.flops_per_model_step([784, 256, 256, 10], batch=100) < 1.34
    # one layer: no input gradient at all
    assert peak.flops_per_model_step([784, 10], batch=1) == 4 * 7840 + 2 * 10


def test_tuned_loop_trains_with_max_norm():
    """The tuned baseline is a real training loop: its weights move and stay within the max-norm."""
    seen = {}

    def record(opt, args, kw):
        seen["weights"] = [p for p in opt.param_groups[0]["params"] if p.dim() == 2]

    data = bench.synthetic(n_train=300, n_test=10)
    hook = register_optimizer_step_post_hook(record)
    try:
        bench.tuned([784, 16, 10], data, torch.device("cpu"), steps=4, warmup=0, lr=5.0, c=0.5)
    finally:
        hook.remove()
    assert all(w.norm(dim=1).max() <= 0.5 + 1e-5 for w in seen["weights"])
    assert max(w.norm(dim=1).max() for w in seen["weights"]) > 0.49  # lr 5 pushes rows to the bound


# longer than any CPU's name this suite runs on, with a word no line can break
LONG_CPU = "Intel(R) Xeon(R) Platinum 8480+ [AMX-BF16] Processor, a stand-in name far longer than " \
    "any real one, Engineering_Sample_Stepping_E5_at_2.00GHz_with_no_spaces_at_all_in_it"


def test_bench_command_writes_json_and_rejects_bad_stacks(tmp_path, monkeypatch):
    from dropout_lab.store import results

    monkeypatch.setattr(results, "cpu_model", lambda: LONG_CPU)  # not this machine's name: the longest case
    monkeypatch.setattr(peak, "PROBE_SECONDS", 0.02)  # the probe's rates are tested on their own, below
    out = tmp_path / "b.json"
    r = cli("bench", "--device", "cpu", "--arch", "784-8-10", "--stack", "1,2", "--steps", "3", "--json", out)
    assert r.returncode == 0, r.stderr
    assert "tuned" in r.stdout and "dataloader" in r.stdout and "K=2" in r.stdout
    assert "vs tuned" in r.stdout and "vs loader" in r.stdout
    # every line of the report fits 80 columns even when the terminal is wider (conftest's cli sets 200) ...
    assert max(len(line) for line in r.stdout.splitlines() if not line.startswith("wrote")) <= 80
    # ... and nothing of the CPU's name is lost to the fitting: its words wrap, whole or broken, in order
    assert LONG_CPU.replace(" ", "") in r.stdout.replace("\n", "").replace(" ", "")
    assert json.loads(out.read_text())["device"].startswith(f"cpu ({LONG_CPU}, ")
    result = json.loads(out.read_text())
    assert set(result["stacks"]) == {"1", "2"} and set(result["baselines"]) == {
        "tuned for-loop", "tuned foreach", "tuned fused", "dataloader"}
    assert result["bandwidth_probe"]["gb_per_s"] > 0 and result["floor"]["fp32"]["seconds"] > 0
    probe = result["gemm_probe"]["fp32"]  # measured here, not looked up
    assert probe["tflops"] > 0 and probe["tflops"] == max(v for v in probe["shapes_tflops"].values() if v)
    # --workers 2: each stack size again as two stacks side by side, K x 2 models per step
    r = cli("bench", "--device", "cpu", "--arch", "784-8-10", "--stack", "2", "--steps", "3", "--workers", "2",
            "--json", out)
    assert r.returncode == 0, r.stderr
    side = json.loads(out.read_text())
    [t] = [t for t in side["timings"] if t["name"] == "2x stack K=2"]
    assert t["K"] == 4 and set(side["side_by_side"]) == {"2x stack K=2"} and side["workers"] == 2
    assert side["side_by_side"]["2x stack K=2"]["steps_per_s_per_model"] == 4 * 3 / t["seconds"]
    r = cli("bench", "--device", "cpu", "--workers", "0")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--workers = 0" in r.stderr
    r = cli("bench", "--device", "cpu", "--precision", "tf32")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "tf32" in r.stderr
    r = cli("bench", "--device", "cpu", "--stack", "0,4")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    r = cli("bench", "--device", "cpu", "--arch", "100-10")
    assert r.returncode == 2 and "--arch = '100-10'" in r.stderr


class GemmClock:
    """A stand-in for the probe's clock and torch.mm: each GEMM of m x k x n takes `seconds(m, k, n)` on the
    clock and is checked for the probe's dtype, so the rates the probe reports are known exactly."""

    def __init__(self, monkeypatch, dtype, seconds):
        self.now, self.calls, self.dtype, self.seconds = 0.0, [], dtype, seconds
        monkeypatch.setattr(peak.time, "perf_counter", lambda: self.now)
        monkeypatch.setattr(peak.torch, "mm", self.mm)

    def mm(self, a, b):
        assert a.dtype == b.dtype == self.dtype
        (m, k), n = a.shape, b.shape[1]
        self.calls.append((m, k, n))
        self.now += self.seconds(m, k, n)


def test_gemm_probe_reports_the_rate_of_each_shape_and_skips_what_it_cannot_time(monkeypatch):
    def gflops(rate):  # every GEMM at `rate` GFLOP/s
        return lambda m, k, n: 2 * m * k * n / (rate * 1e9)

    clock = GemmClock(monkeypatch, torch.float32, gflops(50))
    fp32 = peak.gemm_probe(torch.device("cpu"), "fp32")
    assert "float32" in fp32["what"]
    small, square = 2 * 100 * 1024 * 1024 / 50e9, 2 * 1024 ** 3 / 50e9  # seconds a call
    reps = [min(200, int(peak.PROBE_SECONDS / t)) for t in (small, square)]
    assert clock.calls == [(100, 1024, 1024)] * (1 + reps[0]) + [(1024, 1024, 1024)] * (1 + reps[1])
    assert fp32["shapes_tflops"] == pytest.approx({"100x1024x1024": 0.05, "1024x1024x1024": 0.05})
    assert fp32["tflops"] == pytest.approx(0.05)

    # the layer-sized shape fast, the square one slow: the best of the two is the peak
    clock = GemmClock(monkeypatch, torch.bfloat16, lambda m, k, n: 2 * m * k * n / (400e9 if m == 100 else 40e9))
    bf16 = peak.gemm_probe(torch.device("cpu"), "bf16")
    assert "bfloat16" in bf16["what"]
    assert bf16["shapes_tflops"] == pytest.approx({"100x1024x1024": 0.4, "1024x1024x1024": 0.04})
    assert bf16["tflops"] == pytest.approx(0.4)

    # a scalar bf16 fallback (about 1 GFLOP/s): the square GEMM would take over 2 s a call, and is not timed
    clock = GemmClock(monkeypatch, torch.bfloat16, gflops(1))
    slow = peak.gemm_probe(torch.device("cpu"), "bf16")
    assert slow["shapes_tflops"]["1024x1024x1024"] is None and all(c[0] == 100 for c in clock.calls)
    assert slow["tflops"] == pytest.approx(0.001)

    # every first call over 2 s: each shape tried once, nothing timed, no peak rather than a made-up one
    clock = GemmClock(monkeypatch, torch.float32, lambda m, k, n: 3.0)
    none = peak.gemm_probe(torch.device("cpu"), "fp32")
    assert none["tflops"] is None and set(none["shapes_tflops"].values()) == {None}
    assert clock.calls == [(100, 1024, 1024), (1024, 1024, 1024)]


def test_gemm_probe_on_this_machine_measures_both_arithmetics():
    fp32, bf16 = peak.gemm_probe(torch.device("cpu"), "fp32"), peak.gemm_probe(torch.device("cpu"), "bf16")
    # two cores of any CPU run fp32 GEMMs between 1 GFLOP/s and 100 TFLOP/s, and so does a GPU's fp32
    assert 1e-3 < fp32["tflops"] < 100 and fp32["tflops"] == max(fp32["shapes_tflops"].values())
    assert set(fp32["shapes_tflops"]) == set(bf16["shapes_tflops"]) == {"100x1024x1024", "1024x1024x1024"}
    timed = [v for v in bf16["shapes_tflops"].values() if v is not None]
    assert bf16["tflops"] == (max(timed) if timed else None)


def test_rounds_interleave_the_trainers_and_report_each_ones_median(monkeypatch):
    """Three rounds: tuned, dataloader, stack, then again; each figure is that trainer's median round."""
    order, made = [], iter([3.0, 9.0, 5.0, 1.0, 7.0, 4.0, 2.0, 8.0, 6.0])  # seconds, in the order timed
    monkeypatch.setattr(bench, "gemm_probe", lambda device, p: {"tflops": 1.0, "shapes_tflops": {"a": 1.0}})

    def fake(name):
        def trainer(*args, **kw):
            order.append(name)
            return bench.Timing(name, name, 1, 5, 2, next(made), 0.1, None)
        return trainer

    for name in ("dataloader", "stacked"):
        monkeypatch.setattr(bench, name, fake(name))
    monkeypatch.setattr(bench, "OPTIMIZERS", {"fused": {}})  # one tuned loop here: the rounds are the point
    monkeypatch.setattr(bench, "tuned", lambda *a, optimizer, **kw: fake("tuned " + optimizer)())
    r = bench.benchmark("784-16-10", [1], torch.device("cpu"), steps=5, warmup=2, rounds=3)
    assert order == ["tuned fused", "dataloader", "stacked"] * 3
    by_name = {t["name"]: t for t in r["timings"]}
    assert by_name["tuned fused"]["round_seconds"] == [3.0, 1.0, 2.0] and by_name["tuned fused"]["seconds"] == 2.0
    assert by_name["dataloader"]["seconds"] == 8.0 and by_name["stacked"]["seconds"] == 5.0
    assert r["rounds"] == 3 and r["baseline_steps_per_s"] == 5 / 2.0
    assert cli("bench", "--device", "cpu", "--rounds", "0").returncode == 2


def test_the_floor_counts_the_bytes_it_states():
    """784-256-256-10 by hand: 269,322 parameters, 512 hidden units at batch 100."""
    params = 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    assert params == 269_322
    fp32, bf16 = peak.step_bytes([784, 256, 256, 10], "fp32"), peak.step_bytes([784, 256, 256, 10], "bf16")
    assert fp32["update"] == 20 * params and bf16["update"] == 22 * params  # + the bf16 copy of the weights
    assert fp32["activations"] == 100 * 512 * (4 * 4 + 2) and bf16["activations"] == 100 * 512 * (4 * 2 + 2)
    f = peak.floor([784, 256, 256, 10], "bf16", tflops=2.0, gb_per_s=10.0)
    assert f["gemm_seconds"] == peak.flops_per_model_step([784, 256, 256, 10]) / 2e12
    assert f["memory_seconds"] == bf16["total"] / 10e9
    assert f["seconds"] == f["gemm_seconds"] + f["memory_seconds"]
    assert peak.floor([784, 10], "fp32", tflops=None, gb_per_s=1.0)["seconds"] is None  # no probe, no floor
