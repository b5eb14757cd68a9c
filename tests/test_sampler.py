"""BPRSampler: valid negatives, one visit per positive and epoch, batch sizes, seeds, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import csr
from recsize.data import BPRSampler


def epoch_arrays(sampler: BPRSampler, batch_size: int):
    batches = list(sampler.epoch(batch_size))
    u, p, n = (torch.cat([b[j] for b in batches]).numpy() for j in range(3))
    return batches, u, p, n


def test_negatives_are_never_training_positives(tiny_split):
    train = tiny_split.train
    dense = train.toarray() > 0
    sampler = BPRSampler(train, seed=0)
    for _ in range(3):
        _, u, p, n = epoch_arrays(sampler, 100)
        assert dense[u, p].all()          # positives are positives
        assert not dense[u, n].any()      # negatives are not
        assert ((n >= 0) & (n < train.shape[1])).all()


def test_dense_user_still_gets_valid_negatives():
    # user 0 has all items but one: its only possible negative is item 4
    train = csr([[0, 1, 2, 3, 5, 6, 7], [0], [2, 3]], 8)
    sampler = BPRSampler(train, seed=1)
    _, u, _, n = epoch_arrays(sampler, 3)
    assert (n[u == 0] == 4).all()
    assert not (train.toarray()[u, n] > 0).any()


def test_epoch_visits_every_positive_once(tiny_split):
    train = tiny_split.train
    sampler = BPRSampler(train, seed=0)
    assert len(sampler) == train.nnz
    _, u, p, _ = epoch_arrays(sampler, 64)
    coo = train.tocoo()
    want = np.sort(coo.row.astype(np.int64) * train.shape[1] + coo.col)
    np.testing.assert_array_equal(np.sort(u * train.shape[1] + p), want)


def test_batch_sizes(tiny_split):
    sampler = BPRSampler(tiny_split.train, seed=0)
    n = len(sampler)
    batches, _, _, _ = epoch_arrays(sampler, 64)
    sizes = [len(b[0]) for b in batches]
    assert sizes == [64] * (n // 64) + ([n % 64] if n % 64 else [])
    assert len(batches) == sampler.n_batches(64)
    for u, p, neg in batches:
        assert u.dtype == p.dtype == neg.dtype == torch.int64
        assert u.shape == p.shape == neg.shape
    assert len(list(sampler.epoch(10 ** 6))) == 1


def test_same_seed_same_batches(tiny_split):
    a, b, c = (BPRSampler(tiny_split.train, seed=s) for s in (5, 5, 6))
    for _ in range(2):  # two epochs: the generator state carries over identically
        ea, eb, ec = (epoch_arrays(x, 50)[1:] for x in (a, b, c))
        for x, y in zip(ea, eb):
            np.testing.assert_array_equal(x, y)
        assert any(not np.array_equal(x, y) for x, y in zip(ea, ec))


def test_errors():
    with pytest.raises(ValueError, match="every item"):
        BPRSampler(csr([[0, 1, 2], [1]], 3))
    with pytest.raises(ValueError, match="empty"):
        BPRSampler(csr([[], []], 3))
    sampler = BPRSampler(csr([[0], [1]], 3))
    with pytest.raises(ValueError, match="batch_size"):
        next(sampler.epoch(0))
