"""The methods of issue 15 in cam_core.methods: golden values by hand, properties, loop oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cam_core import methods as m
from cam_core.explain import weighted_activations
from cam_core.maps import normalize
from cam_core.resize import upsample
from tests.conftest import readonly

# The golden layer of tests/core/test_methods.py: one image, K=2, h=1, w=2
#   A_0 = [1, 2]    g_0 = [-1, 3]
#   A_1 = [-3, 1]   g_1 = [ 1, 0]
A = np.array([[[[1.0, 2.0]], [[-3.0, 1.0]]]])
G = np.array([[[[-1.0, 3.0]], [[1.0, 0.0]]]])


def _layer(seed=0, shape=(3, 6, 5, 4)):
    rng = np.random.default_rng(seed)
    a = np.maximum(rng.normal(size=shape), 0).astype(np.float32)
    g = rng.normal(size=shape).astype(np.float32)
    return readonly(a, g)


# --------------------------------------------------------------------------- golden, by hand


def test_gradcam_elementwise_golden():
    # g * A: channel 0 [-1, 6], channel 1 [-3, 0]; ReLU then sum: [0, 6]
    np.testing.assert_allclose(m.gradcam_elementwise(A, G), [[[0.0, 6.0]]], atol=1e-15)


def test_eigengradcam_golden():
    # P = g * A as positions x channels: pos0 (-1, -3), pos1 (6, 0); centred: -+(3.5, 1.5);
    # rank 1, so the projection is -+|(3.5, 1.5)| = -+sqrt(14.5); the channel-mean map of P,
    # (-2, 3), rises from pos0 to pos1, so pos1 is positive
    r = math.sqrt(14.5)
    np.testing.assert_allclose(m.eigengradcam(A, G), [[[-r, r]]], rtol=1e-12)


def test_kpcacam_linear_golden():
    # A as positions x channels: pos0 (1, -3), pos1 (2, 1); centred -+(0.5, 2): +-sqrt(4.25);
    # channel-mean map (-1, 1.5) rises: pos1 positive
    r = math.sqrt(4.25)
    np.testing.assert_allclose(m.kpcacam(A, kernel="linear"), [[[-r, r]]], rtol=1e-12)


def test_kpcacam_sigmoid_and_rbf_golden():
    # centred positions x0 = -(0.5, 2), x1 = (0.5, 2): <x0,x0> = <x1,x1> = 4.25, <x0,x1> = -4.25.
    # A 2x2 kernel [[a, b], [b, a]] centres to (a - b)/2 [[1, -1], [-1, 1]]: eigenvalue a - b,
    # eigenvector (1, -1)/sqrt(2), so the map is -+sqrt((a - b) / 2).
    # sigmoid, gamma = 1/K = 0.5, coef0 = 1: a = tanh(0.5 * 4.25 + 1), b = tanh(-0.5 * 4.25 + 1)
    a, b = math.tanh(3.125), math.tanh(-1.125)
    r = math.sqrt((a - b) / 2)
    np.testing.assert_allclose(m.kpcacam(A), [[[-r, r]]], rtol=1e-12)
    # rbf, gamma = 0.5: |x0 - x1|^2 = 1 + 16 = 17: a = 1, b = exp(-8.5)
    r = math.sqrt((1 - math.exp(-8.5)) / 2)
    np.testing.assert_allclose(m.kpcacam(A, kernel="rbf"), [[[-r, r]]], rtol=1e-12)
    # poly, degree 2, gamma 1, coef0 0: a = 4.25^2, b = 4.25^2 -> a - b = 0: an all-zero map
    np.testing.assert_allclose(m.kpcacam(A, kernel="poly", degree=2, gamma=1.0, coef0=0.0),
                               [[[0.0, 0.0]]], atol=1e-12)


def test_fem_golden():
    # one image, 2 channels, 2x2:
    #   A_0 = [[0, 0], [0, 8]]: mean 2, std sqrt((4 + 4 + 4 + 36) / 4) = sqrt(12) = 3.46
    #   A_1 = [[3, 0], [0, 1]]: mean 1, std sqrt((4 + 1 + 1 + 0) / 4) = sqrt(1.5) = 1.22
    a = np.array([[[[0.0, 0.0], [0.0, 8.0]], [[3.0, 0.0], [0.0, 1.0]]]])
    # k = 1: thresholds 5.46 and 2.22 -> masks (0,0,0,1) and (1,0,0,0), weights 2 and 1
    np.testing.assert_allclose(m.fem(a, k=1), [[[1.0, 0.0], [0.0, 2.0]]], atol=1e-15)
    # k = 2: thresholds 8.93 and 3.45: nothing passes
    np.testing.assert_allclose(m.fem(a), [[[0.0, 0.0], [0.0, 0.0]]], atol=1e-15)
    # k = 0: above the mean: (0,0,0,1) and (1,0,0,0), as for k = 1
    np.testing.assert_allclose(m.fem(a, k=0), m.fem(a, k=1))


def test_randomcam_is_a_fixed_random_weighting():
    w = m.random_weights(2, seed=3)
    np.testing.assert_array_equal(w, np.random.default_rng(3).uniform(-1, 1, 2))
    assert np.all(np.abs(w) <= 1)
    np.testing.assert_allclose(m.randomcam(A, seed=3), [[w[0] * A[0, 0, 0] + w[1] * A[0, 1, 0]]],
                               rtol=1e-12)
    a, _ = _layer(1)
    # the same weights for every image: the batch gives each image's own map
    whole = m.randomcam(a, seed=5)
    for i in range(len(a)):
        np.testing.assert_allclose(whole[i], m.randomcam(a[i : i + 1], seed=5)[0], rtol=1e-6)
    assert not np.allclose(m.randomcam(a, seed=5), m.randomcam(a, seed=6))


def test_finer_weights_golden():
    y = np.array([[1.0, 5.0, 4.5, 0.0, 4.9], [3.0, 2.0, 1.0, 0.0, -1.0]])
    # image 0, class 1 (y = 5): closest 4.9 (class 4), 4.5 (class 2) -> -0.6 / 2 each
    # image 1, class 0 (y = 3): closest 2 (class 1), 1 (class 2)
    w = m.finer_weights(y, [1, 0], references=2)
    np.testing.assert_allclose(w, [[0, 1, -0.3, 0, -0.3], [1, -0.3, -0.3, 0, 0]])
    # the score: 5 - 0.3 * (4.5 + 4.9) = 2.18 and 3 - 0.3 * 3 = 2.1
    np.testing.assert_allclose(m.FinerTarget([1, 0], references=2)(y), [2.18, 2.1])
    # None: the top-1 (class 1 and 0 here); references capped at C - 1
    np.testing.assert_allclose(m.finer_weights(y), m.finer_weights(y, [1, 0]))
    capped = m.finer_weights(y[:, :2], [0, 0], references=5, gamma=1.0)
    np.testing.assert_allclose(capped, [[1, -1], [1, -1]])
    # ties go to the lower class index
    np.testing.assert_allclose(m.finer_weights(np.array([[0.0, 1.0, 2.0]]), 1, references=1),
                               [[-0.6, 1, 0]])


def test_finer_target_is_differentiable_in_torch():
    torch = pytest.importorskip("torch")
    y = torch.tensor([[1.0, 5.0, 4.5, 0.0, 4.9]], requires_grad=True)
    score = m.FinerTarget(1, references=2)(y)
    (grad,) = torch.autograd.grad(score.sum(), y)
    np.testing.assert_allclose(grad.numpy(), [[0, 1, -0.3, 0, -0.3]], rtol=1e-6)


# ------------------------------------------------------------------------- properties


@pytest.mark.parametrize("shape", [(3, 6, 5, 4), (2, 30, 3, 3)])  # hw > K and hw <= K
def test_eigengradcam_is_eigencam_of_the_weighted_activations(shape):
    a, g = _layer(2, shape)
    np.testing.assert_allclose(m.eigengradcam(a, g), m.eigencam(a * g), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 6, 5, 4), (2, 30, 3, 3)])
def test_kpcacam_linear_kernel_is_eigencam(shape):
    a, _ = _layer(3, shape)
    scale = float(np.abs(m.eigencam(a)).max())
    np.testing.assert_allclose(m.kpcacam(a, kernel="linear"), m.eigencam(a), atol=1e-5 * scale)


def _sklearn_kpca(a, gamma):
    """scikit-learn's KernelPCA(n_components=1, kernel="sigmoid").fit_transform, written out:
    centred kernel, top eigenpair, eigenvector * sqrt(eigenvalue), largest entry positive."""
    out = []
    for img in a.astype(np.float64):
        x = img.reshape(img.shape[0], -1).T
        x = x - x.mean(axis=0)
        k = np.tanh(gamma * x @ x.T + 1.0)
        one = np.full_like(k, 1 / len(k))
        kc = k - one @ k - k @ one + one @ k @ one
        vals, vecs = np.linalg.eigh(kc)
        v = vecs[:, -1]
        v = v * np.sign(v[np.argmax(np.abs(v))])
        out.append((v * np.sqrt(vals[-1])).reshape(img.shape[1:]))
    return np.asarray(out)


def test_kpcacam_is_scikit_learns_projection_up_to_the_sign():
    a, _ = _layer(4)
    ours = m.kpcacam(a)
    ref = _sklearn_kpca(a, 1 / a.shape[1])
    for o, r in zip(ours, ref):
        s = np.sign(np.sum(o * r))
        np.testing.assert_allclose(o, s * r, atol=1e-5 * np.abs(r).max())


def test_fem_matches_a_loop():
    a, _ = _layer(5)
    ref = np.zeros(a.shape[:1] + a.shape[2:])
    for n in range(a.shape[0]):
        for k in range(a.shape[1]):
            ch = a[n, k].astype(np.float64)
            ref[n] += ch.mean() * (ch > ch.mean() + 2 * ch.std())
    np.testing.assert_allclose(m.fem(a), ref, rtol=1e-6)


@pytest.mark.parametrize(
    "name, fn",
    [("gradcam", m.gradcam), ("gradcam++", m.gradcam_pp), ("xgradcam", m.xgradcam),
     ("hirescam", m.hirescam), ("layercam", m.layercam),
     ("gradcamelementwise", m.gradcam_elementwise), ("finercam", m.gradcam)],
)
def test_weighted_activations_sum_to_the_methods_map(name, fn):
    a, g = _layer(6)
    terms = weighted_activations(name, a, g)
    assert terms.shape == a.shape
    np.testing.assert_allclose(terms.sum(axis=1), fn(a, g), rtol=1e-5, atol=1e-6)


def test_weighted_activations_of_cam_and_randomcam():
    a, _ = _layer(7)
    w = np.random.default_rng(0).normal(size=(4, a.shape[1])).astype(np.float32)
    cls = np.array([0, 3, 1])
    np.testing.assert_allclose(weighted_activations("cam", a, weights=w, classes=cls).sum(1),
                               m.cam(a, w, cls), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weighted_activations("randomcam", a, seed=2).sum(1),
                               m.randomcam(a, seed=2), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="eigen_smooth"):
        weighted_activations("scorecam", a)


# ------------------------------------------------------------- SS-CAM and IS-CAM (score_masked)


def _sum_score(seen):
    """A linear 'model': the score of image n times a mask is the mask's sum times (n + 1)."""

    def score(n, masks):
        masks = np.asarray(masks)
        seen.append(masks.shape[0])
        return masks.reshape(len(masks), -1).sum(axis=1) * (n + 1)

    return score


