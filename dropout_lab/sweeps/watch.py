"""What a person sees while a plan trains: where it stands, and how long it has left.

One line that fits 80 columns (runs done / total, model-updates done / planned, the latest test error,
elapsed, time left), redrawn in place on a terminal; when the output is a file or a pipe, the same line
printed plainly and flushed after the first epoch and then at most once a minute, so that
`dropout-lab sweep ... 2> log` can be followed with `tail -f log`.

The time left is the plan's remaining work divided by the rate this sitting measured over its last few
minutes, on this machine, with every stack still waiting counted. Work is counted in multiply-adds, so
that an update of a 2x8192 net weighs what it costs against one of a 784-800-10 net: 3 per weight and
sample for an update (the forward GEMM and the two of the backward pass) and 1 per weight and image for
an evaluation pass (test set and validation set, forward only).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.text import Text

WINDOW = 300.0  # seconds of recent work the rate is measured over: minutes, so a test pass or a checkpoint
#                 is averaged in, and a change of stack or of machine load shows within that time
SETTLE = 5.0  # seconds of measurement before a time left is shown: the first steps allocate and warm up
PLAIN_EVERY = 60.0  # seconds between plain lines, at most one per epoch
now = time.monotonic  # the clock, one name for the tests to replace


def clock(seconds: float | None) -> str:
    """1:02:03, or 3d 04h past 99 hours; '?' where there is no estimate yet."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s >= 100 * 3600:
        return f"{s // 86400}d {s % 86400 // 3600:02d}h"
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def count(n: float, exact: bool) -> str:
    """409,800 exactly, or 410k / 3.00M short."""
    if exact or n < 10_000:
        return f"{n:,.0f}"
    return f"{n / 1e3:.0f}k" if n < 1e6 else f"{n / 1e6:.2f}M" if n < 1e9 else f"{n / 1e9:.2f}G"


def macs(sizes: Sequence[int]) -> int:
    """Multiply-adds of one sample's forward pass through layers of these widths."""
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


@dataclass
class Stack:
    """One stack's share of the plan, as the meter counts it."""

    ids: list[str]
    epochs: int  # of the run
    steps_per_epoch: int
    eval_every: int
    update_work: float  # multiply-adds of one model-update
    eval_work: float  # multiply-adds of one model's test (and validation) pass
    step: int = 0  # updates each model has made, the resumed ones included
    live: int = 0  # models still training (a diverged one stops)
    errors: dict[str, float] = field(default_factory=dict)  # run id -> its latest test error
    finished: bool = False
    work: float = 0.0  # multiply-adds done this sitting
    samples: deque = field(default_factory=deque)  # (time, work) of its recent steps, a second apart at least

    @property
    def structure(self) -> tuple[float, float]:
        return self.update_work, self.eval_work

    def work_left(self) -> float:
        if self.finished:
            return 0.0
        epoch = self.step // self.steps_per_epoch
        # test passes to come: every eval_every epochs, and the last epoch always
        passes = self.epochs // self.eval_every - epoch // self.eval_every \
            + (epoch < self.epochs and self.epochs % self.eval_every != 0)
        updates = self.epochs * self.steps_per_epoch - self.step
        return self.live * (updates * self.update_work + passes * self.eval_work)

    def sample(self, t: float, window: float) -> None:
        if not self.samples or t - self.samples[-1][0] >= 1.0:
            self.samples.append((t, self.work))
            while len(self.samples) > 2 and self.samples[1][0] <= t - window:
                self.samples.popleft()

    def span(self) -> tuple[float, float]:
        """(seconds, work) between its oldest recent sample and now."""
        if len(self.samples) < 2:
            return 0.0, 0.0
        (t0, w0), (t1, w1) = self.samples[0], self.samples[-1]
        return t1 - t0, w1 - w0


def plan_stacks(stacks: Sequence[Sequence], datasets: dict) -> list[Stack]:
    """The meter's view of stacks.plan()'s stacks of Runs."""
    from .stacks import layer_sizes, steps_in_epoch

    out = []
    for stack in stacks:
        c = stack[0].cfg
        data = datasets[c.data.dataset]
        m = macs(layer_sizes(c))
        out.append(Stack([r.id for r in stack], c.optim.epochs, steps_in_epoch(c, data), c.eval.every,
                         update_work=3.0 * m * c.optim.batch_size,
                         eval_work=float(m * (len(data.y_test) + c.data.validation_size)),
                         step=stack[0].progress[1], live=len(stack)))
    return out


