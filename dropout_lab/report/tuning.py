"""Hyperparameters picked on held-out images, as the paper picked its own.

Appendix B.1 of the paper: 10,000 random training images are held out, the hyperparameters are tuned on
them ("such that the best validation error was produced after 1 million weight updates"), and the final
nets train on all 60,000. Where the paper gives no value for a choice (the plain row's lr, Figure 10's
controls), a tuning sweep trains a grid on a validation split, and this module picks, per group, the grid
point with the lowest validation error at the end of its run: the error after the run's full length, as
the paper's criterion has it, not the best pass along the way. The paper configs name the sweep they took
their values from; tests/test_paper.py checks that they still agree with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..store.readback import Damaged, read_metrics
from ..store.sweep_index import read_index
from .verdicts import Result


@dataclass(frozen=True)
class Tuning:
    title: str  # what was picked
    config: str  # the config that trains with the picks
    group: tuple[str, ...]  # index columns: one pick per value of these (none: one pick)
    choices: tuple[str, ...]  # index columns: the grid


TUNED = {
    "table2-plain-lr": Tuning("Table 2's plain row (standard logistic 2x800): its learning rate",
                              "configs/paper/table2.yaml", (), ("optim.lr",)),
    "fig10_controls-medium": Tuning("Figure 10's controls (no dropout): learning rate and max-norm per "
                                    "training-set size", "configs/paper/fig10.yaml", ("data.train_size",),
                                    ("optim.lr", "optim.max_norm")),
}


def _value(v):
    """An index cell as the config holds it: max-norm off is an empty cell, None in the config."""
    return None if v in ("", None) else v


def final_val_error(run_dir: Path) -> float | None:
    """The validation error of the run's last pass (a fraction); None when it kept no validation set."""
    rows = [r for r in read_metrics(run_dir)
            if isinstance(r.get("val_error"), float) and not math.isnan(r["val_error"])]
    return rows[-1]["val_error"] if rows else None


@dataclass
class Picks:
    tuning: Tuning
    res: Result
    table: dict  # group values -> {choice values -> validation error (fraction), nan for a diverged run}
    n_val: int  # validation images

    def pick(self, group: tuple) -> tuple:
        errors = self.table[group]
        return min(errors, key=lambda c: (math.isnan(errors[c]), errors[c]))


def read(folder: Path, tuning: Tuning) -> Picks:
    res = Result(folder)
    table: dict = {}
    for r in read_index(folder)[1]:
        if r.get("status") not in ("completed", "diverged"):  # not run, stopped or failed: no point to show
            continue
        try:
            err = final_val_error(folder / str(r["run_id"]))
        except Damaged as e:
            res.warnings.append(f"{e}: that grid point is left out of the pick")
            continue
        if err is None and r["status"] == "completed":  # trained without a validation split
            continue
        g = tuple(_value(r.get(k)) for k in tuning.group)
        c = tuple(_value(r.get(k)) for k in tuning.choices)
        table.setdefault(g, {})[c] = float("nan") if r["status"] == "diverged" else err
    base = res.meta.get("base") or {}
    return Picks(tuning, res, table, int((base.get("data") or {}).get("validation_size") or 0))


def find(roots: list[Path]) -> list[Picks]:
    out = []
    for root in roots:
        for name, tuning in TUNED.items():
            folder = root / name
            if (folder / "index.csv").is_file():
                out.append(read(folder, tuning))
    return out


def _fmt(key: str, v) -> str:
    if key == "optim.max_norm":
        return "off" if v is None else f"c = {v:g}"
    return f"{v:,}" if isinstance(v, int) else f"{v:g}"


def lines(picks: list[Picks]) -> list[str]:
    if not picks:
        return []
    md = ["## Choices made on validation (Appendix B.1)", "",
          "Where the paper gives no value, a grid trained on a validation split held out of the training images "
          "(their count below), and the pick is the grid point with the lowest validation error at the end of "
          "its run. The config named trains with the picks on all the training images. Validation error in %, "
          "one seed; the pick in bold; *± 2 se*: twice the binomial standard error of one validation error, "
          "the gap below which two grid points are not told apart.", ""]
    for p in picks:
        t = p.tuning
        choices = sorted({c for errs in p.table.values() for c in errs},
                         key=lambda c: tuple((v is None, v or 0) for v in c))
        head = ", ".join(k.split(".")[-1] for k in t.choices)
        md += [f"**{t.title}** (`results/{p.res.folder.name}`, {p.res.scale} scale, {p.n_val:,} validation "
               f"images, used by `{t.config}`):", ""]
        if not p.table:
            md += ["No grid point has finished yet: the pick waits for them.", ""]
            continue
        cols = [" / ".join(_fmt(k, v) for k, v in zip(t.choices, c)) for c in choices]
        first = ", ".join(k.split(".")[-1] for k in t.group) or "grid"
        md += [f"| {first} ({head}) | " + " | ".join(cols) + " | pick | ± 2 se |",
               "|---|" + "---|" * (len(cols) + 2)]
        for g in sorted(p.table, key=lambda g: tuple(v or 0 for v in g)):
            errs, best = p.table[g], p.pick(g)
            cells = []
            for c in choices:
                e = errs.get(c)
                cell = "—" if e is None else "diverged" if math.isnan(e) else f"{100 * e:.2f}"
                cells.append(f"**{cell}**" if c == best else cell)
            se = 2 * math.sqrt(errs[best] * (1 - errs[best]) / p.n_val) * 100 if p.n_val else float("nan")
            label = " / ".join(_fmt(k, v) for k, v in zip(t.group, g)) or "all"
            md.append(f"| {label} | " + " | ".join(cells) + " | "
                      + " / ".join(_fmt(k, v) for k, v in zip(t.choices, best)) + f" | {se:.2f} |")
        md.append("")
    return md
