"""Stacked training (recsize.stacked, Chapter 8): K LightGCN models in one pass equal K one-by-one trainings.

The comparison is exact: weights with ``torch.equal`` and histories, best epochs, validation and test metrics
with ``==``. (``torch.equal`` compares values, so a zero whose sign differs, which the trimmed propagation can
leave in a padded column, would not count; no weight can hold one, see the module docstring.)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import recsize.stacked as stacked
from conftest import one_line_error
from recsize.backbones import MF, LightGCN, build_backbone, plain_factory
from recsize.embedding import ElementMaskedEmbedding, masked_factory
from recsize.stacked import live_columns, train_models_stacked, train_stacked
from recsize.train import default_config, seed_everything, train

D = 16


def config(**overrides):
    """LightGCN's trainer settings, short: small batches (the last one ragged), early stopping after 2."""
    return default_config("lightgcn", **{"epochs": 30, "patience": 2, "batch_size": 50, "progress": False,
                                         **overrides})


def widths(split) -> list:
    """Full width, random widths with zero-width rows, narrow ES-like widths (live columns 5 of 16), random."""
    rng = np.random.default_rng(1)
    return [None,
            {"user": rng.integers(0, D + 1, split.n_users), "item": rng.integers(0, D + 1, split.n_items)},
            {"user": np.full(split.n_users, 3), "item": np.full(split.n_items, 5)},
            {"user": rng.integers(1, 9, split.n_users), "item": rng.integers(0, 4, split.n_items)}]


def one_by_one(split, own, seed, cfg):
    """What recsize.train.fit does for one masked LightGCN: seed, build, train."""
    seed_everything(seed)
    model = build_backbone("lightgcn", split, D, embedding=masked_factory(own, D, "normal"), n_layers=3, reg=1e-3)
    return train(model, split, cfg)


def assert_same(stack, alone):
    """Two results of one model are equal: history (wall times aside), best epoch, metrics, weights."""
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in stack.history] == \
           [{k: v for k, v in row.items() if k != "seconds"} for row in alone.history]
    assert stack.best_epoch == alone.best_epoch and stack.valid == alone.valid and stack.test == alone.test
    mine, theirs = stack.model.state_dict(), alone.model.state_dict()
    assert list(mine) == list(theirs)
    for name in theirs:
        assert torch.equal(mine[name], theirs[name]), name
    assert {k: v for k, v in stack.config.items() if k != "stacked"} == alone.config


@pytest.mark.parametrize("trim", [True, False])
def test_stacked_equals_one_by_one(tiny_split, trim):
    cfg, seeds = config(), [0, 1, 0, 2]
    results = train_stacked("lightgcn", tiny_split, widths(tiny_split), cfg, d_max=D, seeds=seeds, trim=trim)
    assert len(results) == 4 and all(r.config["stacked"] == 4 for r in results)
    stops = [len(r.history) for r in results]
    assert len(set(stops)) > 1 and min(stops) < cfg.epochs     # per-model early stopping was exercised
    for result, own, seed in zip(results, widths(tiny_split), seeds):
        assert_same(result, one_by_one(tiny_split, own, seed, cfg))
    assert isinstance(results[2].model, LightGCN) and live_columns(results[2].model) == 5


