"""Stage "peers": the methods of issue 15 against the peer libraries that ship them.

For each method a peer implements, both explain the same images for the same classes at the same
layer; the table gives the Pearson correlation of the maps per image (mean over the batch; the
peer's maps upsampled bilinearly to the input size, as ours are) and the median time per image of
both, beside the plain forward pass (contenders interleaved round by round, round 0 the cold call,
reported apart; then ``warmup`` discarded rounds; medians of the rest).

- torch-cam 0.5 (``torchcam``): Finer-CAM on Grad-CAM (EfficientNet-Lite0 at ``_swish``, real
  ImageNet images when ``../shared/data/imagenet-val-1300`` is there, else random inputs);
  IS-CAM (``convention="torch-cam"``, its mask scales) and SS-CAM on a random-weight tiny CNN at
  64 x 64 (Lite0's 1,280 channels cost 12,800 forward passes per image for IS-CAM). SS-CAM's
  noise comes from torch's generator there and NumPy's here, so its row compares two different
  draws (35 samples, std 2): a correlation below 1 is expected; the noise-free limit is checked
  in ``tests/test_peer_parity_more.py``.
- pytorch-grad-cam (when it imports; it needs torchvision): Grad-CAM element-wise, Eigen-Grad-CAM
  (its SVD sign, so the correlation is taken up to the sign), FEM, KPCA-CAM, and RefineCAM,
  ShapleyCAM and FullGrad in its conventions (see :func:`_pgc_own_pass`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks._common import (
    environment,
    fmt,
    image_batch,
    interleaved_rounds,
    md_table,
    ratio_rows,
    set_seeds,
    set_threads,
)
from benchmarks._scoring import map_correlation

__all__ = ["run"]

_ROUNDS = {True: (0, 2), False: (2, 7)}  # (warm-up rounds after the cold one, timed rounds)
_SAMPLES = {True: 4, False: None}  # SS-CAM / IS-CAM samples (None: the peer's defaults 35 / 10)


def _up(torch, maps, size):
    import torch.nn.functional as F

    t = maps if isinstance(maps, torch.Tensor) else torch.as_tensor(np.asarray(maps))
    t = t.detach().float()
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return t.cpu().numpy()


def _lite0_inputs(torch, n):
    from cam_core.adapters import models_torch as mt

    try:
        model = mt.efficientnet_lite0(pretrained=True).eval()
    except ImportError as exc:
        return None, None, str(exc).splitlines()[0]
    x, source = image_batch(torch, n, True, seed=0)
    return model, x, f"{n} images, {source}"


def _rows_for(torch, label, model, layer, x, contenders, warmup, repeats):
    """contenders: {method: (ours_fn, {peer_name: (peer_fn, up_to_sign)})}"""
    size = tuple(x.shape[2:])

    def forward():
        with torch.inference_mode():
            return model(x)

    rows = []
    for method, (ours, peers) in contenders.items():
        fns = {"forward": forward, "cam_core": ours, **{k: v[0] for k, v in peers.items()}}
        times, last = interleaved_rounds(fns, 1 + warmup + repeats)
        timing = ratio_rows(times, len(x), warmup)
        ours_maps = np.asarray(last["cam_core"])
        for name in ["cam_core", *peers]:
            corr = "-" if name == "cam_core" else fmt(map_correlation(
                _up(torch, last[name], size), ours_maps, up_to_sign=peers[name][1]), 4)
            rows.append({"model": label, "method": method, "contender": name, "corr": corr,
                         **{k: timing[name][k] for k in ("median_ms_per_image",
                                                         "cold_ms_per_image", "ratio_to_forward")}})
    return rows


# pytorch-grad-cam explains Lite0 at the last batch norm, not at `_swish`: Lite0 calls its
# top-level `_swish` twice (after the stem and after the head), pytorch-grad-cam records every
# call of a target module and pairs the stem's activations with the head's gradients.
_PGC_LAYER = "_bn1"
_PGC_NOTE = ("pytorch-grad-cam rows at `_bn1` (7 x 7, before the last ReLU6), ours there too: "
             "EfficientNet-Lite0 calls its top-level `_swish` twice (after the stem and after "
             "the head) and pytorch-grad-cam records both calls of a target module, pairing the "
             "stem's activations with the head's gradients (correlations near 0 at `_swish`); "
             "cam_core and torch-cam take the last call")
# RefineCAM's layers for the comparison: block 10 (14 x 14) and the last batch norm
_REFINE_LAYERS = ("_blocks.10", _PGC_LAYER)


def _pgc_own_pass(torch, pgc, ta, model, x, targets, contenders) -> None:
    """pytorch-grad-cam's RefineCAM, ShapleyCAM and FullGrad beside ours, in its conventions:
    RefineCAM on Grad-CAM++ with its ``eps = 1e-6``; ShapleyCAM for the ReST score, the peer
    called image by image (its ``ClassifierOutputReST`` subtracts the batch's mean
    cross-entropy, the image's own for a batch of one); FullGrad with our
    ``convention="pytorch-grad-cam"`` (each channel rescaled on its own)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST, ClassifierOutputTarget

    modules = dict(model.named_modules())
    if hasattr(pgc, "RefineCAM"):
        def pgc_refine():
            cam = pgc.RefineCAM(model, [modules[n] for n in _REFINE_LAYERS])
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])

        contenders["refinecam"] = (
            lambda: ta.explain(model, x, method="refinecam", layer=list(_REFINE_LAYERS),
                               targets=targets, method_options={"eps": 1e-6}).maps,
            {"pytorch-grad-cam RefineCAM": (pgc_refine, False)})
    if hasattr(pgc, "ShapleyCAM"):
        def pgc_shapley():
            out = []
            for i, t in enumerate(targets):
                with pgc.ShapleyCAM(model=model, target_layers=[modules[_PGC_LAYER]]) as cam:
                    out.append(cam(input_tensor=x[i:i + 1], targets=[ClassifierOutputReST(t)]))
            return np.concatenate(out)

        contenders["shapleycam"] = (
            lambda: ta.explain(model, x, method="shapleycam", layer=_PGC_LAYER,
                               targets=ta.rest_target(targets)).maps,
            {"pytorch-grad-cam ShapleyCAM (ReST, one image per call)": (pgc_shapley, False)})
    if hasattr(pgc, "FullGrad"):
        def pgc_fullgrad():
            with pgc.FullGrad(model=model, target_layers=[]) as cam:
                return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])

        contenders["fullgrad"] = (
            lambda: ta.explain(model, x, method="fullgrad", targets=targets,
                               method_options={"convention": "pytorch-grad-cam"}).maps,
            {"pytorch-grad-cam FullGrad": (pgc_fullgrad, False)})


