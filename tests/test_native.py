"""The one-pass native compact lookup (Chapter 4): equal to the PyTorch path, bit for bit, and safe."""
import os
import shutil

import numpy as np
import pytest
import torch

from recsize import native
from recsize.embedding import CompactEmbedding, MaskedEmbedding, _window_rows

HAS_CC = shutil.which(native._compiler()[0]) is not None


def test_ci_has_a_c_compiler():
    """CI installs one (.ci/run sets RECSIZE_REQUIRE_CC): the native tests below must run there, not skip."""
    if os.environ.get("RECSIZE_REQUIRE_CC") == "1":
        assert HAS_CC, f"no C compiler {native._compiler()[0]!r} although RECSIZE_REQUIRE_CC=1"


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty native cache and a forgotten compiled function, restored afterwards."""
    monkeypatch.setenv("RECSIZE_DATA", str(tmp_path))
    native._function.cache_clear()
    yield tmp_path
    native._function.cache_clear()


def _table(seed=0, rows=500, d=16):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, d + 1, rows)
    sizes[:3] = [0, d, 1]
    return CompactEmbedding(sizes, d), torch.from_numpy(rng.integers(0, rows, (37, 5)))


def _pytorch_rows(table, ids):
    flat = ids.reshape(-1)
    start = table.offsets[flat]
    return _window_rows(table.values.detach(), start, table.offsets[flat + 1] - start, table.dim).view(*ids.shape, -1)


@pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")
def test_native_lookup_is_bit_exact_with_and_without_grad(fresh):
    assert native.available()
    table, ids = _table()
    with torch.no_grad():
        assert torch.equal(table(ids), _pytorch_rows(table, ids))
    rows = table(ids)
    assert rows.requires_grad and torch.equal(rows.detach(), _pytorch_rows(table, ids))
    assert list(fresh.joinpath("native").glob("*.so")) and not list(fresh.joinpath("native").glob("tmp*"))


@pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")
def test_native_and_pytorch_paths_give_equal_gradients(fresh, monkeypatch):
    table, ids = _table(1)
    weights = torch.randn(*ids.shape, table.dim)
    (table(ids) * weights).sum().backward()
    native_grad = table.values.grad.clone()
    table.values.grad = None
    monkeypatch.setenv("RECSIZE_NATIVE", "0")
    native._function.cache_clear()
    assert not native.available()
    (table(ids) * weights).sum().backward()
    assert torch.equal(native_grad, table.values.grad)
    # and both equal the masked table's gradient on the kept entries
    masked = table.to_masked()
    (masked(ids) * weights).sum().backward()
    keep = masked.mask().bool()
    assert torch.allclose(masked.weight.grad[keep], native_grad[: table.num_parameters()], atol=1e-6)


@pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")
@pytest.mark.parametrize("bad", [500, -1, 10**9])
def test_native_lookup_rejects_ids_outside_the_table(fresh, bad):
    table, _ = _table()
    with torch.no_grad(), pytest.raises(IndexError, match=f"id {bad} is out of range .* 500 rows"):
        table(torch.tensor([1, bad]))


def test_no_compiler_warns_once_and_falls_back(fresh, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    table, ids = _table(2)
    with pytest.warns(RuntimeWarning, match="could not compile .* RECSIZE_NATIVE=0"):
        assert not native.available()
    with torch.no_grad():
        assert torch.equal(table(ids), _pytorch_rows(table, ids))
    assert native.compact_rows(table.values, table.offsets, ids, table.dim) is None


def test_native_path_declines_what_it_cannot_do(fresh):
    table, ids = _table(3)
    assert native.compact_rows(table.values.double(), table.offsets, ids, table.dim) is None
    masked = MaskedEmbedding(10, 8, np.arange(10) % 9)
    compact = CompactEmbedding.from_masked(masked)
    with torch.no_grad():
        assert torch.equal(compact(torch.arange(10)), masked(torch.arange(10)))


def _csr(seed=0, rows=400, d=16):
    from recsize.embedding import CSREmbedding
    rng = np.random.default_rng(seed)
    keep = torch.from_numpy(rng.random((rows, d)) < rng.random((rows, 1)))
    keep[0], keep[1] = False, True                       # an empty row and a full one
    return CSREmbedding.from_dense(torch.randn(rows, d), keep), torch.from_numpy(rng.integers(0, rows, (29, 3)))


@pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")
@pytest.mark.parametrize("d", [16, 300, 40000])             # uint8, int16 and int32 column indices
def test_native_csr_lookup_is_bit_exact(fresh, d):
    table, ids = _csr(d=d, rows=60 if d > 300 else 400)
    assert table.columns.dtype == {16: torch.uint8, 300: torch.int16, 40000: torch.int32}[d]
    with torch.no_grad():
        fast = table(ids)
        with native.disabled():
            slow = table(ids)
    assert torch.equal(fast, slow) and fast.shape == (*ids.shape, d)
    assert native.csr_rows(table.values.detach(), table.offsets, table.columns, ids.reshape(-1), d) is not None
    rows = table(ids)                                     # training: the differentiable PyTorch path
    assert rows.requires_grad and torch.equal(rows.detach(), slow)


@pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")
@pytest.mark.parametrize("bad", [400, -1])
def test_native_csr_lookup_rejects_ids_outside_the_table(fresh, bad):
    table, _ = _csr()
    with torch.no_grad(), pytest.raises(IndexError, match=f"id {bad} is out of range .* 400 rows"):
        table(torch.tensor([3, bad]))


def test_native_csr_declines_what_it_cannot_do(fresh):
    table, ids = _csr(1)
    flat = ids.reshape(-1)
    assert native.csr_rows(table.values.detach().double(), table.offsets, table.columns, flat, 16) is None
    assert native.csr_rows(table.values.detach(), table.offsets, table.columns.long(), flat, 16) is None