def test_stacked_models_blocks_lr_decay_and_other_tables(tiny_split, monkeypatch):
    """Prebuilt models (plain, element-masked and reg-free tables), stacked in blocks of at most 21 columns,
    validated every 2 epochs, each with its own plateau lr decay, stopping when its lr is spent."""
    monkeypatch.setattr(stacked, "CPU_BLOCK_COLUMNS", 21)   # [16 + 5], [16]
    seen, propagate = set(), stacked.backbones.propagate_once

    def spy(adj, x):
        seen.add(x.shape[1])
        return propagate(adj, x)
    monkeypatch.setattr(stacked.backbones, "propagate_once", spy)
    keep = torch.rand(tiny_split.n_items, D, generator=torch.Generator().manual_seed(3)) < 0.3

    def build():
        models = []
        for seed, (factory, reg) in enumerate([(plain_factory("normal"), 1e-3), (masked_factory(
                widths(tiny_split)[2], D, "normal"), 0.0), (masked_factory(None, D, "normal"), 1e-3)]):
            seed_everything(seed)
            models.append(build_backbone("lightgcn", tiny_split, D, embedding=factory, n_layers=2, reg=reg))
        models[2].item = ElementMaskedEmbedding(tiny_split.n_items, D, keep)
        return models
    models, twins = build(), build()
    cfg = config(eval_every=2, lr_decay=0.5, lr_patience=0, min_lr=1e-2 / 8, patience=30)
    results = train_models_stacked(models, tiny_split, cfg)
    assert [live_columns(m) for m in models] == [D, 5, D] and 21 in seen and max(seen) == 21
    monkeypatch.undo()
    assert len({len(r.history) for r in results}) > 1
    for result, twin in zip(results, twins):
        alone = train(twin, tiny_split, cfg)
        assert_same(result, alone)
        assert result.model is not twin
        assert [row["lr"] for row in result.history if "lr" in row][-1] <= cfg.min_lr * 1.01


def test_the_comparison_can_fail(tiny_split):
    """Another sampling seed gives another model: the exact comparison notices."""
    own = widths(tiny_split)[1]
    (result,) = train_stacked("lightgcn", tiny_split, [own], config(epochs=3), d_max=D)
    with pytest.raises(AssertionError):
        assert_same(result, one_by_one(tiny_split, own, 0, config(epochs=3, seed=1)))


def test_live_columns(tiny_split):
    def model(factory):
        return build_backbone("lightgcn", tiny_split, D, embedding=factory)
    narrow = {"user": np.full(tiny_split.n_users, 2), "item": np.arange(tiny_split.n_items) % 7}
    assert live_columns(model(masked_factory(narrow, D))) == 6
    assert live_columns(model(masked_factory({"user": np.zeros(tiny_split.n_users, int),
                                              "item": np.zeros(tiny_split.n_items, int)}, D))) == 0
    assert live_columns(model(masked_factory(None, D))) == D and live_columns(model(plain_factory())) == D
    element = model(masked_factory(narrow, D))
    keep = torch.zeros(tiny_split.n_items, D, dtype=torch.bool)
    keep[4, 11] = True                                  # one entry in column 11: 12 live columns
    element.item = ElementMaskedEmbedding(tiny_split.n_items, D, keep)
    assert live_columns(element) == 12


def test_a_nan_loss_names_the_model(tiny_split):
    models = [build_backbone("lightgcn", tiny_split, D) for _ in range(2)]
    with torch.no_grad():
        models[1].user.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"models\[1\].*epoch 1, batch 1/"):
        train_models_stacked(models, tiny_split, config())


