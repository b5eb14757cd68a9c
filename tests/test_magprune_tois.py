"""MagPrune as the TOIS'25 benchmark runs it (Chapter 4): per-table budgets in bytes or parameters, the
per-row floor of min_item entries, the benchmark's binary search for min_item, no fine-tuning, the command
line and benchmarks/prune.py's magprune-tois / -params cells."""
from __future__ import annotations

import json

import pytest
import torch

from recsize.budget import csr_bytes
from recsize.cli import main
from recsize.search import (element_budget, floor_masks, magnitude_masks, params_budget, run_magprune,
                            run_magprune_tois, search_min_item, table_shapes, tois_budget, train_dense)
from recsize.train import default_config

from conftest import one_line_error
from test_prune import TINY, _cells, _prune_script

DIM = 16


def cfg(backbone: str, epochs: int = 2, **kw):
    return default_config(backbone, epochs=epochs, patience=1, progress=False, **kw)


def tables_of(shapes: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {r: torch.randn(n, d, generator=g) for r, (n, d) in shapes.items()}


# ------------------------------------------------------------------------------------------ budgets
@pytest.mark.parametrize("density", [0.05, 0.1, 0.2, 0.5, 1.0])
def test_params_budget_prunes_int_p_times_the_entries_of_every_table(density):
    shapes = {"user": (61, 64), "item": (83, 64)}
    b = params_budget(shapes, density)
    for role, (n, d) in shapes.items():
        assert b["per_table"][role] == n * d - int(n * d * (1 - density))
    assert b["entries"] == sum(b["per_table"].values()) and b["accounting"] == "params"
    g = params_budget(shapes, density, "global")
    assert g["per_table"] is None and g["entries"] == 144 * 64 - int(144 * 64 * (1 - density))
    # the floor's bound is the code's int(d_max * (1 - p)); the floor then fits in every table
    t = tois_budget(shapes, density, "params")
    assert t["max_min_item"] == int(64 * density)
    assert all(n * t["max_min_item"] <= t["per_table"][r] for r, (n, _) in shapes.items())


@pytest.mark.parametrize("density, bound", [(0.5, 23), (0.2, 8), (0.1, 3), (0.05, 0)])
def test_bytes_budget_bounds_the_floor_by_the_kept_entries_per_row(density, bound):
    # at d_max = 64 a kept entry costs 5 B and a row's offset 8 B: (density * 256 - 8) / 5 entries a row,
    # 24 at 50 %, less the table's one extra offset (rows + 1 of them): 23 on every row
    shapes = {"user": (943, 64), "item": (1682, 64)}
    t = tois_budget(shapes, density, "bytes")
    assert t["per_table"] == element_budget(shapes, density, "per-table")["per_table"]
    assert t["max_min_item"] == bound and t["accounting"] == "bytes"
    with pytest.raises(ValueError, match="accounting"):
        tois_budget(shapes, density, "entries")


# ------------------------------------------------------------------------------------------ the floor
@pytest.mark.parametrize("accounting", ["bytes", "params"])
@pytest.mark.parametrize("density", [0.1, 0.2, 0.5])
def test_floor_holds_on_every_row_and_the_count_is_exact(accounting, density):
    shapes = {"user": (50, 64), "item": (70, 64)}
    budget = tois_budget(shapes, density, accounting)
    tables = tables_of(shapes)
    for min_item in range(budget["max_min_item"] + 1):
        masks = floor_masks(tables, budget["per_table"], min_item)
        for role, m in masks.items():
            assert int(m.sum()) == budget["per_table"][role]                 # exactly the table's count
            assert int(m.sum(1).min()) >= min_item                            # the floor, on every row
            top = torch.sort(tables[role].abs(), dim=1, descending=True, stable=True).indices[:, :min_item]
            assert bool(m.gather(1, top).all())                               # ... of the row's largest
            if accounting == "bytes":   # the CSR form fits the table's share of the bytes
                assert csr_bytes(m.sum(1).numpy(), 64) <= density * 4 * shapes[role][0] * 64
            # the rest by magnitude: every unprotected kept entry is at least every pruned one
            protected = torch.zeros_like(m).scatter_(1, top, True)
            free = m & ~protected
            if free.any() and (~m).any():
                assert tables[role].abs()[free].min() >= tables[role].abs()[~m].max()
    # min_item = 0 is MagPrune per table
    plain, _ = magnitude_masks(tables, element_budget(shapes, density, "per-table"))
    floor0 = floor_masks(tables, tois_budget(shapes, density, "bytes")["per_table"], 0)
    assert all(torch.equal(plain[r], floor0[r]) for r in shapes)


def test_a_floor_the_table_cannot_hold_is_refused():
    shapes = {"user": (10, 8)}
    with pytest.raises(ValueError, match="needs 30 entries"):
        floor_masks(tables_of(shapes), {"user": 29}, 3)
    with pytest.raises(ValueError, match="min_item"):
        floor_masks(tables_of(shapes), {"user": 29}, -1)


# ------------------------------------------------------------------------------------------ the search
def counting(values: list[float]):
    calls = []

    def value(m: int) -> float:
        calls.append(m)
        return values[m]
    return value, calls


@pytest.mark.parametrize("values", [[0.1, 0.2, 0.3, 0.35, 0.3, 0.2, 0.1],   # one peak
                                    [0.1, 0.2, 0.3, 0.4, 0.5],               # rising: the last value
                                    [0.5, 0.4, 0.3, 0.2],                    # falling: 0
                                    [0.3]])                                  # one value
def test_binary_search_finds_what_every_value_finds_on_one_peak(values):
    value, calls = counting(values)
    best = search_min_item(value, len(values) - 1, "binary")
    assert best == values.index(max(values)) == search_min_item(counting(values)[0], len(values) - 1, "all")
    assert len(calls) == len(set(calls))                       # each value once


def test_binary_search_is_the_benchmarks_and_can_miss_the_best():
    # the case at c = 95 %: 0 beats the middle, so the search goes left and settles on 0, while
    # trying every value finds 3
    values = [0.109, 0.100, 0.090, 0.164, 0.120]
    value, calls = counting(values)
    assert search_min_item(value, 4, "binary") == 0
    assert sorted(set(calls)) == [0, 1, 2]                     # it never looked at 3
    assert search_min_item(counting(values)[0], 4, "all") == 3
    # a plateau stops the search where it stands (neither neighbour strictly on one side)
    assert search_min_item(counting([0.1, 0.2, 0.2, 0.2, 0.1])[0], 4) == 2
    with pytest.raises(ValueError, match="search"):
        search_min_item(lambda m: 0.0, 3, "golden")


# ------------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("backbone, split_name", [("lightgcn", "tiny_split"), ("neumf", "tiny_split"),
                                                  ("deepfm", "ctr_split")])
