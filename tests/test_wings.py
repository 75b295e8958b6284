"""The package's shape: each wing imports only the wings below it (lazy imports inside functions included), and
each says in its docstring what it does."""

import ast
import importlib
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "dropout_lab"
# bottom to top: a module may import its own layer and the layers before it, never one after
LAYERS = [("config", "tables", "reference"), ("nets",), ("store",), ("training",), ("sweeps",), ("plots",), ("beyond",),
          ("report",), ("speed",), ("cli", "__main__", "__init__")]


def layer_of(parts: tuple[str, ...]) -> int:
    """parts: a module's path inside dropout_lab, e.g. ('nets', 'step') or ('cli',)."""
    head = parts[0] if parts else "__init__"
    for i, names in enumerate(LAYERS):
        if head in names:
            return i
    raise AssertionError(f"dropout_lab.{'.'.join(parts)} is in no layer: add its wing to LAYERS")


def imports(path: Path, pkg: Path = PKG) -> list[tuple[tuple[str, ...], int]]:
    """Every module of the package this file imports, as its parts inside dropout_lab, with the line."""
    here = path.relative_to(pkg).with_suffix("").parts
    package = here[:-1]  # the package the file is in
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # from .X import a / from .. import a: X, or each a where no X is named
                base = package[:len(package) - node.level + 1]
                targets = [(*base, *node.module.split("."))] if node.module else [(*base, a.name) for a in node.names]
            elif node.module and node.module.split(".")[0] == "dropout_lab":
                parts = tuple(node.module.split(".")[1:])
                targets = [parts] if parts else [(a.name,) for a in node.names]
            else:
                continue
            found += [(t, node.lineno) for t in targets if t and t[0] != "__version__"]
        elif isinstance(node, ast.Import):
            found += [(tuple(a.name.split(".")[1:]), node.lineno) for a in node.names
                      if a.name.split(".")[0] == "dropout_lab" and len(a.name.split(".")) > 1]
    return found


def upward(pkg: Path = PKG) -> list[str]:
    """Each import, in the package at `pkg`, of a wing above the importing module's own."""
    found = []
    for path in sorted(pkg.rglob("*.py")):
        own = layer_of(path.relative_to(pkg).with_suffix("").parts)
        for target, line in imports(path, pkg):
            if layer_of(target) > own:
                found.append(f"{path.relative_to(pkg.parent)}:{line} imports dropout_lab.{'.'.join(target)}")
    return found


def test_no_wing_imports_one_above_it():
    assert not upward(), "\n".join(upward())


def test_the_check_sees_an_upward_import(tmp_path):
    """A lower wing that imports a higher one, lazily inside a function, is caught (so the test above can fail);
    checked on a copy of the package, never by writing into the real one."""
    import shutil

    copy = tmp_path / "dropout_lab"
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert upward(copy) == []
    (copy / "nets" / "_upward_probe.py").write_text("def f():\n    from ..report.verdicts import pm\n    return pm\n")
    assert upward(copy) == ["dropout_lab/nets/_upward_probe.py:2 imports dropout_lab.report.verdicts"]


@pytest.mark.parametrize("wing", [w for names in LAYERS for w in names if (PKG / w).is_dir()])
def test_each_wing_says_what_it_does_and_may_import(wing):
    doc = importlib.import_module(f"dropout_lab.{wing}").__doc__ or ""
    assert len(doc.split()) >= 15 and "import" in doc.lower()
