"""The local backend: a sweep's stacks trained in this process, one after another or `workers` at a time.

With workers > 1 each stack trains in its own thread with one torch thread: the GEMMs release the GIL,
so the stacks run side by side, a core each. On a 2-core CPU that is faster than one stack at a time
on two torch threads, whose GEMMs split too small to keep both cores busy (README, "Workers"); a
model's numbers are the same either way (tests/test_sweep.py). One progress display, one Ctrl-C
(every running stack checkpoints at its next step) and one index for all of them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from rich.console import Console

from ..store.readback import read_summary
from ..training import data as data_mod
from .runner import FailFast, Run, Stop, run_stack
from .watch import Display, plan_meter


def record(runs: Sequence[Run], summaries: Sequence[dict]) -> None:
    for r, s in zip(runs, summaries):
        r.summary, r.status = s, s["status"]
        r.progress = (0, 0) if s["status"] == "completed" else r.progress


def default_workers(device: torch.device) -> int:
    """A stack per core on a CPU; one at a time on a GPU, which a single stack already fills."""
    return max(1, os.cpu_count() or 1) if device.type == "cpu" else 1


def execute(runs: Sequence[Run], stacks: Sequence[Sequence[Run]], datasets: dict[str, data_mod.Dataset],
            device: torch.device, env: dict, console: Console, after_stack: Callable[[], None] = lambda: None,
            keep_checkpoints: bool = False, fail_fast: bool = False, tick: Callable[[], None] = lambda: None,
            workers: int = 1) -> None:
    """Train `stacks`, updating each Run; `after_stack` runs after each (the sweep's index), `tick` after
    every epoch (the session record). workers > 1: that many stacks at a time (stacks.plan split them)."""
    lock = threading.Lock()  # the Runs and the callbacks are shared by the worker threads
    errors: list[BaseException] = []
    meter = plan_meter(runs, stacks, datasets, workers)
    with Display(meter, console) as display, Stop() as stop:

        def train(n: int, stack: Sequence[Run]) -> None:
            if stop.requested:  # stopping: a stack not started yet stays as it is
                return

            def on_epoch(rows):
                meter.epoch(n, rows)
                with lock:
                    display.plain()
                    tick()

            try:
                summaries = run_stack(stack, datasets[stack[0].cfg.data.dataset], device, env, stop, on_epoch,
                                      keep_checkpoints, fail_fast, on_update=lambda: meter.step(n))
            except (KeyboardInterrupt, FailFast) as e:
                with lock:
                    for r in stack:  # a member that diverged before the stop has its summary; the rest are partial
                        r.summary = read_summary(r.dir)
                        r.status = r.summary["status"] if r.summary else "partial"
                    errors.append(e)
                    stop.requested = True  # the other stacks checkpoint and stop too
                    after_stack()
                return
            with lock:
                record(stack, summaries)
                for r in stack:
                    if r.status == "failed":
                        display.print(f"[red]{r.id} failed: {r.summary.get('error')}[/red]")
                        display.print(f"[dim]{r.summary.get('traceback', '')}[/dim]")
                        break
                meter.finish(n, sum(r.status == "completed" for r in stack))
                after_stack()
                if fail_fast and any(r.status in ("failed", "diverged") for r in stack):
                    errors.append(FailFast())
                    stop.requested = True

        if workers <= 1:
            for n, stack in enumerate(stacks):
                train(n, stack)
                if errors:
                    break
        else:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # a core per stack: process-wide, so set once here, restored below
            try:
                with ThreadPoolExecutor(workers, thread_name_prefix="stack") as pool:
                    for f in [pool.submit(train, n, s) for n, s in enumerate(stacks)]:
                        f.result()  # train() keeps its stops in `errors`; anything else is a bug: raise it
            finally:
                torch.set_num_threads(threads)
    if errors:
        raise next((e for e in errors if isinstance(e, FailFast)), errors[0])
