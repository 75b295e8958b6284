"""`dropout-lab bench`: the stacked trainer against the loops a PyTorch user would write.

Two baselines, both nn.Sequential of nn.Dropout / nn.Linear / nn.ReLU, torch.optim.SGD with momentum
and max-norm by renorm after every step:
- tuned, the loop a user writes for speed: the data resident on the device, batches by indexing a
  device randperm, optim.SGD(foreach=True), gradients set to None. The headline ratio is against it.
- dataloader, the typical loop: a DataLoader over host tensors, each batch copied to the device.
Everything is timed in one process, one after another, on one device, over the same Dataset object
and the same number of steps, with the device synchronised before every clock read; warm-up steps
are timed apart. Throughput does not depend on the pixel values, so the data are synthetic (uniform
pixels, random labels) and no download is needed.

Both baselines run in fp32 whatever --precision the stacks use: the question is how much faster
dropout-lab trains than the loop a user would otherwise write. The GEMM probe of peak.py measures this
machine's peak for each arithmetic, so that every trainer's FLOP rate is also a fraction of a measured peak.
"""

from __future__ import annotations

import gc
import json
import platform
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, load
from ..nets import kernel
from ..nets.step import bf16_kernels, precision_error
from ..store.results import atomic_write, cpu_kind, cpu_model, device_name, env_info
from ..training.data import Dataset
from ..training.train import StackTrainer
from .peak import (
    BATCH,
    FLOOR_COUNTED,
    FLOPS_COUNTED,
    bandwidth_probe,
    best_probe,
    floor,
    flops_per_model_step,
    gemm_probe,
    published_peak,
)
from .peak import sync as _sync  # one name, so that a test can watch every sync

MEMORY_MEASURED = ("CUDA: torch.cuda.max_memory_allocated during the trainer's construction and run, less "
                   "the memory allocated just before its construction (previous trainer freed, peak stats "
                   "reset, CUDA context and cuBLAS workspace created beforehand); the host Dataset is made "
                   "once before any trainer, and each trainer's own device copies of it count. CPU: not "
                   "measured (None): a process's peak RSS never falls, and freed host memory stays with "
                   "the allocator, so trainers timed one after another in one process are not comparable")

Run = Callable[[int], None]  # run(n): n training steps


@dataclass
class Timing:
    name: str  # tuned | dataloader | stack K=<K>
    what: str
    K: int
    steps: int
    warmup_steps: int
    seconds: float
    warmup_seconds: float
    peak_memory_mb: float | None
    steps_per_s_per_model: float = 0.0
    ratio_vs_baseline: float | None = None  # against the tuned loop
    ratio_vs_dataloader: float | None = None
    tflops: float = 0.0
    peak_fraction: float | None = None
    floor_multiple: float | None = None  # seconds per model step over the roofline floor (peak.floor)
    round_seconds: list[float] | None = None  # each round's timed seconds; `seconds` is their median


