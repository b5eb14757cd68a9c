"""Evidence as code: every grid the book quotes, declared once, stored as one record per cell, computed and
reported by one runner. Explained in Chapter 8.

* :mod:`~recsize.experiments.declare`: :class:`Experiment` and the registry :data:`EXPERIMENTS`;
* :mod:`~recsize.experiments.records`: :class:`Cell`, one record per (method, budget, seed);
* :mod:`~recsize.experiments.store`: ``evidence/NAME.jsonl``: read, write, add, missing;
* :mod:`~recsize.experiments.grids`: :func:`load_grids`, the stored grids as the chapters and reports read them;
* :mod:`~recsize.experiments.migrate`: the benchmark outputs of ``benchmarks/out`` into the store;
* :mod:`~recsize.experiments.cells`: how a seed's cells are computed (one dense model, one search per seed);
* :mod:`~recsize.experiments.runner`: :func:`run`, resumable, seeds in parallel processes;
* :mod:`~recsize.experiments.report`: ``report.report(name)``, the per-budget table of an experiment;
* :mod:`~recsize.experiments.commands`: :func:`cli_list`, :func:`cli_run`, :func:`cli_report` for the CLI.

Importing this package imports no torch; :func:`run` (``recsize.experiments.run``) loads it when first used.
"""
from .commands import cli_list, cli_report, cli_run
from .declare import EXPERIMENTS, Experiment, get, list_experiments
from .grids import Grid, load_grids
from .records import Cell

__all__ = ["EXPERIMENTS", "Cell", "Experiment", "Grid", "cli_list", "cli_report", "cli_run", "get",
           "list_experiments", "load_grids", "run"]


def __getattr__(name: str):
    if name == "run":   # the runner imports torch and the search methods: only when used
        from .runner import run
        return run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
