"""Stage "sweep": the WSOL box sweep of cam_core against the reference algorithm run with OpenCV.

The reference (clovaai/wsolevaluation, ``compute_bboxes_from_scoremaps`` and
``BoxEvaluator.accumulate``) thresholds the 8-bit map once per threshold, traces its contours
(``cv2.findContours`` RETR_TREE, CHAIN_APPROX_SIMPLE), boxes them (``cv2.boundingRect``) and scores
the boxes; :func:`opencv_reference_ious` below is that loop. cam_core's
``BoxAccuracy(protocol="wsol")`` gets the boxes of all thresholds from one run graph per map
(:mod:`cam_core._sweep`) and computes MaxBoxAcc and MaxBoxAccV2 in the same pass.

Measured per map (224 x 224), with 100 and 1000 thresholds: the median over rounds in which the
two are run interleaved (a new order each round), after one warm-up round (its time reported as
the cold call). The reference is timed for one contour mode (the largest contour, MaxBoxAcc), cam_core for both
modes at once. Correctness: the correct-image counts of both modes, compared at every threshold
and IoU threshold.

Maps: CAM-like random fields (7 x 7 non-negative values, ReLU of a standard normal, seeded,
upsampled bicubic to 224 x 224 with Pillow); plus real CAMs when a ``(N, H, W)`` ``.npy`` file is
named by the environment variable ``CAM_CORE_SWEEP_MAPS``. Ground-truth boxes are random
(seeded); they only decide which images count as correct.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import numpy as np

from benchmarks._common import (
    cpu_model,
    fmt,
    interleaved_rounds,
    md_table,
    progress_bar,
)
from benchmarks._scoring import cam_like_maps, random_gts

__all__ = ["opencv_reference_ious", "run"]

SEED = 0
SIZE = 224
DELTAS = (0.3, 0.5, 0.7)
ENV_MAPS = "CAM_CORE_SWEEP_MAPS"


def opencv_reference_ious(scoremap: np.ndarray, gt_boxes: np.ndarray, taus, *,
                          multi_contour: bool) -> np.ndarray:
    """Best IoU at each threshold, computed as the WSOL reference does (needs OpenCV).

    Parameters
    ----------
    scoremap : ndarray, shape (H, W)
        A map; it is min-max normalised first (a constant map becomes zeros).
    gt_boxes : ndarray, shape (G, 4)
        Inclusive-corner integer boxes in the map's frame.
    taus : sequence of float
    multi_contour : bool
        False: the contour of largest ``cv2.contourArea`` (MaxBoxAcc); True: all (MaxBoxAccV2).

    Returns
    -------
    ndarray, shape (T,)
    """
    import cv2

    m = np.array(scoremap, dtype=np.float64, copy=True)  # the reference's t2n casts to float64
    if m.min() == m.max():
        m = np.zeros_like(m)
    else:
        m -= m.min()
        m /= m.max()
    height, width = m.shape
    image = np.expand_dims((m * 255).astype(np.uint8), 2)
    gt = np.asarray(gt_boxes)
    area_gt = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
    out = np.empty(len(taus))
    for i, tau in enumerate(taus):
        _, thr = cv2.threshold(src=image, thresh=int(tau * np.max(image)), maxval=255,
                               type=cv2.THRESH_BINARY)
        contours = cv2.findContours(image=thr, mode=cv2.RETR_TREE,
                                    method=cv2.CHAIN_APPROX_SIMPLE)[0]
        if len(contours) == 0:
            boxes = np.array([[0, 0, 0, 0]])
        else:
            if not multi_contour:
                contours = [max(contours, key=cv2.contourArea)]
            rows = []
            for c in contours:
                x, y, w, h = cv2.boundingRect(c)
                rows.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
            boxes = np.array(rows)
        ix = np.maximum(0, np.minimum(boxes[:, None, 2], gt[None, :, 2])
                        - np.maximum(boxes[:, None, 0], gt[None, :, 0]) + 1)
        iy = np.maximum(0, np.minimum(boxes[:, None, 3], gt[None, :, 3])
                        - np.maximum(boxes[:, None, 1], gt[None, :, 1]) + 1)
        inter = ix * iy
        area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
        out[i] = (inter / (area[:, None] + area_gt[None, :] - inter)).max()
    return out


def _opencv_boxes_only(maps, taus) -> None:
    """The reference's per-threshold OpenCV work alone: threshold, contours, largest, its box."""
    import cv2

    for scoremap in maps:
        m = np.array(scoremap, copy=True)
        if m.min() != m.max():
            m -= m.min()
            m /= m.max()
        else:
            m = np.zeros_like(m)
        image = np.expand_dims((m * 255).astype(np.uint8), 2)
        for tau in taus:
            _, thr = cv2.threshold(src=image, thresh=int(tau * np.max(image)), maxval=255,
                                   type=cv2.THRESH_BINARY)
            contours = cv2.findContours(image=thr, mode=cv2.RETR_TREE,
                                        method=cv2.CHAIN_APPROX_SIMPLE)[0]
            if len(contours):
                cv2.boundingRect(max(contours, key=cv2.contourArea))


