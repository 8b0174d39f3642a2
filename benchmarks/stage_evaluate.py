"""Stage "evaluate": throughput of the evaluation engine (:mod:`cam_core.evaluate`).

Two measurements:

- **Sweep-bound part** (maps given, no model): batches of CAM-like 224 x 224 maps (the maps of
  stage "sweep", seeded) scored as the engine scores them (:func:`cam_core.evaluate.score_task`: the
  WSOL sweep over 100 thresholds, MaxBoxAcc and MaxBoxAccV2, localisation at 20% and 15%, the
  gallery IoU), once in the calling process (1 worker) and once in a pool of 2 worker processes
  (the engine's pool, started before timing; its start-up is reported apart). Rounds interleave
  the two; medians of the warm rounds. Aim: >= 1.8x with 2 workers on a 2-core machine.
- **Pipeline** (with ``--data``, the ImageNet subset, and the demo EfficientNet-Lite0): images per
  second of :func:`cam_core.evaluate.evaluate` for cam + gradcam under the wsol protocol, with 1
  worker and with every available core, and the time shares of decoding (summed over the decoding
  threads), the model (the calling thread) and the sweeps (summed over the workers). The figures of
  the two runs are checked identical.

The machine is shared: the load average before and after each measurement is reported.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks._common import cpu_model, fmt, md_table

__all__ = ["run", "sweep_bound"]


def _load() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _tasks(n_maps: int, batch: int):
    from benchmarks._scoring import cam_like_maps, random_gts
    from cam_core.evaluate import EvalSettings

    maps = cam_like_maps(n_maps).astype(np.float32)
    gts = random_gts(n_maps, maps.shape[1], maps.shape[2], 1)
    native = [g.astype(np.float64) + np.array([0, 0, 1, 1]) for g in gts]
    settings = EvalSettings(methods=("cam",), protocol="wsol", batch_size=batch)
    correct = np.ones(n_maps, dtype=bool)
    return [(maps[i:i + batch], gts[i:i + batch], native[i:i + batch], correct[i:i + batch],
             settings) for i in range(0, n_maps, batch)]


def _timed_score(task):
    """The engine's scoring of one task, with the task's wall and CPU seconds (the CPU time shows
    whether the process had a core to itself: on a shared machine it gets less)."""
    from cam_core.evaluate import score_task

    w0, c0 = time.perf_counter(), time.process_time()
    out, _ = score_task(task)
    return out, time.perf_counter() - w0, time.process_time() - c0


def sweep_bound(n_maps: int = 128, batch: int = 16, rounds: int = 3, workers: int = 2) -> dict:
    """Seconds per round of the engine's scoring of ``n_maps`` maps, inline and in a pool."""
    from cam_core.evaluate import sweep_pool

    tasks = _tasks(n_maps, batch)
    t0 = time.perf_counter()
    pool = sweep_pool(workers)
    list(pool.map(_timed_score, tasks[:workers]))  # start every worker (imports included)
    startup = time.perf_counter() - t0
    times: dict[str, list[float]] = {"1": [], str(workers): []}
    cpu_share: dict[str, list[float]] = {"1": [], str(workers): []}
    outs = {}
    load_before = _load()
    try:
        for r in range(rounds + 1):
            order = ["1", str(workers)] if r % 2 == 0 else [str(workers), "1"]
            for key in order:
                t0 = time.perf_counter()
                if key == "1":
                    done = [_timed_score(t) for t in tasks]
                else:
                    done = list(pool.map(_timed_score, tasks))
                dt = time.perf_counter() - t0
                if r:
                    times[key].append(dt)
                    cpu_share[key].append(sum(c for _, _, c in done) / sum(w for _, w, _ in done))
                outs[key] = [o for o, _, _ in done]
    finally:
        pool.shutdown()
    same = all(np.array_equal(a[k], b[k]) for a, b in zip(outs["1"], outs[str(workers)])
               for k in a)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"maps": n_maps, "batch": batch, "rounds": rounds, "workers": workers,
            "seconds": med, "times_s": times, "pool_startup_s": startup,
            "maps_per_s": {k: n_maps / v for k, v in med.items()},
            "speedup": med["1"] / med[str(workers)], "identical": same,
            # CPU seconds per wall second inside the tasks: 1.0 when each process had a core
            "cpu_per_wall": {k: statistics.median(v) for k, v in cpu_share.items()},
            "load_before": load_before, "load_after": _load()}


