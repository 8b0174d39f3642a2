"""The evaluation engine (:mod:`cam_core.evaluate`): figures identical for any number of sweep
workers, for a resumed run, for merged shards and for a 2-process ``torchrun`` (gloo) run; the
command line's table on the ImageNet subset as before the engine moved; bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.cli_helpers import (
    ENV,
    EVAL,
    assert_one_line_error,
    call_main,
    run_cli,
    wsol_dataset,
)
from tests.conftest import ROOT

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return wsol_dataset(tmp_path_factory.mktemp("evaldata") / "toy", n=13, seed=3)


def _model():
    from tests.cli_models import tiny_torch

    return tiny_torch()


def _run(data, **kw):
    from cam_core.data import read_wsol
    from cam_core.evaluate import evaluate

    kw = {"methods": ("cam", "gradcam"), "preprocess": "unit", "size": 32, "batch_size": 3, **kw}
    return evaluate(_model(), read_wsol(data), **kw)


def assert_identical(a, b) -> None:
    """Every counter of every batch, every threshold's BoxAcc, every per-image figure."""
    assert [(p[0], p[1]) for p in a.parts] == [(p[0], p[1]) for p in b.parts]
    for (_, _, x), (_, _, y) in zip(a.parts, b.parts):
        assert sorted(x) == sorted(y)
        for key in x:
            assert np.array_equal(x[key], y[key]), key
    assert a.images == b.images and a.top1 == b.top1 and a.layers == b.layers
    assert list(a.methods) == list(b.methods)
    for m in a.methods:
        assert a.methods[m].metrics == b.methods[m].metrics
        assert a.methods[m].curves == b.methods[m].curves
        assert np.array_equal(a.methods[m].iou, b.methods[m].iou)
        assert np.array_equal(a.methods[m].box, b.methods[m].box)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.predicted, b.predicted)
    assert a.table() == b.table()


@pytest.mark.parametrize("protocol", ["native", "wsol"])
def test_figures_identical_for_one_and_several_workers(data, protocol):
    one = _run(data, protocol=protocol, workers=1)
    several = _run(data, protocol=protocol, workers=3)
    assert_identical(one, several)
    assert one.images == 13 and one.complete
    # the figures are the accumulators' own over the whole dataset in one pass
    from cam_core.boxes import ground_truth
    from cam_core.data import iter_batches, read_wsol
    from cam_core.evaluate import PRESETS, EvalSettings, Preprocess, accumulators, explain_labels

    ds = read_wsol(data)
    pre = Preprocess("unit", *PRESETS["unit"], (32, 32))
    settings = EvalSettings(methods=("gradcam",), protocol=protocol, batch_size=3)
    accs = accumulators(settings)
    batch = next(iter_batches(ds, batch_size=len(ds), size=32))
    exp = explain_labels(_model(), pre(list(batch.images)), batch.labels, "gradcam", settings)
    gts = [ground_truth(r.boxes, r.size, 32, protocol=protocol) for r in ds]
    accs["sweep"].update(exp.maps, gts)
    res = accs["sweep"].result()
    assert np.array_equal(one.methods["gradcam"].curves["box_acc"]["0.5"], res.box_acc[:, 1])
    assert one.methods["gradcam"].metrics["MaxBoxAcc"] == res.max_box_acc


def test_resumed_run_is_identical(data, tmp_path):
    full = _run(data, workers=2)
    ck = tmp_path / "ck"
    part = _run(data, workers=2, checkpoint=ck, limit=7)
    assert part.images == 7
    resumed = _run(data, workers=1, checkpoint=ck)
    assert_identical(full, resumed)
    again = _run(data, workers=2, checkpoint=ck)  # every batch read back from disk
    assert_identical(full, again)


