"""Stage "adapter_torch": what CAM and Grad-CAM cost through the PyTorch adapter, end to end.

For EfficientNet-Lite0 (ImageNet weights; real images from ``../shared/data/imagenet-val-1300``
when present, else random inputs) and ResNet-50 (random weights) at 224 x 224, batch 1 and 32:

- ``forward``: the plain forward pass under ``torch.inference_mode()`` (the floor);
- ``cam_core cam`` and ``cam_core gradcam``: :func:`cam_core.adapters.torch.explain`, maps at
  the input size (capture, the method, the upsampling and the normalisation all included);
- ``torchcam gradcam``: torch-cam's ``GradCAM`` (its maps upsampled to 224 with
  ``F.interpolate``, bilinear), and ``pytorch-grad-cam gradcam``: ``pytorch_grad_cam.GradCAM``,
  when they import (optional, never dependencies; reported as skipped with the reason otherwise).

Every contender explains the same classes (the model's predictions, fixed before timing) at the
same layer (``_swish``, the head's activation, for Lite0; ``layer4`` for ResNet-50). Contenders are
interleaved round by round (in a new order each round), so a busy patch of the shared machine
hits them alike. Round 0 is the cold first call and is reported apart; the next ``warmup`` rounds
are discarded; the figure is the median of the ``repeats`` rounds after them, in milliseconds per
image, and its ratio to the forward pass's median. The other libraries' maps are compared with
ours by the Pearson correlation per image (mean over the batch).

**On an accelerator** (``device="cuda"``, from ``python benchmarks/run.py --stages adapters
--device cuda``) the stage runs the accelerator suite instead (:func:`run_accelerator`): batch
32 and 256, CAM, Grad-CAM and Grad-CAM++ with the maps returned as NumPy and kept on the device,
torch-cam and pytorch-grad-cam beside them, and Score-CAM on one ResNet-50 image against
pytorch-grad-cam's, every call CUDA-synchronised. ``tiny=True`` runs the same suite at toy sizes
on any device (the CPU included), so that the command is known to run before a GPU is at hand.
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
    image_batch,
    interleaved_rounds,
    md_table,
    plot_ratio_bars,
    progress_bar,
    ratio_rows,
    set_seeds,
    set_threads,
)
from benchmarks._scoring import map_correlation

__all__ = ["run"]

SIZE = 224
BATCHES = (1, 32)
# (warm-up rounds after the cold one, timed rounds) per batch size
_ROUNDS = {True: {1: (1, 5), 32: (1, 3)}, False: {1: (3, 21), 32: (2, 9)}}


def _models(torch):
    from cam_core.adapters import models_torch as mt

    out = []
    try:
        out.append(("EfficientNet-Lite0 (ImageNet weights)", mt.efficientnet_lite0(pretrained=True),
                    "_swish", True))
    except ImportError as exc:
        out.append(("EfficientNet-Lite0 (ImageNet weights)", None, str(exc), True))
    out.append(("ResNet-50 (random weights)", mt.resnet50(1000), "layer4", False))
    return out


def _other_libraries():
    """{name: (callable factory or None, skip reason or None)} for the optional libraries."""
    found = {}
    try:
        from torchcam.methods import GradCAM as TorchCamGradCAM

        found["torchcam gradcam"] = (TorchCamGradCAM, None)
    except Exception as exc:  # ImportError, or a missing dependency of theirs
        found["torchcam gradcam"] = (None, f"{type(exc).__name__}: {exc}")
    try:
        from pytorch_grad_cam import GradCAM as PgcGradCAM

        found["pytorch-grad-cam gradcam"] = (PgcGradCAM, None)
    except Exception as exc:
        found["pytorch-grad-cam gradcam"] = (None, f"{type(exc).__name__}: {exc}")
    return found


def _contenders(torch, model, layer: str, x, targets: list[int], libs: dict) -> dict:
    import torch.nn.functional as F
    from cam_core.adapters.torch import explain

    size = tuple(x.shape[2:])

    def forward():
        with torch.inference_mode():
            return model(x)

    fns = {
        "forward": forward,
        "cam_core cam": lambda: explain(model, x, method="cam", layer=layer, targets=targets).maps,
        "cam_core gradcam": lambda: explain(
            model, x, method="gradcam", layer=layer, targets=targets
        ).maps,
    }
    tc_cls, _ = libs["torchcam gradcam"]
    if tc_cls is not None:

        def torchcam():
            with tc_cls(model, target_layer=layer, input_shape=(3, *size)) as extractor:
                scores = model(x)
                (maps,) = extractor(targets, scores)
            up = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)
            return up[:, 0].detach().cpu().numpy()

        fns["torchcam gradcam"] = torchcam
    pgc_cls, _ = libs["pytorch-grad-cam gradcam"]
    if pgc_cls is not None:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        module = dict(model.named_modules())[layer]

        def pgc():
            with pgc_cls(model=model, target_layers=[module]) as cam:
                return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])

        fns["pytorch-grad-cam gradcam"] = pgc
    return fns


def _sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _measure(torch, device, model, layer, x, libs, warmup, repeats, bar) -> dict:
    with torch.inference_mode():
        targets = model(x).argmax(1).tolist()
    fns = _contenders(torch, model, layer, x, targets, libs)
    times, last = _timed_rounds(torch, device, fns, 1 + warmup + repeats, bar)
    rows = ratio_rows(times, len(x), warmup)
    ours = np.asarray(last["cam_core gradcam"])
    for name, row in rows.items():
        if name not in ("forward", "cam_core cam", "cam_core gradcam"):
            row["correlation_to_cam_core_gradcam"] = map_correlation(np.asarray(last[name]), ours)
    return {"batch": len(x), "targets": targets, "rows": rows}


def _plot(results: list[dict], out_dir: Path) -> str | None:
    panels = {res["model"]: [(f"{name}\nN={b['batch']}", row["ratio_to_forward"])
                             for b in res["batches"] for name, row in b["rows"].items()]
              for res in results}
    return plot_ratio_bars(panels, out_dir / "adapter_torch_ratios.png", color="#4477aa")


def run(*, quick: bool, out_dir: Path, progress: bool = True, device: str | None = None,
        tiny: bool = False) -> dict:
    """Time CAM and Grad-CAM through the torch adapter against the forward pass (module docstring).

    ``device``: ``"cpu"``, ``"cuda"`` (or ``"cuda:1"``...) or None (CUDA when available). On an
    accelerator, or with ``tiny``, the accelerator suite runs (:func:`run_accelerator`).
    """
    try:
        import torch
    except ImportError as exc:
        return {"name": "adapter_torch", "skipped": f"torch is not installed ({exc})"}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = set_threads()
    set_seeds(0)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} was asked for, but torch sees no CUDA device")
    if device.type != "cpu" or tiny:
        return run_accelerator(quick=quick, out_dir=out_dir, progress=progress, device=device,
                               tiny=tiny)
    libs = _other_libraries()
    rounds = _ROUNDS[bool(quick)]
    total = sum(1 + rounds[b][0] + rounds[b][1] for b in BATCHES) * 2
    results, skipped_models = [], {}
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with progress_bar(total=total, enabled=progress, desc="adapter_torch") as bar:
        for label, model, layer, real in _models(torch):
            if model is None:
                skipped_models[label] = layer
                continue
            model = model.to(device).eval()
            entry = {"model": label, "layer": layer, "batches": []}
            for n in BATCHES:
                x, source = image_batch(torch, n, real, seed=n)
                warmup, repeats = rounds[n]
                res = _measure(torch, device, model, layer, x.to(device), libs, warmup, repeats, bar)
                res["inputs"] = source
                entry["batches"].append(res)
            results.append(entry)
    env = environment()
    figures = {
        "settings": {"size": SIZE, "batches": list(BATCHES), "rounds": {str(k): v for k, v in
                     rounds.items()}, "quick": bool(quick), "device": str(device),
                     "threads": threads},
        **_run_record(env, load_before, libs, skipped_models, results),
    }
    png = _plot(results, out_dir) if results else None
    rows, headline = [], {}
    for res in results:
        for b in res["batches"]:
            for name, row in b["rows"].items():
                corr = row.get("correlation_to_cam_core_gradcam")
                rows.append([res["model"], str(b["batch"]), name, fmt(row["median_ms_per_image"], 2),
                             fmt(row["cold_ms_per_image"], 2), fmt(row["ratio_to_forward"], 3),
                             "-" if corr is None else fmt(corr, 4)])
            if b["batch"] == 32:
                headline[res["model"]] = {
                    k: b["rows"][k]["ratio_to_forward"] for k in ("cam_core cam", "cam_core gradcam")
                }
    figures["headline_ratio_batch32"] = headline
    device_text = (f"CUDA ({', '.join(env['machine']['gpus']) or 'GPU'})" if device.type == "cuda"
                   else f"CPU {env['machine']['cpu']}, {threads} torch threads")
    lines = [
        "### PyTorch adapter: CAM and Grad-CAM end to end vs the forward pass",
        "",
        f"224 x 224 inputs; maps at the input size. Medians of the timed rounds (batch 1: "
        f"{rounds[1][1]} after {rounds[1][0]} warm-up; batch 32: {rounds[32][1]} after "
        f"{rounds[32][0]}), contenders interleaved round by round; the cold first call apart. "
        f"Machine: {device_text}; torch {env['versions'].get('torch')}; 1-minute load average "
        f"{fmt(load_before, 2)} before the run and "
        f"{fmt(figures['load_average_1min']['after'], 2)} after it (the machine is shared; under "
        f"load the ratios scatter by several percent). The issue's aims at batch 32: CAM within 1.05x "
        f"and Grad-CAM within 1.1x of the forward pass.",
        "",
        md_table(["model", "N", "contender", "ms / image", "cold ms / image", "x forward",
                  "corr. to ours"], rows),
    ]
    for name, (factory, why) in libs.items():
        if factory is None:
            lines += ["", f"{name}: skipped ({why})."]
    for label, why in skipped_models.items():
        lines += ["", f"{label}: skipped ({why})."]
    if png:
        lines += ["", f"![ratios to the forward pass]({png})"]
    return {"name": "adapter_torch", "figures": figures, "markdown": "\n".join(lines)}


# --------------------------------------------------------------------------- accelerator suite

ACCEL_BATCHES = (32, 256)
TINY_BATCHES = (2, 4)
TINY_SIZE = 64
# (warm-up rounds after the cold one, timed rounds)
_ACCEL_ROUNDS = {"quick": (2, 7), "full": (3, 15), "tiny": (0, 1)}
SCORECAM_BATCH = 256


def _accel_models(tiny: bool):
    from cam_core.adapters import models_torch as mt

    out = []
    try:
        lite = mt.efficientnet_lite0(pretrained=not tiny)
        out.append(("EfficientNet-Lite0" + ("" if tiny else " (ImageNet weights)"), lite,
                    "_swish", not tiny))
    except ImportError as exc:
        out.append(("EfficientNet-Lite0", None, str(exc), False))
    out.append(("ResNet-50 (random weights)", mt.resnet50(1000), "layer4", False))
    return out


def _peer_factories() -> dict:
    """{name: (class or None, skip reason or None)} for torch-cam and pytorch-grad-cam."""
    found = {}
    for key, module, names in (
        ("torchcam", "torchcam.methods", ("GradCAM", "GradCAMpp")),
        ("pytorch-grad-cam", "pytorch_grad_cam", ("GradCAM", "GradCAMPlusPlus", "ScoreCAM")),
    ):
        try:
            mod = __import__(module, fromlist=list(names))
            found[key] = ({n: getattr(mod, n) for n in names}, None)
        except Exception as exc:  # ImportError, or a missing dependency of theirs
            found[key] = (None, f"{type(exc).__name__}: {exc}")
    return found


def _accel_contenders(torch, model, layer: str, x, targets: list[int], peers: dict) -> dict:
    import torch.nn.functional as F
    from cam_core.adapters.torch import explain

    size = tuple(x.shape[2:])

    def forward():
        with torch.inference_mode():
            return model(x)

    def ours(method, on_device):
        def call():
            # core="device": the torch core on the model's device (on a CPU too, for --tiny)
            return explain(model, x, method=method, layer=layer, targets=targets,
                           core="device", maps_on_device=on_device).maps

        return call

    fns = {"forward": forward}
    for method in ("cam", "gradcam", "gradcam++"):
        fns[f"cam_core {method}, NumPy maps"] = ours(method, False)
        fns[f"cam_core {method}, device maps"] = ours(method, True)
    if x.device.type == "cuda":  # the final copy pageable instead of pinned (the default)
        from cam_core.adapters import torch as adapter

        default = ours("gradcam", False)

        def pageable():
            adapter.PINNED_COPY = False
            try:
                return default()
            finally:
                adapter.PINNED_COPY = True

        fns["cam_core gradcam, NumPy maps via a pageable copy"] = pageable
    tc, _ = peers["torchcam"]
    if tc is not None:
        for method, cls in (("gradcam", tc["GradCAM"]), ("gradcam++", tc["GradCAMpp"])):
            def torchcam(cls=cls):
                with cls(model, target_layer=layer, input_shape=(3, *size)) as extractor:
                    scores = model(x)
                    (maps,) = extractor(targets, scores)
                up = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)
                return up[:, 0].detach().cpu().numpy()

            fns[f"torchcam {method} (+resize, to host)"] = torchcam
    pgc, _ = peers["pytorch-grad-cam"]
    if pgc is not None:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        module = dict(model.named_modules())[layer]
        pgc_targets = [ClassifierOutputTarget(t) for t in targets]
        for method, cls in (("gradcam", pgc["GradCAM"]), ("gradcam++", pgc["GradCAMPlusPlus"])):
            def pytorch_grad_cam(cls=cls):
                with cls(model=model, target_layers=[module]) as extractor:
                    return extractor(input_tensor=x, targets=pgc_targets)

            fns[f"pytorch-grad-cam {method}"] = pytorch_grad_cam
    return fns


def _timed_rounds(torch, device, fns: dict, rounds: int, bar) -> tuple[dict, dict]:
    """:func:`benchmarks._common.interleaved_rounds`, CUDA-synchronised on a GPU."""
    return interleaved_rounds(fns, rounds, bar, sync=lambda: _sync(torch, device))


def _host(out) -> np.ndarray:
    from cam_core._validate import to_numpy

    return np.asarray(to_numpy(out))


def _accel_measure(torch, device, model, layer, x, peers, warmup, repeats, bar) -> dict:
    with torch.inference_mode():
        targets = model(x).argmax(1).tolist()
    fns = _accel_contenders(torch, model, layer, x, targets, peers)
    times, last = _timed_rounds(torch, device, fns, 1 + warmup + repeats, bar)
    n = len(x)
    rows = ratio_rows(times, n, warmup)
    for name, row in rows.items():
        if name != "forward" and not name.startswith("cam_core"):
            method = "gradcam++" if "gradcam++" in name else "gradcam"
            ref = _host(last[f"cam_core {method}, NumPy maps"])
            row["correlation_to_cam_core"] = map_correlation(_host(last[name]), ref)
        if name.endswith("device maps"):
            row["max_abs_diff_to_numpy_maps"] = float(np.max(np.abs(
                _host(last[name]) - _host(last[name.replace("device maps", "NumPy maps")]))))
    return {"batch": n, "rows": rows}


def _scorecam_measure(torch, device, model, layer, x, peers, warmup, repeats, bar) -> dict:
    """Score-CAM on one image: cam_core (masks on the device, ``SCORECAM_BATCH`` per call) vs
    pytorch-grad-cam's ScoreCAM (its ``batch_size`` set to the same)."""
    from cam_core.adapters.torch import explain

    with torch.inference_mode():
        target = int(model(x).argmax(1)[0])
    fns = {
        "cam_core scorecam": lambda: explain(model, x, method="scorecam", layer=layer,
                                             targets=[target], batch_size=SCORECAM_BATCH,
                                             progress=False, core="device").maps,
    }
    pgc, _ = peers["pytorch-grad-cam"]
    if pgc is not None:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        module = dict(model.named_modules())[layer]

        def pgc_scorecam():
            with pgc["ScoreCAM"](model=model, target_layers=[module]) as extractor:
                extractor.batch_size = SCORECAM_BATCH
                return extractor(input_tensor=x, targets=[ClassifierOutputTarget(target)])

        fns["pytorch-grad-cam scorecam"] = pgc_scorecam
    if x.device.type == "cuda":  # the masked batches channels-last (a layout, same numbers)
        from cam_core.adapters import torch as adapter

        def channels_last():
            adapter.MASKED_CHANNELS_LAST_CUDA = True
            try:
                return fns["cam_core scorecam"]()
            finally:
                adapter.MASKED_CHANNELS_LAST_CUDA = False

        fns["cam_core scorecam, channels-last masked batches"] = channels_last
    times, last = _timed_rounds(torch, device, fns, 1 + warmup + repeats, bar)
    rows = {}
    ours = _host(last["cam_core scorecam"])
    for name in fns:
        rows[name] = {
            "median_s": statistics.median(times[name][1 + warmup :]),
            "cold_s": times[name][0],
            "times_s": times[name],
        }
        if name != "cam_core scorecam":
            rows[name]["correlation_to_cam_core"] = map_correlation(_host(last[name]), ours)
    if "pytorch-grad-cam scorecam" in rows:
        for name in rows:
            if name.startswith("cam_core"):
                rows[name]["ratio_to_pytorch_grad_cam"] = (
                    rows[name]["median_s"] / rows["pytorch-grad-cam scorecam"]["median_s"])
    return {"layer": layer, "channels": None, "rows": rows}