def _lite0_rows(torch, tc, pgc, quick: bool, warmup: int, repeats: int, notes: list) -> list:
    """EfficientNet-Lite0: the gradient and activation methods against both peers."""
    from cam_core.adapters import torch as ta

    model, x, source = _lite0_inputs(torch, 2 if quick else 8)
    if model is None:
        notes.append(f"EfficientNet-Lite0: skipped ({source})")
        return []
    layer = "_swish"
    with torch.inference_mode():
        targets = model(x).argmax(1).tolist()

    def ours(method, at=layer, **kw):
        return lambda: ta.explain(model, x, method=method, layer=at, targets=targets,
                                  **kw).maps

    contenders = {}
    if tc is not None and hasattr(tc, "FinerCAM"):
        def tc_finer():
            with tc.FinerCAM(model, layer, input_shape=(3, 224, 224)) as ext:
                scores = model(x)
                (maps,) = ext(targets, scores)
            return maps
        contenders["finercam"] = (ours("finercam"), {"torchcam FinerCAM": (tc_finer, False)})
    if pgc is not None:
        notes.append(_PGC_NOTE)
        _pgc_layer_methods(pgc, model, x, targets, ours, contenders)
        _pgc_own_pass(torch, pgc, ta, model, x, targets, contenders)
    return _rows_for(torch, f"EfficientNet-Lite0 ({source})", model, layer, x, contenders,
                     warmup, repeats)


