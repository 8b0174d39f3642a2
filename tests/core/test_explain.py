"""The adapter-facing bridge: target resolution, method names, dispatch and the session pipeline.

The pipeline is driven here by a pure-NumPy fake session, a GAP + linear "model" whose layer is its
input, so every figure can be checked against the core functions directly.
"""

from __future__ import annotations

import numpy as np
import pytest

from cam_core.explain import (
    METHODS,
    BiasGradients,
    Capture,
    Explanation,
    MethodSpec,
    explain,
    explain_session,
    method_spec,
    raw_maps,
    resolve_targets,
)


# ---------------------------------------------------------------- targets
def test_none_picks_each_images_predicted_class():
    logits = np.array([[0.1, 2.0, 0.3], [5.0, 1.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(resolve_targets(None, logits), [1, 0])


def test_int_is_broadcast_to_the_whole_batch():
    logits = np.zeros((4, 3), dtype=np.float32)
    np.testing.assert_array_equal(resolve_targets(2, logits), [2, 2, 2, 2])


def test_sequence_needs_one_entry_per_image_never_truncated():
    logits = np.zeros((3, 5), dtype=np.float32)
    np.testing.assert_array_equal(resolve_targets([4, 0, 1], logits), [4, 0, 1])
    with pytest.raises(ValueError, match=r"one entry per image \(3\); got 2"):
        resolve_targets([1, 2], logits)
    with pytest.raises(ValueError, match=r"one entry per image \(3\); got 4"):
        resolve_targets([1, 2, 3, 4], logits)


def test_out_of_range_and_wrong_kinds_are_refused():
    logits = np.zeros((2, 5), dtype=np.float32)
    with pytest.raises(ValueError, match=r"\[0, 5\); got 5 for image 1"):
        resolve_targets([0, 5], logits)
    with pytest.raises(ValueError, match="got -1"):
        resolve_targets(-1, logits)
    with pytest.raises(TypeError):
        resolve_targets(True, logits)
    with pytest.raises(TypeError):
        resolve_targets(["a", "b"], logits)
    with pytest.raises(ValueError, match="whole numbers"):
        resolve_targets([0.5, 1.0], logits)


# ---------------------------------------------------------------- names and dispatch
@pytest.mark.parametrize(
    "alias, name",
    [("GradCAM++", "gradcam++"), ("grad_cam", "gradcam"), ("Score-CAM", "scorecam"),
     ("gradcampp", "gradcam++"), ("CAM", "cam")],
)
def test_method_names_are_forgiving_about_case_and_separators(alias, name):
    assert method_spec(alias).name == name


def test_unknown_method_lists_the_names():
    with pytest.raises(ValueError, match="must be one of .*'gradcam'.*got 'gradcam3'"):
        method_spec("gradcam3")
    assert set(METHODS) == {
        "cam", "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam",
        "scorecam", "ablationcam", "gradcamelementwise", "eigengradcam", "kpcacam", "fem",
        "randomcam", "finercam", "sscam", "iscam", "smoothgradcam++", "refinecam", "shapleycam",
        "fullgrad", "legrad",
    }


def test_explain_refuses_objects_that_are_not_models():
    with pytest.raises(TypeError, match="torch.nn.Module or a Keras model; got builtins.dict"):
        explain({}, np.zeros((1, 3, 8, 8)))
    with pytest.raises(ValueError, match="must be one of"):
        explain(object(), np.zeros((1, 3, 8, 8)), method="nope")


# ---------------------------------------------------------------- the pipeline on a fake session
class FakeSession:
    """A GAP + linear model whose target layer is its input: logits = W @ mean_hw(A) + b."""

    def __init__(self, activations, weights, bias, targets=None, input_size=(16, 16)):
        self.a = activations
        self.w = weights
        self.b = bias
        self.input_size = input_size
        self.logits = (activations.mean(axis=(2, 3)) @ weights.T + bias).astype(np.float32)
        self.targets = resolve_targets(targets, self.logits)
        self.calls = {"masked": 0, "ablated": 0}

    @property
    def x(self):  # the inputs (Smooth Grad-CAM++ adds noise to them): here, the layer itself
        return self.a

    @x.setter
    def x(self, value):
        self.a = value

    def capture(self, *, gradients, hvp=False):
        n, k, h, w = self.a.shape
        grads = None
        if gradients:  # d logit_c / dA = W[c] / (h*w) at every position
            grads = np.broadcast_to(
                (self.w[self.targets] / (h * w))[:, :, None, None], self.a.shape
            ).astype(np.float32)
        scores = self.logits[np.arange(n), self.targets]
        second = np.zeros_like(self.a) if hvp else None  # a logit is linear in A
        return [Capture(self.a, self.logits, self.targets, scores, grads, self.w, "input",
                        hvp=second)]

    def bias_gradients(self):
        # the model has no bias layer before A (its input): FullGrad's input term alone
        (cap,) = self.capture(gradients=True)
        return BiasGradients(self.a, cap.gradients, (), (), (), self.logits, self.targets,
                             cap.scores)

    def score_masked(self, index, masks):
        # A stand-in model on the masked input: the target weight times the mask's mean.
        self.calls["masked"] += 1
        return masks.mean(axis=(1, 2)) * float(self.w[self.targets[index]].sum())

    def score_ablated(self, layer, index, channels):
        self.calls["ablated"] += 1
        pooled = self.a[index].mean(axis=(1, 2))
        c = self.targets[index]
        full = float(pooled @ self.w[c] + self.b[c])
        return np.array([full - pooled[k] * self.w[c, k] for k in channels], dtype=np.float32)


@pytest.fixture
def session():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 4, 5, 5)).astype(np.float32)
    w = rng.normal(size=(6, 4)).astype(np.float32)
    b = rng.normal(size=6).astype(np.float32)
    return FakeSession(a, w, b)


def test_legrad_needs_a_session_with_attention(session):
    # the fake model has no attention (LeGrad's own tests: tests/adapters/test_legrad.py)
    with pytest.raises(TypeError, match="attention_gradients"):
        explain_session(session, "legrad")
    with pytest.raises(ValueError, match="attention probabilities"):
        raw_maps("legrad", session.capture(gradients=True)[0])


@pytest.mark.parametrize("method", sorted(m for m in METHODS if not METHODS[m].attention))
def test_every_method_gives_maps_in_unit_range_at_the_input_size(session, method):
    exp = explain_session(session, method, batch_size=3)
    assert isinstance(exp, Explanation)
    assert exp.maps.shape == (3, 16, 16) and exp.maps.dtype == np.float32
    assert exp.maps.min() >= 0.0 and exp.maps.max() <= 1.0
    assert exp.raw.shape == (3, 5, 5)
    np.testing.assert_array_equal(exp.targets, session.targets)
    # FullGrad's layers are the bias layers (the fake model has none), the others' the target
    assert exp.layers == (() if method == "fullgrad" else ("input",)) and exp.method == method


def test_gradcam_is_relu_cam_over_hw_on_a_gap_linear_head(session):
    cam = explain_session(session, "cam").raw
    grad = explain_session(session, "gradcam").raw
    np.testing.assert_allclose(np.maximum(grad, 0), np.maximum(cam, 0) / 25, rtol=1e-5, atol=1e-7)


def test_cam_map_is_the_min_max_of_the_upsampled_signed_map(session):
    from cam_core.resize import upsample

    exp = explain_session(session, "cam")
    up = upsample(exp.raw, (16, 16))
    lo = up.min(axis=(1, 2), keepdims=True)
    hi = up.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(exp.maps, (up - lo) / (hi - lo), atol=1e-6)


def test_perturbation_methods_go_through_the_session_in_chunks(session):
    explain_session(session, "scorecam", batch_size=3)
    assert session.calls["masked"] == 3 * 2  # 3 images x ceil(4 channels / 3)
    explain_session(session, "ablationcam", batch_size=4)
    assert session.calls["ablated"] == 3


def test_ablationcam_weights_are_the_relative_score_drops(session):
    from cam_core.methods import ablationcam_combine

    exp = explain_session(session, "ablationcam")
    n, k = session.a.shape[:2]
    pooled = session.a.mean(axis=(2, 3))
    c = session.targets
    base = session.logits[np.arange(n), c]
    ablated = base[:, None] - pooled * session.w[c]
    np.testing.assert_allclose(
        exp.raw, ablationcam_combine(session.a, ablated, base), rtol=1e-5, atol=1e-6
    )


def test_cam_without_classifier_weights_says_to_use_gradcam(session):
    caps = session.capture(gradients=False)
    session.capture = lambda gradients: [
        Capture(c.activations, c.logits, c.targets, c.scores, None, None, "x") for c in caps
    ]
    with pytest.raises(ValueError, match="method='gradcam'"):
        explain_session(session, "cam")


def test_boxes_follow_the_threshold(session):
    exp = explain_session(session, "gradcam")
    boxes = exp.boxes(0.2)
    assert len(boxes) == 3
    for b, m in zip(boxes, exp.maps):
        assert b.shape[1] == 4
        if m.max() > 0:
            assert len(b) == 1
            x0, y0, x1, y1 = b[0]
            assert m[y0:y1, x0:x1].max() == m.max()


# ---------------------------------------------------------------- the method registry
def test_every_method_carries_its_function():
    for name, spec in METHODS.items():
        assert callable(spec.function), name


def test_a_new_method_is_a_function_and_a_registry_entry(session, monkeypatch):
    # no dispatch table to edit: raw_maps and explain_session call what the spec carries
    from cam_core import methods as m

    def doubled(a, g):
        return 2 * m.gradcam(a, g)

    spec = MethodSpec("doubled", needs_gradients=True, relu=True, function=doubled)
    monkeypatch.setitem(METHODS, "doubled", spec)
    cap = session.capture(gradients=True)[0]
    np.testing.assert_array_equal(raw_maps("doubled", cap), 2 * raw_maps("gradcam", cap))
    np.testing.assert_array_equal(explain_session(session, "doubled").maps,
                                  explain_session(session, "gradcam").maps)


def test_raw_maps_refuses_a_method_that_needs_noisy_gradients(session):
    cap = session.capture(gradients=True)[0]
    with pytest.raises(ValueError, match="noisy copies of the input"):
        raw_maps("smoothgradcam++", cap)


def test_second_order_methods_need_a_session_with_hvp(session):
    class FirstOrder(FakeSession):
        def capture(self, *, gradients):
            return super().capture(gradients=gradients)

    old = FirstOrder(session.a, session.w, session.b)
    with pytest.raises(TypeError, match="shapleycam needs the Hessian-vector product"):
        explain_session(old, "shapleycam")
    with pytest.raises(ValueError, match="hvp=True"):
        raw_maps("shapleycam", old.capture(gradients=True)[0])
    # a logit after GAP + linear has no curvature: ShapleyCAM is Grad-CAM
    np.testing.assert_array_equal(explain_session(session, "shapleycam").maps,
                                  explain_session(session, "gradcam").maps)


# ------------------------------------------------------------------ the registry is the one list


def test_every_registered_function_is_exported():
    """A method is one function and one registry entry: the function (and its eigen_smooth terms)
    is public in ``cam_core.methods`` and the function at the top level too."""
    import cam_core
    from cam_core import methods as mod
    from cam_core.explain import METHODS

    public = {id(getattr(mod, n)): n for n in mod.__all__}
    top = {id(getattr(cam_core, n)) for n in cam_core.__all__}
    for spec in METHODS.values():
        assert id(spec.function) in public, f"{spec.name}: its function is not in cam_core.methods.__all__"
        assert id(spec.function) in top, f"{spec.name}: its function is not in cam_core.__all__"
        if spec.terms is not None:
            assert id(spec.terms) in public, f"{spec.name}: its terms are not in cam_core.methods.__all__"


def test_spellings_come_from_the_registry():
    from cam_core.explain import EIGEN_SMOOTH_METHODS, METHODS, method_spec

    for spec in METHODS.values():
        for alias in spec.aliases:
            assert method_spec(alias) is spec
            assert alias == alias.lower().replace("_", "").replace("-", "")
    assert method_spec("Grad-CAM_PlusPlus").name == "gradcam++"
    assert set(EIGEN_SMOOTH_METHODS) == {n for n, s in METHODS.items() if s.terms is not None}