def plan_meter(runs: Sequence, stacks: Sequence[Sequence], datasets: dict, workers: int = 1) -> Meter:
    """A meter of this invocation's runs: those completed earlier count as done, in runs and in updates."""
    from .stacks import steps_in_epoch

    done = [r for r in runs if r.status == "completed"]
    before = sum(r.cfg.optim.epochs * steps_in_epoch(r.cfg, datasets[r.cfg.data.dataset]) for r in done)
    return Meter(plan_stacks(stacks, datasets), len(runs), len(done), before, workers=workers)


class Meter:
    """The plan's progress and its measured rate; every method may be called from any worker thread.

    The time left is each unfinished stack's work at the seconds per multiply-add measured over the last
    `window` seconds of a stack of its structure (so that the fixed cost of a step of a small net is seen
    as it is), or, for a structure not trained yet this sitting, at the mean of those measured; the sum is
    shared among the stacks that train side by side.
    """

    def __init__(self, stacks: Sequence[Stack], runs_total: int, runs_done: int, updates_done_before: int,
                 window: float = WINDOW, workers: int = 1):
        self.stacks = list(stacks)
        self.runs_total, self.runs_done = runs_total, runs_done
        self.planned = updates_done_before + sum(len(s.ids) * s.epochs * s.steps_per_epoch for s in stacks)
        self.updates = updates_done_before + sum(len(s.ids) * s.step for s in stacks)
        self.start = now()
        self.window, self.workers = window, workers
        self.measured: dict[tuple, float] = {}  # structure -> seconds per multiply-add, as last measured
        self.lock = threading.Lock()

    # ---- counting (from the trainers)

    def step(self, n: int) -> None:
        """Stack n made one update of each of its live models."""
        s = self.stacks[n]
        with self.lock:
            s.step += 1
            self.updates += s.live
            s.work += s.live * s.update_work
            self._sample(s)

    def epoch(self, n: int, rows: Sequence[dict | None]) -> None:
        """Stack n ended an epoch with these metrics rows (None: a model already stopped)."""
        s = self.stacks[n]
        with self.lock:
            live = [(i, row) for i, row in zip(s.ids, rows) if row is not None]
            tested = [(i, row["test_error"]) for i, row in live if not math.isnan(row["test_error"])]
            s.work += len(tested) * s.eval_work
            s.errors.update(tested)
            s.step = max(s.step, max((row["step"] for _, row in live), default=0))
            s.live = sum(not row["diverged"] for _, row in live)
            self._sample(s)

    def finish(self, n: int, completed: int, steps: int | None = None, seconds: float | None = None) -> None:
        """Stack n stopped training; `completed` of its runs completed. Without per-step counts (a Ray task
        reports only at its end) `steps` is the updates each model made and `seconds` the time it took."""
        s = self.stacks[n]
        with self.lock:
            if steps is not None:
                work = s.work_left()
                self.updates += s.live * max(0, steps - s.step)
                s.step = steps
                if seconds and work:
                    self.measured[s.structure] = seconds / work
            s.finished, s.live = True, 0
            self.runs_done += completed

    def _sample(self, s: Stack) -> None:
        s.sample(now(), self.window)
        seconds, work = s.span()
        if seconds >= SETTLE and work > 0:
            self.measured[s.structure] = seconds / work

    # ---- reading

    def time_left(self) -> float | None:
        """Seconds until the plan ends, at this sitting's measured rates (None: nothing measured yet)."""
        with self.lock:
            todo = [s for s in self.stacks if not s.finished]
            if not todo:
                return 0.0
            if not self.measured:
                return None
            known = list(self.measured.values())
            mean = sum(known) / len(known)
            seconds = sum(s.work_left() * self.measured.get(s.structure, mean) for s in todo)
        return seconds / max(1, min(self.workers, len(todo)))

    def error(self) -> str:
        with self.lock:
            errs = [e for s in self.stacks if not s.finished for e in s.errors.values()] \
                or [e for s in self.stacks for e in s.errors.values()]  # at the end: the last ones
        if not errs:
            return "–"
        lo, hi = min(errs) * 100, max(errs) * 100
        return f"{lo:.2f}%" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}–{hi:.2f}%"

    def line(self, width: int = 80) -> str:
        """The progress line, its labels shortened before any number is dropped."""
        elapsed, left, err = clock(now() - self.start), clock(self.time_left()), self.error()
        runs = f"{self.runs_done}/{self.runs_total}"
        for exact, sep, words in ((True, " · ", ("runs ", "updates ", "test ", "elapsed ", "left ")),
                                  (False, " · ", ("runs ", "updates ", "test ", "elapsed ", "left ")),
                                  (False, " · ", ("runs ", "upd ", "test ", "", "left ")),
                                  (False, " ", ("runs ", "", "", "", "left "))):
            updates = f"{count(self.updates, exact)}/{count(self.planned, exact)}"
            text = sep.join(w + v for w, v in zip(words, (runs, updates, err, elapsed, left)))
            if len(text) <= width:
                return text
        return text[:width]

    def stack_lines(self, width: int) -> list[str]:
        """A line for each stack training now, when more than one trains side by side."""
        with self.lock:
            running = [(n, s) for n, s in enumerate(self.stacks) if not s.finished and s.step and s.live]
        if len(running) < 2:
            return []
        out = []
        for n, s in running:
            errs = sorted(s.errors.values())
            err = "" if not errs else f", test {errs[0] * 100:.2f}" + (
                f"–{errs[-1] * 100:.2f}%" if len(errs) > 1 else "%")
            spu = self.measured.get(s.structure)  # its own rate, side by side with the others
            left = "" if spu is None else f", left {clock(s.work_left() * spu)}"
            text = f"  stack {n + 1}/{len(self.stacks)}, K={s.live}: epoch {s.step // s.steps_per_epoch:,}/" \
                   f"{s.epochs:,}{err}{left}"
            out.append(text if len(text) <= width else text[:width - 1] + "…")
        return out


