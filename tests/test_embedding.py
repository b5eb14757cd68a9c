"""Variable-size embeddings (Chapter 4): masks, compact storage, conversions, save/load, buckets, factories,
and mixed widths in every backbone."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recsize.backbones import BACKBONES, CTR_BACKBONES, build_backbone
from recsize.budget import buckets_bytes, compact_bytes, masked_bytes
from recsize.embedding import (CompactEmbedding, Embedding, MaskedEmbedding, compact_factory, compact_tables,
                               masked_factory, plain_embedding, prefix_mask)
from recsize.train import train


def mixed_sizes(num_rows: int, d_max: int, seed: int = 0) -> np.ndarray:
    """Random widths in [0, d_max] with some rows at 0 and some at d_max."""
    sizes = np.random.default_rng(seed).integers(0, d_max + 1, num_rows)
    sizes[:3] = [0, d_max, 1][:num_rows]
    return sizes


# ------------------------------------------------------------------------------------------ masked
def test_plain_embedding_unchanged():
    e = plain_embedding("user", 5, 3)
    assert isinstance(e, Embedding) and e.table().shape == (5, 3) and e.num_bytes() == 5 * 3 * 4


def test_prefix_mask():
    m = prefix_mask(torch.tensor([0, 2, 4]), 4)
    assert m.tolist() == [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]


def test_masked_lookup_keeps_prefix_and_zero_gradient_outside():
    sizes = [0, 1, 3, 5, 5, 2]
    m = MaskedEmbedding(6, 5, sizes)
    ids = torch.tensor([[0, 1, 2], [3, 2, 5]])
    out = m(ids)
    assert out.shape == (2, 3, 5)
    mask = m.mask(ids)
    assert torch.equal(out, m.weight[ids] * mask)
    assert (out[mask == 0] == 0).all()
    (out ** 2 + out).sum().backward()
    keep = m.mask()
    assert (m.weight.grad[keep == 0] == 0).all()     # exactly zero outside the mask
    assert (m.weight.grad[keep == 1][:3] != 0).all()  # rows 1 and 2 were looked up: non-zero inside
    assert m.num_parameters() == sum(sizes)
    assert m.num_bytes() == masked_bytes(6, 5)       # the full table is stored: masking saves nothing


def test_masked_full_width_equals_plain_table():
    torch.manual_seed(0)
    plain, masked = Embedding(7, 4), MaskedEmbedding(7, 4)
    masked.weight.data.copy_(plain.weight.data)
    ids = torch.tensor([0, 6, 3, 3])
    assert torch.equal(plain(ids), masked(ids)) and torch.equal(plain.table(), masked.table())


def test_set_sizes_changes_widths_without_rebuilding():
    m = MaskedEmbedding(4, 6, [6, 6, 6, 6])
    weight, sizes_buffer = m.weight, m.sizes
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    m.table().sum().backward()
    opt.step()
    m.set_sizes([1, 0, 6, 3])
    assert m.weight is weight and m.sizes is sizes_buffer   # same parameter and buffer, updated in place
    assert m.sizes.tolist() == [1, 0, 6, 3]
    assert (m.table()[1] == 0).all() and (m.table()[0, 1:] == 0).all()
    opt.zero_grad()
    m.table().sum().backward()
    assert m.weight.grad[1].abs().sum() == 0 and m.weight.grad[0, 1:].abs().sum() == 0
    opt.step()                                               # the optimizer still works on the same tensor
    with pytest.raises(ValueError, match="expected 4 widths"):
        m.set_sizes([1, 2])
    with pytest.raises(ValueError, match=r"\[0, 6\].*row 0 has 7"):
        m.set_sizes([7, 0, 0, 0])


def test_masked_state_dict_carries_sizes():
    a = MaskedEmbedding(5, 4, [0, 1, 2, 3, 4])
    b = MaskedEmbedding(5, 4)
    b.load_state_dict(a.state_dict())
    assert b.sizes.tolist() == [0, 1, 2, 3, 4] and torch.equal(a.table(), b.table())


def test_soft_weights_per_block_and_gates():
    m = MaskedEmbedding(6, 4, [4, 4, 2, 2, 1, 0])
    alpha = torch.nn.Parameter(torch.tensor([[1.0, 0.5, 0.25, 0.0], [0.5, 0.5, 0.5, 0.5]]))
    m.set_soft_weights(alpha, row_block=[0, 0, 0, 1, 1, 1])
    ids = torch.tensor([0, 3, 5])
    expected = m.weight[ids] * m.mask(ids) * alpha[torch.tensor([0, 1, 1])]
    assert torch.equal(m(ids), expected)
    assert torch.equal(m.table()[ids], expected)
    m(ids).sum().backward()
    assert alpha.grad is not None and alpha.grad[0, 0] != 0 and alpha.grad[1, 3] == 0  # masked dims: no signal
    assert "soft_weights" in dict(m.named_parameters())
    gates = torch.tensor([[1.0, 0.0, 1.0, 1.0]]).requires_grad_()
    out = m(ids, gates=gates)
    assert torch.equal(out, expected * gates)
    out.sum().backward()
    assert gates.grad is not None
    m.set_soft_weights(None)
    assert m.soft_weights is None and torch.equal(m(ids), m.weight[ids] * m.mask(ids))


def test_soft_weights_bad_shapes():
    m = MaskedEmbedding(3, 4)
    with pytest.raises(ValueError, match="one row per table row"):
        m.set_soft_weights(torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"\(blocks or rows, 4\)"):
        m.set_soft_weights(torch.ones(3, 5))
    with pytest.raises(ValueError, match="row_block values"):
        m.set_soft_weights(torch.ones(2, 4), row_block=[0, 1, 2])
    m.set_soft_weights(torch.ones(3, 4))                     # a plain tensor becomes a frozen parameter
    assert not m.soft_weights.requires_grad


# ------------------------------------------------------------------------------------------ compact
def assert_same_lookups(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor):
    assert torch.equal(a, b)                                       # every value equal, no tolerance
    keep = mask.bool()
    assert torch.equal(a[keep].view(torch.int32), b[keep].view(torch.int32))  # kept entries: same bits
    assert (a[~keep] == 0).all() and (b[~keep] == 0).all()


@settings(max_examples=40, deadline=None, database=None)
@given(st.integers(1, 12).flatmap(lambda d_max: st.tuples(
           st.just(d_max), st.lists(st.integers(0, d_max), min_size=1, max_size=30))),
       st.integers(0, 2**31 - 1))
def test_compact_lookups_equal_masked_lookups(d_max_and_sizes, seed):
    d_max, sizes = d_max_and_sizes
    torch.manual_seed(seed)
    masked = MaskedEmbedding(len(sizes), d_max, sizes)
    compact = CompactEmbedding.from_masked(masked)
    ids = torch.randint(0, len(sizes), (3, 7))
    assert_same_lookups(compact(ids), masked(ids), masked.mask(ids))
    assert_same_lookups(compact.table(), masked.table(), masked.mask())
    assert compact.sizes.tolist() == list(sizes)
    assert compact.num_parameters() == masked.num_parameters() == sum(sizes)
    assert compact.num_bytes() == compact_bytes(sizes, d_max)
    back = compact.to_masked()
    assert_same_lookups(back(ids), masked(ids), masked.mask(ids))
    assert back.sizes.tolist() == list(sizes)


def test_compact_stores_only_kept_values():
    masked = MaskedEmbedding(4, 3, [2, 0, 3, 1])
    compact = CompactEmbedding.from_masked(masked)
    w = masked.weight.detach()
    expected = torch.cat([w[0, :2], w[2, :3], w[3, :1]])
    assert torch.equal(compact.kept_values(), expected)
    assert compact.offsets.tolist() == [0, 2, 2, 5, 6]
    assert compact.num_bytes() == (6 + 3) * 4 + 5 * 8


def test_compact_folds_soft_weights():
    masked = MaskedEmbedding(3, 4, [4, 2, 1])
    masked.set_soft_weights(torch.tensor([[0.5, 2.0, 1.0, 3.0]]), row_block=[0, 0, 0])
    compact = CompactEmbedding.from_masked(masked)
    assert torch.equal(compact.table(), masked.table())


def test_compact_gradients_match_masked_gradients():
    torch.manual_seed(0)
    sizes = [3, 0, 5, 1, 5]
    masked = MaskedEmbedding(5, 5, sizes)
    compact = CompactEmbedding.from_masked(masked)
    ids = torch.tensor([0, 2, 2, 3, 4, 1])
    target = torch.randn(6, 5)
    ((masked(ids) - target) ** 2).sum().backward()
    ((compact(ids) - target) ** 2).sum().backward()
    keep = masked.mask().bool()
    grad = compact.values.grad
    assert torch.allclose(grad[: compact.num_parameters()], masked.weight.grad[keep])
    assert (grad[compact.num_parameters():] == 0).all()   # the padding never receives gradient


def test_compact_all_zero_widths_and_full_width():
    zero = CompactEmbedding([0, 0, 0], 4)
    out = zero(torch.tensor([0, 2]))
    assert out.shape == (2, 4) and (out == 0).all() and zero.num_parameters() == 0
    out.sum().backward()
    full = CompactEmbedding([4, 4], 4)
    assert full.table().shape == (2, 4) and (full.table() != 0).all()


def test_compact_rejects_bad_sizes_and_values():
    with pytest.raises(ValueError, match="row 1 has 9"):
        CompactEmbedding([1, 9], 8)
    with pytest.raises(ValueError, match="keep 3 values"):
        CompactEmbedding([1, 2], 8, values=torch.zeros(4))
    with pytest.raises(ValueError, match="non-empty"):
        CompactEmbedding([], 8)


def test_save_load_round_trip_is_atomic(tmp_path):
    compact = CompactEmbedding(mixed_sizes(50, 16), 16)
    path = tmp_path / "tables" / "item.pt"
    compact.save(path)
    assert sorted(os.listdir(path.parent)) == ["item.pt"]     # no temporary file left behind
    loaded = CompactEmbedding.load(path)
    assert torch.equal(loaded.offsets, compact.offsets)
    assert torch.equal(loaded.table(), compact.table()) and loaded.d_max == 16


def test_load_rejects_corrupt_and_mismatched_files(tmp_path):
    compact = CompactEmbedding([2, 0, 3], 4)
    good = tmp_path / "good.pt"
    compact.save(good)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ValueError, match="not a readable compact embedding file"):
        CompactEmbedding.load(garbage)
    blob = torch.load(good, weights_only=True)
    cases = {"format": ({**blob, "format": "something else"}, "expected format"),
             "offsets": ({**blob, "offsets": torch.tensor([0, 2, 2, 9])}, "offsets must run from 0"),
             "width": ({**blob, "d_max": 2}, r"\[0, d_max = 2\]"),
             "dtype": ({**blob, "offsets": blob["offsets"].int()}, "int64 vector"),
             "values": ({**blob, "values": torch.zeros(5, dtype=torch.int64)}, "floating-point")}
    for name, (bad, match) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(bad, path)
        with pytest.raises(ValueError, match=match):
            CompactEmbedding.load(path)
    with pytest.raises(FileNotFoundError):
        CompactEmbedding.load(tmp_path / "missing.pt")


@pytest.mark.parametrize("round_to", [1, 4])
def test_export_buckets_matches_compact(round_to):
    d_max = 10
    sizes = mixed_sizes(40, d_max, seed=3)
    compact = CompactEmbedding(sizes, d_max)
    buckets = compact.export_buckets(round_to=round_to)
    ids = torch.randint(0, 40, (5, 9))
    assert torch.equal(buckets.lookup(ids), compact(ids))
    for width, table in buckets.tables.items():
        assert table.shape[1] == width and (width % round_to == 0 or width == d_max)
        members = (buckets.bucket == width).nonzero().squeeze(1)
        assert torch.equal(buckets.position[members], torch.arange(len(members)))
    assert buckets.num_bytes() == buckets_bytes(sizes, d_max, round_to)
    if round_to == 4:
        assert set(buckets.tables) <= {0, 4, 8, 10}


# ------------------------------------------------------------------------------------------ factories
def test_factories_build_the_right_tables():
    sizes = {"user": [1, 2, 3], "item": [0, 4]}
    masked = masked_factory(sizes, d_max=4)
    assert isinstance(masked("user", 3, 4), MaskedEmbedding)
    assert masked("item", 2, 4).sizes.tolist() == [0, 4]
    compact = compact_factory(sizes, d_max=4)("user", 3, 4)
    assert isinstance(compact, CompactEmbedding) and compact.sizes.tolist() == [1, 2, 3]
    assert masked_factory()("feature", 5, 8).num_parameters() == 40       # None: full width
    torch.manual_seed(0)
    assert masked_factory(init="normal")("user", 400, 64).weight.std().item() == pytest.approx(0.1, rel=0.05)
    with pytest.raises(ValueError, match="unknown init"):
        masked_factory(init="uniform")
    assert compact_factory()("feature", 5, 8).num_parameters() == 40


@pytest.mark.parametrize("factory", [masked_factory, compact_factory])
def test_factories_raise_clear_errors(factory):
    make = factory({"user": [1, 2, 3]}, d_max=4)
    with pytest.raises(ValueError, match=r"role 'user' \(5 rows\).*expected 5 widths"):
        make("user", 5, 4)
    with pytest.raises(ValueError, match="no sizes for embedding role 'item'"):
        make("item", 3, 4)
    with pytest.raises(ValueError, match="dim = 4"):
        make("user", 3, 8)
    with pytest.raises(ValueError, match=r"role 'user'.*row 0 has 9"):
        factory({"user": [9, 1, 1]}, d_max=4)("user", 3, 4)


# ------------------------------------------------------------------------------------------ backbones
def sizes_for(split, name: str, d_max: int) -> dict:
    if name in CTR_BACKBONES:
        return {"feature": mixed_sizes(split.data.n_features, d_max)}
    users, items = mixed_sizes(split.n_users, d_max, 1), mixed_sizes(split.n_items, d_max, 2)
    return {"user": users, "item": items, "user_mlp": users[::-1].copy(), "item_mlp": items[::-1].copy()}


@pytest.mark.parametrize("kind", ["masked", "compact"])
@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_trains_with_mixed_widths(name, kind, topk_split, ctr_split):
    d_max = 8
    split = ctr_split if name in CTR_BACKBONES else topk_split
    sizes = sizes_for(split, name, d_max)
    factory = (masked_factory if kind == "masked" else compact_factory)(sizes, d_max)
    torch.manual_seed(0)
    model = build_backbone(name, split, d_max, embedding=factory)
    tables = model.embedding_tables()
    assert tables and all(t.sizes.tolist() == list(sizes[role]) for role, t in tables.items())
    if name in CTR_BACKBONES:
        x = torch.from_numpy(split.data.X[split.train[:32]])
        loss = model.loss(x, torch.from_numpy(split.data.y[split.train[:32]]))
    else:
        u, i = split.train_pairs()
        users, pos = torch.from_numpy(u[:32]), torch.from_numpy(i[:32])
        loss = model.loss(users, pos, torch.randint(0, split.n_items, (32,)))
    loss.backward()
    assert torch.isfinite(loss)
    for role, t in tables.items():
        if kind == "masked":
            assert (t.weight.grad[t.mask() == 0] == 0).all()
        else:
            assert t.values.grad is not None and (t.values.grad[t.num_parameters():] == 0).all()
    result = train(model, split, epochs=2, batch_size=64, lr=1e-2, progress=False, test=True)
    assert np.isfinite(result.history[-1]["loss"]) and result.test


@pytest.mark.parametrize("name", ["mf", "neumf", "lightgcn", "ngcf", "deepfm"])
def test_compact_tables_keep_every_score(name, topk_split, ctr_split):
    split = ctr_split if name in CTR_BACKBONES else topk_split
    torch.manual_seed(0)
    model = build_backbone(name, split, 8, embedding=masked_factory(sizes_for(split, name, 8), 8)).eval()
    with torch.no_grad():
        if name in CTR_BACKBONES:
            x = torch.from_numpy(split.data.X[:50])
            before = model.score(x)
            compact_tables(model)
            after = model.score(x)
        else:
            users = torch.arange(split.n_users)
            before = model.scorer()(users)
            compact_tables(model)
            after = model.scorer()(users)
    assert all(isinstance(t, CompactEmbedding) for t in model.embedding_tables().values())
    assert torch.equal(before, after)


# --- issue 14 (cost target): faster lookups, bit for bit the old ones ----------------------------------

@pytest.mark.parametrize("rows, dim, shape", [(943, 64, (4096,)), (50, 16, (2048, 8)), (7, 3, (5, 4, 3))])
def test_plain_lookup_equals_advanced_indexing_with_gradients(rows, dim, shape):
    """Embedding.forward uses index_select: rows and gradients (many repeated ids, values of very different
    magnitudes, so that any change of the summation order would show) equal weight[ids] exactly."""
    torch.manual_seed(0)
    table = Embedding(rows, dim)
    with torch.no_grad():
        table.weight.mul_(torch.logspace(-3, 3, rows)[:, None])
    ids = torch.randint(0, rows, shape)
    grad = torch.randn(*shape, dim) * torch.logspace(-4, 4, shape[0]).view(-1, *[1] * len(shape))
    out = table(ids)
    out.backward(grad)
    fast = table.weight.grad.clone()
    table.weight.grad = None
    ref = table.weight[ids]
    ref.backward(grad)
    assert torch.equal(out, ref) and torch.equal(fast, table.weight.grad)


def test_element_mask_cache_follows_every_change():
    """The cached 0/1 mask of ElementMaskedEmbedding always equals keep converted afresh."""
    from recsize.embedding import ElementMaskedEmbedding
    torch.manual_seed(0)
    keep = torch.rand(30, 8) < 0.4
    table = ElementMaskedEmbedding(30, 8, keep)
    ids = torch.tensor([[0, 3], [29, 3]])

    def fresh(t, i=None):
        return (t.keep if i is None else t.keep[i]).to(t.weight.dtype)
    assert torch.equal(table.mask(), fresh(table)) and torch.equal(table.mask(ids), fresh(table, ids))
    assert table.mask() is table.mask()  # reused while nothing changes
    table.set_mask(~keep)
    assert torch.equal(table.mask(), fresh(table)) and torch.equal(table(ids), table.weight[ids] * fresh(table, ids))
    table.set_sizes(np.arange(30) % 9)
    assert torch.equal(table.mask(), fresh(table))
    other = ElementMaskedEmbedding(30, 8, torch.rand(30, 8) < 0.5)
    table.load_state_dict(other.state_dict())
    assert torch.equal(table.mask(), fresh(other))
    with torch.no_grad():
        table.keep[0] = True  # any in-place write
    assert torch.equal(table.mask(), fresh(table))
    table.double()
    assert table.mask().dtype == torch.float64 and torch.equal(table.mask(), fresh(table))
    import copy
    import pickle
    clone = copy.deepcopy(table)
    assert "_mask_cache" not in pickle.loads(pickle.dumps(table)).__dict__
    assert torch.equal(clone.mask(), fresh(table))
