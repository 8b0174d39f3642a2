"""Fault injection and bad inputs for the command line: every failure ends in one line on stderr
and a non-zero exit (checkpoints damaged, replaced or orphaned, kills and resumes, a read-only or
full disk, ``--out`` that is a file, bad sizes, a ``torch.save`` file, a 16-bit PNG, a CSV with a
byte-order mark or with class names, the report's inputs)."""

from __future__ import annotations

import errno
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli_helpers import (
    ENV,
    EVAL,
    TINY,
    assert_one_line_error,
    call_main,
    fake_results,
    results_of,
    square_image,
    wsol_dataset,
)
from tests.conftest import ROOT

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return wsol_dataset(tmp_path_factory.mktemp("faultdata") / "toy", n=10)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("faultref") / "ref"
    proc = call_main("evaluate", "--data", data, *EVAL, "--gallery", 0, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


def _fresh_checkpoint(data, reference, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    return out


def _evaluate(data, out, *extra):
    return call_main("evaluate", "--data", data, *EVAL, "--gallery", 0, "--out", out, *extra)


# --------------------------------------------------------------------------------------------
# checkpoints


def test_truncated_checkpoint_names_the_file_and_restart(data, reference, tmp_path):
    out = _fresh_checkpoint(data, reference, tmp_path)
    victim = out / "checkpoint" / "batch-0000003-0000006.npz"
    victim.write_bytes(victim.read_bytes()[:100])
    line = assert_one_line_error(_evaluate(data, out), "batch-0000003-0000006.npz", "--restart")
    assert "damaged" in line
    proc = _evaluate(data, out, "--restart")
    assert proc.returncode == 0, proc.stderr
    assert results_of(out) == results_of(reference)


def test_batch_file_replaced_by_another_batch_is_refused(data, reference, tmp_path):
    out = _fresh_checkpoint(data, reference, tmp_path)
    ck = out / "checkpoint"
    shutil.copy(ck / "batch-0000000-0000003.npz", ck / "batch-0000003-0000006.npz")
    assert_one_line_error(_evaluate(data, out), "batch-0000003-0000006.npz",
                          "holds images [0, 3), not [3, 6)", "--restart")


def test_batches_without_settings_are_not_reused_under_another_protocol(data, reference,
                                                                        tmp_path):
    out = _fresh_checkpoint(data, reference, tmp_path)
    (out / "checkpoint" / "settings.json").unlink()
    proc = _evaluate(data, out, "--protocol", "wsol")
    assert_one_line_error(proc, "no settings.json", "--restart")
    # and a settings file swapped in from another protocol does not match the batches' digest
    other = tmp_path / "wsol"
    assert _evaluate(data, other, "--protocol", "wsol").returncode == 0
    shutil.copy(other / "checkpoint" / "settings.json", out / "checkpoint" / "settings.json")
    assert_one_line_error(_evaluate(data, out, "--protocol", "wsol"), "other settings",
                          "--restart")


def test_temporary_file_left_by_a_kill_is_removed_on_resume(data, reference, tmp_path):
    out = _fresh_checkpoint(data, reference, tmp_path)
    ck = out / "checkpoint"
    (ck / "batch-0000006-0000009.npz").unlink()
    stale = ck / ".batch-0000006-0000009.npz.abc123.tmp"
    stale.write_bytes(b"half written")
    proc = _evaluate(data, out)
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists() and not list(ck.glob(".*.tmp"))
    assert results_of(out) == results_of(reference)


@pytest.mark.parametrize("workers", [1, 2])
def test_killed_run_resumes_to_identical_figures(data, reference, tmp_path, workers):
    out = tmp_path / "killed"
    args = ["evaluate", "--data", data, "--model", "tests.cli_models:slow_torch", "--size", 32,
            "--methods", "cam,gradcam", "--batch-size", 3, "--gallery", 0, "--workers", workers,
            "--out", out]
    proc = subprocess.Popen([sys.executable, "-m", "cam_core", *map(str, args)], cwd=ROOT,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((out / "checkpoint").glob("batch-*.npz")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    import os

    os.killpg(proc.pid, signal.SIGKILL)  # the run and its sweep workers, no chance to clean up
    proc.communicate(timeout=60)
    done = list((out / "checkpoint").glob("batch-*.npz"))
    assert 1 <= len(done) < 4
    proc = call_main(*args)
    assert proc.returncode == 0, proc.stderr
    assert f"resuming: {len(done)} of 4 batches already done" in proc.stderr
    for m in ("cam", "gradcam"):
        assert results_of(out)["methods"][m] == results_of(reference)["methods"][m]


# --------------------------------------------------------------------------------------------
# the output folder and the disk


def test_out_that_is_a_file(data, tmp_path, two_pngs):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert_one_line_error(_evaluate(data, f), "--out", "is a file")
    assert_one_line_error(call_main("explain", *two_pngs, "--model", TINY, "--size", 32,
                                    "--out", f), "--out", "is a file")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    assert_one_line_error(call_main("explain", two_pngs[0], "--model", TINY, "--size", 32,
                                    "--out", folder), "is a folder")


@pytest.mark.parametrize("code, text", [(errno.ENOSPC, "No space left on device"),
                                        (errno.EROFS, "Read-only file system"),
                                        (errno.EACCES, "Permission denied")])
def test_full_or_read_only_disk_is_one_line(data, tmp_path, monkeypatch, code, text):
    import cam_core.evaluate as engine

    def fail(path, data):
        raise OSError(code, text, str(path))

    monkeypatch.setattr(engine, "atomic_write_bytes", fail)
    line = assert_one_line_error(_evaluate(data, tmp_path / "o"), text)
    assert "checkpoint/batch-" in line


def test_read_only_out_folder(data, tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the disk test above covers the message")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert_one_line_error(_evaluate(data, ro / "sub"), "--out")
        assert_one_line_error(_evaluate(data, ro), "--out", "not writable")
    finally:
        ro.chmod(0o755)


# --------------------------------------------------------------------------------------------
# sizes, models, images


@pytest.fixture
def two_pngs(tmp_path):
    a = square_image(tmp_path / "a.png", size=(48, 40), box=(10, 8, 26, 22), seed=1)
    b = square_image(tmp_path / "b.png", size=(64, 32), box=(40, 4, 60, 28), seed=2)
    return a, b


@pytest.mark.parametrize("size", [0, -5])
def test_bad_sizes(data, tmp_path, two_pngs, size):
    for cmd in (("explain", two_pngs[0]), ("evaluate", "--data", data)):
        proc = call_main(*cmd, "--model", TINY, "--size", size, "--out", tmp_path / "o")
        assert_one_line_error(proc, "--size", str(size))


def test_input_smaller_than_the_kernel(data, tmp_path, two_pngs):
    model = "tests.cli_models:unpadded_torch"
    proc = call_main("explain", two_pngs[0], "--model", model, "--size", 4, "--out", tmp_path)
    assert_one_line_error(proc, "the model failed on 4x4 inputs", "--size")
    proc = call_main("evaluate", "--data", data, "--model", model, "--size", 4, "--methods",
                     "gradcam", "--out", tmp_path / "e")
    assert_one_line_error(proc, "the model failed on 4x4 inputs", "size")


def test_state_dict_file_says_how_to_load_it(tmp_path, two_pngs):
    import torch

    from tests.cli_models import tiny_torch

    path = tmp_path / "weights.pth"
    torch.save(tiny_torch().state_dict(), path)
    assert_one_line_error(call_main("explain", two_pngs[0], "--model", path, "--out", tmp_path),
                          "torch.save", "package.module:factory")


def test_unreadable_image_in_a_folder_is_skipped(tmp_path, two_pngs):
    folder = two_pngs[0].parent
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    proc = call_main("explain", folder, "--model", TINY, "--size", 32, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "skipping" in proc.stderr and "broken.png" in proc.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["a_gradcam.png", "b_gradcam.png"]
    # named on the command line, it is still an error
    proc = call_main("explain", folder / "broken.png", "--model", TINY, "--out", out)
    assert_one_line_error(proc, "broken.png")


def test_16_bit_png_is_scaled_to_8_bits(tmp_path):
    from cam_core.cli import load_image
    from cam_core.data import Dataset, Record, iter_batches

    a16 = np.zeros((20, 30), dtype=np.uint16)
    a16[:, 10:] = 65535
    a16[:, 20:] = 32896  # 128 * 257
    path = tmp_path / "g16.png"
    Image.fromarray(a16).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    record = Record(id="g16", path=path, label=0, boxes=np.zeros((0, 4), np.int64), size=(30, 20))
    (batch,) = iter_batches(Dataset((record,)), batch_size=1, size=(20, 30))
    for img in (load_image(path), batch.images[0]):
        assert img.dtype == np.uint8 and img.shape == (20, 30, 3)
        assert (img[:, :10] == 0).all() and (img[:, 10:20] == 255).all()
        assert (img[:, 20:] == 128).all()
    f32 = tmp_path / "f.tif"
    Image.fromarray(np.ones((4, 4), dtype=np.float32)).save(f32)
    with pytest.raises(Exception, match="no agreed range"):
        load_image(f32)


# --------------------------------------------------------------------------------------------
# preprocessing flags, help, class names


def test_mean_and_std_without_scale_are_what_the_flags_say(tmp_path, two_pngs):
    proc = call_main("explain", two_pngs[0], "--model", TINY, "--size", 32, "--mean", 127.5,
                     "--std", 127.5, "--out", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    rec = json.loads((tmp_path / "o" / "a_gradcam.json").read_text())
    pre = rec["settings"]["preprocess"]
    assert (pre["scale"], pre["mean"], pre["std"]) == (1.0, [127.5], [127.5])
    from cam_core.evaluate import Preprocess

    x = Preprocess("custom", 1.0, (127.5,), (127.5,), (2, 2))(
        [np.array([[[0] * 3, [255] * 3]] * 2, dtype=np.uint8)])
    assert x.min() == -1.0 and x.max() == 1.0
    proc = call_main("explain", two_pngs[0], "--model", TINY, "--mean", "0.485,0.456,0.406",
                     "--std", "0.229,0.224,0.225", "--out", tmp_path / "p")
    assert_one_line_error(proc, "--scale", "--mean")


def test_help_states_the_defaults():
    for cmd, needles in (("explain", ("default gradcam", "default 5", "default cam-core-explain",
                                      "SCALE defaults to 1")),
                         ("evaluate", ("default cam,gradcam", "default cam-core-eval",
                                       "--workers", "--shard", "--device"))):
        proc = call_main(cmd, "--help")
        text = " ".join(proc.stdout.split())
        for needle in needles:
            assert needle in text, (cmd, needle)


def test_imagenet_class_names_ship_with_the_package(tmp_path, two_pngs):
    from cam_core.cli import imagenet_class_names

    names = imagenet_class_names()
    assert len(names) == 1000 and len(set(names)) == 998  # "crane" and "maillot" twice
    spot = {0: "tench", 1: "goldfish", 2: "great white shark", 151: "Chihuahua",
            207: "golden retriever", 281: "tabby", 285: "Egyptian cat", 340: "zebra",
            409: "analog clock", 817: "sports car", 954: "banana", 999: "toilet tissue"}
    assert {i: names[i] for i in spot} == spot
    proc = call_main("explain", two_pngs[0], "--model", "tests.cli_models:tiny_torch_1000",
                     "--size", 32, "--out", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    rec = json.loads((tmp_path / "o" / "a_gradcam.json").read_text())
    assert rec["target"]["name"] == names[rec["target"]["index"]]
    assert rec["target"]["name"] in proc.stdout


def test_evaluate_prints_classification_top1(data, tmp_path):
    proc = _evaluate(data, tmp_path / "o")
    assert proc.returncode == 0
    top1 = json.loads((tmp_path / "o" / "results.json").read_text())["classification"]["top1"]
    assert f"classification top-1: {top1:.1f}%" in proc.stdout


def _csv_with_names(data: Path, path: Path, *, bom: bool = False) -> Path:
    meta = data / "metadata"
    labels = dict(ln.split(",") for ln in meta.joinpath("class_labels.txt").read_text().split())
    rows = ["image,x0,y0,x1,y1,class"]
    for ln in meta.joinpath("localization.txt").read_text().split():
        name, x0, y0, x1, y1 = ln.split(",")
        rows.append(f"{name},{x0},{y0},{int(x1) + 1},{int(y1) + 1},"
                    f"{['dog', 'cat', 'bird', 'fish'][int(labels[name])]}")
    path.write_text(("\ufeff" if bom else "") + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_evaluate_csv_with_class_names(data, reference, tmp_path):
    csv = _csv_with_names(data, data / "named.csv", bom=True)  # as spreadsheets write it
    try:
        proc = call_main("evaluate", "--data", csv, *EVAL, "--gallery", 0, "--out",
                         tmp_path / "a")
        assert_one_line_error(proc, "names its classes", "--class-names")
        names = tmp_path / "names.txt"  # the model's order, one per line, with a BOM too
        names.write_text("\ufeffdog\ncat\nbird\nfish\n", encoding="utf-8")
        proc = call_main("evaluate", "--data", csv, *EVAL, "--gallery", 0, "--class-names",
                         names, "--out", tmp_path / "b")
        assert proc.returncode == 0, proc.stderr
        assert results_of(tmp_path / "b")["table"] == results_of(reference)["table"]
        tsv = tmp_path / "names.tsv"
        tsv.write_text("index\tnames\n0\tdog, domestic dog\n1\tcat\n2\tbird\n3\tfish\n")
        proc = call_main("evaluate", "--data", csv, *EVAL, "--gallery", 0, "--class-names", tsv,
                         "--out", tmp_path / "c")
        assert proc.returncode == 0, proc.stderr
        assert results_of(tmp_path / "c")["table"] == results_of(reference)["table"]
    finally:
        csv.unlink()


def test_csv_with_a_byte_order_mark_is_read(tmp_path):
    from cam_core.data import read_csv_boxes

    square_image(tmp_path / "a.png", size=(48, 40))
    (tmp_path / "b.csv").write_text("\ufeffimage,x0,y0,x1,y1,class\na.png,1,2,30,20,3\n",
                                    encoding="utf-8")
    ds = read_csv_boxes(tmp_path / "b.csv", images_dir=tmp_path)
    assert len(ds) == 1 and ds[0].label == 3 and ds[0].boxes.tolist() == [[1, 2, 30, 20]]


# --------------------------------------------------------------------------------------------
# the report


def test_report_embeds_only_files_inside_its_folder_and_escapes(tmp_path):

    folder = fake_results(tmp_path / "res")
    secret = tmp_path / "secret.png"
    Image.new("RGB", (2, 2), (1, 2, 3)).save(secret)
    res = json.loads((folder / "results.json").read_text())
    method = next(iter(res["methods"]))
    res["methods"][method]["gallery"][0]["file"] = str(secret)  # absolute, outside
    res["methods"][method]["gallery"][1]["file"] = "../secret.png"  # relative, outside
    res["methods"][method]["gallery"][2]["iou"] = "<script>alert(1)</script>"
    (folder / "results.json").write_text(json.dumps(res))
    (folder / "link.png").symlink_to(secret)
    proc = call_main("report", folder)
    assert proc.returncode == 0, proc.stderr
    page = (folder / "report.html").read_text()
    import base64

    assert base64.b64encode(secret.read_bytes()).decode() not in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    (folder / "results.json").unlink()
    (folder / "report.md").write_text("# r\n\n![x](../secret.png) ![y](link.png)\n")
    assert call_main("report", folder).returncode == 0
    assert base64.b64encode(secret.read_bytes()).decode() not in (folder / "report.html").read_text()


def test_report_bad_inputs_are_one_line(tmp_path):

    folder = fake_results(tmp_path / "res")
    assert_one_line_error(call_main("report", folder, "--out", tmp_path), "`out`", "folder")
    res = json.loads((folder / "results.json").read_text())
    del res["table"]["rows"]
    for r in res["methods"].values():
        del r["curves"]["thresholds"]
    (folder / "results.json").write_text(json.dumps(res))
    assert_one_line_error(call_main("report", folder), "results.json", "missing")


def test_replayed_torchscript_code_is_checked():
    from cam_core.adapters.loading import check_replay_code

    check_replay_code("def forward(self, x: Tensor) -> Tensor:\n"
                      "  fc = self.fc\n  _0 = getattr(self, '0')\n"
                      "  return (fc)(torch.flatten(_0(x), 1), )\n")
    for bad in ("import os", "__import__('os').system('true')",
                "def forward(self, x):\n  return ().__class__.__bases__",
                "def forward(self, x):\n  return self.save('/tmp/x')",
                "def forward(self, x):\n  return (lambda: 1)()",
                "def forward(self, x):\n  with open('f') as f:\n    pass"):
        with pytest.raises(ValueError, match="replay"):
            check_replay_code(bad)


def test_model_that_cannot_take_the_size(data, tmp_path, two_pngs):
    model = "tests.cli_models:fixed_size_torch"
    proc = call_main("explain", two_pngs[0], "--model", model, "--size", 48, "--out", tmp_path)
    assert_one_line_error(proc, "the model failed on 48x48 inputs", "AssertionError",
                          "doesn't match model")
    proc = call_main("evaluate", "--data", data, "--model", model, "--size", 48, "--out",
                     tmp_path / "e")
    assert_one_line_error(proc, "the model failed on 48x48 inputs", "--size")
