"""Stage "train": the CAM model (backbone + global average pooling + linear) trained on the
synthetic set in PyTorch and in Keras (TensorFlow), with one loss-curve figure for both.

Both frameworks see the same data in the same order: one seeded NumPy pipeline makes the batches
(pixels scaled to [-1, 1], random horizontal flips), and both use AdamW with the same one-cycle
learning-rate schedule (linear warm-up, cosine decay), stepped per batch. The loss of every step
is recorded; the test accuracy is measured in inference mode (BatchNorm moving statistics).

The trained models stay in memory for the ``localise`` stage: :func:`trained_model` returns the
one trained in this process for the same settings, or trains it. Nothing large is written to disk.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks._common import (
    fmt,
    md_table,
    peak_rss_mb,
    progress_bar,
    save_figure,
    set_seeds,
)

__all__ = ["FRAMEWORKS", "Trained", "config", "run", "synthetic_split", "trained_model"]

FRAMEWORKS = ("torch", "keras")
SEED = 0

# Sizes per mode (``size`` is the image side), tuned on 2 CPU cores at batch 32 and peak lr 3e-3.
# Test accuracy (torch / Keras): 4,000 images x 7 epochs 93.0 / 90.8%, 5,000 x 7 95.0 / 94.6%;
# fewer images for more epochs generalise worse (2,400 x 10 epochs, torch: 91%).
_CONFIGS = {
    "tiny": {"n_train": 256, "n_test": 64, "size": 64, "epochs": 1, "batch": 32, "lr": 3e-3,
             "width": 8},
    "quick": {"n_train": 5000, "n_test": 500, "size": 64, "epochs": 7, "batch": 32, "lr": 3e-3,
              "width": 16},
    "full": {"n_train": 8000, "n_test": 1000, "size": 64, "epochs": 10, "batch": 32, "lr": 3e-3,
             "width": 16},
}
# the ResNet-50 variant (meant for a GPU): larger images so that layer4 keeps a 7x7 map
_RESNET = {"size": 224, "batch": 32, "lr": 1e-3}
WEIGHT_DECAY = 1e-4
WARMUP_FRACTION = 0.15


def config(*, quick: bool = True, tiny: bool = False, model: str = "tiny") -> dict:
    """The training settings of a mode: sizes, epochs, batch, learning rate, model."""
    if model not in ("tiny", "resnet50"):
        raise ValueError(f"`model` must be 'tiny' or 'resnet50'; got {model!r}")
    cfg = dict(_CONFIGS["tiny" if tiny else "quick" if quick else "full"])
    cfg["model"] = model
    if model == "resnet50":
        cfg.update(_RESNET)
    cfg["seed"] = SEED
    return cfg


# ----------------------------------------------------------------------------- data
_SPLITS: dict[tuple, tuple] = {}


def synthetic_split(cfg: dict):
    """``(train, test)`` synthetic sets for ``cfg`` (cached in this process).

    Each is what :func:`cam_core.data.make_synthetic` returns; the test set has its own seed.
    """
    key = (cfg["n_train"], cfg["n_test"], cfg["size"], cfg["seed"])
    if key not in _SPLITS:
        from cam_core.data import make_synthetic

        train = make_synthetic(cfg["n_train"], size=cfg["size"], seed=cfg["seed"])
        test = make_synthetic(cfg["n_test"], size=cfg["size"], seed=cfg["seed"] + 1)
        _SPLITS[key] = (train, test)
    return _SPLITS[key]


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 (or [0, 1] float) NHWC images -> float32 NHWC in [-1, 1], the models' input."""
    x = np.asarray(images)
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - 127.5) / 127.5
    return (x.astype(np.float32) - 0.5) * 2.0


