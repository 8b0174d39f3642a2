"""Stage "localise": every CAM method's boxes and faithfulness on the synthetic test set, for the
model trained in each framework by the ``train`` stage (reused when it ran in this process).

All maps are ground-truth-known (computed for each image's true class). Figures per framework
and method:

- **box accuracy over a threshold sweep** (:class:`cam_core.metrics.BoxAccuracy`): MaxBoxAcc and
  MaxBoxAccV2 under the ``native`` protocol (the 64x64 maps as the adapter returns them, bilinear,
  half-open boxes) and under the ``wsol`` protocol of Choe et al. (raw map resized bicubically to
  224x224, ground truth scaled with truncation, the reference's inclusive-corner IoU);
- **fixed thresholds** (:class:`cam_core.metrics.Localization`, native): top-1 and GT-known
  localisation and mean IoU at 20% of the maximum (the CAM paper) and 15% (the Grad-CAM paper);
- **faithfulness** on a subset (:mod:`cam_core.faithfulness`): Average Drop, Increase in
  Confidence and deletion/insertion AUC of the true class's softmax probability. Masking
  multiplies the model's input (pixels scaled to [-1, 1]), so a removed pixel is mid-grey.

Score-CAM and Ablation-CAM (one model call per channel) run on the first ``n_slow`` test images
only; every table says how many images each figure covers.

Figures: ``localise_boxacc.svg`` (BoxAcc at IoU 0.5 against the threshold), one overlay gallery
per framework (``localise_gallery_<framework>.png``: ground truth green, the box at 20% red) and,
when the ``demo`` extra is installed, ``localise_photos.png`` (the scikit-image sample photographs
through the pretrained EfficientNet-Lite0).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from benchmarks import stage_train
from benchmarks._common import fmt, md_table, progress_bar
from benchmarks._scoring import (
    FAST_METHODS,
    NEW_FAST_METHODS,
    NEW_SLOW_METHODS,
    OWN_PASS_METHODS,
    SLOW_METHODS,
    WSOL_SIZE,
    BoxStats,
    plot_boxacc,
    targets_for,
    wsol_maps,
)

__all__ = ["run"]

# issue 15: the methods added from pytorch-grad-cam and torch-cam (SS-CAM, IS-CAM: slow)
ROAD_BENCH_PERCENTAGES = (20, 40, 60, 80)  # pytorch-grad-cam's ROADCombined
N_ROAD, N_RANDOMISATION = 16, 8  # images (at most n_faith / n_slow)

_SIZES = {
    # images: for the sweeps (the first n_eval of the test set), the slow methods, faithfulness;
    # deletion/insertion steps; images per adapter call
    "tiny": {"n_eval": 16, "n_slow": 2, "n_faith": 2, "steps": 2, "batch": 16},
    "quick": {"n_eval": 250, "n_slow": 24, "n_faith": 32, "steps": 10, "batch": 125},
    "full": {"n_eval": 1000, "n_slow": 200, "n_faith": 200, "steps": 20, "batch": 125},
}


# ----------------------------------------------------------------------------- model access
class _Model:
    """Explain, and class probabilities of masked inputs, for one trained model."""

    def __init__(self, trained: stage_train.Trained):
        self.t = trained
        self.fw = trained.framework
        if self.fw == "torch":
            from cam_core.adapters import torch as adapter
        else:
            from cam_core.adapters import keras as adapter
        self.adapter = adapter

    def layer_for(self, method: str):
        """The layer(s) ``method`` explains: none for FullGrad (every bias layer), the layer
        before the explained one and it for RefineCAM, else the explained layer."""
        if method == "fullgrad":
            return None
        if method == "refinecam":
            sep = "." if self.fw == "torch" else "/"
            earlier = {"features": f"features{sep}block3", "layer4": "layer3"}[self.t.layer]
            return [earlier, self.t.layer]
        return self.t.layer

    def explain(self, images, labels, method, *, batch):
        """Maps (N, H, W) and raw maps (N, h, w) of ``method`` for the true classes (RefineCAM's
        fused maps stand for its raw maps: it has one per layer)."""
        maps, raws = [], []
        for i in range(0, len(images), batch):
            x = self.t.prepare(images[i:i + batch])
            e = self.adapter.explain(self.t.model, x, method=method, layer=self.layer_for(method),
                                     targets=targets_for(self.adapter, method,
                                                         labels[i:i + batch]),
                                     batch_size=128, progress=False)
            maps.append(e.maps)
            raws.append(e.maps if isinstance(e.raw, tuple) else e.raw)
        return np.concatenate(maps), np.concatenate(raws)

    def probs(self, x) -> np.ndarray:
        """Softmax of the logits of a prepared batch, as NumPy (N, C)."""
        if self.fw == "torch":
            import torch

            with torch.inference_mode():
                return torch.softmax(self.t.model(x).float(), dim=1).cpu().numpy()
        logits = np.asarray(self.t.model(x, training=False), dtype=np.float64)
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def masked(self, x, masks: np.ndarray):
        """Prepared image ``x`` (one, no batch axis) times each of ``masks`` (B, H, W)."""
        if self.fw == "torch":
            import torch

            m = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32)).to(x.device)
            return (x[None] * m[:, None]).contiguous(memory_format=torch.channels_last)
        return x[None] * masks[..., None].astype(np.float32)

    def road_inputs(self, x, labels):
        """ROAD's channels-first images of a prepared batch and its ``score_images``: the true
        class's probability of imputed copies of image ``index``."""
        if self.fw == "torch":
            import torch

            imgs = x.float().cpu().numpy()

            def to_model(b):
                return torch.from_numpy(b).to(x.device)
        else:
            imgs = np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2))

            def to_model(b):
                return np.ascontiguousarray(b.transpose(0, 2, 3, 1))

        def score(index: int, batch: np.ndarray) -> np.ndarray:
            return self.probs(to_model(batch))[:, int(labels[index])]

        return imgs, score

    def score_masked(self, x_all, labels):
        """``score_masked(index, masks)``: the true class's probability of masked image index."""
        def score(index: int, masks: np.ndarray) -> np.ndarray:
            p = self.probs(self.masked(x_all[index], masks))
            return p[:, int(labels[index])]

        return score


