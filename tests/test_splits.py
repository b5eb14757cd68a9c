"""Split protocols: the rounding rule, disjointness, determinism, leave-last-out and the given split."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsize.data import Interactions, make_split, random_split, ratio_counts, temporal_split
from recsize.data.splits import given_split


def pairs(m: sp.csr_matrix) -> set[tuple[int, int]]:
    coo = m.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist()))


@pytest.mark.parametrize("n, ratios, want", [
    (10, (0.8, 0.1, 0.1), (8, 1, 1)),
    (20, (0.8, 0.1, 0.1), (16, 2, 2)),
    (5, (0.8, 0.1, 0.1), (3, 1, 1)),    # shares 0.5 < 1: test, then valid get one each
    (3, (0.8, 0.1, 0.1), (1, 1, 1)),
    (2, (0.8, 0.1, 0.1), (1, 0, 1)),    # training keeps at least one: only test is bumped
    (1, (0.8, 0.1, 0.1), (1, 0, 0)),
    (0, (0.8, 0.1, 0.1), (0, 0, 0)),
    (4, (0.5, 0.25, 0.25), (2, 1, 1)),
    (10, (0.5, 0.25, 0.25), (6, 2, 2)),
    (10, (0.9, 0.1, 0.0), (9, 1, 0)),   # a zero share is never bumped
])
def test_ratio_counts(n, ratios, want):
    got = ratio_counts(np.array([n]), ratios)
    assert tuple(got[0]) == want


def test_ratio_counts_vectorised():
    n = np.arange(0, 200)
    cnt = ratio_counts(n, (0.8, 0.1, 0.1))
    assert cnt.shape == (200, 3)
    np.testing.assert_array_equal(cnt.sum(1), n)
    assert (cnt >= 0).all()
    assert (cnt[n >= 1, 0] >= 1).all()


def test_random_split_partitions_the_data(tiny_data):
    s = random_split(tiny_data, seed=3)
    tr, va, te = pairs(s.train), pairs(s.valid), pairs(s.test)
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert tr | va | te == set(zip(tiny_data.user.tolist(), tiny_data.item.tolist()))
    n = tiny_data.user_counts()
    cnt = ratio_counts(n, (0.8, 0.1, 0.1))
    for j, m in enumerate((s.train, s.valid, s.test)):
        np.testing.assert_array_equal(np.diff(m.indptr), cnt[:, j])
        assert m.shape == (tiny_data.n_users, tiny_data.n_items)
        assert set(np.unique(m.data)) == {1.0}
    assert s.protocol == "random-811" and s.seed == 3
    np.testing.assert_array_equal(s.user_activity(), cnt[:, 0])
    assert s.item_popularity().sum() == s.train.nnz
    u, i = s.train_pairs()
    assert set(zip(u.tolist(), i.tolist())) == tr


def test_random_split_deduplicates():
    d = Interactions("dup", 2, 5, [0, 0, 0, 0, 1, 1, 1, 1, 0], [0, 1, 1, 2, 0, 1, 2, 3, 0])
    s = random_split(d, (0.5, 0.25, 0.25), seed=0)
    assert pairs(s.train) | pairs(s.valid) | pairs(s.test) == {(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (1, 3)}
    assert s.train.nnz + s.valid.nnz + s.test.nnz == 7
    assert s.train.max() == 1.0


def test_random_split_seeds(tiny_data):
    a, b, c = random_split(tiny_data, seed=0), random_split(tiny_data, seed=0), random_split(tiny_data, seed=1)
    for x, y in ((a.train, b.train), (a.valid, b.valid), (a.test, b.test)):
        assert (x != y).nnz == 0
    assert (a.test != c.test).nnz > 0


def test_ciess_protocol(tiny_data):
    s = make_split(tiny_data, "ciess-50-25-25", seed=0)
    assert s.protocol == "ciess-50-25-25"
    cnt = ratio_counts(tiny_data.user_counts(), (0.5, 0.25, 0.25))
    np.testing.assert_array_equal(np.diff(s.valid.indptr), cnt[:, 1])
    np.testing.assert_array_equal(np.diff(s.test.indptr), cnt[:, 2])
    total = s.train.nnz + s.valid.nnz + s.test.nnz
    assert 0.45 < s.train.nnz / total < 0.6


def test_temporal_split():
    # user 0: four interactions; user 1: two (all train); user 2: three, with a time tie at the end
    user = [0, 0, 0, 0, 1, 1, 2, 2, 2]
    item = [3, 1, 2, 0, 0, 1, 4, 2, 3]
    ts = [10, 40, 30, 20, 5, 6, 1, 9, 9]
    d = Interactions("t", 3, 5, user, item, timestamp=np.array(ts))
    s = temporal_split(d)
    assert s.protocol == "temporal-loo"
    assert pairs(s.test) == {(0, 1), (2, 3)}       # latest; the tie 2@9 vs 3@9 is broken by item id
    assert pairs(s.valid) == {(0, 2), (2, 2)}      # second latest
    assert pairs(s.train) == {(0, 3), (0, 0), (1, 0), (1, 1), (2, 4)}
    assert make_split(d, "temporal-loo").test.nnz == 2
    with pytest.raises(ValueError, match="timestamps"):
        temporal_split(Interactions("nt", 1, 3, [0, 0, 0], [0, 1, 2]))


def test_given_split():
    rng = np.random.default_rng(0)
    user = np.repeat(np.arange(20), 12)
    item = np.concatenate([rng.choice(30, 12, replace=False) for _ in range(20)])
    given = np.tile(np.arange(12) >= 10, 20)
    d = Interactions("g", 20, 30, user, item, given_test=given)
    s = make_split(d, "given", seed=0)
    assert s.protocol == "given"
    assert pairs(s.test) == set(zip(user[given].tolist(), item[given].tolist()))
    assert pairs(s.train) | pairs(s.valid) == set(zip(user[~given].tolist(), item[~given].tolist()))
    assert not pairs(s.train) & pairs(s.valid)
    np.testing.assert_array_equal(np.diff(s.valid.indptr), np.ones(20))  # 10% of 10 per user
    with pytest.raises(ValueError, match="published test"):
        given_split(Interactions("x", 1, 3, [0, 0, 0], [0, 1, 2]))


def test_bad_arguments(tiny_data):
    with pytest.raises(ValueError, match="unknown protocol.*random-811"):
        make_split(tiny_data, "leave-one-out")
    for ratios in [(0.8, 0.1), (0.8, 0.3, 0.1), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1)]:
        with pytest.raises(ValueError, match="ratios"):
            random_split(tiny_data, ratios)


def test_split_str(tiny_split):
    text = str(tiny_split)
    assert "random-811" in text and tiny_split.data.name in text
    assert f"{tiny_split.train.nnz:,}" in text and f"{tiny_split.test.nnz:,}" in text
    assert "train" in text and "valid" in text and "test" in text
    assert "seed 0" in text