def _batches(n: int, batch: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for i in range(0, n - batch + 1, batch):  # drop the last partial batch: constant BN batches
        yield order[i:i + batch]


def _schedule(step: int, total: int, peak: float) -> float:
    warm = max(1, int(total * WARMUP_FRACTION))
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return peak * 0.5 * (1 + math.cos(math.pi * t))


# ----------------------------------------------------------------------------- models
@dataclass
class Trained:
    """A model trained by this stage, kept in memory for the localisation stage.

    ``prepare`` turns uint8 NHWC images into the model's input (a torch NCHW tensor on the
    model's device, or a NumPy NHWC array for Keras); ``layer`` is the layer to explain.
    """

    framework: str
    model: object
    layer: str
    prepare: object
    num_classes: int
    test_accuracy: float
    train_time_s: float
    losses: list = field(default_factory=list)
    steps_per_epoch: int = 0
    settings: dict = field(default_factory=dict)

    def logits(self, images: np.ndarray, *, batch: int = 128) -> np.ndarray:
        """The model's logits for uint8 NHWC images, in inference mode, as NumPy (N, C)."""
        out = []
        for i in range(0, len(images), batch):
            x = self.prepare(images[i:i + batch])
            if self.framework == "torch":
                import torch

                with torch.inference_mode():
                    out.append(self.model(x).float().cpu().numpy())
            else:
                out.append(np.asarray(self.model(x, training=False)))
        return np.concatenate(out)


def _num_classes(train) -> int:
    names = getattr(train, "class_names", None)
    if names is not None:
        return len(names)
    return int(np.max(train.labels)) + 1


def _train_torch(cfg, train, test, progress):
    import torch
    from cam_core.adapters import models_torch as zoo

    set_seeds(cfg["seed"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    nc = _num_classes(train)
    if cfg["model"] == "resnet50":
        model, layer = zoo.resnet50(nc), "layer4"
    else:
        model, layer = zoo.tiny_gap_cnn(nc, width=cfg["width"]), "features"
    model = model.to(device=device, memory_format=torch.channels_last)

    def prepare(images):
        x = torch.from_numpy(np.ascontiguousarray(to_unit(images).transpose(0, 3, 1, 2)))
        return x.to(device).contiguous(memory_format=torch.channels_last)

    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=WEIGHT_DECAY,
                            eps=1e-7)
    return model, layer, prepare, _loop(cfg, train, progress, "torch", _torch_step(model, opt,
                                                                                   prepare))


def _torch_step(model, opt, prepare):
    import torch
    import torch.nn.functional as F

    def step(images, labels, lr):
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        x = prepare(images)
        y = torch.from_numpy(labels.astype(np.int64)).to(x.device)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def _train_keras(cfg, train, test, progress):
    import keras
    from cam_core.adapters import models_keras as zoo

    set_seeds(cfg["seed"])
    nc = _num_classes(train)
    shape = (cfg["size"], cfg["size"], 3)
    if cfg["model"] == "resnet50":
        model, layer = zoo.resnet50(nc, input_shape=shape), "layer4"
    else:
        model, layer = zoo.tiny_gap_cnn(nc, width=cfg["width"], input_shape=shape), "features"
    opt = keras.optimizers.AdamW(learning_rate=cfg["lr"], weight_decay=WEIGHT_DECAY,
                                 epsilon=1e-7)
    model.compile(optimizer=opt,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def step(images, labels, lr):
        opt.learning_rate = lr
        model.reset_metrics()  # train_on_batch then returns this batch's loss, not a running mean
        loss = model.train_on_batch(to_unit(images), labels.astype(np.int32))
        return float(np.ravel(loss)[0])

    return model, layer, to_unit, _loop(cfg, train, progress, "keras", step)


def _loop(cfg, train, progress, name, step):
    """Run ``cfg['epochs']`` epochs of ``step(images, labels, lr)``; return the step losses."""
    rng = np.random.default_rng(cfg["seed"])
    n = len(train.labels)
    per_epoch = n // cfg["batch"]
    total = per_epoch * cfg["epochs"]
    losses = []
    bar = progress_bar(total=total, enabled=progress, desc=f"train {name}", unit="step")
    try:
        for _ in range(cfg["epochs"]):
            for idx in _batches(n, cfg["batch"], rng):
                images = train.images[idx]
                flip = rng.random(len(idx)) < 0.5
                images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
                lr = _schedule(len(losses), total, cfg["lr"])
                losses.append(step(images, train.labels[idx], lr))
                if not math.isfinite(losses[-1]):
                    raise FloatingPointError(
                        f"{name} training diverged: loss {losses[-1]} at step {len(losses)}"
                    )
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    finally:
        bar.close()
    return losses, per_epoch


_TRAINED: dict[tuple, Trained] = {}


def _key(framework: str, cfg: dict) -> tuple:
    return (framework, *sorted((k, v) for k, v in cfg.items()))


def trained_model(framework: str, *, quick: bool = True, tiny: bool = False,
                  model: str = "tiny", progress: bool = True) -> Trained:
    """The model of ``framework`` ("torch" or "keras") trained for these settings.

    Trained on first use and kept for the rest of the process, so the ``localise`` stage reuses
    what the ``train`` stage trained. Raises ``ModuleNotFoundError`` when the framework is
    missing.
    """
    if framework not in FRAMEWORKS:
        raise ValueError(f"`framework` must be one of {FRAMEWORKS}; got {framework!r}")
    cfg = config(quick=quick, tiny=tiny, model=model)
    key = _key(framework, cfg)
    if key not in _TRAINED:
        train, test = synthetic_split(cfg)
        fit = _train_torch if framework == "torch" else _train_keras
        t0 = time.perf_counter()
        net, layer, prepare, (losses, per_epoch) = fit(cfg, train, test, progress)
        train_s = time.perf_counter() - t0
        trained = Trained(framework, net, layer, prepare, _num_classes(train), math.nan,
                          train_s, losses, per_epoch, cfg)
        if framework == "torch":
            net.eval()
        pred = np.argmax(trained.logits(test.images), axis=1)
        trained.test_accuracy = float(np.mean(pred == test.labels))
        _TRAINED[key] = trained
    return _TRAINED[key]


# ----------------------------------------------------------------------------- the stage
def _smooth(values, width: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    width = max(1, min(width, len(v)))
    c = np.cumsum(np.insert(v, 0, 0.0))
    head = c[1:width] / np.arange(1, width)  # a growing window at the start
    return np.concatenate([head, (c[width:] - c[:-width]) / width])


def _plot_losses(results: dict[str, Trained], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"torch": "tab:red", "keras": "tab:blue"}
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, t in results.items():
        epochs = np.arange(1, len(t.losses) + 1) / t.steps_per_epoch
        ax.plot(epochs, t.losses, color=colours[name], alpha=0.25, lw=0.8)
        ax.plot(epochs, _smooth(t.losses, max(1, t.steps_per_epoch // 2)), color=colours[name],
                lw=2, label=f"{name}: test accuracy {100 * t.test_accuracy:.1f}%")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.set_yscale("log")
    ax.set_title("GAP classifier on the synthetic set (raw steps faint, running mean bold)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def run(*, quick: bool = True, out_dir: Path, progress: bool = True, model: str = "tiny",
        tiny: bool = False, frameworks=FRAMEWORKS) -> dict:
    """Train the GAP classifier in each framework; write ``train_loss.png``.

    Returns the stage dict: ``figures`` holds per framework the test accuracy, training time,
    steps, first/last-epoch mean loss and the whole loss curve; a framework that is not installed
    is listed under ``figures["skipped"]``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = config(quick=quick, tiny=tiny, model=model)
    results: dict[str, Trained] = {}
    skipped: dict[str, str] = {}
    for fw in frameworks:
        try:
            results[fw] = trained_model(fw, quick=quick, tiny=tiny, model=model,
                                        progress=progress)
        except ModuleNotFoundError as exc:
            skipped[fw] = f"{exc.name} is not installed"
    if not results:
        return {"name": "train", "skipped": "; ".join(f"{k}: {v}" for k, v in skipped.items())}
    train, test = synthetic_split(cfg)
    figures: dict = {"settings": cfg, "n_classes": _num_classes(train), "skipped": skipped,
                     "peak_rss_mb": round(peak_rss_mb(), 1)}
    rows = []
    for fw, t in results.items():
        per = t.steps_per_epoch
        first, last = float(np.mean(t.losses[:per])), float(np.mean(t.losses[-per:]))
        figures[fw] = {
            "test_accuracy": t.test_accuracy,
            "train_time_s": round(t.train_time_s, 2),
            "steps": len(t.losses),
            "steps_per_epoch": per,
            "first_epoch_loss": first,
            "last_epoch_loss": last,
            "losses": [round(v, 5) for v in t.losses],
        }
        rows.append([fw, f"{100 * t.test_accuracy:.1f}%", t.train_time_s, len(t.losses),
                     fmt(first, 3), fmt(last, 3)])
    png = _plot_losses(results, out_dir / "train_loss.png")
    desc = ("ResNet-50" if cfg["model"] == "resnet50"
            else f"tiny GAP CNN (width {cfg['width']})")
    md = [
        "## Training the CAM model on the synthetic set",
        "",
        f"{desc}, {cfg['n_train']} training / {cfg['n_test']} test images at "
        f"{cfg['size']}x{cfg['size']}, {figures['n_classes']} classes, {cfg['epochs']} epochs, "
        f"batch {cfg['batch']}, AdamW (peak lr {cfg['lr']}, weight decay {WEIGHT_DECAY}), "
        f"one-cycle schedule, horizontal flips; seed {cfg['seed']}.",
        "",
        md_table(["framework", "test accuracy", "train time (s)", "steps",
                  "loss, first epoch", "loss, last epoch"], rows),
        "",
        f"![training loss]({png.name})",
    ]
    if skipped:
        md += ["", "Not trained: " + "; ".join(f"{k} ({v})" for k, v in skipped.items())]
    headline = {f"{fw} test acc (%)": round(100 * t.test_accuracy, 1)
                for fw, t in results.items()}
    return {"name": "train", "figures": figures, "markdown": "\n".join(md),
            "headline": headline}


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    res = run(quick=True, out_dir=Path(__file__).resolve().parent / "results" / "_scratch")
    print(res.get("markdown", res))
