"""The Ray backend: each stack is one Ray task, on a local instance or a cluster at --address.

A task trains its stack with the same `runner.run_stack` as the local backend and writes the same
run folders, so the results folder must be on a filesystem every worker sees (always true of a
local instance). The driver holds the folder lock, keeps the index and draws the progress display.
Ray is optional: `pip install 'dropout-lab[ray]'`; nothing else imports this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from ..config import ConfigError, validate
from ..store.results import env_info
from ..training import data as data_mod
from .local import record
from .runner import FailFast, Run, run_stack
from .watch import Display, plan_meter

_datasets: dict[str, data_mod.Dataset] = {}  # per worker process: loaded once, reused by later tasks


def _stack_task(cfgs: list[dict], dirs: list[str], progress: tuple[int, int], provenance: dict,
                keep_checkpoints: bool) -> list[dict]:
    import ray
    import torch

    from ..training.train import resolve_device

    device = resolve_device("cuda" if ray.get_gpu_ids() else "cpu")
    runs = [Run(validate(c), Path(d), progress=progress) for c, d in zip(cfgs, dirs)]
    name = runs[0].cfg.data.dataset
    if name not in _datasets:
        _datasets[name] = data_mod.load(name)
    env = {**env_info(torch.device(device)), **provenance, "backend": "ray", "node": ray.util.get_node_ip_address()}
    return run_stack(runs, _datasets[name], device, env, keep_checkpoints=keep_checkpoints)


def execute_ray(runs: Sequence[Run], stacks: Sequence[Sequence[Run]], datasets: dict, env: dict, console: Console,
                after_stack: Callable[[], None] = lambda: None, address: str | None = None,
                gpus_per_stack: float = 0.0, keep_checkpoints: bool = False, fail_fast: bool = False) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'dropout-lab[ray]' (or '.[ray]' in a checkout)") \
            from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    task = ray.remote(_stack_task).options(num_cpus=1, num_gpus=gpus_per_stack, max_retries=0)
    provenance = {k: env[k] for k in ("git_commit", "command", "started")}
    pending = {task.remote([r.cfg.model_dump(mode="json") for r in s], [str(r.dir) for r in s], s[0].progress,
                           provenance, keep_checkpoints): s for s in stacks}
    console.print(f"Ray: {len(stacks)} tasks, {ray.cluster_resources().get('CPU', 0):g} CPUs and "
                  f"{ray.cluster_resources().get('GPU', 0):g} GPUs in the cluster; progress is counted as "
                  "tasks finish", highlight=False)
    meter = plan_meter(runs, stacks, datasets, workers=len(stacks))  # Ray runs them all at once, as it can
    number = {id(s): n for n, s in enumerate(stacks)}
    with Display(meter, console) as display:
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    stack = pending.pop(ref)
                    try:
                        summaries = ray.get(ref)
                    except ray.exceptions.RayError as e:  # the task died (worker lost, out of memory)
                        msg = f"Ray task failed: {str(e).splitlines()[0]}"
                        summaries = [{"status": "failed", "error": msg, "run_id": r.id} for r in stack]
                    record(stack, summaries)
                    for r in stack:
                        if r.status == "failed":
                            display.print(f"[red]{r.id} failed: {r.summary.get('error')}[/red]")
                    steps = max((s.get("steps_completed") or 0 for s in summaries), default=0)
                    seconds = max((s.get("wall_seconds") or 0.0 for s in summaries), default=0.0)
                    meter.finish(number[id(stack)], sum(r.status == "completed" for r in stack), steps, seconds)
                    display.plain()
                    after_stack()
                    if fail_fast and any(r.status in ("failed", "diverged") for r in stack):
                        raise FailFast
                time.sleep(0.05)
        except (KeyboardInterrupt, FailFast):
            for ref in pending:
                ray.cancel(ref)
            for s in pending.values():
                for r in s:
                    if (r.dir / "metrics.csv").exists():
                        r.status = "partial"
            after_stack()
            raise
