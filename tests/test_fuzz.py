"""Fault injection over the public callables of cam_core, table-driven.

Every row of :data:`TABLE` is one public callable with a valid call (its arguments by name) and,
per argument, the ranks it accepts. Each argument is then replaced, one at a time, by a faulty
version of one of these classes:

- ``rank``: one axis fewer than the fewest accepted and one more than the most;
- ``dtype``: strings, complex numbers, Python objects;
- ``empty``: a zero-length first axis;
- ``nan`` / ``inf``: one non-finite entry;
- ``huge``: values near the float64 (or float32) limit;
- ``readonly``: a read-only array (must give the same result as a writable one);
- scalars: a str, None, a complex number, NaN, a bool where a number is expected.

The call must then raise ``ValueError`` or ``TypeError`` whose message names the argument
(```name``` in back-quotes, as every message of the library does), or return a result; for
``empty`` and ``huge`` a result is allowed (a float result must then be finite), for ``readonly``
the result must equal the writable one. Any other exception (IndexError, ZeroDivisionError,
NumPy's or Python's own messages) fails.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest

import cam_core as cc
from cam_core._io import atomic_write_bytes

RNG = np.random.default_rng(0)
A = RNG.standard_normal((2, 3, 4, 4)).astype(np.float32)
G = RNG.standard_normal((2, 3, 4, 4)).astype(np.float32)
MAPS = RNG.random((2, 8, 8))
MAP = RNG.random((8, 8))
MASKS = MAPS > 0.5
BOXES = np.array([[0, 0, 4, 4], [2, 1, 8, 6], [3, 3, 5, 7]], dtype=np.float64)
IMAGE = (RNG.random((8, 8, 3)) * 255).astype(np.uint8)


def _score_masked(n, masks):
    return np.asarray(masks, dtype=np.float64).mean(axis=(1, 2)) + 0.5


def _score_ablated(n, channels):
    return np.full(len(channels), 0.5) + 0.1 * np.asarray(channels)


def _call_update(acc_factory):
    def call(**kw):
        acc = acc_factory()
        acc.update(*kw.values())
        return acc.result()

    return call


def _explanation_boxes(threshold):
    exp = cc.Explanation(maps=MAPS.astype(np.float32), raw=MAPS, logits=np.zeros((2, 3)),
                         targets=np.zeros(2, np.int64), method="gradcam")
    return exp.boxes(threshold)


@dataclass
class Row:
    name: str
    fn: object  # called as fn(**args), positional order = dict order
    args: dict
    ranks: dict = field(default_factory=dict)  # array argument -> accepted ranks
    scalars: tuple = ()  # scalar (number) arguments
    finite: tuple | None = None  # arrays where NaN/Inf must be refused (default: all float ones)
    positional: bool = True  # pass args positionally (positional-only signatures)
    ok: tuple = ()  # (argument, fault) pairs whose result is a right answer (documented defaults)
    any_rank: tuple = ()  # arrays of any shape: no rank faults

    def call(self, args):
        if self.positional:
            return self.fn(*args.values())
        return self.fn(**args)


def mixed(fn, names_pos):
    def call(**kw):
        pos = [kw.pop(n) for n in names_pos]
        return fn(*pos, **kw)

    return call


TABLE = [
    Row("gradcam", cc.gradcam, {"activations": A, "gradients": G}, {"activations": (4,), "gradients": (4,)}),
    Row("gradcam_pp", cc.gradcam_pp, {"activations": A, "gradients": G}, {"activations": (4,), "gradients": (4,)}),
    Row("xgradcam", cc.xgradcam, {"activations": A, "gradients": G}, {"activations": (4,), "gradients": (4,)}),
    Row("layercam", cc.layercam, {"activations": A, "gradients": G}, {"activations": (4,), "gradients": (4,)}),
    Row("hirescam", cc.hirescam, {"activations": A, "gradients": G}, {"activations": (4,), "gradients": (4,)}),
    Row("eigencam", cc.eigencam, {"activations": A}, {"activations": (4,)}),
    Row("gradcam_elementwise", cc.gradcam_elementwise, {"activations": A, "gradients": G},
        {"activations": (4,), "gradients": (4,)}),
    Row("eigengradcam", cc.eigengradcam, {"activations": A, "gradients": G},
        {"activations": (4,), "gradients": (4,)}),
    Row("fem", cc.fem, {"activations": A}, {"activations": (4,)}),
    Row("shapleycam", cc.shapleycam, {"activations": A, "gradients": G, "hvp": G[::-1].copy()},
        {"activations": (4,), "gradients": (4,), "hvp": (4,)}),
    Row("guided_gradcam", cc.guided_gradcam,
        {"guided": RNG.standard_normal((2, 3, 8, 8)), "maps": MAPS}, {"guided": (4,), "maps": (3,)}),
    Row("kpcacam", cc.kpcacam, {"activations": A}, {"activations": (4,)}),
    Row("smoothgradcam_pp", cc.smoothgradcam_pp, {"activations": A, "gradient_samples": np.stack([G, G[::-1]])},
        {"activations": (4,), "gradient_samples": (5,)}),
    Row("cam", cc.cam, {"activations": A, "weights": RNG.standard_normal((5, 3)), "classes": np.array([1, 4])},
        {"activations": (4,), "weights": (2,), "classes": (1,)}),
    Row("scorecam_combine", cc.scorecam_combine, {"activations": A, "scores": RNG.random((2, 3))},
        {"activations": (4,), "scores": (2,)}),
    Row("ablationcam_combine", cc.ablationcam_combine,
        {"activations": A, "ablated_scores": RNG.random((2, 3)), "base_scores": np.array([0.7, 0.9])},
        {"activations": (4,), "ablated_scores": (2,), "base_scores": (1,)}),
    Row("scorecam", mixed(cc.scorecam, ["activations", "score_masked"]),
        {"activations": A, "score_masked": _score_masked, "input_size": (8, 8)},
        {"activations": (4,)}, positional=False),
    Row("ablationcam", mixed(cc.ablationcam, ["activations", "score_ablated", "base_scores"]),
        {"activations": A, "score_ablated": _score_ablated, "base_scores": np.array([0.7, 0.9])},
        {"activations": (4,), "base_scores": (1,)}, positional=False),
    Row("normalize", cc.normalize, {"maps": MAPS}, {"maps": (3,)}),
    Row("fuse", cc.fuse, {"maps": np.stack([MAPS, MAPS[::-1]])}, {"maps": (4,)}),
    Row("upsample", mixed(cc.upsample, ["maps"]), {"maps": MAPS[:, :4, :4], "size": (8, 8)},
        {"maps": (2, 3)}, ("size",), positional=False),
    Row("interpolation_matrix", cc.interpolation_matrix, {"in_size": 4, "out_size": 8}, {},
        ("in_size", "out_size")),
    Row("threshold_fraction", cc.threshold_fraction, {"maps": MAPS, "fraction": 0.2}, {"maps": (2, 3)},
        ("fraction",)),
    Row("threshold_otsu", cc.threshold_otsu, {"maps": MAPS}, {"maps": (2, 3)}),
    Row("threshold_percentile", cc.threshold_percentile, {"maps": MAPS, "q": 80.0}, {"maps": (2, 3)},
        ("q",)),
    Row("threshold_sweep", cc.threshold_sweep, {"maps": MAPS, "taus": np.array([0.1, 0.5])},
        {"maps": (2, 3), "taus": (1,)}),
    Row("binarize", mixed(cc.binarize, ["maps"]), {"maps": MAPS, "value": 0.3}, {"maps": (2, 3)},
        ("value",), positional=False, ok=(("value", "none"),)),  # None: the default 0.2
    Row("boxes_from_map", mixed(cc.boxes_from_map, ["map"]), {"map": MAP, "threshold": 0.2},
        {"map": (2,)}, ("threshold",), positional=False),
    Row("boxes_from_mask", cc.boxes_from_mask, {"mask": MASKS[0]}, {"mask": (2,)}, finite=()),
    Row("box_area", cc.box_area, {"boxes": BOXES}, {"boxes": (2,)}),
    Row("box_iou", cc.box_iou, {"boxes1": BOXES, "boxes2": BOXES[:2]}, {"boxes1": (2,), "boxes2": (2,)}),
    Row("best_iou", cc.best_iou, {"boxes1": BOXES, "boxes2": BOXES[:2]}, {"boxes1": (2,), "boxes2": (2,)}),
    Row("mask_iou", cc.mask_iou, {"masks1": MASKS, "masks2": MASKS[:1]}, {"masks1": (2, 3), "masks2": (2, 3)},
        finite=()),
    Row("convert_boxes", mixed(cc.convert_boxes, ["boxes"]), {"boxes": BOXES, "src": "xyxy", "dst": "xywh"},
        {"boxes": (2,)}, positional=False),
    Row("scale_boxes", cc.scale_boxes, {"boxes": BOXES, "from_size": (10, 8), "to_size": (20, 20)},
        {"boxes": (2,)}),
    Row("scale_boxes_wsol", cc.scale_boxes_wsol,
        {"boxes_inclusive_original": BOXES, "original_size": (10, 8), "target_size": (20, 20)},
        {"boxes_inclusive_original": (2,)}),
    Row("ground_truth", mixed(cc.ground_truth, ["boxes"]),
        {"boxes": BOXES, "original_size": (10, 8), "size": (20, 20)}, {"boxes": (2,)}, positional=False),
    Row("colormap", cc.colormap, {"maps": MAPS}, {"maps": (2, 3)}, any_rank=("maps",)),
    Row("overlay", cc.overlay, {"image": IMAGE, "map": MAP}, {"image": (2, 3), "map": (2,)}),
    Row("draw_boxes", cc.draw_boxes, {"image": IMAGE, "boxes": BOXES}, {"image": (2, 3), "boxes": (2,)}),
    Row("pixel_ranks", cc.pixel_ranks, {"maps": MAPS}, {"maps": (3,)}),
    Row("average_drop", cc.average_drop, {"base": np.array([0.8, 0.6]), "masked": np.array([0.5, 0.7])},
        {"base": (1,), "masked": (1,)}),
    Row("increase_in_confidence", cc.increase_in_confidence,
        {"base": np.array([0.8, 0.6]), "masked": np.array([0.5, 0.7])}, {"base": (1,), "masked": (1,)}),
    Row("deletion_insertion", mixed(cc.deletion_insertion, ["maps", "score_masked"]),
        {"maps": MAPS, "score_masked": _score_masked, "steps": 4}, {"maps": (3,)}, ("steps",),
        positional=False),
    Row("resolve_targets", cc.resolve_targets, {"targets": None, "logits": RNG.standard_normal((2, 5))},
        {"logits": (2,)}),
    Row("BoxAccuracy.update", _call_update(cc.BoxAccuracy), {"maps": MAPS, "gt_boxes": [BOXES[:1], BOXES[1:]]},
        {"maps": (3,)}, positional=False),
    Row("Localization.update", _call_update(cc.Localization),
        {"maps": MAPS, "gt_boxes": [BOXES[:1], BOXES[1:]], "correct": np.array([True, False])},
        {"maps": (3,), "correct": (1,)}, finite=("maps",), positional=False),
    Row("PxAP.update", _call_update(cc.PxAP), {"maps": MAPS, "masks": MASKS}, {"maps": (3,), "masks": (3,)},
        finite=("maps",), positional=False),
    Row("PointingGame.update", _call_update(cc.PointingGame), {"maps": MAPS, "gt_boxes": [BOXES[:1], BOXES[1:]]},
        {"maps": (3,)}, positional=False),
    Row("Explanation.boxes", _explanation_boxes, {"threshold": 0.2}, {}, ("threshold",)),
    Row("make_synthetic", lambda n: cc.make_synthetic(n, size=32), {"n": 2}, {}, ("n",)),
    Row("method_spec", cc.method_spec, {"method": "gradcam"}, {}),
]


# --------------------------------------------------------------------------- the faults


def _rank_faults(value, ranks):
    arr = np.asarray(value)
    out = []
    low, high = min(ranks), max(ranks)
    if low >= 1:
        smaller = arr
        while smaller.ndim > low - 1:
            smaller = smaller[0]
        out.append(("rank-", np.asarray(smaller)))
    bigger = arr
    while bigger.ndim < high + 1:
        bigger = bigger[None]
    out.append(("rank+", bigger))
    return out


def _array_faults(name, value, ranks, finite: bool):
    arr = np.asarray(value)
    faults = _rank_faults(arr, ranks) if ranks else []
    faults.append(("dtype-str", arr.astype(str)))
    faults.append(("dtype-complex", arr.astype(np.complex128) + 1j))
    obj = np.empty(arr.shape, dtype=object)
    obj.fill(None)
    faults.append(("dtype-object", obj))
    faults.append(("empty", arr[:0]))
    if finite:
        for label, bad in (("nan", np.nan), ("inf", np.inf)):
            f = arr.astype(np.float64).copy()
            f.flat[0] = bad
            faults.append((label, f))
        if arr.dtype.kind == "f":
            limit = np.finfo(arr.dtype).max
            faults.append(("huge", (np.sign(arr) + (arr == 0)) * limit * 0.9))
    ro = arr.copy()
    ro.flags.writeable = False
    faults.append(("readonly", ro))
    return faults


_SCALAR_FAULTS = [
    ("str", "0.5"), ("none", None), ("complex", 1j), ("nan", math.nan), ("inf", math.inf),
    ("bool", True), ("huge", 10**30), ("negative", -3),
]


def _cases():
    for row in TABLE:
        finite = row.finite
        for name, ranks in row.ranks.items():
            value = row.args[name]
            is_float = np.asarray(value).dtype.kind in "fiu"
            must_be_finite = is_float if finite is None else name in finite
            ranks = () if name in row.any_rank else ranks
            for label, bad in _array_faults(name, value, ranks, must_be_finite):
                yield pytest.param(row, name, label, bad, id=f"{row.name}-{name}-{label}")
        for name in row.scalars:
            for label, bad in _SCALAR_FAULTS:
                yield pytest.param(row, name, label, bad, id=f"{row.name}-{name}-{label}")
        for name in row.args:  # arguments of the wrong kind altogether
            if name in row.ranks or name in row.scalars:
                continue
            yield pytest.param(row, name, "kind", object(), id=f"{row.name}-{name}-kind")


# Faults after which a result (not an error) is a right answer.
_RESULT_OK = {"empty", "huge", "readonly", "rank-", "negative", "bool"}


def _finite_result(out) -> bool:
    items = out if isinstance(out, (list, tuple)) else [out]
    for item in items:
        for value in getattr(item, "__dict__", {}).values() if not isinstance(item, np.ndarray) else [item]:
            arr = np.asarray(value) if isinstance(value, (np.ndarray, float, int)) else None
            if arr is not None and arr.dtype.kind == "f" and not np.isfinite(arr).all():
                return False
        if isinstance(item, np.ndarray) and item.dtype.kind == "f" and not np.isfinite(item).all():
            return False
    return True


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if hasattr(a, "__dataclass_fields__"):
        return all(_same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    return a == b


@pytest.mark.parametrize("row, name, label, bad", list(_cases()))
def test_fault(row, name, label, bad):
    args = dict(row.args)
    args[name] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cc.ConstantMapWarning)
        warnings.simplefilter("error", RuntimeWarning)  # overflow / invalid inside NumPy: a defect
        try:
            out = row.call(args)
        except (ValueError, TypeError) as exc:
            msg = str(exc)
            assert f"`{name}" in msg, f"{type(exc).__name__} does not name `{name}`: {msg}"
            return
    assert label in _RESULT_OK or (name, label) in row.ok, f"fault {label!r} of `{name}` was accepted: {out!r:.200}"
    if label == "readonly":
        assert _same(out, row.call(dict(row.args)))
    else:
        assert _finite_result(out), f"fault {label!r} of `{name}` gave non-finite values"


def test_the_table_covers_every_public_callable():
    """A new public function must get a row (or be listed here with the reason it has none)."""
    no_row = {
        # classes whose callables are rows above (update/result, boxes) or plain records
        "Batch", "BoxAccuracy", "BoxAccuracyResult", "Capture", "ConstantMapWarning", "Dataset",
        "Explanation", "Localization", "LocalizationResult", "MethodSpec", "PerturbationCurves",
        "Photo", "PointingGame", "PointingGameResult", "PxAP", "PxAPResult", "Record",
        "SyntheticData",
        # constants
        "COLORMAPS", "FORMATS", "FUSIONS", "INTERPOLATIONS", "METHODS",
        # need a model, a session or files: the adapters' and CLI tests inject their faults
        "explain", "explain_session", "raw_maps", "iter_batches", "read_class_names",
        "read_csv_boxes", "read_voc", "read_wsol", "sample_photos",
        # issue 15's additions (model-in-the-loop or scalar-option functions): their bad inputs
        # are tested in tests/core/test_methods_more.py and test_road_randomisation.py; no fuzz
        # rows yet
        "finer_weights", "FinerTarget", "iscam", "sscam", "randomcam", "noisy_linear_impute",
        "road", "RoadCurves", "rank_correlation", "weighted_activations",
        # sequences of per-layer arrays (FullGrad's bias terms, LeGrad's blocks): their bad inputs
        # are tested in tests/core/test_methods_more.py and tests/adapters/test_legrad.py
        "fullgrad", "legrad",
        # records of what an adapter hands the core, and Guided Grad-CAM for a model
        "BiasGradients", "AttentionGradients", "explain_guided",
        # file writers: covered by test_file_writer_faults below
        "save_png", "image_grid",
        # the adapters' session protocol (a typing.Protocol), and the display pipeline, which
        # composes upsample, normalize and fuse (rows above) and runs in every explain test
        "Session", "display_maps",
    }
    names = {r.name.split(".")[0] for r in TABLE}
    missing = [n for n in cc.__all__ if n not in names and n not in no_row]
    assert missing == []


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda p: cc.save_png(IMAGE, ""), ValueError, "`path`"),
        (lambda p: cc.save_png(IMAGE, p), ValueError, "`path`"),
        (lambda p: cc.save_png(IMAGE, None), TypeError, "`path`"),
        (lambda p: cc.save_png(IMAGE.astype(str), p / "a.png"), TypeError, "`array`"),
        (lambda p: cc.save_png(IMAGE[:0], p / "a.png"), ValueError, "`array`"),
        (lambda p: cc.save_png(np.full((4, 4), np.nan), p / "a.png"), ValueError, "`array`"),
        (lambda p: atomic_write_bytes(p, b"x"), ValueError, "`path`"),
        (lambda p: atomic_write_bytes("", b"x"), ValueError, "`path`"),
        (lambda p: cc.image_grid([], ncols=2), ValueError, "`images`"),
        (lambda p: cc.image_grid([IMAGE], ncols=0), ValueError, "`ncols`"),
        (lambda p: cc.image_grid([IMAGE], ncols=1.5), (TypeError, ValueError), "`ncols`"),
        (lambda p: cc.image_grid([IMAGE.astype(str)], ncols=1), TypeError, "`image"),
    ],
)
def test_file_writer_faults(tmp_path, call, exc, match):
    with pytest.raises(exc, match=match):
        call(tmp_path)
    assert [p for p in tmp_path.iterdir()] == []  # nothing left behind


# --------------------------------------------------------------------------- the adapters

_INPUT_FAULTS = [
    ("rank-", lambda x: x[0]),
    ("rank+", lambda x: x[None]),
    ("dtype-str", lambda x: x.astype(str)),
    ("dtype-complex", lambda x: x.astype(np.complex64)),
    ("dtype-object", lambda x: np.full(x.shape, None, dtype=object)),
    ("empty", lambda x: x[:0]),
    ("nan", lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x).astype(x.dtype)),
    ("inf", lambda x: np.where(np.arange(x.size).reshape(x.shape) == 5, np.inf, x).astype(x.dtype)),
    ("huge", lambda x: np.full(x.shape, 3e38, np.float32)),
    ("readonly", lambda x: np.lib.stride_tricks.as_strided(x, writeable=False)),
]

_OPTION_FAULTS = [
    ("method", "nope"), ("method", 3), ("layer", 3), ("layer", "nope"), ("layer", []),
    ("targets", [0]), ("targets", [0, 99]), ("targets", "0"), ("targets", [0.5, 1]),
    ("targets", np.array([np.nan, 1.0])), ("upsample", "nope"), ("fuse", "nope"),
    ("batch_size", 0), ("batch_size", "8"), ("progress", "yes"), ("layout", "NWHC"),
]


def _adapter_check(run, name, label):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cc.ConstantMapWarning)
        try:
            out = run()
        except (ValueError, TypeError) as exc:
            assert f"`{name}" in str(exc), f"{type(exc).__name__} does not name `{name}`: {exc}"
            return None
    assert label in ("readonly",), f"fault {label!r} of `{name}` was accepted"
    return out


@pytest.mark.parametrize("label, fault", _INPUT_FAULTS, ids=[f[0] for f in _INPUT_FAULTS])
def test_torch_adapter_input_faults(label, fault):
    torch = pytest.importorskip("torch")
    from cam_core.adapters import torch as ta

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 3))
    x = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    for method in ("gradcam", "scorecam"):
        out = _adapter_check(lambda method=method: ta.explain(model, fault(x), method=method, layer="1"),
                             "inputs", label)
        if out is not None:
            assert _same(out.maps, ta.explain(model, x, method=method, layer="1").maps)
    _adapter_check(lambda: ta.capture(model, fault(x)), "inputs", label)


@pytest.mark.parametrize("name, value", _OPTION_FAULTS, ids=[f"{n}-{v!r}" for n, v in _OPTION_FAULTS])
def test_torch_adapter_option_faults(name, value):
    torch = pytest.importorskip("torch")

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 3))
    x = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    kw = {"method": "scorecam", "layer": "1", name: value}
    with pytest.raises((ValueError, TypeError), match=f"`{name}"):
        cc.explain(model, x, **kw)


@pytest.mark.parametrize("label, fault", _INPUT_FAULTS, ids=[f[0] for f in _INPUT_FAULTS])
def test_keras_adapter_input_faults(label, fault):
    keras = pytest.importorskip("keras")
    from cam_core.adapters import keras as ka

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    for _ in range(2):  # eager, then compiled
        res = _adapter_check(lambda: ka.explain(model, fault(x)), "inputs", label)
        if res is not None:
            assert _same(res.maps, ka.explain(model, x).maps)
