"""`dropout-lab bench`: the stacked trainer against the loop a PyTorch user would write.

The baseline is kept here as the honest reference: nn.Sequential of nn.Linear / nn.ReLU / nn.Dropout,
a DataLoader over a TensorDataset on the host, torch.optim.SGD with momentum and max-norm by
torch.renorm after every step. Everything is timed in one process, one after another, on one device,
over the same MNIST-shaped data; warm-up steps are timed apart. Throughput does not depend on the
pixel values, so the data are synthetic (uniform pixels, random labels) and no download is needed.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import load
from .data import Dataset
from .results import atomic_write, device_name, env_info
from .train import StackTrainer

# dense fp32 / tf32 peaks (TFLOP/s) of devices whose figure is published; others report no fraction
PEAKS = {"H100": {"fp32": 67.0, "tf32": 495.0}, "H200": {"fp32": 67.0, "tf32": 495.0},
         "A100": {"fp32": 19.5, "tf32": 156.0}}


@dataclass
class Timing:
    name: str
    K: int
    steps: int
    seconds: float
    warmup_seconds: float
    peak_memory_mb: float | None
    steps_per_s_per_model: float = 0.0
    ratio_vs_baseline: float | None = None
    tflops: float = 0.0
    peak_fraction: float | None = None
    extra: dict = field(default_factory=dict)


def synthetic(n_train: int = 60_000, n_test: int = 10_000, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset("synthetic-mnist", rng.random((n_train, 784), dtype=np.float32),
                   rng.integers(0, 10, n_train), rng.random((n_test, 784), dtype=np.float32),
                   rng.integers(0, 10, n_test))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _timed(run, device: torch.device, steps: int, warmup: int) -> tuple[float, float]:
    """(seconds for `steps` steps, seconds for the `warmup` steps before them); the device is synced."""
    t = time.perf_counter()
    run(warmup)
    _sync(device)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    run(steps)
    _sync(device)
    return time.perf_counter() - t, warm


def baseline(sizes: Sequence[int], data: Dataset, device: torch.device, steps: int, warmup: int,
             lr: float = 0.1, momentum: float = 0.9, c: float = 3.5, batch: int = 100) -> Timing:
    """The plain loop, as a PyTorch user writes it."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Dropout(0.2)]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.ReLU(), nn.Dropout(0.5)]
    model = nn.Sequential(*layers).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    ds = torch.utils.data.TensorDataset(torch.as_tensor(data.x_train), torch.as_tensor(data.y_train))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True)
    linears = [m for m in model if isinstance(m, nn.Linear)]

    def run(n: int) -> None:
        done = 0
        while done < n:
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
                with torch.no_grad():
                    for lin in linears:  # each unit's incoming weights are a row of (out, in)
                        lin.weight.copy_(torch.renorm(lin.weight, 2, 0, c))
                done += 1
                if done == n:
                    return

    model.train()
    _reset_memory(device)
    seconds, warm = _timed(run, device, steps, warmup)
    return Timing("baseline: nn.Sequential + DataLoader + optim.SGD + renorm", 1, steps, seconds, warm,
                  _peak_mb(device))


def stacked(sizes: Sequence[int], K: int, data: Dataset, device: torch.device, steps: int, warmup: int) -> Timing:
    """dropout-lab's trainer: K models of the same shape with their own p, lr, seed, as one stack."""
    hidden = "[" + ",".join(map(str, sizes[1:-1])) + "]"
    cfgs = [load(None, [f"model.hidden={hidden}", f"seed={k}", "optim.lr=0.1", "optim.momentum_ramp_epochs=0",
                        "optim.momentum_start=0.9", "optim.momentum_end=0.9", "optim.max_norm=3.5",
                        "optim.lr_schedule=constant", f"model.dropout.p_hidden={0.5 - 0.01 * (k % 10)}"])
            for k in range(K)]
    _reset_memory(device)
    tr = StackTrainer(cfgs, data, device)

    def run(n: int) -> None:
        for _ in range(n):
            if tr.order is None or tr.s == tr.steps_per_epoch:
                tr.begin_epoch()
            tr.train_step()

    seconds, warm = _timed(run, device, steps, warmup)
    return Timing(f"dropout-lab stack, K={K}", K, steps, seconds, warm, _peak_mb(device))


def flops_per_model_step(sizes: Sequence[int], batch: int = 100) -> float:
    """6 x params x batch: forward 2, backward 4 multiply-adds per weight per example."""
    params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    return 6.0 * params * batch


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    precision = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"
    for key, peaks in PEAKS.items():
        if key in name:
            return peaks[precision]
    return None


def benchmark(arch: str, stacks: Sequence[int], device: torch.device, steps: int, warmup: int = 20) -> dict:
    sizes = [int(n) for n in arch.split("-")]
    if sizes[0] != 784 or sizes[-1] != 10:
        raise ValueError(f"--arch {arch}: must start with 784 and end with 10 (MNIST)")
    data = synthetic()
    timings = [baseline(sizes, data, device, steps, warmup)]
    timings += [stacked(sizes, K, data, device, steps, warmup) for K in stacks]
    base = timings[0].K * timings[0].steps / timings[0].seconds
    flops, peak = flops_per_model_step(sizes), peak_tflops(device)
    for t in timings:
        t.steps_per_s_per_model = t.K * t.steps / t.seconds
        t.ratio_vs_baseline = t.steps_per_s_per_model / base
        t.tflops = t.steps_per_s_per_model * flops / 1e12
        t.peak_fraction = t.tflops / peak if peak else None
    env = env_info(device)
    return {
        "command": env["command"],
        "git_commit": env["git_commit"],
        "device": device_name(device),
        "device_type": device.type,
        "arch": arch,
        "batch": 100,
        "steps_timed": steps,
        "warmup_steps": warmup,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "data": "synthetic MNIST-shaped (60,000 x 784 uniform pixels, random labels)",
        "baseline_steps_per_s": base,
        "stacks": {str(t.K): {"steps_per_s_per_model": t.steps_per_s_per_model,
                              "ratio_vs_baseline": t.ratio_vs_baseline, "tflops": t.tflops,
                              "peak_fraction": t.peak_fraction, "peak_memory_mb": t.peak_memory_mb,
                              "seconds": t.seconds, "warmup_seconds": t.warmup_seconds}
                   for t in timings[1:]},
        "timings": [asdict(t) for t in timings],
        "paper_length_seconds_per_model": {str(t.K): 1_000_000 / t.steps_per_s_per_model for t in timings},
    }


def write_json(result: dict, path: Path) -> None:
    atomic_write(path, json.dumps(result, indent=2) + "\n")
