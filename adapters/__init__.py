"""Framework adapters, installed as ``cam_core.adapters``.

Each adapter only talks to its framework: it records activations, gradients, logits and the
classifier weights, and hands NumPy :class:`cam_core.explain.Capture` objects to the core. Importing
this package imports no framework; ``cam_core.adapters.torch`` imports torch and
``cam_core.adapters.keras`` imports keras. ``cam_core.adapters.loading`` turns a path or module
name into a model (the command line's loader, the TorchScript replay and the torchrun helpers);
the core package ``cam_core`` itself holds no framework code (``tests/core/test_layering.py``).
"""