def median_round(rounds: list[Timing]) -> Timing:
    """The round with the median time (the lower middle one of an even count), with every round's time."""
    ranked = sorted(rounds, key=lambda t: t.seconds)
    t = ranked[(len(ranked) - 1) // 2]
    t.round_seconds = [r.seconds for r in rounds]
    return t


def synthetic(n_train: int = 60_000, n_test: int = 10_000, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset("synthetic-mnist", rng.random((n_train, 784), dtype=np.float32),
                   rng.integers(0, 10, n_train), rng.random((n_test, 784), dtype=np.float32),
                   rng.integers(0, 10, n_test))


_clock = time.perf_counter  # one name for every clock read, so a test can watch them


def _timed(run: Run, device: torch.device, steps: int, warmup: int) -> tuple[float, float]:
    """(seconds for `steps` steps, seconds for the `warmup` steps before them).

    A sync before each start drains work queued earlier (the trainer's construction, the warm-up), and
    one before each stop waits for the steps themselves: the clock brackets exactly the steps it times.
    """
    _sync(device)
    t = _clock()
    run(warmup)
    _sync(device)
    warm = _clock() - t
    _sync(device)
    t = _clock()
    run(steps)
    _sync(device)
    return _clock() - t, warm


def _fp32(device: torch.device) -> None:
    """The baselines run in true fp32: a tf32 probe or stack before them set a process-wide switch."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False


def _prime(device: torch.device) -> None:
    """Create the CUDA context and cuBLAS handle and workspace, which live as long as the process: made
    inside the first trainer's memory window, they would count against it alone."""
    if device.type == "cuda":
        lin = nn.Linear(8, 8).to(device)
        F.cross_entropy(lin(torch.ones(4, 8, device=device)), torch.zeros(4, dtype=torch.long,
                                                                          device=device)).backward()
        _sync(device)


def _measure(name: str, what: str, K: int, build: Callable[[], Run], device: torch.device, steps: int,
             warmup: int) -> Timing:
    """Build a trainer and time it; its peak memory is counted from the same point as every other's."""
    base = None
    gc.collect()  # the previous trainer is gone, reference cycles included, before the window opens
    if device.type == "cuda":
        torch.cuda.empty_cache()
        _sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    run = build()
    seconds, warm = _timed(run, device, steps, warmup)
    peak = None if base is None else (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return Timing(name, what, K, steps, warmup, seconds, warm, peak)


def sequential(sizes: Sequence[int], device: torch.device) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Dropout(0.2)]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.ReLU(), nn.Dropout(0.5)]
    return nn.Sequential(*layers).to(device).train()


# torch.optim.SGD's three implementations: a loop over the parameters, one multi-tensor op per step
# ("foreach"), one fused kernel ("fused", on CPU since torch 2.4). The tuned loop is timed with each and
# the fastest is the baseline: a careful user would pick it.
OPTIMIZERS = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def tuned(sizes: Sequence[int], data: Dataset, device: torch.device, steps: int, warmup: int,
          lr: float = 0.1, momentum: float = 0.9, c: float = 3.5, batch: int = BATCH,
          optimizer: str = "foreach") -> Timing:
    """The loop a competent PyTorch user writes for speed: no host work per step but the launches."""

    def build() -> Run:
        model = sequential(sizes, device)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, **OPTIMIZERS[optimizer])
        weights = [m.weight for m in model if isinstance(m, nn.Linear)]
        x_all = torch.as_tensor(data.x_train, device=device)
        y_all = torch.as_tensor(data.y_train, device=device)
        n = len(x_all)
        at = {"perm": torch.randperm(n, device=device), "i": 0}

        def run(k: int) -> None:
            _fp32(device)
            for _ in range(k):
                if at["i"] + batch > n:  # a new epoch; the last partial batch is dropped, as below
                    at["perm"], at["i"] = torch.randperm(n, device=device), 0
                idx = at["perm"][at["i"]:at["i"] + batch]
                at["i"] += batch
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x_all[idx]), y_all[idx]).backward()
                opt.step()
                with torch.no_grad():
                    for w in weights:  # each unit's incoming weights are a row of (out, in)
                        w.renorm_(2, 0, c)
        return run

    return _measure(f"tuned {optimizer}", f"nn.Sequential, data on the device, randperm batches, optim.SGD "
                    f"({optimizer}), renorm_", 1, build, device, steps, warmup)


def dataloader(sizes: Sequence[int], data: Dataset, device: torch.device, steps: int, warmup: int,
               lr: float = 0.1, momentum: float = 0.9, c: float = 3.5, batch: int = BATCH) -> Timing:
    """The typical loop, as the PyTorch tutorials write it."""

    def build() -> Run:
        model = sequential(sizes, device)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        ds = torch.utils.data.TensorDataset(torch.as_tensor(data.x_train), torch.as_tensor(data.y_train))
        loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True)
        linears = [m for m in model if isinstance(m, nn.Linear)]

        def run(n: int) -> None:
            _fp32(device)
            done = 0
            while done < n:
                for x, y in loader:
                    x, y = x.to(device), y.to(device)
                    opt.zero_grad()
                    F.cross_entropy(model(x), y).backward()
                    opt.step()
                    with torch.no_grad():
                        for lin in linears:
                            lin.weight.copy_(torch.renorm(lin.weight, 2, 0, c))
                    done += 1
                    if done == n:
                        return
        return run

    return _measure("dataloader", "nn.Sequential, DataLoader over host tensors, optim.SGD, renorm",
                    1, build, device, steps, warmup)


