"""Helpers shared by the benchmark stages: timing, memory, environment, files and progress bars.

Timing follows the house rule: a function is called ``warmup`` times first (the very first call
is reported on its own as the cold call), then ``repeats`` times, and the median of those
repeats is the figure. Memory is the process's peak resident set size, which only grows, so two
readings taken at two points of a streamed loop show whether memory stayed flat.

Every file the suite writes goes through :func:`write_text`, :func:`write_json` or
:func:`save_figure`, which write a temporary file next to the target and ``os.replace`` it, so a
reader never sees half a report.

Nothing here imports a framework; :func:`environment` reports the versions of torch, TensorFlow
and Keras only when they are already imported (or when asked to import them).
"""

from __future__ import annotations

import importlib
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from cam_core._io import atomic_write_bytes, write_json, write_text
from cam_core._progress import progress_bar as _progress_bar
from cam_core._tables import fmt, md_table

__all__ = [
    "IMAGENET",
    "ROOT",
    "cpu_model",
    "environment",
    "fmt",
    "image_batch",
    "interleaved_rounds",
    "md_table",
    "median_time",
    "peak_rss_mb",
    "plot_ratio_bars",
    "progress_bar",
    "ratio_rows",
    "round_order",
    "rss_mb",
    "save_figure",
    "set_seeds",
    "set_threads",
    "write_json",
    "write_text",
]

ROOT = Path(__file__).resolve().parents[1]
#: The ImageNet validation subset (``../shared/data``), when the machine has it.
IMAGENET = ROOT.parent / "shared" / "data" / "imagenet-val-1300"

# Packages whose versions go into every report, and the frameworks reported only when loaded.
_LIBRARIES = ("numpy", "scipy", "skimage", "PIL", "tqdm", "matplotlib", "cv2")
_FRAMEWORKS = ("torch", "tensorflow", "keras")


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> dict:
    """Time ``fn()``: ``warmup`` calls first, then the median of ``repeats`` calls.

    Parameters
    ----------
    fn : callable
        Called with no argument; its result is discarded.
    repeats : int
        Timed calls (at least 1) whose median is reported.
    warmup : int
        Untimed calls before them (at least 0). The first call of all, warm-up or not, is
        reported separately as ``cold_s``.

    Returns
    -------
    dict
        ``median_s``, ``min_s``, ``cold_s`` (seconds of the first call), ``times_s`` (the timed
        calls, in order), ``repeats`` and ``warmup``.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int):
        raise TypeError(f"`repeats` must be an int; got {type(repeats).__name__}")
    if isinstance(warmup, bool) or not isinstance(warmup, int):
        raise TypeError(f"`warmup` must be an int; got {type(warmup).__name__}")
    if repeats < 1:
        raise ValueError(f"`repeats` must be >= 1; got {repeats}")
    if warmup < 0:
        raise ValueError(f"`warmup` must be >= 0; got {warmup}")
    if not callable(fn):
        raise TypeError(f"`fn` must be callable; got {type(fn).__name__}")
    cold = None
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        cold = dt if cold is None else cold
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "cold_s": times[0] if cold is None else cold,
        "times_s": times,
        "repeats": repeats,
        "warmup": warmup,
    }


def peak_rss_mb() -> float:
    """The peak resident set size of this process so far, in MiB (it never decreases)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kibibytes, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def rss_mb() -> float | None:
    """The current resident set size in MiB (from /proc; None where that is not available)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(name: str) -> str | None:
    try:
        mod = importlib.import_module(name)
    except Exception:  # a broken optional package must not stop a report
        return None
    return str(getattr(mod, "__version__", getattr(mod, "VERSION", "unknown")))


def _gpus() -> list[str]:
    """GPU names as seen by the frameworks already imported (nothing is imported here)."""
    names = []
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                names += [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        except Exception:
            pass
    tf = sys.modules.get("tensorflow")
    if tf is not None and not names:
        try:
            names += [d.name for d in tf.config.list_physical_devices("GPU")]
        except Exception:
            pass
    return names


def environment(*, import_frameworks: bool = False) -> dict:
    """Versions, machine and threads, for the report.

    Parameters
    ----------
    import_frameworks : bool
        If False (the default), torch, TensorFlow and Keras are reported only when some code has
        already imported them (``"not loaded"`` otherwise), so asking costs no framework import.
        If True, each is imported (``None`` when not installed).

    Returns
    -------
    dict
        ``python``, ``platform``, ``versions`` (package -> version or None), ``machine``
        (``cpu``, ``logical_cpus``, ``usable_cpus``, ``gpus``), ``threads`` (per framework
        loaded, plus the OMP/MKL environment variables) and ``date`` (UTC, ISO 8601).
    """
    versions = {name: _version(name) for name in _LIBRARIES}
    threads: dict[str, object] = {
        var: os.environ.get(var)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    }
    for name in _FRAMEWORKS:
        if name in sys.modules or import_frameworks:
            versions[name] = _version(name)
        else:
            versions[name] = "not loaded"
    torch = sys.modules.get("torch")
    if torch is not None:
        threads["torch_intra_op"] = torch.get_num_threads()
        threads["torch_inter_op"] = torch.get_num_interop_threads()
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        try:
            threads["tf_intra_op"] = tf.config.threading.get_intra_op_parallelism_threads()
            threads["tf_inter_op"] = tf.config.threading.get_inter_op_parallelism_threads()
        except Exception:
            pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "machine": {
            "cpu": cpu_model(),
            "logical_cpus": os.cpu_count(),
            "usable_cpus": usable,
            "gpus": _gpus(),
        },
        "threads": threads,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def set_threads(n: int | None = None) -> int:
    """Use ``n`` threads (default: the usable CPUs) in the frameworks already imported.

    Returns the number chosen. TensorFlow's pools can only be set before its first operation; a
    refusal there is ignored.
    """
    if n is None:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:
            n = os.cpu_count() or 1
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(min(n, 2))
        except RuntimeError:
            pass
    return n


def set_seeds(seed: int) -> None:
    """Seed Python, NumPy and the frameworks already imported."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - the legacy global generator, for code that still uses it
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)
    keras = sys.modules.get("keras")
    if keras is not None:
        keras.utils.set_random_seed(seed)


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs):
    """A tqdm bar, shown only when ``enabled`` and stderr is a terminal (the package's policy,
    :mod:`cam_core._progress`, with ``progress=None``)."""
    return _progress_bar(iterable, progress=None if enabled else False, **kwargs)


