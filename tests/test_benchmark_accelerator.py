"""The adapters stage's accelerator suite runs end to end (on the CPU, at toy sizes).

The suite is meant for a GPU (``python benchmarks/run.py --stages adapters --device cuda``); here
it runs on the CPU with a small stand-in for ResNet-50 (same layer names), so that every contender,
the Score-CAM comparison and the report are exercised. No timing is asserted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from benchmarks import run as runner  # noqa: E402
from benchmarks import stage_adapter_torch as stage  # noqa: E402


class _SmallResNet(torch.nn.Module):
    """layer1 ... layer4 (the names the suite explains), GAP, fc: a stand-in for ResNet-50."""

    def __init__(self):
        super().__init__()
        self.layer1 = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
                                          torch.nn.ReLU())
        self.layer2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.layer3 = torch.nn.ReLU()
        self.layer4 = torch.nn.Sequential(torch.nn.Conv2d(8, 12, 3, stride=2, padding=1),
                                          torch.nn.ReLU())
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(12, 10)

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def test_accelerator_suite_runs_on_the_cpu(monkeypatch, tmp_path: Path):
    torch.manual_seed(0)
    monkeypatch.setattr(stage, "_accel_models", lambda tiny: [
        ("ResNet-50 stand-in", _SmallResNet(), "layer4", False),
        ("EfficientNet-Lite0", None, "not installed (test)", False),
    ])
    monkeypatch.setattr(stage, "TINY_SIZE", 32)
    monkeypatch.setattr(stage, "SCORECAM_BATCH", 3)  # several chunks of masks
    res = stage.run(quick=True, out_dir=tmp_path, progress=False, device="cpu", tiny=True)
    fig = res["figures"]
    assert fig["settings"]["suite"] == "accelerator" and fig["settings"]["device"] == "cpu"
    (entry,) = fig["results"]
    assert [b["batch"] for b in entry["batches"]] == list(stage.TINY_BATCHES)
    rows = entry["batches"][0]["rows"]
    for method in ("cam", "gradcam", "gradcam++"):
        for where in ("NumPy maps", "device maps"):
            assert f"cam_core {method}, {where}" in rows
        # the torch core on the CPU gives the NumPy maps to float rounding
        assert rows[f"cam_core {method}, device maps"]["max_abs_diff_to_numpy_maps"] < 1e-5
    if "torchcam" not in fig["skipped_libraries"]:
        assert rows["torchcam gradcam (+resize, to host)"]["correlation_to_cam_core"] > 0.999
    assert fig["scorecam"]["layer"] == "layer1" and "cam_core scorecam" in fig["scorecam"]["rows"]
    assert fig["skipped_models"] == {"EfficientNet-Lite0": "not installed (test)"}
    assert "Score-CAM on one ResNet-50 image" in res["markdown"]


def test_run_py_device_flag_picks_the_gpu_folder_and_is_checked(tmp_path: Path):
    args = runner.parse_args(["--stages", "adapters", "--device", "cuda"])
    assert args.out.parts[-2:] == ("results", "gpu") and args.device == "cuda"
    args = runner.parse_args(["--stages", "adapters", "--device", "cuda", "--out", str(tmp_path)])
    assert args.out == tmp_path
    assert runner.parse_args(["--stages", "adapters"]).out.name == "results"
    with pytest.raises(SystemExit):
        runner.parse_args(["--device", "tpu"])


def test_asking_for_cuda_without_it_is_an_error(tmp_path: Path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        stage.run(quick=True, out_dir=tmp_path, progress=False, device="cuda")
