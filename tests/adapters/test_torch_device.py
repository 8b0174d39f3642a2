"""The torch adapter's device path: the core computes on the model's tensors where they are.

On the CPU the device path is exercised with ``core="device"`` (torch CPU tensors handed to the
core) and compared with ``core="numpy"`` (the reference): the same maps for every method, to float
rounding. ``maps_on_device=True`` keeps torch maps, which the boxes, the metrics and the sweep
accept. CUDA tests (skipped without a GPU) compare a GPU model's maps with the CPU's.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cam_core.adapters import torch as ta  # noqa: E402

import cam_core as ex  # noqa: E402
from cam_core.metrics import BoxAccuracy  # noqa: E402
from tests.adapters import torch_models as tm  # noqa: E402

# every method that explains a CNN's layer (LeGrad needs a transformer: tests/adapters/test_legrad.py)
ALL_METHODS = sorted(m for m in ex.METHODS if not ex.METHODS[m].attention)


def batch(n=3, size=16, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _layer(method: str) -> str | None:
    return {"cam": "act", "fullgrad": None}.get(method, "features")


@pytest.mark.parametrize("method", ALL_METHODS)
def test_device_path_gives_the_numpy_paths_maps(method):
    model, x = tm.tiny_net(), batch(3)
    kw = dict(method=method, layer=_layer(method), targets=[0, 1, 2], batch_size=5)
    ref = ta.explain(model, x, core="numpy", **kw)
    got = ta.explain(model, x, core="device", **kw)
    assert isinstance(got.maps, np.ndarray) and got.maps.dtype == np.float32
    assert got.maps.shape == ref.maps.shape == (3, 16, 16)
    np.testing.assert_allclose(got.maps, ref.maps, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.raw, ref.raw, rtol=1e-5,
                               atol=1e-5 * float(np.abs(ref.raw).max()))
    np.testing.assert_array_equal(got.targets, ref.targets)


def test_cpu_default_is_the_numpy_path_bit_for_bit():
    model, x = tm.tiny_net(), batch(2)
    a = ta.explain(model, x, method="gradcam++", layer="features")
    b = ta.explain(model, x, method="gradcam++", layer="features", core="numpy")
    np.testing.assert_array_equal(a.maps, b.maps)


def test_capture_hands_device_tensors_to_the_core_only_when_asked():
    model, x = tm.tiny_net(), batch(2)
    (cap,) = ta.capture(model, x, layer="act", core="device")
    assert isinstance(cap.activations, torch.Tensor) and cap.activations.dtype == torch.float32
    assert isinstance(cap.gradients, torch.Tensor) and not cap.activations.requires_grad
    assert isinstance(cap.weights, torch.Tensor) and not cap.weights.requires_grad
    assert isinstance(cap.logits, np.ndarray) and isinstance(cap.targets, np.ndarray)
    (ref,) = ta.capture(model, x, layer="act")
    assert isinstance(ref.activations, np.ndarray)
    np.testing.assert_array_equal(cap.activations.numpy(), ref.activations)
    np.testing.assert_array_equal(cap.weights.numpy(), ref.weights)


def test_maps_on_device_stay_torch_and_feed_boxes_and_metrics():
    model, x = tm.tiny_net(), batch(3)
    kw = dict(method="gradcam", layer="features", targets=[0, 1, 2])
    ref = ta.explain(model, x, core="numpy", **kw)
    got = ta.explain(model, x, core="device", maps_on_device=True, **kw)
    assert isinstance(got.maps, torch.Tensor) and got.maps.dtype == torch.float32
    assert isinstance(got.raw, torch.Tensor)
    np.testing.assert_allclose(got.maps.numpy(), ref.maps, atol=1e-5)
    # boxes and metrics of the device maps are those of their host copy
    host = ex.Explanation(maps=got.maps.numpy(), raw=got.raw.numpy(), logits=got.logits,
                          targets=got.targets, method=got.method, layers=got.layers)
    for b, r in zip(got.boxes(0.2), host.boxes(0.2)):
        np.testing.assert_array_equal(b, r)
    gt = [np.array([[2, 2, 10, 12]]), np.array([[0, 0, 8, 8]]), np.array([[4, 3, 16, 9]])]
    for protocol in ("native", "wsol"):
        results = []
        for maps in (got.maps, host.maps):
            acc = BoxAccuracy(taus=20, protocol=protocol)
            acc.update(maps, gt)
            results.append(acc.result())
        np.testing.assert_array_equal(results[0].correct_all, results[1].correct_all)
        np.testing.assert_array_equal(results[0].correct, results[1].correct)


def test_score_callables_accept_tensors_and_arrays():
    model, x = tm.tiny_net(), batch(2)
    with ta.TorchSession(model, x, layer="features", targets=1) as s:
        s.capture(gradients=False)
        masks = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
        np.testing.assert_array_equal(s.score_masked(0, torch.from_numpy(masks)),
                                      s.score_masked(0, masks))
        np.testing.assert_array_equal(s.score_ablated(0, 1, torch.arange(4)),
                                      s.score_ablated(0, 1, np.arange(4)))


def test_default_batch_size_is_64_on_the_cpu():
    with ta.TorchSession(tm.tiny_net(), batch(1), layer="features") as s:
        assert s.default_batch_size() == 64
        assert s.on_device is False
    with pytest.raises(ValueError, match="`core`"):
        ta.TorchSession(tm.tiny_net(), batch(1), core="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ALL_METHODS)
def test_cuda_device_path_gives_the_cpu_maps(method, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # float32 convolutions
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    cpu, gpu = tm.tiny_net(), tm.tiny_net().cuda()
    x = batch(3)
    kw = dict(method=method, layer=_layer(method), targets=[0, 1, 2])
    a = ta.explain(cpu, x, **kw)
    b = ta.explain(gpu, x, **kw)  # the device path (core="auto" on CUDA)
    assert isinstance(b.maps, np.ndarray)
    np.testing.assert_allclose(b.maps, a.maps, atol=1e-4)
    c = ta.explain(gpu, x.cuda(), maps_on_device=True, **kw)
    assert c.maps.device.type == "cuda"
    np.testing.assert_allclose(c.maps.cpu().numpy(), a.maps, atol=1e-4)
    monkeypatch.setattr(ta, "PINNED_COPY", True)  # the pinned-memory copy gives the same maps
    d = ta.explain(gpu, x, **kw)
    np.testing.assert_array_equal(d.maps, b.maps)
    with ta.TorchSession(gpu, x) as s:
        assert s.on_device and 16 <= s.default_batch_size() <= 256
