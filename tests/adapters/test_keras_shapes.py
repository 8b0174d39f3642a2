"""The Keras adapter: clean errors on compiled calls, models freed after explain, layouts and
transformer-like models (issue 11, items 1, 2, 10 and 11)."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

keras = pytest.importorskip("keras")
ka = pytest.importorskip("cam_core.adapters.keras")

import cam_core  # noqa: E402

L = keras.layers


def small_model(size=8, k=4, classes=3, seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3))
    h = L.Conv2D(k, 3, padding="same", name="conv")(inp)
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(inp, L.Dense(classes, name="fc")(h))


def images(n=2, size=8, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 3)).astype(np.float32)


# --------------------------------------------------------------------------- 10: compiled calls


@pytest.mark.parametrize("method", ["gradcam", "cam", "scorecam"])
def test_nan_and_empty_inputs_are_clean_errors_on_every_call(method):
    model = small_model()
    x = images()
    ka.explain(model, x, method=method)  # eager first call
    ka.explain(model, x, method=method)  # compiled from here on
    bad = x.copy()
    bad[1, 2, 3, 0] = np.nan
    inf = x.copy()
    inf[0, 0, 0, 2] = np.inf
    for _ in range(3):
        with pytest.raises(ValueError, match=r"`inputs` must be finite; got nan at index \(1, 2, 3, 0\)"):
            ka.explain(model, bad, method=method)
        with pytest.raises(ValueError, match="`inputs` must be finite; got inf"):
            ka.explain(model, inf, method=method)
        with pytest.raises(ValueError, match="`inputs`: the batch is empty"):
            ka.explain(model, x[:0], method=method)
    fresh = small_model(seed=1)
    for _ in range(3):  # never traced with a good batch first
        with pytest.raises(ValueError, match="`inputs` must be finite"):
            ka.explain(fresh, bad, method=method)
        with pytest.raises(ValueError, match="`inputs`: the batch is empty"):
            ka.capture(fresh, x[:0])
    e = ka.explain(model, x, method=method)
    assert np.isfinite(e.maps).all()


# --------------------------------------------------------------------------- 11: no leak


def test_models_are_freed_after_explain():
    refs = []
    x = images()
    for i in range(6):
        if i % 2:
            model = keras.Sequential(
                [keras.Input((8, 8, 3)), L.Conv2D(4, 3), L.GlobalAveragePooling2D(), L.Dense(3)]
            )
        else:
            model = small_model(seed=i)
        for method in ("gradcam", "gradcam", "ablationcam"):  # eager, compiled, head
            ka.explain(model, x, method=method)
        refs.append(weakref.ref(model))
        del model
    gc.collect()
    alive = [i for i, r in enumerate(refs) if r() is not None]
    assert alive == []


# --------------------------------------------------------------------------- 2: layouts


def test_a_permuted_channels_first_layer_in_a_channels_last_model():
    """A ``Permute`` to (N, K, h, w) inside a channels-last model: read as channels-first (the
    only reading with the input's aspect), the same maps as the layer before it."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((16, 16, 3))
    a = L.Conv2D(12, 3, strides=2, padding="same", name="conv")(inp)
    p = L.Permute((3, 1, 2), name="to_cf")(a)  # (N, 12, 8, 8)
    h = L.Permute((2, 3, 1), name="back")(p)
    out = L.Dense(4, name="fc")(L.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    x = np.random.default_rng(1).random((2, 16, 16, 3)).astype(np.float32)
    ref = ka.explain(model, x, layer="conv")
    e = ka.explain(model, x, layer="to_cf")
    np.testing.assert_allclose(e.maps, ref.maps, atol=1e-6)
    (cap,) = ka.capture(model, x, layer="to_cf")
    assert cap.activations.shape == (2, 12, 8, 8)
    e2 = cam_core.explain(model, x, layer="to_cf", layout="channels_first")
    np.testing.assert_allclose(e2.maps, ref.maps, atol=1e-6)
    with pytest.raises(ValueError, match="`layout` must be"):
        ka.explain(model, x, layout="CHW")


# --------------------------------------------------------------------------- 1: transformers


def keras_vit(size=16, patch=4, dim=8):
    keras.utils.set_random_seed(4)
    inp = keras.Input((size, size, 3))
    t = L.Conv2D(dim, patch, strides=patch, name="patch_embed")(inp)
    t = L.Reshape(((size // patch) ** 2, dim))(t)
    for i in range(2):
        y = L.LayerNormalization(name=f"norm1_{i}")(t)
        y = L.MultiHeadAttention(2, dim // 2, name=f"attn_{i}")(y, y)
        t = L.Add()([t, y])
    t = L.LayerNormalization(name="norm")(t)
    out = L.Dense(3)(L.GlobalAveragePooling1D()(t))
    return keras.Model(inp, out)


def test_keras_transformer_auto_layer_is_refused_not_the_patch_embedding():
    model = keras_vit()
    x = images(1, 16)
    with pytest.raises(ValueError, match="looks like a transformer"):
        ka.explain(model, x)
    with pytest.raises(ValueError, match="looks like a transformer"):
        ka.find_layer(model)
    e = ka.explain(model, x, layer="patch_embed")  # explicit: the user's choice
    assert e.maps.shape == (1, 16, 16)
