"""The evaluation engine: localisation figures of CAM methods on an annotated dataset.

:func:`evaluate` runs a model over a :class:`cam_core.data.Dataset`, computes each method's map
for every image's TRUE class (ground-truth-known), and scores the maps against the ground-truth
boxes with the accumulators of :mod:`cam_core.metrics`: the threshold sweep (MaxBoxAcc,
MaxBoxAccV2) and top-1 / GT-known localisation at fixed thresholds. ``cam-core evaluate`` is a thin
layer over it (parsing, printing, exit codes); the benchmarks use it too.

**Pipeline.** The dataset is cut into batches ``[start, stop)`` of ``batch_size`` images. Images
are decoded, resized and preprocessed ahead of the model in a pool of threads (Pillow and NumPy
release the GIL); the model runs in the calling thread on its own device (a torch model where its
weights are, a Keras model on its backend's device); each (batch, method) pair's threshold sweeps
run in a pool of ``workers`` processes while the next batch runs on the model. The methods that
are functions of one capture (:func:`shares_capture`: CAM, the gradient methods, Eigen-CAM, ...)
share ONE forward (and backward) pass per batch, and only their raw maps travel to the workers,
which upsample and normalise them (:class:`RawMaps`, the NumPy pipeline of ``explain``: the same
maps bit for bit); Score-CAM, Ablation-CAM and the other methods that call the model again run
through :func:`cam_core.explain.explain` as before. Every batch is
scored as a whole by one process, exactly as a single-process run scores it, and the batches'
accumulator states are merged in dataset order, so the figures are identical (every counter, every
threshold) for any number of workers, shards or ranks. At most ``2 * workers`` (batch, method)
maps are in flight (and a few batches decoded ahead), so memory stays flat in the number of images.

**Ground truth** of a record: :func:`cam_core.boxes.ground_truth` (``protocol="native"``: the
record's half-open boxes scaled to the map's size; ``protocol="wsol"``: the reference's
inclusive-corner integer boxes); ``protocol="wsol"`` also resizes the maps bicubically, as the
reference does.

**Checkpoints.** With ``checkpoint=FOLDER`` each finished batch is saved atomically to
``FOLDER/batch-<start>-<stop>.npz`` (its accumulator states and per-image figures, see
:data:`SCHEMA`) and ``FOLDER/settings.json`` records what was computed; a later call with the same
settings skips the batches already there, so an interrupted run resumes to identical figures. A
folder of other settings, batch files without ``settings.json``, a batch file whose stored images
or settings digest disagree with its name, and a truncated file are refused with a ``ValueError``
(:class:`CheckpointError`) that names the file; ``restart=True`` starts over.

**Shards and ranks.** ``shard=(k, n)`` evaluates the ``k``-th of ``n`` contiguous runs of batches
and returns a partial :class:`Evaluation`; :func:`merge` combines partial evaluations (or the
files :func:`save_state` wrote) into the figures of the whole dataset. ``distributed=True`` does the
same over the ranks of an initialised ``torch.distributed`` process group (launched with
``torchrun``, any backend): each rank evaluates its shard, the states are gathered, and every rank
returns the whole dataset's :class:`Evaluation`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import multiprocessing as mp
import os
import signal
import sys
import time
import zipfile
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cam_core._errors import MODEL_ERRORS, explain_error
from cam_core._io import atomic_write_bytes, to_jsonable, write_json
from cam_core._progress import progress_bar
from cam_core._validate import as_size, to_numpy
from cam_core.boxes import best_iou, boxes_from_map, ground_truth
from cam_core.data import Dataset, iter_batches
from cam_core.explain import adapter_for, display_maps, explain, framework_of, method_spec, raw_maps
from cam_core.metrics import BoxAccuracy, Localization

__all__ = [
    "CheckpointError",
    "EvalSettings",
    "Evaluation",
    "MethodFigures",
    "PRESETS",
    "Preprocess",
    "SCHEMA",
    "RawMaps",
    "accumulators",
    "available_cores",
    "capture_raw_maps",
    "evaluate",
    "load_state",
    "merge",
    "missing_images",
    "save_state",
    "score_task",
    "shares_capture",
    "sweep_pool",
]

# name -> (scale, mean, std): the model input is (pixel * scale - mean) / std, per channel
PRESETS: dict[str, tuple[float, tuple[float, ...], tuple[float, ...]]] = {
    "lite": (1.0, (127.0,), (128.0,)),
    "imagenet": (1.0 / 255.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "unit": (1.0 / 255.0, (0.0,), (1.0,)),
    "raw": (1.0, (0.0,), (1.0,)),
}

#: The arrays of one batch (a checkpoint file, one part of a shard's state): ``index`` (the
#: dataset positions), ``labels``, ``predicted`` (top-1 class), ``layers``, ``digest`` (of the
#: settings) and, per method ``m``, ``m/<acc>.<counter>`` for each accumulator of
#: :func:`accumulators` (their :meth:`state`) and ``m/gallery.iou`` / ``m/gallery.box`` (each
#: image's IoU and largest box at the first fixed threshold).
SCHEMA = 2


class CheckpointError(ValueError):
    """A checkpoint folder or state file that cannot be used (other settings, damaged)."""


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------
# preprocessing and settings


@dataclass(frozen=True)
class Preprocess:
    """``(pixel * scale - mean) / std`` on RGB pixels resized to ``size`` = (height, width)."""

    name: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: tuple[int, int]

    def settings(self) -> dict:
        return {
            "preset": self.name,
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "size": list(self.size),
            "resize": "pillow bilinear, aspect ratio not kept",
            "channels": "RGB",
        }

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 images of any sizes -> float32 ``(N, H, W, 3)``."""
        h, w = self.size
        out = np.empty((len(images), h, w, 3), dtype=np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        for i, img in enumerate(images):
            if img.shape[:2] != (h, w):
                img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
            x = img.astype(np.float32)
            if self.scale != 1.0:
                x = x * np.float32(self.scale)
            out[i] = (x - mean) / std
        return out


def _as_preprocess(preprocess, size) -> Preprocess:

    if isinstance(preprocess, Preprocess):
        return preprocess
    size = as_size(size, "size")
    if isinstance(preprocess, str):
        if preprocess not in PRESETS:
            raise ValueError(f"`preprocess` must be one of {sorted(PRESETS)} or (scale, mean, "
                             f"std); got {preprocess!r}")
        return Preprocess(preprocess, *PRESETS[preprocess], size)
    try:
        scale, mean, std = preprocess
        scale = float(scale)
        mean = tuple(float(v) for v in np.atleast_1d(mean))
        std = tuple(float(v) for v in np.atleast_1d(std))
    except (TypeError, ValueError):
        raise TypeError("`preprocess` must be a preset name, a Preprocess or (scale, mean, std); "
                        f"got {preprocess!r}") from None
    if len(mean) not in (1, 3) or len(std) not in (1, 3) or any(s == 0 for s in std) or not all(
            math.isfinite(v) for v in (scale, *mean, *std)):
        raise ValueError("`preprocess` (scale, mean, std) needs finite numbers, 1 or 3 means and "
                         f"non-zero stds; got {preprocess!r}")
    return Preprocess("custom", scale, mean, std, size)


@dataclass(frozen=True)
class EvalSettings:
    """What an evaluation computes; a checkpoint is reused only under the same settings."""

    methods: tuple[str, ...]
    layer: object = None
    protocol: str = "native"
    batch_size: int = 32
    gallery: int = 4
    n_thresholds: int = 100  # numpy.arange(0, 1, 1 / n), the reference's grid
    fixed_thresholds: tuple[float, ...] = (0.2, 0.15)
    iou_thresholds: tuple[float, ...] = (0.3, 0.5, 0.7)

    def as_dict(self) -> dict:
        return {
            "methods": list(self.methods),
            "layer": self.layer,
            "protocol": self.protocol,
            "batch_size": self.batch_size,
            "gallery": self.gallery,
            "n_thresholds": self.n_thresholds,
            "fixed_thresholds": list(self.fixed_thresholds),
            "iou_thresholds": list(self.iou_thresholds),
        }


# --------------------------------------------------------------------------------------------
# the accumulator schema (shared with the benchmarks)


def _fixed_key(tau: float) -> str:
    return f"{round(tau * 100):02d}"


def accumulators(settings: EvalSettings) -> dict:
    """Fresh accumulators of one method: ``"sweep"`` (:class:`~cam_core.metrics.BoxAccuracy`)
    and ``"loc20"``, ``"loc15"``, ... (:class:`~cam_core.metrics.Localization` at each fixed
    threshold), all of ``settings.protocol``."""

    accs = {"sweep": BoxAccuracy(taus=settings.n_thresholds, deltas=settings.iou_thresholds,
                                 protocol=settings.protocol)}
    for tau in settings.fixed_thresholds:
        accs[f"loc{_fixed_key(tau)}"] = Localization(tau=tau, delta=0.5,
                                                     protocol=settings.protocol)
    return accs


@dataclass(frozen=True)
class RawMaps:
    """A method's raw maps of one batch, to be made into maps where they are scored.

    The engine sends these (``(N, h, w)`` per layer: a 7x7 map is 4,096 times smaller than its
    224x224 map) to the sweep workers instead of the maps, and each worker runs the display
    pipeline of :func:`cam_core.explain.explain_session` on them (:meth:`maps`: the paper's ReLU,
    upsampling to ``size`` by ``upsample``, min-max normalisation, the mean over layers, float32)
    with the same NumPy functions, so the maps, and so the figures, are identical to scoring
    ``explain(...).maps`` computed in NumPy.
    """

    raws: tuple[np.ndarray, ...]
    relu: bool
    size: tuple[int, int]
    upsample: str

    def maps(self) -> np.ndarray:
        return display_maps(self.raws, relu=self.relu, size=self.size, upsample=self.upsample)


def score_task(task) -> tuple[dict[str, np.ndarray], float]:
    """One (batch, method): the accumulators' counters and the per-image gallery figures.

    Runs in a worker process of :func:`sweep_pool` (or inline); public for the benchmark that
    measures the engine's scoring (``benchmarks/stage_evaluate.py``). ``task`` = (maps or
    :class:`RawMaps`, metric ground truth, native ground truth, correct, settings). Returns the
    arrays and the seconds spent (the display pipeline of raw maps included).
    """

    t0 = time.perf_counter()
    maps, gts, native, correct, settings = task
    if isinstance(maps, RawMaps):
        maps = maps.maps()
    out: dict[str, np.ndarray] = {}
    keep = [i for i, b in enumerate(native) if len(b)]  # an image without a box: no score
    for name, acc in accumulators(settings).items():
        if keep:
            sel, gt = maps[keep], [gts[i] for i in keep]
            if name == "sweep":
                acc.update(sel, gt)
            else:
                acc.update(sel, gt, correct[keep])
        out.update({f"{name}.{k}": v for k, v in acc.state().items()})
    # the gallery ranks images by the IoU of the largest component at the first fixed threshold
    tau = settings.fixed_thresholds[0]
    ious, first = [], []
    for m, gt in zip(maps, native):
        boxes = boxes_from_map(m, threshold=tau, mode="largest")
        ious.append(best_iou(boxes, gt))
        first.append(boxes[0] if len(boxes) else np.zeros(4, dtype=np.int64))
    out["gallery.iou"] = np.asarray(ious, dtype=np.float64)
    out["gallery.box"] = np.asarray(first, dtype=np.int64).reshape(-1, 4)
    return out, time.perf_counter() - t0


def _worker_init() -> None:
    """Sweep workers ignore Ctrl-C (the parent handles it and shuts them down)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# --------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class MethodFigures:
    """One method's figures.

    Attributes
    ----------
    metrics : dict
        "MaxBoxAcc", "MaxBoxAccV2", "best threshold", "mean IoU@best", "images with boxes", and
        per fixed threshold ``t`` (20, 15): "top-1 loc@t", "GT-known loc@t", "mean IoU@t".
    curves : dict
        "thresholds" and "box_acc" / "box_acc_all" (IoU criterion -> BoxAcc per threshold).
    iou, box : ndarray, shapes (N,) and (N, 4)
        Each image's IoU and largest box (half-open, the map's frame) at the first fixed
        threshold; the box is zeros when there is none.
    """

    metrics: dict
    curves: dict
    iou: np.ndarray
    box: np.ndarray


@dataclass(frozen=True)
class Evaluation:
    """The result of :func:`evaluate` (or :func:`merge`).

    Attributes
    ----------
    images : int
        Images evaluated (all of them, or a shard's).
    top1 : float
        Classification top-1 accuracy in percent.
    layers : tuple of str
    methods : dict of str to MethodFigures
        Empty for a partial evaluation whose images have no ground-truth box.
    index, labels, predicted : ndarray of int64, shape (N,)
        Dataset positions, true and predicted classes, in dataset order.
    settings : EvalSettings
    fingerprint : dict
        What a checkpoint or a shard must agree on (dataset digest, model, preprocessing,
        settings).
    total : int
        Images in the (limited) dataset; ``images < total`` for a shard.
    timings : dict
        Seconds spent decoding (summed over threads), in the model, in the sweeps (summed over
        workers), and in all (wall clock); not part of the figures.
    parts : tuple
        ``((start, stop, arrays), ...)``: the batches' states (see :data:`SCHEMA`), which
        :func:`merge` and :func:`save_state` use.
    """

    images: int
    top1: float
    layers: tuple[str, ...]
    methods: dict
    index: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    settings: EvalSettings
    fingerprint: dict
    total: int
    timings: dict = field(default_factory=dict, compare=False)
    parts: tuple = field(default=(), repr=False, compare=False)

    @property
    def complete(self) -> bool:
        """Whether every image of the dataset is in it (not a shard)."""
        return self.images == self.total

    def table(self) -> dict:
        """``columns``, ``rows`` (unrounded) and ``notes`` of the summary table."""
        return _table(self)


TABLE_COLUMNS = ("MaxBoxAcc", "MaxBoxAccV2", "top-1 loc@20", "GT-known loc@20", "top-1 loc@15",
                 "GT-known loc@15", "mean IoU@20")


def _table(ev: Evaluation) -> dict:
    settings = ev.settings
    cols = [c for c in TABLE_COLUMNS
            if all(c in r.metrics for r in ev.methods.values())]
    # full precision here; rounded once, where shown (rounding to 2 and then 1 digit would turn
    # 52.846 into 52.9)
    rows = [[m] + [float(r.metrics[c]) for c in cols] for m, r in ev.methods.items()]
    notes = (
        f"{ev.images} images; classification top-1 {ev.top1:.1f}%. "
        f"MaxBoxAcc and MaxBoxAccV2 ({settings.protocol} protocol) in percent: the best BoxAcc over "
        f"{settings.n_thresholds} thresholds at IoU 0.5 (largest box), and the mean over IoU "
        f"{', '.join(str(d) for d in settings.iou_thresholds)} of the best BoxAcc (all boxes). "
        "loc@20 / loc@15: the largest component at 20% / 15% of the map's maximum, IoU >= 0.5 "
        "(top-1 also needs the predicted class to be right); mean IoU at 20%. Maps are "
        "computed for the true class (ground-truth-known)."
    )
    return {"columns": ["method", *cols], "rows": rows, "notes": notes}


def _restore(acc, state: Mapping[str, np.ndarray], prefix: str, where: str):
    own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        return acc.load_state(own)
    except ValueError:
        raise CheckpointError(f"{where} was written by another version of cam_core or with other "
                              "settings; start over (restart)") from None


def figures(accs: dict, settings: EvalSettings) -> tuple[dict, dict]:
    """The figures of one method's accumulators (:func:`accumulators`): ``metrics`` ("MaxBoxAcc",
    "MaxBoxAccV2", "best threshold", "mean IoU@best", "images with boxes", and per fixed
    threshold "top-1 loc@20", "GT-known loc@20", "mean IoU@20", ...) and ``curves``
    ("thresholds"; "box_acc" and "box_acc_all": IoU criterion -> BoxAcc per threshold). The one
    schema of the engine, the command line and the benchmarks."""
    res = accs["sweep"].result()
    metrics = {
        "MaxBoxAcc": res.max_box_acc,
        "MaxBoxAccV2": res.max_box_acc_v2,
        "best threshold": res.best_tau,
        "mean IoU@best": res.mean_iou,
        "images with boxes": res.count,
    }
    for tau in settings.fixed_thresholds:
        key = _fixed_key(tau)
        loc = accs[f"loc{key}"].result()
        metrics[f"top-1 loc@{key}"] = loc.top1_loc
        metrics[f"GT-known loc@{key}"] = loc.gt_known_loc
        metrics[f"mean IoU@{key}"] = loc.mean_iou
    curves = {
        "thresholds": res.taus.tolist(),
        "box_acc": {f"{d:g}": res.box_acc[:, j].tolist() for j, d in enumerate(res.deltas)},
        "box_acc_all": {f"{d:g}": res.box_acc_all[:, j].tolist()
                        for j, d in enumerate(res.deltas)},
    }
    return metrics, curves


def _summarise(parts: list, settings: EvalSettings, fingerprint: dict, total: int,
               timings: dict | None = None) -> Evaluation:
    """Merge the batches' arrays (in dataset order) into the figures of every method."""
    parts = sorted(parts, key=lambda p: p[0])
    arrays = [p[2] for p in parts]
    index = np.concatenate([a["index"] for a in arrays]).astype(np.int64)
    labels = np.concatenate([a["labels"] for a in arrays]).astype(np.int64)
    predicted = np.concatenate([a["predicted"] for a in arrays]).astype(np.int64)
    methods = {}
    for method in settings.methods:
        merged = None
        for start, stop, a in parts:
            st = {k[len(method) + 1:]: v for k, v in a.items() if k.startswith(method + "/")}
            accs = {name: _restore(acc, st, name + ".", f"the state of batch [{start}, {stop})")
                    for name, acc in accumulators(settings).items()}
            merged = accs if merged is None else {k: merged[k].merge(v) for k, v in accs.items()}
        if merged["sweep"].state()["count"] == 0:
            continue
        metrics, curves = figures(merged, settings)
        methods[method] = MethodFigures(
            metrics=metrics, curves=curves,
            iou=np.concatenate([a[f"{method}/gallery.iou"] for a in arrays]),
            box=np.concatenate([a[f"{method}/gallery.box"] for a in arrays]).reshape(-1, 4))
    return Evaluation(
        images=int(len(index)),
        top1=float(100.0 * (predicted == labels).mean()) if len(index) else float("nan"),
        layers=tuple(str(v) for v in arrays[0]["layers"]) if arrays else (),
        methods=methods, index=index, labels=labels, predicted=predicted, settings=settings,
        fingerprint=fingerprint, total=total, timings=dict(timings or {}),
        parts=tuple(parts),
    )


