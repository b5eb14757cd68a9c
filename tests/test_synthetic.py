"""make_synthetic: shapes, determinism, id ranges, planted dimensions, argument checks."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from recsize.data import make_synthetic


def test_shapes_and_ranges(tiny_data):
    d = tiny_data
    assert (d.n_users, d.n_items) == (60, 80)
    assert len(d.user) == len(d.item) == len(d.rating) == len(d.timestamp) == len(d)
    assert d.user.min() >= 0 and d.user.max() < 60
    assert d.item.min() >= 0 and d.item.max() < 80
    assert (d.rating == 1).all()
    np.testing.assert_array_equal(np.sort(d.timestamp), np.arange(len(d)))  # a random order
    assert len(np.unique(d.user * d.n_items + d.item)) == len(d)  # no duplicate pairs
    uc = d.user_counts()
    assert uc.min() >= 5 and uc.max() <= 40  # clipped to [5, n_items // 2]
    assert d.meta["true_item_dims"].shape == (80,) and d.meta["true_user_dims"].shape == (60,)
    assert d.meta["true_item_dims"].min() == 2 and d.meta["true_item_dims"].max() == 8
    assert d.meta["d_true"] == 8 and d.meta["seed"] == 0


def test_deterministic_for_a_seed():
    kw = dict(n_users=60, n_items=80, mean_per_user=10, d_true=8)
    a, b, c = make_synthetic(seed=4, **kw), make_synthetic(seed=4, **kw), make_synthetic(seed=5, **kw)
    for attr in ("user", "item", "timestamp"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
    np.testing.assert_array_equal(a.meta["true_item_dims"], b.meta["true_item_dims"])
    assert len(a) != len(c) or not np.array_equal(a.item, c.item)


def test_planted_dims_follow_popularity():
    d = make_synthetic(n_users=300, n_items=200, mean_per_user=15, d_true=16, seed=0)
    rho = spearmanr(d.item_counts(), d.meta["true_item_dims"]).statistic
    assert rho > 0.5, rho
    rho_u = spearmanr(d.user_counts(), d.meta["true_user_dims"]).statistic
    assert rho_u > 0.5, rho_u


def test_planted_dims_tiny(tiny_data):
    rho = spearmanr(tiny_data.item_counts(), tiny_data.meta["true_item_dims"]).statistic
    assert rho > 0.5, rho


@pytest.mark.parametrize("kwargs", [dict(n_users=1), dict(n_items=1), dict(min_dim=0), dict(min_dim=9, d_true=8),
                                    dict(mean_per_user=0), dict(mean_per_user=80, n_items=80)])
def test_bad_arguments(kwargs):
    args = dict(n_users=60, n_items=80, mean_per_user=10, d_true=8)
    with pytest.raises(ValueError):
        make_synthetic(**{**args, **kwargs})


def test_planted_groups_are_independent_of_popularity_by_construction():
    from scipy.stats import spearmanr

    from recsize.data import PLANTED, prepare
    a = make_synthetic(**PLANTED["planted-100k"], widths="groups", seed=3)
    b = make_synthetic(**PLANTED["planted-100k"], widths="groups", seed=3)
    assert np.array_equal(a.user, b.user) and np.array_equal(a.item, b.item)
    assert np.array_equal(a.meta["true_item_dims"], b.meta["true_item_dims"])
    for kind, ids, n in (("item", a.item, a.n_items), ("user", a.user, a.n_users)):
        dims, counts = a.meta[f"true_{kind}_dims"], np.bincount(ids, minlength=n)
        assert set(np.unique(dims)) == {2, 4, 8, 16, 32}
        assert abs(spearmanr(dims, counts)[0]) < 0.15, kind          # popularity does not give widths away
        top, bottom = counts >= np.quantile(counts, 0.9), counts <= np.quantile(counts, 0.1)
        for g in (2, 4, 8, 16, 32):                                   # every group spans the range
            assert (dims[top] == g).any() and (dims[bottom] == g).any(), (kind, g)
        groups = a.meta[f"{kind}_groups"]
        assert np.array_equal(np.asarray((2, 4, 8, 16, 32))[groups], dims)
    counts = np.sort(np.bincount(a.item, minlength=a.n_items))[::-1]
    assert counts[: a.n_items // 5].sum() > 0.5 * counts.sum()       # the long tail is kept
    default = make_synthetic(n_users=300, n_items=200, mean_per_user=15, d_true=16, seed=0)
    assert default.meta["widths"] == "popularity" and "item_groups" not in default.meta
    split = prepare("planted-100k", seed=1)
    assert split.data.meta["widths"] == "groups" and split.data.n_items == 1682


@pytest.mark.parametrize("kwargs, match", [({"widths": "genre"}, "widths must be"),
                                           ({"groups": (2, 4)}, "applies to widths='groups'"),
                                           ({"widths": "groups", "groups": (0, 4)}, "group width"),
                                           ({"widths": "groups", "groups": (4, 64)}, "group width")])
def test_planted_groups_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic(n_users=50, n_items=60, mean_per_user=5, **kwargs)
