"""recsize.experiments.reproduce: re-running stored cells with today's code finds the stored numbers, and
finds a changed one (Chapter 8)."""
from __future__ import annotations

import pytest

from recsize.experiments import store
from recsize.experiments.declare import Experiment
from recsize.experiments.reproduce import reproduce, sample_cells
from recsize.experiments.runner import run

TINY = Experiment("tiny", "mf", "ml-100k", ("es-bytes", "magprune"), sparsities=(0.8, 0.9), seeds=(0,),
                  epochs=2, patience=1)


def test_stored_cells_are_reproduced_and_a_changed_one_is_found(tiny_split, tmp_path):
    hooks = {"prepare": lambda *a, **k: tiny_split}
    run(TINY, store=tmp_path, progress=False, hooks=hooks)
    cells = sample_cells(TINY, 3, folder=tmp_path)
    assert len(cells) == 3 and cells == sample_cells(TINY, 3, folder=tmp_path)     # the draw is seeded
    rows = reproduce(TINY, cells, folder=tmp_path, hooks=hooks)
    assert [r["cell"] for r in rows] == cells and all(r["equal"] for r in rows), rows
    stored = store.read(TINY, tmp_path)
    stored[0].metrics = {k: v + 1e-9 for k, v in stored[0].metrics.items()}       # one stored number moved
    store.write(TINY, stored, tmp_path)
    rows = reproduce(TINY, [stored[0].key], folder=tmp_path, hooks=hooks)
    assert not rows[0]["equal"] and rows[0]["computed"]["metrics"] != rows[0]["stored"]["metrics"]


def test_only_stored_cells_can_be_reproduced(tmp_path):
    with pytest.raises(ValueError, match="no stored cells"):
        sample_cells(TINY, 1, folder=tmp_path)
    with pytest.raises(ValueError, match="not stored"):
        reproduce(TINY, [("es-bytes", 0.8, 0)], folder=tmp_path)
