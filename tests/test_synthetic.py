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
