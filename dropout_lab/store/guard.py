"""Refusals before any work: a destination that cannot be written, and a results folder that holds another
config file's runs. Each raises ValueError with one line for the user; nothing is written by a check.

A results folder belongs to the config file that first trained into it (`source.json`, or for a folder
from before that file, its sweep.yaml or its runs' recorded command). A config is named after its file
when it gives no `name:`, so two files share a folder only when they say so, and then they are refused:
the runs of unrelated configs would sit in one index and one plot. The same file, edited or run with
`--set`, is the same experiment and keeps its folder; so does a copy of it with the same content.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import tempfile
from pathlib import Path

from .results import atomic_write

SOURCE = "source.json"


def check_destination(path: Path, option: str, folder: bool = True) -> None:
    """folder: `path` is a folder to create or fill, else a file to create or replace. The first part of
    the path that exists must be a folder in which a folder can be made (tried, and removed at once)."""
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise ValueError(f"{option} = {path}: is a file, not a folder")
        if not folder and path.is_dir():
            raise ValueError(f"{option} = {path}: is a folder; give a file name")
        if not folder and not path.is_file():  # a device or a pipe: replacing it would be no write at all
            raise ValueError(f"{option} = {path}: is not a regular file; give a file name")
        if not folder and not os.access(path, os.W_OK):
            raise ValueError(f"{option} = {path}: the file cannot be replaced (not writable)")
    base = path if folder and path.is_dir() else path.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ValueError(f"{option} = {path}: '{base}' is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(dir=base, prefix=".probe-"))
    except OSError as e:
        raise ValueError(f"{option} = {path}: cannot write in '{base}' ({e.strerror})") from None


FOLDER_FILES = ("source.json", "sweep.yaml", "index.csv", "sessions.jsonl")
RUN_FILES = ("config.yaml", "env.json", "metrics.csv", "summary.json", "checkpoint.pt", "mc.json")


def check_files(root: Path, runs: list[Path] = (), write: bool = True) -> None:
    """Every file of a results folder (and of these run folders) that a command reads or replaces must be a
    readable (write: and writable) regular file where it exists, and every folder a folder (write: one it
    can write in): checked before any work, so that nothing is half written when one is not."""
    root = Path(root)
    paths = [root / n for n in FOLDER_FILES] + [Path(r) / n for r in runs for n in RUN_FILES]
    for d in [root, *runs]:
        if d.exists() and not d.is_dir():
            raise ValueError(f"{d}: is a file where a results folder belongs; move it away")
        if write and d.is_dir() and not os.access(d, os.W_OK | os.X_OK):
            raise ValueError(f"{d}: cannot write in this folder (permission denied)")
    for path in paths:
        if not (path.exists() or path.is_symlink()):
            continue
        if path.is_dir():
            raise ValueError(f"{path}: is a folder where the results file belongs; move it away")
        if not path.is_file():
            raise ValueError(f"{path}: is not a regular file (a broken link, a pipe or a device); move it away")
        if not os.access(path, os.R_OK | (os.W_OK if write else 0)):
            raise ValueError(f"{path}: cannot be read" + (" and replaced" if write else "") + " (permission denied)")


def _same_file(recorded: str, config: Path) -> bool:
    """The recorded path names this config: the same resolved file, or, for a path recorded relative to
    another working directory, the same trailing folders and name (configs/mnist.yaml from inside configs/)."""
    here = Path(config).resolve()
    if Path(recorded).resolve() == here:
        return True
    parts = Path(recorded).parts
    return not Path(recorded).is_absolute() and ".." not in parts and here.parts[-len(parts):] == parts


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _recorded(root: Path) -> tuple[str, str | None] | None:
    """(config path, its content's sha256 or None) of the file whose runs `root` holds; None: no runs yet."""
    import yaml

    try:
        if (root / SOURCE).is_file():
            d = json.loads((root / SOURCE).read_text())
            return d["config"], d.get("sha256")
        if (root / "sweep.yaml").is_file():
            return yaml.safe_load((root / "sweep.yaml").read_text())["config"], None
        for env in sorted(root.glob("*/env.json")):  # a folder of `run`s: the command each recorded
            words = shlex.split(json.loads(env.read_text())["command"])
            for cmd, arg in zip(words, words[1:]):
                if cmd in ("run", "sweep"):
                    return arg, None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return None  # an unreadable record claims nothing; readback names damaged files where it matters
    return None


def check_source(root: Path, config: Path) -> None:
    """Refuse a config file whose runs would mix with those of another file in `root`."""
    have = _recorded(root)
    if have is None:
        return
    path, digest = have
    if _same_file(path, config) or (digest is not None and digest == _digest(config)):
        return
    raise ValueError(f"{root}/ holds the runs of {path}; {config} would mix its runs with them: give it a "
                     "name of its own (name: in the file, or --set name=NEW)")


def claim(root: Path, config: Path) -> None:
    """Record which config file `root` belongs to, once (under the folder's lock, before training)."""
    if not (root / SOURCE).exists():
        record = {"config": str(config), "sha256": _digest(config)}
        atomic_write(root / SOURCE, json.dumps(record, indent=2) + "\n")