# ----------------------------------------------------------------------------- metrics


def _box_figures(maps, raw, relu, boxes, correct, size) -> dict:
    from cam_core.boxes import ground_truth

    gts = [ground_truth(b, (size, size), WSOL_SIZE, protocol="wsol") for b in boxes]  # square images
    stats = BoxStats()
    stats.update(maps, boxes, wsol_maps(raw, relu), gts, correct)
    return stats.result()


def _faithfulness(model: _Model, images, labels, maps, *, steps, batch) -> dict:
    from cam_core.faithfulness import average_drop, deletion_insertion, increase_in_confidence, road

    x = model.t.prepare(images)
    base = model.probs(x)[np.arange(len(labels)), labels]
    weighted = np.stack([
        model.probs(model.masked(x[i], maps[i:i + 1]))[0, labels[i]] for i in range(len(labels))
    ])
    curves = deletion_insertion(maps, model.score_masked(x, labels), steps=steps,
                                batch_size=batch, progress=False)
    k = min(N_ROAD, len(labels))
    roads = None
    if k:
        imgs, score = model.road_inputs(x[:k], labels[:k])
        roads = road(imgs, maps[:k], score, percentages=ROAD_BENCH_PERCENTAGES, batch_size=batch)
    return {
        "road_images": k,
        "road_morf": float(np.mean(roads.morf)) if k else float("nan"),
        "road_lerf": float(np.mean(roads.lerf)) if k else float("nan"),
        "road_combined": roads.combined if k else float("nan"),
        "images": len(labels),
        "average_drop": average_drop(base, weighted),
        "increase_in_confidence": increase_in_confidence(base, weighted),
        "deletion_auc": float(np.mean(curves.deletion_auc)),
        "insertion_auc": float(np.mean(curves.insertion_auc)),
        "steps": steps,
    }