def _score_masks(a, size):
    return np.stack([normalize(upsample(img, size, method="bilinear")) for img in a])


def test_iscam_golden_coefficients_and_linear_score():
    np.testing.assert_allclose(m.iscam_coefficients(3), [0, 1 / 3, 1])  # (i - 1) i / (2 S)
    np.testing.assert_allclose(m.iscam_coefficients(3, "torch-cam"), [1 / 3, 1, 2])  # i (i+1) / 2S
    a, _ = _layer(8, (2, 3, 2, 2))
    size = (4, 4)
    # a linear score: s_k = mean_i(c_i) * sum(mask_k) * (n + 1); mean c = 4/9 for S = 3
    masks = _score_masks(a, size)
    s = masks.reshape(2, 3, -1).sum(-1) * (4 / 9) * np.array([[1.0], [2.0]])
    seen = []
    got = m.iscam(a, _sum_score(seen), input_size=size, samples=3, batch_size=4)
    np.testing.assert_allclose(got, m.scorecam_combine(a, s), rtol=1e-5, atol=1e-6)
    assert sum(seen) == 2 * 3 * 3 and max(seen) <= 4  # S * K masks per image, in chunks


def test_sscam_golden_noise_and_std_zero_is_scorecam():
    a, _ = _layer(9, (2, 3, 2, 2))
    size = (4, 4)
    masks = _score_masks(a, size)
    # with a linear score: s_k = (sum(mask_k) + std * mean_s sum(noise_sk)) * (n + 1)
    noise = np.array([[m.mask_noise(7, s, k, size).sum() for k in range(3)] for s in range(5)])
    s = (masks.reshape(2, 3, -1).sum(-1) + 0.5 * noise.mean(0)) * np.array([[1.0], [2.0]])
    got = m.sscam(a, _sum_score([]), input_size=size, samples=5, std=0.5, seed=7, batch_size=4)
    np.testing.assert_allclose(got, m.scorecam_combine(a, s), rtol=1e-4, atol=1e-6)
    # the chunking does not change the noise
    again = m.sscam(a, _sum_score([]), input_size=size, samples=5, std=0.5, seed=7, batch_size=64)
    np.testing.assert_allclose(again, got, rtol=1e-6)
    # std 0: Score-CAM, whatever the number of samples
    plain = m.scorecam(a, _sum_score([]), input_size=size)
    np.testing.assert_allclose(
        m.sscam(a, _sum_score([]), input_size=size, samples=2, std=0.0), plain, rtol=1e-6
    )


