"""recsize.experiments (Chapter 8, issue 30): declarations, one record per cell, the evidence store and what
it gives the tables, the migration of benchmark files, the runner (bit for bit the numbers of
benchmarks/prune.py before its cells moved), the report and the functions the command line calls."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from recsize.experiments import EXPERIMENTS, Cell, Experiment, get, list_experiments, store
from recsize.experiments.migrate import merge_runs, run_files
from recsize.files import NotReplaceable
from recsize.search.compare import aukc, grid_metric, paired_summary, within_noise

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
        for stored in store.read(name):
            run = stored.to_prune_run()
            again = Cell.from_prune_run(run, {**stored.provenance, "file": stored.provenance["source"]}, name)
            assert again == stored and list(again.to_prune_run()) == list(run)    # every field, in its order
    ihas = next(c.to_prune_run() for c in store.read("prune_deepfm") if c.method == "ihas")
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

SUMMARIES = json.loads((ROOT / "tests" / "data" / "evidence_summaries.json").read_text())


def _summary(runs: list[dict], metric: str, methods) -> dict:
    """What the tables quote of a grid: per (method, budget) the mean, seeds and paired difference to ES
    at equal bytes; each method's AUKC; per budget the best method and those within the noise."""
    rows = paired_summary(runs, "es-bytes", metric, methods)
    return {
        "metric": metric, "cells": len(runs),
        "means": [[r["method"], r["sparsity"], r["mean"], len(r["cells"]),
                   None if r["delta"] is None else [r["delta"][k] for k in ("mean", "low", "high", "n")]]
                  for r in rows],
        "aukc": {m: [a["ratio"][k] for k in ("mean", "low", "high", "n")]
                 for m in methods if (a := aukc(runs, m, metric)) is not None},
        "verdicts": [[w["sparsity"], w["best"], [r["method"] for r in w["rows"] if r["tied"]]]
                     for w in within_noise(runs, metric, methods)]}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_the_evidence_gives_the_stored_summaries_exactly(name):
    """evidence/NAME.jsonl gives, bit for bit, the paired summaries, AUKC and verdicts of
    tests/data/evidence_summaries.json, computed from benchmarks/out/NAME_*.json (merged, the first file
    holding a cell winning) before those files were removed, when the store gave the same; every stored
    cell is declared and none is missing; each migrated cell names the file it came from."""
    from recsize.experiments import load_grids
    from recsize.search.compare import FAMILIES
    experiment = get(name)
    grid = load_grids([name])[name]
    cells = store.read(name)
    assert store.declaration(name) == experiment == grid.experiment
    # the migrated grid; the families of Chapter 8.9, computed since, are declared on top of it
    migrated = [r for r in grid.runs if r["method"] not in FAMILIES]
    methods = tuple(m for m in experiment.methods if m not in FAMILIES)
    assert _same(_summary(migrated, grid.metric, methods), SUMMARIES[name])
    missing = [key for key in store.missing(experiment, cells) if key[0] not in FAMILIES]
    assert grid.metric == grid_metric(grid.settings) and missing == []
    assert [c.key for c in cells] == sorted(c.key for c in cells)
    assert all(c.provenance["source"].startswith("benchmarks/out/" + name) for c in cells
               if c.method not in FAMILIES)
    assert all(c.provenance["source"] is None and c.provenance["commit"] for c in cells if c.method in FAMILIES)


def test_migrate_merges_benchmark_files_into_the_store(tmp_path):
    """benchmarks/prune.py outputs (first file holding a cell wins) become an experiment's evidence file, each
    cell with its file as provenance; a file run with other settings than the declaration is refused."""
    from recsize.experiments.migrate import migrate

    def write(path, cells, **settings):
        runs = [{"method": m, "sparsity": c, "seed": s, "recall@20": v, "bytes": 10, "dense_bytes": 100, "kept": 2,
                 "best_epoch": 1, "seconds": {"train": 1.0}} for m, c, s, v in cells]
        path.write_text(json.dumps({"settings": {**TINY.settings(), **settings}, "machine": "box", "runs": runs}))
    write(tmp_path / "tiny_a.json", [("es-bytes", 0.9, 0, 0.3), ("magprune", 0.8, 1, 0.2)])
    write(tmp_path / "tiny_b.json", [("es-bytes", 0.9, 0, 0.9), ("es-bytes", 0.8, 1, 0.4)])
    cells = migrate(TINY, tmp_path, tmp_path / "evidence")
    assert [(c.key, c.metrics["recall@20"], c.provenance["source"]) for c in store.read(TINY, tmp_path / "evidence")] \
        == [(("es-bytes", 0.8, 1), 0.4, str(tmp_path / "tiny_b.json")),
            (("es-bytes", 0.9, 0), 0.3, str(tmp_path / "tiny_a.json")),
            (("magprune", 0.8, 1), 0.2, str(tmp_path / "tiny_a.json"))]
    assert len(cells) == 3 and all(c.provenance["machine"] == "box" for c in cells)
    write(tmp_path / "tiny_c.json", [("es-bytes", 0.8, 0, 0.5)], patience=5)
    with pytest.raises(ValueError, match="tiny_c.json was run with other settings"):
        migrate(TINY, tmp_path, tmp_path / "evidence")


