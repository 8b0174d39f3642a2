"""Small torch models with the shapes of third-party architectures (timm is not installable here).

- :class:`MiniViT`: timm-style ViT. A conv patch embedding (a 4-D map), a class token (and
  optional register tokens), ``blocks`` (an ``nn.Sequential`` of pre-norm :class:`Block`\\ s whose
  attention emits 4-D tensors: q/k norms ``(N, heads, T, head_dim)`` and the attention matrix
  ``(N, heads, T, T)`` through a Dropout module), a final ``norm`` and a head on the class token
  (``pool="token"``) or on the mean of the patch tokens (``pool="avg"``).
- :class:`ChannelsLastNet`: a Swin/ConvNeXt-like stage that works on ``(N, h, w, C)`` tensors
  (``nn.Linear`` and ``nn.LayerNorm`` on the last axis), a final ``norm`` and a head that pools
  over axes 1 and 2.
"""

from __future__ import annotations

import torch
from torch import nn

from tests.adapters.torch_models import seeded


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(dim // heads)
        self.k_norm = nn.LayerNorm(dim // heads)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = self.q_norm(qkv[0]), self.k_norm(qkv[1]), qkv[2]
        attn = self.attn_drop((q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5).softmax(-1))
        return self.proj((attn @ v).transpose(1, 2).reshape(n, t, d))


class Mlp(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MiniViT(nn.Module):
    def __init__(self, dim=8, heads=2, depth=2, patch=4, classes=5, registers=0, pool="token"):
        super().__init__()
        self.pool = pool
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1 + registers, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)
        self.prefix = 1 + registers

    def forward(self, x):
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], dim=1)
        t = self.norm(self.blocks(t))
        pooled = t[:, 0] if self.pool == "token" else t[:, self.prefix :].mean(dim=1)
        return self.head(pooled)


def mini_vit(seed: int = 11, **kw) -> MiniViT:
    return seeded(MiniViT(**kw), seed)


class ClStage(nn.Module):
    """A ConvNeXt-style block kept channels-last: depthwise conv on NCHW, then (N, h, w, C)."""

    def __init__(self, c_in: int, dim: int):
        super().__init__()
        self.down = nn.Conv2d(c_in, dim, 4, stride=4)
        self.mix = nn.Linear(dim, dim)
        self.act = nn.GELU()

    def forward(self, x):
        y = self.down(x).permute(0, 2, 3, 1)  # (N, h, w, C)
        return y + self.act(self.mix(y))


class ChannelsLastNet(nn.Module):
    """``stage`` emits (N, h, w, C); ``norm`` (LayerNorm on C); mean over (1, 2); ``head``."""

    def __init__(self, dim: int = 12, classes: int = 5):
        super().__init__()
        self.stage = ClStage(3, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        return self.head(self.norm(self.stage(x)).mean(dim=(1, 2)))


def channels_last_net(seed: int = 12, **kw) -> ChannelsLastNet:
    return seeded(ChannelsLastNet(**kw), seed)


class ChannelsFirstTwin(nn.Module):
    """The same computation as ``ChannelsLastNet`` with its stage output permuted to (N, C, h, w)
    by the module ``cf`` (an identity on values): the reference maps for the layout tests."""

    def __init__(self, net: ChannelsLastNet):
        super().__init__()
        self.net = net
        self.cf = nn.Identity()

    def forward(self, x):
        y = self.cf(self.net.stage(x).permute(0, 3, 1, 2))
        return self.net.head(self.net.norm(y.permute(0, 2, 3, 1)).mean(dim=(1, 2)))