def save_figure(fig, path, *, dpi: int = 110) -> Path:
    """Save a Matplotlib figure as PNG atomically and close it."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())




def round_order(names: list, r: int, seed: int = 0) -> list:
    """The order of round ``r``: the first round as given, then a shuffle drawn from
    ``default_rng([seed, r])``. A rotation would keep each contender behind the same one in
    almost every round, and what one call leaves behind (OpenBLAS threads spinning after a NumPy
    product, caches) then lands on the same neighbour every time: 1.5x for the Keras adapter's
    Grad-CAM, which always came right after CAM (issue 17)."""
    if r == 0:
        return list(names)
    perm = np.random.default_rng([seed, r]).permutation(len(names))
    return [names[i] for i in perm]


def interleaved_rounds(fns: dict, rounds: int, bar=None, sync=None) -> tuple[dict, dict]:
    """Call every contender of ``fns`` (name -> callable) once per round, in a new order each
    round (:func:`round_order`), so that no contender keeps the same predecessor; ``sync()``
    (e.g. a CUDA synchronisation) runs around each call. Returns the seconds of every call per
    contender and each contender's last output."""
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    last: dict[str, object] = {}
    for r in range(rounds):
        for name in round_order(names, r):
            if sync is not None:
                sync()
            t0 = time.perf_counter()
            out = fns[name]()
            if sync is not None:
                sync()
            times[name].append(time.perf_counter() - t0)
            last[name] = out
        if bar is not None:
            bar.update(1)
    return times, last


def image_batch(torch, n: int, real: bool, seed: int, size: int = 224):
    """A batch of ``n`` images for EfficientNet-Lite0 (torch, NCHW) and where it came from: the
    first ``n`` images of the ImageNet subset, preprocessed, when ``real`` and the subset is
    there, else normal noise of ``size`` x ``size`` from a generator seeded with ``seed``."""
    if real and (IMAGENET / "metadata" / "image_ids.txt").is_file():
        from cam_core.adapters.models_torch import preprocess_imagenet_lite
        from PIL import Image

        ids = (IMAGENET / "metadata" / "image_ids.txt").read_text().split()[:n]
        pixels = np.stack([np.asarray(Image.open(IMAGENET / i).convert("RGB")) for i in ids])
        return preprocess_imagenet_lite(pixels), "ImageNet subset"
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), "random normal"


def ratio_rows(times: dict, n: int, warmup: int, floor: str = "forward") -> dict:
    """Per contender: the median over the rounds after the cold one and ``warmup`` more, in ms
    per image, the cold first call, and the ratio of the median to ``floor``'s median."""
    base = statistics.median(times[floor][1 + warmup:])
    rows = {}
    for name, t in times.items():
        med = statistics.median(t[1 + warmup:])
        rows[name] = {"median_ms_per_image": 1e3 * med / n, "cold_ms_per_image": 1e3 * t[0] / n,
                      "ratio_to_forward": med / base, "times_s": t}
    return rows


def plot_ratio_bars(panels: dict, path: Path, *, color: str) -> str | None:
    """Horizontal bars of time / forward pass: one panel per entry of ``panels`` (title -> list
    of (label, ratio)), a line at 1; the PNG's file name, or None without Matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
    for ax, (title, bars) in zip(axes[0], panels.items()):
        ax.barh(range(len(bars)), [v for _, v in bars], color=color)
        ax.set_yticks(range(len(bars)), [label for label, _ in bars], fontsize=7)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.invert_yaxis()
        ax.set_xlabel("time / forward pass (median)")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return Path(path).name
