"""Run a list of run configs: survey what is done, train the stacks stacks.py packs, never lose work.

Used by `dropout-lab run` (a dropout model and its control) and by sweeps, with the local backend in
local.py and the Ray backend in distributed.py; both train a stack through `run_stack`. A run's folder
is written as it trains, its checkpoint is replaced atomically, and `summary.json` comes last, so an
interrupted run is visibly partial and resumes where its checkpoint left it.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import Config, ConfigError
from ..store.readback import Damaged, check_run, read_env, read_metrics
from ..store.results import (
    CHECKPOINT,
    EARLIER,
    RunWriter,
    atomic_write,
    keep_earlier,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from ..training import data as data_mod
from ..training.evaluate import mc_evaluate
from ..training.train import StackTrainer, train_stack
from .scale import updates as run_updates


@dataclass
class Run:
    cfg: Config
    dir: Path
    values: dict = field(default_factory=dict)  # swept key -> value in cfg (for the index)
    status: str = "new"  # new | partial | completed | failed | diverged
    progress: tuple[int, int] = (0, 0)  # (epoch, step) its checkpoint resumes from
    summary: dict | None = None
    skipped: bool = False  # completed or diverged before this invocation: kept, not retrained
    held: bool = False  # epochs recorded and no resume point: kept as it is, not trained, until --restart
    note: str = ""  # one line for the user: a damaged file found in its folder, and what is done about it

    @property
    def id(self) -> str:
        return self.dir.name


def check_sizes(cfg: Config, dataset: data_mod.Dataset) -> None:
    """The subset sizes and the batch against the dataset, each error naming the keys that cause it."""
    n, train, held = len(dataset.y_train), cfg.data.train_size, cfg.data.validation_size
    if held >= n:
        raise ConfigError(f"data.validation_size = {held}: must be less than {n:,}, the size of the {dataset.name} "
                          "training set (some images must be left to train on)")
    if train and train + held > n:
        raise ConfigError(f"data.train_size = {train} with data.validation_size = {held}: together at most {n:,}, "
                          f"the size of the {dataset.name} training set")
    images = train or n - held
    updates = run_updates(cfg, n)
    if cfg.optim.l1 > 0 and cfg.optim.l1_after >= updates:  # deepnet applies L1 on steps t > l1_after - 1
        raise ConfigError(f"optim.l1_after = {cfg.optim.l1_after}: the run makes {updates:,} updates, so optim.l1 = "
                          f"{cfg.optim.l1:g} would never apply; at most {updates - 1}")
    if cfg.optim.batch_size > images:  # one step of all the images an epoch: not what a batch size says
        source = f"data.train_size = {train}" if train else f"{n:,} less data.validation_size = {held}"
        raise ConfigError(f"optim.batch_size = {cfg.optim.batch_size}: more than the {images:,} training images "
                          f"({source}); at most {images}")


def load_datasets(cfgs: Sequence[Config], log=lambda s: None) -> dict[str, data_mod.Dataset]:
    out = {name: data_mod.load(name, log) for name in sorted({c.data.dataset for c in cfgs})}
    for c in cfgs:
        check_sizes(c, out[c.data.dataset])
    return out


UNRESUMABLE = "cannot be resumed (unreadable, another run's, an older trainer's, or its metrics rows are gone)"

# verdicts that stand until --force: a completed run is done, and a diverged one diverges again if retrained
KEPT = ("completed", "diverged")


def _epochs_on_disk(run_dir: Path) -> int:
    """Epochs metrics.csv holds (0 where it is damaged: the restart replaces it all the same)."""
    try:
        return len(read_metrics(run_dir, raw=True))
    except Damaged:
        return 0


def survey(cfgs: Sequence[Config], root: Path, values: Sequence[dict] | None = None,
           force: bool = False, restart: bool = False) -> list[Run]:
    """What each run's folder holds: completed and diverged runs are kept, checkpointed ones resume, others start.

    A run with recorded epochs and no checkpoint it can resume from (lost with its machine, never committed,
    another trainer's) is held: left as it is, not trained, so that no command replaces a curve that may have
    cost hours; `restart` trains it from scratch, and run_stack keeps its curve in earlier/N/ first.
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
        elif run.status == "partial" and ckpt is None and (epochs := _epochs_on_disk(run.dir)):
            if (run.dir / CHECKPOINT).is_file():
                what = f"{run.dir / CHECKPOINT} {UNRESUMABLE}, with {epochs} epochs recorded"
            else:
                what = f"{run.dir}: {epochs} epochs recorded and no checkpoint to resume from"
            if restart:
                run.note = f"{what}: --restart trains that run from scratch; its curve so far is kept in {EARLIER}/"
            else:  # a restart would replace what may be hours of curve: the user decides, with --restart
                run.held = True
                run.note = (f"{what}: kept as it is, not trained; --restart trains it from scratch and keeps this "
                            f"curve in {EARLIER}/")
        elif ckpt is None and (run.dir / CHECKPOINT).is_file():  # a restart the user should not have to guess
            run.note = f"{run.dir / CHECKPOINT} {UNRESUMABLE}: that run is retrained from scratch"
    return runs


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
              keep_checkpoints: bool = False, fail_fast: bool = False,
              on_update: Callable[[], None] | None = None) -> list[dict]:
    """Train one stack (fresh, or resumed from its members' checkpoints); return each run's summary.
    `on_epoch(rows)` runs after every epoch, `on_update()` after every step (the progress display).

    KeyboardInterrupt and FailFast leave every unfinished member checkpointed and without a summary.
    """
    cfgs = [r.cfg for r in runs]
    states = [load_checkpoint(r.dir, r.id) for r in runs] if runs[0].progress != (0, 0) else None
    if states is not None and any(s is None for s in states):
        raise RuntimeError("a checkpoint of this stack disappeared; run the command again to restart it")
    if states is None:
        for r in runs:  # a fresh start must never be mistaken later for a resume point, nor erase a curve
            remove_checkpoint(r.dir)
            keep_earlier(r.dir)
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
        if on_update is not None:
            on_update()
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
        remove_checkpoint(runs[i].dir, keep_checkpoint=keep_checkpoints)
    return [summaries[i] for i in range(len(runs))]
