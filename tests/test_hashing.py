"""Hashed tables (Chapter 8, section 8.9): the quotient-remainder trick and the hashing trick, their bytes,
the largest configuration within a byte budget, factories in the backbones, determinism."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

import recsize.hashing as hashing
from recsize.backbones import build_backbone
from recsize.budget import dense_bytes
from recsize.hashing import (HashEmbedding, QREmbedding, hash_bytes, hash_factory, hash_rows_for_bytes, qr_bytes,
                             qr_buckets_for_bytes, qr_factory)
from test_quantize import assert_chapter_everywhere

OPS = ("mult", "add", "concat")


# ------------------------------------------------------------------------------------------ QR
@pytest.mark.parametrize("num,buckets", [(10, 3), (37, 6), (37, 1), (37, 37), (100, 10)])
def test_complementary_partitions_give_every_id_its_own_vector(num, buckets):
    ids = np.arange(num)
    pairs = set(zip(ids // buckets, ids % buckets))
    assert len(pairs) == num                          # (i // m, i % m) is unique
    for op in OPS:
        torch.manual_seed(0)
        qr = QREmbedding(num, 6, buckets, op=op)
        assert qr.quotient.shape == (-(-num // buckets), 3 if op == "concat" else 6)
        assert qr.remainder.shape == (buckets, 3 if op == "concat" else 6)
        table = qr.table()
        assert table.shape == (num, 6) and len(torch.unique(table, dim=0)) == num


def test_qr_lookup_by_hand_and_gradients():
    torch.manual_seed(1)
    ids = torch.tensor([[0, 1, 9], [4, 4, 3]])   # quotients 0, 0, 3, 1, 1, 1; remainders 0, 1, 0, 1, 1, 0
    for op in OPS:
        qr = QREmbedding(10, 4, 3, op=op)
        q, r = qr.quotient[ids // 3], qr.remainder[ids % 3]
        expected = {"mult": q * r, "add": q + r, "concat": torch.cat([q, r], -1)}[op]
        out = qr(ids)
        assert torch.equal(out, expected)
        out.sum().backward()
        assert qr.quotient.grad.abs().sum() > 0 and qr.remainder.grad.abs().sum() > 0
        assert (qr.quotient.grad[2] == 0).all() and (qr.remainder.grad[2] == 0).all()   # rows not looked up
    assert qr(torch.empty(0, dtype=torch.int64)).shape == (0, 4)


def test_qr_bytes_by_hand():
    # 10 ids, 3 buckets: 4 quotient rows and 3 remainder rows of 4 floats; concat: rows of 2 floats
    assert QREmbedding(10, 4, 3).num_bytes() == QREmbedding(10, 4, 3).stored_bytes == (4 + 3) * 4 * 4 == 112
    assert QREmbedding(10, 4, 3, op="concat").num_bytes() == (4 + 3) * 2 * 4 == qr_bytes(10, 4, 3, "concat")
    assert qr_bytes(10, 4, 3) == qr_bytes(10, 4, 3, "add") == 112


@pytest.mark.parametrize("num,dim,op", [(1, 4, "mult"), (10, 4, "mult"), (37, 6, "add"), (1000, 16, "concat"),
                                        (10_007, 8, "mult")])
def test_qr_buckets_for_bytes_is_the_largest_within_budget(num, dim, op):
    counts = np.arange(1, num + 1)
    lowest = min(qr_bytes(num, dim, int(m), op) for m in counts)
    for budget in np.linspace(lowest, max(1.2 * dense_bytes(num, dim), 2 * lowest), 7):
        m = qr_buckets_for_bytes(num, dim, budget, op)
        assert qr_bytes(num, dim, m, op) <= budget
        assert m == num or qr_bytes(num, dim, m + 1, op) > budget   # one bucket more would exceed it
        m0 = int(np.ceil((np.sqrt(4 * num + 1) - 1) / 2))
        above = [int(k) for k in counts[m0 - 1:] if qr_bytes(num, dim, int(k), op) <= budget]
        assert m == max(above)                                       # brute force agrees
    with pytest.raises(ValueError, match="cannot hold a QR table"):
        qr_buckets_for_bytes(num, dim, lowest - 1, op)


def test_qr_refuses_bad_settings():
    with pytest.raises(ValueError, match="unknown QR combination"):
        QREmbedding(10, 4, 3, op="max")
    with pytest.raises(ValueError, match="dim must be even"):
        QREmbedding(10, 5, 3, op="concat")
    with pytest.raises(ValueError, match="buckets must lie in"):
        QREmbedding(10, 4, 11)


# ------------------------------------------------------------------------------------------ hashing
def test_hash_rows_collide_and_seed_fixes_the_hash():
    h = HashEmbedding(100, 4, 10, seed=3)
    rows = h.row_of(torch.arange(100))
    assert rows.min() >= 0 and rows.max() < 10
    assert torch.equal(rows, (torch.arange(100) * h.a + h.b) % hashing.PRIME % 10)
    table = h.table()
    assert torch.equal(table, h.weight[rows])
    assert len(torch.unique(table, dim=0)) == len(torch.unique(rows)) <= 10   # collisions share a vector
    assert torch.equal(HashEmbedding(100, 4, 10, seed=3).row_of(torch.arange(100)), rows)
    assert not torch.equal(HashEmbedding(100, 4, 10, seed=4).row_of(torch.arange(100)), rows)
    assert h.num_bytes() == h.stored_bytes == hash_bytes(10, 4) == 10 * 4 * 4
    with pytest.raises(ValueError, match="rows must lie in"):
        HashEmbedding(10, 4, 11)


def test_hash_rows_for_bytes():
    for budget in (16, 17, 100, 399, 400, 10_000):
        rows = hash_rows_for_bytes(100, 4, budget)
        assert hash_bytes(rows, 4) <= budget and (rows == 100 or hash_bytes(rows + 1, 4) > budget)
    assert hash_rows_for_bytes(100, 4, 10_000) == 100
    with pytest.raises(ValueError, match="cannot hold one row"):
        hash_rows_for_bytes(100, 4, 15)


# ------------------------------------------------------------------------------------------ backbones
@pytest.mark.parametrize("name", ("lightgcn", "neumf", "deepfm"))
@pytest.mark.parametrize("kind", ("qr", "hash"))
def test_factories_plug_into_backbones(name, kind, topk_split, ctr_split):
    split = ctr_split if name == "deepfm" else topk_split

    def build():
        torch.manual_seed(2)
        factory = qr_factory(0.6) if kind == "qr" else hash_factory(0.6, seed=5)
        return build_backbone(name, split, dim=8, embedding=factory)

    model = build()
    tables = model.embedding_tables()
    assert tables and all(isinstance(t, QREmbedding if kind == "qr" else HashEmbedding) for t in tables.values())
    for t in tables.values():
        assert t.num_bytes() <= 0.6 * dense_bytes(t.num_rows, t.dim)
    if name == "deepfm":
        x, y = split.part("train")
        x, y = torch.from_numpy(x[:32]), torch.from_numpy(y[:32])
        loss, score = model.loss(x, y), lambda m: m.score(x)
    else:
        loss = model.loss(torch.arange(8), torch.arange(8), torch.arange(8, 16))
        score = lambda m: m.scorer()(torch.arange(10))   # noqa: E731
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for t in tables.values() for p in t.parameters())
    model.eval()
    again = build().eval()
    with torch.no_grad():   # deterministic: the same seeds, the same numbers
        assert torch.isfinite(score(model)).all() and torch.equal(score(model), score(again))


def test_factory_refuses_too_small_budget():
    with pytest.raises(ValueError, match="role 'user'"):
        qr_factory(0.01)("user", 1000, 8)
    with pytest.raises(ValueError, match="kept fraction"):
        hash_factory(0)


def test_docstrings_name_the_chapter_and_module_is_short():
    source = inspect.getsource(hashing)
    assert len(source.splitlines()) < 500
    assert_chapter_everywhere(source, 12)
