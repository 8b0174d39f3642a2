"""The core package holds no framework code: no module under ``cam_core/`` (the package folder;
the adapters live in ``adapters/``, installed as ``cam_core.adapters``) imports torch,
TensorFlow, Keras or JAX, at the top or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

FRAMEWORKS = {"torch", "tensorflow", "keras", "tf_keras", "jax", "jaxlib"}
CORE = ROOT / "cam_core"


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
