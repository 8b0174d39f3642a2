"""Helpers shared by the peer-parity tests (test_peer_parity, test_peer_parity_more): closeness
and correlation of maps, the peers' display, a small fixed-weight torch model and its capture."""

from __future__ import annotations

import numpy as np


def close(got, ref, tol=1e-5):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    scale = max(float(np.abs(ref).max()), 1e-30)
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol * scale)


def corr(x, y) -> float:
    return float(np.corrcoef(np.ravel(x), np.ravel(y))[0, 1])


def peer_display(raw):
    """ReLU, then pytorch-grad-cam's min-max (``x - min``, divided by ``1e-7 + max``)."""
    x = np.maximum(raw, 0).astype(np.float64)
    x = x - x.min(axis=(1, 2), keepdims=True)
    return x / (1e-7 + x.max(axis=(1, 2), keepdims=True))


def peer_model(torch):
    """conv (stride 1, the input's resolution) -> ReLU ("act") -> GAP -> linear: no resize."""
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 12, 3, padding=1)
            self.act = nn.ReLU()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(12, 4)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.act(self.conv(x))), 1))

    g = torch.Generator().manual_seed(0)
    model = Net().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    x = torch.randn(3, 3, 10, 10, generator=g)
    return model, x


def capture(model, x, targets):
    from cam_core.adapters import torch as ta

    (cap,) = ta.capture(model, x, layer="act", targets=targets)
    return cap
