"""One `dropout-lab sweep` invocation: what it plans, and training it under the folder's lock.

The plan is the sweep's unfinished runs (those --only keeps) packed into stacks for the backend. Training
holds the results folder's lock, writes sweep.yaml and an index of every run of the sweep (--only or
not), keeps this invocation's line of sessions.jsonl current, and hands the stacks to the local backend
(local.py) or to Ray (distributed.py). cli.py parses the options and prints; this module does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from . import data as data_mod
from . import tables
from .results import Session, command_line, env_info, folder_lock, write_index
from .runner import FailFast, Run, estimate_seconds, model_steps, plan, survey
from .sweep import Sweep, write_sweep_yaml


@dataclass
class Invocation:
    sw: Sweep
    keep: list[bool]  # which runs --only keeps (all, without it)
    root: Path  # the sweep's results folder
    device: torch.device
    datasets: dict[str, data_mod.Dataset]
    backend: str = "local"
    workers: int = 1
    max_stack: int | None = None
    force: bool = False

    def survey(self) -> tuple[list[Run], list[Run]]:
        """(every run of the sweep, the runs --only keeps), each with what its folder holds."""
        every = survey(self.sw.runs, self.root, self.sw.values, self.force)
        return every, [r for r, k in zip(every, self.keep) if k]

    def chosen(self) -> str:
        return f" (of {len(self.sw.runs)}, by --only)" if not all(self.keep) else ""

    def dry_run(self, console: Console, notes) -> None:
        """The plan, its cost and an estimate of its time; trains nothing."""
        _, runs = self.survey()
        notes(runs)
        stacks = plan(runs, self.device, self.max_stack, self.workers)
        for t in tables.plan_tables(self.sw, runs, stacks):
            console.print(t)
        if not stacks:
            console.print("nothing left to train: every run is done")
        counts = {s: sum(r.status == s for r in runs) for s in ("completed", "partial", "new", "failed", "diverged")}
        seconds = estimate_seconds(stacks, self.datasets, self.device, self.workers) if stacks else 0.0
        how = "Ray runs stacks in parallel" if self.backend == "ray" else \
            f"{tables.plural(self.workers, 'stack')} at a time"
        console.print(
            f"{len(runs)} runs{self.chosen()}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + "; "
            f"{model_steps(stacks, self.datasets):,} model-steps left in {tables.plural(len(stacks), 'stack')}; "
            f"about {tables.duration(seconds)} on {self.device} (timed from a few steps of each structure; {how})",
            highlight=False)

    def train(self, config_path: str, console: Console, notes, address: str | None = None,
              gpus_per_stack: float = 0.0, keep_checkpoints: bool = False, fail_fast: bool = False) -> list[Run]:
        """Train the plan; returns the runs --only keeps, each with its outcome. KeyboardInterrupt (Ctrl-C,
        SIGTERM) leaves every unfinished run checkpointed; FolderBusy if another process holds the folder."""
        command = command_line()
        with folder_lock(self.root):
            every, runs = self.survey()
            notes(runs)
            stacks = plan(runs, self.device, self.max_stack, self.workers)
            kept = sum(r.skipped and r.status == "diverged" for r in runs)
            console.print(f"[bold]{self.sw.base.name}[/bold]: {tables.plural(len(runs), 'run')}{self.chosen()}, "
                          f"{sum(r.status == 'completed' for r in runs)} already done"
                          + (f", {kept} diverged earlier (kept; --force retrains)" if kept else "") + "; "
                          f"{tables.plural(len(stacks), 'stack')} on "
                          f"{self.device if self.backend == 'local' else 'Ray'}; results in {self.root}/")

            def index():
                write_index(self.root, [{"run_id": r.id, "status": r.status, **r.values, **(r.summary or {})}
                                        for r in every], self.sw.keys)

            write_sweep_yaml(self.root, self.sw, config_path, command)
            index()
            if self.force and all(self.keep):  # every run is retrained: earlier sessions no longer account for them
                (self.root / "sessions.jsonl").unlink(missing_ok=True)
            if not stacks:
                return runs
            env, outcome = env_info(self.device, self.workers), "error"
            session = Session(self.root, env, every=min(10.0, *(r.cfg.checkpoint_seconds for s in stacks for r in s)),
                              backend=self.backend, stacks=len(stacks), runs=sum(len(s) for s in stacks),
                              model_steps=model_steps(stacks, self.datasets), command=command)
            try:
                if self.backend == "ray":
                    from .distributed import execute_ray

                    execute_ray(runs, stacks, env, console, index, address, gpus_per_stack, keep_checkpoints,
                                fail_fast)
                else:
                    from .local import execute

                    execute(runs, stacks, self.datasets, self.device, env, console, index, keep_checkpoints,
                            fail_fast, session.update, self.workers)
                outcome = "completed"
            except KeyboardInterrupt:
                outcome = "interrupted"
                raise
            except FailFast:
                outcome = "fail-fast"
                console.print("--fail-fast: stopped at the first failed or diverged run; unfinished runs are "
                              "checkpointed", style="red")
            finally:
                session.update(outcome)
        return runs
