"""LeGrad (issue 15) through the PyTorch adapter: the core's arithmetic by hand, the adapter
against the paper's one-forward reading of the intermediate predictions (timm-style blocks), and
against torch-cam 0.5's LeGrad (blocks with nn.MultiheadAttention); what it refuses."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from cam_core.adapters import torch as ta  # noqa: E402
from torch import nn  # noqa: E402

from cam_core import methods as m  # noqa: E402
from tests.adapters.shape_models import mini_vit  # noqa: E402


def test_core_by_hand():
    # one image, one head, 3 keys (a class token and a 1 x 2 grid), 3 queries
    g = np.array([[[[1.0, -2.0, 3.0], [0.0, 4.0, -1.0], [2.0, 2.0, 0.0]]]])
    # ReLU, mean over the queries: keys (1, 2, 1); the class key dropped: (2, 1)
    np.testing.assert_allclose(m.legrad([g], grid=(1, 2), prefix=1), [[[2.0, 1.0]]])
    # two heads average, two layers add
    two = np.concatenate([g, 3 * g], axis=1)
    np.testing.assert_allclose(m.legrad([two, g], grid=(1, 2), prefix=1), [[[6.0, 3.0]]])
    with pytest.raises(ValueError, match="needs 4 patch keys"):
        m.legrad([g], grid=(2, 2), prefix=1)
    with pytest.raises(ValueError, match="empty"):
        m.legrad([], grid=(1, 2))
    with pytest.raises(ValueError, match="prefix"):
        m.legrad([g], grid=(1, 2), prefix=-1)


def _oracle(model, x, classes, blocks):
    """The paper's reading: one forward; each block's output through the final norm and the head
    (class token); the gradient with respect to that block's attention probabilities."""
    outs, attn = {}, {}
    hooks = [model.blocks[b].register_forward_hook(
        lambda mod, a, o, b=b: outs.__setitem__(b, o)) for b in blocks]
    hooks += [model.blocks[b].attn.attn_drop.register_forward_hook(
        lambda mod, a, o, b=b: attn.__setitem__(b, o)) for b in blocks]
    xt = torch.tensor(x, requires_grad=True)
    model(xt)
    for h in hooks:
        h.remove()
    total = 0
    for b in blocks:
        s = model.head(model.norm(outs[b])[:, 0])[torch.arange(len(classes)), classes]
        (g,) = torch.autograd.grad(s.sum(), attn[b], retain_graph=True)
        total = total + g.clamp(min=0).mean(dim=(1, 2))
    n, t = total.shape
    side = int(round((t - 1) ** 0.5))
    return total[:, 1:].reshape(n, side, side).detach().numpy()


def test_timm_style_blocks_match_the_one_forward_reading():
    model = mini_vit(depth=3).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    e = ta.explain(model, x, method="legrad", layer=["blocks.1", "blocks.2"], targets=[1, 3])
    ref = _oracle(model, x, [1, 3], [1, 2])
    np.testing.assert_allclose(e.raw, ref, rtol=1e-5, atol=1e-7 * np.abs(ref).max())
    assert e.maps.shape == (2, 16, 16) and e.layers == ("blocks.1", "blocks.2")
    # the last block alone differs: each block adds its own term
    one = ta.explain(model, x, method="legrad", layer="blocks.2", targets=[1, 3])
    np.testing.assert_allclose(one.raw, _oracle(model, x, [1, 3], [2]), rtol=1e-5, atol=1e-9)
    assert not np.allclose(one.raw, e.raw)


class _MhaBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.self_attention(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class _MhaViT(nn.Module):
    """torchvision's ViT layout in small: conv patches, a class token, encoder.layers, encoder.ln,
    heads on the class token."""

    def __init__(self, dim=8, heads=2, depth=3, patch=4, classes=5):
        super().__init__()
        self.conv_proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.class_token = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.encoder = nn.Module()
        self.encoder.layers = nn.Sequential(*[_MhaBlock(dim, heads) for _ in range(depth)])
        self.encoder.ln = nn.LayerNorm(dim)
        self.heads = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.conv_proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.class_token.expand(len(t), -1, -1), t], dim=1)
        return self.heads(self.encoder.ln(self.encoder.layers(t))[:, 0])


def test_multihead_attention_blocks_match_torchcam():
    methods = pytest.importorskip("torchcam.methods")
    if not hasattr(methods, "LeGrad"):
        pytest.skip("this torch-cam has no LeGrad")
    torch.manual_seed(0)
    model = _MhaViT().eval()
    x = torch.tensor(np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32))
    blocks = ["encoder.layers.1", "encoder.layers.2"]
    ours = ta.explain(model, x, method="legrad", layer=blocks, targets=[2])

    def projection(tokens):  # the model's own head on the class token
        return model.heads(model.encoder.ln(tokens)[:, 0])

    with methods.LeGrad(model, blocks, score_projection=projection) as extractor:
        scores = model(x)
        (peer,) = extractor(2, scores, normalized=False)
    # torch-cam averages the layers, cam_core adds them: the same map times 2
    np.testing.assert_allclose(ours.raw, 2 * peer.detach().numpy(), rtol=1e-5, atol=1e-9)


def test_what_legrad_refuses():
    model = mini_vit(depth=2).eval()
    x = np.zeros((1, 3, 16, 16), np.float32)
    with pytest.raises(ValueError, match="needs `layer`"):
        ta.explain(model, x, method="legrad")
    with pytest.raises(ValueError, match="nn.Sequential or nn.ModuleList"):
        ta.explain(model, x, method="legrad", layer="blocks.1.attn")
    fused = mini_vit(depth=2).eval()
    for blk in fused.blocks:  # attention computed inside one call: no module outputs it
        blk.attn.forward = _fused_forward.__get__(blk.attn)
    with pytest.raises(ValueError, match="fused_attn"):
        ta.explain(fused, x, method="legrad", layer="blocks.1")
    keras = pytest.importorskip("keras")
    from cam_core.adapters import keras as ka

    inp = keras.Input((4, 4, 3))
    km = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inp)))
    with pytest.raises(TypeError, match="PyTorch adapter"):
        ka.explain(km, np.zeros((1, 4, 4, 3), np.float32), method="legrad", layer="dense")


def _fused_forward(self, x):
    n, t, d = x.shape
    qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
    out = torch.nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
    return self.proj(out.transpose(1, 2).reshape(n, t, d))