def test_run_keeps_the_trained_weights_and_records_min_item(backbone, split_name, request):
    split = request.getfixturevalue(split_name)
    dense = train_dense(backbone, split, DIM, cfg(backbone))
    run = run_magprune_tois(backbone, split, 0.5, DIM, cfg(backbone), dense=dense, search="all")
    budget = tois_budget(table_shapes(backbone, split, DIM), 0.5)
    info = run.info
    assert run.method == "magprune-tois" and info["search"] == "all" and info["split"] == "per-table"
    assert info["metric"] == ("auc" if backbone == "deepfm" else "ndcg@20")
    assert info["max_min_item"] == budget["max_min_item"] > 0
    assert list(info["values"]) == [str(m) for m in range(budget["max_min_item"] + 1)]
    best = max(info["values"].values())
    assert info["values"][str(info["min_item"])] == best == run.result.valid[info["metric"]]
    assert min(info["values"], key=lambda k: (-info["values"][k], int(k))) == str(info["min_item"])
    for role, m in run.masks.items():
        assert int(m.sum()) == budget["per_table"][role] and int(m.sum(1).min()) >= info["min_item"]
    assert run.stored_bytes <= budget["budget_bytes"]
    # no fine-tuning: the kept entries are the dense model's, exactly
    trained = {r: t.table().detach() for r, t in dense.model.embedding_tables().items()}
    stored = {r: t.table().detach() for r, t in run.model.embedding_tables().items()}
    for role, m in run.masks.items():
        assert torch.equal(stored[role][m], trained[role][m]) and not stored[role][~m].any()
    assert run.result.history == [] and run.test_compact is not None
    # the binary search evaluates the same numbers (a subset of them) and lands on one of them
    binary = run_magprune_tois(backbone, split, 0.5, DIM, cfg(backbone), dense=dense)
    assert all(info["values"][k] == v for k, v in binary.info["values"].items())
    assert str(binary.info["min_item"]) in binary.info["values"]


