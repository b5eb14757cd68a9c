"""Budget-matched baselines ES, MR, MDE (Chapter 4), the end-to-end helper and `recsize search`."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsize.budget import target_parameters
from recsize.cli import main
from recsize.embedding import CompactEmbedding
from recsize.search import (METHODS, baseline_sizes, es_sizes, fit_to_total, mde_sizes, mr_sizes, role_counts,
                            round_to_total, run_baseline)
from recsize.train import TrainConfig


def zipf_counts(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).zipf(1.5, n).astype(np.int64) - 1  # includes zero counts


@settings(max_examples=60, deadline=None, database=None)
@given(n=st.integers(1, 300), d_max=st.integers(1, 128), density=st.floats(0.0, 1.0, exclude_min=True),
       method=st.sampled_from(METHODS), seed=st.integers(0, 1000))
def test_every_baseline_hits_the_budget_exactly(n, d_max, density, method, seed):
    total = target_parameters(density, n, d_max)
    if total < n:  # below one dimension per row: refused with a clear message
        with pytest.raises(ValueError, match="at least 1/d_max"):
            baseline_sizes(method, zipf_counts(n, seed), d_max, density, seed=seed)
        return
    sizes = baseline_sizes(method, zipf_counts(n, seed), d_max, density, seed=seed)
    assert sizes.dtype == np.int64 and sizes.shape == (n,)
    assert sizes.sum() == total
    assert sizes.min() >= 1 and sizes.max() <= d_max


@pytest.mark.parametrize("method", METHODS)
def test_extreme_budgets(method):
    counts = zipf_counts(100)
    assert (baseline_sizes(method, counts, 16, 1.0) == 16).all()
    assert (baseline_sizes(method, counts, 16, 1 / 16) == 1).all()


def test_es_spreads_the_remainder_to_the_most_frequent_rows():
    counts = np.array([5, 50, 1, 20, 20])
    sizes = es_sizes(5, 8, 0.3, counts)            # 0.3 * 40 = 12 = 5 * 2 + 2
    assert sizes.tolist() == [2, 3, 2, 3, 2]       # rows 1 (50) and 3 (20, lower id than row 4)
    assert es_sizes(5, 8, 0.3).tolist() == [3, 3, 2, 2, 2]
    assert es_sizes(943, 64, 0.1).max() - es_sizes(943, 64, 0.1).min() <= 1


def test_mr_is_seeded_and_mixed():
    a, b, c = mr_sizes(500, 64, 0.2, seed=1), mr_sizes(500, 64, 0.2, seed=1), mr_sizes(500, 64, 0.2, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(np.unique(a)) > 10 and a.min() <= 2 and a.max() >= 20  # spread from 1 to ~2x the mean (12.8)


def test_mde_widths_grow_with_popularity():
    counts = zipf_counts(1000, seed=3)
    sizes = mde_sizes(counts, 64, 0.1, alpha=0.3)
    order = np.argsort(counts, kind="stable")
    assert (np.diff(sizes[order]) >= -1).all()    # monotone up to the one-dimension rounding fix-up
    assert sizes[counts.argmax()] > sizes[counts == 0].max()
    assert sizes.sum() == target_parameters(0.1, 1000, 64)


def test_mde_alpha_controls_the_skew():
    counts = np.array([100, 50, 10, 5, 1, 0, 0, 3])
    assert mde_sizes(counts, 16, 0.25, alpha=0).tolist() == [4] * 8           # alpha = 0 is ES
    flat, steep = mde_sizes(counts, 16, 0.25, alpha=0.3), mde_sizes(counts, 16, 0.25, alpha=1.0)
    assert steep[0] > flat[0] and steep.std() > flat.std()
    with pytest.raises(ValueError, match="alpha"):
        mde_sizes(counts, 16, 0.25, alpha=1.5)


def test_fit_to_total_and_rounding():
    sizes = fit_to_total([1.0, 2.0, 3.0, 0.0], 10, 8)
    assert sizes.sum() == 10 and sizes.min() >= 1 and sizes[2] >= sizes[1] >= sizes[0]
    assert fit_to_total([0.0, 0.0, 0.0], 6, 4).tolist() == [2, 2, 2]        # no information: equal
    assert round_to_total([1.5, 1.5, 1.0], 4, 8).tolist() == [2, 1, 1]      # tie: lower id first
    with pytest.raises(ValueError, match="cannot sum"):
        round_to_total([1.0, 1.0], 20, 8)


@pytest.mark.parametrize("bad, match", [(0, "density"), (1.5, "density"), (-0.2, "density"),
                                        (0.001, "at least 1/d_max")])
@pytest.mark.parametrize("method", METHODS)
def test_bad_budgets_raise(method, bad, match):
    with pytest.raises(ValueError, match=match):
        baseline_sizes(method, np.ones(50), 64, bad)


def test_bad_counts_and_method():
    with pytest.raises(ValueError, match="non-negative"):
        baseline_sizes("mde", [1, -1, 2], 8, 0.5)
    with pytest.raises(ValueError, match="one frequency per row"):
        baseline_sizes("es", [[1, 2]], 8, 0.5)
    with pytest.raises(ValueError, match="unknown baseline 'dnis'"):
        baseline_sizes("dnis", [1, 2], 8, 0.5)


def test_role_counts(topk_split, ctr_split):
    counts = role_counts(topk_split)
    assert np.array_equal(counts["user"], topk_split.user_activity())
    assert np.array_equal(counts["item_mlp"], topk_split.item_popularity())
    assert np.array_equal(role_counts(ctr_split)["feature"], ctr_split.feature_counts())


QUICK = TrainConfig(epochs=2, batch_size=128, lr=1e-2, progress=False)


@pytest.mark.parametrize("backbone", ["mf", "lightgcn", "neumf"])
def test_run_baseline_end_to_end(backbone, topk_split):
    run = run_baseline(backbone, topk_split, "mde", 0.25, d_max=8, config=QUICK)
    roles = {"mf": {"user", "item"}, "lightgcn": {"user", "item"},
             "neumf": {"user", "item", "user_mlp", "item_mlp"}}[backbone]
    assert set(run.sizes) == roles
    for role, table in run.model.embedding_tables().items():
        assert isinstance(table, CompactEmbedding)
        assert table.num_parameters() == target_parameters(0.25, table.num_rows, 8)
        assert run.memory[role]["compact_measured"] == run.memory[role]["compact"]
        assert run.memory[role]["masked_measured"] == run.memory[role]["masked"]
    total = run.memory["total"]
    assert total["density"] == pytest.approx(0.25, abs=1e-3)
    assert total["compact"] < total["dense"] < total["masked"]  # (offsets cost 2 floats a row: tiny d_max)
    assert run.test_compact == run.result.test             # converting to compact changes no score
    out = json.loads(json.dumps(run.to_dict()))
    assert out["sparsity"] == pytest.approx(0.75) and out["method"] == "mde"


def test_run_baseline_ctr(ctr_split):
    run = run_baseline("fm", ctr_split, "es", 0.5, d_max=8, config=QUICK)
    assert set(run.sizes) == {"feature"}
    assert run.sizes["feature"].sum() == target_parameters(0.5, ctr_split.data.n_features, 8)
    assert run.test_compact == run.result.test and "auc" in run.test_compact


def test_cli_search_writes_json(tmp_path, capsys):
    out = tmp_path / "runs" / "mr.json"
    code = main(["search", "--method", "mr", "--sparsity", "0.75", "--backbone", "mf", "--dataset", "synthetic",
                 "--dim", "8", "--epochs", "1", "--quiet", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "sparsity c = 75.0 %" in printed and "compact" in printed and "total" in printed
    saved = json.loads(out.read_text())
    assert saved["density"] == pytest.approx(0.25) and saved["method"] == "mr"
    assert saved["memory"]["total"]["compact"] < saved["memory"]["total"]["dense"]
    assert sum(saved["sizes"]["item"]) == target_parameters(0.25, len(saved["sizes"]["item"]), 8)


@pytest.mark.parametrize("args, match", [
    (["--budget", "0"], "kept fraction"), (["--budget", "1.5"], "pass 0.015"),
    (["--sparsity", "1"], "pruned fraction"), (["--budget", "0.1", "--sparsity", "0.9"], "not allowed with"),
    ([], "one of the arguments --budget --sparsity is required"), (["--budget", "0.1", "--alpha", "2"], "[0, 1]")])
def test_cli_search_rejects_bad_budgets(args, match, capsys):
    with pytest.raises(SystemExit) as e:
        main(["search", "--method", "es", *args])
    assert e.value.code == 2
    assert match in capsys.readouterr().err
