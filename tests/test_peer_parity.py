"""Parity with the peer libraries, each under its stated convention (cam_core.methods docstring).

- Grad-CAM++: pytorch-grad-cam adds ``eps = 1e-6`` to alpha's denominator
  (``gradcam_pp(..., eps=1e-6)``; with ``eps=0`` the formulas are the same); torch-cam 0.5's
  weights skip the division (``w_k = sum_ij g^2 ReLU(g)``).
- Eigen-CAM: pytorch-grad-cam keeps each image's SVD sign and applies a ReLU
  (``normalize(eigencam(..., sign="svd"), relu=True)``); ours fixes the sign.

The conventions are first checked against hand-written formulas of each peer (NumPy only, always
run); the peers themselves are compared when they are installed (skipped otherwise: torch-cam is a
test extra, pytorch-grad-cam needs torchvision). Maps are compared at the layer's resolution (the
peers resize after normalising, cam_core before), float32 within 1e-5 of the map's range unless
said otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest

from cam_core import cam as cam_method
from cam_core import eigencam, gradcam, gradcam_pp, hirescam, layercam, normalize, xgradcam
from tests.peer_helpers import capture, close, corr, peer_display, peer_model

PGC_EPS = 1e-6  # pytorch-grad-cam's GradCAMPlusPlus.get_cam_weights


def _layer(seed=0, shape=(3, 16, 6, 5), grad_scale=1.0):
    rng = np.random.default_rng(seed)
    a = np.maximum(rng.normal(size=shape), 0).astype(np.float32)  # post-ReLU activations
    g = (rng.normal(size=shape) * grad_scale).astype(np.float32)
    return a, g


# --------------------------------------------------------------------------- hand formulas


def _pgc_gradcam_pp(a, g, eps=PGC_EPS):
    """pytorch-grad-cam's Grad-CAM++ convention, written from its formula (float64)."""
    a, g = a.astype(np.float64), g.astype(np.float64)
    denom = 2 * g**2 + a.sum(axis=(2, 3))[:, :, None, None] * g**3 + eps
    alpha = np.where(g != 0, g**2 / np.where(denom == 0, 1, denom), 0)
    w = (np.maximum(g, 0) * alpha).sum(axis=(2, 3))
    return np.einsum("nk,nkhw->nhw", w, a)


def _torchcam_gradcam_pp(a, g):
    """torch-cam 0.5's Grad-CAM++ weights: the alpha division is skipped."""
    a, g = a.astype(np.float64), g.astype(np.float64)
    w = (g**2 * np.maximum(g, 0)).sum(axis=(2, 3))
    return np.einsum("nk,nkhw->nhw", w, a)


def _pgc_eigencam(a):
    """pytorch-grad-cam's Eigen-CAM: per image, the centred (hw, K) matrix projected on the first
    right singular vector of its SVD (sign as the SVD gives it), in float32."""
    out = []
    for img in a:
        x = img.reshape(img.shape[0], -1).T
        x = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=True)
        out.append((x @ vt[0]).reshape(img.shape[1:]))
    return np.asarray(out, dtype=np.float32)


def test_gradcam_pp_eps_is_pytorch_grad_cams_formula():
    a, g = _layer(1, grad_scale=3e-4)  # squared gradients near 1e-7: the epsilon dominates
    ours = gradcam_pp(a, g, eps=PGC_EPS)
    close(ours, _pgc_gradcam_pp(a, g))
    plain = gradcam_pp(a, g)
    close(plain, _pgc_gradcam_pp(a, g, eps=0.0))  # eps 0: the same formula
    # in this regime the convention matters: the two maps disagree
    assert min(corr(x, y) for x, y in zip(plain, ours)) < 0.99


def test_gradcam_pp_eps_barely_matters_for_large_gradients():
    a, g = _layer(2, grad_scale=1.0)
    close(gradcam_pp(a, g, eps=PGC_EPS), gradcam_pp(a, g), tol=1e-4)


