"""Stage "adapter_keras": what CAM and Grad-CAM cost through the Keras adapter, end to end.

Keras 3 on TensorFlow; ResNet-50 (``keras.applications.ResNet50(weights=None)``, seeded, nested as
one layer) + global average pooling + ``Dense(1000)`` (:func:`cam_core.adapters.keras.gap_classifier`)
at 224 x 224, batch 1 and 32, random normal inputs:

- ``forward``: the plain forward pass, ``model(x, training=False)`` inside one ``tf.function``
  (the floor);
- ``cam_core cam`` and ``cam_core gradcam``: :func:`cam_core.adapters.keras.explain` at
  ``"resnet50/conv5_block3_out"``, maps at the input size (capture, the method, the upsampling
  and the normalisation all included). The adapter runs its forward / gradient passes as
  ``tf.function``\\ s from the second call on (the cold first call is eager);
- ``tf-keras-vis gradcam``: ``tf_keras_vis.gradcam.Gradcam`` (``clone=False``, built once before
  timing, ``seek_penultimate_conv_layer=False`` so that it explains the same layer rather than
  the last ``Conv2D`` before it; its maps come at the input size in [0, 1]) on the same layers
  without the nesting (it cannot reach a layer inside a nested model), when it imports (optional, never a
  dependency; reported as skipped with the reason otherwise).

Every contender explains the same classes (the model's predictions, fixed before timing).
Contenders are interleaved round by round (a new seeded order each round, so that no contender
keeps the same predecessor: :func:`benchmarks._common.round_order`). Round 0 is the cold
first call and is reported apart; the next ``warmup`` rounds are discarded; the figure is the
median of the ``repeats`` rounds after them, in milliseconds per image, and its ratio to the
forward pass's median. Quick mode times tf-keras-vis at batch 1 only (at batch 32 it alone would
take minutes on two cores). tf-keras-vis's maps are compared with ours by the Pearson correlation per
image (mean over the batch).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks._common import (
    environment,
    fmt,
    interleaved_rounds,
    md_table,
    plot_ratio_bars,
    progress_bar,
    ratio_rows,
    round_order,
    set_seeds,
    set_threads,
)
from benchmarks._scoring import map_correlation

__all__ = ["run"]

SIZE = 224
BATCHES = (1, 32)
LAYER = "resnet50/conv5_block3_out"
_LABEL = "ResNet-50 (random weights) + GAP + Dense(1000), nested backbone"
# (warm-up rounds after the cold one, timed rounds) per batch size
_ROUNDS = {True: {1: (2, 7), 32: (1, 3)}, False: {1: (3, 21), 32: (2, 9)}}
_CONTROL = "forward, second tf.function (control)"
# batch 1 back to back: (rounds, calls per block); each contender runs a block of calls in a row
_BLOCKS = {True: (3, 5), False: (5, 8)}
_PROFILE_CALLS = 10


def _model(keras):
    from cam_core.adapters.keras import gap_classifier

    keras.utils.set_random_seed(0)
    backbone = keras.applications.ResNet50(
        weights=None, include_top=False, input_shape=(SIZE, SIZE, 3)
    )
    model = gap_classifier(backbone, 1000)
    # tf-keras-vis cannot reach a layer inside a nested model: it gets the same layers, flat
    head = model.get_layer("fc")(model.get_layer("avgpool")(backbone.output))
    return model, keras.Model(backbone.input, head, name="flat")


def _tf_keras_vis():
    """(Gradcam class, CategoricalScore) or (None, reason)."""
    try:
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.utils.scores import CategoricalScore
    except Exception as exc:  # ImportError, or a missing dependency of theirs
        return None, f"{type(exc).__name__}: {exc}"
    return (Gradcam, CategoricalScore), None


def _contenders(tf, model, flat, x, targets: list[int], vis) -> dict:
    """The timed callables; ``vis`` is tf-keras-vis's (Gradcam, CategoricalScore) or None."""
    from cam_core.adapters.keras import explain

    floor = tf.function(lambda z: model(z, training=False))
    # the control: the same forward pass traced as a second tf.function. Interleaved with the
    # floor, it pays what any second graph pays for the switch (caches, thread pool warm-up), so
    # its ratio is the part of every other ratio that is no work of the contender's
    control = tf.function(lambda z: model(z, training=False))
    fns = {
        "forward": lambda: floor(x).numpy(),
        _CONTROL: lambda: control(x).numpy(),
        "cam_core cam": lambda: explain(model, x, method="cam", layer=LAYER, targets=targets).maps,
        "cam_core gradcam": lambda: explain(
            model, x, method="gradcam", layer=LAYER, targets=targets
        ).maps,
    }
    if vis is not None:
        gradcam_cls, score_cls = vis
        visualizer = gradcam_cls(flat, clone=False)
        score = score_cls(targets)
        fns["tf-keras-vis gradcam"] = lambda: np.asarray(
            visualizer(
                score, x, penultimate_layer=LAYER.rsplit("/", 1)[-1], seek_penultimate_conv_layer=False
            )
        )
    return fns


