"""What several benchmark stages share to score maps (imports no framework): the method lists,
the two protocols' box figures of a method (:class:`BoxStats`, on the engine's accumulators), the
maps fed to the WSOL reference, the BoxAcc figure, the correlation of two sets of maps, and
the seeded CAM-like maps and boxes of the sweep benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["FAST_METHODS", "FIXED_TAUS", "NEW_FAST_METHODS", "NEW_SLOW_METHODS", "OWN_PASS_METHODS",
           "SLOW_METHODS", "WSOL_SIZE", "BoxStats", "cam_like_maps", "map_correlation", "part_states",
           "plot_boxacc", "random_gts", "targets_for", "wsol_maps"]

# issue 15 added NEW_*: the methods from pytorch-grad-cam and torch-cam (SS-CAM, IS-CAM: slow)
FAST_METHODS = ("cam", "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam")


SLOW_METHODS = ("scorecam", "ablationcam")


NEW_FAST_METHODS = ("gradcamelementwise", "eigengradcam", "kpcacam", "fem", "randomcam",
                    "finercam")


NEW_SLOW_METHODS = ("sscam", "iscam", "smoothgradcam++")


# fast, but each needs a pass of its own: RefineCAM (several layers multiplied), ShapleyCAM (a
# second backward pass; the ReST score of the class), FullGrad (every bias layer and the input)
OWN_PASS_METHODS = ("refinecam", "shapleycam", "fullgrad")


def targets_for(adapter, method: str, labels) -> object:
    """The ``targets`` of the true classes ``labels`` for ``method``: ShapleyCAM's paper explains
    the ReST score (``adapter.rest_target``; for a logit after a linear head ShapleyCAM is
    Grad-CAM), every other method the logits."""
    labels = [int(v) for v in labels]
    return adapter.rest_target(labels) if method == "shapleycam" else labels


WSOL_SIZE = 224


FIXED_TAUS = (0.2, 0.15)



def wsol_maps(raw: np.ndarray, relu: bool) -> np.ndarray:
    """Raw maps ``(N, h, w)`` as the WSOL reference feeds them: ReLU'd where the method's paper
    does, resized bicubically to 224x224 (its evaluator normalises them again)."""
    from cam_core.explain import display_maps

    return display_maps(np.asarray(raw, dtype=np.float32), relu=relu, size=WSOL_SIZE,
                        upsample="bicubic", normalise=False)


def _accumulate(accs: dict, maps, boxes, correct) -> dict:
    """Feed one batch to one protocol's accumulators (:func:`cam_core.evaluate.accumulators`)."""
    for name, acc in accs.items():
        if name == "sweep":
            acc.update(maps, boxes)
        else:
            acc.update(maps, boxes, correct)
    return accs


def part_states(maps, boxes, correct, settings) -> tuple[dict, float]:
    """One batch through fresh accumulators of ``settings``: their states and the CPU seconds
    spent, what a sweep worker of :class:`BoxStats` returns."""
    import time

    from cam_core.evaluate import accumulators

    t0 = time.process_time()
    accs = _accumulate(accumulators(settings), maps, boxes, correct)
    return {name: acc.state() for name, acc in accs.items()}, time.process_time() - t0


