"""One entry point for every experiment: compute the cells still missing, store each at once.
Explained in Chapter 8.

``run(get("prune_lightgcn20"))`` computes every declared (method, sparsity, seed) cell that
``evidence/prune_lightgcn20.jsonl`` does not hold yet, seed by seed (:func:`~recsize.experiments.cells.seed_cells`:
one dense model, one search per seed serves every budget), and adds each cell to the store as soon as it
is done, so a stopped run resumes where it stopped. ``jobs > 1`` runs seeds in parallel processes (spawned,
one torch thread each); they send their cells back and this process alone writes the store.
"""
from __future__ import annotations

import multiprocessing
import queue as queues
from concurrent.futures import ProcessPoolExecutor, wait
from pathlib import Path

from . import store as evidence
from .declare import Experiment, get
from .records import Cell, provenance


class Evidence:
    """The evidence store in ``folder`` (default: the repository's ``evidence/``) as the runner uses any
    store: ``read(experiment)`` gives the stored cells, ``add(experiment, cell)`` stores one more.
    Explained in Chapter 8."""

    def __init__(self, folder=None):
        self.folder = None if folder is None else Path(folder)

    def read(self, experiment) -> list[Cell]:
        """The stored cells (:func:`recsize.experiments.store.read`). Explained in Chapter 8."""
        return evidence.read(experiment, self.folder)

    def add(self, experiment, cell: Cell) -> None:
        """Store one cell at once (:func:`recsize.experiments.store.add`). Explained in Chapter 8."""
        evidence.add(experiment, cell, self.folder)


def _subset(asked, declared, what: str, name: str, fix: str) -> tuple:
    if asked is None:
        return tuple(declared)
    asked = (asked,) if isinstance(asked, (str, int, float)) else tuple(asked)
    if not asked:
        raise ValueError(f"the {what} list is empty: give at least one, or None for every declared {what} ({fix})")
    outside = [a for a in asked if a not in declared]
    if outside:
        raise ValueError(f"{what} {', '.join(map(str, outside))} not declared by experiment {name}: choose from "
                         f"{', '.join(map(str, declared))} ({fix})")
    return asked


def plan(experiment: Experiment, held, seeds=None, methods=None, budgets=None) -> dict[int, list[tuple]]:
    """The cells still to compute, by seed: {seed: [(method, sparsity), ...]} in the order
    :func:`~recsize.experiments.cells.seed_cells` computes them, restricted to ``seeds``, ``methods`` and
    ``budgets`` (sparsities) where given. Each must be declared (else ValueError naming the declared
    ones). Explained in Chapter 8."""
    fix = "or declare them in recsize/experiments/declare.py"
    seeds = _subset(seeds, experiment.seeds, "seed", experiment.name, fix)
    methods = _subset(methods, experiment.methods, "method", experiment.name, fix)
    budgets = _subset(budgets, experiment.sparsities, "budget", experiment.name, fix)
    todo: dict[int, list[tuple]] = {}
    for method, sparsity, seed in evidence.missing(experiment, held):
        if seed in seeds and method in methods and sparsity in budgets:
            todo.setdefault(seed, []).append((method, sparsity))
    return todo


def _seed_worker(experiment, seed, todo, device, stacked, progress, hooks, out) -> int:
    """One seed in a worker process: every cell onto ``out`` as soon as it is done (the parent stores it)."""
    import torch

    from .cells import seed_cells
    torch.set_num_threads(1)
    n = 0
    for r in seed_cells(experiment, seed, todo, device, stacked, progress, hooks):
        out.put((seed, r))
        n += 1
    return n


def run(experiment, seeds=None, methods=None, budgets=None, device: str = "cpu", jobs: int = 1, store=None,
        progress: bool = True, stacked: bool = False, hooks: dict | None = None) -> list[Cell]:
    """Compute the missing cells of ``experiment`` (a declared name or an
    :class:`~recsize.experiments.declare.Experiment`) and store each one at once; return the cells
    computed. Explained in Chapter 8.

    ``seeds``, ``methods``, ``budgets`` (sparsities) restrict the run to part of the declared grid (None:
    all of it). Cells already stored are skipped. ``store`` is a folder of evidence files (None: the
    repository's ``evidence/``) or any object with ``read(experiment)`` and ``add(experiment, cell)``
    (``benchmarks/prune.py`` passes its ``--out`` file). ``jobs`` > 1 computes that many seeds at once in
    spawned processes with one torch thread each; this process alone writes the store. ``stacked`` trains
    a seed's ES / MDE / MR cells in one pass (LightGCN). ``hooks`` replaces data or search functions
    (:data:`~recsize.experiments.cells.HOOKS`; with ``jobs`` > 1 they must be importable functions).
    Every training runs on ``device`` with one torch thread here (restored afterwards).
    """
    import torch

    from .cells import HOOKS, seed_cells
    experiment = experiment if isinstance(experiment, Experiment) else get(experiment)
    if isinstance(jobs, bool) or int(jobs) != jobs or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1 (processes computing seeds at once), got {jobs}")
    if stacked and experiment.backbone != "lightgcn":
        raise ValueError(f"stacked trains LightGCN models only (its propagation is linear), not "
                         f"{experiment.backbone}: leave stacked off")
    unknown = sorted(set(hooks or {}) - set(HOOKS))
    if unknown:
        raise ValueError(f"hooks {unknown} are not replaceable: choose from {', '.join(HOOKS)}")
    store = store if hasattr(store, "add") and hasattr(store, "read") else Evidence(store)
    todo = plan(experiment, store.read(experiment), seeds, methods, budgets)
    done: list[Cell] = []

    def _keep(r: dict) -> None:
        cell = Cell.from_prune_run(r, settings, experiment)
        store.add(experiment, cell)
        done.append(cell)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    settings = {**experiment.settings(), **provenance(device)}   # the machine as the cells run: one thread
    try:
        if jobs == 1 or len(todo) <= 1:
            for seed, pending in todo.items():
                for r in seed_cells(experiment, seed, pending, device, stacked, progress, hooks):
                    _keep(r)
            return done
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager, ProcessPoolExecutor(min(jobs, len(todo)), mp_context=context) as pool:
            out = manager.Queue()
            futures = [pool.submit(_seed_worker, experiment, seed, pending, device, stacked, progress, hooks, out)
                       for seed, pending in todo.items()]
            while True:
                try:
                    _keep(out.get(timeout=0.5)[1])
                except queues.Empty:
                    if all(f.done() for f in futures):
                        break
            wait(futures)
            while not out.empty():   # whatever arrived after the last look
                _keep(out.get()[1])
            for f in futures:        # a failed seed: its finished cells are stored, then its error is raised
                f.result()
        return done
    finally:
        torch.set_num_threads(threads)