def _randomisation(model: _Model, images, labels, methods, sizes) -> dict:
    """Adebayo et al.'s model-parameter randomisation: mean Spearman correlation between the
    maps of the trained model and of copies with the classifier (``fc``), then also the explained
    layer, re-initialised (:func:`cam_core.faithfulness.rank_correlation`). Low passes."""
    from cam_core.faithfulness import rank_correlation

    cascade = {"fc": ["fc"], f"fc+{model.t.layer}": ["fc", model.t.layer]}
    copies = {k: model.adapter.randomized_copy(model.t.model, v, seed=0)
              for k, v in cascade.items()}
    out = {"cascade": list(cascade), "methods": {}}
    for method in methods:
        slow = method in SLOW_METHODS + NEW_SLOW_METHODS
        n = min(N_RANDOMISATION, sizes["n_slow"] if slow else sizes["n_faith"], len(labels))
        x = model.t.prepare(images[:n])
        kw = dict(method=method, layer=model.layer_for(method),
                  targets=targets_for(model.adapter, method, labels[:n]), batch_size=128,
                  progress=False)
        ref = model.adapter.explain(model.t.model, x, **kw).maps
        row = {"images": n}
        for name, rc in copies.items():
            row[name] = float(np.mean(rank_correlation(ref, model.adapter.explain(rc, x,
                                                                                  **kw).maps)))
        out["methods"][method] = row
    return out


# ----------------------------------------------------------------------------- pictures
def _overlay_cell(image, heat, gt, pred, scale: int = 2):
    from cam_core.viz import draw_boxes, overlay

    big = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
    if heat is not None:
        heat = np.repeat(np.repeat(heat, scale, axis=0), scale, axis=1)
        big = overlay(big, heat, alpha=0.45)
    boxes = [np.asarray(gt) * scale]
    colours = [(0, 200, 0)] * len(gt)
    if pred is not None and len(pred):
        boxes.append(np.asarray(pred) * scale)
        colours += [(230, 0, 0)] * len(pred)
    return draw_boxes(big, np.concatenate(boxes), colors=np.array(colours), width=2)


def _gallery(test, idx, maps_by_method: dict, path: Path, title: str) -> Path:
    from cam_core.boxes import boxes_from_map
    from cam_core.viz import image_grid, save_png

    cells, titles = [], []
    for row, i in enumerate(idx):
        cells.append(_overlay_cell(test.images[i], None, test.boxes[i], None))
        titles.append(f"{title}: {test.class_names[test.labels[i]]}" if row == 0
                      else test.class_names[test.labels[i]])
        for method, maps in maps_by_method.items():
            m = maps[row]
            cells.append(_overlay_cell(test.images[i], m, test.boxes[i],
                                       boxes_from_map(m, threshold=0.2)))
            titles.append(method)
    return save_png(image_grid(cells, ncols=1 + len(maps_by_method), titles=titles), path)