def _measure(tf, model, flat, x, vis, warmup, repeats, bar) -> dict:
    targets = np.argmax(np.asarray(model(x, training=False)), axis=1).tolist()
    fns = _contenders(tf, model, flat, x, targets, vis)
    times, last = interleaved_rounds(fns, 1 + warmup + repeats, bar)
    rows = ratio_rows(times, len(x), warmup)
    ours = np.asarray(last["cam_core gradcam"])
    for name, row in rows.items():
        if name.startswith("tf-keras-vis"):
            row["correlation_to_cam_core_gradcam"] = map_correlation(np.asarray(last[name]), ours)
    return {"batch": len(x), "targets": targets, "rows": rows, "fns": fns}


# the forward pass right after a NumPy product of the size of the GAP + Dense check
_AFTER_BLAS = "forward, after a NumPy (1, 2048) x (2048, 1000) product"


def _after_blas(forward):
    """``forward`` preceded by a small multi-threaded BLAS call: OpenBLAS's threads spin for a
    while after it, on the cores TensorFlow's graph is about to use (what made the adapter's CAM
    path 1.7x the floor at batch 1 until its head check moved into the backend, issue 17)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1, 2048)).astype(np.float32)
    b = rng.standard_normal((2048, 1000)).astype(np.float32)

    def f():
        a @ b
        return forward()

    return f


def _back_to_back(fns: dict, rounds: int, calls: int, bar) -> dict:
    """Each contender in a block of ``calls`` consecutive calls (the first one of a block, which
    pays the switch from the previous graph, discarded), blocks in a new order each round; the
    median per call over all rounds and its ratio to the forward pass's."""
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for name in round_order(names, r):
            fns[name]()
            for _ in range(calls):
                t0 = time.perf_counter()
                fns[name]()
                times[name].append(time.perf_counter() - t0)
        bar.update(1)
    floor = statistics.median(times["forward"])
    return {name: {"median_ms_per_image": 1e3 * statistics.median(t),
                   "ratio_to_forward": statistics.median(t) / floor, "times_s": t}
            for name, t in times.items()}


def _profile(fns: dict, names: tuple[str, ...], calls: int) -> dict:
    """cProfile over ``calls`` back-to-back calls of each of ``names``: wall ms per call, the part
    inside TensorFlow's execution of the compiled graphs (``quick_execute``, where the model
    runs), and the rest (Python: the adapter, the NumPy method, upsampling, normalisation)."""
    import cProfile
    import pstats

    out = {}
    for name in names:
        fns[name]()
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        for _ in range(calls):
            fns[name]()
        prof.disable()
        wall = (time.perf_counter() - t0) / calls
        stats = pstats.Stats(prof).stats
        graph = sum(v[3] for (file, _, func), v in stats.items()
                    if func == "quick_execute" and file.endswith("execute.py"))
        top = sorted(((v[2], f"{Path(file).name}:{func}") for (file, _, func), v in stats.items()
                      if not any(k in file + func for k in ("tensorflow", "keras")) and v[2] > 0),
                     reverse=True)[:6]
        out[name] = {"wall_ms": 1e3 * wall, "graph_ms": 1e3 * graph / calls,
                     "python_ms": 1e3 * (wall - graph / calls),
                     "top_python_self_ms": {k: 1e3 * t / calls for t, k in top}}
    return out