def test_new_methods_keep_dtype_and_leave_inputs_alone():
    a, g = _layer(10)
    for out in (m.gradcam_elementwise(a, g), m.eigengradcam(a, g), m.kpcacam(a), m.fem(a),
                m.randomcam(a)):
        assert out.dtype == np.float32 and out.shape == (3, 5, 4)
        assert np.all(np.isfinite(out))


def test_new_methods_run_on_torch_tensors_like_numpy():
    torch = pytest.importorskip("torch")
    a, g = _layer(11)
    ta, tg = torch.tensor(a), torch.tensor(g)
    pairs = [
        (m.gradcam_elementwise(ta, tg), m.gradcam_elementwise(a, g)),
        (m.eigengradcam(ta, tg), m.eigengradcam(a, g)),
        (m.kpcacam(ta), m.kpcacam(a)),
        (m.kpcacam(ta, kernel="rbf"), m.kpcacam(a, kernel="rbf")),
        (m.fem(ta), m.fem(a)),
        (m.randomcam(ta), m.randomcam(a)),
        (weighted_activations("gradcam++", ta, tg), weighted_activations("gradcam++", a, g)),
    ]
    for got, ref in pairs:
        assert isinstance(got, torch.Tensor)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())

    def score(n, masks):
        assert isinstance(masks, torch.Tensor)  # masks are built in the activations' library
        return masks.reshape(len(masks), -1).sum(1)

    np.testing.assert_allclose(
        m.iscam(ta, score, input_size=(8, 8), samples=2).numpy(),
        m.iscam(a, lambda n, x: np.asarray(x).reshape(len(x), -1).sum(1), input_size=(8, 8),
                samples=2),
        rtol=1e-5,
    )