def _photos(out_dir: Path, progress: bool) -> dict:
    """The sample photographs through the pretrained EfficientNet-Lite0 (torch): CAM, Grad-CAM."""
    from cam_core.adapters import models_torch as zoo
    from cam_core.adapters import torch as adapter
    from PIL import Image

    from cam_core.boxes import best_iou, boxes_from_map, scale_boxes
    from cam_core.data import sample_photos
    from cam_core.viz import image_grid, save_png

    model = zoo.efficientnet_lite0(pretrained=True)
    photos = sample_photos()
    # the photographs' own sizes differ: resize each (Pillow bilinear), then stack
    images = [np.asarray(Image.fromarray(p.image).resize((224, 224), Image.BILINEAR))
              for p in photos]
    x = zoo.preprocess_imagenet_lite(np.stack(images), size=None)
    cells, titles, rows = [], [], []
    predicted = adapter.explain(model, x, method="cam").targets
    # the annotated class where ImageNet-1k has it (ground-truth-known), else the predicted one
    targets = [int(t) if p.imagenet_index is None else p.imagenet_index
               for p, t in zip(photos, predicted)]
    expl = {m: adapter.explain(model, x, method=m, targets=targets) for m in ("cam", "gradcam")}
    for i, p in enumerate(photos):
        # the photo's boxes in the 224x224 frame, rounded to whole pixels to be drawn
        gt = np.round(scale_boxes(p.boxes, (p.image.shape[1], p.image.shape[0]), 224)).astype(
            np.int64)
        pred_class = int(predicted[i])
        row = {"photo": p.name, "object": p.class_name, "imagenet_class": p.imagenet_index,
               "predicted": pred_class}
        for m, e in expl.items():
            pred = boxes_from_map(e.maps[i], threshold=0.2)
            iou = best_iou(pred, gt)
            row[f"{m}_iou"] = iou
            cells.append(_overlay_cell(images[i], e.maps[i], gt, pred, scale=1))
            titles.append(f"{p.name.split('_')[-1]} {m} IoU {iou:.2f}")
        rows.append(row)
    save_png(image_grid(cells, ncols=4, titles=titles), out_dir / "localise_photos.png")
    return {"photos": rows, "figure": "localise_photos.png"}


# ----------------------------------------------------------------------------- the stage
def _evaluate_framework(fw, cfg, sizes, test, progress, out_dir) -> dict:
    from cam_core.explain import METHODS

    trained = stage_train.trained_model(fw, quick=cfg["quick"], tiny=cfg["tiny"],
                                        model=cfg["model"], progress=progress)
    model = _Model(trained)
    labels = test.labels.astype(np.int64)
    size = test.images.shape[1]
    logits = trained.logits(test.images)
    correct = np.argmax(logits, axis=1) == labels
    n_eval = min(sizes["n_eval"], len(labels))
    n_slow = min(sizes["n_slow"], n_eval)
    n_faith = min(sizes["n_faith"], len(labels))
    res = {"test_accuracy": float(np.mean(correct)), "test_images": len(labels), "boxes": {},
           "faithfulness": {}, "seconds": {}}
    gallery_idx = list(range(min(4, n_slow)))
    maps_for_gallery = {}
    methods = FAST_METHODS + NEW_FAST_METHODS + OWN_PASS_METHODS + SLOW_METHODS + NEW_SLOW_METHODS
    bar = progress_bar(methods, enabled=progress, desc=f"localise {fw}", unit="method")
    for method in bar:
        t0 = time.perf_counter()
        n = n_slow if method in SLOW_METHODS + NEW_SLOW_METHODS else n_eval
        maps, raw = model.explain(test.images[:n], labels[:n], method, batch=sizes["batch"])
        t_explain = time.perf_counter() - t0
        boxes = [test.boxes[i] for i in range(n)]
        res["boxes"][method] = _box_figures(maps, raw, METHODS[method].relu, boxes,
                                            correct[:n], size)
        t1 = time.perf_counter()
        k = min(n_faith, n)
        res["faithfulness"][method] = _faithfulness(model, test.images[:k], labels[:k],
                                                    maps[:k], steps=sizes["steps"],
                                                    batch=sizes["batch"])
        res["seconds"][method] = {"explain": round(t_explain, 2),
                                  "metrics": round(t1 - t0 - t_explain, 2),
                                  "faithfulness": round(time.perf_counter() - t1, 2)}
        maps_for_gallery[method] = maps[gallery_idx]
    res["randomisation"] = _randomisation(model, test.images, labels, methods, sizes)
    png = _gallery(test, gallery_idx, maps_for_gallery, out_dir / f"localise_gallery_{fw}.png",
                   fw)
    res["gallery"] = png.name
    return res