def _reference_counts(maps, gts, taus, *, multi_contour: bool) -> np.ndarray:
    correct = np.zeros((len(taus), len(DELTAS)), dtype=np.int64)
    for m, gt in zip(maps, gts):
        ious = opencv_reference_ious(m, gt, taus, multi_contour=multi_contour)
        correct += ious[:, None] >= np.asarray(DELTAS)[None, :]
    return correct


def _measure(maps, gts, n_taus: int, rounds: int, progress: bool) -> dict:
    """Interleaved timing of cam_core and the OpenCV reference, and the count comparison."""
    from cam_core.metrics import BoxAccuracy

    taus = np.arange(0, 1, 1 / n_taus)
    holder = {}

    def ours():
        acc = BoxAccuracy(taus=n_taus, deltas=DELTAS, protocol="wsol")
        acc.update(maps, gts)
        holder["result"] = acc.result()

    def reference():
        holder["ref"] = _reference_counts(maps, gts, taus, multi_contour=False)

    def boxes_only():
        _opencv_boxes_only(maps, taus)

    runners = {"cam_core": ours, "opencv": reference, "opencv_boxes_only": boxes_only}
    with progress_bar(total=rounds + 1, enabled=progress, desc=f"sweep {n_taus} taus",
                      leave=False) as bar:
        every, _ = interleaved_rounds(runners, rounds + 1, bar)  # round 0: the cold calls
    cold = {k: t[0] for k, t in every.items()}
    times = {k: t[1:] for k, t in every.items()}
    res = holder["result"]
    ref_v1 = holder["ref"]
    ref_v2 = _reference_counts(maps, gts, taus, multi_contour=True)
    n = len(maps)
    ms = {k: 1000 * statistics.median(v) / n for k, v in times.items()}
    mismatch_v1 = int(np.any(res.correct != ref_v1, axis=1).sum())
    mismatch_v2 = int(np.any(res.correct_all != ref_v2, axis=1).sum())
    return {
        "taus": n_taus,
        "maps": n,
        "rounds": rounds,
        "ms_per_map": ms,
        "cold_ms_per_map": {k: 1000 * v / n for k, v in cold.items()},
        "times_s": times,
        "ratio_opencv_over_cam_core": ms["opencv"] / ms["cam_core"],
        "ratio_boxes_only_over_cam_core": ms["opencv_boxes_only"] / ms["cam_core"],
        "identical_v1": mismatch_v1 == 0,
        "identical_v2": mismatch_v2 == 0,
        "mismatching_thresholds_v1": mismatch_v1,
        "mismatching_thresholds_v2": mismatch_v2,
        "runs_only_fraction": res.fast_fraction,
        "max_box_acc": res.max_box_acc,
        "max_box_acc_v2": res.max_box_acc_v2,
        "reference_max_box_acc": float(100.0 * ref_v1[:, 1].max() / n),
        "reference_max_box_acc_v2": float(np.mean(100.0 * ref_v2.max(axis=0) / n)),
    }