class Display:
    """The meter shown: redrawn in place on a terminal, else plain flushed lines, the first after the first
    epoch, then at most one a minute (each at an epoch's end or a stack's)."""

    def __init__(self, meter: Meter, console: Console):
        self.meter, self.console = meter, console
        self.live = Live(_Render(meter), console=console, refresh_per_second=2, transient=False) \
            if console.is_terminal else None
        self.last: float | None = None

    def __enter__(self) -> Display:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
        elif self.last is not None or exc[0] is None:
            self.plain(force=True)

    def print(self, *args, **kwargs) -> None:
        """A message above the progress line (or between plain lines)."""
        self.console.print(*args, **kwargs)

    def plain(self, force: bool = False) -> None:
        if self.live is not None:
            return
        t = now()
        if force or self.last is None or t - self.last >= PLAIN_EVERY:
            self.last = t
            self.console.print(self.meter.line(), markup=False, highlight=False, soft_wrap=True)
            self.console.file.flush()


class _Render:
    def __init__(self, meter: Meter):
        self.meter = meter

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = min(options.max_width, 120)
        line = self.meter.line(width)
        total = max(self.meter.planned, 1)
        room = width - len(line) - 1
        if room >= 10:  # a bar where the numbers leave room for one
            done = round(room * min(self.meter.updates / total, 1.0))
            yield Text.assemble(("━" * done, "green"), ("━" * (room - done), "grey23"), " ", line)
        else:
            yield Text(line)
        for text in self.meter.stack_lines(width):
            yield Text(text, style="dim")


def _names(runs: Sequence, most: int = 3) -> str:
    ids = [r.id for r in runs]
    return ", ".join(ids[:most]) + (f" and {len(ids) - most} more" if len(ids) > most else "")


def _why_fresh(run, force: bool) -> str:
    """Why a run of the plan trains from update 0."""
    if run.note:
        return "restart from update 0, as the warning above says"
    if force and (run.dir / "summary.json").exists():
        return "restart from update 0 (--force)"
    if run.status == "failed":
        return "restart from update 0 (failed earlier)"
    if run.status == "partial":
        return "restart from update 0 (stopped before its first checkpoint)"
    return "start"


def start_lines(stacks: Sequence[Sequence], force: bool = False, keep_checkpoints: bool = False) -> list[str]:
    """What the plan does with each run, said before it starts: which resume and from which update, which
    start or restart from scratch and why, and where the checkpoints go and how often."""
    training = [r for s in stacks for r in s]
    if not training:
        return []
    lines = []
    resumed: dict[tuple[int, int], list] = {}
    fresh: dict[str, list] = {}
    for r in training:
        if r.progress != (0, 0):
            resumed.setdefault(r.progress, []).append(r)
        else:
            fresh.setdefault(_why_fresh(r, force), []).append(r)
    for (epoch, step), rs in sorted(resumed.items()):
        lines.append(f"resume from update {step:,} (epoch {epoch:,}): {_names(rs)}")
    for why, rs in fresh.items():
        lines.append(f"{why}: {_names(rs)}")
    every = min(r.cfg.checkpoint_seconds for r in training)
    often = f"every {every:g} s" if every else "after every update"
    lines.append(f"checkpoints: checkpoint.pt in each run's folder, replaced {often} and at a stop (Ctrl-C "
                 f"or SIGTERM; the same command resumes), {'kept' if keep_checkpoints else 'removed'} when the run "
                 "completes")
    return lines
