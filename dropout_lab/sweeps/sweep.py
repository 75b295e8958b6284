"""Sweeps: a config's `sweep:` section (grid, zip, seeds) expanded into run configs, and its records.

Expansion is complete: every grid point of every zip position for every seed, never a sample.
Each point is the base config with its values applied, validated by the same schema as a single
run; `baseline: true` adds each point's no-dropout control, which many points share (a control
drops dropout and max-norm, so a p sweep has one control per seed).
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from ..config import (
    SCALE_SUFFIXES,
    Config,
    ConfigError,
    SweepConfig,
    apply_override,
    parse_override,
    validate,
    yaml_load,
)
from ..store.results import write_if_changed
from .scale import SCALES
from .scale import apply as apply_scale

# keys that say where or how, not what is trained: sweeping them would train one run many times
UNSWEEPABLE = {"name", "device", "checkpoint_seconds", "sweep", "baseline", "scale"}


@dataclass
class Sweep:
    base: Config  # the config as given, overrides applied, sweep section resolved
    keys: list[str]  # swept keys in index order (grid, then zip), seed excluded
    runs: list[Config]  # unique run configs, in expansion order
    values: list[dict]  # per run: swept key -> its value in the run's resolved config, plus seed and dropout


def check_key(key: str, where: str) -> None:
    """A swept key must name one setting of the schema, e.g. model.dropout.p_hidden."""
    model: type[BaseModel] = Config
    parts = key.split(".")
    if parts[0] == "scale":  # a whole sweep runs at one scale, so its rows are never mixed
        raise ConfigError(f"{where}: 'scale' cannot be swept; run the sweep again with --scale quick or medium")
    if parts[0] in UNSWEEPABLE:
        raise ConfigError(f"{where}: '{key}' cannot be swept (it does not change what is trained); "
                          f"seeds go in sweep.seeds")
    for i, part in enumerate(parts):
        if part not in model.model_fields:
            prefix = ".".join(parts[:i])
            allowed = ", ".join(f for f in model.model_fields if f not in UNSWEEPABLE)
            raise ConfigError(f"{where}: unknown key '{key}' (allowed{' in ' + prefix if prefix else ''}: {allowed})")
        ann = model.model_fields[part].annotation
        section = isinstance(ann, type) and issubclass(ann, BaseModel)
        if i < len(parts) - 1:
            if not section:
                raise ConfigError(f"{where}: unknown key '{key}' ('{'.'.join(parts[:i + 1])}' is a value, "
                                  "not a section)")
            model = ann
        elif section:
            raise ConfigError(f"{where}: '{key}' is a section; sweep one of its keys: "
                              f"{', '.join(ann.model_fields)}")


def parse_grid_arg(text: str) -> tuple[str, list[Any]]:
    """'--grid optim.lr=0.1,0.05' -> ('optim.lr', [0.1, 0.05]); values are YAML, so [800,800] is a list."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise ConfigError(f"--grid '{text}': expected KEY=V1,V2,..., e.g. --grid model.dropout.p_hidden=0.3,0.5")
    try:
        parsed = yaml_load(f"[{values}]")
    except yaml.YAMLError:
        raise ConfigError(f"--grid {key}: values '{values}' are not a comma-separated YAML list") from None
    return key, parsed


