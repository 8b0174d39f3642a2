"""Stage "adapter_torch": what CAM and Grad-CAM cost through the PyTorch adapter, end to end.

For EfficientNet-Lite0 (ImageNet weights; real images from ``../shared/data/imagenet-val-1300``
when present, else random inputs) and ResNet-50 (random weights) at 224 x 224, batch 1 and 32:

- ``forward``: the plain forward pass under ``torch.inference_mode()`` (the floor);
- ``cam_core cam`` and ``cam_core gradcam``: :func:`cam_core.adapters.torch.explain`, maps at
  the input size (capture, the method, the upsampling and the normalisation all included);
- ``torchcam gradcam``: torch-cam's ``GradCAM`` (its maps upsampled to 224 with
  ``F.interpolate``, bilinear), and ``pytorch-grad-cam gradcam``: ``pytorch_grad_cam.GradCAM``,
  when they import (optional, never dependencies; reported as skipped with the reason otherwise).

Every contender explains the same classes (the model's predictions, fixed before timing) at the
same layer (``_swish``, the head's activation, for Lite0; ``layer4`` for ResNet-50). Contenders are
interleaved round by round (the order rotates each round), so a busy patch of the shared machine
hits them alike. Round 0 is the cold first call and is reported apart; the next ``warmup`` rounds
are discarded; the figure is the median of the ``repeats`` rounds after them, in milliseconds per
image, and its ratio to the forward pass's median. The other libraries' maps are compared with
ours by the Pearson correlation per image (mean over the batch).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    environment,
    fmt,
    md_table,
    progress_bar,
    save_figure,
    set_seeds,
    set_threads,
)

__all__ = ["run"]

SIZE = 224
BATCHES = (1, 32)
# (warm-up rounds after the cold one, timed rounds) per batch size
_ROUNDS = {True: {1: (1, 5), 32: (1, 3)}, False: {1: (3, 21), 32: (2, 9)}}
IMAGENET = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-val-1300"


def _models(torch):
    from cam_core.adapters import models_torch as mt

    out = []
    try:
        out.append(("EfficientNet-Lite0 (ImageNet weights)", mt.efficientnet_lite0(pretrained=True),
                    "_swish", True))
    except ImportError as exc:
        out.append(("EfficientNet-Lite0 (ImageNet weights)", None, str(exc), True))
    out.append(("ResNet-50 (random weights)", mt.resnet50(1000), "layer4", False))
    return out


def _inputs(torch, n: int, real: bool, seed: int):
    """A batch of ``n`` images: ImageNet subset pixels for the pretrained model when available."""
    if real and (IMAGENET / "metadata" / "image_ids.txt").is_file():
        from PIL import Image

        from cam_core.adapters.models_torch import preprocess_imagenet_lite

        ids = (IMAGENET / "metadata" / "image_ids.txt").read_text().split()[:n]
        pixels = np.stack([np.asarray(Image.open(IMAGENET / i).convert("RGB")) for i in ids])
        return preprocess_imagenet_lite(pixels), "ImageNet subset"
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, SIZE, SIZE, generator=g), "random normal"


def _other_libraries():
    """{name: (callable factory or None, skip reason or None)} for the optional libraries."""
    found = {}
    try:
        from torchcam.methods import GradCAM as TorchCamGradCAM

        found["torchcam gradcam"] = (TorchCamGradCAM, None)
    except Exception as exc:  # ImportError, or a missing dependency of theirs
        found["torchcam gradcam"] = (None, f"{type(exc).__name__}: {exc}")
    try:
        from pytorch_grad_cam import GradCAM as PgcGradCAM

        found["pytorch-grad-cam gradcam"] = (PgcGradCAM, None)
    except Exception as exc:
        found["pytorch-grad-cam gradcam"] = (None, f"{type(exc).__name__}: {exc}")
    return found


def _contenders(torch, model, layer: str, x, targets: list[int], libs: dict) -> dict:
    import torch.nn.functional as F

    from cam_core.adapters.torch import explain

    size = tuple(x.shape[2:])

    def forward():
        with torch.inference_mode():
            return model(x)

    fns = {
        "forward": forward,
        "cam_core cam": lambda: explain(model, x, method="cam", layer=layer, targets=targets).maps,
        "cam_core gradcam": lambda: explain(
            model, x, method="gradcam", layer=layer, targets=targets
        ).maps,
    }
    tc_cls, _ = libs["torchcam gradcam"]
    if tc_cls is not None:

        def torchcam():
            with tc_cls(model, target_layer=layer, input_shape=(3, *size)) as extractor:
                scores = model(x)
                (maps,) = extractor(targets, scores)
            up = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)
            return up[:, 0].detach().cpu().numpy()

        fns["torchcam gradcam"] = torchcam
    pgc_cls, _ = libs["pytorch-grad-cam gradcam"]
    if pgc_cls is not None:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        module = dict(model.named_modules())[layer]

        def pgc():
            with pgc_cls(model=model, target_layers=[module]) as cam:
                return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])

        fns["pytorch-grad-cam gradcam"] = pgc
    return fns


def _sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    vals = []
    for m1, m2 in zip(a, b):
        m1, m2 = m1.ravel().astype(np.float64), m2.ravel().astype(np.float64)
        if m1.std() == 0 or m2.std() == 0:
            vals.append(float(np.array_equal(m1, m2)))
        else:
            vals.append(float(np.corrcoef(m1, m2)[0, 1]))
    return float(np.mean(vals))


def _measure(torch, device, model, layer, x, libs, warmup, repeats, bar) -> dict:
    with torch.inference_mode():
        targets = model(x).argmax(1).tolist()
    fns = _contenders(torch, model, layer, x, targets, libs)
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    last: dict[str, object] = {}
    for r in range(1 + warmup + repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            _sync(torch, device)
            t0 = time.perf_counter()
            out = fns[name]()
            _sync(torch, device)
            times[name].append(time.perf_counter() - t0)
            last[name] = out
        bar.update(1)
    n = len(x)
    floor = statistics.median(times["forward"][1 + warmup :])
    ours = np.asarray(last["cam_core gradcam"])
    rows = {}
    for name in names:
        warm = times[name][1 + warmup :]
        med = statistics.median(warm)
        row = {
            "median_ms_per_image": 1e3 * med / n,
            "cold_ms_per_image": 1e3 * times[name][0] / n,
            "ratio_to_forward": med / floor,
            "times_s": times[name],
        }
        if name not in ("forward", "cam_core cam", "cam_core gradcam"):
            row["correlation_to_cam_core_gradcam"] = _correlation(np.asarray(last[name]), ours)
        rows[name] = row
    return {"batch": n, "targets": targets, "rows": rows}


def _plot(results: list[dict], out_dir: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    for ax, res in zip(axes[0], results):
        labels, vals = [], []
        for b in res["batches"]:
            for name, row in b["rows"].items():
                labels.append(f"{name}\nN={b['batch']}")
                vals.append(row["ratio_to_forward"])
        ax.barh(range(len(vals)), vals, color="#4477aa")
        ax.set_yticks(range(len(vals)), labels, fontsize=7)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.invert_yaxis()
        ax.set_xlabel("time / forward pass (median)")
        ax.set_title(res["model"], fontsize=9)
    fig.tight_layout()
    path = out_dir / "adapter_torch_ratios.png"
    save_figure(fig, path)
    return path.name


def run(*, quick: bool, out_dir: Path, progress: bool = True) -> dict:
    """Time CAM and Grad-CAM through the torch adapter against the forward pass (module docstring)."""
    try:
        import torch
    except ImportError as exc:
        return {"name": "adapter_torch", "skipped": f"torch is not installed ({exc})"}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = set_threads()
    set_seeds(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    libs = _other_libraries()
    rounds = _ROUNDS[bool(quick)]
    total = sum(1 + rounds[b][0] + rounds[b][1] for b in BATCHES) * 2
    results, skipped_models = [], {}
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with progress_bar(total=total, enabled=progress, desc="adapter_torch") as bar:
        for label, model, layer, real in _models(torch):
            if model is None:
                skipped_models[label] = layer
                continue
            model = model.to(device).eval()
            entry = {"model": label, "layer": layer, "batches": []}
            for n in BATCHES:
                x, source = _inputs(torch, n, real, seed=n)
                warmup, repeats = rounds[n]
                res = _measure(torch, device, model, layer, x.to(device), libs, warmup, repeats, bar)
                res["inputs"] = source
                entry["batches"].append(res)
            results.append(entry)
    env = environment()
    figures = {
        "settings": {"size": SIZE, "batches": list(BATCHES), "rounds": {str(k): v for k, v in
                     rounds.items()}, "quick": bool(quick), "device": str(device),
                     "threads": threads},
        "machine": env["machine"],
        "versions": env["versions"],
        "load_average_1min": {"before": load_before,
                              "after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "skipped_libraries": {k: v[1] for k, v in libs.items() if v[0] is None},
        "skipped_models": skipped_models,
        "results": results,
    }
    png = _plot(results, out_dir) if results else None
    rows, headline = [], {}
    for res in results:
        for b in res["batches"]:
            for name, row in b["rows"].items():
                corr = row.get("correlation_to_cam_core_gradcam")
                rows.append([res["model"], str(b["batch"]), name, fmt(row["median_ms_per_image"], 2),
                             fmt(row["cold_ms_per_image"], 2), fmt(row["ratio_to_forward"], 3),
                             "-" if corr is None else fmt(corr, 4)])
            if b["batch"] == 32:
                headline[res["model"]] = {
                    k: b["rows"][k]["ratio_to_forward"] for k in ("cam_core cam", "cam_core gradcam")
                }
    figures["headline_ratio_batch32"] = headline
    device_text = (f"CUDA ({', '.join(env['machine']['gpus']) or 'GPU'})" if device.type == "cuda"
                   else f"CPU {env['machine']['cpu']}, {threads} torch threads")
    lines = [
        "### PyTorch adapter: CAM and Grad-CAM end to end vs the forward pass",
        "",
        f"224 x 224 inputs; maps at the input size. Medians of the timed rounds (batch 1: "
        f"{rounds[1][1]} after {rounds[1][0]} warm-up; batch 32: {rounds[32][1]} after "
        f"{rounds[32][0]}), contenders interleaved round by round; the cold first call apart. "
        f"Machine: {device_text}; torch {env['versions'].get('torch')}; 1-minute load average "
        f"{fmt(load_before, 2)} before the run and "
        f"{fmt(figures['load_average_1min']['after'], 2)} after it (the machine is shared; under "
        f"load the ratios scatter by several percent). The issue's aims at batch 32: CAM within 1.05x "
        f"and Grad-CAM within 1.1x of the forward pass.",
        "",
        md_table(["model", "N", "contender", "ms / image", "cold ms / image", "x forward",
                  "corr. to ours"], rows),
    ]
    for name, (factory, why) in libs.items():
        if factory is None:
            lines += ["", f"{name}: skipped ({why})."]
    for label, why in skipped_models.items():
        lines += ["", f"{label}: skipped ({why})."]
    if png:
        lines += ["", f"![ratios to the forward pass]({png})"]
    return {"name": "adapter_torch", "figures": figures, "markdown": "\n".join(lines)}


if __name__ == "__main__":
    res = run(quick=True, out_dir=Path(__file__).resolve().parent / "results" / "_scratch")
    print(res.get("markdown", res))
