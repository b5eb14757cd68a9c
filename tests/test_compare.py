"""Head to head (Chapter 8): every method on the same split and budgets, records, bytes, search cost, the
Pareto front, the plot, progress and bad inputs. Tiny synthetic data and tiny schedules only."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from recsize import budget  # noqa: E402
from recsize.data import make_split, make_synthetic, make_synthetic_ctr, split_ctr  # noqa: E402
from recsize.plots import covered_texts, overlapping_texts  # noqa: E402
from recsize.search import compare  # noqa: E402
from recsize.search.baselines import es_sizes  # noqa: E402
from recsize.search.compare import (HeadToHeadConfig, applicable_methods, check_methods, head_to_head,  # noqa: E402
                                    pareto_front, pareto_plot, search_costs, summary_table)
from recsize.search.ihas import IHASConfig, run_ihas  # noqa: E402
from recsize.train import default_config  # noqa: E402

D_MAX = 8
TRAIN = {"batch_size": 128, "lr": 1e-2}
TINY = dict(sparsities=(0.5, 0.75), d_max=D_MAX, epochs=2, patience=1, train_overrides=TRAIN,
            dnis={"warm_epochs": 1, "search_epochs": 1, "blocks": 4},
            ciess={"episodes": 1, "iterations": 2, "epochs_per_iteration": 1, "hidden": 16, "agent_batch_size": 32,
                   "updates_per_iteration": 2, "sigma": 2.0, "walk_t": 2, "walk_length": 2},
            ihas={"clusters": 2, "n_blocks": 2, "route_dim": 1, "hidden": 4, "search_epochs": 2, "n_init": 2},
            progress=False)
TIMES = ("search_seconds", "retrain_seconds")


@pytest.fixture(scope="module")
def topk_split():
    return make_split(make_synthetic(n_users=40, n_items=50, mean_per_user=8, d_true=6, seed=0), seed=0)


@pytest.fixture(scope="module")
def ctr_split():
    return split_ctr(make_synthetic_ctr(1500, 5, 2, seed=0, cardinality=12), seed=0)


@pytest.fixture(scope="module")
def topk_records(topk_split):
    return head_to_head("mf", topk_split, HeadToHeadConfig(**TINY))


@pytest.fixture(scope="module")
def ctr_sparsities():
    return (0.25, 0.5)  # iHAS's router needs room at d_max = 8


@pytest.fixture(scope="module")
def ctr_records(ctr_split, ctr_sparsities):
    return head_to_head("fm", ctr_split, HeadToHeadConfig(**{**TINY, "sparsities": ctr_sparsities}))


def _without_times(records):
    return [{k: v for k, v in r.items() if k not in TIMES} for r in records]


# -- records ------------------------------------------------------------------------------------------

def test_topk_records_complete_and_bytes_match_the_budget_arithmetic(topk_split, topk_records):
    methods = ("es", "mr", "mde", "dnis", "ciess")
    assert applicable_methods("mf") == methods
    assert [(r["method"], r["sparsity"]) for r in topk_records] == [(m, c) for m in methods for c in (0.5, 0.75)]
    nu, ni = topk_split.n_users, topk_split.n_items
    for r in topk_records:
        assert set(r) == {"backbone", "dataset", "seed", "sparsity", "density", "method", "recall@20", "ndcg@20",
                          "parameters", "budget_parameters", "compact_bytes", "dense_bytes", "search_seconds",
                          "retrain_seconds", "best_epoch", "note"}
        assert r["backbone"] == "mf" and r["dataset"] == topk_split.data.name and r["seed"] == 0
        assert r["density"] == round(1 - r["sparsity"], 12)
        assert 0 <= r["recall@20"] <= 1 and 0 <= r["ndcg@20"] <= 1
        target = budget.target_parameters(r["density"], nu, D_MAX) + budget.target_parameters(r["density"], ni, D_MAX)
        assert r["budget_parameters"] == target
        if r["method"] == "ciess":   # at or under the budget over users and items together
            assert r["parameters"] <= r["density"] * (nu + ni) * D_MAX + 1e-9
        else:                        # exactly the budget, table by table
            assert r["parameters"] == target
        # compact bytes measured on the modules = recsize.budget's arithmetic for two tables
        ideal = budget.FLOAT_BYTES * (r["parameters"] + 2 * D_MAX) + budget.INDEX_BYTES * (nu + ni + 2)
        assert r["compact_bytes"] == ideal
        assert r["dense_bytes"] == budget.dense_bytes(nu, D_MAX) + budget.dense_bytes(ni, D_MAX)
        assert r["retrain_seconds"] > 0
    es = next(r for r in topk_records if r["method"] == "es" and r["sparsity"] == 0.5)
    counts_u, counts_i = topk_split.user_activity(), topk_split.item_popularity()
    assert es["compact_bytes"] == (budget.compact_bytes(es_sizes(nu, D_MAX, 0.5, counts_u), D_MAX)
                                   + budget.compact_bytes(es_sizes(ni, D_MAX, 0.5, counts_i), D_MAX))


def test_search_cost_recorded_once_for_shared_searches(topk_records, ctr_records):
    for r in topk_records + ctr_records:
        if r["method"] in ("es", "mr", "mde"):
            assert r["search_seconds"] == 0.0 and r["note"] == ""
        elif r["method"] in ("dnis", "ciess"):   # one search for every budget: its cost on the first only
            first = r["sparsity"] == (0.5 if r["backbone"] == "mf" else 0.25)
            assert (r["search_seconds"] > 0) == first and "recorded once" in r["note"]
        else:                                     # iHAS searches once per budget
            assert r["search_seconds"] > 0 and "one search per budget" in r["note"]
    costs = {(c["backbone"], c["method"]): c for c in search_costs(topk_records)}
    dnis = [r for r in topk_records if r["method"] == "dnis"]
    assert costs[("mf", "dnis")]["search_seconds"][0] == pytest.approx(sum(r["search_seconds"] for r in dnis))
    assert costs[("mf", "dnis")]["retrain_seconds"][0] == pytest.approx(sum(r["retrain_seconds"] for r in dnis))
    assert costs[("mf", "es")]["search_seconds"] == (0.0, 0.0) and costs[("mf", "es")]["searches"] == "no search"
    assert costs[("mf", "ciess")]["searches"] == "one search for all budgets" and costs[("mf", "ciess")]["budgets"] == 2


def test_ctr_records_with_ihas_bytes_and_budget(ctr_split, ctr_records, ctr_sparsities):
    assert [r["method"] for r in ctr_records[::2]] == ["es", "mr", "mde", "dnis", "ihas"]
    n = ctr_split.data.n_features
    for r in ctr_records:
        assert set(r) >= {"auc", "logloss"} and "recall@20" not in r
        assert 0 <= r["auc"] <= 1 and r["logloss"] > 0
        assert r["parameters"] == r["budget_parameters"] == budget.target_parameters(r["density"], n, D_MAX)
        assert r["dense_bytes"] == budget.dense_bytes(n, D_MAX)
    for r in ctr_records:
        if r["method"] != "ihas":
            assert r["compact_bytes"] == budget.FLOAT_BYTES * (r["parameters"] + D_MAX) + budget.INDEX_BYTES * (n + 1)
    # iHAS: every cluster table plus the router, as run_ihas accounts them (same seed, same settings)
    ihas = next(r for r in ctr_records if r["method"] == "ihas" and r["sparsity"] == ctr_sparsities[0])
    cfg = default_config("fm", **TRAIN, epochs=2, patience=1, seed=0, progress=False)
    run = run_ihas("fm", ctr_split, ihas["density"], D_MAX,
                   IHASConfig(**{"lr": cfg.lr, "batch_size": cfg.batch_size, **TINY["ihas"]}), cfg, seed=0)
    assert ihas["compact_bytes"] == run.budget["total_bytes"]
    assert ihas["compact_bytes"] == (sum(budget.compact_bytes(s, D_MAX) for s in run.sizes)
                                     + run.budget["routing_bytes"] + run.budget["first_order_bytes"])
    assert ihas["auc"] == run.test["auc"]


def test_same_seed_same_records(topk_split, topk_records):
    again = head_to_head("mf", topk_split, HeadToHeadConfig(**TINY))
    assert _without_times(again) == _without_times(topk_records)


def test_seeds_prepare_their_own_split_when_the_data_is_named(monkeypatch, topk_split):
    import recsize.data
    calls = []

    def fake_prepare(name, protocol="random-811", seed=0, **kw):
        calls.append((name, protocol, seed))
        return topk_split

    monkeypatch.setattr(recsize.data, "prepare", fake_prepare)
    records = head_to_head("mf", "some-data", HeadToHeadConfig(**{**TINY, "seeds": (3, 4), "sparsities": (0.5,)}),
                           methods=("es", "mr"))
    assert calls == [("some-data", "random-811", 3), ("some-data", "random-811", 4)]
    assert [(r["seed"], r["method"]) for r in records] == [(3, "es"), (3, "mr"), (4, "es"), (4, "mr")]
    assert {r["dataset"] for r in records} == {"some-data"}
    rows = summary_table(records)
    assert [r["n"] for r in rows] == [2, 2]
    mr = [r["recall@20"] for r in records if r["method"] == "mr"]
    assert rows[1]["recall@20"] == pytest.approx((np.mean(mr), np.std(mr)))


# -- summaries, the front, the plot -------------------------------------------------------------------

def _fake(method, c, seed, recall, nbytes, search=0.0, retrain=1.0):
    return {"backbone": "lightgcn", "dataset": "toy", "seed": seed, "sparsity": c, "density": round(1 - c, 12),
            "method": method, "recall@20": recall, "ndcg@20": recall / 2, "parameters": nbytes // 4,
            "budget_parameters": nbytes // 4, "compact_bytes": nbytes, "dense_bytes": 10 ** 6,
            "search_seconds": search, "retrain_seconds": retrain, "best_epoch": 1, "note": ""}


def test_summary_table_mean_and_std_over_seeds():
    records = [_fake("es", 0.9, 0, 0.2, 100), _fake("es", 0.9, 1, 0.4, 100), _fake("dnis", 0.9, 0, 0.3, 100, 5.0),
               _fake("dnis", 0.9, 1, 0.5, 100, 7.0), _fake("es", 0.8, 0, 0.6, 200)]
    rows = summary_table(records)
    assert [(r["sparsity"], r["method"], r["n"]) for r in rows] == [(0.8, "es", 1), (0.9, "es", 2), (0.9, "dnis", 2)]
    assert rows[1]["recall@20"] == pytest.approx((0.3, 0.1))
    assert rows[2]["ndcg@20"] == pytest.approx((0.2, 0.05))
    cost = {c["method"]: c for c in search_costs(records)}
    assert cost["dnis"]["search_seconds"] == pytest.approx((6.0, 1.0))
    assert cost["es"]["retrain_seconds"] == pytest.approx((1.5, 0.5))   # seed 0: two budgets, seed 1: one
    text = compare.format_table(rows, markdown=True)
    assert "| 90 % | DNIS | **0.4000 ± 0.1000** |" in text
    assert "no search" in compare.format_costs(search_costs(records))


def test_pareto_front_by_hand():
    #            0     1     2     3     4     5     6
    nbytes = [100, 100, 200, 300, 300, 400, 50]
    quality = [0.30, 0.20, 0.50, 0.45, 0.60, 0.60, 0.10]
    # 1 is dominated by 0 (same bytes, worse); 3 by 2 (fewer bytes, better); 5 by 4 (fewer bytes, same)
    assert pareto_front(nbytes, quality).tolist() == [6, 0, 2, 4]
    # lower is better (log loss): the front runs the other way
    assert pareto_front(nbytes, quality, higher_is_better=False).tolist() == [6]
    # equal points do not dominate each other
    assert pareto_front([1, 1], [0.5, 0.5]).tolist() == [0, 1]
    with pytest.raises(ValueError, match="equally long"):
        pareto_front([1, 2], [0.1])
    with pytest.raises(ValueError, match="finite"):
        pareto_front([1, np.nan], [0.1, 0.2])


def test_pareto_plot_names_the_quantised_and_hashed_families():
    records = [_fake("es-bytes", 0.8, 0, 0.30, 200), _fake("int8", 0.8, 0, 0.33, 150),
               _fake("qat-int4", 0.8, 0, 0.32, 90), _fake("qr", 0.8, 0, 0.25, 200), _fake("hash", 0.8, 0, 0.2, 200)]
    ax = pareto_plot(records)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["ES", "INT8", "QAT INT4", "QR", "Hash", "Pareto front"]
    markers = {line.get_label(): line.get_marker() for line in ax.get_lines() if line.get_label() in labels}
    assert len(set(markers.values())) == 5


def test_pareto_plot_draws_one_marker_per_method_and_the_front(tmp_path):
    records = [_fake("es", 0.9, 0, 0.20, 100), _fake("mde", 0.9, 0, 0.25, 100), _fake("dnis", 0.9, 0, 0.30, 100),
               _fake("es", 0.8, 0, 0.35, 200), _fake("dnis", 0.8, 0, 0.33, 200)]
    ax = pareto_plot(records)
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["ES", "MDE", "DNIS", "Pareto front"]
    markers = {line.get_label(): line.get_marker() for line in ax.get_lines() if line.get_label() in labels}
    assert len(set(markers.values())) == 3
    front = [p for p in compare.pareto_points(records, "recall@20") if p["on_front"]]
    assert {(p["method"], p["sparsity"]) for p in front} == {("dnis", 0.9), ("es", 0.8)}
    # the budget labels stand clear of the points (once at the bottom of the axes, under ES at c = 90 %)
    assert [t.get_text() for t in ax.texts] == ["c = 80 %", "c = 90 %"]
    assert covered_texts(ax.figure) == [] and overlapping_texts(ax.figure) == []
    ax.figure.savefig(tmp_path / "pareto.png")
    assert (tmp_path / "pareto.png").stat().st_size > 0
    other = [{**r, "backbone": "neumf"} for r in records]
    with pytest.raises(ValueError, match="pass backbone="):
        pareto_plot(records + other)
    pareto_plot(records + other, backbone="neumf", metric="ndcg@20")
    with pytest.raises(ValueError, match="no metric 'auc'"):
        pareto_plot(records, metric="auc")
    with pytest.raises(ValueError, match="no records"):
        pareto_plot([])


# -- progress and bad inputs --------------------------------------------------------------------------

def test_progress_bar_only_when_asked(topk_split, capsys):
    head_to_head("mf", topk_split, HeadToHeadConfig(**{**TINY, "sparsities": (0.5,)}), methods=("es",))
    assert capsys.readouterr().err == ""
    head_to_head("mf", topk_split, HeadToHeadConfig(**{**TINY, "sparsities": (0.5,)}), methods=("es",), progress=True)
    assert "head to head mf" in capsys.readouterr().err


@pytest.mark.parametrize("kw, match", [
    ({"sparsities": ()}, "sparsities is empty"),
    ({"sparsities": (0.8, 1.0)}, "strictly between 0 and 1"),
    ({"sparsities": (80,)}, "pass 0.8"),
    ({"sparsities": (0.0,)}, "strictly between 0 and 1"),
    ({"sparsities": (0.95,), "d_max": 8}, "less than one dimension per row"),
    ({"sparsities": (0.8, 0.8)}, "repeat"),
    ({"sparsities": ("a",)}, "must be numbers"),
    ({"seeds": ()}, "seeds is empty"),
    ({"epochs": 0}, "epochs must be"),
    ({"train_overrides": {"epochs": 3}}, "train_overrides accepts"),
    ({"dnis": {"retrain_epochs": 5}}, "shared by every method"),
    ({"ciess": {"no_such_setting": 1}}, "not fields of CIESSConfig"),
    ({"ciess_schedule": "long"}, "unknown CIESS schedule"),
    ({"mde_alpha": 2}, "temperature"),
])
def test_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        HeadToHeadConfig(**kw)


def test_bad_methods_and_data(topk_split, ctr_split):
    with pytest.raises(ValueError, match="unknown method"):
        check_methods("mf", ("es", "pep"))
    with pytest.raises(ValueError, match="iHAS does not apply to backbone 'lightgcn'"):
        check_methods("lightgcn", ("es", "ihas"))
    with pytest.raises(ValueError, match="CIESS does not apply to backbone 'deepfm'"):
        check_methods("deepfm", "ciess")
    with pytest.raises(ValueError, match="methods is empty"):
        check_methods("mf", ())
    with pytest.raises(ValueError, match="repeat"):
        check_methods("mf", ("es", "ES"))
    assert check_methods("deepfm", None) == ("es", "mr", "mde", "dnis", "ihas")
    with pytest.raises(ValueError, match="unknown backbone"):
        head_to_head("bert", topk_split, HeadToHeadConfig(**TINY))
    with pytest.raises(ValueError, match="does not apply"):   # raised before anything trains
        head_to_head("lightgcn", topk_split, HeadToHeadConfig(**TINY), methods=("ihas",))
    with pytest.raises(ValueError, match="CTR model but the data is a top-k split"):
        head_to_head("fm", topk_split, HeadToHeadConfig(**TINY))
    with pytest.raises(ValueError, match="top-k model but the data is a CTR split"):
        head_to_head("mf", ctr_split, HeadToHeadConfig(**TINY))
    with pytest.raises(ValueError, match="dataset name or a split"):
        head_to_head("mf", [1, 2, 3], HeadToHeadConfig(**TINY))
    with pytest.raises(ValueError, match="no records"):
        summary_table([])


def test_paired_difference_interval():
    from recsize.search.compare import paired_difference
    d = paired_difference([0.30, 0.32, 0.31], [0.29, 0.30, 0.30])
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.0133333, abs=1e-6)
    # t(0.975, 2) = 4.3027; std of (0.01, 0.02, 0.01) = 0.005774
    assert d["high"] - d["mean"] == pytest.approx(4.3027 * 0.0057735 / 3 ** 0.5, rel=1e-3)
    one = paired_difference([0.3], [0.2])
    assert one["mean"] == pytest.approx(0.1) and one["low"] is None
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([0.3, 0.2], [0.2])


def test_width_correlations_against_the_planted_truth_and_popularity():
    from recsize.data import make_split, make_synthetic
    from recsize.search.baselines import role_counts
    from recsize.search.compare import width_correlations
    data = make_synthetic(n_users=120, n_items=150, mean_per_user=12, d_true=16, widths="groups", seed=0)
    split = make_split(data, "random-811", seed=0)
    truth = {"user": data.meta["true_user_dims"], "item": data.meta["true_item_dims"]}
    got = width_correlations(truth, split)
    assert got["truth"] == pytest.approx({"user": 1.0, "item": 1.0})
    counts = role_counts(split)
    by_popularity = width_correlations({"item": counts["item"], "item_mlp": counts["item"]}, split)
    assert by_popularity["popularity"] == pytest.approx({"item": 1.0, "item_mlp": 1.0})
    assert abs(by_popularity["truth"]["item"]) < 0.3                   # popularity does not give the truth
    assert width_correlations({"item": counts["item"][:-1]}, split) == {"truth": {}, "popularity": {}}


def _aukc_runs():
    base = {0.5: 0.4, 0.8: 0.3, 0.9: 0.2}
    runs = [{"method": "es-bytes", "sparsity": c, "seed": s, "recall@20": v} for s in (0, 1, 2)
            for c, v in base.items()]
    runs += [{"method": "m", "sparsity": c, "seed": 0, "recall@20": 1.1 * v} for c, v in base.items()]
    runs += [{"method": "m", "sparsity": c, "seed": 1, "recall@20": v} for c, v in base.items()]
    runs += [{"method": "m", "sparsity": 0.5, "seed": 2, "recall@20": 0.5},     # one shared budget: left out
             {"method": "m", "sparsity": 0.95, "seed": 1, "recall@20": 0.9}]   # no baseline at 95 %: ignored
    return runs


def test_aukc_by_hand():
    """Trapezoids over the kept fraction 0.1, 0.2, 0.5: ES (0.2 + 0.3) / 2 * 0.1 + (0.3 + 0.4) / 2 * 0.3 =
    0.13; seed 0 is 1.1 x ES everywhere (ratio 1.1), seed 1 equals ES (1.0); seed 2 shares one budget."""
    from recsize.search.compare import aukc
    out = aukc(_aukc_runs(), "m", "recall@20")
    assert sorted(out["per_seed"]) == [0, 1]
    assert out["per_seed"][0]["baseline_area"] == pytest.approx(0.13)
    assert out["per_seed"][0]["area"] == pytest.approx(0.143)
    assert out["per_seed"][0]["densities"] == [0.1, 0.2, 0.5]
    assert [out["per_seed"][s]["ratio"] for s in (0, 1)] == pytest.approx([1.1, 1.0])
    # ratios 1.1 and 1.0: mean 1.05, sd 0.0707, se 0.05, t(0.975, 1) = 12.706 -> half width 0.6353
    r = out["ratio"]
    assert (r["n"], r["mean"]) == (2, pytest.approx(1.05))
    assert (r["low"], r["high"]) == (pytest.approx(1.05 - 0.63531, abs=1e-4), pytest.approx(1.05 + 0.63531, abs=1e-4))
    assert out["difference"]["mean"] == pytest.approx(0.0065)
    assert aukc(_aukc_runs(), "es-bytes", "recall@20")["ratio"]["mean"] == pytest.approx(1.0)


def test_aukc_needs_two_shared_budgets():
    from recsize.search.compare import aukc
    runs = [r for r in _aukc_runs() if r["seed"] == 2]
    assert aukc(runs, "m", "recall@20") is None
    one = aukc([r for r in _aukc_runs() if r["seed"] in (0, 2)], "m", "recall@20")
    assert one["ratio"]["n"] == 1 and one["ratio"]["low"] is None and one["ratio"]["mean"] == pytest.approx(1.1)


def test_within_noise_names_the_best_and_what_its_interval_cannot_separate():
    from recsize.search.compare import within_noise
    cells = {"a": (0.30, 0.31, 0.32), "b": (0.29, 0.30, 0.31), "c": (0.33, 0.28, 0.31)}
    runs = [{"method": m, "sparsity": 0.8, "seed": s, "recall@20": v, "logloss": 1 - v}
            for m, vals in cells.items() for s, v in enumerate(vals)]
    runs.append({"method": "d", "sparsity": 0.8, "seed": 0, "recall@20": 0.2, "logloss": 0.8})
    (row,) = within_noise(runs, "recall@20")
    assert row["best"] == "a" and [r["method"] for r in row["rows"]] == ["a", "c", "b", "d"]
    tied = {r["method"]: r["tied"] for r in row["rows"]}
    assert tied == {"a": True, "c": True, "b": False, "d": True}          # b: always 0.01 behind; d: one seed
    b = next(r for r in row["rows"] if r["method"] == "b")
    assert b["delta"]["mean"] == pytest.approx(-0.01) and b["n"] == 3
    (low,) = within_noise(runs, "logloss", methods=["b", "c"])             # lower is better
    assert low["best"] == "c" and [r["method"] for r in low["rows"]] == ["c", "b"]
    assert within_noise([], "auc") == []


def test_grid_records_read_a_converged_grid_and_count_a_shared_search_once(tmp_path):
    """benchmarks/prune.py cells as head-to-head records: stored bytes, kept entries, a search serving
    every budget counted once per seed (on its smallest sparsity), iHAS's per budget, retraining per
    cell; the summary, the costs and the Pareto plot read them."""
    settings = [{"dataset": "ml-100k", "backbone": "lightgcn"}]

    def cell(method, c, seed, recall, seconds, kept=100):
        return {"method": method, "sparsity": c, "seed": seed, "recall@20": recall, "ndcg@20": recall / 2,
                "bytes": 4 * kept, "dense_bytes": 1000, "kept": kept, "best_epoch": 7, "seconds": seconds}

    runs = []
    for seed in (0, 1):
        for c in (0.8, 0.5):
            runs += [cell("es-bytes", c, seed, 0.3, {"train": 10.0}),
                     cell("magprune", c, seed, 0.29, {"dense": 50.0, "finetune": 5.0}),
                     cell("dnis", c, seed, 0.28, {"search": 40.0, "warm": 30.0, "retrain": 4.0}),
                     cell("ciess", c, seed, 0.27, {"reference": 20.0, "search": 60.0, "retrain": 3.0})]
    records = compare.grid_records(runs, settings)
    by = {(r["method"], r["sparsity"], r["seed"]): r for r in records}
    assert by["magprune", 0.5, 0]["search_seconds"] == 50.0 and by["magprune", 0.8, 0]["search_seconds"] == 0
    assert by["dnis", 0.5, 1]["search_seconds"] == 40.0                      # "warm" is inside "search"
    assert by["ciess", 0.5, 0]["search_seconds"] == 80.0 and by["ciess", 0.8, 0]["retrain_seconds"] == 3.0
    assert by["es-bytes", 0.8, 0]["compact_bytes"] == 400 and by["es-bytes", 0.8, 0]["parameters"] == 100
    costs = {r["method"]: r for r in search_costs(records)}
    assert costs["magprune"]["search_seconds"][0] == 50.0 and costs["magprune"]["retrain_seconds"][0] == 10.0
    assert costs["es-bytes"]["searches"] == "no search" and costs["ciess"]["total_seconds"][0] == 86.0
    text = compare.format_costs(search_costs(records))
    assert "MagPrune" in text and max(len(line) for line in text.splitlines()) <= 88
    rows = summary_table(records)
    assert len(rows) == 8 and all(r["n"] == 2 for r in rows)
    assert [r["method"] for r in rows[:4]] == ["es-bytes", "magprune", "dnis", "ciess"]   # the book's order
    assert rows[0]["sparsity"] == 0.5 and rows[0]["recall@20"] == (0.3, 0.0)
    ax = pareto_plot(records, backbone="lightgcn")
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"ES", "MagPrune", "DNIS", "CIESS"}
    ihas = [{**cell("ihas", c, 0, 0.7, {"search": 9.0, "retrain": 2.0}), "auc": 0.7, "logloss": 0.5}
            for c in (0.5, 0.8)]
    ctr = compare.grid_records(ihas, [{"dataset": "ml-100k-ctr", "backbone": "deepfm"}])
    assert [r["search_seconds"] for r in ctr] == [9.0, 9.0] and "auc" in ctr[0] and "recall@20" not in ctr[0]
    with pytest.raises(ValueError, match="no grid cells"):
        compare.grid_records([], settings)
