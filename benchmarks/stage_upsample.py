"""Stage "upsample": throughput of :func:`cam_core.resize.upsample`, 7 x 7 maps to 224 x 224.

The floor is the memory fill rate: writing the same output bytes with ``ndarray.fill`` into a
preallocated float32 array, measured in the same run. Contenders, for N maps (N = 32 and 256):

- ``fill``: ``out.fill(1.0)`` (the floor) and ``copy``: ``np.copyto(out, src)`` (reads as many
  bytes as it writes; for reference);
- ``cam_core bilinear (out=)`` and ``cam_core bicubic (out=)``: into a preallocated array;
- ``cam_core bilinear``: allocating its result, as a user calls it;
- ``torch bilinear``: ``F.interpolate(mode="bilinear", align_corners=False)`` on CPU, when torch
  is importable (the NumPy view of its result included).

The contenders are interleaved round by round (one call of each per round, in a new order each
round: :func:`benchmarks._common.interleaved_rounds`, as every timed stage does), so that a slow
patch of the shared machine hits all of them alike. The first round is the cold
call (the interpolation matrices are not cached yet) and is reported apart; the next
``warmup`` rounds are discarded; the figure is the median of the ``repeats`` rounds after them.
Throughput is output bytes per second (``N * 224 * 224 * 4`` bytes per call).
"""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path

import numpy as np

from benchmarks._common import cpu_model, fmt, interleaved_rounds, md_table, progress_bar

__all__ = ["run"]

IN_SIZE = 7
OUT_SIZE = 224
BATCHES = (32, 256)
# (warm-up rounds after the cold one, timed rounds)
_ROUNDS = {True: (2, 9), False: (3, 31)}


def _contenders(n: int, torch) -> dict:
    from cam_core.resize import upsample

    rng = np.random.default_rng(n)
    maps = rng.random((n, IN_SIZE, IN_SIZE), dtype=np.float32)
    out = np.empty((n, OUT_SIZE, OUT_SIZE), dtype=np.float32)
    src = np.ones_like(out)
    fns = {
        "fill": lambda: out.fill(1.0),
        "copy": lambda: np.copyto(out, src),
        "cam_core bilinear (out=)": lambda: upsample(maps, OUT_SIZE, out=out),
        "cam_core bicubic (out=)": lambda: upsample(maps, OUT_SIZE, method="bicubic", out=out),
        "cam_core bilinear": lambda: upsample(maps, OUT_SIZE),
    }
    if torch is not None:
        interpolate = torch.nn.functional.interpolate

        def torch_bilinear():
            with torch.no_grad():
                t = torch.from_numpy(maps)[:, None]
                res = interpolate(t, size=(OUT_SIZE, OUT_SIZE), mode="bilinear",
                                  align_corners=False)
                return res[:, 0].numpy()

        fns["torch bilinear"] = torch_bilinear
    return fns


def _measure(n: int, torch, warmup: int, repeats: int, progress: bool) -> dict:
    from cam_core import resize

    resize.clear_cache()  # the first round pays for building the matrices
    fns = _contenders(n, torch)
    rounds = 1 + warmup + repeats
    with progress_bar(total=rounds, enabled=progress, desc=f"upsample N={n}", leave=False) as bar:
        times, _ = interleaved_rounds(fns, rounds, bar)
    nbytes = n * OUT_SIZE * OUT_SIZE * 4
    rows = {}
    for name, ts in times.items():
        timed = ts[1 + warmup :]
        median = statistics.median(timed)
        rows[name] = {
            "median_s": median,
            "min_s": min(timed),
            "cold_s": ts[0],
            "gb_per_s": nbytes / median / 1e9,
            "times_s": timed,
        }
    fill = rows["fill"]["median_s"]
    for row in rows.values():
        row["fraction_of_fill"] = fill / row["median_s"]
    return {"n": n, "output_bytes": nbytes, "rows": rows}


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def run(*, quick: bool, out_dir: Path, progress: bool = True) -> dict:
    """Measure upsampling throughput; see the module docstring. Writes nothing to ``out_dir``."""
    try:
        import torch
    except ImportError:
        torch = None
    warmup, repeats = _ROUNDS[bool(quick)]
    load_before = _load()
    results = [_measure(n, torch, warmup, repeats, progress) for n in BATCHES]
    machine = {
        "cpu": cpu_model(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "openblas_threads_env": os.environ.get("OPENBLAS_NUM_THREADS"),
        # other processes on a shared machine slow the BLAS threads down: say how busy it was
        "load_average_1min": {"before": load_before, "after": _load()},
    }
    figures = {
        "settings": {"in_size": IN_SIZE, "out_size": OUT_SIZE, "batches": list(BATCHES),
                     "warmup": warmup, "repeats": repeats, "quick": bool(quick),
                     "dtype": "float32"},
        "machine": machine,
        "results": results,
    }
    table = []
    for res in results:
        for name, row in res["rows"].items():
            table.append([str(res["n"]), name, row["median_s"] * 1e3, row["cold_s"] * 1e3,
                          row["gb_per_s"], fmt(100 * row["fraction_of_fill"], 0) + " %"])
    headline = {
        res["n"]: res["rows"]["cam_core bilinear (out=)"]["fraction_of_fill"] for res in results
    }
    figures["headline_fraction_of_fill"] = headline
    torch_note = "" if torch is not None else " torch is not installed: its row is missing."
    markdown = "\n".join([
        "### Upsampling 7 x 7 maps to 224 x 224 (float32)",
        "",
        f"Medians of {repeats} interleaved rounds after {warmup} warm-up rounds; the cold first "
        f"call (matrices not yet cached) is reported apart. The floor is `ndarray.fill` of the "
        f"same output bytes. Machine: {machine['cpu']}, {machine['cpu_count']} logical CPUs, "
        f"NumPy {machine['numpy']}, 1-minute load average {fmt(load_before, 2)} before the run"
        + (f", torch {machine['torch']} ({machine['torch_threads']} threads)." if torch else ".")
        + torch_note,
        "",
        md_table(["N", "contender", "median (ms)", "cold (ms)", "GB/s", "of fill rate"], table),
        "",
        "cam_core bilinear into a preallocated array reaches "
        + ", ".join(f"{100 * v:.0f} % (N={k})" for k, v in headline.items())
        + " of the fill rate.",
    ])
    return {"name": "upsample", "figures": figures, "markdown": markdown}


if __name__ == "__main__":
    res = run(quick=True, out_dir=Path(__file__).resolve().parent / "results" / "_scratch")
    print(res.get("markdown", res))
