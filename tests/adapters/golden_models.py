"""The fixed-weight model of the golden tests, written in both frameworks (shared by
``test_methods_more_equivalence.py`` and ``test_methods_layers.py``; import torch / keras only
after the test module's ``importorskip``).

The target layer is the identity on a (1, 2, 1, 2) input, so the activations are the input:
  A_0 = [1, 2], A_1 = [-3, 1]
then global average pooling and a linear layer (no bias) with
  W = [[1, -1], [2, 1], [0, 1]]:  logits = W @ (1.5, -1) = (2.5, 2, -1)
Explained class 0: the gradient is W[0] / (h w) = (0.5, -0.5), uniform over positions.
"""

from __future__ import annotations

import numpy as np

X = np.array([[[[1.0, 2.0]], [[-3.0, 1.0]]]], dtype=np.float32)
W = np.array([[1.0, -1.0], [2.0, 1.0], [0.0, 1.0]], dtype=np.float32)


def torch_model():
    """The model in PyTorch (NCHW input), in eval mode."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Identity()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2, 3, bias=False)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.features(x)), 1))

    net = Net().eval()
    with torch.no_grad():
        net.fc.weight.copy_(torch.tensor(W))
    return net


def keras_model():
    """The model in Keras (NHWC input)."""
    import keras

    L = keras.layers
    inp = keras.Input((1, 2, 2))
    f = L.Activation("linear", name="features")(inp)
    out = L.Dense(3, use_bias=False, name="fc")(L.GlobalAveragePooling2D(name="pool")(f))
    model = keras.Model(inp, out)
    model.get_layer("fc").set_weights([W.T])
    return model