def _markdown(results: dict, photos: dict | None, skipped: dict, cfg: dict, sizes: dict,
              n_test: int) -> str:
    n_eval = min(sizes["n_eval"], n_test)
    md = [
        "## Localisation and faithfulness on the synthetic test set",
        "",
        f"The first {n_eval} of the {n_test} test images at {cfg['size']}x{cfg['size']}, maps "
        f"for the true class (ground-truth-known). Box accuracy sweeps 100 thresholds; "
        f"MaxBoxAccV2 averages IoU 0.3/0.5/0.7 over all boxes. `native`: the 64x64 maps, "
        f"half-open boxes; `wsol`: the reference protocol of Choe et al. (maps resized "
        f"bicubically to 224, inclusive-corner IoU). Fixed thresholds (native, largest box): "
        f"20% of the maximum (CAM paper) and 15% (Grad-CAM paper). Score-CAM, Ablation-CAM, SS-CAM, IS-CAM: "
        f"the first {sizes['n_slow']} images only.",
        "",
    ]
    for fw, r in results.items():
        rows = []
        for method, b in r["boxes"].items():
            rows.append([method, b["images"], b["native"]["MaxBoxAcc"],
                         b["native"]["MaxBoxAccV2"], b["wsol"]["MaxBoxAcc"],
                         b["wsol"]["MaxBoxAccV2"], b["native"]["top-1 loc@20"],
                         b["native"]["GT-known loc@20"], b["native"]["top-1 loc@15"],
                         b["native"]["GT-known loc@15"], b["native"]["mean IoU@20"]])
        md += [
            f"### {fw} (test accuracy {100 * r['test_accuracy']:.1f}% on "
            f"{r['test_images']} images)",
            "",
            md_table(["method", "images", "MaxBoxAcc native", "MaxBoxAccV2 native",
                      "MaxBoxAcc wsol", "MaxBoxAccV2 wsol", "top-1 loc @20%",
                      "GT-known loc @20%", "top-1 loc @15%", "GT-known loc @15%",
                      "mean IoU @20%"], rows),
            "",
        ]
    rows = []
    for fw, r in results.items():
        for method, f in r["faithfulness"].items():
            rows.append([fw, method, f["images"], f["average_drop"],
                         f["increase_in_confidence"], fmt(f["deletion_auc"], 3),
                         fmt(f["insertion_auc"], 3), f["road_images"], fmt(f["road_morf"], 3),
                         fmt(f["road_lerf"], 3), fmt(f["road_combined"], 3)])
    md += [
        "### Faithfulness (true-class probability)",
        "",
        f"Average Drop (%, lower is better), Increase in Confidence (%), deletion AUC (lower is "
        f"better) and insertion AUC (higher is better) with {sizes['steps']} steps; masked "
        f"pixels become mid-grey (the zero input after scaling to [-1, 1]).",
        "",
        md_table(["framework", "method", "images", "Average Drop", "Increase in Conf.",
                  "deletion AUC", "insertion AUC", "ROAD images", "ROAD MoRF",
                  "ROAD LeRF", "ROAD (LeRF-MoRF)/2"], rows),
        "",
        f"ROAD (Rong et al., ICML 2022): the true-class probability with "
        f"{'/'.join(map(str, ROAD_BENCH_PERCENTAGES))}% of the pixels imputed from their "
        f"neighbours (noisy linear imputation), most (MoRF, lower is better) or least (LeRF, "
        f"higher is better) relevant first, averaged over the percentages.",
        "",
    ]
    rows = []
    for fw, r in results.items():
        rnd = r.get("randomisation")
        if rnd:
            for method, row in rnd["methods"].items():
                rows.append([fw, method, row["images"], *(fmt(row[c], 3) for c in rnd["cascade"])])
    if rows:
        cascade = next(iter(results.values()))["randomisation"]["cascade"]
        md += [
            "### Sanity check: model-parameter randomisation (Adebayo et al., NeurIPS 2018)",
            "",
            "Mean Spearman rank correlation between each method's maps for the trained model "
            "and for copies whose top layers are re-initialised (He-normal, seed 0): the "
            "classifier, then the classifier and the explained layer. Near 1 fails the check "
            "(the map does not depend on those weights); near 0 passes.",
            "",
            md_table(["framework", "method", "images",
                      *(f"rho, {c} re-initialised" for c in cascade)], rows),
            "",
        ]
    md += [
        "![BoxAcc against the threshold](localise_boxacc.svg)",
        "",
    ]
    md += [f"![{fw} gallery]({r['gallery']})" for fw, r in results.items()]
    md += ["", "Galleries: ground truth green, the largest box at 20% of the maximum red."]
    if photos and "photos" in photos:
        rows = [[p["photo"], p["object"], p["imagenet_class"], p["predicted"],
                 fmt(p["cam_iou"], 2), fmt(p["gradcam_iou"], 2)] for p in photos["photos"]]
        md += ["", "### Sample photographs through the pretrained EfficientNet-Lite0 (torch)", "",
               "Maps for the annotated class (the predicted one for the motorcycle, not an "
               "ImageNet-1k class); IoU of the largest box at 20% with this project's own box "
               "annotation.", "",
               md_table(["photo", "object", "ImageNet class", "predicted", "CAM IoU",
                         "Grad-CAM IoU"], rows),
               "", "![photos](localise_photos.png)"]
    elif photos:
        md += ["", f"Sample photographs: skipped ({photos['skipped']})."]
    if skipped:
        md += ["", "Not evaluated: " + "; ".join(f"{k} ({v})" for k, v in skipped.items())]
    return "\n".join(md)