def _raw_difference(model, flat, x, vis) -> float:
    """max |ReLU(our raw Grad-CAM) - tf-keras-vis's raw map| at the layer's size (no upsampling)."""
    from cam_core.adapters.keras import explain

    gradcam_cls, score_cls = vis
    targets = np.argmax(np.asarray(model(x, training=False)), axis=1).tolist()
    ours = np.maximum(explain(model, x, method="gradcam", layer=LAYER, targets=targets).raw, 0)
    theirs = gradcam_cls(flat, clone=False)(
        score_cls(targets), x, penultimate_layer=LAYER.rsplit("/", 1)[-1],
        seek_penultimate_conv_layer=False, expand_cam=False, normalize_cam=False,
    )
    return float(np.abs(ours - np.asarray(theirs)).max())


def _plot(entry: dict, out_dir: Path) -> str | None:
    bars = [(f"{name}\nN={b['batch']}", row["ratio_to_forward"])
            for b in entry["batches"] for name, row in b["rows"].items()]
    bars += [(f"{name}\nN=1, back to back", row["ratio_to_forward"])
             for name, row in entry.get("batch1_back_to_back", {}).items()]
    return plot_ratio_bars({entry["model"]: bars}, out_dir / "adapter_keras_ratios.png",
                           color="#cc6677")


def _measure_all(tf, keras, vis, rounds: dict, blocks: tuple, quick: bool, progress: bool):
    """Every timing of the stage on the nested ResNet-50: each batch size interleaved, batch 1
    back to back (with the forward pass right after a BLAS product) and profiled. Returns the
    figures' entry, the model and its flat twin (tf-keras-vis's)."""
    from cam_core.adapters.keras import layers_under_tape

    model, flat = _model(keras)
    entry = {"model": _LABEL, "layer": LAYER, "head_under_tape": layers_under_tape(model, LAYER),
             "batches": []}
    total = sum(1 + rounds[b][0] + rounds[b][1] for b in BATCHES) + blocks[0]
    with progress_bar(total=total, enabled=progress, desc="adapter_keras") as bar:
        for n in BATCHES:
            x = tf.constant(np.random.default_rng(n).standard_normal((n, SIZE, SIZE, 3), np.float32))
            warmup, repeats = rounds[n]
            use_vis = vis if (n == 1 or not quick) else None
            entry["batches"].append(_measure(tf, model, flat, x, use_vis, warmup, repeats, bar))
        fns1 = entry["batches"][0].pop("fns")
        fns1[_AFTER_BLAS] = _after_blas(fns1["forward"])
        entry["batch1_back_to_back"] = _back_to_back(fns1, *blocks, bar)
        del fns1[_AFTER_BLAS]
    entry["batch1_profile"] = _profile(fns1, ("forward", "cam_core cam", "cam_core gradcam"),
                                       _PROFILE_CALLS)
    for b in entry["batches"]:
        b.pop("fns", None)
    return entry, model, flat