def test_shards_merged_are_identical(data, tmp_path):
    from cam_core.evaluate import load_state, merge, missing_images, save_state

    full = _run(data, workers=1)
    s0 = _run(data, workers=2, shard=(0, 2))
    s1 = _run(data, workers=1, shard=(1, 2))
    assert s0.images + s1.images == 13 and not s0.complete
    assert missing_images(s0) == [(s1.index[0], 13)]
    assert_identical(full, merge([s1, s0]))
    p0, p1 = save_state(s0, tmp_path / "a.npz"), save_state(s1, tmp_path / "b.npz")
    assert_identical(full, merge([p0, p1]))
    assert_identical(s0, load_state(p0))
    with pytest.raises(ValueError, match="overlap"):
        merge([s0, s0])
    other = _run(data, workers=1, shard=(1, 2), protocol="wsol")
    with pytest.raises(ValueError, match="other settings"):
        merge([s0, other])


def test_cli_shards_and_merge_give_the_single_run(data, tmp_path):
    single = tmp_path / "single"
    assert call_main("evaluate", "--data", data, *EVAL, "--gallery", 0, "--out", single,
                     "--workers", 1).returncode == 0
    for k in (0, 1):
        proc = call_main("evaluate", "--data", data, *EVAL, "--shard", f"{k}/2", "--out",
                         tmp_path / f"s{k}", "--workers", 2)
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / f"s{k}" / f"shard-{k}-of-2.npz").is_file()
        assert not (tmp_path / f"s{k}" / "results.json").exists()
    merged = tmp_path / "merged"
    proc = call_main("merge", tmp_path / "s0", tmp_path / "s1" / "shard-1-of-2.npz",
                     "--out", merged)
    assert proc.returncode == 0, proc.stderr
    a, b = (json.loads((d / "results.json").read_text()) for d in (single, merged))
    for key in ("methods", "table", "classification"):
        assert a[key] == b[key], key
    assert proc.stdout.splitlines()[:4] == call_main(
        "evaluate", "--data", data, *EVAL, "--gallery", 0, "--out", single).stdout.splitlines()[:4]
    # one shard alone does not make the figures of the dataset
    proc = call_main("merge", tmp_path / "s0", "--out", tmp_path / "m2")
    assert_one_line_error(proc, "do not cover", "missing")
    proc = call_main("evaluate", "--data", data, *EVAL, "--shard", "2/2", "--out", tmp_path / "x")
    assert_one_line_error(proc, "--shard", "2/2")


def test_torchrun_two_processes_gloo_give_the_single_run(data, tmp_path):
    pytest.importorskip("torch.distributed")
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    single = tmp_path / "single"
    assert call_main("evaluate", "--data", data, *EVAL, "--gallery", 0, "--out", single,
                     "--device", "cpu").returncode == 0
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "cam_core", "evaluate", "--data", str(data), *map(str, EVAL), "--gallery", "0",
         "--device", "cpu", "--no-progress", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, env={**ENV, "OMP_NUM_THREADS": "1"},
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (json.loads((d / "results.json").read_text()) for d in (single, out))
    for key in ("methods", "table", "classification"):
        assert a[key] == b[key], key
    assert b["parallel"]["ranks"] == 2 and b["parallel"]["backend"] == "gloo"
    assert a["parallel"]["ranks"] == 1
    # both ranks wrote their own batches into the shared checkpoint folder
    assert len(list((out / "checkpoint").glob("batch-*.npz"))) == 5


def test_bad_arguments(data):
    from cam_core.data import read_wsol
    from cam_core.evaluate import evaluate

    ds = read_wsol(data)
    with pytest.raises(TypeError, match="`model`"):
        evaluate("not a model", ds)
    with pytest.raises(TypeError, match="`dataset`"):
        evaluate(_model(), [1, 2])
    with pytest.raises(ValueError, match="`protocol`"):
        evaluate(_model(), ds, protocol="voc")
    with pytest.raises(ValueError, match="`workers`"):
        evaluate(_model(), ds, workers=0)
    with pytest.raises(TypeError, match="`batch_size`"):
        evaluate(_model(), ds, batch_size=2.5)
    with pytest.raises(ValueError, match="`shard`"):
        evaluate(_model(), ds, shard=(2, 2))
    with pytest.raises(TypeError, match="`shard`"):
        evaluate(_model(), ds, shard="0/2")
    with pytest.raises(ValueError, match="`preprocess`"):
        evaluate(_model(), ds, preprocess="nope")
    with pytest.raises(ValueError, match="method"):
        evaluate(_model(), ds, methods=["bogus"])


