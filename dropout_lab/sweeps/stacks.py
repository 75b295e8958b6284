"""Planning a list of runs: which train together (stacks of one structure and one resume point), how
many fit in memory, what is refused for memory before any work, and what the plan costs in model-steps
and, from a few timed steps, in wall time. runner.py trains the stacks this plans.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..config import Config, ConfigError
from ..training import data as data_mod
from ..training.train import StackTrainer, pack, steps_per_epoch, structure_key
from . import watch
from .runner import Run

# ----------------------------------------------------------------------------------------------
# planning: stacks of one structure and one resume point, capped by memory


def layer_sizes(cfg: Config) -> list[int]:
    n_in, n_out = data_mod.DIMS[cfg.data.dataset]
    return [n_in, *cfg.widths(), n_out]


def model_bytes(cfg: Config) -> int:
    """A generous estimate of one model's device memory in a stack (float32)."""
    sizes = layer_sizes(cfg)
    params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    copies = 3 if cfg.optim.name == "sgd" else 4  # weights, grads, velocity (+ Adam's second moment)
    if cfg.precision == "bf16":
        copies += 1.5  # the step's bf16 weight copies and their fp32 form where bf16 is emulated (step.py)
    # per hidden unit of a batch: pre-activation, activation, mask, dropped copy, their grads
    activations = 8 * cfg.optim.batch_size * sum(sizes)
    held = cfg.data.validation_size * sizes[0] + 2 * (cfg.data.train_size or 60_000)  # val set, index tensors
    return int(4 * (copies * params + activations + held))