def test_bad_arguments_are_refused():
    a, g = _layer(12)
    with pytest.raises(ValueError, match="`kernel`"):
        m.kpcacam(a, kernel="cosine")
    with pytest.raises(TypeError, match="`gamma`"):
        m.kpcacam(a, gamma="x")
    with pytest.raises(ValueError, match="`degree`"):
        m.kpcacam(a, degree=0)
    with pytest.raises(ValueError, match="`k`"):
        m.fem(a, k=float("nan"))
    with pytest.raises(ValueError, match="`seed`"):
        m.randomcam(a, seed=-1)
    with pytest.raises(ValueError, match="`gamma`"):
        m.finer_weights(np.zeros((1, 3)), gamma=-1)
    with pytest.raises(ValueError, match="`references`"):
        m.finer_weights(np.zeros((1, 3)), references=0)
    with pytest.raises(ValueError, match="two classes"):
        m.finer_weights(np.zeros((1, 1)))
    with pytest.raises(ValueError, match="`samples`"):
        m.iscam(a, lambda n, x: np.zeros(len(x)), input_size=4, samples=0)
    with pytest.raises(ValueError, match="`convention`"):
        m.iscam_coefficients(3, "pgc")
    with pytest.raises(ValueError, match="`std`"):
        m.sscam(a, lambda n, x: np.zeros(len(x)), input_size=4, std=-1.0)
    with pytest.raises(ValueError, match="shape of `activations`"):
        m.gradcam_elementwise(a, g[:, :2])


# ------------------------------------------------------------------------ Smooth Grad-CAM++


def test_smoothgradcam_pp_golden():
    # K = 1, h = 1, w = 2: A = (1, 2), sum 3; samples g_1 = (1, -1), g_2 = (3, 1):
    #   D1 = (2, 0), D2 = (5, 1), D3 = (14, 0)
    #   alpha = D2 / (2 D2 + 3 D3) = (5 / 52, 1 / 2); w = 5/52 * 2 + 1/2 * 0 = 5/26
    a = np.array([[[[1.0, 2.0]]]])
    gs = np.array([[[[[1.0, -1.0]]]], [[[[3.0, 1.0]]]]])
    np.testing.assert_allclose(m.smoothgradcam_pp(a, gs), [[[5 / 26, 10 / 26]]], rtol=1e-12)