def run(*, quick: bool = True, out_dir: Path | None = None, progress: bool = True) -> dict:
    """Run the stage; see the module docstring. ``out_dir`` is not written to (no figure)."""
    try:
        import cv2
    except ImportError:
        return {"name": "sweep", "skipped": "OpenCV (opencv-python-headless) is not installed: "
                                            "no reference to compare with"}
    n_maps = 40 if quick else 200
    rounds = 3 if quick else 7
    sets = {"cam-like (7x7 ReLU normal, bicubic)": cam_like_maps(n_maps)}
    path = os.environ.get(ENV_MAPS)
    if path:
        real = np.load(path)
        if real.ndim != 3:
            raise ValueError(f"{ENV_MAPS}={path!r} must hold an (N, H, W) array; got "
                             f"{real.shape}")
        sets[f"real CAMs ({Path(path).name})"] = real[:n_maps]
    figures = {"machine": cpu_model(), "opencv": cv2.__version__, "size": SIZE,
               "deltas": list(DELTAS), "sets": {}}
    rows = []
    for name, maps in sets.items():
        gts = random_gts(len(maps), maps.shape[1], maps.shape[2], SEED + 1)
        per = {}
        for n_taus in (100, 1000):
            m = _measure(maps, gts, n_taus, rounds if n_taus == 100 else max(1, rounds - 1),
                         progress)
            per[n_taus] = m
            rows.append([
                name, str(n_taus), fmt(m["ms_per_map"]["opencv_boxes_only"], 2),
                fmt(m["ms_per_map"]["opencv"], 2), fmt(m["ms_per_map"]["cam_core"], 2),
                fmt(m["ratio_boxes_only_over_cam_core"], 2),
                fmt(m["ratio_opencv_over_cam_core"], 2),
                "yes" if m["identical_v1"] else f"no ({m['mismatching_thresholds_v1']})",
                "yes" if m["identical_v2"] else f"no ({m['mismatching_thresholds_v2']})",
                fmt(100 * m["runs_only_fraction"], 1),
            ])
        figures["sets"][name] = per
    md = [
        "## Threshold sweep: cam_core vs the WSOL reference (OpenCV)",
        "",
        f"{SIZE} x {SIZE} maps, {n_maps} per set, ms per map (median of rounds in which the "
        f"three run in a new order each round, warm). \"OpenCV boxes\": the reference's per-threshold "
        f"OpenCV work only (threshold, findContours, largest contourArea, boundingRect); "
        f"\"reference\": the whole reference loop with its IoU and counting (largest "
        f"contour); cam_core: everything, MaxBoxAcc and MaxBoxAccV2 together. OpenCV "
        f"{cv2.__version__}. Counts compared at every threshold and at IoU "
        f"{', '.join(str(d) for d in DELTAS)} (mismatching thresholds in brackets). "
        f"Machine: {figures['machine']}, {os.cpu_count()} logical CPUs, shared.",
        "",
        md_table(["maps", "thresholds", "OpenCV boxes ms/map", "reference ms/map",
                  "cam_core ms/map", "speed-up vs boxes", "speed-up vs reference",
                  "identical (largest)", "identical (all)", "% (map, tau) without holes"],
                 rows),
    ]
    return {"name": "sweep", "figures": figures, "markdown": "\n".join(md) + "\n"}


if __name__ == "__main__":
    from benchmarks._common import ROOT

    scratch = ROOT / "benchmarks" / "results" / "_scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    print(run(quick=True, out_dir=scratch)["markdown"])