# --------------------------------------------------------------------------------------------
# checkpoints


def _digest(fingerprint: dict) -> str:
    text = json.dumps(to_jsonable(fingerprint), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _fingerprint(dataset, pre: Preprocess, settings: EvalSettings, model_id) -> dict:
    digest = hashlib.sha256()
    for r in dataset:
        digest.update(f"{r.id}|{r.label}|{r.size}|{r.boxes.tolist()}\n".encode())
    return {
        "schema": SCHEMA,
        "dataset_sha256": digest.hexdigest(),
        "model": model_id,
        "preprocess": pre.settings(),
        **{k: v for k, v in settings.as_dict().items() if k != "gallery"},
    }


def _batch_file(folder: Path, start: int, stop: int) -> Path:
    return folder / f"batch-{start:07d}-{stop:07d}.npz"


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _read_npz(path: Path) -> dict[str, np.ndarray]:

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise CheckpointError(f"checkpoint file {path} is damaged ({text}); start over "
                              "(restart) to recompute it") from None


def _open_checkpoint(folder: Path, fingerprint: dict, bounds, *, restart: bool,
                     whole: bool = True) -> None:
    """Check (or reset) the checkpoint folder; remove temporary files of ``bounds`` left by a kill.

    ``settings.json`` is written with the first finished batch, so a run that fails before any
    batch leaves nothing behind.
    """
    meta = folder / "settings.json"
    own = [_batch_file(folder, a, b) for a, b in bounds]  # other shards' files are not touched
    if restart and folder.is_dir():
        for p in (folder.glob("batch-*.npz") if whole else own):  # a shard: its own files only
            p.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
    if folder.is_dir():
        for path in own:  # temporary files left by a kill (only this run's: others may write)
            for tmp in folder.glob(f".{path.name}.*.tmp"):
                tmp.unlink(missing_ok=True)
    if meta.is_file():
        try:
            old = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            old = None
        if old != to_jsonable(fingerprint):
            raise CheckpointError(
                f"{folder} holds a partial evaluation with other settings (dataset, model, "
                "methods, layer, protocol, size or batch size); use another folder or restart"
            )
    elif not restart and any(p.is_file() for p in own):
        raise CheckpointError(
            f"{folder} holds batch files but no settings.json, so the settings they were computed "
            "with are unknown; use another folder or restart"
        )


def _load_batch(folder: Path, start: int, stop: int, digest: str) -> dict[str, np.ndarray]:
    path = _batch_file(folder, start, stop)
    arrays = _read_npz(path)
    index = arrays.get("index")
    if index is None or not np.array_equal(index, np.arange(start, stop)):
        got = "no index" if index is None or index.size == 0 else (
            f"images [{int(index.min())}, {int(index.max()) + 1})")
        raise CheckpointError(f"checkpoint file {path} holds {got}, not [{start}, {stop}) as its "
                              "name says; start over (restart)")
    stored = arrays.get("digest")
    if stored is None or str(stored) != digest:
        raise CheckpointError(f"checkpoint file {path} was computed with other settings than "
                              f"{path.parent / 'settings.json'}; start over (restart)")
    return arrays


# --------------------------------------------------------------------------------------------
# the engine


def _batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _upsample_of(settings: EvalSettings) -> str:
    """The protocol's interpolation: bicubic for "wsol" (as the reference), else bilinear."""
    return "bicubic" if settings.protocol == "wsol" else "bilinear"


@contextlib.contextmanager
def _model_errors(x_nhwc: np.ndarray, settings: EvalSettings):
    """Turn the model's and the adapter's errors on a batch into one-line ValueError/TypeError
    messages that say which input of :func:`evaluate` to look at."""
    try:
        yield
    except MODEL_ERRORS as exc:
        msg = explain_error(
            exc, image_size=x_nhwc.shape[1:3], size_name="`size`",
            targets_name="the dataset's class labels",
            layer_name=f"`layer` {settings.layer!r}" if settings.layer is not None else None)
        raise (TypeError if isinstance(exc, TypeError) else ValueError)(msg) from exc


def explain_labels(model, x_nhwc: np.ndarray, labels, method: str, settings: EvalSettings):
    """``method``'s :class:`~cam_core.explain.Explanation` of each image's class in ``labels``,
    resized as ``settings.protocol`` wants (bicubic for "wsol", as the reference; else bilinear)."""
    inputs = adapter_for(model).inputs_from_nhwc(x_nhwc)
    with _model_errors(x_nhwc, settings):
        return explain(model, inputs, method=method, layer=settings.layer,
                       targets=[int(v) for v in labels], batch_size=settings.batch_size,
                       progress=False, upsample=_upsample_of(settings))


def shares_capture(method: str) -> bool:
    """True for the methods whose raw maps are a function of one capture of the batch
    (activations, gradients, logits, classifier weights) fused by the mean: no masked, ablated,
    noisy or re-targeted model calls, no second-order or every-bias pass (ShapleyCAM, FullGrad)
    and no fusion of their own (RefineCAM). :func:`evaluate` computes all of these from ONE
    capture per batch; the others through :func:`explain_labels`."""
    spec = method_spec(method)
    return (spec.perturbation is None and spec.target is None and not spec.noise
            and spec.fuse is None and not spec.second_order and not spec.all_biases
            and not spec.attention)


def capture_raw_maps(model, x_nhwc: np.ndarray, labels, methods, settings: EvalSettings):
    """The raw maps of several :func:`shares_capture` methods from one capture of the batch.

    One forward pass (and one backward pass when a method needs gradients) of ``x_nhwc`` for
    the classes ``labels``, where the model runs (a torch model's raw maps are computed on its
    device and copied to the host); the maps are made where they are scored
    (:class:`RawMaps`). Returns ``({method: RawMaps}, logits, layer names)``.
    """
    framework = framework_of(model)
    specs = [method_spec(m) for m in methods]
    adapter = adapter_for(model)
    inputs = adapter.inputs_from_nhwc(x_nhwc)
    options = {"core": "auto"} if framework == "torch" else {}
    size = tuple(int(v) for v in x_nhwc.shape[1:3])
    with _model_errors(x_nhwc, settings):
        captures = adapter.capture(model, inputs, layer=settings.layer,
                                   targets=[int(v) for v in labels],
                                   gradients=any(s.needs_gradients for s in specs), **options)
        out = {}
        for spec in specs:
            raws = tuple(to_numpy(raw_maps(spec.name, cap)) for cap in captures)
            out[spec.name] = RawMaps(raws, bool(spec.relu), size, _upsample_of(settings))
    logits = to_numpy(captures[0].logits)
    return out, logits, tuple(c.layer for c in captures)


def _decode(records, pre: Preprocess, settings: EvalSettings):
    """Read, resize and preprocess one batch (in a decoding thread)."""
    t0 = time.perf_counter()
    batch = next(iter_batches(Dataset(tuple(records)), batch_size=len(records), size=pre.size))
    x = pre(list(batch.images))
    gts = [ground_truth(r.boxes, r.size, pre.size, protocol=settings.protocol) for r in records]
    return batch, x, gts, time.perf_counter() - t0


def _check_shard(shard, name: str = "shard") -> tuple[int, int]:
    try:
        k, n = shard
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (k, n))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise TypeError(f"`{name}` must be a pair of ints (k, n); got {shard!r}")
    if not (n >= 1 and 0 <= k < n):
        raise ValueError(f"`{name}` must be (k, n) with 0 <= k < n; got {shard!r}")
    return int(k), int(n)