def _axes(spec: SweepConfig) -> tuple[list[tuple[str, list]], list[list[tuple[str, list]]]]:
    grid = list(spec.grid.items())
    seen = {}
    for k, vals in grid:
        check_key(k, f"sweep.grid.{k}")
        if not vals:
            raise ConfigError(f"sweep.grid.{k} = []: an axis needs at least one value")
        _once(f"sweep.grid.{k}", vals)
        seen[k] = "grid"
    zips = []
    for z, group in enumerate(spec.zip):
        where = f"sweep.zip[{z}]"
        if not group:
            raise ConfigError(f"{where} = {{}}: a zip entry needs at least one key")
        lengths = {k: len(v) for k, v in group.items()}
        for k, n in lengths.items():
            check_key(k, f"{where}.{k}")
            if n == 0:
                raise ConfigError(f"{where}.{k} = []: an axis needs at least one value")
            if k in seen:
                raise ConfigError(f"{where}: '{k}' is already swept in {seen[k]}; sweep each key once")
            seen[k] = where
        if len(set(lengths.values())) > 1:
            sizes = ", ".join(f"{k} has {n}" for k, n in lengths.items())
            raise ConfigError(f"{where}: zipped lists must have equal lengths ({sizes})")
        _once(where, [dict(zip(group, point)) for point in zip(*group.values())])
        zips.append(list(group.items()))
    return grid, zips


def _once(where: str, values: list) -> None:
    """A value given twice on one axis would be one run, the second dropped without a word: refused."""
    seen = set()
    for v in values:
        key = json.dumps(v, sort_keys=True, default=str)
        if key in seen:
            raise ConfigError(f"{where} = {values}: {v} is given twice; give each value once")
        seen.add(key)


def _seed_axis(spec: SweepConfig, where: str) -> None:
    """Seeds are one axis, sweep.seeds; a grid over `seed` (as a user may well type it) becomes that axis.

    Expansion sets every run's seed from the seeds, so a seed anywhere else would be overwritten silently.
    """
    if "seed" in spec.grid:
        seeds = spec.grid.pop("seed")
        if spec.seeds is not None:
            raise ConfigError(f"{where} = {seeds}: this sweep already repeats sweep.seeds = {spec.seeds}; "
                              "give the seeds once")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds):
            raise ConfigError(f"{where} = {seeds}: seeds are integers >= 0, e.g. --grid seed=0,1,2")
        spec.seeds = seeds
        where = where.replace(".grid.seed", ".seeds")
    else:
        where = "sweep.seeds"
    for z, group in enumerate(spec.zip):
        if "seed" in group:
            raise ConfigError(f"sweep.zip[{z}].seed: seeds repeat every point and cannot be zipped; "
                              "give them in sweep.seeds (or --grid seed=0,1,2)")
    if spec.seeds is not None and not spec.seeds:
        raise ConfigError(f"{where} = []: give at least one seed, or leave it out to use the config's seed")
    if spec.seeds is not None and any(s < 0 for s in spec.seeds):
        raise ConfigError(f"{where} = {spec.seeds}: seeds must be >= 0")
    if spec.seeds is not None:
        _once(where, spec.seeds)