def _run_record(env: dict, load_before, libs: dict, skipped_models: dict, results: list) -> dict:
    """What both suites record beside their settings: the machine, the versions, the load
    before and after, what was skipped and why, and the measurements."""
    return {
        "machine": env["machine"],
        "versions": env["versions"],
        "load_average_1min": {"before": load_before,
                              "after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "skipped_libraries": {k: v[1] for k, v in libs.items() if v[0] is None},
        "skipped_models": skipped_models,
        "results": results,
    }


def _accel_measure_all(torch, device, models, batches, size, peers, warmup, repeats, tiny,
                       bar):
    """Every model at every batch size, and Score-CAM on one ResNet-50 image; returns
    ``(results, skipped_models, scorecam)``."""
    results, skipped_models, scorecam = [], {}, None
    for label, model, layer, real in models:
        if model is None:
            skipped_models[label] = layer
            continue
        model = model.to(device).eval()
        entry = {"model": label, "layer": layer, "batches": []}
        for n in batches:
            x, source = image_batch(torch, n, real, seed=n)
            if tuple(x.shape[2:]) != (size, size):
                x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")
            res = _accel_measure(torch, device, model, layer, x.to(device), peers, warmup,
                                 repeats, bar)
            res["inputs"] = source
            entry["batches"].append(res)
        results.append(entry)
        if layer == "layer4":  # ResNet-50: Score-CAM on one image
            x1, _ = image_batch(torch, 1, False, seed=1)
            if tuple(x1.shape[2:]) != (size, size):
                x1 = torch.nn.functional.interpolate(x1, size=(size, size), mode="bilinear")
            score_layer = "layer1" if tiny else "layer4"  # tiny: 256 channels, not 2,048
            scorecam = _scorecam_measure(torch, device, model, score_layer, x1.to(device),
                                         peers, warmup, repeats, bar)
            scorecam["channels"] = 256 if tiny else 2048
        model.to("cpu")
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results, skipped_models, scorecam


def _accel_markdown(figures: dict, peers: dict, device_text: str, torch_version) -> str:
    """The suite's section: the ratio table, Score-CAM's, the skipped libraries and models.
    Also puts ``headline_ratio_largest_batch`` into ``figures``."""
    st = figures["settings"]
    batches, size, repeats, warmup = st["batches"], st["size"], st["rounds"][1], st["rounds"][0]
    results, scorecam = figures["results"], figures["scorecam"]
    rows, headline = [], {}
    for res in results:
        for b in res["batches"]:
            for name, row in b["rows"].items():
                corr = row.get("correlation_to_cam_core")
                diff = row.get("max_abs_diff_to_numpy_maps")
                rows.append([res["model"], str(b["batch"]), name,
                             fmt(row["median_ms_per_image"], 3), fmt(row["cold_ms_per_image"], 3),
                             fmt(row["ratio_to_forward"], 3),
                             "-" if corr is None else fmt(corr, 4),
                             "-" if diff is None else f"{diff:.1e}"])
            if b["batch"] == batches[-1]:
                headline[f"{res['model']}, batch {b['batch']}"] = {
                    k: v["ratio_to_forward"] for k, v in b["rows"].items() if k != "forward"}
    figures["headline_ratio_largest_batch"] = headline
    lines = [
        "### PyTorch adapter on an accelerator: CAM, Grad-CAM, Grad-CAM++ vs the forward pass",
        "",
        f"Machine: {device_text}; torch {torch_version}. {size} x {size} inputs, "
        f"maps at the input size; batches {', '.join(map(str, batches))}. Every call is "
        f"synchronised (`torch.cuda.synchronize()` before and after on CUDA); contenders "
        f"interleaved round by round; medians of {repeats} timed rounds after {warmup} warm-up "
        f"rounds, the cold first call apart. `NumPy maps`: `Explanation.maps` on the host "
        f"(the default); `device maps`: `maps_on_device=True`. The peers' maps are compared with "
        f"ours by Pearson correlation (torch-cam's Grad-CAM++ skips the alpha division and "
        f"pytorch-grad-cam's adds 1e-6 to it, see `cam_core.methods`).",
        "",
        md_table(["model", "N", "contender", "ms / image", "cold ms / image", "x forward",
                  "corr. to ours", "device vs NumPy maps"], rows),
    ]
    if scorecam is not None:
        srows = []
        for name, row in scorecam["rows"].items():
            srows.append([name, fmt(row["median_s"], 3), fmt(row["cold_s"], 3),
                          fmt(row.get("ratio_to_pytorch_grad_cam"), 3),
                          "-" if "correlation_to_cam_core" not in row
                          else fmt(row["correlation_to_cam_core"], 4)])
        lines += [
            "",
            f"Score-CAM on one ResNet-50 image, layer `{scorecam['layer']}` "
            f"({scorecam['channels']} masked passes, {SCORECAM_BATCH} per model call for both):",
            "",
            md_table(["contender", "median s", "cold s", "x pytorch-grad-cam", "corr. to ours"],
                     srows),
        ]
    for name, (factory, why) in peers.items():
        if factory is None:
            lines += ["", f"{name}: skipped ({why})."]
    for label, why in figures["skipped_models"].items():
        lines += ["", f"{label}: skipped ({why})."]
    return "\n".join(lines)


def run_accelerator(*, quick: bool, out_dir: Path, progress: bool = True, device=None,
                    tiny: bool = False) -> dict:
    """The accelerator suite (module docstring): one call, a few minutes on a GPU."""
    import torch

    device = torch.device(device)
    rounds_key = "tiny" if tiny else ("quick" if quick else "full")
    warmup, repeats = _ACCEL_ROUNDS[rounds_key]
    batches = TINY_BATCHES if tiny else ACCEL_BATCHES
    size = TINY_SIZE if tiny else SIZE
    peers = _peer_factories()
    models = _accel_models(tiny)
    total = (sum(1 for m in models if m[1] is not None) * len(batches) + 1) * (1 + warmup + repeats)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t_start = time.perf_counter()
    with progress_bar(total=total, enabled=progress, desc="adapter_torch (accelerator)") as bar:
        results, skipped_models, scorecam = _accel_measure_all(
            torch, device, models, batches, size, peers, warmup, repeats, tiny, bar)
    env = environment()
    device_text = (f"CUDA ({', '.join(env['machine']['gpus']) or 'GPU'})" if device.type == "cuda"
                   else f"{device.type.upper()} {env['machine']['cpu']}, {torch.get_num_threads()} "
                        f"torch threads")
    figures = {
        "settings": {"suite": "accelerator", "size": size, "batches": list(batches),
                     "rounds": [warmup, repeats], "quick": bool(quick), "tiny": bool(tiny),
                     "device": str(device), "device_name": device_text,
                     "scorecam_batch_size": SCORECAM_BATCH},
        **_run_record(env, load_before, peers, skipped_models, results),
        "scorecam": scorecam,
        "duration_s": time.perf_counter() - t_start,
    }
    markdown = _accel_markdown(figures, peers, device_text, env["versions"].get("torch"))
    return {"name": "adapter_torch", "figures": figures, "markdown": markdown}


if __name__ == "__main__":
    res = run(quick=True, out_dir=Path(__file__).resolve().parent / "results" / "_scratch")
    print(res.get("markdown", res))
