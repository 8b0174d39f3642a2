"""Helpers shared by the command-line tests (test_cli, test_cli_faults, test_evaluate): running
the CLI, checking its one-line errors, and generating images, WSOL datasets and results folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import ROOT

TINY = "tests.cli_models:tiny_torch"


ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def run_cli(*args, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cam_core", *map(str, args)],
        capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=timeout,
    )


def call_main(*args) -> subprocess.CompletedProcess:
    """Run :func:`cam_core.cli.main` in this process (fast: the framework is imported once)."""
    import contextlib
    import io

    from cam_core.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse
            code = exc.code
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, exactly one line on stderr naming the problem, no traceback."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("cam-core: error: "), lines[0]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def square_image(path: Path, *, size=(48, 40), box=(10, 8, 26, 22), seed: int = 0) -> Path:
    """A dark noisy image (width, height = ``size``) with a bright rectangle ``box`` (half-open)."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = rng.integers(0, 40, size=(h, w, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = 250
    Image.fromarray(img).save(path)
    return path


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def wsol_dataset(root: Path, n: int = 10, *, seed: int = 0) -> Path:
    """A WSOL-layout dataset: ``n`` images (sizes vary) with one or two bright rectangles each."""
    rng = np.random.default_rng(seed)
    (root / "val").mkdir(parents=True)
    (root / "metadata").mkdir()
    ids, labels, sizes, locs = [], [], [], []
    for i in range(n):
        w, h = int(rng.integers(36, 60)), int(rng.integers(36, 60))
        bw, bh = int(rng.integers(8, w // 2)), int(rng.integers(8, h // 2))
        x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        name = f"val/img_{i:03d}.png"
        square_image(root / name, size=(w, h), box=(x0, y0, x0 + bw, y0 + bh), seed=100 + i)
        ids.append(name)
        labels.append(f"{name},{i % 4}")
        sizes.append(f"{name},{w},{h}")
        locs.append(f"{name},{x0},{y0},{x0 + bw - 1},{y0 + bh - 1}")  # inclusive corners
        if i % 3 == 0:
            locs.append(f"{name},0,0,{w // 4},{h // 4}")
    meta = root / "metadata"
    (meta / "image_ids.txt").write_text("\n".join(ids) + "\n")
    (meta / "class_labels.txt").write_text("\n".join(labels) + "\n")
    (meta / "image_sizes.txt").write_text("\n".join(sizes) + "\n")
    (meta / "localization.txt").write_text("\n".join(locs) + "\n")
    return root


EVAL = ("--model", TINY, "--size", 32, "--methods", "cam,gradcam", "--batch-size", 3)


def results_of(out: Path) -> dict:
    res = json.loads((out / "results.json").read_text())
    return {k: res[k] for k in ("methods", "table", "classification")}


def fake_results(folder: Path) -> Path:
    """A results folder in the layout `cam-core evaluate` writes, with made-up figures."""
    thresholds = [i / 20 for i in range(20)]
    methods = {}
    for k, m in enumerate(["cam", "gradcam", "scorecam"]):
        gallery = []
        for rank in ("best", "worst"):
            for i in range(3):
                f = f"gallery/{m}_{rank}_{i + 1}.png"
                random_png(folder / f, seed=10 * k + i + (5 if rank == "worst" else 0))
                gallery.append({"rank": rank, "image": f"val/img_{i}.png", "iou": 0.9 - i / 10,
                                "file": f, "target": 3, "predicted": 3})
        curve = [float(100 * np.exp(-((t - 0.3 - 0.05 * k) ** 2) / 0.05)) for t in thresholds]
        methods[m] = {
            "metrics": {"MaxBoxAcc": 50.0 + k, "MaxBoxAccV2": 40.0 + k},
            "curves": {"thresholds": thresholds,
                       "box_acc": {"0.3": curve, "0.5": [c * 0.8 for c in curve],
                                   "0.7": [c * 0.5 for c in curve]}},
            "gallery": gallery,
        }
    results = {
        "kind": "cam-core evaluate",
        "dataset": {"path": "data/<toy>", "format": "wsol", "images": 12},
        "model": {"spec": "tests.cli_models:tiny_torch", "framework": "torch",
                  "layers": ["features"]},
        "settings": {"protocol": "native"},
        "classification": {"top1": 25.0},
        "methods": methods,
        "table": {"columns": ["method", "MaxBoxAcc", "MaxBoxAccV2"],
                  "rows": [[m, r["metrics"]["MaxBoxAcc"], r["metrics"]["MaxBoxAccV2"]]
                           for m, r in methods.items()],
                  "notes": "<script>alert('escaped')</script>"},
    }
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def random_png(path: Path, seed: int, size=(96, 80)) -> None:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