def _prune_file(path, patience, cells):
    settings = {"backbone": "lightgcn", "dataset": "ml-100k", "dim": 64, "epochs": 300, "patience": patience,
                "prune_split": "global", "pep_epochs": 300, "pep_init": -15.0, "pep_scale": 1.0,
                "pep_granularity": "feature_dim", "quick": False}
    runs = [{"method": m, "sparsity": c, "seed": s, "recall@20": v} for m, c, s, v in cells]
    path.write_text(json.dumps({"settings": settings, "machine": "test", "runs": runs}))
    return path


def test_merge_runs_first_file_wins_and_refuses_other_protocols(tmp_path):
    a = _prune_file(tmp_path / "prune_x_a.json", 10, [("es", 0.9, 0, 0.30), ("magprune", 0.9, 0, 0.31)])
    b = _prune_file(tmp_path / "prune_x_b.json", 10, [("es", 0.9, 0, 0.99), ("es", 0.9, 1, 0.32)])
    _prune_file(tmp_path / "prune_x_seed0.json", 10, [("es", 0.9, 2, 0.5)])     # a probe: left out
    assert run_files(tmp_path, "prune_x") == [a, b]
    runs, settings = merge_runs([a, b])
    assert sorted((r["method"], r["seed"], r["recall@20"]) for r in runs) == [
        ("es", 0, 0.30), ("es", 1, 0.32), ("magprune", 0, 0.31)]
    assert [s["file"] for s in settings] == ["prune_x_a.json", "prune_x_b.json"]
    c = _prune_file(tmp_path / "prune_x_c.json", 20, [("es", 0.9, 2, 0.33)])
    with pytest.raises(ValueError, match=r"prune_x_c.json .*patience 10 vs 20"):
        merge_runs([a, c])


def test_merge_reads_settings_older_files_lack_as_their_defaults(tmp_path):
    """A file written before the CIESS / iHAS settings existed merges with a new one run at their defaults,
    not with one run at other values, where both hold that method's cells: a method's own settings bind
    only files that hold it."""
    from recsize.experiments.declare import SETTING_DEFAULTS, setting_method
    old = _prune_file(tmp_path / "prune_x_a.json", 10, [("es-bytes", 0.9, 0, 0.30), ("ciess", 0.8, 0, 0.2)])
    new = _prune_file(tmp_path / "prune_x_b.json", 10, [("ciess", 0.9, 0, 0.31)])
    data = json.loads(new.read_text())
    data["settings"].update(SETTING_DEFAULTS)
    new.write_text(json.dumps(data))
    runs, _ = merge_runs([old, new])
    assert [r["method"] for r in runs] == ["es-bytes", "ciess", "ciess"]
    data["settings"]["ciess_episodes"] = 2
    new.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"ciess_episodes 30 vs 2"):
        merge_runs([old, new])
    data["settings"]["ihas_charge"] = "embeddings"           # neither file holds iHAS cells: no conflict
    data["settings"]["ciess_episodes"] = 30
    new.write_text(json.dumps(data))
    assert len(merge_runs([old, new])[0]) == 3
    assert (setting_method("pep_init"), setting_method("ihas_charge"), setting_method("patience")) == ("pep", "ihas",
                                                                                                      None)


# --- grids: what the chapters, the README tables and the tests read ---------------------------------------

