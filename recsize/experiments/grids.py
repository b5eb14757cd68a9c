"""The stored grids as their readers use them: the chapters, ``benchmarks/report.py`` (the README tables)
and the tests that pin quoted numbers. Explained in Chapter 8.

``load_grids(["prune_lightgcn20", "prune_neumf"])`` reads each experiment's evidence file
(:mod:`recsize.experiments.store`) and gives a :class:`Grid`: the cells as ``benchmarks/prune.py`` cells
(plain dicts, :meth:`~recsize.experiments.records.Cell.to_prune_run`), which the statistics of
:mod:`recsize.search.compare` read (``paired_summary``, ``within_noise``, ``aukc``, ``grid_records``),
the settings they were computed with, and the declaration stored with them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import store
from .declare import Experiment, get
from .records import Cell


@dataclass(frozen=True)
class Grid:
    """One stored experiment. Explained in Chapter 8.

    ``runs``: its cells as ``benchmarks/prune.py`` cells (dicts: method, sparsity, seed, the test metrics,
    bytes, kept, best_epoch, seconds, what the method records), in the order of :func:`grid_of`;
    ``settings``: one dict per origin of the cells (the file a migrated cell came from, or the code commit,
    machine and device that computed it), each the declaration's settings (:meth:`Experiment.settings`:
    ``dataset``, ``backbone``, ``dim``, ``epochs``, ``patience``, ...) with ``machine``, ``device``,
    ``commit`` and ``file``; ``experiment``: the declaration stored in the file's header.
    """

    name: str
    runs: list
    settings: list
    experiment: Experiment

    @property
    def metric(self) -> str:
        """The headline metric: Recall@20 (top-k), AUC (CTR). Explained in Chapter 8."""
        from .report import metric_of
        return metric_of(self.experiment)

    @property
    def backbone(self) -> str:
        """The backbone every cell trained. Explained in Chapter 8."""
        return self.experiment.backbone

    @property
    def seeds(self) -> list[int]:
        """The seeds with stored cells, sorted. Explained in Chapter 8."""
        return sorted({r["seed"] for r in self.runs})


def _origin(cell: Cell) -> tuple:
    """Where a cell comes from, in the order origins are listed: migrated files by name, then computed
    cells by (commit, machine, device)."""
    p = cell.provenance
    return (p.get("source") is None, p.get("source") or "", p.get("commit") or "", p.get("machine") or "",
            p.get("device") or "")


def grid_of(experiment, cells: list[Cell]) -> Grid:
    """A :class:`Grid` of ``cells`` of ``experiment`` (a declared name or an :class:`Experiment`): the
    cells by origin (the files migrated cells came from in name order, as ``benchmarks/report.py``
    merged them, then computed cells), then by (method, sparsity, seed); one settings dict per origin.
    Explained in Chapter 8."""
    experiment = experiment if isinstance(experiment, Experiment) else get(experiment)
    cells = sorted(cells, key=lambda c: (_origin(c), c.key))
    settings = {}
    for c in cells:
        source = c.provenance.get("source")
        settings.setdefault(_origin(c), {**experiment.settings(), "machine": c.provenance.get("machine"),
                                         "device": c.provenance.get("device"), "commit": c.provenance.get("commit"),
                                         "file": Path(source).name if source else None})
    return Grid(experiment.name, [c.to_prune_run() for c in cells], list(settings.values()), experiment)


def load_grids(names, folder=None) -> dict[str, Grid]:
    """The stored experiments ``names`` (one name or several; ``folder``: default the repository's
    ``evidence/``) as :class:`Grid` by name, in that order; an experiment without stored cells is left
    out. Explained in Chapter 8."""
    names = (names,) if isinstance(names, (str, Experiment)) else tuple(names)
    grids = {}
    for name in names:
        name = name.name if isinstance(name, Experiment) else str(name)
        cells = store.read(name, folder)
        if cells:
            grids[name] = grid_of(store.declaration(name, folder), cells)
    return grids
