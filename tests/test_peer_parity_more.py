"""Parity of the methods of issue 15 with the peers, each under its stated convention.

- torch-cam 0.5 (installed here): IS-CAM with ``convention="torch-cam"`` (its mask scales start
  one step later than the paper's), Finer-CAM on Grad-CAM (the same contrastive score, gamma 0.6,
  three references), SS-CAM only in its noise-free limit (its noise comes from torch's generator,
  ours from NumPy's, so single runs cannot agree).
- pytorch-grad-cam (skipped when absent: it needs torchvision, which has no CPU build on the
  development machine; run there with grad-cam 1.5.7 and a stand-in ``torchvision`` package on
  ``PYTHONPATH``, as for issue 15): Grad-CAM element-wise, FEM (``convention=
  "pytorch-grad-cam"``: its map weights the activations by the masks' means) and Eigen-Grad-CAM
  (the SVD's sign per image, then a ReLU) under its display (ReLU, then ``x - min`` divided by
  ``1e-7 + max``); RefineCAM, ShapleyCAM (ReST) and FullGrad (its rescaling convention).

The model is tests/test_peer_parity.py's: a stride-1 convolution at the input's resolution, so
no resizing enters the comparison.
"""

from __future__ import annotations

import numpy as np
import pytest

from cam_core import methods as m
from tests.peer_helpers import capture, close, corr, peer_display, peer_model

TARGETS = [0, 3, 1]


def _setup():
    torch = pytest.importorskip("torch")
    model, x = peer_model(torch)
    cap = capture(model, x, TARGETS)
    return torch, model, x, cap


def _score_fn(torch, model, x):
    def score(n, masks):
        with torch.no_grad():
            logits = model(x[n : n + 1] * torch.as_tensor(np.asarray(masks))[:, None])
        return logits[:, TARGETS[n]].numpy()

    return score


def _torchcam(methods, name, model, targets, x, **kw):
    with getattr(methods, name)(model, target_layer="act", input_shape=(3, 10, 10),
                                **kw) as extractor:
        scores = model(x)
        (peer,) = extractor(targets, scores, normalized=False)
    return peer.detach().numpy()


def test_torchcam_iscam_under_its_convention():
    torch, model, x, cap = _setup()
    methods = pytest.importorskip("torchcam.methods")
    ours = m.iscam(cap.activations, _score_fn(torch, model, x), input_size=(10, 10),
                   samples=10, convention="torch-cam")
    peer = _torchcam(methods, "ISCAM", model, TARGETS, x, batch_size=64, num_samples=10)
    close(peer, np.maximum(ours, 0), tol=1e-4)
    # the paper's coefficients give another map
    paper = m.iscam(cap.activations, _score_fn(torch, model, x), input_size=(10, 10),
                    samples=10)
    assert not np.allclose(np.maximum(paper, 0), peer, atol=1e-4 * np.abs(peer).max())


def test_torchcam_finercam_on_gradcam():
    torch, model, x, cap = _setup()
    methods = pytest.importorskip("torchcam.methods")
    if not hasattr(methods, "FinerCAM"):
        pytest.skip("this torch-cam has no FinerCAM")
    from cam_core.adapters import torch as ta

    ours = ta.explain(model, x, method="finercam", layer="act", targets=TARGETS).raw
    with methods.FinerCAM(model, "act", input_shape=(3, 10, 10)) as extractor:
        scores = model(x)
        (peer,) = extractor(TARGETS, scores, normalized=False)
    close(peer.detach().numpy(), np.maximum(ours, 0), tol=1e-4)


def test_torchcam_sscam_in_the_noise_free_limit():
    torch, model, x, cap = _setup()
    methods = pytest.importorskip("torchcam.methods")
    ours = m.sscam(cap.activations, _score_fn(torch, model, x), input_size=(10, 10), samples=2,
                   std=1e-6)
    torch.manual_seed(0)
    peer = _torchcam(methods, "SSCAM", model, TARGETS, x, batch_size=64, num_samples=2, std=1e-6)
    for p, o in zip(peer, np.maximum(ours, 0)):
        assert corr(p, o) > 0.999


def test_pytorch_grad_cam_new_methods_under_its_conventions():
    torch, model, x, cap = _setup()
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    a, g = cap.activations, cap.gradients

    def peer(cls):
        with cls(model=model, target_layers=[model.act]) as extractor:
            return extractor(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in TARGETS])

    close(peer(pgc.GradCAMElementWise), peer_display(m.gradcam_elementwise(a, g)), tol=1e-4)
    close(peer(pgc.FEM), peer_display(m.fem(a, convention="pytorch-grad-cam")), tol=1e-4)
    assert np.abs(peer(pgc.FEM) - peer_display(m.fem(a))).max() > 0.1  # not the paper's map
    got = peer(pgc.EigenGradCAM)
    proj = m.eigengradcam(a, g)
    for n in range(len(a)):
        options = [peer_display(s * proj[n : n + 1])[0] for s in (1.0, -1.0)]
        assert min(np.abs(got[n] - o).max() for o in options) < 1e-4


def test_pytorch_grad_cam_refinecam_shapleycam_fullgrad():
    """RefineCAM (Grad-CAM++ with its eps = 1e-6 at two layers, multiplied), ShapleyCAM for the
    ReST score (one image per call: its ReST subtracts the batch's mean cross-entropy) and
    FullGrad with ``convention="pytorch-grad-cam"``: the same maps."""
    torch, model, x, cap = _setup()
    pgc = pytest.importorskip("pytorch_grad_cam")
    from cam_core.adapters import torch as ta
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST, ClassifierOutputTarget

    targets = [ClassifierOutputTarget(t) for t in TARGETS]
    ours = ta.explain(model, x, method="refinecam", layer=["conv", "act"], targets=TARGETS,
                      method_options={"eps": 1e-6}).maps
    peer = pgc.RefineCAM(model, [model.conv, model.act])(input_tensor=x, targets=targets)
    close(peer, ours, tol=1e-4)

    ours = ta.explain(model, x, method="shapleycam", layer="conv",
                      targets=ta.rest_target(TARGETS)).maps
    for n, t in enumerate(TARGETS):
        with pgc.ShapleyCAM(model=model, target_layers=[model.conv]) as cam:
            peer = cam(input_tensor=x[n:n + 1], targets=[ClassifierOutputReST(t)])
        close(peer, ours[n:n + 1], tol=1e-4)
    grad = ta.explain(model, x, method="gradcam", layer="conv", targets=ta.rest_target(TARGETS))
    assert np.abs(grad.maps - ours).max() > 1e-2  # the Hessian term counts here

    ours = ta.explain(model, x, method="fullgrad", targets=TARGETS,
                      method_options={"convention": "pytorch-grad-cam"}).maps
    with pgc.FullGrad(model=model, target_layers=[]) as cam:
        peer = cam(input_tensor=x, targets=targets)
    close(peer, ours, tol=1e-4)
    paper = ta.explain(model, x, method="fullgrad", targets=TARGETS).maps
    assert np.abs(paper - peer).max() > 1e-2  # the paper's rescaling is another map