@pytest.mark.parametrize("args, kwargs, message", [
    (("lightgcn", "S", []), {}, r"widths_list is empty: give one widths dict"),
    (("lightgcn", "S", {"user": None}), {}, r"widths_list must be a list with one widths dict per model"),
    (("lightgcn", "S", [None, {"user": np.full(5, 2), "item": np.full(80, 2)}]), {},
     r"widths_list\[1\]\['user'\] does not fit the split's 60 user rows at d_max = 16: .*expected 60 widths"),
    (("lightgcn", "S", [{"user": np.full(60, 2)}]), {}, r"widths_list\[0\] must be a dict with the roles 'user' and"),
    (("lightgcn", "S", [{"user": np.full(60, 17), "item": np.full(80, 2)}]), {}, r"widths must lie in \[0, 16\]"),
    (("mf", "S", [None]), {}, r"supports backbone 'lightgcn' only .* one model at a time with recsize.train.fit"),
    (("ngcf", "S", [None]), {}, r"supports backbone 'lightgcn' only"),
    (("lightgcn", "S", [None, None]), {"seeds": [0]}, r"seeds must be a list of 2 integer init seeds"),
    (("lightgcn", "S", [None]), {"config": "C"}, r"stacked training writes no checkpoint .* leave checkpoint None"),
    (("lightgcn", "S", [None]), {"config": {"lr": 1}}, r"config must be a recsize.train.TrainConfig"),
    (("lightgcn", "S", [None]), {"d_max": 0}, r"d_max must be a positive integer"),
])
def test_train_stacked_rejects_bad_input_before_building(tiny_split, no_model, args, kwargs, message):
    args = tuple(tiny_split if a == "S" else a for a in args)
    if kwargs.get("config") == "C":
        kwargs = {**kwargs, "config": config(checkpoint="best.pt")}
    with pytest.raises(ValueError, match=message):
        train_stacked(*args, **{"d_max": D, **kwargs})


def test_train_stacked_rejects_a_ctr_split(ctr_split, no_model):
    with pytest.raises(ValueError, match="top-k split, not the CTR view"):
        train_stacked("lightgcn", ctr_split, [None], config())


def test_train_models_stacked_rejects_bad_models(tiny_split, tiny_data):
    from recsize.data import make_split
    model = build_backbone("lightgcn", tiny_split, D)
    other = make_split(tiny_data, "random-811", seed=5)
    cases = [([], "models is empty"), (model, "models must be a list of LightGCN models"),
             ([model, MF(tiny_split.n_users, tiny_split.n_items, D)], r"models\[1\] is a MF: .* LightGCN only"),
             ([model, model], "appears twice"),
             ([model, build_backbone("lightgcn", tiny_split, D, n_layers=1)], r"models\[1\] has 1 layers"),
             ([model, build_backbone("lightgcn", other, D)], r"models\[1\] was built on another training graph")]
    for models, message in cases:
        with pytest.raises(ValueError, match=message):
            train_models_stacked(models, tiny_split, config())


# --- benchmarks/stacked.py on tiny data (prepare() patched: no download) -----------------------------------

def _script(monkeypatch, split):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    sys.modules.pop("stacked", None)
    import stacked as script
    monkeypatch.setattr(script, "prepare", lambda *a, **k: split)
    return script