# --------------------------------------------------------------------------------------------
# the ImageNet subset: the table printed before the engine moved (commit 1ef8fc3, the same
# command, 64 images, EfficientNet-Lite0 with its ImageNet weights, CPU)

BEFORE = {
    "wsol": ["| cam | 71.9 | 66.1 | 54.7 | 68.8 | 53.1 | 67.2 | 57.6 |",
             "| gradcam | 71.9 | 66.7 | 54.7 | 68.8 | 53.1 | 67.2 | 57.9 |"],
    "native": ["| cam | 70.3 | 65.1 | 54.7 | 68.8 | 50.0 | 64.1 | 56.7 |",
               "| gradcam | 71.9 | 66.1 | 54.7 | 68.8 | 53.1 | 67.2 | 57.0 |"],
}


@pytest.mark.parametrize("protocol", ["wsol", "native"])
def test_cli_table_on_the_imagenet_subset_is_unchanged(imagenet_dir, tmp_path, protocol):
    pytest.importorskip("efficientnet_lite_pytorch", reason="the demo extra is not installed")
    proc = run_cli("evaluate", "--data", imagenet_dir, "--protocol", protocol, "--limit", 64,
                   "--gallery", 0, "--workers", 2, "--device", "cpu", "--out", tmp_path / "o",
                   timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[2:4] == BEFORE[protocol]


def test_benchmark_stage_sweep_bound_smoke():
    from benchmarks.stage_evaluate import sweep_bound

    res = sweep_bound(n_maps=8, batch=4, rounds=1, workers=2)
    assert res["identical"] and res["maps"] == 8
    assert set(res["seconds"]) == {"1", "2"} and res["speedup"] > 0


def test_shards_share_a_checkpoint_folder_and_restart_only_their_own(data, tmp_path):
    from cam_core.evaluate import merge

    ck = tmp_path / "ck"
    s0 = _run(data, workers=1, shard=(0, 2), checkpoint=ck)
    mine = sorted(p.name for p in ck.glob("batch-*.npz"))
    s1 = _run(data, workers=1, shard=(1, 2), checkpoint=ck, restart=True)  # e.g. a second rank
    assert set(mine) < {p.name for p in ck.glob("batch-*.npz")}  # shard 0's files are kept
    assert_identical(_run(data, workers=1), merge([s0, s1]))
    assert_identical(_run(data, workers=1, checkpoint=ck), merge([s0, s1]))  # all reused


def test_keras_model_figures_identical_for_one_and_two_workers(data, tmp_path):
    pytest.importorskip("keras")
    pytest.importorskip("cam_core.adapters.keras", reason="the Keras adapter is not available")
    from tests.cli_models import tiny_keras

    path = tiny_keras(tmp_path / "tiny.keras")
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"k{workers}"
        proc = call_main("evaluate", "--data", data, "--model", path, "--methods", "cam,gradcam",
                         "--batch-size", 4, "--gallery", 0, "--workers", workers, "--out", out)
        assert proc.returncode == 0, proc.stderr
        outs.append(json.loads((out / "results.json").read_text()))
    for key in ("methods", "table", "classification"):
        assert outs[0][key] == outs[1][key], key
    assert outs[0]["model"]["device"] == "keras backend default"
    proc = call_main("evaluate", "--data", data, "--model", path, "--device", "cpu", "--out",
                     tmp_path / "k3")
    assert_one_line_error(proc, "--device", "Keras")


# --------------------------------------------------------------------------------------------
# one capture per batch for the methods that share it; raw maps made into maps by the workers


def _capture_methods():
    from cam_core.evaluate import shares_capture
    from cam_core.explain import METHODS

    names = [m for m in METHODS if shares_capture(m)]
    assert {"cam", "gradcam", "gradcam++", "eigencam"} <= set(names)
    assert not {"scorecam", "ablationcam", "finercam", "smoothgradcam++"} & set(names)
    # a fusion of their own, a second backward pass, every bias layer: explained alone
    assert not {"refinecam", "shapleycam", "fullgrad"} & set(names)
    return names


def _keras_tiny(tmp_path):
    keras = pytest.importorskip("keras")
    pytest.importorskip("cam_core.adapters.keras", reason="the Keras adapter is not available")
    from tests.cli_models import tiny_keras

    return keras.models.load_model(tiny_keras(tmp_path / "tiny.keras"))


@pytest.mark.parametrize("framework", ["torch", "keras"])
@pytest.mark.parametrize("protocol", ["native", "wsol"])
def test_raw_maps_of_one_capture_make_the_maps_of_explain_exactly(framework, protocol, tmp_path):
    from cam_core.evaluate import EvalSettings, capture_raw_maps, explain_labels

    model = _model() if framework == "torch" else _keras_tiny(tmp_path)
    x = np.random.default_rng(0).uniform(0, 1, (5, 32, 32, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 1])
    methods = _capture_methods()
    settings = EvalSettings(methods=tuple(methods), protocol=protocol, batch_size=5)
    made, logits, layers = capture_raw_maps(model, x, labels, methods, settings)
    assert sorted(made) == sorted(methods)
    for method in methods:
        exp = explain_labels(model, x, labels, method, settings)
        assert np.array_equal(made[method].maps(), exp.maps), method  # bit for bit
        assert made[method].maps().dtype == np.float32
        assert np.array_equal(logits, exp.logits) and layers == exp.layers


def _forward_calls(data, methods) -> int:
    from cam_core.data import read_wsol
    from cam_core.evaluate import evaluate

    model, calls = _model(), []
    model.register_forward_hook(lambda *args: calls.append(1))
    evaluate(model, read_wsol(data), methods=methods, preprocess="unit", size=32, batch_size=3,
             workers=1)
    return len(calls)


def test_the_capture_methods_share_one_forward_pass_per_batch(data):
    alone = _forward_calls(data, ("gradcam",))
    assert alone >= 5  # 13 images in batches of 3
    assert _forward_calls(data, ("cam", "gradcam", "gradcam++", "eigencam")) == alone
    # a perturbation method still makes its own calls, beside the shared capture
    assert _forward_calls(data, ("cam", "ablationcam")) > alone


def test_methods_with_their_own_pass_run_in_the_engine(data):
    from cam_core.evaluate import EvalSettings, explain_labels

    methods = ("refinecam", "shapleycam", "fullgrad", "gradcam")
    ev = _run(data, methods=methods, protocol="native")
    assert set(ev.methods) == set(methods)
    for method in methods:
        assert 0 <= ev.methods[method].metrics["MaxBoxAccV2"] <= 100
    # FullGrad's maps are not Grad-CAM's
    x = np.random.default_rng(1).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    settings = EvalSettings(methods=methods, batch_size=2)
    full = explain_labels(_model(), x, [0, 1], "fullgrad", settings)
    grad = explain_labels(_model(), x, [0, 1], "gradcam", settings)
    assert full.layers != grad.layers and not np.allclose(full.maps, grad.maps, atol=1e-2)


def test_mixed_methods_figures_identical_for_one_and_two_workers(data):
    one = _run(data, methods=("cam", "ablationcam", "gradcam"), protocol="wsol", workers=1)
    two = _run(data, methods=("cam", "ablationcam", "gradcam"), protocol="wsol", workers=2)
    assert_identical(one, two)
    alone = _run(data, methods=("ablationcam",), protocol="wsol", workers=1)
    assert one.methods["ablationcam"].metrics == alone.methods["ablationcam"].metrics
    assert one.methods["cam"].metrics == _run(data, protocol="wsol").methods["cam"].metrics
