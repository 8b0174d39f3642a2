"""The torch adapter on third-party shapes: transformers, channels-last maps, constant maps,
in-place ops after the layer (issue 11, items 1, 2, 3 and 8)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from cam_core.adapters import torch as ta
from torch import nn

import cam_core
from tests.adapters import shape_models as sm


def batch(n=2, size=32, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- 1: transformers


@pytest.mark.parametrize(
    "kw, layer",
    [
        (dict(), "blocks.1.norm1"),  # class-token head: the last block's first norm
        (dict(registers=4), "blocks.1.norm1"),  # DINOv2-style register tokens
        (dict(pool="avg"), "blocks.1"),  # mean of the patch tokens: the last block's output
    ],
)
def test_vit_auto_layer_is_a_token_layer_not_attention(kw, layer):
    model = sm.mini_vit(**kw)
    x = batch()
    name, _ = ta.find_layer(model, inputs=x)
    assert name == layer
    with warnings.catch_warnings():
        warnings.simplefilter("error", cam_core.ConstantMapWarning)
        e = ta.explain(model, x, method="gradcam")
    assert e.layers == (layer,)
    assert not e.constant.any()
    # the map is the one of that layer given by name, prefix tokens dropped
    ref = ta.explain(model, x, method="gradcam", layer=layer)
    np.testing.assert_array_equal(e.maps, ref.maps)
    (cap,) = ta.capture(model, x, layer=layer)
    assert cap.activations.shape == (2, 8, 8, 8)  # (N, D, h, w): 64 patch tokens, prefix dropped


def test_vit_with_bigger_input_and_rectangular_input():
    model = sm.mini_vit()
    x = torch.randn(1, 3, 32, 48)
    name, _ = ta.find_layer(model, inputs=x)
    assert name == "blocks.1.norm1"
    (cap,) = ta.capture(model, x, layer=name)
    assert cap.activations.shape == (1, 8, 8, 12)


def test_attention_tensors_are_never_picked():
    """Attention internals ((N, heads, T, head_dim), (N, heads, T, T)) are never the layer."""

    class OneAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, 8, 4, stride=4)
            self.attn = sm.Attention(8, 2)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            t = self.embed(x).flatten(2).transpose(1, 2)
            return self.head(self.attn(t).mean(dim=1))

    model = sm.seeded(OneAttention(), 5)
    name, _ = ta.find_layer(model, inputs=batch())
    assert name == "attn"  # the attention block's token output, an 8 x 8 grid
    (cap,) = ta.capture(model, batch(), layer=name)
    assert cap.activations.shape == (2, 8, 8, 8)

    class AttnOnly(nn.Module):
        """The attention matrix (N, heads, T, T) is the only 4-D output that fits the input."""

        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3, 6)
            self.attn_drop = nn.Dropout(0.0)
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            t = self.proj(x[:, :, ::8, ::8].flatten(2).transpose(1, 2))  # (N, 16, 6) tokens
            q = t.reshape(len(t), 16, 2, 3).transpose(1, 2)  # (N, 2, 16, 3)
            attn = self.attn_drop((q @ q.transpose(-2, -1)).softmax(-1))  # (N, 2, 16, 16)
            return self.head(attn.mean(dim=(1, 2)))

    with pytest.raises(ValueError, match="no module of the model outputs a 4-D"):
        ta.find_layer(AttnOnly(), inputs=batch())


def test_torchvision_style_encoder_is_not_its_final_norm():
    """torchvision's ViT: ``encoder`` (a container holding ``layers`` and the final ``ln``) outputs
    the normed tokens; the layer found is inside the last EncoderBlock-like block, not the
    patch embedding ``conv_proj``."""

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(sm.Block(8, 2), sm.Block(8, 2))
            self.ln = nn.LayerNorm(8)

        def forward(self, x):
            return self.ln(self.layers(x))

    class TvViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_proj = nn.Conv2d(3, 8, 4, stride=4)
            self.class_token = nn.Parameter(torch.zeros(1, 1, 8))
            self.encoder = Encoder()
            self.heads = nn.Linear(8, 4)

        def forward(self, x):
            t = self.conv_proj(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.class_token.expand(len(t), -1, -1), t], dim=1)
            return self.heads(self.encoder(t)[:, 0])

    model = sm.seeded(TvViT(), 3)
    name, _ = ta.find_layer(model, inputs=batch())
    assert name == "encoder.layers.1.norm1"


# --------------------------------------------------------------------------- 2: channels-last


def test_channels_last_stage_is_detected_and_equals_the_channels_first_reference():
    model = sm.channels_last_net()
    twin = sm.ChannelsFirstTwin(model)
    x = batch()
    ref = ta.explain(twin, x, method="gradcam", layer="cf")
    for layer in ("stage", "norm"):
        e = ta.explain(model, x, method="gradcam", layer=layer)
        if layer == "stage":
            np.testing.assert_allclose(e.maps, ref.maps, atol=1e-6)
        (cap,) = ta.capture(model, x, layer=layer)
        assert cap.activations.shape == (2, 12, 8, 8)
    assert ta.find_layer(model, inputs=x)[0] == "norm"
    # declared explicitly: the same
    e = ta.explain(model, x, layer="stage", layout="channels_last")
    np.testing.assert_allclose(e.maps, ref.maps, atol=1e-6)
    e = cam_core.explain(model, x, layer="stage", layout="NHWC")
    np.testing.assert_allclose(e.maps, ref.maps, atol=1e-6)


@pytest.mark.parametrize("method", ["gradcam", "ablationcam", "eigencam"])
def test_channels_last_methods_match_reference(method):
    model = sm.channels_last_net()
    twin = sm.ChannelsFirstTwin(model)
    x = batch(1)
    ref = ta.explain(twin, x, method=method, layer="cf")
    e = ta.explain(model, x, method=method, layer="stage")
    np.testing.assert_allclose(e.maps, ref.maps, atol=1e-5)


def test_ambiguous_channels_last_is_resolved_by_the_next_module_or_refused():
    x = batch()
    # (N, 8, 8, 8) from a 32 x 32 input: both readings are 8 x 8 grids; the LayerNorm over the
    # last axis that takes the stage's output says channels-last
    model = sm.channels_last_net(dim=8)
    twin = sm.ChannelsFirstTwin(model)
    ref = ta.explain(twin, x, layer="cf", layout="channels_first")
    e = ta.explain(model, x, layer="stage")
    np.testing.assert_allclose(e.maps, ref.maps, atol=1e-6)

    class Bare(nn.Module):  # pooled in forward code, a linear of width 8 = K = h = w: no evidence
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.head(self.net.norm(self.net.stage(x).mean(dim=(1, 2))))

    bare = Bare(model)
    with pytest.raises(ValueError, match="layout='channels_last'"):
        ta.explain(bare, x, layer="net.stage")
    e = ta.explain(bare, x, layer="net.stage", layout="channels_last")
    e_first = ta.explain(bare, x, layer="net.stage", layout="channels_first")
    assert not np.allclose(e.maps, e_first.maps)
    with pytest.raises(ValueError, match="`layout` must be"):
        ta.explain(model, x, layout="NWHC")


def test_channels_first_models_keep_their_layout():
    """Conv outputs are channels-first by kind even when K == h == w."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    x = batch()
    for layer in ("0", "1"):
        (cap,) = ta.capture(model, x, layer=layer)
        with torch.no_grad():
            a = model[:2](x) if layer == "1" else model[0](x)
        np.testing.assert_allclose(cap.activations, a.numpy(), rtol=1e-6)