def test_load_grids_reads_the_store_and_leaves_out_experiments_without_cells(tmp_path):
    from recsize.experiments import load_grids
    migrated = {"machine": "old box", "source": "benchmarks/out/tiny_b.json"}
    cells = [cell("magprune", 0.9, 1), cell("es-bytes", 0.8, 0), cell("es-bytes", 0.9, 0)]
    cells[0].provenance.update(migrated)
    cells[2].provenance.update({**migrated, "source": "benchmarks/out/tiny_a.json"})
    store.write(TINY, cells, tmp_path)
    grids = load_grids(("tiny", "absent"), tmp_path)
    assert list(grids) == ["tiny"] and load_grids("absent", tmp_path) == {}
    g = grids["tiny"]
    assert (g.name, g.backbone, g.metric, g.seeds, g.experiment) == ("tiny", "mf", "recall@20", [0, 1], TINY)
    assert g.runs == [c.to_prune_run() for c in (cells[2], cells[0], cells[1])]     # by origin: the files first
    assert [(s["file"], s["machine"]) for s in g.settings] == [("tiny_a.json", "old box"), ("tiny_b.json", "old box"),
                                                               (None, "here")]
    assert all(s["patience"] == 1 and s["dim"] == 64 and s["dataset"] == "ml-100k" for s in g.settings)
    light = load_grids(["prune_lightgcn20"])["prune_lightgcn20"]      # the repository's evidence/
    migrated = [r for r in light.runs if r["method"] not in ("int8", "int4", "qat-int4", "es-int8", "mde-int8",
                                                             "qr", "hash")]
    assert (light.metric, light.backbone, light.seeds, len(migrated)) == ("recall@20", "lightgcn", [0, 1, 2], 132)


def test_declaring_imports_no_torch_and_knows_every_backbone():
    import subprocess
    import sys

    from recsize.backbones import CTR_BACKBONES, TOPK_BACKBONES
    from recsize.experiments.declare import TASKS
    assert TASKS == {**{b: "topk" for b in TOPK_BACKBONES}, **{b: "ctr" for b in CTR_BACKBONES}}
    code = "import sys, recsize.experiments as e; e.cli_list(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


# --- runner: the cells of benchmarks/prune.py, bit for bit -------------------------------------------------

def _without_seconds(runs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in runs]


def _split_of(name, tiny_split, ctr_split):
    return ctr_split if BEFORE["grids"][name]["settings"]["backbone"] == "fm" else tiny_split


@pytest.mark.parametrize("name", ["mf", "lightgcn", "fm"])
def test_the_runner_computes_the_cells_benchmarks_prune_computed_before_the_move(name, tiny_split, ctr_split,
                                                                                 tmp_path):
    """tests/data/experiments_prune_before.json holds the cells of benchmarks/prune.py before its cell logic
    moved to recsize/experiments (mf: 9 methods, lightgcn stacked: 8, fm with iHAS: 2; 2 budgets, 2 epochs):
    the runner gives the same cells, every value bit for bit, in the same order; a second run computes nothing."""
    grid = BEFORE["grids"][name]
    experiment = Experiment.from_settings(name, grid["settings"])
    split = _split_of(name, tiny_split, ctr_split)
    hooks = {"prepare": lambda *a, **k: split}
    from recsize.experiments.runner import run
    done = run(experiment, store=tmp_path, progress=False, stacked="--stacked" in grid["argv"], hooks=hooks)
    assert json.dumps(_without_seconds([c.to_prune_run() for c in done])) == json.dumps(grid["runs"])
    stored = store.read(experiment, tmp_path)
    assert _same(sorted(_without_seconds([c.to_prune_run() for c in stored]), key=lambda r: (r["method"],
                 r["sparsity"])), sorted(grid["runs"], key=lambda r: (r["method"], r["sparsity"])))
    import torch

    import recsize
    prov = stored[0].provenance
    assert prov["torch"] == torch.__version__ and prov["recsize"] == recsize.__version__ and prov["date"]
    from recsize.experiments.records import code_commit
    assert prov["device"] == "cpu" and prov["machine"] and prov["commit"] == code_commit() and prov["source"] is None
    assert run(experiment, store=tmp_path, progress=False, hooks=hooks) == []     # resumed: nothing left


def test_benchmarks_prune_is_a_wrapper_with_the_same_cells(ctr_split, monkeypatch, tmp_path):
    import importlib
    import sys
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("prune", None)
    prune = importlib.import_module("prune")
    monkeypatch.setattr(prune, "prepare", lambda *a, **k: ctr_split)
    grid = BEFORE["grids"]["fm"]
    assert prune.main([*grid["argv"], "--out", str(tmp_path / "fm.json")]) == 0
    data = json.loads((tmp_path / "fm.json").read_text())
    assert json.dumps(_without_seconds(data["runs"])) == json.dumps(grid["runs"])
    assert data["settings"] == grid["settings"]
    assert len((ROOT / "benchmarks" / "prune.py").read_text().splitlines()) < 300