def value_at(cfg: Config, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def fmt_values(spec: SweepConfig, key: str) -> str:
    vals = spec.grid.get(key) or next(g[key] for g in spec.zip if key in g)
    return f"{len(vals)} values: {', '.join(map(str, vals[:6]))}{', ...' if len(vals) > 6 else ''}"


def expand(raw: dict, grid_args: list[str] = (), scale: str = "full", set_keys: Sequence[str] = ()) -> Sweep:
    """raw: the config mapping with --set overrides applied. Returns every run of the sweep, validated.

    scale 'quick' or 'medium' shrinks every point (scale.py) and sends the sweep to the folder <name>-<scale>.
    """
    raw = copy.deepcopy(raw)
    if scale not in SCALES:
        raise ConfigError(f"--scale {scale}: allowed {', '.join(SCALES)}")
    if raw.get("scale", "full") != "full":  # set by --scale, which shrinks the runs; the key alone only labels them
        raise ConfigError(f"scale = {raw['scale']!r}: a run's scale is set by --scale {raw['scale']}, which shrinks "
                          "it; as a key it would label full-size runs as shrunk")
    name = raw.get("name", Config().name)
    if isinstance(name, str) and name.endswith(SCALE_SUFFIXES):
        raise ConfigError(f"name = {name!r}: names ending in {' or '.join(SCALE_SUFFIXES)} are the folders of "
                          "--scale quick and medium; give the config its own name and run it with --scale")
    if scale != "full":
        raw["name"] = f"{name}-{scale}"
    base = validate(raw)
    spec = base.sweep or SweepConfig()
    swept = {k: "sweep.grid" for k in spec.grid} | {k: f"sweep.zip[{z}]" for z, g in enumerate(spec.zip) for k in g}
    for text in grid_args:
        key, vals = parse_grid_arg(text)
        if key in swept:  # replacing the axis would silently drop its other values (and their runs)
            raise ConfigError(f"--grid {key}: {swept[key]} already sweeps it ({fmt_values(spec, key)}); a key is "
                              f"swept once: edit the config, or train some of its values with --only {key}=V")
        spec.grid[key] = vals
        swept[key] = "--grid"
    for key in set_keys:  # a base value every point replaces would be ignored without a word
        if key in swept or (key == "seed" and (spec.seeds is not None or "seed" in swept)):
            where = swept.get(key, "sweep.seeds")
            raise ConfigError(f"--set {key}: {where} sweeps it, so every run replaces the value set; train some of "
                              f"its values with --only {key}=V, or sweep others with a config of your own")
    _seed_axis(spec, "--grid seed" if any(parse_grid_arg(t)[0] == "seed" for t in grid_args) else "sweep.grid.seed")
    base = base.model_copy(update={"sweep": spec})
    grid, zips = _axes(spec)
    keys = [k for k, _ in grid] + [k for group in zips for k, _ in group]
    seeds = spec.seeds if spec.seeds is not None else [base.seed]
    raw.pop("sweep", None)

    zip_points = [list(zip(*[[(k, v) for v in vals] for k, vals in group])) for group in zips]
    grid_points = itertools.product(*[[(k, v) for v in vals] for k, vals in grid])
    runs: dict[str, Config] = {}
    asked: dict[str, str] = {}  # run id -> the point that asked for it
    for point in itertools.product(grid_points, *zip_points):
        assignment = [kv for part in point for kv in part]
        name = ", ".join(f"{k}={v}" for k, v in assignment) or "the config"
        for seed in seeds:
            r = copy.deepcopy(raw)
            for k, v in assignment:
                apply_override(r, k, copy.deepcopy(v))
            r["seed"] = seed
            try:
                cfg = validate(r)
            except ConfigError as e:
                raise ConfigError(f"sweep point {', '.join(f'{k}={v}' for k, v in assignment)}: {e}") from None
            cfg = apply_scale(cfg, scale)
            run_id = cfg.run_config().run_id()
            if asked.setdefault(run_id, name) != name:  # two points, one run: one of them would be dropped
                raise ConfigError(f"sweep points {asked[run_id]} and {name} give the same run ({run_id}"
                                  f"{', at --scale ' + scale if scale != 'full' else ''}); sweep values that "
                                  "change what is trained")
            members = [cfg.run_config()] + ([cfg.control()] if cfg.baseline and cfg.has_dropout else [])
            for m in members:
                runs.setdefault(m.run_id(), m)
    configs = list(runs.values())
    values = [{**{k: value_at(c, k) for k in keys}, "seed": c.seed, "precision": c.precision,
               "dropout": c.has_dropout} for c in configs]
    return Sweep(apply_scale(base, scale), keys, configs, values)


def parse_only_arg(text: str) -> tuple[str, Any]:
    """'--only seed=0' -> ('seed', 0); the value is one YAML value, so a label may hold commas or spaces."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or not value.strip():
        raise ConfigError(f"--only '{text}': expected KEY=VALUE, e.g. --only label=\"dropout ReLU 3x1024\" "
                          "or --only seed=0")
    try:
        return key, yaml_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"--only {key}: value {value!r} is not valid YAML") from None


def select(sw: Sweep, only_args: Sequence[str]) -> list[bool]:
    """Which runs of the sweep `--only KEY=VALUE` filters keep: a run is kept when, for every key named,
    its value is one of those given for that key (repeat a key for several values). No filter keeps all.

    A filter that keeps nothing is an error naming the values the key takes, so a typo never trains nothing.
    """
    wanted: dict[str, list] = {}
    for text in only_args:
        key, value = parse_only_arg(text)
        try:
            check_key(key, f"--only {key}")
        except ConfigError as e:  # a key no sweep may vary (name, scale, ...) is still a key to filter on
            if "unknown key" in str(e) or "is a section" in str(e) or "is a value" in str(e):
                raise
        wanted.setdefault(key, []).append(value)
    keep = [all(value_at(c, k) in vals for k, vals in wanted.items()) for c in sw.runs]
    for key, vals in wanted.items():
        if not any(value_at(c, key) in vals for c in sw.runs):
            taken = sorted({repr(value_at(c, key)) for c in sw.runs})
            shown = ", ".join(taken[:12]) + (f", ... ({len(taken)} values)" if len(taken) > 12 else "")
            raise ConfigError(f"--only {key}={', '.join(map(repr, vals))}: matches none of the "
                              f"{len(sw.runs)} runs; {key} takes {shown}")
    if not any(keep):
        raise ConfigError(f"--only {' '.join(only_args)}: no run matches every filter at once "
                          f"(each matches some of the {len(sw.runs)} runs; a run must match them all)")
    return keep


def load_sweep(path: str | Path, overrides: list[str] = (), grid_args: list[str] = (),
               use_sweep: bool = True, scale: str = "full") -> Sweep:
    """use_sweep=False: the config alone (and its control), as `dropout-lab run` trains it."""
    from ..config import read_yaml

    raw = read_yaml(path)
    keys = []
    for text in overrides:
        key, value = parse_override(text)
        apply_override(raw, key, value)
        keys.append(key)
    if not use_sweep:
        raw.pop("sweep", None)
    return expand(raw, grid_args, scale, keys)


def write_sweep_yaml(folder: Path, sweep: Sweep, config_path: str, command: str) -> None:
    spec = sweep.base.sweep
    record = {
        "name": sweep.base.name,
        "description": spec.description,
        "config": config_path,
        "command": command,
        "keys": sweep.keys,
        "grid": spec.grid,
        "zip": spec.zip,
        "seeds": spec.seeds if spec.seeds is not None else [sweep.base.seed],
        "baseline": sweep.base.baseline,
        "runs": len(sweep.runs),
        "run_ids": [c.run_id() for c in sweep.runs],
        "base": sweep.base.model_dump(mode="json", exclude={"sweep"}),
    }
    def bare(r: dict) -> dict:  # the sweep itself: neither the command that wrote it nor the precision
        base = {k: v for k, v in (r.get("base") or {}).items() if k != "precision"}  # (another precision's runs
        return {**r, "command": None, "run_ids": None, "base": base}  # are other runs of the same sweep)

    def same(old: str) -> bool:
        try:
            had = yaml.safe_load(old)
        except yaml.YAMLError:
            return False
        return isinstance(had, dict) and bare(had) == bare(record)

    write_if_changed(folder / "sweep.yaml", yaml.safe_dump(record, sort_keys=False), same)


def shipped(folder: Path = Path("configs/sweeps")) -> list[tuple[Path, str, int | str]]:
    """(path, description, run count) of each shipped sweep; a broken file reports its error as the count."""
    out = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            s = load_sweep(path)
            spec = s.base.sweep
            about = spec.description or (_first_comment(path) if not (spec.grid or spec.zip or spec.seeds) else "")
            out.append((path, about, len(s.runs)))
        except ConfigError as e:
            out.append((path, "", f"error: {e}"))
    return out


def _first_comment(path: Path) -> str:
    """A run config (no sweep: section) is described by its first comment line."""
    for line in path.read_text().splitlines():
        if line.startswith("#") and line.strip("# "):
            return "run config: " + line.strip("# ")
    return "run config"
