"""recsize.experiments (Chapter 8, issue 30): declarations, one record per cell, the evidence store, the
migration of benchmarks/out, the runner (bit for bit the numbers of benchmarks/prune.py before its cells
moved), the report and the functions the command line calls."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsize.experiments import EXPERIMENTS, Cell, Experiment, get, list_experiments, store
from recsize.experiments.migrate import OUT, stored_cells
from recsize.files import NotReplaceable
from recsize.search.compare import aukc, grid_metric, merge_runs, paired_summary, run_files, within_noise

ROOT = Path(__file__).resolve().parents[1]
BEFORE = json.loads((ROOT / "tests" / "data" / "experiments_prune_before.json").read_text())


def _same(a, b) -> bool:
    """Equal bit for bit (floats by their repr; NaN equals NaN), key order aside."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def cell(method="es-bytes", sparsity=0.9, seed=0, recall=0.3, experiment="tiny") -> Cell:
    return Cell(experiment, method, sparsity, seed, {"recall@20": recall, "ndcg@20": recall / 2}, 100, 1000, 25, 7,
                {"train": 1.5}, {"form": "compact", "density": round(1 - sparsity, 6)}, {"machine": "here"})


TINY = Experiment("tiny", "mf", "ml-100k", ("es-bytes", "magprune"), sparsities=(0.8, 0.9), seeds=(0, 1),
                  epochs=2, patience=1)


# --- declare ----------------------------------------------------------------------------------------------

def test_the_registry_declares_every_grid_the_book_quotes():
    names = [e.name for e in list_experiments()]
    for grid in ("lightgcn20", "lightgcn", "neumf", "deepfm", "planted_lightgcn"):
        assert f"prune_{grid}" in names
    light = get("prune_lightgcn20")
    assert (light.backbone, light.dataset, light.patience, light.epochs, light.d_max) == ("lightgcn", "ml-100k", 20,
                                                                                           300, 64)
    assert light.ciess_episodes == 6 and light.ciess_top_l == 1 and get("prune_lightgcn").patience == 10
    assert get("prune_deepfm").ihas_charge == "routing+linear" and "ihas" in get("prune_deepfm").methods
    assert Experiment.from_dict(light.to_dict()) == light
    assert Experiment.from_dict(get("prune_deepfm").to_dict()) == get("prune_deepfm")
    with pytest.raises(ValueError, match="prune_lightgcn20"):
        get("lightgcn21")


def test_a_declaration_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="unknown method"):
        Experiment("x", "mf", "ml-100k", ("es-bytes", "magprun"))
    with pytest.raises(ValueError, match="seed list is empty"):
        Experiment("x", "mf", "ml-100k", ("es-bytes",), seeds=())
    with pytest.raises(ValueError, match="ihas does not apply"):
        Experiment("x", "mf", "ml-100k", ("ihas",))
    with pytest.raises(ValueError, match="unknown backbone"):
        Experiment("x", "mff", "ml-100k", ("es-bytes",))
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        Experiment("x", "mf", "ml-100k", ("es-bytes",), sparsities=(90,))
    with pytest.raises(ValueError, match="not among the methods"):
        Experiment("x", "mf", "ml-100k", ("es-bytes",), subsets=(("pep", (0.9,), (0,)),))
    deepfm = get("prune_deepfm")
    assert ("ihas", 0.9, 0) not in deepfm.cells() and ("ihas", 0.8, 2) in deepfm.cells()
    assert len(TINY.cells()) == 8 and TINY.cells()[0] == ("es-bytes", 0.8, 0)   # seeds outermost


# --- records ----------------------------------------------------------------------------------------------

def test_a_cell_round_trips_and_a_prune_cell_loses_nothing():
    c = cell()
    assert Cell.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match="missing fields"):
        Cell.from_dict({"experiment": "x"})
    for name in ("prune_lightgcn20", "prune_deepfm"):
        runs, settings = merge_runs(run_files(OUT, name))
        for run in runs:
            back = Cell.from_prune_run(run, settings[0], name).to_prune_run()
            assert _same(back, run) and list(back) == list(run)        # every field, in its order
    ihas = next(r for r in merge_runs(run_files(OUT, "prune_deepfm"))[0] if r["method"] == "ihas")
    c = Cell.from_prune_run(ihas, {"machine": "m", "file": "f.json"}, get("prune_deepfm"))
    assert set(c.metrics) == {"auc", "logloss"} and "cluster_bytes" in c.extra and c.experiment == "prune_deepfm"
    assert c.provenance["machine"] == "m" and c.provenance["source"] == "f.json" and c.provenance["commit"] is None
    with pytest.raises(ValueError, match="lacks kept"):
        Cell.from_prune_run({k: v for k, v in ihas.items() if k != "kept"}, {}, "x")