def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:  # MemAvailable counts the page cache the kernel would give back; "free" memory does not
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def budget(device: torch.device, workers: int = 1) -> float:
    """Bytes one stack may use: stacks training side by side share the memory, and part of it is left for
    the data pool, evaluation and the allocator's slack."""
    free = free_bytes(device) // workers
    return 0.6 * max(free - (1 << 30) // workers, free // 2)


def fits(cfg: Config, device: torch.device, workers: int = 1) -> int:
    """How many models of this structure one stack may hold in memory (0: not even one)."""
    return int(budget(device, workers) // model_bytes(cfg))


def stack_cap(cfg: Config, device: torch.device, max_stack: int | None = None, workers: int = 1) -> int:
    """Models per stack: as many as fit, at most --max-stack (check_memory has said where it cannot have them)."""
    return max(1, min(max_stack or math.inf, fits(cfg, device, workers)))


def workers_that_fit(cfgs: Sequence[Config], device: torch.device, wanted: int) -> int:
    """The most stacks, up to `wanted`, that can train side by side with a model of each structure."""
    return max([w for w in range(1, wanted + 1) if all(fits(c, device, w) for c in cfgs)] or [1])


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


def check_memory(cfgs: Sequence[Config], device: torch.device, max_stack: int | None = None,
                 workers: int = 1) -> list[str]:
    """Refuse (ConfigError), before any work, a run whose one model cannot fit in memory; returns a note for
    each structure where --max-stack asks for more models per stack than fit, which then get what fits."""
    notes, seen = [], set()
    for c in cfgs:
        key = structure_key(c)
        if key in seen:
            continue
        seen.add(key)
        n, need = fits(c, device, workers), model_bytes(c)
        shape = "-".join(map(str, layer_sizes(c)))
        room = (f"{gib(free_bytes(device))} is free on {device}, of which a stack may use "
                f"{gib(budget(device, workers))}" + (f" ({workers} train side by side)" if workers > 1 else ""))
        if n == 0 and fits(c, device) > 0:
            raise ConfigError(f"--workers {workers}: one {shape} model needs about {gib(need)}, and {room}; "
                              f"use --workers {max(w for w in range(1, workers) if fits(c, device, w))}")
        if n == 0:
            raise ConfigError(f"model.hidden = {c.model.hidden}: one {shape} model needs about {gib(need)} "
                              f"(weights, gradients, velocity, a batch's activations), and {room}; narrow the net")
        if max_stack and max_stack > n:
            notes.append(f"--max-stack {max_stack}: {shape} models need about {gib(need)} each, and {room}: "
                         f"its stacks hold {n}")
    return notes


def plan(runs: Sequence[Run], device: torch.device, max_stack: int | None = None,
         workers: int = 1) -> list[list[Run]]:
    """Unfinished runs packed into stacks: one structure and one resume point per stack, at most the cap.

    workers > 1: a stack with more than a worker's share of the work is halved (a model's numbers do not
    depend on its stack), until there are at least `workers` stacks and none holds more than its share
    unless it is a single model; the costliest go first, so that the workers finish together.
    """
    todo = [r for r in runs if not r.skipped and not r.held]
    stacks = []
    by_progress: dict[tuple, list[Run]] = {}
    for r in todo:
        by_progress.setdefault(r.progress, []).append(r)
    for group in by_progress.values():
        for members in pack([r.cfg for r in group]):
            cap = stack_cap(group[members[0]].cfg, device, max_stack, workers)
            for i in range(0, len(members), cap):
                stacks.append([group[j] for j in members[i:i + cap]])
    if workers <= 1:
        return stacks
    share = sum(map(stack_cost, stacks)) / workers
    while True:
        big = max((s for s in stacks if len(s) > 1), key=stack_cost, default=None)
        if big is None or (len(stacks) >= workers and stack_cost(big) <= share):
            break
        i = stacks.index(big)
        stacks[i:i + 1] = [big[:len(big) // 2], big[len(big) // 2:]]
    return sorted(stacks, key=stack_cost, reverse=True)


def stack_cost(stack: Sequence[Run]) -> float:
    """A stack's work left, in parameter-updates: enough to order stacks for the workers."""
    c = stack[0].cfg
    sizes = layer_sizes(c)
    params = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    n = c.data.train_size or data_mod.TRAIN_POOL[c.data.dataset] - c.data.validation_size
    return len(stack) * params * (c.optim.epochs - stack[0].progress[0]) * steps_per_epoch(n, c.optim.batch_size)


# ----------------------------------------------------------------------------------------------
# the plan's cost

# FLOP/s no device of the kind sustains on these GEMMs (a many-core AMX server; an H200's dense bf16 peak is
# about 1e15): the plan's work at this rate is a time it cannot beat, whatever machine runs it
FASTEST = {"cpu": 1e13, "cuda": 1e15}
ABSURD_DAYS = 7  # a plan that cannot finish in this many days even at FASTEST is warned of before any work


def plan_flops(cfgs: Sequence[Config]) -> float:
    """The floating-point operations of training every run to the end: 6 per weight and sample (the forward
    GEMM and the two of the backward pass, a multiply and an add each); evaluation passes left out."""
    total = 0.0
    for c in cfgs:
        n = c.data.train_size or data_mod.TRAIN_POOL[c.data.dataset] - c.data.validation_size
        sizes = layer_sizes(c)
        per_sample = 6 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
        total += per_sample * c.optim.batch_size * c.optim.epochs * steps_per_epoch(max(n, 1), c.optim.batch_size)
    return total


def absurd_length(cfgs: Sequence[Config], device: torch.device) -> str | None:
    """A warning for a plan that no machine could finish in ABSURD_DAYS (None for any other plan)."""
    flops, fastest = plan_flops(cfgs), FASTEST.get(device.type, FASTEST["cuda"])
    days = flops / fastest / 86400
    if days <= ABSURD_DAYS:
        return None
    longest = max(cfgs, key=lambda c: c.optim.epochs)
    return (f"this plan is {flops:.1e} floating-point operations (optim.epochs up to {longest.optim.epochs:,}): "
            f"even at {fastest:.0e} FLOP/s, more than any {device.type} device sustains on it, that is "
            f"{days:,.0f} days; --dry-run times it here, and Ctrl-C stops it with a checkpoint")


def steps_in_epoch(c: Config, data: data_mod.Dataset) -> int:
    return steps_per_epoch(c.data.train_size or (len(data.y_train) - c.data.validation_size), c.optim.batch_size)


def model_steps(stacks: Sequence[Sequence[Run]], datasets: dict[str, data_mod.Dataset]) -> int:
    """Weight updates left in the plan, summed over models: the sweep's size in one number."""
    return sum(len(s) * ((c := s[0].cfg).optim.epochs * steps_in_epoch(c, datasets[c.data.dataset])
                         - s[0].progress[1]) for s in stacks)


PROBE_IMAGES = 1000  # images of the timed evaluation pass; a full pass costs (test + validation) / this times it


def _probe(cfg: Config, data: data_mod.Dataset, device: torch.device, k: int, steps: int,
           side_by_side: int = 1) -> tuple[float, float]:
    """(seconds per model-step, seconds per model-evaluation pass) of the machine, from `side_by_side` small
    stacks of this structure timed together, each on its own thread, as the workers will train them: the
    cores, the memory bandwidth and the caches are shared as they will be, and the seconds are the
    machine's, so that the plan's seconds are a sum."""
    trainers = [StackTrainer([cfg.model_copy(update={"seed": s}) for s in range(k)], data, device)
                for _ in range(side_by_side)]
    n = steps
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    x, y = trainers[0].x_test[:PROBE_IMAGES], trainers[0].y_test[:PROBE_IMAGES]

    def step(tr: StackTrainer) -> None:
        if tr.order is None or tr.s >= tr.steps_per_epoch:  # a set of 100 images is one step an epoch
            tr.begin_epoch()
        tr.train_step()

    def train(tr: StackTrainer) -> None:
        step(tr)  # warm-up: allocation, kernel choice
        step(tr)

    def timed(tr: StackTrainer) -> None:
        for _ in range(n):
            step(tr)

    def evaluate(tr: StackTrainer) -> None:
        tr.evaluate(x, y)

    def together(fn) -> float:
        sync()
        t = watch.now()
        if side_by_side == 1:
            fn(trainers[0])
        else:
            with ThreadPoolExecutor(side_by_side) as pool:
                list(pool.map(fn, trainers))
        sync()
        return watch.now() - t

    together(train)
    together(evaluate)  # warm-up of the evaluation's shapes
    t_step = together(timed) / (n * k * side_by_side)
    t_eval = together(evaluate) / (k * side_by_side) * (len(data.y_test) + cfg.data.validation_size) / len(y)
    return t_step, t_eval


def estimate_seconds(stacks: Sequence[Sequence[Run]], datasets: dict[str, data_mod.Dataset],
                     device: torch.device, workers: int = 1, steps: int = 8) -> float:
    """Wall seconds for the plan, from a few timed steps and a timed slice of a test pass of each structure.

    workers > 1: that many stacks are timed side by side on one torch thread each, as the workers train
    them, so the machine's shared rate is measured rather than assumed; the plan takes the sum of its
    stacks' shares of the machine, and never less than its longest stack alone. A guide, not a promise:
    the README gives its measured ratio to the time the plan took."""
    side_by_side = max(1, min(workers, len(stacks)))
    threads = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(1)
    try:
        shares = _estimates(stacks, datasets, device, steps, side_by_side)
    finally:
        torch.set_num_threads(threads)
    return max(sum(shares), max(shares, default=0.0) * side_by_side)


def _estimates(stacks, datasets, device, steps, side_by_side) -> list[float]:
    """Each stack's machine-seconds: its model-steps and test passes at the probed rates."""
    probes: dict[tuple, tuple[float, float]] = {}
    out = []
    for stack in stacks:
        c = stack[0].cfg
        data = datasets[c.data.dataset]
        key = structure_key(c)
        if key not in probes:
            probes[key] = _probe(c, data, device, min(4, len(stack)), steps, side_by_side)
        step, evaluation = probes[key]
        epoch = stack[0].progress[0]
        every = c.eval.every  # test passes: every eval.every epochs, and the last
        passes = c.optim.epochs // every - epoch // every + (c.optim.epochs % every != 0)
        out.append(len(stack) * ((c.optim.epochs * steps_in_epoch(c, data) - stack[0].progress[1]) * step
                                 + passes * evaluation))
    return out
