"""The layering rules the code keeps.

The core package holds no framework code: no module under ``cam_core/`` (the package folder;
the adapters live in ``adapters/``, installed as ``cam_core.adapters``) imports torch,
TensorFlow, Keras or JAX, at the top or inside a function.

No module of the package, the adapters or the benchmarks uses another module's private name
(``from m import _x`` or ``m._x``): what modules share is public, or lives in a private module
(``cam_core._validate``, ``benchmarks._common``) whose names are public to the project. Tests may
reach into the module they test; they are not checked."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

FRAMEWORKS = {"torch", "tensorflow", "keras", "tf_keras", "jax", "jaxlib"}
CORE = ROOT / "cam_core"
# the project's top-level packages and their folders (cam_core.adapters is installed from
# adapters/)
_PACKAGES = {"cam_core.adapters": ROOT / "adapters", "cam_core": CORE,
             "benchmarks": ROOT / "benchmarks"}


def framework_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import of a framework in ``source``, nested ones included:
    ``import x``, ``from x import y``, ``__import__("x")`` and ``importlib.import_module("x")``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("__import__", "import_module") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [(node.lineno, n) for n in names if n.split(".")[0] in FRAMEWORKS]
    return found


def test_the_checker_finds_every_kind_of_framework_import():
    source = (
        "import numpy\nimport torch.nn as nn\n"
        "def f():\n    from keras import ops\n    import jax.numpy as jnp\n"
        "    importlib.import_module('tensorflow')\n    return __import__('tf_keras')\n"
        "from cam_core.adapters import torch\n"  # the adapter package: not a framework import
    )
    assert [m for _, m in framework_imports(source)] == [
        "torch.nn", "keras", "jax.numpy", "tensorflow", "tf_keras"]


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: p.name)
def test_no_core_module_imports_a_framework(path: Path):
    assert CORE.is_dir() and (CORE / "__init__.py").is_file()
    bad = framework_imports(path.read_text(encoding="utf-8"))
    assert not bad, f"{path.relative_to(ROOT)} imports a framework: {bad}"


def _project_module(name: str) -> bool:
    """Is ``name`` (dotted) a module or package of this project?"""
    for prefix, folder in _PACKAGES.items():
        if name == prefix or name.startswith(prefix + "."):
            rest = name[len(prefix):].lstrip(".").replace(".", "/")
            path = folder / rest if rest else folder
            return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()
    return False


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(source: str) -> list[tuple[int, str]]:
    """(line, "module._name") of every use in ``source`` of a private name of one of the
    project's modules: ``from m import _x`` (``_x`` not itself a module) and ``alias._x`` where
    ``alias`` is bound to a project module by an import (at the top or in a function)."""
    tree = ast.parse(source)
    modules: dict[str, str] = {}  # local name -> project module
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if _project_module(a.name):
                    modules[a.asname or a.name.split(".")[0]] = (
                        a.name if a.asname else a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not _project_module(node.module):
                continue
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if _project_module(full):
                    modules[a.asname or a.name] = full
                elif _private(a.name):
                    found.append((node.lineno, full))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in modules):
            found.append((node.lineno, f"{modules[node.value.id]}.{node.attr}"))
    return sorted(found)


def test_the_checker_finds_private_names_crossing_modules():
    source = (
        "from cam_core.resize import _matrix, upsample\n"
        "from cam_core import _validate, resize\n"  # a private MODULE is a shared home: fine
        "import cam_core.boxes as cb\n"
        "def f(adapter):\n"
        "    from cam_core.adapters import keras as ka\n"
        "    ka._graph(1); resize.clear_cache(); _validate.as_size(3, 's')\n"
        "    cb._xp_boxes; adapter._flag; np._private\n"  # `adapter` is not bound by an import
        "    return resize._matrix, cb.__name__\n"
    )
    assert [m for _, m in private_uses(source)] == [
        "cam_core.resize._matrix", "cam_core.adapters.keras._graph", "cam_core.boxes._xp_boxes",
        "cam_core.resize._matrix"]


_CHECKED = sorted(p for d in _PACKAGES.values() for p in d.rglob("*.py")
                  if "results" not in p.parts)


@pytest.mark.parametrize("path", _CHECKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_uses_another_modules_private_names(path: Path):
    bad = private_uses(path.read_text(encoding="utf-8"))
    assert not bad, f"{path.relative_to(ROOT)} uses private names of other modules: {bad}"