def test_smoothgradcam_pp_of_one_sample_is_gradcam_pp():
    a, g = _layer(13)
    np.testing.assert_allclose(m.smoothgradcam_pp(a, g[None]), m.gradcam_pp(a, g), rtol=1e-6)
    np.testing.assert_allclose(m.smoothgradcam_pp(a, g[None], eps=1e-6),
                               m.gradcam_pp(a, g, eps=1e-6), rtol=1e-6)
    # identical samples change nothing
    np.testing.assert_allclose(m.smoothgradcam_pp(a, np.stack([g, g, g])), m.gradcam_pp(a, g),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="gradient_samples"):
        m.smoothgradcam_pp(a, g[None, :2])


def test_shapleycam_by_hand_and_its_checks():
    rng = np.random.default_rng(7)
    a = rng.standard_normal((2, 3, 4, 5))
    g = rng.standard_normal((2, 3, 4, 5))
    hv = rng.standard_normal((2, 3, 4, 5))
    w = (g - hv / 2).mean(axis=(2, 3))
    ref = np.einsum("nk,nkhw->nhw", w, a)
    np.testing.assert_allclose(m.shapleycam(a, g, hv), ref, rtol=1e-12)
    # no curvature: Grad-CAM
    np.testing.assert_array_equal(m.shapleycam(a, g, np.zeros_like(a)), m.gradcam(a, g))
    assert m.shapleycam(*(t.astype(np.float32) for t in (a, g, hv))).dtype == np.float32
    with pytest.raises(ValueError, match="`hvp` must have the shape"):
        m.shapleycam(a, g, hv[:, :2])
    bad = hv.copy()
    bad[1, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="hvp"):
        m.shapleycam(a, g, bad)


def test_fullgrad_by_loops_and_its_checks():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 8, 8))
    gx = rng.standard_normal((2, 3, 8, 8))
    gs = [rng.standard_normal((2, 4, 4, 4)), rng.standard_normal((2, 5, 8, 8))]
    bs = [rng.standard_normal(4), rng.standard_normal(5)]
    for conv, axes, eps in (("paper", (1, 2, 3), 1e-6), ("pytorch-grad-cam", (2, 3), 1e-7)):
        def psi(v, axes=axes, eps=eps):
            v = np.abs(v)
            v = v - v.min(axis=axes, keepdims=True)
            return v / (v.max(axis=axes, keepdims=True) + eps)

        ref = psi(gx * x).sum(1)
        for g, b in zip(gs, bs):
            ref = ref + upsample(psi(g * b[None, :, None, None]).sum(1), (8, 8))
        np.testing.assert_allclose(m.fullgrad(x, gx, gs, bs, convention=conv), ref, rtol=1e-12)
    # no bias layers: the input term alone
    np.testing.assert_allclose(m.fullgrad(x, gx, [], []), m.fullgrad(x, gx, gs[:0], bs[:0]))
    assert m.fullgrad(x.astype(np.float32), gx.astype(np.float32), gs, bs).dtype == np.float32
    with pytest.raises(ValueError, match="convention"):
        m.fullgrad(x, gx, gs, bs, convention="torch-cam")
    with pytest.raises(ValueError, match="one entry per layer"):
        m.fullgrad(x, gx, gs, bs[:1])
    with pytest.raises(ValueError, match=r"`biases\[1\]` must have one value per channel"):
        m.fullgrad(x, gx, gs, [bs[0], bs[0]])
    with pytest.raises(ValueError, match="`input_gradients` must have the shape"):
        m.fullgrad(x, gx[:, :2], gs, bs)
    with pytest.raises(ValueError, match="batch sizes differ"):
        m.fullgrad(x, gx, [gs[0][:1], gs[1]], bs)
    with pytest.raises(TypeError, match="sequence"):
        m.fullgrad(x, gx, 5, bs)


def test_fem_pytorch_grad_cam_convention_by_hand():
    # one channel over 4 positions: mean 1, std sqrt(12); with k = 1 only the 7 passes
    a = np.array([[[[-1.0, -1.0, -1.0, 7.0]]]])
    np.testing.assert_allclose(m.fem(a, k=1), [[[0, 0, 0, 1.0]]])  # mu * B
    np.testing.assert_allclose(m.fem(a, k=1, convention="pytorch-grad-cam"),
                               [[[-0.25, -0.25, -0.25, 1.75]]])  # mean(B) * A = A / 4
    with pytest.raises(ValueError, match="convention"):
        m.fem(a, convention="torch-cam")
