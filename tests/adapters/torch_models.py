"""Tiny fixed-weight PyTorch models for the adapter tests (seeded, no training, CPU, milliseconds)."""

from __future__ import annotations

import torch
from torch import nn


def hand_net() -> nn.Sequential:
    """A model whose maps are computed by hand in the tests.

    ``0``: 1x1 conv, 1 -> 2 channels, weights (1, -1), no bias, so ``A0 = x`` and ``A1 = -x``;
    ``1``: global average pooling; ``2``: flatten; ``3``: linear with ``W = [[1, 2], [3, -1]]``,
    ``b = [0.5, 0]``.
    """
    conv = nn.Conv2d(1, 2, 1, bias=False)
    fc = nn.Linear(2, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))
        fc.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0]]))
        fc.bias.copy_(torch.tensor([0.5, 0.0]))
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc)


def seeded(model: nn.Module, seed: int) -> nn.Module:
    """Fill every parameter and BatchNorm statistic from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


class TinyNet(nn.Module):
    """``features`` (conv-BN-ReLU-conv, 8 channels at stride 2) -> ``act`` (in-place ReLU) -> GAP -> ``fc``.

    The head after ``features`` is not GAP + linear (the ReLU sits in between); after ``act`` it is.
    """

    def __init__(self, classes: int = 5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, stride=2, padding=1),
        )
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.act(self.features(x))), 1))


def tiny_net(classes: int = 5, seed: int = 0) -> TinyNet:
    return seeded(TinyNet(classes), seed)


class MaxHead(nn.Module):
    """Conv features, then global MAX pooling and a linear layer with ``in_features == K``."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.features(x).amax(dim=(2, 3)))


def max_head(seed: int = 1) -> MaxHead:
    return seeded(MaxHead(), seed)


class SideBranch(nn.Module):
    """``side`` runs in the forward pass but the logits do not depend on it."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.side = nn.Conv2d(3, 2, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        self.side(x)
        return self.fc(self.features(x).mean(dim=(2, 3)))


def side_branch(seed: int = 2) -> SideBranch:
    return seeded(SideBranch(), seed)


class SharedAct(nn.Module):
    """One ReLU module used twice (as EfficientNet's ``_swish``); the last 4-D map is its 2nd call."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        n = x.size(0)
        x = self.act(self.head(self.act(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)).view(n, -1))


def shared_act(seed: int = 3) -> SharedAct:
    return seeded(SharedAct(), seed)


class TokenNet(nn.Module):
    """A ViT-like model: 4x4 patches -> tokens (N, 1 + T, D) with a class token -> ``norm`` -> mean -> ``head``."""

    def __init__(self, dim: int = 6, classes: int = 4, patch: int = 4):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.mix = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1)
        t = self.norm(t + torch.tanh(self.mix(t)))
        return self.head(t.mean(dim=1))


def token_net(seed: int = 4) -> TokenNet:
    return seeded(TokenNet(), seed)


class LenNet(nn.Module):
    """Calls ``len`` on a tensor, which ``torch.fx`` cannot trace: Ablation-CAM must fall back."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)).reshape(len(x), -1))


def len_net(seed: int = 5) -> LenNet:
    return seeded(LenNet(), seed)
