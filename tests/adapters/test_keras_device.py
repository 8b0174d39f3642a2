"""The Keras adapter's device path on the torch and JAX backends (each in a subprocess).

``core="device"`` hands the layer's backend tensors (channels-first, float32) to the core, which
computes on them; the maps equal those of ``core="numpy"`` (the host path) to float rounding for
every method, ``maps_on_device=True`` returns backend tensors, and the TensorFlow backend refuses
``core="device"``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import ROOT

keras = pytest.importorskip("keras")

_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import keras
    from cam_core.adapters import keras as ka

    L = keras.layers
    inp = keras.Input((10, 10, 3))
    x = L.Conv2D(5, 3, padding="same", activation="relu", name="c1")(inp)
    y = L.Conv2D(5, 3, padding="same", name="c2")(x)
    y = L.ReLU(name="feat")(L.Add(name="add")([x, y]))
    out = L.Dense(4, name="fc")(L.GlobalAveragePooling2D()(y))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    model.set_weights([rng.standard_normal(w.shape).astype("float32") * 0.3 for w in model.weights])
    x = rng.random((2, 10, 10, 3), dtype=np.float32)
    result = {}
    for method in %(methods)r:
        layer = "feat" if method == "cam" else ["c1", "feat"]
        kw = dict(method=method, layer=layer, targets=[1, 2], batch_size=8)
        ref = ka.explain(model, x, core="numpy", **kw)
        got = ka.explain(model, x, core="device", **kw)
        kept = ka.explain(model, x, core="device", maps_on_device=True, **kw)
        result[method] = {
            "diff": float(np.abs(got.maps - ref.maps).max()),
            "numpy": isinstance(got.maps, np.ndarray) and got.maps.dtype == np.float32,
            "kept": type(kept.maps).__module__.split(".")[0],
            "grad": bool(getattr(kept.maps, "requires_grad", False)),
            "kept_diff": float(np.abs(np.asarray(keras.ops.convert_to_numpy(kept.maps)) - ref.maps).max()),
        }
    print("RESULT" + json.dumps(result))
    """
)
_METHODS = ("cam", "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam",
            "scorecam", "ablationcam")


def _run(backend: str) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c",
                           _SCRIPT % {"methods": _METHODS}],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT"):])


@pytest.mark.parametrize("backend, module", [("torch", "torch"), ("jax", "jaxlib")])
def test_device_path_gives_the_numpy_paths_maps(backend, module):
    pytest.importorskip(backend)
    result = _run(backend)
    for method in _METHODS:
        row = result[method]
        assert row["numpy"], method
        assert row["diff"] < 1e-5, (method, row)
        assert row["kept"] == module, (method, row)
        assert row["kept_diff"] < 1e-5, (method, row)
        assert not row["grad"], (method, row)  # cut from the model's autograd graph


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the TensorFlow backend")
def test_tensorflow_backend_refuses_the_device_core():
    from cam_core.adapters import keras as ka

    inp = keras.Input((6, 6, 3))
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(3, 3, name="c")(inp)))
    model = keras.Model(inp, out)
    with pytest.raises(ValueError, match="core='device'"):
        ka.explain(model, np.zeros((1, 6, 6, 3), np.float32), layer="c", core="device")
    with pytest.raises(ValueError, match="`core`"):
        ka.explain(model, np.zeros((1, 6, 6, 3), np.float32), layer="c", core="gpu")