def _shard_bounds(bounds: list, k: int, n: int) -> list:
    lo, hi = (k * len(bounds)) // n, ((k + 1) * len(bounds)) // n
    return bounds[lo:hi]


def evaluate(model, dataset, *, methods=("cam", "gradcam"), protocol: str = "native",
             layer=None, preprocess="lite", size=224, batch_size: int = 32,
             limit: int | None = None, checkpoint=None, restart: bool = False,
             workers: int | None = 1, shard=None, distributed: bool = False,
             model_id=None, progress: bool | None = False, gallery: int = 4) -> Evaluation:
    """Localisation figures of CAM methods for a model on an annotated dataset.

    Parameters
    ----------
    model : torch.nn.Module or keras.Model
        Runs where it is (a torch model on its weights' device).
    dataset : cam_core.data.Dataset
        Maps are computed for each image's true class (ground-truth-known).
    methods : sequence of str
    protocol : {"native", "wsol"}
        See :mod:`cam_core.metrics`; "wsol" also resizes maps bicubically, as the reference.
    layer : str or list of str, optional
    preprocess : str, Preprocess or (scale, mean, std)
        A preset name (see :data:`PRESETS`) or the numbers of ``(pixel * scale - mean) / std``.
    size : int or (int, int)
        The model's input size; images are resized to it (Pillow bilinear).
    batch_size : int
    limit : int, optional
        Only the first ``limit`` images.
    checkpoint : path, optional
        A folder for per-batch checkpoints (resumable; see the module docstring).
    restart : bool
        Discard the checkpoint folder's batches first.
    workers : int or None
        Processes for the threshold sweeps; 1 sweeps in this process, None uses
        :func:`available_cores`. The figures do not depend on it.
    shard : (k, n), optional
        Evaluate only the k-th of n contiguous runs of batches (a partial result; :func:`merge`).
    distributed : bool
        Shard over the ranks of the initialised ``torch.distributed`` default group and gather:
        every rank returns the whole dataset's figures.
    model_id : JSON-able, optional
        Identifies the model in the checkpoint's settings (default: its class name).
    progress : bool or None
        A progress bar (images, images per second): True shows one, None only on a terminal
        (the package's policy, :mod:`cam_core._progress`).
    gallery : int
        Recorded in the settings only (the command line renders the gallery).

    Returns
    -------
    Evaluation
    """

    t_start = time.perf_counter()
    framework, names = _checked_call(model, dataset, methods, protocol, batch_size=batch_size,
                                     limit=limit, workers=workers, gallery=gallery)
    workers = available_cores() if workers is None else int(workers)
    pre = _as_preprocess(preprocess, size)
    settings = EvalSettings(methods=names, layer=layer, protocol=protocol,
                            batch_size=int(batch_size), gallery=int(gallery))
    if len(dataset) == 0:
        raise ValueError("`dataset` is empty")
    group, shard = _group_and_shard(distributed, shard)
    if model_id is None:
        model_id = {"class": f"{type(model).__module__}.{type(model).__qualname__}",
                    "framework": framework}
    # the whole dataset's: a run with a limit and a later full run share their batches
    fingerprint = _fingerprint(dataset, pre, settings, model_id)
    if limit is not None:
        dataset = dataset[: int(limit)]
    bounds = _batch_bounds(len(dataset), settings.batch_size)
    mine = bounds if shard is None else _shard_bounds(bounds, *shard)
    parts, timings = _run(model, dataset, pre, settings, mine, fingerprint,
                          checkpoint=None if checkpoint is None else Path(checkpoint),
                          restart=restart, workers=workers, progress=progress,
                          shard_of=len(bounds) if shard is not None else None)
    if group is not None:
        gathered = group.gather(parts)
        parts = [p for rank_parts in gathered for p in rank_parts]
    timings["total"] = time.perf_counter() - t_start
    return _summarise(parts, settings, fingerprint, len(dataset), timings)