def stacked(sizes: Sequence[int], K: int, data: Dataset, device: torch.device, steps: int, warmup: int,
            precision: str = "fp32") -> Timing:
    """dropout-lab's trainer: K models of the same shape with their own p, lr, seed, as one stack."""
    hidden = "[" + ",".join(map(str, sizes[1:-1])) + "]"
    cfgs = [load(None, [f"model.hidden={hidden}", f"seed={k}", f"precision={precision}", "optim.lr=0.1",
                        "optim.momentum_ramp_epochs=0",
                        "optim.momentum_start=0.9", "optim.momentum_end=0.9", "optim.max_norm=3.5",
                        "optim.momentum_rule=deepnet",  # torch.optim.SGD's rule, as the baselines train
                        f"optim.batch_size={BATCH}", "optim.lr_schedule=constant",
                        f"model.dropout.p_hidden={0.5 - 0.01 * (k % 10)}"])
            for k in range(K)]

    def build() -> Run:
        tr = StackTrainer(cfgs, data, device)

        def run(n: int) -> None:
            for _ in range(n):
                if tr.order is None or tr.s == tr.steps_per_epoch:
                    tr.begin_epoch()
                tr.train_step()
        return run

    return _measure(f"stack K={K}", f"dropout-lab StackTrainer, {K} models in one stack, {precision}", K, build,
                    device, steps, warmup)


def side_by_side(sizes: Sequence[int], K: int, workers: int, data: Dataset, device: torch.device, steps: int,
                 warmup: int, precision: str = "fp32") -> Timing:
    """`workers` stacks of K models, each in its own thread on one torch thread, as `sweep --workers`
    trains them (local.py): the GEMMs release the GIL, so the stacks share the cores without splitting
    each GEMM across them."""
    hidden = "[" + ",".join(map(str, sizes[1:-1])) + "]"
    cfgs = [[load(None, [f"model.hidden={hidden}", f"seed={w * K + k}", f"precision={precision}", "optim.lr=0.1",
                         "optim.momentum_ramp_epochs=0", "optim.momentum_start=0.9", "optim.momentum_end=0.9",
                         "optim.max_norm=3.5", "optim.momentum_rule=deepnet", f"optim.batch_size={BATCH}",
                         "optim.lr_schedule=constant"])
             for k in range(K)] for w in range(workers)]

    def build() -> Run:
        trainers = [StackTrainer(c, data, device) for c in cfgs]

        def steps_of(tr: StackTrainer, n: int) -> None:
            for _ in range(n):
                if tr.order is None or tr.s == tr.steps_per_epoch:
                    tr.begin_epoch()
                tr.train_step()

        def run(n: int) -> None:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                with ThreadPoolExecutor(workers) as pool:
                    for f in [pool.submit(steps_of, tr, n) for tr in trainers]:
                        f.result()
            finally:
                torch.set_num_threads(threads)
        return run

    return _measure(f"{workers}x stack K={K}", f"{workers} stacks of {K} models side by side, a thread each "
                    f"on one torch thread (sweep --workers {workers}), {precision}", K * workers, build, device,
                    steps, warmup)


def check_precision(precision: str, device: torch.device) -> None:
    if error := precision_error(precision, device, "--precision"):
        raise ConfigError(error)


def parse_arch(arch: str) -> list[int]:
    """'784-1024-10' -> [784, 1024, 10]; ConfigError: one line naming what is allowed."""
    parts = arch.split("-")
    if len(parts) < 3 or not all(p.isdigit() and int(p) > 0 for p in parts) or parts[0] != "784" or parts[-1] != "10":
        raise ConfigError(f"--arch = {arch!r}: layer widths, positive integers joined by '-', from 784 (MNIST's "
                          "pixels) through at least one hidden layer to 10, e.g. 784-1024-1024-10")
    return [int(p) for p in parts]


