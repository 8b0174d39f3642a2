"""LeGrad (issue 15): the core's arithmetic by hand; the PyTorch adapter against the paper's
one-forward reading of the intermediate predictions (timm-style blocks) and against torch-cam
0.5's LeGrad (blocks with nn.MultiheadAttention); the Keras adapter (MultiHeadAttention blocks)
against the same reading written in TensorFlow; what both refuse."""

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
    heads on the class token; ``class_token=False``: no class token, the heads on the mean of the
    tokens (so that a plain Keras functional model can mirror it layer for layer)."""

    def __init__(self, dim=8, heads=2, depth=3, patch=4, classes=5, class_token=True):
        super().__init__()
        self.conv_proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.class_token = nn.Parameter(torch.randn(1, 1, dim) * 0.1) if class_token else None
        self.encoder = nn.Module()
        self.encoder.layers = nn.Sequential(*[_MhaBlock(dim, heads) for _ in range(depth)])
        self.encoder.ln = nn.LayerNorm(dim)
        self.heads = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.conv_proj(x).flatten(2).transpose(1, 2)
        if self.class_token is None:
            return self.heads(self.encoder.ln(self.encoder.layers(t)).mean(dim=1))
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
    pooled = keras.layers.GlobalAveragePooling2D()(inp)
    km = keras.Model(inp, keras.layers.Dense(2, name="head")(pooled))
    with pytest.raises(ValueError, match="no MultiHeadAttention"):
        ka.explain(km, np.zeros((1, 4, 4, 3), np.float32), method="legrad", layer="head")


def _fused_forward(self, x):
    n, t, d = x.shape
    qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
    out = torch.nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
    return self.proj(out.transpose(1, 2).reshape(n, t, d))


# ------------------------------------------------------------------------------------ Keras


def _keras_vit(depth=2, size=16, patch=4, dim=8):
    keras = pytest.importorskip("keras")
    L = keras.layers
    keras.utils.set_random_seed(5)
    inp = keras.Input((size, size, 3))
    t = L.Reshape(((size // patch) ** 2, dim))(L.Conv2D(dim, patch, strides=patch, name="patch")(inp))
    for i in range(depth):
        y = L.LayerNormalization(name=f"norm1_{i}")(t)
        t = L.Add(name=f"block_{i}")([t, L.MultiHeadAttention(2, dim // 2, name=f"attn_{i}")(y, y)])
    out = L.Dense(5, name="head")(L.GlobalAveragePooling1D()(L.LayerNormalization(name="norm")(t)))
    return keras.Model(inp, out)


def _keras_oracle(model, x, classes, blocks, depth):
    """The one-forward reading in TensorFlow: the blocks by hand, each MultiHeadAttention asked
    for its scores (the tensor its output is computed from), each block's output through the
    final norm, pooling and head."""
    tf = pytest.importorskip("tensorflow")
    get = model.get_layer
    x = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        t = model.layers[2](get("patch")(x))  # the Reshape
        outs, scores = [], []
        for i in range(depth):
            y = get(f"norm1_{i}")(t)
            o, sc = get(f"attn_{i}")(y, y, return_attention_scores=True)
            t = get(f"block_{i}")([t, o])
            outs.append(t)
            scores.append(sc)
        heads = [get("head")(tf.reduce_mean(get("norm")(z), axis=1)) for z in outs]
        picked = [tf.gather(h, classes, axis=1, batch_dims=0) for h in heads]
        s = [tf.reduce_sum(tf.linalg.diag_part(p)) for p in picked]
    total = 0
    for b in blocks:
        g = tape.gradient(s[b], scores[b]).numpy()
        total = total + np.maximum(g, 0).mean(axis=(1, 2))
    n, t = total.shape
    side = int(round(t ** 0.5))
    return total.reshape(n, side, side)


def test_keras_multihead_attention_blocks_match_the_one_forward_reading():
    pytest.importorskip("tensorflow")
    from cam_core.adapters import keras as ka

    model = _keras_vit(depth=3)
    x = np.random.default_rng(2).standard_normal((2, 16, 16, 3)).astype(np.float32)
    e = ka.explain(model, x, method="legrad", layer=["block_1", "block_2"], targets=[0, 4])
    ref = _keras_oracle(model, x, [0, 4], [1, 2], depth=3)
    np.testing.assert_allclose(e.raw, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())
    assert e.layers == ("block_1", "block_2") and e.maps.shape == (2, 16, 16)
    with pytest.raises(ValueError, match="last block given"):
        ka.explain(model, x, method="legrad", layer=["block_0", "block_1"], targets=[0, 4])


# --------------------------------------------------------------- torch vs Keras, mirrored ViT


def _keras_mirror(tm: _MhaViT, size=16, patch=4, dim=8, heads=2, depth=3, classes=5):
    """The same network in Keras, weights copied from ``tm``."""
    keras = pytest.importorskip("keras")
    L = keras.layers
    hd = dim // heads
    inp = keras.Input((size, size, 3))
    conv = L.Conv2D(dim, patch, strides=patch, name="patch")
    t = L.Reshape(((size // patch) ** 2, dim))(conv(inp))
    blocks = []
    for i in range(depth):
        ln1, ln2 = L.LayerNormalization(epsilon=1e-5), L.LayerNormalization(epsilon=1e-5)
        mha = L.MultiHeadAttention(heads, hd)
        fc1, fc2 = L.Dense(2 * dim, activation="gelu"), L.Dense(dim)
        y = ln1(t)
        t = L.Add()([t, mha(y, y)])
        t = L.Add(name=f"block_{i}")([t, fc2(fc1(ln2(t)))])
        blocks.append((ln1, mha, ln2, fc1, fc2))
    ln = L.LayerNormalization(epsilon=1e-5)
    head = L.Dense(classes)
    model = keras.Model(inp, head(L.GlobalAveragePooling1D()(ln(t))))

    def np_(p):
        return p.detach().numpy()

    conv.set_weights([np_(tm.conv_proj.weight).transpose(2, 3, 1, 0), np_(tm.conv_proj.bias)])
    for blk, (ln1, mha, ln2, fc1, fc2) in zip(tm.encoder.layers, blocks):
        ln1.set_weights([np_(blk.ln_1.weight), np_(blk.ln_1.bias)])
        ln2.set_weights([np_(blk.ln_2.weight), np_(blk.ln_2.bias)])
        a = blk.self_attention
        wq, wk, wv = np_(a.in_proj_weight).reshape(3, dim, dim)
        bq, bk, bv = np_(a.in_proj_bias).reshape(3, dim)
        mha.set_weights([
            wq.T.reshape(dim, heads, hd), bq.reshape(heads, hd),
            wk.T.reshape(dim, heads, hd), bk.reshape(heads, hd),
            wv.T.reshape(dim, heads, hd), bv.reshape(heads, hd),
            np_(a.out_proj.weight).T.reshape(heads, hd, dim), np_(a.out_proj.bias),
        ])
        fc1.set_weights([np_(blk.mlp[0].weight).T, np_(blk.mlp[0].bias)])
        fc2.set_weights([np_(blk.mlp[2].weight).T, np_(blk.mlp[2].bias)])
    ln.set_weights([np_(tm.encoder.ln.weight), np_(tm.encoder.ln.bias)])
    head.set_weights([np_(tm.heads.weight).T, np_(tm.heads.bias)])
    return model


def test_torch_and_keras_agree_on_a_mirrored_vit():
    from cam_core.adapters import keras as ka

    torch.manual_seed(3)
    tm = _MhaViT(class_token=False).eval()
    km = _keras_mirror(tm)
    x = np.random.default_rng(3).standard_normal((2, 3, 16, 16)).astype(np.float32)
    xk = x.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(km(xk)), tm(torch.tensor(x)).detach().numpy(),
                               rtol=1e-4, atol=1e-5)
    t = ta.explain(tm, x, method="legrad", layer=["encoder.layers.1", "encoder.layers.2"],
                   targets=[0, 3])
    k = ka.explain(km, xk, method="legrad", layer=["block_1", "block_2"], targets=[0, 3])
    assert np.abs(t.raw).max() > 0
    np.testing.assert_allclose(k.raw, t.raw, rtol=1e-4, atol=1e-4 * np.abs(t.raw).max())
    np.testing.assert_allclose(k.maps, t.maps, atol=1e-4)
