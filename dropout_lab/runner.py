"""Run a list of run configs: survey what is done, pack the rest into stacks, train, never lose work.

Used by `dropout-lab run` (a dropout model and its control) and by sweeps, with the local backend in
local.py and the Ray backend in distributed.py; both train a stack through `run_stack`. A run's folder
is written as it trains, its checkpoint is replaced atomically, and `summary.json` comes last, so an
interrupted run is visibly partial and resumes where its checkpoint left it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import data as data_mod
from .config import Config, ConfigError
from .evaluate import mc_evaluate
from .readback import Damaged, check_run, read_env
from .results import CHECKPOINT, RunWriter, atomic_write, load_checkpoint, remove_checkpoint, save_checkpoint
from .train import StackTrainer, pack, steps_per_epoch, structure_key, train_stack


@dataclass
class Run:
    cfg: Config
    dir: Path
    values: dict = field(default_factory=dict)  # swept key -> value in cfg (for the index)
    status: str = "new"  # new | partial | completed | failed | diverged
    progress: tuple[int, int] = (0, 0)  # (epoch, step) its checkpoint resumes from
    summary: dict | None = None
    skipped: bool = False  # completed or diverged before this invocation: kept, not retrained
    note: str = ""  # one line for the user: a damaged file found in its folder, and what is done about it

    @property
    def id(self) -> str:
        return self.dir.name


def check_sizes(cfg: Config, dataset: data_mod.Dataset) -> None:
    try:
        data_mod.check_sizes(len(dataset.y_train), cfg.data.train_size, cfg.data.validation_size)
    except ValueError as e:
        key = "data.train_size" if cfg.data.train_size else "data.validation_size"
        value = cfg.data.train_size or cfg.data.validation_size
        raise ConfigError(f"{key} = {value}: {e} ({dataset.name})") from None


def load_datasets(cfgs: Sequence[Config], log=lambda s: None) -> dict[str, data_mod.Dataset]:
    out = {name: data_mod.load(name, log) for name in sorted({c.data.dataset for c in cfgs})}
    for c in cfgs:
        check_sizes(c, out[c.data.dataset])
    return out


# verdicts that stand until --force: a completed run is done, and a diverged one diverges again if retrained
KEPT = ("completed", "diverged")


def survey(cfgs: Sequence[Config], root: Path, values: Sequence[dict] | None = None,
           force: bool = False) -> list[Run]:
    """What each run's folder holds: completed and diverged runs are kept, checkpointed ones resume, others start.

    A folder with a damaged record (summary.json, env.json, metrics.csv) is not trusted: its run is retrained,
    from its checkpoint only where that and the rows it keeps are intact and env.json is too (a resumed run
    keeps its first start's provenance), and run.note says so.
    """
    runs = []
    for i, c in enumerate(cfgs):
        run = Run(c, root / c.run_id(), dict(values[i]) if values else {})
        runs.append(run)
        if force:  # everything restarts; run_stack removes old checkpoints as it opens each run afresh
            continue
        damage, fresh = None, False
        try:
            # a finished run's summary and all its rows; an unfinished run's rows are those its checkpoint keeps
            summary = check_run(run.dir) if (run.dir / "summary.json").exists() else None
            read_env(run.dir)
        except Damaged as e:
            damage, summary, fresh = str(e), None, e.path.name == "env.json"
        if summary and summary["status"] in KEPT:
            run.status, run.summary, run.skipped = summary["status"], summary, True
            continue
        ckpt = None
        if not fresh:
            try:
                ckpt = load_checkpoint(run.dir, run.id, mmap=True)
            except Damaged as e:
                damage = damage or str(e)
        if ckpt is not None:
            run.status, run.progress = "partial", (ckpt["epoch"], ckpt["step"])
        elif summary:
            run.status, run.summary = summary["status"], summary
        elif (run.dir / "metrics.csv").exists():
            run.status = "partial"  # no checkpoint yet: restarts from epoch 0
        how = f"from its checkpoint at epoch {ckpt['epoch']}" if ckpt is not None else "from scratch"
        if damage:
            run.note = f"{damage}: that run is retrained {how}"
        elif ckpt is None and (run.dir / CHECKPOINT).is_file():  # a restart the user should not have to guess
            run.note = (f"{run.dir / CHECKPOINT} cannot be resumed (unreadable, another run's, an older trainer's, "
                        "or its metrics rows are gone): that run is retrained from scratch")
    return runs


# ----------------------------------------------------------------------------------------------
# planning: stacks of one structure and one resume point, capped by memory


def model_bytes(cfg: Config, n_in: int = 784, n_out: int = 10) -> int:
    """A generous estimate of one model's device memory in a stack (float32)."""
    sizes = [n_in, *cfg.widths(), n_out]
    params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    copies = 3 if cfg.optim.name == "sgd" else 4  # weights, grads, velocity (+ Adam's second moment)
    if cfg.precision == "bf16":
        copies += 1.5  # the step's bf16 weight copies and their fp32 form where bf16 is emulated (step.py)
    # per hidden unit of a batch: pre-activation, activation, mask, dropped copy, their grads
    activations = 8 * cfg.optim.batch_size * sum(sizes)
    held = cfg.data.validation_size * n_in + 2 * (cfg.data.train_size or 60_000)  # val set, index tensors
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


def stack_cap(cfg: Config, device: torch.device, max_stack: int | None = None, workers: int = 1) -> int:
    if max_stack:
        return max_stack
    free = free_bytes(device) // workers  # stacks training side by side share the memory
    usable = max(free - (1 << 30) // workers, free // 2)  # room for the data pool, evaluation, allocator slack
    return max(1, int(0.6 * usable // model_bytes(cfg)))


def plan(runs: Sequence[Run], device: torch.device, max_stack: int | None = None,
         workers: int = 1) -> list[list[Run]]:
    """Unfinished runs packed into stacks: one structure and one resume point per stack, at most the cap.

    workers > 1: a stack with more than a worker's share of the work is halved (a model's numbers do not
    depend on its stack), until there are at least `workers` stacks and none holds more than its share
    unless it is a single model; the costliest go first, so that the workers finish together.
    """
    todo = [r for r in runs if not r.skipped]
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
    sizes = [784, *c.widths(), 10]
    params = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    n = c.data.train_size or data_mod.TRAIN_POOL[c.data.dataset] - c.data.validation_size
    return len(stack) * params * (c.optim.epochs - stack[0].progress[0]) * steps_per_epoch(n, c.optim.batch_size)


# ----------------------------------------------------------------------------------------------
# one stack, start to finish (or to a checkpoint)


class Stop:
    """The first Ctrl-C (or SIGTERM, as a shell, a scheduler or a closing session sends) asks the trainer to
    checkpoint at the next step and stop; a second one is immediate."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._old: dict = {}

    def __enter__(self) -> Stop:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        for s, old in self._old.items():
            signal.signal(s, old if s == signal.SIGINT else _raise_interrupt)

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


def _raise_interrupt(signum, frame) -> None:  # a second SIGTERM: stop now, as a second Ctrl-C does
    raise KeyboardInterrupt


class FailFast(Exception):
    pass


def run_stack(runs: Sequence[Run], data: data_mod.Dataset, device: torch.device, env: dict,
              stop: Stop | None = None, on_epoch: Callable[[list], None] | None = None,
              keep_checkpoints: bool = False, fail_fast: bool = False) -> list[dict]:
    """Train one stack (fresh, or resumed from its members' checkpoints); return each run's summary.

    KeyboardInterrupt and FailFast leave every unfinished member checkpointed and without a summary.
    """
    cfgs = [r.cfg for r in runs]
    states = [load_checkpoint(r.dir, r.id) for r in runs] if runs[0].progress != (0, 0) else None
    if states is not None and any(s is None for s in states):
        raise RuntimeError("a checkpoint of this stack disappeared; run the command again to restart it")
    if states is None:
        for r in runs:  # a fresh start must never be mistaken later for a resume point
            remove_checkpoint(r.dir)
    writers = {i: RunWriter(r.dir, r.cfg, env, keep_rows=r.progress[0]) for i, r in enumerate(runs)}
    summaries: dict[int, dict] = {}
    every = min(c.checkpoint_seconds for c in cfgs)
    last = [time.monotonic()]
    t0 = time.perf_counter()

    def checkpoint(tr: StackTrainer) -> None:
        seconds = time.perf_counter() - t0 + (states[0].get("seconds", 0.0) if states else 0.0)
        for i in writers:
            save_checkpoint(runs[i].dir, {**tr.model_state(i), "run_id": runs[i].id, "seconds": seconds})
        last[0] = time.monotonic()

    def on_step(tr: StackTrainer) -> None:
        halt = stop is not None and stop.requested
        if halt or failed or time.monotonic() - last[0] >= every:
            checkpoint(tr)
        if halt:
            raise KeyboardInterrupt
        if failed:
            raise FailFast

    def on_end(tr: StackTrainer) -> None:
        ev = cfgs[0].eval
        if not ev.mc_samples:
            return
        checkpoint(tr)  # the trained nets are safe before the long MC evaluation starts
        results = mc_evaluate(tr, list(ev.mc_samples), ev.mc_repeats, [c.seed for c in cfgs])
        for i in writers:
            atomic_write(runs[i].dir / "mc.json", json.dumps(results[i], indent=2) + "\n")

    failed = False  # set by a divergence under fail_fast: stop at the next step, checkpointed
    try:
        for rows in train_stack(cfgs, data, device, states, on_step, on_end):
            for i, row in enumerate(rows):
                if row is None or i not in writers:
                    continue
                writers[i].add(row)
                if row["diverged"]:
                    summaries[i] = writers.pop(i).finish("diverged", 0.0, "loss became NaN or inf")
                    remove_checkpoint(runs[i].dir)
                    failed = fail_fast
            if on_epoch is not None:
                on_epoch(rows)
    except (KeyboardInterrupt, FailFast):
        for w in writers.values():  # partial runs stay without a summary: visibly unfinished
            w.close()
        raise
    except Exception as e:  # isolate the failure to this stack's unfinished runs
        msg = f"{type(e).__name__}: {e}"
        for i, w in writers.items():
            summaries[i] = w.finish("failed", time.perf_counter() - t0, msg)
            summaries[i]["traceback"] = traceback.format_exc(limit=4)
        return [summaries[i] for i in range(len(runs))]
    for i, w in writers.items():
        summaries[i] = w.finish("completed", time.perf_counter() - t0)
        if not keep_checkpoints:
            remove_checkpoint(runs[i].dir)
    return [summaries[i] for i in range(len(runs))]


def _steps_per_epoch(c: Config, data: data_mod.Dataset) -> int:
    return steps_per_epoch(c.data.train_size or (len(data.y_train) - c.data.validation_size), c.optim.batch_size)


def model_steps(stacks: Sequence[Sequence[Run]], datasets: dict[str, data_mod.Dataset]) -> int:
    """Weight updates left in the plan, summed over models: the sweep's size in one number."""
    return sum(len(s) * ((c := s[0].cfg).optim.epochs * _steps_per_epoch(c, datasets[c.data.dataset])
                         - s[0].progress[1]) for s in stacks)


def _probe(cfg: Config, data: data_mod.Dataset, device: torch.device, k: int, steps: int) -> tuple[float, float]:
    """(seconds per model-step, seconds per model-evaluation) of a small stack of this structure."""
    tr = StackTrainer([cfg.model_copy(update={"seed": s}) for s in range(k)], data, device)
    tr.begin_epoch()
    n = max(1, min(steps, tr.steps_per_epoch - 1))
    tr.train_step()  # warm-up: allocation, kernel choice
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    for _ in range(n):
        if tr.s == tr.steps_per_epoch:
            tr.begin_epoch()
        tr.train_step()
    sync()
    t_step = (time.perf_counter() - t) / n / k
    t = time.perf_counter()
    tr.epoch_metrics()  # the test (and validation) pass that ends every epoch
    sync()
    return t_step, (time.perf_counter() - t) / k


def estimate_seconds(stacks: Sequence[Sequence[Run]], datasets: dict[str, data_mod.Dataset],
                     device: torch.device, workers: int = 1, steps: int = 4) -> float:
    """Wall seconds for the plan, from a few timed steps of a small stack of each structure: a rough guide.
    workers > 1: timed on one torch thread, as each worker trains, and shared among the workers."""
    threads = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(1)
    try:
        each = _estimates(stacks, datasets, device, steps)
    finally:
        torch.set_num_threads(threads)
    return max(sum(each) / workers, max(each, default=0.0))


def _estimates(stacks, datasets, device, steps) -> list[float]:
    probes: dict[tuple, tuple[float, float]] = {}
    out = []
    for stack in stacks:
        c = stack[0].cfg
        data = datasets[c.data.dataset]
        key = structure_key(c)
        if key not in probes:
            probes[key] = _probe(c, data, device, min(4, len(stack)), steps)
        step, evaluation = probes[key]
        epochs = c.optim.epochs - stack[0].progress[0]
        passes = math.ceil(epochs / c.eval.every)  # test passes: every eval.every epochs and the last
        out.append(len(stack) * (epochs * _steps_per_epoch(c, data) * step + passes * evaluation))
    return out