def _checked_call(model, dataset, methods, protocol, **ints) -> tuple[str, tuple[str, ...]]:
    """:func:`evaluate`'s arguments checked: the model's framework and the methods' names."""
    framework = framework_of(model)
    if framework is None:
        raise TypeError(f"`model` must be a torch.nn.Module or a Keras model; got "
                        f"{type(model).__module__}.{type(model).__qualname__}")
    if not isinstance(dataset, Dataset):
        raise TypeError(f"`dataset` must be a cam_core.data.Dataset; got "
                        f"{type(dataset).__name__}")
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    names = tuple(dict.fromkeys(method_spec(m).name for m in methods))
    if not names:
        raise ValueError("`methods` must name at least one method; got none")
    if protocol not in ("native", "wsol"):
        raise ValueError(f"`protocol` must be 'native' or 'wsol'; got {protocol!r}")
    for name, low in (("batch_size", 1), ("limit", 1), ("workers", 1), ("gallery", 0)):
        value = ints[name]
        if value is None and name in ("limit", "workers"):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"`{name}` must be an int; got {type(value).__name__}")
        if value < low:
            raise ValueError(f"`{name}` must be at least {low}; got {value}")
    return framework, names


def _group_and_shard(distributed: bool, shard):
    """The ``torch.distributed`` group (None unless ``distributed``) and the checked shard
    ``(k, n)`` this process evaluates (None: every batch)."""
    group = None
    if distributed:
        if shard is not None:
            raise ValueError("give `shard` or `distributed=True`, not both")
        # torch.distributed: imported only when asked for (torch is an optional extra)
        from cam_core.adapters.torch import DistributedGroup

        group = DistributedGroup()
        shard = (group.get_rank(), group.get_world_size())
    if shard is not None:
        shard = _check_shard(shard)
    return group, shard