def test_benchmarks_prune_adds_the_cells_of_the_experiment_its_flags_name_to_the_store(ctr_split, monkeypatch,
                                                                                      tmp_path, capsys):
    """Without --out, benchmarks/prune.py computes into the evidence store: the declared experiment named by
    --experiment, or the one whose settings its flags give; flags that contradict it are refused."""
    import importlib
    import sys
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("prune", None)
    prune = importlib.import_module("prune")
    monkeypatch.setattr(prune, "prepare", lambda *a, **k: ctr_split)
    grid = BEFORE["grids"]["fm"]
    tiny = Experiment.from_settings("tiny_fm", grid["settings"])
    monkeypatch.setitem(EXPERIMENTS, "tiny_fm", tiny)
    assert prune.main([*grid["argv"], "--evidence", str(tmp_path)]) == 0            # the flags name tiny_fm
    assert "experiment tiny_fm: stored in " in capsys.readouterr().out
    runs = [c.to_prune_run() for c in store.read(tiny, tmp_path)]
    key = lambda r: (r["method"], r["sparsity"])   # noqa: E731
    assert _same(sorted(_without_seconds(runs), key=key), sorted(grid["runs"], key=key))
    assert prune.main(["--experiment", "tiny_fm", "--evidence", str(tmp_path)]) == 0   # every cell stored
    for argv, why in ((["--experiment", "tiny_fm", "--patience", "3"], "tiny_fm declares other settings than "
                                                                        "--patience"),
                      (["--experiment", "tiny_fm", "--seeds", "5"], "seed 5 not declared by experiment tiny_fm"),
                      (["--backbone", "fm"], "the flags name no declared experiment")):
        with pytest.raises(SystemExit):
            prune.main([*argv, "--evidence", str(tmp_path)])
        assert why in capsys.readouterr().err
    assert len(store.read(tiny, tmp_path)) == len(grid["runs"])


def test_a_stopped_run_resumes_cell_by_cell(tiny_split, tmp_path):
    from recsize.experiments.runner import run
    grid = BEFORE["grids"]["mf"]
    experiment = Experiment.from_settings("mf", {**grid["settings"], "methods": ["es-bytes", "magprune"]})
    hooks = {"prepare": lambda *a, **k: tiny_split}
    first = run(experiment, budgets=[0.9], store=tmp_path, progress=False, hooks=hooks)
    assert [c.key for c in first] == [("es-bytes", 0.9, 0), ("magprune", 0.9, 0)]
    rest = run(experiment, store=tmp_path, progress=False, hooks=hooks)
    assert [c.key for c in rest] == [("es-bytes", 0.8, 0), ("magprune", 0.8, 0)]
    want = [r for r in grid["runs"] if r["method"] in ("es-bytes", "magprune")]
    got = [c.to_prune_run() for c in store.read(experiment, tmp_path)]
    assert _same(sorted(_without_seconds(got), key=lambda r: (r["method"], r["sparsity"])),
                 sorted(want, key=lambda r: (r["method"], r["sparsity"])))


def tiny_prepare(dataset, protocol, seed, verbose=False):
    """The tests' tiny split for every seed (a module function: the runner's worker processes import it)."""
    from recsize.data import make_split, make_synthetic
    return make_split(make_synthetic(n_users=60, n_items=80, mean_per_user=10, d_true=8, seed=0), "random-811", seed=0)


def test_parallel_seeds_give_the_cells_of_one_process(tmp_path, capsys):
    from recsize.experiments.runner import run
    experiment = Experiment("two", "mf", "ml-100k", ("es-bytes",), sparsities=(0.9,), seeds=(0, 1), epochs=2,
                            patience=1)
    hooks = {"prepare": tiny_prepare}
    alone = run(experiment, store=tmp_path / "one", progress=False, hooks=hooks)
    both = run(experiment, jobs=2, store=tmp_path / "two", progress=False, hooks=hooks)
    assert sorted(c.key for c in both) == [c.key for c in alone] == [("es-bytes", 0.9, 0), ("es-bytes", 0.9, 1)]
    strip = lambda cells: [{**c.to_dict(), "seconds": None, "provenance": None} for c in cells]   # noqa: E731
    assert _same(strip(store.read(experiment, tmp_path / "two")), strip(store.read(experiment, tmp_path / "one")))
    assert alone[0].metrics != alone[1].metrics                       # two seeds, two initialisations