def pipeline(data: Path, limit: int | None, workers_all: int, progress: bool) -> dict:
    from cam_core.adapters.models_torch import efficientnet_lite0

    from cam_core.data import read_wsol
    from cam_core.evaluate import evaluate

    model = efficientnet_lite0(pretrained=True).eval()
    ds = read_wsol(data)
    out = {"images": len(ds) if limit is None else min(limit, len(ds)), "runs": {}}
    evs = {}
    for workers in dict.fromkeys((1, workers_all)):
        load = _load()
        t0 = time.perf_counter()
        ev = evaluate(model, ds, methods=("cam", "gradcam"), protocol="wsol", preprocess="lite",
                      size=224, batch_size=64, limit=limit, workers=workers, progress=progress)
        wall = time.perf_counter() - t0
        t = ev.timings
        busy = sum(t[k] for k in ("decode", "model", "sweep")) or 1.0
        out["runs"][workers] = {
            "seconds": wall, "images_per_s": ev.images / wall,
            "decode_s": t["decode"], "model_s": t["model"], "sweep_s": t["sweep"],
            "shares": {k: t[k] / busy for k in ("decode", "model", "sweep")},
            "load_before": load, "load_after": _load(),
            "MaxBoxAccV2": {m: r.metrics["MaxBoxAccV2"] for m, r in ev.methods.items()},
        }
        evs[workers] = ev
    first, last = evs[1], evs[workers_all]
    out["identical"] = all(first.methods[m].curves == last.methods[m].curves
                           and first.methods[m].metrics == last.methods[m].metrics
                           for m in first.methods)
    return out


def run(*, quick: bool = True, out_dir: Path | None = None, progress: bool = True,
        data: Path | None = None) -> dict:
    """Run the stage; see the module docstring."""
    from cam_core.evaluate import available_cores

    cores = available_cores()
    sb = sweep_bound(n_maps=128 if quick else 512, rounds=3 if quick else 5,
                     workers=max(2, min(cores, 2)))
    figures = {"machine": cpu_model(), "cores": cores, "sweep_bound": sb}
    md = [
        "## Evaluation engine throughput",
        "",
        f"Machine: {figures['machine']}, {cores} cores available, shared with other work "
        f"(load average before / after: {sb['load_before']} -> {sb['load_after']}).",
        "",
        f"**Sweep-bound part** (maps given, no model): {sb['maps']} CAM-like 224x224 maps in "
        f"batches of {sb['batch']}, the engine's scoring (wsol protocol, 100 thresholds, "
        f"MaxBoxAcc/V2, loc@20/15, gallery IoU); median of {sb['rounds']} interleaved warm rounds; "
        f"pool start-up {fmt(sb['pool_startup_s'], 2)} s apart.",
        "",
        md_table(["workers", "seconds", "maps/s"],
                 [[k, fmt(v, 3), fmt(sb["maps_per_s"][k], 1)] for k, v in sb["seconds"].items()]),
        "",
        f"Speed-up with {sb['workers']} workers: **{fmt(sb['speedup'], 2)}x** (aim >= 1.8x on 2 "
        f"cores); per-batch states identical: {'yes' if sb['identical'] else 'NO'}. CPU seconds "
        f"per wall second inside the tasks (1.0: each process had a core to itself; less: the "
        f"machine was shared): 1 worker {fmt(sb['cpu_per_wall']['1'], 2)}, {sb['workers']} "
        f"workers {fmt(sb['cpu_per_wall'][str(sb['workers'])], 2)}.",
    ]
    headline = {"sweep speed-up 2 workers": round(sb["speedup"], 2)}
    errors = [] if sb["identical"] else ["sweep-bound: the pool's states differ from inline"]
    if data is not None:
        try:
            import efficientnet_lite_pytorch  # noqa: F401
        except ImportError:
            md += ["", "Pipeline not measured: the demo extra (efficientnet-lite-pytorch) is "
                       "not installed."]
        else:
            pl = pipeline(Path(data), 256 if quick else None, cores, progress)
            figures["pipeline"] = pl
            rows = [[w, fmt(r["seconds"], 1), fmt(r["images_per_s"], 1),
                     fmt(100 * r["shares"]["decode"], 0), fmt(100 * r["shares"]["model"], 0),
                     fmt(100 * r["shares"]["sweep"], 0), f"{r['load_before']} -> {r['load_after']}"]
                    for w, r in pl["runs"].items()]
            md += ["", f"**Pipeline**: {pl['images']} ImageNet images from `{data}`, "
                       "EfficientNet-Lite0 (CPU here), cam + gradcam, wsol protocol, batch 64. "
                       "Shares: of decode + model + sweep time (decode summed over threads, "
                       "sweeps over workers).", "",
                   md_table(["workers", "seconds", "images/s", "decode %", "model %",
                             "sweep %", "load"], rows), "",
                   f"Figures identical for 1 and {cores} workers: "
                   f"{'yes' if pl['identical'] else 'NO'}."]
            headline.update({f"images/s {w} workers": round(r["images_per_s"], 1)
                             for w, r in pl["runs"].items()})
            if not pl["identical"]:
                errors.append("pipeline: figures differ between worker counts")
    return {"name": "evaluate", "figures": figures, "markdown": "\n".join(md) + "\n",
            "headline": headline, "errors": errors}


if __name__ == "__main__":
    print(run(quick=True)["markdown"])