def run(*, quick: bool = True, out_dir: Path, progress: bool = True, model: str = "tiny",
        tiny: bool = False, frameworks=stage_train.FRAMEWORKS, photos: bool = True) -> dict:
    """Evaluate every method on the synthetic test set for each framework's trained model."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = stage_train.config(quick=quick, tiny=tiny, model=model)
    sizes = dict(_SIZES["tiny" if tiny else "quick" if quick else "full"])
    _, test = stage_train.synthetic_split(cfg)
    results, skipped = {}, {}
    for fw in frameworks:
        try:
            results[fw] = _evaluate_framework(
                fw, {"quick": quick, "tiny": tiny, "model": model}, sizes, test, progress,
                out_dir)
        except ModuleNotFoundError as exc:
            skipped[fw] = f"{exc.name} is not installed"
    if not results:
        return {"name": "localise", "skipped": "; ".join(f"{k}: {v}" for k, v in skipped.items())}
    plot_boxacc({fw: r["boxes"] for fw, r in results.items()}, out_dir / "localise_boxacc.svg")
    photo_res = None
    if photos and not tiny:
        try:
            photo_res = _photos(out_dir, progress)
        except ImportError as exc:  # the demo extra (or torch) is missing
            photo_res = {"skipped": str(exc).splitlines()[0]}
    figures = {"settings": {**cfg, **sizes, "n_test": len(test.labels)}, "frameworks": results,
               "photos": photo_res, "skipped": skipped}
    headline = {}
    for fw, r in results.items():
        cam = r["boxes"]["cam"]
        headline[f"{fw} CAM MaxBoxAccV2 wsol"] = round(cam["wsol"]["MaxBoxAccV2"], 1)
        headline[f"{fw} CAM MaxBoxAccV2 native"] = round(cam["native"]["MaxBoxAccV2"], 1)
    return {"name": "localise", "figures": figures,
            "markdown": _markdown(results, photo_res, skipped, cfg, sizes, len(test.labels)),
            "headline": headline}


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    res = run(quick=True, out_dir=Path(__file__).resolve().parent / "results" / "_scratch")
    print(res.get("markdown", res))
