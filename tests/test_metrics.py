"""Top-k and CTR metrics against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recsize.metrics import (auc, hit_at_k, log_loss, mrr_at_k, ndcg_at_k, precision_at_k, recall_at_k,
                             topk_metrics)


def H(rows):
    return torch.tensor(rows, dtype=torch.bool)


def N(values):
    return torch.tensor(values)


def test_single_user_by_hand():
    hits, n_pos = H([[1, 0, 1, 0, 0]]), N([2])
    assert recall_at_k(hits, n_pos, 5).item() == pytest.approx(1.0)
    assert recall_at_k(hits, n_pos, 2).item() == pytest.approx(0.5)
    assert precision_at_k(hits, n_pos, 5).item() == pytest.approx(0.4)
    assert precision_at_k(hits, n_pos, 1).item() == pytest.approx(1.0)
    assert hit_at_k(hits, n_pos, 5).item() == 1.0
    assert mrr_at_k(hits, n_pos, 5).item() == pytest.approx(1.0)
    want = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(hits, n_pos, 5).item() == pytest.approx(want, rel=1e-6)
    assert ndcg_at_k(hits, n_pos, 1).item() == pytest.approx(1.0)


def test_several_users():
    hits = H([[0, 0, 1, 0, 0],   # first hit at rank 3, 1 positive
              [0, 0, 0, 0, 0],   # no hit, 3 positives
              [0, 1, 1, 1, 1],   # 4 hits, 10 positives
              [1, 1, 1, 1, 1]])  # all hits, 5 positives
    n_pos = N([1, 3, 10, 5])
    np.testing.assert_allclose(mrr_at_k(hits, n_pos, 5).numpy(), [1 / 3, 0, 1 / 2, 1])
    np.testing.assert_allclose(mrr_at_k(hits, n_pos, 2).numpy(), [0, 0, 1 / 2, 1])
    np.testing.assert_allclose(hit_at_k(hits, n_pos, 2).numpy(), [0, 0, 1, 1])
    np.testing.assert_allclose(recall_at_k(hits, n_pos, 5).numpy(), [1, 0, 0.4, 1])
    np.testing.assert_allclose(precision_at_k(hits, n_pos, 5).numpy(), [0.2, 0, 0.8, 1])
    d = [1 / math.log2(r + 2) for r in range(5)]
    # the ideal DCG uses min(n_pos, k) positives: user 2 has 10 positives but k = 5
    np.testing.assert_allclose(ndcg_at_k(hits, n_pos, 5).numpy(),
                               [d[2] / d[0], 0, sum(d[1:]) / sum(d), 1.0], rtol=1e-6)
    np.testing.assert_allclose(ndcg_at_k(hits, n_pos, 3).numpy(),
                               [d[2] / d[0], 0, (d[1] + d[2]) / sum(d[:3]), 1.0], rtol=1e-6)


def test_topk_metrics_keys_and_values():
    hits, n_pos = H([[1, 0, 1, 0, 0]]), N([2])
    out = topk_metrics(hits, n_pos, ks=(1, 5))
    assert set(out) == {f"{m}@{k}" for m in ("recall", "ndcg", "precision", "hit", "mrr") for k in (1, 5)}
    assert out["precision@5"].item() == pytest.approx(0.4)
    with pytest.raises(ValueError, match="unknown metric"):
        topk_metrics(hits, n_pos, ks=(1,), names=("auc",))


def test_bad_k_and_shapes():
    hits, n_pos = H([[1, 0, 1]]), N([2])
    for f in (recall_at_k, ndcg_at_k, precision_at_k, hit_at_k, mrr_at_k):
        with pytest.raises(ValueError, match="k=4"):
            f(hits, n_pos, 4)
        with pytest.raises(ValueError, match="k=0"):
            f(hits, n_pos, 0)
    with pytest.raises(ValueError, match="hits must be"):
        recall_at_k(hits, N([2, 1]), 1)


def test_auc_and_log_loss():
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # ties count half
    assert auc(np.array([1, 0, 1]), np.array([0.9, 0.1, 0.8])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="both"):
        auc([1, 1, 1], [0.1, 0.2, 0.3])
    y, p = [1, 0, 1, 0], [0.9, 0.2, 0.6, 0.4]
    want = -np.mean([np.log(0.9), np.log(0.8), np.log(0.6), np.log(0.6)])
    assert log_loss(y, p) == pytest.approx(want)
    # probabilities of exactly 0 / 1 are clipped, so a confident mistake is large but finite
    bad = log_loss([1, 0], [0.0, 1.0])
    assert np.isfinite(bad) and bad == pytest.approx(-np.log(1e-7), rel=1e-6)
    assert log_loss([1, 1], [0.7, 0.7]) == pytest.approx(-np.log(0.7))  # one class is fine for log loss
