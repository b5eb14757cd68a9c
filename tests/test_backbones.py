"""Every backbone on tiny data: loss, score shapes, score_all == score, training lowers the loss, seeds."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from conftest import csr, features_data, reference_neumf_scorer
from recsize.backbones import (BACKBONES, CTR_BACKBONES, TOPK_BACKBONES, build_backbone, defaults_for,
                               normalized_adjacency)
from recsize.data import ctr_view, split_ctr
from recsize.embedding import Embedding
from recsize.train import TrainConfig, fit, train

QUICK = dict(batch_size=256, lr=1e-2, patience=100, progress=False, test=False)


@pytest.fixture(scope="module")
def ctr_split():
    return split_ctr(ctr_view(features_data(n=600)), seed=0)


def batch(split, n=16, seed=0):
    rng = np.random.default_rng(seed)
    u, i = split.train_pairs()
    pick = rng.choice(len(u), n, replace=False)
    neg = rng.integers(0, split.n_items, n)
    return (torch.from_numpy(u[pick]), torch.from_numpy(i[pick]), torch.from_numpy(neg))


@pytest.mark.parametrize("name", list(TOPK_BACKBONES))
def test_topk_backbone_shapes_and_consistency(name, tiny_split):
    torch.manual_seed(0)
    model = build_backbone(name, tiny_split, dim=8)
    assert model.task == "topk" and isinstance(model, TOPK_BACKBONES[name])
    users, pos, neg = batch(tiny_split)
    loss = model.loss(users, pos, neg)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    with torch.no_grad():
        s = model.score(users, pos)
        assert s.shape == (16,)
        full = model.score_all(users)
        assert full.shape == (16, tiny_split.n_items)
        torch.testing.assert_close(full[torch.arange(16), pos], s, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(full[torch.arange(16), neg], model.score(users, neg), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.scorer()(users), full)
    tables = model.embedding_tables()
    assert tables["user"].num_rows == tiny_split.n_users and tables["item"].num_rows == tiny_split.n_items
    assert all(t.dim == 8 for t in tables.values())


@pytest.mark.parametrize("name", list(TOPK_BACKBONES))
def test_topk_training_lowers_the_loss(name, tiny_split):
    torch.manual_seed(0)
    model = build_backbone(name, tiny_split, dim=8)
    result = train(model, tiny_split, TrainConfig(epochs=20, **QUICK))
    losses = [row["loss"] for row in result.history]
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses
    assert 0.0 <= result.valid["ndcg@20"] <= 1.0 and result.test is None


def test_fit_is_deterministic(tiny_split):
    cfg = TrainConfig(epochs=3, seed=7, batch_size=128, lr=1e-2, patience=100, progress=False)
    a, b = fit("lightgcn", tiny_split, dim=8, config=cfg), fit("lightgcn", tiny_split, dim=8, config=cfg)
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    assert [r["ndcg@20"] for r in a.history] == [r["ndcg@20"] for r in b.history]
    assert a.valid == b.valid and a.test == b.test
    c = fit("lightgcn", tiny_split, dim=8, config=TrainConfig(**{**cfg.__dict__, "seed": 8}))
    assert [r["loss"] for r in a.history] != [r["loss"] for r in c.history]


@pytest.mark.parametrize("name", list(CTR_BACKBONES))
def test_ctr_backbones(name, ctr_split):
    torch.manual_seed(0)
    model = build_backbone(name, ctr_split, dim=8)
    assert model.task == "ctr"
    X, y = ctr_split.part("train")
    x, yy = torch.from_numpy(X[:32]), torch.from_numpy(y[:32])
    s = model.score(x)
    assert s.shape == (32,)
    loss = model.loss(x, yy)
    assert loss.dim() == 0 and torch.isfinite(loss)
    with pytest.raises(ValueError, match="fields"):
        model.score(x[:, :3])
    result = train(model, ctr_split, TrainConfig(epochs=20, batch_size=128, lr=1e-2, patience=100,
                                                 progress=False))
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0], losses
    assert result.test["auc"] > 0.7  # the labels follow the genre field
    assert np.isfinite(result.test["logloss"])


def test_fm_matches_its_definition():
    torch.manual_seed(0)
    from recsize.backbones import FM
    fm = FM(n_features=7, n_fields=3, dim=4)
    torch.nn.init.normal_(fm.linear.weight)
    fm.bias.data.fill_(0.3)
    x = torch.tensor([[0, 3, 5], [1, 2, 6]])
    v, w = fm.feature.weight, fm.linear.weight[:, 0]
    want = []
    for row in x:
        pair = sum((v[row[a]] * v[row[b]]).sum() for a in range(3) for b in range(a + 1, 3))
        want.append(0.3 + w[row].sum() + pair)
    torch.testing.assert_close(fm.score(x), torch.stack(want), atol=1e-5, rtol=1e-5)


def test_build_backbone_errors(tiny_split, ctr_split):
    with pytest.raises(ValueError, match="CTR split"):
        build_backbone("fm", tiny_split, dim=8)
    with pytest.raises(ValueError, match="top-k split"):
        build_backbone("mf", ctr_split, dim=8)
    with pytest.raises(ValueError, match="unknown backbone.*lightgcn"):
        build_backbone("svd", tiny_split)
    with pytest.raises(ValueError, match="dim"):
        build_backbone("mf", tiny_split, dim=0)
    with pytest.raises(ValueError, match="dim"):
        build_backbone("lightgcn", tiny_split, dim=0)
    with pytest.raises(ValueError, match="dim"):
        build_backbone("deepfm", ctr_split, dim=0)
    with pytest.raises(ValueError, match="reg"):
        build_backbone("mf", tiny_split, dim=8, reg=-1.0)
    assert isinstance(build_backbone("MF", tiny_split, dim=8), TOPK_BACKBONES["mf"])
    with pytest.raises(ValueError, match="unknown backbone"):
        defaults_for("svd")
    for name in BACKBONES:
        model_kwargs, train_kwargs = defaults_for(name)
        assert isinstance(model_kwargs, dict) and isinstance(train_kwargs, dict)
        TrainConfig(**train_kwargs)  # valid trainer settings


def test_normalized_adjacency():
    train = csr([[0, 1], [1], [], [0, 1, 2]], 4)  # user 2 and item 3 have no interaction
    U, I = train.shape
    adj = normalized_adjacency(train)
    assert adj.layout == torch.sparse_csr and adj.shape == (U + I, U + I)
    a = adj.to_dense().numpy()
    np.testing.assert_allclose(a, a.T)
    deg_u = np.asarray(train.sum(1)).ravel()
    deg_i = np.asarray(train.sum(0)).ravel()
    want = np.zeros((U + I, U + I), np.float32)
    for u in range(U):
        for i in train[u].indices:
            want[u, U + i] = want[U + i, u] = 1 / np.sqrt(deg_u[u] * deg_i[i])
    np.testing.assert_allclose(a, want, rtol=1e-6)
    assert a[:U, :U].sum() == 0 and a[U:, U:].sum() == 0
    # non-binary values (e.g. ratings) do not change the graph
    weighted = sp.csr_matrix(train * 3.0)
    np.testing.assert_allclose(normalized_adjacency(weighted).to_dense().numpy(), want, rtol=1e-6)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_custom_embedding_factory(name, tiny_split, ctr_split):
    calls = []

    def factory(role, num_rows, dim):
        calls.append((role, num_rows, dim))
        return Embedding(num_rows, dim, init="normal")

    split = ctr_split if name in CTR_BACKBONES else tiny_split
    model = build_backbone(name, split, dim=8, embedding=factory)
    if name in CTR_BACKBONES:
        assert calls == [("feature", ctr_split.data.n_features, 8)]
    else:
        assert ("user", tiny_split.n_users, 8) in calls and ("item", tiny_split.n_items, 8) in calls
        assert calls[:2] == [("user", tiny_split.n_users, 8), ("item", tiny_split.n_items, 8)]
    assert len(model.embedding_tables()) == len(calls)


def test_embedding_table():
    e = Embedding(5, 3)
    assert e(torch.tensor([[0, 4]])).shape == (1, 2, 3)
    assert e.table().shape == (5, 3) and e.num_parameters() == 15 and e.num_bytes() == 60
    with pytest.raises(ValueError):
        Embedding(0, 3)
    with pytest.raises(ValueError, match="init"):
        Embedding(2, 3, init="zeros")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graph_model_moves_adjacency(tiny_split):
    model = build_backbone("lightgcn", tiny_split, dim=8).to("cuda")
    assert model.adj.device.type == "cuda"
    assert model.score_all(torch.arange(3, device="cuda")).shape == (3, tiny_split.n_items)


@pytest.mark.parametrize("name", ["lightgcn", "ngcf"])
def test_graph_propagation_gradients_equal_autograds_bit_for_bit(name, tiny_split, monkeypatch):
    """The symmetric propagation's backward (adj @ g) gives exactly autograd's adj.T @ g."""
    import recsize.backbones as backbones

    def grads():
        torch.manual_seed(0)
        model = build_backbone(name, tiny_split, 8)
        model.eval()  # NGCF's message dropout off: the same forward twice
        users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
        model.loss(users, pos, neg).backward()
        return [p.grad.clone() for p in model.parameters()]

    fast = grads()
    monkeypatch.setattr(backbones, "propagate_once", lambda adj, x: adj @ x)   # plain autograd
    plain = grads()
    assert len(fast) == len(plain) and all(torch.equal(a, b) for a, b in zip(fast, plain))
    adj = backbones.normalized_adjacency(tiny_split.train)
    assert torch.equal(adj.to_dense(), adj.to_dense().T)                          # the premise: symmetric


def _plain_neumf_scores(model, users):
    """NeuMF's full ranking as it was written before the blocked form (issue 14): the reference."""
    return reference_neumf_scorer(model)(users)


@pytest.mark.parametrize("n_users, n_items, dim, hidden", [(943, 1682, 64, (64,)), (150, 301, 16, (64,)),
                                                             (37, 80, 8, (32,)), (200, 97, 16, (32, 16))])
def test_neumf_blocked_full_ranking_is_bit_identical(n_users, n_items, dim, hidden):
    torch.manual_seed(0)
    model = BACKBONES["neumf"](n_users, n_items, dim, hidden=hidden).eval()
    with torch.no_grad():  # non-zero biases, so that every term counts
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.bias.normal_()
    users = torch.randperm(n_users)
    with torch.no_grad():
        ref = _plain_neumf_scores(model, users)
        for block in (4, 8, 16):
            assert torch.equal(model.scorer()(users, block=block), ref)
        assert torch.equal(model.scorer()(users[:5]), _plain_neumf_scores(model, users[:5]))
        assert torch.equal(model.score_all(users), ref)
    # with autograd on, the plain form runs (and gives the same scores)
    assert torch.equal(model.scorer()(users).detach(), ref)
