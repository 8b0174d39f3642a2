"""Tiny models for the command-line tests, loaded as ``--model tests.cli_models:<factory>``.

The torch model is seeded, so every process that builds it gets the same weights: a GAP CNN whose
``features`` output (8x8 at a 32x32 input) is what the tests explain. Its first channel responds to
bright pixels, so a bright square on a dark background gives a map that peaks on the square.
"""

from __future__ import annotations

from collections import OrderedDict


def tiny_torch(num_classes: int = 4):
    """A seeded GAP CNN: ``features`` (conv-ReLU, stride-2 conv-ReLU) -> ``avgpool`` -> ``fc``."""
    import torch
    from torch import nn

    class TinyGap(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(OrderedDict(
                conv1=nn.Conv2d(3, 8, 3, padding=1),
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(8, 8, 3, stride=4, padding=1),
                relu2=nn.ReLU(),
            ))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, num_classes)

        def forward(self, x):
            return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))

    torch.manual_seed(0)
    model = TinyGap()
    with torch.no_grad():
        # channel 0 of both convolutions: the mean brightness of the neighbourhood
        model.features.conv1.weight[0] = 1.0 / 27.0
        model.features.conv1.bias[0] = -0.3
        model.features.conv2.weight[0] = 0.0
        model.features.conv2.weight[0, 0] = 1.0 / 9.0
        model.features.conv2.bias[0] = 0.0
        model.fc.weight[:, 0] = torch.linspace(2.0, -1.0, num_classes)
    return model.eval()


def tiny_torch_10():
    """The same network with ten classes."""
    return tiny_torch(10)


def not_a_model():
    """A factory that returns something that is not a model."""
    return "not a model"


def broken():
    """A factory that fails."""
    raise RuntimeError("weights are missing")


def tiny_keras(path, num_classes: int = 4):
    """Save a small Keras GAP CNN (32x32 input, layer ``conv``) to ``path`` (.keras)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, name="fc")(x)
    model = keras.Model(inputs, outputs, name="tiny_keras")
    model.save(path)
    return path


def slow_torch():
    """:func:`tiny_torch` with a pause in every forward pass (for the Ctrl-C test).

    With ``CAM_CORE_TEST_HOLD_WHEN=DIR`` in the environment, a forward pass that starts once a
    ``batch-*.npz`` file exists in ``DIR`` waits (up to two minutes) instead, so that a test can
    interrupt the run at a known point.
    """
    import os
    import time
    from pathlib import Path

    model = tiny_torch()
    hold_when = os.environ.get("CAM_CORE_TEST_HOLD_WHEN")

    def pause(module, args):
        if hold_when and any(Path(hold_when).glob("batch-*.npz")):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(0.2)

    model.register_forward_pre_hook(pause)
    return model


def tiny_torch_1000():
    """The same network with 1,000 classes (an ImageNet-sized head)."""
    return tiny_torch(1000)


def unpadded_torch():
    """A GAP CNN whose first convolution (5x5, no padding) needs inputs of at least 5 pixels."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 5), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).eval()


def fixed_size_torch():
    """:func:`tiny_torch` that, like a ViT with fixed position embeddings, takes 32x32 inputs only
    (an ``AssertionError`` otherwise, as timm raises)."""
    model = tiny_torch()

    def check(module, args):
        h, w = args[0].shape[-2:]
        assert (h, w) == (32, 32), f"Input height ({h}) doesn't match model (32)."

    model.register_forward_pre_hook(check)
    return model
