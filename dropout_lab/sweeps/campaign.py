"""One `dropout-lab sweep` invocation: what it plans, and training it under the folder's lock.

The plan is the sweep's unfinished runs (those --only keeps) packed into stacks for the backend. Training
holds the results folder's lock, writes sweep.yaml and an index of every run of the sweep (--only or
not), keeps this invocation's line of sessions.jsonl current, and hands the stacks to the local backend
(local.py) or to Ray (distributed.py). cli.py parses the options and prints; this module does the rest.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from .. import tables
from ..config import Config, ConfigError
from ..store.guard import check_destination, check_files, check_source, claim
from ..store.results import Session, command_line, env_info, folder_lock, write_index
from ..training import data as data_mod
from .runner import FailFast, Run, survey
from .stacks import absurd_length, check_memory, estimate_seconds, model_steps, plan
from .sweep import Sweep, write_sweep_yaml
from .watch import start_lines


def check_options(backend: str, max_stack: int | None, workers: int | None, gpus_per_stack: float) -> None:
    """`sweep`'s own options, each refused with one line (ConfigError)."""
    if backend not in ("local", "ray"):
        raise ConfigError(f"--backend = {backend!r}: allowed: local, ray")
    if max_stack is not None and max_stack < 1:
        raise ConfigError(f"--max-stack = {max_stack}: must be >= 1")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers = {workers}: must be >= 1")
    if workers is not None and workers > 1 and backend != "local":
        raise ConfigError(f"--workers = {workers}: side-by-side stacks are for the local backend (Ray places its "
                          "own tasks: --max-stack sets how many)")
    if gpus_per_stack < 0:
        raise ConfigError(f"--gpus-per-stack = {gpus_per_stack:g}: must be >= 0")
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("--backend ray needs Ray: pip install 'dropout-lab[ray]' (or '.[ray]' in a checkout)")


def preflight(cfgs: list[Config], root: Path, config: Path, device: torch.device, max_stack: int | None = None,
              workers: int = 1) -> list[str]:
    """What can be known wrong before any work, refused with one line (ConfigError): a results folder that
    cannot be written or holds another config file's runs, a model that cannot fit in memory. Returns the
    notes for what is adjusted rather than refused (--max-stack past memory)."""
    try:
        check_destination(root, "--out")
        check_files(root, [root / c.run_id() for c in cfgs])
        check_source(root, config)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    length = absurd_length(cfgs, device)
    return check_memory(cfgs, device, max_stack, workers) + ([length] if length else [])


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
    restart: bool = False

    def survey(self) -> tuple[list[Run], list[Run]]:
        """(every run of the sweep, the runs --only keeps), each with what its folder holds."""
        every = survey(self.sw.runs, self.root, self.sw.values, self.force, self.restart)
        return every, [r for r, k in zip(every, self.keep) if k]

    def chosen(self) -> str:
        return f" (of {len(self.sw.runs)}, by --only)" if not all(self.keep) else ""

    def dry_run(self, console: Console, notes) -> None:
        """The plan, its cost and an estimate of its time; trains nothing."""
        _, runs = self.survey()
        notes(runs)
        stacks = plan(runs, self.device, self.max_stack, self.workers)
        for t in tables.plan_tables(self.sw, runs, stacks, console.width):
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
            claim(self.root, Path(config_path))
            every, runs = self.survey()
            notes(runs)
            stacks = plan(runs, self.device, self.max_stack, self.workers)
            kept = sum(r.skipped and r.status == "diverged" for r in runs)
            held = sum(r.held for r in runs)
            console.print(f"[bold]{self.sw.base.name}[/bold]: {tables.plural(len(runs), 'run')}{self.chosen()}, "
                          f"{sum(r.status == 'completed' for r in runs)} already done"
                          + (f", {kept} diverged earlier (kept; --force retrains)" if kept else "")
                          + (f", {held} stopped with no resume point (kept; --restart retrains)" if held else "") + "; "
                          f"{tables.plural(len(stacks), 'stack')} on "
                          f"{self.device if self.backend == 'local' else 'Ray'}; results in {self.root}/")

            def index():
                write_index(self.root, [{"run_id": r.id, "status": r.status, **r.values, **(r.summary or {})}
                                        for r in every], self.sw.keys)

            for line in start_lines(stacks, self.force, keep_checkpoints):
                console.print(line, markup=False, highlight=False)
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

                    execute_ray(runs, stacks, self.datasets, env, console, index, address, gpus_per_stack,
                                keep_checkpoints, fail_fast)
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


def train_run(sw: Sweep, root: Path, config: Path, device: torch.device, datasets: dict[str, data_mod.Dataset],
              force: bool, console: Console, notes, log, restart: bool = False) -> list[Run]:
    """`dropout-lab run`: the config's dropout model and its control, under the folder's lock."""
    from .local import execute

    with folder_lock(root):
        claim(root, config)
        runs = survey(sw.runs, root, sw.values, force, restart)
        notes(runs)
        for r in runs:
            if r.status == "completed":
                log(f"{r.id}: already completed, skipped (--force retrains)")
            elif r.skipped:
                log(f"{r.id}: diverged earlier, kept (--force retrains)")
        stacks = plan(runs, device)
        for line in start_lines(stacks, force):
            log(line)
        execute(runs, stacks, datasets, device, env_info(device), console)
    return runs


def seed_pairs(root: Path, cfg: Config) -> list[tuple[int, float, float]]:
    """(seed, dropout's final test error, its control's) for every seed of this config completed in `root`,
    this invocation's and earlier ones' (`run --set seed=N` adds seeds to one folder)."""
    from ..config import validate, yaml_load
    from ..store.readback import Damaged, read_summary, run_dirs

    def unseeded(c: Config) -> str:
        return c.model_copy(update={"seed": 0}).run_id()

    want = {unseeded(cfg.run_config()): "dropout", unseeded(cfg.control()): "control"}
    found: dict[int, dict[str, float]] = {}
    for d in run_dirs(root):
        try:
            c = validate(yaml_load((d / "config.yaml").read_text()))
            s = read_summary(d)
        except (ConfigError, Damaged, OSError, ValueError):
            continue  # a run this cannot read is not counted; `plot` and `report` name damaged files
        if s and s["status"] == "completed" and (role := want.get(unseeded(c))):
            found.setdefault(c.seed, {})[role] = s["final_test_error"]
    return sorted((seed, e["dropout"], e["control"]) for seed, e in found.items() if len(e) == 2)