def check_args(arch: str, stack: str, steps: int, rounds: int, workers: int, precision: str,
               device: torch.device) -> list[int]:
    """`bench`'s options, each refused with one line (ConfigError) before any timing; returns the stack sizes."""
    check_precision(precision, device)
    sizes = parse_arch(arch)
    try:
        ks = [int(k) for k in stack.split(",")]
    except ValueError:
        ks = [0]
    if any(k < 1 for k in ks) or steps < 1:
        raise ConfigError(f"--stack = {stack!r}, --steps = {steps}: stack sizes are positive integers (e.g. 1,8,32), "
                          "steps >= 1")
    if rounds < 1:
        raise ConfigError(f"--rounds = {rounds}: must be >= 1")
    if workers < 1 or (workers > 1 and device.type != "cpu"):
        raise ConfigError(f"--workers = {workers}: must be >= 1, and 1 on a GPU (side-by-side stacks are for a "
                          "CPU's cores)")
    check_memory_for(sizes, max(ks), workers, precision, device)
    return ks


def check_memory_for(sizes: list[int], k: int, workers: int, precision: str, device: torch.device) -> None:
    """The largest stack (and its side-by-side copies) must fit, as a sweep's would (stacks.check_memory)."""
    from ..sweeps.stacks import budget, fits, free_bytes, gib, model_bytes

    cfg = load(None, [f"model.hidden={sizes[1:-1]}", f"precision={precision}"])
    if fits(cfg, device, workers) < k:
        need, room = model_bytes(cfg) * k * workers, budget(device)
        many = (f"{workers} stacks of {k} models" if workers > 1 else
                "one model" if k == 1 else f"a stack of {k} models")
        raise ConfigError(f"--arch {'-'.join(map(str, sizes))} --stack {k}: {many} need about {gib(need)}, and "
                          f"{gib(free_bytes(device))} is free on {device}, of which the stacks may use {gib(room)}; "
                          "time a smaller --stack or --arch")


