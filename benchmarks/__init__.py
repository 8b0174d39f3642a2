"""The benchmark suite of cam_core: ``python benchmarks/run.py`` runs it (see ``run.py --help``).

Each stage is a module ``benchmarks/stage_<name>.py`` with a function
``run(*, quick, out_dir, progress=True, ...) -> dict`` that returns ``{"name", "figures",
"markdown"}`` (or ``{"name", "skipped"}`` when an optional framework is missing) and writes its
PNG figures into ``out_dir``. Timing, memory, environment and table helpers shared by the stages
live in :mod:`benchmarks._common`, the scoring of maps (method lists, box figures, the WSOL feed,
map correlation) in :mod:`benchmarks._scoring`. ``run.py`` puts the project root on ``sys.path``;
a stage on its own runs as a module from the root: ``python -m benchmarks.stage_adapter_keras``.
"""
