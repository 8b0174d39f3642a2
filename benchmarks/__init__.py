"""The benchmark suite of cam_core: ``python benchmarks/run.py`` runs it (see ``run.py --help``).

Each stage is a module ``benchmarks/stage_<name>.py`` with a function
``run(*, quick, out_dir, progress=True, ...) -> dict`` that returns ``{"name", "figures",
"markdown"}`` (or ``{"name", "skipped"}`` when an optional framework is missing) and writes its
PNG figures into ``out_dir``. Timing, memory and environment helpers shared by the stages live in
:mod:`benchmarks._common`.
"""
