"""Framework adapters, installed as ``cam_core.adapters``.

Each adapter only talks to its framework: it records activations, gradients, logits and the
classifier weights, and hands NumPy :class:`cam_core.explain.Capture` objects to the core. Importing
this package imports no framework; ``cam_core.adapters.torch`` imports torch and
``cam_core.adapters.keras`` imports keras.
"""
