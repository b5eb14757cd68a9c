"""Does today's code give the stored numbers? Re-run a sample of an experiment's stored cells into a
scratch store and compare them with the evidence, field by field. Explained in Chapter 8.

A cell is reproduced when its test metrics, stored bytes, kept entries and best epoch are equal to the
stored ones exactly (same seed, same machine class: training is deterministic on one CPU thread). Wall
times are not compared. A cell of a method that shares work across budgets (a dense model, a search)
recomputes that work first, as the runner does.
"""
from __future__ import annotations

import random
import tempfile

from . import store as evidence
from .declare import get

COMPARED = ("metrics", "bytes", "kept", "best_epoch")


def sample_cells(experiment, k: int, seed: int = 0, methods=None, folder=None) -> list[tuple]:
    """``k`` stored (method, sparsity, seed) cells of ``experiment`` drawn at random with ``seed``
    (``methods``: only theirs). Explained in Chapter 8."""
    cells = [c.key for c in evidence.read(experiment, folder) if methods is None or c.method in methods]
    if not cells:
        raise ValueError(f"experiment {experiment if isinstance(experiment, str) else experiment.name} has no "
                         "stored cells to reproduce: run `recsize experiment run NAME` first")
    return sorted(random.Random(seed).sample(sorted(cells), min(k, len(cells))))


def reproduce(experiment, cells, folder=None, device: str = "cpu", progress: bool = False,
              hooks: dict | None = None) -> list[dict]:
    """Re-run the stored ``cells`` ((method, sparsity, seed) keys) of ``experiment`` into a scratch
    store and compare each with the evidence in ``folder``: one row per cell with ``stored``,
    ``computed`` (the :data:`COMPARED` fields) and ``equal``. Explained in Chapter 8."""
    from .runner import run
    experiment = get(experiment) if isinstance(experiment, str) else experiment
    stored = {c.key: c for c in evidence.read(experiment, folder)}
    absent = [key for key in cells if key not in stored]
    if absent:
        raise ValueError(f"cells {absent} are not stored in experiment {experiment.name}: choose stored ones "
                         "(sample_cells)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="recsize-reproduce-") as scratch:
        for method, sparsity, seed in cells:
            run(experiment, seeds=[seed], methods=[method], budgets=[sparsity], device=device, store=scratch,
                progress=progress, hooks=hooks)
        computed = {c.key: c for c in evidence.read(experiment, scratch)}
    for key in cells:
        old, new = stored[key], computed.get(key)
        a = {f: getattr(old, f) for f in COMPARED}
        b = None if new is None else {f: getattr(new, f) for f in COMPARED}
        rows.append({"cell": key, "stored": a, "computed": b, "equal": a == b})
    return rows
