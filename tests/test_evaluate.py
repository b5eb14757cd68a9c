"""Full-ranking evaluation on a hand-built split with a fake model whose scores are fixed."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import csr
from recsize.data import Interactions, Split
from recsize.evaluate import evaluate_ctr, evaluate_topk, predict_ctr

N_ITEMS = 6


class FixedScores(nn.Module):
    task = "topk"

    def __init__(self, scores: torch.Tensor):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.scores = scores
        self.calls = []

    def scorer(self):
        def score_all(users):
            self.calls.append(users.tolist())
            return self.scores[users].clone()
        return score_all


def hand_split() -> Split:
    train, valid, test = [[0], [1], [0, 1]], [[2], [0], []], [[3], [4], [5]]
    user = [u for rows in (train, valid, test) for u, r in enumerate(rows) for _ in r]
    item = [i for rows in (train, valid, test) for r in rows for i in r]
    data = Interactions("hand", 3, N_ITEMS, user, item)
    return Split(data, "hand", csr(train, N_ITEMS), csr(valid, N_ITEMS), csr(test, N_ITEMS))


def model() -> FixedScores:
    # every user ranks item 0 first, then 1, 2, ...
    return FixedScores(torch.arange(N_ITEMS, 0, -1, dtype=torch.float).repeat(3, 1))


def test_valid_excludes_training_items():
    r = evaluate_topk(model(), hand_split(), "valid", ks=(1, 2, 3))
    # user 0: train {0} removed -> ranking 1, 2, ...; valid item 2 at rank 2
    # user 1: train {1} removed -> ranking 0, 2, ...; valid item 0 at rank 1
    # user 2: no valid positive -> skipped
    assert r["recall@1"] == pytest.approx(0.5)
    assert r["recall@2"] == pytest.approx(1.0)
    assert r["precision@2"] == pytest.approx(0.5)
    assert r["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1) / 2)
    assert r["mrr@3"] == pytest.approx((1 / 2 + 1) / 2)
    assert r["hit@1"] == pytest.approx(0.5)
    assert len(r) == 5 * 3


def test_test_excludes_training_and_validation_items():
    r = evaluate_topk(model(), hand_split(), "test", ks=(1, 2, 3, 4))
    # user 0: {0, 2} removed -> 1, 3, ...: test 3 at rank 2
    # user 1: {1, 0} removed -> 2, 3, 4: test 4 at rank 3
    # user 2: {0, 1} removed -> 2, 3, 4, 5: test 5 at rank 4
    assert r["mrr@4"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3)
    assert r["recall@1"] == 0.0
    assert r["recall@2"] == pytest.approx(1 / 3)
    assert r["recall@3"] == pytest.approx(2 / 3)
    assert r["recall@4"] == pytest.approx(1.0)
    d = [1 / math.log2(k + 2) for k in range(4)]
    assert r["ndcg@4"] == pytest.approx((d[1] + d[2] + d[3]) / 3)


def test_exclude_seen_false_keeps_seen_items():
    r = evaluate_topk(model(), hand_split(), "test", ks=(4,), exclude_seen=False)
    # nothing removed: test items 3, 4, 5 sit at ranks 4, 5, 6
    assert r["mrr@4"] == pytest.approx(1 / 4 / 3)


def test_per_user_and_batching():
    m = model()
    full = evaluate_topk(m, hand_split(), "valid", ks=(2,), per_user=True)
    per = full["per_user"]
    assert set(per) == {f"{n}@2" for n in ("recall", "ndcg", "precision", "hit", "mrr")}
    np.testing.assert_allclose(per["recall@2"][:2], [1.0, 1.0])
    assert np.isnan(per["recall@2"][2])
    np.testing.assert_allclose(per["ndcg@2"][:2], [1 / math.log2(3), 1.0])
    assert full["ndcg@2"] == pytest.approx(np.nanmean(per["ndcg@2"]))
    m.calls.clear()
    small = evaluate_topk(m, hand_split(), "test", ks=(1, 2, 3, 4), batch_size=2)
    assert m.calls == [[0, 1], [2]]
    assert small == evaluate_topk(model(), hand_split(), "test", ks=(1, 2, 3, 4))


def test_user_specific_rows():
    scores = torch.zeros(3, N_ITEMS)
    scores[0, 3], scores[1, 4], scores[2, 5] = 1.0, 1.0, 1.0  # each user's test item first
    r = evaluate_topk(FixedScores(scores), hand_split(), "test", ks=(1,))
    assert r["recall@1"] == 1.0 and r["ndcg@1"] == 1.0


def test_model_mode_is_restored():
    m = model()
    m.train()
    evaluate_topk(m, hand_split(), ks=(1,))
    assert m.training
    m.eval()
    evaluate_topk(m, hand_split(), ks=(1,))
    assert not m.training


def test_errors():
    with pytest.raises(ValueError, match="stage"):
        evaluate_topk(model(), hand_split(), "foo")
    with pytest.raises(ValueError, match="exceeds the number of items"):
        evaluate_topk(model(), hand_split(), ks=(7,))
    s = hand_split()
    s.valid = csr([[], [], []], N_ITEMS)
    with pytest.raises(ValueError, match="no user has a valid positive"):
        evaluate_topk(model(), s, "valid", ks=(1,))


class FixedCTR(nn.Module):
    task = "ctr"

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def score(self, x):
        return x[:, 0].float() - 1.5  # logit from the first field


def test_evaluate_ctr():
    from recsize.data import CTRSplit, encode_fields
    X0 = np.array([0, 1, 2, 3, 0, 3])
    data = encode_fields([X0], ("f",), y=[0, 0, 1, 1, 0, 1], name="t")
    split = CTRSplit(data, np.array([0, 1]), np.array([2, 3, 4, 5]), np.array([0, 1, 2, 3]))
    p = predict_ctr(FixedCTR(), data.X, batch_size=4)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-(X0 - 1.5))))
    r = evaluate_ctr(FixedCTR(), split, "valid")
    assert r["auc"] == pytest.approx(1.0)
    pv = p[[2, 3, 4, 5]]
    yv = np.array([1, 1, 0, 1])
    assert r["logloss"] == pytest.approx(-np.mean(yv * np.log(pv) + (1 - yv) * np.log(1 - pv)))
    with pytest.raises(ValueError, match="stage"):
        evaluate_ctr(FixedCTR(), split, "train")
