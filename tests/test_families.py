"""recsize.experiments.families (Chapter 8.9, issue 31): the quantised and hashed families as cells of the
head-to-head at equal bytes: every family computes a cell through the runner on a top-k and a CTR backbone,
within its budget, skipped below its floor, one dense / QAT model per seed, the served lookups equal to the
dequantised reference, the same numbers for the same seed, and es-int8's density the largest that fits."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recsize.budget import dense_bytes, target_parameters
from recsize.experiments import Experiment, get, store
from recsize.experiments import cells as cells_module
from recsize.experiments.declare import FAMILY_METHODS
from recsize.experiments.families import (FAMILIES, quantized_density_for_bytes, run_hashed, run_narrow_quantized,
                                          run_quantized, unreachable)
from recsize.quantize import (QuantizedCompactEmbedding, QuantizedEmbedding, dequantize_rows,
                              quantized_compact_bytes, quantize_rows)
from recsize.search.prune import table_shapes, train_dense
from recsize.train import default_config

D_MAX = 32
SPARSITIES = (0.5, 0.8, 0.95)


def _config(backbone, seed=0):
    return default_config(backbone, epochs=2, patience=1, seed=seed, progress=False)


def test_the_families_are_declared_in_the_three_grids_above_their_floors():
    assert tuple(FAMILIES) == FAMILY_METHODS
    for name in ("prune_lightgcn20", "prune_neumf", "prune_deepfm"):
        e = get(name)
        assert set(FAMILY_METHODS) <= set(e.methods) and "es-bytes" in e.methods
        cells = {(m, c) for m, c, s in e.cells() if m in FAMILIES}
        assert ("int8", 0.5) in cells and ("int8", 0.8) not in cells and ("int4", 0.8) in cells
        assert ("es-int8", 0.9) in cells and ("es-int8", 0.95) not in cells and ("hash", 0.95) in cells
        assert all({s for m, c, s in e.cells() if m == f} == {0, 1, 2} for f in FAMILIES)
    shapes = {"user": (943, 64), "item": (1682, 64)}       # ml-100k at d_max = 64
    assert "26.6%" in unreachable("int8", shapes, 0.8) and unreachable("int8", shapes, 0.5) is None
    assert "14.1%" in unreachable("int4", shapes, 0.9) and unreachable("qat-int4", shapes, 0.8) is None
    assert "less than one dimension" in unreachable("es-int8", shapes, 0.95)
    assert "'user'" in unreachable("qr", shapes, 0.95) and unreachable("qr", {"feature": (2858, 64)}, 0.95) is None
    with pytest.raises(ValueError, match="not a family"):
        unreachable("es-bytes", shapes, 0.5)


@pytest.mark.parametrize("density", [0.5, 0.2, 0.1, 0.07])
def test_the_int8_compact_density_is_the_largest_that_fits(density):
    shapes = {"user": (943, 64), "item": (1682, 64)}
    d = quantized_density_for_bytes(shapes, density, 8)
    binding = []
    for rows, dim in shapes.values():
        budget = density * dense_bytes(rows, dim)
        kept = target_parameters(d, rows, dim)
        assert kept >= rows and quantized_compact_bytes([kept] + [0] * (rows - 1), dim, 8) <= budget
        binding.append(kept == rows * dim or quantized_compact_bytes([kept + 1] + [0] * (rows - 1), dim, 8) > budget)
    assert any(binding)                                      # one value more would not fit (or all are kept)
    assert quantized_density_for_bytes(shapes, 0.05, 8) is None  # under one dimension per row
    assert quantized_density_for_bytes({"feature": (10, 8)}, 1.0, 8) == pytest.approx((80 - 0.5) / 80)


def _runs(backbone, split, tmp_path, capsys, monkeypatch):
    """Every family at c = 50, 80, 95 % on one seed through the runner; the dense and QAT trainings counted."""
    from recsize.experiments.runner import run
    trained = {"dense": 0, "qat": 0}

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            trained[name] += 1
            return fn(*args, **kwargs)
        return wrapper
    monkeypatch.setattr(cells_module, "train_qat", counting("qat", cells_module.train_qat))
    experiment = Experiment("families", backbone, "ml-100k-ctr" if backbone == "deepfm" else "ml-100k",
                            FAMILY_METHODS, sparsities=SPARSITIES, seeds=(0,), d_max=D_MAX, epochs=2, patience=1)
    done = run(experiment, store=tmp_path, hooks={"prepare": lambda *a, **k: split,
                                                   "train_dense": counting("dense", train_dense)})
    return experiment, done, trained, capsys.readouterr().out


@pytest.mark.parametrize("backbone", ["mf", "deepfm"])
def test_every_family_computes_its_cells_within_the_budget(backbone, tiny_split, ctr_split, tmp_path, capsys,
                                                           monkeypatch):
    split = ctr_split if backbone == "deepfm" else tiny_split
    experiment, done, trained, out = _runs(backbone, split, tmp_path, capsys, monkeypatch)
    shapes = table_shapes(backbone, split, D_MAX)
    reachable = {(m, c) for m in FAMILY_METHODS for c in SPARSITIES if unreachable(m, shapes, c) is None}
    assert {(c.method, c.sparsity) for c in done} == reachable
    assert {m for m, c in reachable if c == 0.5} == set(FAMILY_METHODS)      # every family has a cell
    assert ("int8", 0.95) not in reachable and "c = 95 % int8: skipped, full-width int8 tables take" in out
    assert trained == {"dense": 1, "qat": 1}                                  # one of each per seed
    metrics = ("auc", "logloss") if backbone == "deepfm" else ("recall@20", "ndcg@20")
    forms = {"int8": "int8", "int4": "int4", "qat-int4": "int4", "es-int8": "int8-compact",
             "mde-int8": "int8-compact", "qr": "qr", "hash": "hash"}
    for cell in store.read(experiment, tmp_path):
        assert set(cell.metrics) == set(metrics) and all(np.isfinite(v) for v in cell.metrics.values())
        assert cell.extra["budget_bytes"] == (1 - cell.sparsity) * cell.dense_bytes
        assert cell.bytes <= round(1 - cell.sparsity, 6) * cell.dense_bytes     # 1 - c: 0.2, not 0.1999...
        assert cell.extra["form"] == forms[cell.method] and cell.kept > 0 and cell.best_epoch >= 1
        if cell.method in ("int8", "int4", "qat-int4"):                      # full width, whatever the budget
            rows = sum(r for r, _ in shapes.values())
            bits = 8 if cell.method == "int8" else 4
            assert cell.bytes == rows * (D_MAX * bits // 8 + 4) and cell.kept == rows * D_MAX
    int4 = {c.sparsity: c for c in done if c.method == "int4"}
    assert int4[0.5].bytes == int4[0.8].bytes < int4[0.5].extra["budget_bytes"] / 2   # fewer bytes than allowed


def test_the_served_lookups_equal_the_dequantised_reference(tiny_split):
    config = _config("mf")
    dense = train_dense("mf", tiny_split, D_MAX, config)
    for bits in (8, 4):
        run = run_quantized("mf", tiny_split, 0.5, D_MAX, config, dense=dense, bits=bits)
        for role, table in run.model.embedding_tables().items():
            assert isinstance(table, QuantizedEmbedding) and table.bits == bits
            weight = dense.model.embedding_tables()[role].weight.detach()
            reference = dequantize_rows(*quantize_rows(weight, bits), bits, D_MAX)
            ids = torch.arange(weight.shape[0]).flip(0)
            assert torch.equal(table(ids), reference[ids])
            step = table.scale.float()[:, None]
            assert ((table(torch.arange(weight.shape[0])) - weight).abs() <= step / 2 + 1e-3).all()
    run = run_narrow_quantized("mf", tiny_split, 0.8, D_MAX, config, seed=0, widths="mde")
    assert run.stored_bytes <= 0.2 * sum(dense_bytes(r, d) for r, d in table_shapes("mf", tiny_split, D_MAX).values())
    for role, table in run.model.embedding_tables().items():
        assert isinstance(table, QuantizedCompactEmbedding)
        floats = run.trained.embedding_tables()[role].table().detach()
        sizes = run.sizes[role]
        assert torch.equal(table.sizes, torch.as_tensor(sizes))
        served = table(torch.arange(len(sizes)))
        for n, width in enumerate(sizes):   # each row quantised alone over its own width, zeros beyond it
            alone = dequantize_rows(*quantize_rows(floats[n:n + 1, :width], 8), 8, int(width))[0]
            assert torch.equal(served[n, :width], alone) and not served[n, width:].any()
    from recsize.evaluate import evaluate_topk
    assert evaluate_topk(run.model, tiny_split, "test") == run.test_compact     # the cell's metrics are the served


@pytest.mark.parametrize("method", ["int4", "qat-int4", "es-int8", "qr", "hash"])
def test_the_same_seed_gives_the_same_numbers(method, ctr_split):
    def once():
        run = FAMILIES[method]("deepfm", ctr_split, 0.5, D_MAX, _config("deepfm", seed=3), 3)
        return json.dumps({"test": run.test_compact, "valid": run.result.valid, "bytes": run.stored_bytes,
                           "kept": run.memory["total"]["parameters"], "extra": run.extra}, sort_keys=True)
    assert once() == once()


def test_a_family_called_below_its_floor_refuses(tiny_split):
    with pytest.raises(ValueError, match="int8 cannot serve c = 95 %"):
        run_quantized("mf", tiny_split, 0.95, D_MAX, _config("mf"), bits=8)
    with pytest.raises(ValueError, match="qr cannot serve c = 95 %: table 'user'"):
        run_hashed("mf", tiny_split, 0.95, D_MAX, _config("mf"), kind="qr")