# --- store ------------------------------------------------------------------------------------------------

def test_the_store_writes_sorted_lines_resumes_and_refuses_what_it_did_not_write(tmp_path):
    assert store.read(TINY, tmp_path) == [] and store.missing(TINY, []) == TINY.cells()
    store.write(TINY, [cell("magprune", 0.9, 1), cell("es-bytes", 0.9, 0)], tmp_path)
    path = tmp_path / "tiny.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0]["recsize"] == {"format": "experiment", "version": 1} and lines[0]["experiment"] == "tiny"
    assert Experiment.from_dict(lines[0]["declaration"]) == TINY == store.declaration(TINY, tmp_path)
    assert [(x["method"], x["seed"]) for x in lines[1:]] == [("es-bytes", 0), ("magprune", 1)]
    store.add(TINY, cell("es-bytes", 0.9, 0, recall=0.5), tmp_path)     # replaced
    store.add(TINY, cell("es-bytes", 0.8, 1), tmp_path)                 # inserted
    cells = store.read(TINY, tmp_path)
    assert [c.key for c in cells] == [("es-bytes", 0.8, 1), ("es-bytes", 0.9, 0), ("magprune", 0.9, 1)]
    assert cells[1].metrics["recall@20"] == 0.5 and len(store.missing(TINY, cells)) == 5
    assert not list(tmp_path.glob(".*.part"))
    with pytest.raises(ValueError, match="repeat"):
        store.write(TINY, [cell(), cell()], tmp_path)
    with pytest.raises(ValueError, match="cannot be stored"):
        store.write(TINY, [cell(experiment="other")], tmp_path)
    other = Experiment("tiny", "mf", "ml-100k", ("es-bytes", "magprune"), epochs=3)
    with pytest.raises(ValueError, match="other settings .*epochs 2 vs 3"):
        store.add(other, cell(), tmp_path)
    foreign = tmp_path / "mine.jsonl"
    foreign.write_text('{"a": 1}\n')
    with pytest.raises(NotReplaceable, match="not written by recsize"):
        store.write(Experiment("mine", "mf", "ml-100k", ("es-bytes",)), [], tmp_path)
    assert foreign.read_text() == '{"a": 1}\n'
    path.write_text(path.read_text() + "{truncated\n")
    with pytest.raises(ValueError, match="not a JSON line"):
        store.read(TINY, tmp_path)


# --- migrate ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_the_evidence_gives_the_tables_of_the_benchmark_files_exactly(name):
    """evidence/NAME.jsonl is benchmarks/out/NAME_*.json merged (first file wins): the same paired summary,
    the same AUKC and the same verdicts, bit for bit; every stored cell is declared, nothing is missing
    beyond what the files miss."""
    experiment = get(name)
    runs, settings = merge_runs(run_files(OUT, name))
    cells = store.read(name)
    assert store.declaration(name) == experiment
    mine = [c.to_prune_run() for c in cells]
    metric = grid_metric(settings)
    assert _same(paired_summary(mine, "es-bytes", metric, experiment.methods),
                 paired_summary(runs, "es-bytes", metric, experiment.methods))
    assert _same(within_noise(mine, metric, experiment.methods), within_noise(runs, metric, experiment.methods))
    for method in experiment.methods:
        assert _same(aukc(mine, method, metric), aukc(runs, method, metric))
    assert len(cells) == len(runs) and store.missing(experiment, cells) == []
    assert [c.key for c in cells] == sorted(c.key for c in cells)
    fresh = stored_cells(name)           # the declaration still agrees with every file's settings
    assert _same([c.to_dict() for c in sorted(fresh, key=lambda c: c.key)], [c.to_dict() for c in cells])
    assert all(c.provenance["source"].startswith("benchmarks/out/" + name) for c in cells)