class BoxStats:
    """The box figures of one method under both protocols, accumulated batch by batch with the
    engine's accumulators and summarised in its schema (:func:`cam_core.evaluate.figures`):
    ``result()`` is ``{"images": N, "native": {...}, "wsol": {...}}``, each protocol's entry
    the engine's metrics ("MaxBoxAcc", "GT-known loc@20", ...) plus its "curves".

    ``pool``: an executor (:func:`cam_core.evaluate.sweep_pool`) that runs the sweeps while the
    caller goes on with the next batch; the parts are merged in ``result()`` (the counters add
    up, so the figures are those of the inline sweeps; ``worker_cpu`` sums the workers' CPU
    seconds). Call ``result()`` before the pool shuts down or after it finished its work."""

    def __init__(self, pool=None):
        from cam_core.evaluate import EvalSettings, accumulators

        self.settings = {p: EvalSettings(methods=(), protocol=p, n_thresholds=100,
                                         fixed_thresholds=FIXED_TAUS) for p in ("native", "wsol")}
        self.accs = {p: accumulators(s) for p, s in self.settings.items()}
        self.images = 0
        self.pool, self._pending, self.worker_cpu = pool, [], 0.0

    def update(self, maps, boxes, wsol_maps_, wsol_boxes, correct) -> None:
        """``maps``/``boxes``: native (half-open, the maps' frame); ``wsol_*``: the reference's
        224x224 maps and inclusive-corner boxes; ``correct``: top-1 right, per image."""
        for p, (m, b) in {"native": (maps, boxes), "wsol": (wsol_maps_, wsol_boxes)}.items():
            if self.pool is None:
                _accumulate(self.accs[p], m, b, correct)
            else:
                task = (np.ascontiguousarray(m), list(b), np.asarray(correct), self.settings[p])
                self._pending.append((p, self.pool.submit(part_states, *task)))
        self.images += len(maps)

    def _merge_pending(self) -> None:
        from cam_core.evaluate import accumulators

        for p, future in self._pending:
            parts = accumulators(self.settings[p])
            states, cpu = future.result()
            self.worker_cpu += cpu
            for name, state in states.items():
                self.accs[p][name].merge(parts[name].load_state(state))
        self._pending = []

    def result(self) -> dict:
        from cam_core.evaluate import figures

        self._merge_pending()
        out = {"images": self.images}
        for p, accs in self.accs.items():
            metrics, curves = figures(accs, self.settings[p])
            out[p] = {**metrics, "curves": curves}
        return out


def plot_boxacc(panels: dict, path: Path) -> Path:
    """BoxAcc at IoU 0.5 (native) against the threshold, as SVG (the same charts as the command
    line's and the HTML report's, :mod:`cam_core.report`): one panel per key of ``panels``, whose
    value maps each method to its :meth:`BoxStats.result`. Returns the path written."""
    from cam_core._io import write_text
    from cam_core.report import boxacc_charts, svg_row

    n = max(len(by_method) for by_method in panels.values())
    width, height = 640, max(300, 60 + 16 * n)
    charts = []
    for fw, by_method in panels.items():
        curves = {f"{m} (max {r['native']['MaxBoxAcc']:.1f})": r["native"]["curves"]
                  for m, r in by_method.items()}
        charts += boxacc_charts(curves, criteria=("0.5",),
                                title=f"{fw}: BoxAcc at IoU 0.5 (native protocol)",
                                width=width, height=height, legend=230)
    path = Path(path)
    write_text(path, svg_row(charts, width=width, height=height))
    return path


def map_correlation(a: np.ndarray, b: np.ndarray, *, up_to_sign: bool = False) -> float:
    """Mean over images of the Pearson correlation of two maps (1 or 0 for a constant map: equal
    or not); ``up_to_sign``: its absolute value (a peer that keeps the sign an SVD returns)."""
    vals = []
    for m1, m2 in zip(a, b):
        m1, m2 = m1.ravel().astype(np.float64), m2.ravel().astype(np.float64)
        if m1.std() == 0 or m2.std() == 0:
            vals.append(float(np.array_equal(m1, m2)))
        else:
            c = float(np.corrcoef(m1, m2)[0, 1])
            vals.append(abs(c) if up_to_sign else c)
    return float(np.mean(vals))


def cam_like_maps(n: int, *, size: int = 224, seed: int = 0) -> np.ndarray:
    """``n`` CAM-like float32 maps: ReLU of 7 x 7 standard normal fields, bicubic to ``size``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):
        field = np.maximum(rng.standard_normal((7, 7)), 0).astype(np.float32)
        img = Image.fromarray(field, mode="F").resize((size, size), Image.BICUBIC)
        out[i] = np.asarray(img)
    return out


def random_gts(n: int, height: int, width: int, seed: int) -> list[np.ndarray]:
    """``n`` seeded random ground-truth boxes, one per image, inclusive corners inside
    ``height`` x ``width`` (what the sweep benchmarks score :func:`cam_like_maps` against)."""
    rng = np.random.default_rng(seed)
    gts = []
    for _ in range(n):
        x0 = int(rng.integers(0, width // 2))
        y0 = int(rng.integers(0, height // 2))
        x1 = int(min(width - 1, x0 + rng.integers(width // 8, width // 2)))
        y1 = int(min(height - 1, y0 + rng.integers(height // 8, height // 2)))
        gts.append(np.array([[x0, y0, x1, y1]]))
    return gts
