"""Element-wise masks (Chapter 4): the element-masked training table, the CSR storage form, their bytes, the
memory budget in kept entries, save/load and bad files."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recsize.backbones import build_backbone
from recsize.budget import (column_index_bytes, compact_bytes, csr_bytes, csr_int32_bytes, dense_bytes,
                            element_masked_bytes, entries_for_bytes, masked_bytes)
from recsize.embedding import (CompactEmbedding, CSREmbedding, ElementMaskedEmbedding, MaskedEmbedding,
                               compact_tables)
from recsize.train import train


def random_mask(num_rows: int, d_max: int, seed: int = 0, density: float = 0.3) -> torch.Tensor:
    """A random element mask with an empty row, a full row and a one-entry row among the others."""
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(num_rows, d_max, generator=g) < density
    keep[0], keep[1 % num_rows] = False, True
    if num_rows > 2:
        keep[2] = False
        keep[2, d_max - 1] = True
    return keep


def assert_bit_exact(rows: torch.Tensor, expected: torch.Tensor, keep: torch.Tensor):
    """Kept entries equal bit for bit, every other entry zero."""
    assert rows.shape == expected.shape and rows.dtype == expected.dtype
    assert torch.equal(rows[keep].view(torch.int32), expected[keep].view(torch.int32))
    assert (rows[~keep] == 0).all() and torch.equal(rows, expected)


# ------------------------------------------------------------------------------------------ lookups
@pytest.mark.parametrize("d_max, dtype", [(8, torch.uint8), (64, torch.uint8), (256, torch.uint8),
                                          (257, torch.int16), (300, torch.int16)])
@pytest.mark.parametrize("density", [0.05, 0.5, 0.95])
def test_lookups_equal_the_masked_dense_table(d_max, dtype, density):
    torch.manual_seed(1)
    table, keep = torch.randn(40, d_max), random_mask(40, d_max, seed=d_max, density=density)
    csr = CSREmbedding.from_dense(table, keep)
    assert csr.columns.dtype == dtype and csr.offsets.dtype == torch.int64
    ids = torch.randint(0, 40, (5, 11))
    ids[0, :3] = torch.tensor([0, 1, 2])                     # the empty, full and one-entry rows
    assert_bit_exact(csr(ids), (table * keep)[ids], keep[ids])
    assert_bit_exact(csr.table(), table * keep, keep)
    assert torch.equal(csr.mask().bool(), keep) and torch.equal(csr.mask(ids).bool(), keep[ids])
    assert csr.sizes.tolist() == keep.sum(1).tolist() and csr.num_parameters() == int(keep.sum())
    assert csr.num_bytes() == csr_bytes(keep.sum(1), d_max)


@settings(max_examples=40, deadline=None, database=None)
@given(st.integers(1, 30), st.integers(1, 12), st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_any_mask_round_trips(num_rows, d_max, density, seed):
    g = torch.Generator().manual_seed(seed)
    table, keep = torch.randn(num_rows, d_max, generator=g), torch.rand(num_rows, d_max, generator=g) < density
    csr = CSREmbedding.from_dense(table, keep)
    ids = torch.randint(0, num_rows, (7,), generator=g)
    assert_bit_exact(csr(ids), (table * keep)[ids], keep[ids])
    masked = csr.to_masked()
    assert isinstance(masked, ElementMaskedEmbedding) and torch.equal(masked.keep, keep)
    assert torch.equal(masked(ids), csr(ids)) and masked.num_parameters() == csr.num_parameters()


def test_lookup_shapes_empty_batches_and_bad_ids():
    csr = CSREmbedding.from_dense(torch.randn(4, 6), random_mask(4, 6))
    assert csr(torch.zeros(0, dtype=torch.int64)).shape == (0, 6)
    assert csr(torch.tensor([[3]])).shape == (1, 1, 6)
    assert (CSREmbedding.from_mask(torch.zeros(3, 5, dtype=torch.bool))(torch.tensor([0, 2])) == 0).all()
    with pytest.raises((IndexError, RuntimeError)):
        csr(torch.tensor([4]))


def test_from_masked_keeps_prefixes_and_folds_soft_weights():
    masked = MaskedEmbedding(5, 4, [0, 4, 2, 1, 3])
    masked.set_soft_weights(torch.tensor([[0.5, 2.0, 1.0, 3.0]]), row_block=[0] * 5)
    csr = CSREmbedding.from_masked(masked)
    ids = torch.tensor([1, 4, 0, 2])
    assert torch.equal(csr(ids), masked(ids)) and csr.sizes.tolist() == [0, 4, 2, 1, 3]


# ------------------------------------------------------------------------------------------ gradients
def test_gradients_equal_the_masked_dense_gradients():
    torch.manual_seed(0)
    keep = random_mask(30, 16, density=0.4)
    masked = ElementMaskedEmbedding(30, 16, keep)
    csr = CSREmbedding.from_masked(masked)
    ids = torch.cat([torch.arange(30), torch.randint(0, 30, (50,))])   # every row, many repeated
    target = torch.randn(len(ids), 16)
    ((masked(ids) - target) ** 2).sum().backward()
    ((csr(ids) - target) ** 2).sum().backward()
    assert (masked.weight.grad[~keep] == 0).all()                    # exactly zero outside the mask
    assert torch.allclose(csr.values.grad, masked.weight.grad[keep], rtol=1e-6, atol=1e-7)
    assert csr.values.grad.shape == (int(keep.sum()),)


def test_fine_tuning_with_the_mask_fixed_trains_the_same_entries():
    torch.manual_seed(0)
    keep = random_mask(20, 8, density=0.5)
    masked = ElementMaskedEmbedding(20, 8, keep)
    csr = CSREmbedding.from_masked(masked)
    opt_m = torch.optim.SGD(masked.parameters(), lr=0.1)
    opt_c = torch.optim.SGD(csr.parameters(), lr=0.1)
    before = masked.weight.detach().clone()
    for step in range(3):
        ids = torch.randint(0, 20, (16,), generator=torch.Generator().manual_seed(step))
        for table, opt in ((masked, opt_m), (csr, opt_c)):
            opt.zero_grad()
            (table(ids).sum(1) ** 2).mean().backward()
            opt.step()
    assert torch.equal(masked.weight.detach()[~keep], before[~keep])   # pruned entries never move
    assert torch.allclose(csr.table(), masked.table(), atol=1e-6)
    assert (csr.table()[~keep] == 0).all()


def test_lookups_and_gradients_are_deterministic():
    def run():
        torch.manual_seed(3)
        csr = CSREmbedding.from_mask(random_mask(50, 64, density=0.2))
        ids = torch.randint(0, 50, (200,))
        out = csr(ids)
        (out * torch.randn_like(out)).sum().backward()
        return out.detach(), csr.values.grad
    (a, ga), (b, gb) = run(), run()
    assert torch.equal(a, b) and torch.equal(ga, gb)


# ------------------------------------------------------------------------------------------ element-masked table
def test_element_masked_table_is_a_masked_table_with_any_mask():
    keep = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]], dtype=torch.bool)
    m = ElementMaskedEmbedding(3, 4, keep)
    assert isinstance(m, MaskedEmbedding) and m.sizes.tolist() == [2, 0, 3] and m.num_parameters() == 5
    ids = torch.tensor([2, 0, 0])
    assert torch.equal(m(ids), m.weight[ids] * keep[ids]) and torch.equal(m.mask().bool(), keep)
    m(ids).pow(2).sum().backward()
    assert (m.weight.grad[~keep] == 0).all() and (m.weight.grad[keep] != 0).all()
    assert m.num_bytes() == element_masked_bytes(3, 4) == masked_bytes(3, 4) + 12
    m.set_mask(np.ones((3, 4), dtype=np.int64))                       # 0/1 numbers are accepted
    assert m.sizes.tolist() == [4, 4, 4]
    m.set_sizes([1, 0, 3])                                            # back to a prefix mask
    assert m.keep.tolist() == [[True, False, False, False], [False] * 4, [True, True, True, False]]
    copy = ElementMaskedEmbedding(3, 4)
    copy.load_state_dict(m.state_dict())
    assert torch.equal(copy.keep, m.keep) and torch.equal(copy.table(), m.table())
    with pytest.raises(ValueError, match=r"\(num_rows, d_max\) = \(3, 4\)"):
        m.set_mask(torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="booleans"):
        m.set_mask(torch.full((3, 4), 0.5))


def test_compact_form_refuses_element_masks_and_compact_tables_picks_csr():
    keep = random_mask(6, 4)
    with pytest.raises(ValueError, match="not a prefix.*CSREmbedding"):
        CompactEmbedding.from_masked(ElementMaskedEmbedding(6, 4, keep))
    prefix = ElementMaskedEmbedding(6, 4)
    prefix.set_sizes([0, 1, 2, 3, 4, 4])
    assert torch.equal(CompactEmbedding.from_masked(prefix).table(), prefix.table())   # a prefix is fine


@pytest.mark.parametrize("name", ["mf", "lightgcn"])
def test_backbones_train_element_masked_then_serve_csr(name, topk_split):
    def factory(role, num_rows, dim):
        return ElementMaskedEmbedding(num_rows, dim, random_mask(num_rows, dim, seed=num_rows, density=0.3))
    torch.manual_seed(0)
    model = build_backbone(name, topk_split, 8, embedding=factory)
    train(model, topk_split, epochs=1, batch_size=64, lr=1e-2, progress=False)
    users = torch.arange(topk_split.n_users)
    with torch.no_grad():
        before = model.eval().scorer()(users)
        compact_tables(model)
        after = model.scorer()(users)
    assert all(isinstance(t, CSREmbedding) for t in model.embedding_tables().values())
    assert torch.equal(before, after)


# ------------------------------------------------------------------------------------------ bytes
def test_bytes_by_hand():
    keep = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)   # 6 kept entries
    csr = CSREmbedding.from_mask(keep)
    assert csr.num_bytes() == 6 * 4 + 6 * 1 + 4 * 8 == 62             # values + uint8 columns + int64 offsets
    assert csr_bytes([2, 0, 4], 4) == 62
    assert csr_int32_bytes([2, 0, 4]) == 6 * (4 + 4) + 3 * 4 == 60      # the VLDB'24 benchmark's accounting
    assert element_masked_bytes(3, 4) == 3 * 4 * 4 + 3 * 8 + 3 * 4 == 84
    wide = CSREmbedding.from_mask(random_mask(5, 300))                # int16 columns beyond d_max = 256
    kept = wide.num_parameters()
    assert wide.num_bytes() == kept * (4 + 2) + 6 * 8 == csr_bytes(wide.sizes, 300)


@pytest.mark.parametrize("d_max, width", [(1, 1), (8, 1), (256, 1), (257, 2), (32768, 2), (32769, 4)])
def test_column_index_bytes(d_max, width):
    assert column_index_bytes(d_max) == width


def test_half_the_dense_memory_keeps_22_percent_of_the_entries():
    n, d = 1_000_000, 16
    half = dense_bytes(n, d) / 2                                       # 32 B per row
    kept = entries_for_bytes(half, n, d, "csr_int32")
    assert kept / (n * d) == 7 / 32 == 0.21875                          # (32 - 4) B / 8 B = 3.5 entries per row
    assert csr_int32_bytes([4, 3] * (n // 2)) == half                   # 3.5 entries per row fill it exactly
    assert entries_for_bytes(half, n, d, "csr") / (n * d) == pytest.approx(0.30, abs=1e-5)     # 1-byte indices
    assert entries_for_bytes(half, n, d, "compact") / (n * d) == pytest.approx(0.375, abs=1e-5)  # no index


@pytest.mark.parametrize("form", ["compact", "csr", "csr_int32"])
def test_entries_for_bytes_is_the_most_that_fits(form):
    n, d = 100, 16
    bytes_of = {"compact": lambda s: compact_bytes(s, d), "csr": lambda s: csr_bytes(s, d),
                "csr_int32": csr_int32_bytes}[form]
    for budget in (1000, 2345.5, 5000, 6400):
        k = entries_for_bytes(budget, n, d, form)
        total = [k] + [0] * (n - 1)                                     # only the total matters
        assert bytes_of(total) <= budget < bytes_of([k + 1] + [0] * (n - 1))
    assert entries_for_bytes(10**9, n, d, form) == n * d                # never more than every entry
    with pytest.raises(ValueError, match="cannot hold even"):
        entries_for_bytes(100, n, d, form)
    with pytest.raises(ValueError, match="unknown storage form"):
        entries_for_bytes(10**6, n, d, "dense")


# ------------------------------------------------------------------------------------------ save / load
@pytest.mark.parametrize("d_max", [8, 300])
def test_save_load_round_trip_is_atomic(tmp_path, d_max):
    csr = CSREmbedding.from_mask(random_mask(40, d_max, seed=5))
    path = tmp_path / "tables" / "item.pt"
    csr.save(path)
    assert sorted(os.listdir(path.parent)) == ["item.pt"]              # no temporary file left behind
    loaded = CSREmbedding.load(path)
    for name in ("offsets", "columns", "values"):
        assert torch.equal(getattr(loaded, name), getattr(csr, name))
    assert loaded.columns.dtype == csr.columns.dtype and loaded.d_max == d_max
    assert torch.equal(loaded.table(), csr.table())


def corrupt_cases(blob: dict) -> dict:
    offsets, columns, values = blob["offsets"], blob["columns"], blob["values"]
    return {
        "foreign": ({**blob, "format": "recsize.CompactEmbedding/1"}, "not a CSR embedding file"),
        "d_max": ({**blob, "d_max": 0}, "d_max must be a positive integer"),
        "offsets dtype": ({**blob, "offsets": offsets.int()}, "int64 vector"),
        "offsets end": ({**blob, "offsets": torch.tensor([0, 2, 2, 9])}, "number of column indices"),
        "offsets order": ({**blob, "offsets": torch.tensor([0, 3, 2, 6])}, r"must lie in \[0, d_max = 4\]"),
        "count": ({**blob, "values": values[:-1]}, r"number of values \(5\)"),
        "values dtype": ({**blob, "values": torch.zeros(6, dtype=torch.int64)}, "floating-point"),
        "columns dtype": ({**blob, "columns": columns.float()}, "must be integers"),
        "range": ({**blob, "columns": torch.tensor([0, 2, 0, 1, 2, 4], dtype=torch.uint8)},
                  r"column index 4 \(entry 5\) is out of range \[0, d_max = 4\)"),
        "order": ({**blob, "columns": torch.tensor([2, 0, 0, 1, 2, 3], dtype=torch.uint8)},
                  "row 0 do not strictly increase"),
        "repeat": ({**blob, "columns": torch.tensor([0, 2, 0, 1, 1, 3], dtype=torch.uint8)},
                   "row 2 do not strictly increase"),
    }


def test_load_rejects_corrupt_files(tmp_path):
    keep = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    good = tmp_path / "good.pt"
    CSREmbedding.from_mask(keep).save(good)
    blob = torch.load(good, weights_only=True)
    assert blob["columns"].tolist() == [0, 2, 0, 1, 2, 3] and blob["offsets"].tolist() == [0, 2, 2, 6]
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ValueError, match=r"truncated\.pt is not a readable CSR embedding file"):
        CSREmbedding.load(truncated)
    compact = tmp_path / "compact.pt"
    CompactEmbedding([1, 2, 3], 4).save(compact)
    with pytest.raises(ValueError, match=r"compact\.pt is not a CSR embedding file"):
        CSREmbedding.load(compact)
    for name, (bad, match) in corrupt_cases(blob).items():
        path = tmp_path / f"{name.replace(' ', '_')}.pt"
        torch.save(bad, path)
        with pytest.raises(ValueError, match=match) as e:
            CSREmbedding.load(path)
        assert str(path) in str(e.value), name
    with pytest.raises(FileNotFoundError):
        CSREmbedding.load(tmp_path / "missing.pt")


def test_constructor_rejects_inconsistent_parts():
    with pytest.raises(ValueError, match="inconsistent CSR table: column indices of row 1"):
        CSREmbedding([0, 1, 3], torch.tensor([0, 3, 3]), 4)
    with pytest.raises(ValueError, match=r"number of values \(2\)"):
        CSREmbedding([0, 1, 3], torch.tensor([0, 1, 3]), 4, values=torch.zeros(2))
    with pytest.raises(ValueError, match="non-empty"):
        CSREmbedding.from_mask(torch.zeros(0, 4, dtype=torch.bool))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_csr_on_cuda_equals_cpu():
    torch.manual_seed(0)
    table, keep = torch.randn(50, 300), random_mask(50, 300)
    cpu = CSREmbedding.from_dense(table, keep)
    gpu = CSREmbedding.from_dense(table.cuda(), keep)
    assert gpu.values.device.type == "cuda" and gpu.columns.device.type == "cuda"
    ids = torch.randint(0, 50, (64,))
    assert torch.equal(gpu(ids.cuda()).cpu(), cpu(ids))
    gpu(ids.cuda()).sum().backward()
    cpu(ids).sum().backward()
    assert torch.allclose(gpu.values.grad.cpu(), cpu.values.grad)
    assert torch.equal(gpu.mask().cpu().bool(), keep) and torch.equal(gpu.to_masked().keep.cpu(), keep)