def _run(model, dataset, pre, settings, bounds, fingerprint, *, checkpoint, restart, workers,
         progress, shard_of):
    """Evaluate the batches ``bounds``: decoding ahead in threads, the model here, the sweeps in
    worker processes, finished batches to the checkpoint; returns their parts and the time
    shares."""
    digest = _digest(fingerprint)
    in_memory = _finished_batches(checkpoint, fingerprint, bounds, digest, restart=restart,
                                  whole=shard_of is None)
    todo = [b for b in bounds if b not in in_memory]
    timings = {"decode": 0.0, "model": 0.0, "sweep": 0.0}
    n_done_images = sum(b - a for a, b in in_memory)
    bar = progress_bar(total=sum(b - a for a, b in bounds), progress=progress, initial=n_done_images,
                       unit="img", desc="evaluate", smoothing=0.1)
    pool = sweep_pool(workers) if todo and workers > 1 else None
    decode_threads = max(1, min(8, available_cores() // 2))
    decoder = ThreadPoolExecutor(max_workers=decode_threads,
                                 thread_name_prefix="cam-core-decode")
    ahead = max(2, 2 * workers)  # (batch, method) sweeps in flight
    decode_ahead = max(2, decode_threads)  # batches decoded ahead of the model
    decoding: dict = {}
    pending: dict[tuple[int, int], dict] = {}  # bound -> {"arrays", "futures"}
    saved_meta = checkpoint is not None and (checkpoint / "settings.json").is_file()

    def schedule(i):
        while len(decoding) < decode_ahead and i[0] < len(todo):
            a, b = todo[i[0]]
            decoding[(a, b)] = decoder.submit(_decode, dataset.records[a:b], pre, settings)
            i[0] += 1

    def finish(bound, arrays):
        nonlocal saved_meta
        if checkpoint is None:
            in_memory[bound] = arrays
        else:
            if not saved_meta:
                write_json(checkpoint / "settings.json", fingerprint)
                saved_meta = True
            atomic_write_bytes(_batch_file(checkpoint, *bound), _npz_bytes(arrays))
            in_memory[bound] = arrays
        bar.update(bound[1] - bound[0])

    def collect(limit: int):
        """Finish the batches whose sweeps are done, waiting until fewer than ``limit`` tasks
        are in flight (0: all)."""
        while pending:
            futures = [f for p in pending.values() for f in p["futures"].values()]
            if len(futures) >= max(limit, 1):
                wait(futures, return_when=FIRST_COMPLETED)
            for bound in list(pending):
                p = pending[bound]
                if all(f.done() for f in p["futures"].values()):
                    for method, f in p["futures"].items():
                        out, seconds = f.result()
                        timings["sweep"] += seconds
                        p["arrays"].update({f"{method}/{k}": v for k, v in out.items()})
                    del pending[bound]
                    finish(bound, p["arrays"])
            if sum(len(p["futures"]) for p in pending.values()) < max(limit, 1):
                return

    cursor = [0]
    try:
        schedule(cursor)
        for bound in todo:
            batch, x, gts, seconds = decoding.pop(bound).result()
            timings["decode"] += seconds
            schedule(cursor)
            start, stop = bound
            arrays: dict[str, np.ndarray] = {"index": np.arange(start, stop),
                                             "digest": np.array(digest)}
            futures = {}
            for method, maps in _batch_maps(model, x, batch.labels, settings, arrays, timings):
                correct = arrays["predicted"] == arrays["labels"]
                task = (maps, gts, batch.boxes, correct, settings)
                if pool is None:
                    out, seconds = score_task(task)
                    timings["sweep"] += seconds
                    arrays.update({f"{method}/{k}": v for k, v in out.items()})
                else:
                    futures[method] = pool.submit(score_task, task)
            if pool is None:
                finish(bound, arrays)
            else:
                pending[bound] = {"arrays": arrays, "futures": futures}
                collect(ahead)
        collect(0)
    finally:
        for f in decoding.values():
            f.cancel()
        decoder.shutdown(wait=True, cancel_futures=True)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return [(a, b, in_memory[(a, b)]) for a, b in bounds], timings


def _finished_batches(checkpoint, fingerprint, bounds, digest, *, restart, whole) -> dict:
    """Open (or start) the checkpoint and load the batches of ``bounds`` already on disk, every
    one checked before any work: bound -> arrays (empty without a checkpoint)."""
    in_memory: dict[tuple[int, int], dict] = {}
    if checkpoint is None:
        return in_memory
    _open_checkpoint(checkpoint, fingerprint, bounds, restart=restart, whole=whole)
    for bound in bounds:
        if _batch_file(checkpoint, *bound).is_file():
            in_memory[bound] = _load_batch(checkpoint, *bound, digest)
    if in_memory:
        print(f"resuming: {len(in_memory)} of {len(bounds)} batches already done (in "
              f"{checkpoint})", file=sys.stderr, flush=True)
    return in_memory


def _batch_maps(model, x, labels, settings, arrays: dict, timings: dict):
    """Yield ``(method, maps or RawMaps)`` for one batch in the order of ``settings.methods``:
    the methods that share a capture from one forward/backward pass first, each other method
    as the model produces it (so its sweep can start while the next one runs). Records the
    predictions, labels and layers in ``arrays`` and the model's seconds in ``timings``."""

    def note(logits, layers):
        if "predicted" not in arrays:
            arrays["predicted"] = np.argmax(logits, axis=1).astype(np.int64)
            arrays["labels"] = labels.astype(np.int64)
            arrays["layers"] = np.array(layers)

    shared = [m for m in settings.methods if shares_capture(m)]
    made = {}  # method -> RawMaps
    if shared:
        t0 = time.perf_counter()
        made, logits, layers = capture_raw_maps(model, x, labels, shared, settings)
        timings["model"] += time.perf_counter() - t0
        note(logits, layers)
    for method in settings.methods:
        if method not in made:
            t0 = time.perf_counter()
            exp = explain_labels(model, x, labels, method, settings)
            timings["model"] += time.perf_counter() - t0
            note(exp.logits, exp.layers)
            made[method] = np.asarray(exp.maps)
        yield method, made.pop(method)


def sweep_pool(workers: int):
    """The engine's pool of ``workers`` sweep processes (forkserver where there is one, with the
    scoring modules preloaded; else spawn), in which :func:`score_task` runs."""
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["cam_core.evaluate", "cam_core.metrics", "cam_core.boxes"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init)


# --------------------------------------------------------------------------------------------
# shards: save, load, merge


def save_state(evaluation: Evaluation, path) -> Path:
    """Write an evaluation's state (all its batches) to one ``.npz`` file for :func:`merge`."""
    if not isinstance(evaluation, Evaluation):
        raise TypeError(f"`evaluation` must be an Evaluation; got {type(evaluation).__name__}")
    arrays = {"fingerprint": np.array(json.dumps(to_jsonable(evaluation.fingerprint))),
              "settings": np.array(json.dumps(to_jsonable(evaluation.settings.as_dict()))),
              "total": np.array(evaluation.total),
              "bounds": np.array([(a, b) for a, b, _ in evaluation.parts],
                                 dtype=np.int64).reshape(-1, 2)}
    for a, b, part in evaluation.parts:
        arrays.update({f"{a}-{b}/{k}": v for k, v in part.items()})
    return atomic_write_bytes(path, _npz_bytes(arrays))


def load_state(path) -> Evaluation:
    """Read a file written by :func:`save_state` back into an :class:`Evaluation`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"`path` must be a state file written by save_state; {path} does not "
                         "exist")
    z = _read_npz(path)
    try:
        fingerprint = json.loads(str(z["fingerprint"]))
        raw = json.loads(str(z["settings"]))
        total = int(z["total"])
        bounds = [tuple(int(v) for v in b) for b in z["bounds"]]
    except (KeyError, ValueError, TypeError):
        raise CheckpointError(f"{path} is not a state file written by cam_core's evaluate "
                              "(save_state)") from None
    settings = EvalSettings(
        methods=tuple(raw["methods"]),
        layer=tuple(raw["layer"]) if isinstance(raw["layer"], list) else raw["layer"],
        protocol=raw["protocol"], batch_size=raw["batch_size"], gallery=raw["gallery"],
        n_thresholds=raw["n_thresholds"], fixed_thresholds=tuple(raw["fixed_thresholds"]),
        iou_thresholds=tuple(raw["iou_thresholds"]))
    parts = []
    for a, b in bounds:
        prefix = f"{a}-{b}/"
        parts.append((a, b, {k[len(prefix):]: v for k, v in z.items() if k.startswith(prefix)}))
    return _summarise(parts, settings, fingerprint, total) if parts else Evaluation(
        images=0, top1=float("nan"), layers=(), methods={}, index=np.zeros(0, np.int64),
        labels=np.zeros(0, np.int64), predicted=np.zeros(0, np.int64), settings=settings,
        fingerprint=fingerprint, total=total)


def merge(evaluations) -> Evaluation:
    """Combine partial evaluations (shards, or :func:`save_state` files) of one dataset.

    Parameters
    ----------
    evaluations : sequence of Evaluation or path
        Evaluations with the same fingerprint (dataset, model, preprocessing, settings) whose
        batches do not overlap.

    Returns
    -------
    Evaluation
        The figures of the batches they hold together, identical to one run over them.
    """
    items = [e if isinstance(e, Evaluation) else load_state(e) for e in evaluations]
    if not items:
        raise ValueError("`evaluations` must hold at least one evaluation; got none")
    first = items[0]
    for i, e in enumerate(items[1:], 1):
        if to_jsonable(e.fingerprint) != to_jsonable(first.fingerprint):
            keys = sorted(k for k in set(e.fingerprint) | set(first.fingerprint)
                          if to_jsonable(e.fingerprint.get(k)) !=
                          to_jsonable(first.fingerprint.get(k)))
            raise ValueError(f"`evaluations[{i}]` was computed with other settings than "
                             f"`evaluations[0]` (they differ in {', '.join(keys)})")
    parts = sorted((p for e in items for p in e.parts), key=lambda p: p[0])
    for (a0, b0, _), (a1, b1, _) in zip(parts, parts[1:]):
        if a1 < b0:
            raise ValueError(f"`evaluations` overlap: batches [{a0}, {b0}) and [{a1}, {b1})")
    return _summarise(parts, first.settings, first.fingerprint, first.total)


def missing_images(evaluation: Evaluation) -> list[tuple[int, int]]:
    """The ranges ``[a, b)`` of the dataset that ``evaluation`` does not hold."""
    out, at = [], 0
    for a, b, _ in evaluation.parts:
        if a > at:
            out.append((at, a))
        at = b
    if at < evaluation.total:
        out.append((at, evaluation.total))
    return out