# --------------------------------------------------------------------------- 3: constant maps


def test_constant_maps_warn_once_and_are_marked():
    model = sm.mini_vit()  # class-token head: the last block's output gets no patch gradient
    x = batch(3)
    with pytest.warns(cam_core.ConstantMapWarning, match=r"3 of 3 gradcam maps .*images 0, 1, 2") as rec:
        e = ta.explain(model, x, method="gradcam", layer="blocks.1")
    assert len([w for w in rec if issubclass(w.category, cam_core.ConstantMapWarning)]) == 1
    assert e.constant.tolist() == [True, True, True]
    assert (e.maps == 0).all()


def test_a_class_the_model_rejects_everywhere_gives_a_constant_gradcam_map():
    """Grad-CAM of a class whose evidence is negative at every position: ReLU leaves nothing,
    the warning says why, and the raw map keeps the (negative) evidence."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        model[4].weight[1] = -1.0  # class 1: every (non-negative) activation counts against it
    x = batch(2)
    with pytest.warns(cam_core.ConstantMapWarning, match="may reject that class"):
        e = ta.explain(model, x, method="gradcam", layer="1", targets=[1, 1])
    assert e.constant.all() and (e.maps == 0).all()
    assert (np.asarray(e.raw) <= 0).all() and (np.asarray(e.raw) < 0).any()


def test_constant_map_of_one_image_is_named():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    x = batch(3)
    x[1] = 0  # a constant image: every position alike
    with torch.no_grad():
        model[0].weight.zero_()  # conv output = bias: constant for every image
    with pytest.warns(cam_core.ConstantMapWarning, match="images 0, 1, 2"):
        e = ta.explain(model, x, method="eigencam", layer="1")
    assert e.constant.all()
    model2 = sm.mini_vit(pool="avg")
    with warnings.catch_warnings():
        warnings.simplefilter("error", cam_core.ConstantMapWarning)
        e2 = ta.explain(model2, batch(2))
    assert e2.constant.tolist() == [False, False]


# --------------------------------------------------------------------------- 8: in-place ablation


class BnInplace(nn.Module):
    def __init__(self, inplace: bool):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU(inplace=inplace)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.relu(self.bn(self.conv(x)))), 1))


@pytest.mark.parametrize("ablation", ["auto", "forward"])
def test_ablationcam_with_inplace_relu_after_the_layer(ablation):
    torch.manual_seed(0)
    plain = sm.seeded(BnInplace(False), 7)
    inplace = BnInplace(True)
    inplace.load_state_dict(plain.state_dict())
    x = batch(2)
    ref = ta.explain(plain, x, method="ablationcam", layer="bn")
    with ta.TorchSession(inplace, x, layer="bn", ablation=ablation) as s:
        (cap,) = s.capture(gradients=False)
        before = cap.activations.copy()
        assert (before < 0).any()
        out = cam_core.explain_session(s, "ablationcam")
        np.testing.assert_array_equal(cap.activations, before)
    np.testing.assert_allclose(out.maps, ref.maps, atol=1e-6)
    np.testing.assert_allclose(
        ta.explain(inplace, x, method="ablationcam", layer="bn").maps, ref.maps, atol=1e-6
    )


# --------------------------------------------------------------------------- inputs


def test_nan_inf_and_complex_inputs_are_refused():
    model = sm.channels_last_net()
    x = batch(2)
    bad = x.clone()
    bad[1, 0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"`inputs` must be finite; got nan at index \(1, 0, 2, 3\)"):
        ta.explain(model, bad)
    bad[1, 0, 2, 3] = float("inf")
    with pytest.raises(ValueError, match="`inputs` must be finite; got inf"):
        ta.capture(model, bad.numpy())
    with pytest.raises(TypeError, match="`inputs` must be real; got dtype torch.complex64"):
        ta.explain(model, x.to(torch.complex64))


def test_ambiguous_shape_in_a_model_without_channels_last_code_is_channels_first():
    """K == h == w, a custom activation module, pooling in forward code: no module of the model
    works on a last axis, so the torch convention holds (no refusal for plain CNNs)."""

    class Swish(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=4, padding=1)
            self.act = Swish()
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))

    model = sm.seeded(Net(), 9)
    x = batch()
    (cap,) = ta.capture(model, x, layer="act")
    with torch.no_grad():
        ref = model.act(model.conv(x))
    np.testing.assert_allclose(cap.activations, ref.numpy(), rtol=1e-6)


def test_constant_flags_of_tensor_maps():
    """Explanation.constant also works when the maps are torch tensors (maps kept on a device)."""
    maps = torch.rand(3, 4, 4)
    maps[1] = 0
    e = cam_core.Explanation(maps=maps, raw=maps, logits=np.zeros((3, 2)),
                             targets=np.zeros(3, np.int64), method="gradcam")
    assert e.constant.tolist() == [False, True, False]
    assert isinstance(e.constant, np.ndarray)