def test_run_is_deterministic_and_trains_its_own_dense_model(tiny_split):
    a = run_magprune_tois("mf", tiny_split, 0.3, DIM, cfg("mf"), accounting="params")
    b = run_magprune_tois("mf", tiny_split, 0.3, DIM, cfg("mf"), accounting="params")
    assert a.info["values"] == b.info["values"] and a.info["min_item"] == b.info["min_item"]
    assert a.test_compact == b.test_compact and all(torch.equal(a.masks[r], b.masks[r]) for r in a.masks)
    assert a.budget["accounting"] == "params" and a.info["max_min_item"] == int(DIM * 0.3)
    # equal parameters keep more entries than equal bytes, whose CSR index is paid from the budget
    c = run_magprune_tois("mf", tiny_split, 0.3, DIM, cfg("mf"))
    assert c.memory["total"]["parameters"] < a.memory["total"]["parameters"]
    assert c.stored_bytes <= c.budget["budget_bytes"] < a.stored_bytes


def test_magprune_takes_a_budget_in_parameters(tiny_split):
    shapes = table_shapes("mf", tiny_split, DIM)
    budget = params_budget(shapes, 0.2, "global")
    run = run_magprune("mf", tiny_split, 0.2, DIM, cfg("mf"), budget=budget)
    total = sum(n * d for n, d in shapes.values())
    assert run.memory["total"]["parameters"] == budget["entries"] == total - int(total * 0.8)
    assert run.budget["accounting"] == "params"


# ------------------------------------------------------------------------------------------ command line
def test_cli_reports_min_item(tmp_path, capsys):
    out = tmp_path / "tois.json"
    assert main([*TINY, "--method", "magprune-tois", "--sparsity", "0.5", "--min-item-search", "all",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["method"] == "magprune-tois" and data["prune"]["search"] == "all"
    assert f"min_item {data['prune']['min_item']} of 0..{data['prune']['max_min_item']}" in printed
    assert "no fine-tuning" in printed and "CSR" in printed
    assert data["memory"]["total"]["csr"] <= data["budget"]["budget_bytes"]


@pytest.mark.parametrize("args, needles", [
    (["--budget", "0.2"], ["--budget 0.2", "use --budget >= 0.2501"]),
    (["--budget", "0.5", "--prune-split", "per-table"], ["--prune-split is for --method dnis or magprune"]),
    (["--budget", "0.5", "--pep-init", "-3"], ["--pep-init is for --method pep"]),
])
def test_cli_bad_input_before_the_data(args, needles, no_work, capsys):
    one_line_error(capsys, main([*TINY, "--method", "magprune-tois", *args]), *needles)


def test_cli_min_item_search_is_for_magprune_tois(no_work, capsys):
    one_line_error(capsys, main([*TINY, "--method", "magprune", "--budget", "0.5", "--min-item-search", "all"]),
                   "--min-item-search is for --method magprune-tois")


# ------------------------------------------------------------------------------------------ benchmarks/prune.py
def test_prune_script_records_both_accountings(tiny_split, monkeypatch, tmp_path):
    prune = _prune_script(monkeypatch, tiny_split)
    args = ["--quick", "--backbone", "mf", "--methods", "magprune-tois", "magprune-tois-params", "magprune-params",
            "magprune"]
    for name in ("a.json", "b.json"):
        assert prune.main([*args, "--out", str(tmp_path / name)]) == 0
    a = _cells(tmp_path / "a.json")
    assert a == _cells(tmp_path / "b.json")
    by = {r["method"]: r for r in a}
    assert {r["dense_valid"] for r in a} == {by["magprune"]["dense_valid"]}   # one dense model for all four
    for m in ("magprune-tois", "magprune-tois-params"):
        assert str(by[m]["min_item"]) in by[m]["min_item_values"] and by[m]["epochs"] == 0
        assert by[m]["search"] == "binary" and by[m]["evaluations"] == len(by[m]["min_item_values"])
    assert by["magprune-tois"]["accounting"] == by["magprune"]["accounting"] == "bytes"
    assert by["magprune-params"]["accounting"] == by["magprune-tois-params"]["accounting"] == "params"
    assert by["magprune-tois"]["bytes"] <= by["magprune-tois"]["budget_bytes"]
    shapes = table_shapes("mf", tiny_split, 64)
    total = sum(n * d for n, d in shapes.values())
    assert by["magprune-params"]["kept"] == total - int(total * 0.9)                      # global count
    assert by["magprune-tois-params"]["kept"] == sum(n * d - int(n * d * 0.9) for n, d in shapes.values())
    assert by["magprune-params"]["bytes"] > by["magprune-params"]["budget_bytes"] >= by["magprune"]["bytes"]