def benchmark(arch: str, stacks: Sequence[int], device: torch.device, steps: int, warmup: int = 20,
              precision: str = "fp32", rounds: int = 1, workers: int = 1) -> dict:
    """Every trainer timed `rounds` times, in turn (tuned, dataloader, each stack, then again): each
    figure is a trainer's median round, so that a slow spell of a shared machine lands on every trainer
    alike rather than on whichever ran during it. workers > 1 (a CPU): each stack size is also timed as
    that many stacks side by side."""
    sizes = parse_arch(arch)
    check_precision(precision, device)
    # the stacks' GEMMs run on the kernels of their precision; emulated bf16 runs fp32's (step.py)
    kernels = bf16_kernels(device) if precision == "bf16" else precision
    arithmetics = ["fp32"] + ([precision] if precision != "fp32" else [])
    first = {p: gemm_probe(device, p) for p in arithmetics}
    data = synthetic()  # one Dataset for every trainer, made before any memory window opens
    _prime(device)
    runs = []
    for _ in range(rounds):
        runs.append([*(tuned(sizes, data, device, steps, warmup, optimizer=o) for o in OPTIMIZERS),
                     dataloader(sizes, data, device, steps, warmup),
                     *(stacked(sizes, K, data, device, steps, warmup, precision) for K in stacks),
                     *(side_by_side(sizes, K, workers, data, device, steps, warmup, precision)
                       for K in (stacks if workers > 1 else ()))])
    timings = [median_round(list(ts)) for ts in zip(*runs)]
    # probed again after the trainers: the peak is the best either pass saw (a shared machine's speed
    # drifts within a run, and a probe that caught a slow moment would flatter every fraction)
    probes = {p: best_probe(first[p], gemm_probe(device, p)) for p in arithmetics}
    memory = bandwidth_probe(device)
    flops = flops_per_model_step(sizes)
    stack_peak = probes["fp32" if kernels == "emulated" else precision]["tflops"]
    floors = {"fp32": floor(sizes, "fp32", probes["fp32"]["tflops"], memory["gb_per_s"]),
              precision: floor(sizes, precision, stack_peak, memory["gb_per_s"])}
    n_base = len(OPTIMIZERS) + 1  # the tuned loops, then the DataLoader loop
    for t in timings:
        t.steps_per_s_per_model = t.K * t.steps / t.seconds
    best = max(timings[:len(OPTIMIZERS)], key=lambda t: t.steps_per_s_per_model)
    base, loader = best.steps_per_s_per_model, timings[len(OPTIMIZERS)].steps_per_s_per_model
    for t in timings:
        t.ratio_vs_baseline = t.steps_per_s_per_model / base
        t.ratio_vs_dataloader = t.steps_per_s_per_model / loader
        t.tflops = t.steps_per_s_per_model * flops / 1e12
        stack = "stack" in t.name
        peak = stack_peak if stack else probes["fp32"]["tflops"]
        t.peak_fraction = t.tflops / peak if peak else None
        least = floors[precision if stack else "fp32"]["seconds"]
        t.floor_multiple = 1 / t.steps_per_s_per_model / least if least else None
    env = env_info(device)
    keys = ("steps_per_s_per_model", "ratio_vs_baseline", "ratio_vs_dataloader", "tflops", "peak_fraction",
            "floor_multiple", "peak_memory_mb", "seconds", "warmup_seconds", "round_seconds")
    return {
        "command": env["command"],
        "git_commit": env["git_commit"],
        "device": device_name(device),
        "device_type": device.type,
        "cpu": cpu_model(),
        "cpu_kind": cpu_kind(),  # amx-bf16 | avx512-bf16 | avx2: what decides bf16's speed here
        "arch": arch,
        "batch": BATCH,
        "precision": precision,  # of the stacks; both baselines run in fp32
        "gemm_kernels": kernels,  # fp32 | tf32 | native (bf16) | emulated (bf16 as fp32 GEMMs, step.py)
        # the stacks' update (kernel.py): update.c on a CPU where it builds, else torch ops
        "update": kernel.describe() if device.type == "cpu" else "torch ops (not a CPU)",
        "steps_timed": steps,
        "warmup_steps": warmup,
        "rounds": rounds,  # each trainer's figures: its median round (round_seconds has them all)
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "data": "synthetic MNIST-shaped (60,000 x 784 uniform pixels, random labels)",
        "gemm_probe": probes,
        "published_peak_tflops": {p: published_peak(device, p) for p in probes},
        "peak_fraction_of": ("stacks: the probe of the kernels they run (fp32's for emulated bf16); "
                             "baselines: the fp32 probe"),
        "baseline": best.name,  # the fastest tuned loop: the ratios' reference
        "baseline_optimizer": best.name.removeprefix("tuned "),
        "baseline_steps_per_s": base,
        "dataloader_steps_per_s": loader,
        "baselines": {t.name: {"what": t.what, **{k: getattr(t, k) for k in keys}} for t in timings[:n_base]},
        "stacks": {str(t.K): {k: getattr(t, k) for k in keys} for t in timings[n_base:n_base + len(stacks)]},
        "workers": workers,
        "side_by_side": {t.name: {k: getattr(t, k) for k in keys} for t in timings[n_base + len(stacks):]},
        "bandwidth_probe": memory,
        "floor": floors,  # per model step in each arithmetic timed: its GEMMs at the probed peak, then its bytes
        "floor_counted": FLOOR_COUNTED,
        "flops_per_model_step": flops,
        "flops_counted": FLOPS_COUNTED,
        "peak_memory_measured": MEMORY_MEASURED,
        "timings": [asdict(t) for t in timings],
        "paper_length_seconds_per_model": {t.name: 1_000_000 / t.steps_per_s_per_model for t in timings},
    }


def write_json(result: dict, path: Path) -> None:
    atomic_write(path, json.dumps(result, indent=2) + "\n")
