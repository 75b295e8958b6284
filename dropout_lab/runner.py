"""Run a list of run configs: skip finished ones, pack the rest into stacks, train, write results.

Used by `dropout-lab run` (a dropout model and its control) and by sweeps. Every model's folder is
written as it trains; `summary.json` comes last and atomically, so an interrupted run is visibly
partial and a finished one is never touched again unless forced.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from . import data as data_mod
from .config import Config, ConfigError
from .results import RunWriter, env_info, read_summary
from .train import pack, train_stack


@dataclass
class RunOutcome:
    cfg: Config
    dir: Path
    summary: dict
    skipped: bool = False


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


def _short(cfg: Config) -> str:
    d = cfg.model.dropout
    return f"drop {d.p_input:g}/{d.p_hidden:g}" if cfg.has_dropout else "none"


def execute(cfgs: Sequence[Config], datasets: dict[str, data_mod.Dataset], device: torch.device,
            root: Path, force: bool = False, console: Console | None = None) -> list[RunOutcome]:
    """Train every config in `cfgs` not already completed under root/<run_id>/; return one outcome each."""
    console = console or Console(stderr=True)
    dirs = [root / c.run_id() for c in cfgs]
    outcomes: dict[int, RunOutcome] = {}
    todo = []
    for i, (c, d) in enumerate(zip(cfgs, dirs)):
        summary = None if force else read_summary(d)
        if summary and summary.get("status") == "completed":
            outcomes[i] = RunOutcome(c, d, summary, skipped=True)
            console.print(f"[dim]{d.name}: already completed, skipped (--force retrains)[/dim]")
        else:
            todo.append(i)

    stacks = [[todo[j] for j in members] for members in pack([cfgs[i] for i in todo])]
    env = env_info(device)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[errors]}")]
    with Progress(*columns, console=console, transient=False) as progress:
        for s, members in enumerate(stacks):
            group = [cfgs[i] for i in members]
            label = f"stack {s + 1}/{len(stacks)}, K={len(group)}"
            task = progress.add_task(label, total=group[0].optim.epochs, rate="", errors="")
            writers = {i: RunWriter(dirs[i], cfgs[i], env) for i in members}
            t0 = time.perf_counter()
            try:
                for rows in train_stack(group, datasets[group[0].data.dataset], device):
                    for i, row in zip(members, rows):
                        if row is None:
                            continue
                        writers[i].add(row)
                        if row["diverged"]:
                            outcomes[i] = RunOutcome(cfgs[i], dirs[i],
                                                     writers.pop(i).finish("diverged", time.perf_counter() - t0))
                    done = [r for r in rows if r is not None]
                    if done:
                        steps = done[0]["step"]
                        rate = f"{steps * len(group) / max(done[0]['seconds'], 1e-9):,.0f} model-steps/s"
                        errs = " | ".join(f"{_short(cfgs[i])}: {r['test_error'] * 100:.2f}%"
                                          for i, r in zip(members, rows) if r is not None)
                        progress.update(task, advance=1, rate=rate, errors=f"test err {errs}")
            except KeyboardInterrupt:
                for w in writers.values():  # partial runs stay without a summary: visibly unfinished
                    w.close()
                raise
            except Exception as e:  # isolate the failure to this stack's unfinished runs
                msg = f"{type(e).__name__}: {e}"
                console.print(f"[red]stack {s + 1} failed: {msg}[/red]")
                console.print(f"[dim]{traceback.format_exc(limit=3)}[/dim]")
                for i, w in writers.items():
                    outcomes[i] = RunOutcome(cfgs[i], dirs[i], w.finish("failed", time.perf_counter() - t0, msg))
                continue
            for i, w in writers.items():
                outcomes[i] = RunOutcome(cfgs[i], dirs[i], w.finish("completed", time.perf_counter() - t0))
    return [outcomes[i] for i in range(len(cfgs))]
