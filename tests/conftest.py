"""Shared test configuration: Hypothesis profiles and the location of the optional real data.

Hypothesis profiles: ``ci`` (the default: derandomised, so a CI run is repeatable, and no deadline,
because these machines are shared and timing is not what the properties test) and ``dev`` (more
examples, random). Pick one with ``HYPOTHESIS_PROFILE=dev``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parents[1]
IMAGENET_DIR = ROOT.parent / "shared" / "data" / "imagenet-val-1300"


def readonly(*arrays: np.ndarray):
    """Return copies of ``arrays`` with the write flag cleared (the core must only read)."""
    out = []
    for a in arrays:
        a = np.array(a, copy=True)
        a.setflags(write=False)
        out.append(a)
    return out[0] if len(out) == 1 else tuple(out)


@pytest.fixture
def imagenet_dir() -> Path:
    """The 1,300-image ImageNet subset; the test is skipped with a message when it is absent."""
    if not (IMAGENET_DIR / "metadata" / "image_ids.txt").is_file():
        pytest.skip(f"real data not found at {IMAGENET_DIR} (see ../shared/data/README)")
    return IMAGENET_DIR