def test_the_runner_refuses_bad_input_before_any_work(tmp_path):
    from recsize.experiments.runner import run
    with pytest.raises(ValueError, match="seed list is empty"):
        run(TINY, seeds=[], store=tmp_path)
    with pytest.raises(ValueError, match="method pep not declared by experiment tiny"):
        run(TINY, methods=["pep"], store=tmp_path)
    with pytest.raises(ValueError, match="seed 7 not declared"):
        run(TINY, seeds=[7], store=tmp_path)
    with pytest.raises(ValueError, match="jobs must be"):
        run(TINY, jobs=0, store=tmp_path)
    with pytest.raises(ValueError, match="LightGCN models only"):
        run(TINY, stacked=True, store=tmp_path)
    with pytest.raises(ValueError, match="not replaceable"):
        run(TINY, hooks={"train": print}, store=tmp_path)
    with pytest.raises(ValueError, match="unknown experiment"):
        run("nope", store=tmp_path)
    assert not list(tmp_path.iterdir())


# --- report and the command line's functions ---------------------------------------------------------------

def test_the_report_names_the_experiment_and_pairs_the_seeds():
    from recsize.experiments.report import report
    text = report("prune_lightgcn20")
    assert text.startswith("experiment prune_lightgcn20, ") and "132 cells migrated from benchmarks/out" in text
    runs = [c.to_prune_run() for c in store.read("prune_lightgcn20")]
    row = next(r for r in paired_summary(runs, "es-bytes", "recall@20") if (r["method"], r["sparsity"]) ==
               ("magprune", 0.8))
    d = row["delta"]
    line = next(x for x in text.splitlines() if x.startswith("| 80 % | magprune |"))
    assert f"{row['mean']:.4f}" in line and f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] (n = 3)" in line
    assert "| 50 % | es-bytes | 0.3813 | 0.3856 | 0.3844 | 0.3838 |  |" in text
    assert "test AUC" in report("prune_deepfm") and "no Δ: the experiment holds no es-bytes" in report(
        "prune_cap1000_lightgcn")


def test_the_report_of_computed_cells_names_their_commit(tiny_split, tmp_path):
    from recsize.experiments.records import code_commit
    from recsize.experiments.report import report
    from recsize.experiments.runner import run
    experiment = Experiment("one", "mf", "ml-100k", ("es-bytes",), sparsities=(0.9,), seeds=(0,), epochs=2)
    assert "no cells stored" in report(experiment, tmp_path)
    run(experiment, store=tmp_path, progress=False, hooks={"prepare": lambda *a, **k: tiny_split})
    text = report(experiment, tmp_path)
    commit = code_commit()
    assert text.startswith("experiment one, 1 cells (1 declared, 0 missing), code commit "
                           + (f"{commit[:10]} (1 cells)" if commit else "not recorded"))


def test_the_command_line_functions(capsys):
    from recsize.experiments import cli_list, cli_report, cli_run
    listed = cli_list()
    assert all(name in listed for name in EXPERIMENTS)
    assert re.search(r"^prune_lightgcn20 .*: \d+ of \d+ cells stored", listed, re.M)
    with pytest.raises(ValueError, match="unknown experiment 'nope': choose one of prune_lightgcn20"):
        cli_run("nope")
    with pytest.raises(ValueError, match="seed list is empty"):
        cli_run("prune_planted1m", seeds=[])
    with pytest.raises(ValueError, match="unknown method pepp for experiment prune_planted1m: choose from es-bytes"):
        cli_run("prune_planted1m", methods=["pepp"])
    with pytest.raises(ValueError, match="seed 5 not declared by experiment prune_planted1m"):
        cli_run("prune_planted1m", seeds=[5])
    assert cli_run("prune_planted1m") == 0            # every cell stored: nothing to compute
    assert "prune_planted1m: 0 cells computed" in capsys.readouterr().out
    everything = cli_report()
    assert all(f"experiment {name}," in everything for name in EXPERIMENTS)
    assert cli_report("prune_neumf").startswith("experiment prune_neumf, ")
    with pytest.raises(ValueError, match="unknown experiment"):
        cli_report("neumf")


def test_every_public_function_names_its_chapter_and_every_module_is_short():
    import ast
    for path in sorted((ROOT / "recsize" / "experiments").glob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) < 400, path.name
        assert "Explained in Chapter 8." in (ast.get_docstring(ast.parse(text)) or ""), path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                assert "Explained in Chapter 8." in (ast.get_docstring(node) or ""), f"{path.name}: {node.name}"