def _markdown(entry: dict, figures: dict, *, rounds: dict, blocks: tuple, quick: bool,
              device_text: str, load_before, tf_version: str, keras_version: str, vis, vis_skip,
              raw_diff, png) -> str:
    """The stage's Markdown: the ratio table, batch 1 back to back and its profile, the BLAS
    note and tf-keras-vis's agreement."""
    rows = []
    b2b = entry["batch1_back_to_back"]
    for b in entry["batches"]:
        for name, row in b["rows"].items():
            corr = row.get("correlation_to_cam_core_gradcam")
            steady = b2b[name]["ratio_to_forward"] if b["batch"] == 1 else None
            rows.append([str(b["batch"]), name, fmt(row["median_ms_per_image"], 2),
                         fmt(row["cold_ms_per_image"], 2), fmt(row["ratio_to_forward"], 3),
                         "-" if steady is None else fmt(steady, 3),
                         "-" if corr is None else fmt(corr, 4)])
    prof = entry["batch1_profile"]
    prof_rows = [[name, fmt(p["wall_ms"], 1), fmt(p["graph_ms"], 1), fmt(p["python_ms"], 1),
                  ", ".join(f"`{k}` {fmt(v, 2)}" for k, v in list(p["top_python_self_ms"].items())[:3])]
                 for name, p in prof.items()]
    gap = prof["cam_core gradcam"]["wall_ms"] - prof["forward"]["wall_ms"]
    gap_python = prof["cam_core gradcam"]["python_ms"] - prof["forward"]["python_ms"]
    lines = [
        "### Keras adapter: CAM and Grad-CAM end to end vs the forward pass",
        "",
        f"{_LABEL}; layer `{LAYER}`; 224 x 224 random inputs; maps at the input size. The floor is "
        f"`model(x, training=False)` in one `tf.function`; the adapter's passes are `tf.function`s "
        f"from the second call (the cold first call runs eagerly). Under the tape (the head): "
        f"{', '.join(f'`{p}`' for p in entry['head_under_tape'])}. Medians of the timed rounds "
        f"(batch 1: {rounds[1][1]} after {rounds[1][0]} warm-up; batch 32: {rounds[32][1]} after "
        f"{rounds[32][0]}), contenders interleaved round by round; the cold first call apart. "
        f"Machine: {device_text}; TensorFlow {tf_version}, Keras {keras_version}; 1-minute "
        f"load average {fmt(load_before, 2)} before the run and "
        f"{fmt(figures['load_average_1min']['after'], 2)} after it (the machine is shared). Aims: "
        f"CAM within 1.05x and Grad-CAM within 1.1x of the forward pass (the head splits off here).",
        "",
        md_table(["N", "contender", "ms / image", "cold ms / image", "x forward",
                  "x forward, back to back", "corr. to ours"], rows),
        "",
        f"**Batch 1, interleaved and back to back.** Interleaved round by round (the table's "
        f"`x forward`), each contender runs right after a different graph; back to back, each "
        f"runs {blocks[1]} times in a row (the first call of each block, right after another "
        f"graph, discarded; {blocks[0]} rounds, a new order each). The control row is the floor's own "
        f"forward pass traced as a second `tf.function`: "
        f"{fmt(entry['batches'][0]['rows'][_CONTROL]['ratio_to_forward'], 3)}x interleaved, "
        f"{fmt(b2b[_CONTROL]['ratio_to_forward'], 3)}x back to back. The adapter's paths: "
        f"Grad-CAM {fmt(entry['batches'][0]['rows']['cam_core gradcam']['ratio_to_forward'], 3)}x "
        f"interleaved, {fmt(b2b['cam_core gradcam']['ratio_to_forward'], 3)}x back to back; CAM "
        f"{fmt(entry['batches'][0]['rows']['cam_core cam']['ratio_to_forward'], 3)}x and "
        f"{fmt(b2b['cam_core cam']['ratio_to_forward'], 3)}x. A profile of {_PROFILE_CALLS} "
        f"back-to-back calls (cProfile, which adds its own overhead to the Python side) splits "
        f"each call into TensorFlow's execution of the adapter's one compiled graph per call "
        f"(`quick_execute`) and the Python around it (the NumPy method, the 7 -> 224 "
        f"upsampling and the normalisation, the adapter's bookkeeping); Grad-CAM costs "
        f"{fmt(gap, 1)} ms more than the forward pass per call, {fmt(gap_python, 1)} ms of it "
        f"Python. Where a path is slower than the floor, the time is inside the graph's "
        f"execution, not in cam_core's Python:",
        "",
        md_table(["batch 1", "wall ms / call", "graph ms", "Python ms",
                  "largest Python self-times (ms / call)"], prof_rows),
        "",
        f"**Where the CAM path's batch-1 time went (issue 17).** The graph ran slower right after "
        f"a multi-threaded NumPy product: OpenBLAS's threads keep spinning for a while after a "
        f"call, on the same two cores TensorFlow's graph then needs. The forward pass right after "
        f"one (1, 2048) x (2048, 1000) product, the size of the adapter's check that the head "
        f"is GAP + Dense, runs at "
        f"{fmt(b2b[_AFTER_BLAS]['ratio_to_forward'], 3)}x back to back; the check now runs in "
        f"the backend, and the interleaved order changes every round, so no contender always "
        f"follows CAM. Any NumPy BLAS call of the user's between two explanations does the same "
        f"(``OPENBLAS_NUM_THREADS=1``, or threadpoolctl, avoids it).",
    ]
    if vis is None:
        lines += ["", f"tf-keras-vis gradcam: skipped ({vis_skip})."]
    else:
        lines += [
            "",
            f"tf-keras-vis explains the same layer and classes: its raw 7 x 7 maps differ from "
            f"ReLU(ours) by at most {raw_diff:.1e} (one image); the correlation of the "
            f"224 x 224 maps is below 1 because it upsamples with `scipy.ndimage.zoom` (order 1, "
            f"corner-aligned) where cam_core uses half-pixel centres."
            + (" Timed at batch 1 only in quick mode." if quick else ""),
        ]
    if png:
        lines += ["", f"![ratios to the forward pass]({png})"]
    return "\n".join(lines)