def test_stacked_benchmark_writes_its_figures(tiny_split, monkeypatch, tmp_path, capsys):
    script = _script(monkeypatch, tiny_split)
    out = tmp_path / "stacked.json"
    assert script.main(["--epochs", "2", "--ks", "1", "3", "--dim", "16", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["settings"]["ks"] == [1, 3] and [len(r["one_by_one_models"]) for r in data["runs"]] == [1, 3]
    for row in data["runs"]:
        for variant in ("one_by_one_live", "stacked", "trimmed"):
            assert row[variant]["bit_identical"] and row[variant]["max_abs_diff"] == 0
            assert row[variant]["speedup"]["cpu"] > 0 and row[variant]["cpu_per_epoch"] > 0
    assert "bit for bit" in capsys.readouterr().out
    assert LightGCN.trim_dead_columns is True                     # restored after the full-width reference


@pytest.mark.parametrize("argv, needle", [(["--epochs", "0"], "--epochs must be >= 1"),
                                          (["--ks", "9"], "--ks values must lie in [1, 8]"),
                                          (["--dim", "4"], "--dim must be >= 10"),
                                          (["--device", "tpu"], "--device: device 'tpu'"),
                                          (["--epochs", "x"], "invalid int value")])
def test_stacked_benchmark_bad_arguments_are_one_line(tiny_split, monkeypatch, capsys, argv, needle):
    script = _script(monkeypatch, tiny_split)
    with pytest.raises(SystemExit) as e:
        script.main(argv)
    one_line_error(capsys, e.value.code, needle)


def test_baselines_stacked_equal_run_baseline(tiny_split):
    """ES, MDE and MR cells trained in one pass are the runs run_baseline gives one at a time: widths, memory,
    metrics with the compact tables, best epoch and every compact weight."""
    from recsize.search import run_baseline, run_baselines_stacked
    cfg, cells = config(seed=3), [("es", 0.5), ("mde", 0.2), ("mr", 0.1), ("es", 0.1)]
    runs = run_baselines_stacked("lightgcn", tiny_split, cells, D, cfg, seed=3)
    assert [(r.method, r.density) for r in runs] == cells
    for run, (method, density) in zip(runs, cells):
        alone = run_baseline("lightgcn", tiny_split, method, density, D, cfg, seed=3)
        assert run.result.config["stacked"] == len(cells)
        assert {r: s.tolist() for r, s in run.sizes.items()} == {r: s.tolist() for r, s in alone.sizes.items()}
        assert run.memory == alone.memory and run.stored_bytes == alone.stored_bytes
        assert run.test_compact == alone.test_compact and run.result.test == alone.result.test
        assert run.result.best_epoch == alone.result.best_epoch and run.result.valid == alone.result.valid
        mine, theirs = run.model.state_dict(), alone.model.state_dict()
        assert list(mine) == list(theirs) and all(torch.equal(mine[k], theirs[k]) for k in theirs)


@pytest.mark.parametrize("cells, needle", [([], "non-empty list of (method, density)"),
                                           ([("es",)], "non-empty list of (method, density)"),
                                           ([("es", 1.5)], "density"),
                                           ([("xx", 0.5)], "unknown baseline")])
def test_baselines_stacked_bad_cells_one_line(tiny_split, cells, needle):
    from recsize.search import run_baselines_stacked
    with pytest.raises(ValueError) as e:
        run_baselines_stacked("lightgcn", tiny_split, cells, D, config())
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_baselines_stacked_refuse_other_backbones(tiny_split):
    from recsize.search import run_baselines_stacked
    with pytest.raises(ValueError, match="supports backbone 'lightgcn' only"):
        run_baselines_stacked("mf", tiny_split, [("es", 0.5)], D, default_config("mf", progress=False))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_lightgcn_propagates_only_its_live_columns_with_the_same_results(tiny_split, monkeypatch, k):
    """LightGCN.propagate skips the columns no row's mask keeps: a masked model trains to the same history,
    weights and metrics as with every column propagated, and its propagation is narrower."""
    own = widths(tiny_split)[k]
    monkeypatch.setattr(LightGCN, "trim_dead_columns", False)
    full = one_by_one(tiny_split, own, 0, config())
    monkeypatch.setattr(LightGCN, "trim_dead_columns", True)
    seen, propagate = set(), stacked.backbones.propagate_once
    monkeypatch.setattr(stacked.backbones, "propagate_once", lambda adj, x: seen.add(x.shape[1]) or propagate(adj, x))
    trimmed = one_by_one(tiny_split, own, 0, config())
    assert_same(trimmed, full)
    assert seen == {live_columns(trimmed.model)}
    all_u, all_i = trimmed.model.propagate()
    assert all_u.shape[1] == all_i.shape[1] == D


def test_live_columns_of_plain_and_full_tables_leave_propagation_alone(tiny_split):
    seed_everything(0)
    model = build_backbone("lightgcn", tiny_split, D, embedding=plain_factory())
    assert live_columns(model) == D
    zero = {"user": np.zeros(tiny_split.n_users, int), "item": np.zeros(tiny_split.n_items, int)}
    model = build_backbone("lightgcn", tiny_split, D, embedding=masked_factory(zero, D))
    all_u, all_i = model.propagate()                   # no live column at all: zeros, full width
    assert all_u.shape == (tiny_split.n_users, D) and not all_u.any() and not all_i.any()
