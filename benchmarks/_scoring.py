"""What several benchmark stages share to score maps (imports no framework): the method lists,
the two protocols' box figures of a method (:class:`BoxStats`, on the engine's accumulators), the
maps fed to the WSOL reference, the BoxAcc figure and the correlation of two sets of maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks._common import save_figure

__all__ = ["FAST_METHODS", "FIXED_TAUS", "NEW_FAST_METHODS", "NEW_SLOW_METHODS", "SLOW_METHODS",
           "WSOL_SIZE", "BoxStats", "map_correlation", "plot_boxacc", "wsol_maps"]

# issue 15 added NEW_*: the methods from pytorch-grad-cam and torch-cam (SS-CAM, IS-CAM: slow)
FAST_METHODS = ("cam", "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam")


SLOW_METHODS = ("scorecam", "ablationcam")


NEW_FAST_METHODS = ("gradcamelementwise", "eigengradcam", "kpcacam", "fem", "randomcam",
                    "finercam")


NEW_SLOW_METHODS = ("sscam", "iscam", "smoothgradcam++")


WSOL_SIZE = 224


FIXED_TAUS = (0.2, 0.15)



def wsol_maps(raw: np.ndarray, relu: bool) -> np.ndarray:
    """Raw maps ``(N, h, w)`` as the WSOL reference feeds them: ReLU'd where the method's paper
    does, resized bicubically to 224x224 (its evaluator normalises them again)."""
    from cam_core.explain import display_maps

    return display_maps(np.asarray(raw, dtype=np.float32), relu=relu, size=WSOL_SIZE,
                        upsample="bicubic", normalise=False)


class BoxStats:
    """The box figures of one method, accumulated batch by batch (see the module docstring)."""

    def __init__(self):
        from cam_core.evaluate import EvalSettings, accumulators

        # the engine's accumulator schema (cam_core.evaluate.accumulators), for both protocols
        accs = {p: accumulators(EvalSettings(methods=(), protocol=p, n_thresholds=100,
                                             fixed_thresholds=FIXED_TAUS))
                for p in ("native", "wsol")}
        self.images = 0
        self.sweeps = {p: a["sweep"] for p, a in accs.items()}
        self.fixed = {tau: accs["native"][f"loc{round(100 * tau):02d}"] for tau in FIXED_TAUS}

    def update(self, maps, boxes, wsol_maps_, wsol_boxes, correct) -> None:
        """``maps``/``boxes``: native (half-open, the maps' frame); ``wsol_*``: the reference's
        224x224 maps and inclusive-corner boxes; ``correct``: top-1 right, per image."""
        self.sweeps["native"].update(maps, boxes)
        self.sweeps["wsol"].update(wsol_maps_, wsol_boxes)
        for loc in self.fixed.values():
            loc.update(maps, boxes, correct)
        self.images += len(maps)

    def result(self) -> dict:
        out = {"images": self.images}
        for name, acc in self.sweeps.items():
            r = acc.result()
            half = int(np.flatnonzero(r.deltas == 0.5)[0])
            out[name] = {
                "max_box_acc": r.max_box_acc,
                "max_box_acc_v2": r.max_box_acc_v2,
                "best_tau": r.best_tau,
                "mean_iou_at_best_tau": r.mean_iou,
                "taus": r.taus,
                "box_acc_at_iou_0.5": r.box_acc[:, half],
            }
        for tau, loc in self.fixed.items():
            r = loc.result()
            out[f"tau_{round(100 * tau)}"] = {"top1_loc": r.top1_loc,
                                              "gt_known_loc": r.gt_known_loc,
                                              "mean_iou": r.mean_iou}
        return out


def plot_boxacc(panels: dict, path: Path) -> Path:
    """BoxAcc at IoU 0.5 (native) against the threshold: one panel per key of ``panels``, whose
    value maps each method to its :meth:`BoxStats.result`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (fw, by_method) in zip(axes[0], panels.items()):
        for method, r in by_method.items():
            nat = r["native"]
            ax.plot(nat["taus"], nat["box_acc_at_iou_0.5"], lw=1.5,
                    ls="--" if method in SLOW_METHODS else "-",
                    label=f"{method} (max {nat['max_box_acc']:.1f})")
        ax.set_title(f"{fw}: BoxAcc at IoU 0.5 (native protocol)")
        ax.set_xlabel("threshold (fraction of the map's maximum)")
        ax.set_ylabel("BoxAcc (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def map_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over images of the Pearson correlation of two maps (1 or 0 for a constant map: equal
    or not)."""
    vals = []
    for m1, m2 in zip(a, b):
        m1, m2 = m1.ravel().astype(np.float64), m2.ravel().astype(np.float64)
        if m1.std() == 0 or m2.std() == 0:
            vals.append(float(np.array_equal(m1, m2)))
        else:
            vals.append(float(np.corrcoef(m1, m2)[0, 1]))
    return float(np.mean(vals))