def test_gradcam_pp_eps_is_checked():
    a, g = _layer(3)
    with pytest.raises(ValueError, match="`eps`"):
        gradcam_pp(a, g, eps=-1.0)
    with pytest.raises(TypeError, match="`eps`"):
        gradcam_pp(a, g, eps="1e-6")


def test_torchcam_gradcam_pp_convention_differs_from_the_paper():
    a, g = _layer(4, grad_scale=0.1)
    peer = _torchcam_gradcam_pp(a, g)
    assert not np.allclose(normalize(np.maximum(peer, 0)), normalize(gradcam_pp(a, g), relu=True),
                           atol=1e-3)


@pytest.mark.parametrize("shape", [(3, 16, 6, 5), (2, 8, 4, 4)])  # hw > K and hw <= K
def test_eigencam_svd_sign_is_pytorch_grad_cams_convention(shape):
    a, _ = _layer(5, shape=shape)
    peer = _pgc_eigencam(a)
    ours_svd = eigencam(a, sign="svd")
    close(ours_svd, peer, tol=1e-4)
    close(normalize(ours_svd, relu=True), peer_display(peer), tol=1e-4)
    # our default fixes the sign: the same projection up to one sign per image, and positively
    # correlated with the channel-mean map
    ours = eigencam(a)
    for o, p, img in zip(ours, peer, a):
        s = np.sign(np.sum(o * p))
        close(o, s * p, tol=1e-4)
        mean_map = img.mean(axis=0)
        assert np.sum(o * (mean_map - mean_map.mean())) >= 0


def test_eigencam_sign_is_checked():
    with pytest.raises(ValueError, match="`sign`"):
        eigencam(np.ones((1, 2, 3, 3)), sign="random")


# --------------------------------------------------------------------------- the peers


def test_torchcam_agrees_under_its_conventions():
    torch = pytest.importorskip("torch")
    methods = pytest.importorskip("torchcam.methods")
    model, x = peer_model(torch)
    targets = [0, 3, 1]
    cap = capture(model, x, targets)
    a, g = cap.activations, cap.gradients
    expected = {
        "CAM": cam_method(a, cap.weights, cap.targets),  # signed: torch-cam's CAM has no ReLU
        "GradCAM": np.maximum(gradcam(a, g), 0),
        "XGradCAM": np.maximum(xgradcam(a, g), 0),
        "LayerCAM": np.maximum(layercam(a, g), 0),
        "GradCAMpp": np.maximum(_torchcam_gradcam_pp(a, g), 0),  # its convention (no division)
    }
    for name, ref in expected.items():
        kwargs = {"fc_layer": "fc"} if name == "CAM" else {}
        with getattr(methods, name)(model, target_layer="act", input_shape=(3, 10, 10),
                                    **kwargs) as extractor:
            scores = model(x)
            (peer,) = extractor(targets, scores, normalized=False)
        close(peer.detach().numpy(), ref)
    # and HiResCAM equals CAM / (h w) on this GAP + linear head, which torch-cam's CAM gives
    close(hirescam(a, g) * 100, expected["CAM"])


def test_pytorch_grad_cam_agrees_under_its_conventions():
    torch = pytest.importorskip("torch")
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x = peer_model(torch)
    targets = [0, 3, 1]
    cap = capture(model, x, targets)
    a, g = cap.activations, cap.gradients
    peer_targets = [ClassifierOutputTarget(t) for t in targets]

    def peer(cls):
        with cls(model=model, target_layers=[model.act]) as extractor:
            return extractor(input_tensor=x, targets=peer_targets)

    close(peer(pgc.GradCAM), peer_display(gradcam(a, g)), tol=1e-4)
    close(peer(pgc.GradCAMPlusPlus), peer_display(gradcam_pp(a, g, eps=PGC_EPS)), tol=1e-4)
    # Eigen-CAM: the SVD's sign per image, then a ReLU; each image matches one of the two signs
    got = peer(pgc.EigenCAM)
    proj = eigencam(a)
    for n in range(len(a)):
        options = [peer_display(s * proj[n : n + 1])[0] for s in (1.0, -1.0)]
        assert min(np.abs(got[n] - o).max() for o in options) < 1e-4