def run(*, quick: bool, out_dir: Path, progress: bool = True) -> dict:
    """Time CAM and Grad-CAM through the Keras adapter against the forward pass (module docstring)."""
    try:
        import tensorflow as tf  # noqa: F401  (threads are set before its first operation)

        threads = set_threads()
        import keras
    except ImportError as exc:
        return {"name": "adapter_keras", "skipped": f"keras / tensorflow is not installed ({exc})"}
    if keras.backend.backend() != "tensorflow":
        return {
            "name": "adapter_keras",
            "skipped": f"the Keras backend is {keras.backend.backend()!r}; this stage times TensorFlow",
        }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_seeds(0)
    vis, vis_skip = _tf_keras_vis()
    rounds, blocks = _ROUNDS[bool(quick)], _BLOCKS[bool(quick)]
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    entry, model, flat = _measure_all(tf, keras, vis, rounds, blocks, quick, progress)
    raw_diff = None
    if vis is not None:
        x1 = tf.constant(np.random.default_rng(1).standard_normal((1, SIZE, SIZE, 3), np.float32))
        raw_diff = _raw_difference(model, flat, x1, vis)
    env = environment()
    gpus = tf.config.list_physical_devices("GPU")
    figures = {
        "settings": {"size": SIZE, "batches": list(BATCHES), "layer": LAYER,
                     "rounds": {str(k): v for k, v in rounds.items()}, "quick": bool(quick),
                     "threads": threads, "floor": "model(x, training=False) in one tf.function",
                     "ours": "explain(); forward/gradient passes as tf.function from the 2nd call",
                     "tf_gpus": [g.name for g in gpus]},
        "machine": env["machine"],
        "versions": {**env["versions"], "tensorflow": tf.__version__, "keras": keras.__version__},
        "load_average_1min": {"before": load_before,
                              "after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "skipped_libraries": {} if vis is not None else {"tf-keras-vis gradcam": vis_skip},
        "results": [entry],
        "tf_keras_vis_raw_max_abs_difference": raw_diff,
    }
    png = _plot(entry, out_dir)
    b2b = entry["batch1_back_to_back"]
    figures["headline_ratios"] = {
        str(b["batch"]): {k: b["rows"][k]["ratio_to_forward"] for k in ("cam_core cam", "cam_core gradcam")}
        for b in entry["batches"]
    }
    figures["headline_ratios"]["1, back to back"] = {
        k: b2b[k]["ratio_to_forward"] for k in ("cam_core cam", "cam_core gradcam", _CONTROL)}
    device_text = (f"GPU {', '.join(g.name for g in gpus)}" if gpus
                   else f"CPU {env['machine'].get('cpu')}, {threads} TensorFlow intra-op threads")
    markdown = _markdown(entry, figures, rounds=rounds, blocks=blocks, quick=quick,
                         device_text=device_text, load_before=load_before,
                         tf_version=tf.__version__, keras_version=keras.__version__, vis=vis,
                         vis_skip=vis_skip, raw_diff=raw_diff, png=png)
    return {"name": "adapter_keras", "figures": figures, "markdown": markdown}


if __name__ == "__main__":
    res = run(quick=True, out_dir=Path(__file__).resolve().parent / "results" / "_scratch")
    print(res.get("markdown", res))