def _pgc_layer_methods(pgc, model, x, targets, ours, contenders) -> None:
    """pytorch-grad-cam's one-layer methods at ``_PGC_LAYER``, beside ours there."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module = dict(model.named_modules())[_PGC_LAYER]

    def pgc_fn(cls):
        def f():
            with cls(model=model, target_layers=[module]) as cam:
                return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
        return f

    for method, cls, sign in (("gradcamelementwise", "GradCAMElementWise", False),
                              ("eigengradcam", "EigenGradCAM", True),
                              ("fem", "FEM", False), ("kpcacam", "KPCA_CAM", True)):
        if hasattr(pgc, cls):
            kw = {"method_options": {"convention": "pytorch-grad-cam"}} if (
                method == "fem") else {}  # its FEM weights A by the masks' means
            contenders.setdefault(method, (ours(method, _PGC_LAYER, **kw), {}))[1][
                f"pytorch-grad-cam {cls}"] = (pgc_fn(getattr(pgc, cls)), sign)


def _tiny_rows(torch, tc, quick: bool, warmup: int, repeats: int, notes: list) -> list:
    """A tiny random CNN: the masked-input methods (IS-CAM, SS-CAM) against torch-cam's."""
    from cam_core.adapters import models_torch as mt
    from cam_core.adapters import torch as ta

    from cam_core import methods as m
    from cam_core.explain import display_maps

    torch.manual_seed(0)
    tiny = mt.tiny_gap_cnn(10).eval()
    xs = torch.randn(1 if quick else 2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        t_targets = tiny(xs).argmax(1).tolist()
    (cap,) = ta.capture(tiny, xs, layer="features", targets=t_targets, gradients=False)

    def score(n, masks):
        with torch.no_grad():
            logits = tiny(xs[n:n + 1] * torch.as_tensor(np.asarray(masks))[:, None])
        return logits[:, t_targets[n]].numpy()

    def ours_masked(fn, **kw):
        # the display pipeline of explain (ReLU: both papers have it; bilinear; min-max)
        return lambda: display_maps(fn(cap.activations, score, input_size=(64, 64), **kw),
                                    relu=True, size=(64, 64))

    def tc_masked(cls, **kw):
        def f():
            with getattr(tc, cls)(tiny, "features", input_shape=(3, 64, 64), batch_size=64,
                                  **kw) as ext:
                scores = tiny(xs)
                (maps,) = ext(t_targets, scores)
            return maps
        return f

    n_is, n_ss = (_SAMPLES[bool(quick)],) * 2 if quick else (10, 35)
    contenders = {
        "iscam": (ours_masked(m.iscam, samples=n_is, convention="torch-cam"),
                  {"torchcam ISCAM": (tc_masked("ISCAM", num_samples=n_is), False)}),
        "sscam": (ours_masked(m.sscam, samples=n_ss, std=2.0),
                  {"torchcam SSCAM (other noise)": (tc_masked("SSCAM", num_samples=n_ss,
                                                                std=2.0), False)}),
    }
    notes.append(f"SS-CAM / IS-CAM: {n_ss} / {n_is} samples")
    return _rows_for(torch, f"tiny CNN, random weights, 64x64 ({len(xs)} random inputs)", tiny,
                     "features", xs, contenders, warmup, repeats)


def _markdown(rows: list, notes: list, cpu: str, threads: int, warmup: int, repeats: int) -> str:
    table = md_table(["model", "method", "contender", "corr. to ours", "ms / image",
                      "cold ms / image", "x forward"],
                     [[r["model"], r["method"], r["contender"], r["corr"],
                       fmt(r["median_ms_per_image"], 2), fmt(r["cold_ms_per_image"], 2),
                       fmt(r["ratio_to_forward"], 2)] for r in rows])
    md = [
        "### The new methods against the peers that ship them",
        "",
        f"Machine: CPU {cpu}, {threads} torch threads. Medians of {repeats} "
        f"timed rounds after {warmup} warm-up (round 0, the cold call, apart), contenders "
        f"interleaved. Correlation: Pearson per image of the maps at the input size, mean over "
        f"the batch (Eigen-Grad-CAM and KPCA-CAM: its absolute value, pytorch-grad-cam keeps "
        f"the sign its SVD or KernelPCA returns).",
        "",
        table,
    ] + [f"\n{n}." for n in notes]
    return "\n".join(md)


def run(*, quick: bool = True, out_dir: Path, progress: bool = True) -> dict:
    """Correlation and time of our new methods against torch-cam / pytorch-grad-cam."""
    try:
        import torch
    except ImportError as exc:
        return {"name": "peers", "skipped": f"torch is not installed ({exc})"}
    try:
        import torchcam.methods as tc
    except Exception as exc:
        tc = None
        tc_why = f"{type(exc).__name__}: {exc}"
    try:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: F401
    except Exception as exc:
        pgc = None
        pgc_why = f"{type(exc).__name__}: {exc}"
    if tc is None and pgc is None:
        return {"name": "peers", "skipped": f"neither torch-cam ({tc_why}) nor pytorch-grad-cam "
                                            f"({pgc_why}) imports"}
    threads = set_threads()
    set_seeds(0)
    warmup, repeats = _ROUNDS[bool(quick)]
    notes = []
    rows = _lite0_rows(torch, tc, pgc, quick, warmup, repeats, notes)
    if tc is not None:
        rows += _tiny_rows(torch, tc, quick, warmup, repeats, notes)
    else:
        notes.append(f"torch-cam: skipped ({tc_why})")
    if pgc is None:
        notes.append(f"pytorch-grad-cam: skipped ({pgc_why})")
    env = environment()
    return {"name": "peers", "figures": {"rows": rows, "notes": notes,
                                         "machine": env["machine"]},
            "markdown": _markdown(rows, notes, env["machine"]["cpu"], threads, warmup, repeats)}


if __name__ == "__main__":
    res = run(quick=True, out_dir=Path(__file__).resolve().parent / "results" / "_scratch")
    print(res.get("markdown", res))
