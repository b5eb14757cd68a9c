"""The one-pass native compact lookup (Chapter 4): equal to the PyTorch path, bit for bit, and safe."""
import os
import shutil

import numpy as np
import pytest
import torch

from recsize import native
from recsize.embedding import CompactEmbedding, MaskedEmbedding
from recsize.storage import _window_rows

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
    folder = fresh / "native"
    assert list(folder.glob("*.so")) and not list(folder.glob(".build-*")) and not list(folder.glob("tmp*"))


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
    message = _one_warning()
    assert "could not compile" in message and "install a C compiler" in message and "RECSIZE_NATIVE=0" in message
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



# ---- only a library recsize built and recorded is loaded, from a folder only the user can write ----

PLANTED = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen(MARKER, "w");
    if (f) { fputs("planted code ran\n", f); fclose(f); }
}
"""


def _one_warning() -> str:
    """Ask for the native library in a fresh process state; the one RuntimeWarning it gave, one line."""
    import warnings
    native._function.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not native.available()
        native.available()                                   # asked again: no second warning
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1, messages
    assert "\n" not in messages[0] and messages[0].startswith("recsize: ")
    return messages[0]


def _plant(folder, marker, record=False):
    """A library under recsize's expected name whose constructor writes ``marker`` when it is loaded;
    with ``record``, a record that matches it too (forged)."""
    import hashlib
    import subprocess
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    library, recorded = native._paths(folder)
    source = folder / "planted.c"
    source.write_text(PLANTED)
    subprocess.run([*native._compiler(), "-shared", "-fPIC", f'-DMARKER="{marker}"', str(source), "-o",
                    str(library)], check=True)
    source.unlink()
    if record:
        recorded.write_text(f"{hashlib.sha256(library.read_bytes()).hexdigest()}  {library.name}\n")
    return library, recorded


def _recorded_matches(folder) -> bool:
    import hashlib
    library, record = native._paths(folder)
    return record.read_text().split()[0] == hashlib.sha256(library.read_bytes()).hexdigest()


@pytest.fixture
def compiles(monkeypatch):
    """How many times the native source was compiled."""
    calls = []
    real = native._compile

    def counted(tmp):
        calls.append(tmp)
        return real(tmp)
    monkeypatch.setattr(native, "_compile", counted)
    return calls


@pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")
def test_normal_path_compiles_once_records_and_loads(fresh, compiles):
    assert native.available() and len(compiles) == 1
    folder = fresh / "native"
    assert _recorded_matches(folder)
    assert folder.stat().st_mode & 0o777 == 0o700
    library, _ = native._paths(folder)
    before = library.stat().st_ino
    native._function.cache_clear()                          # a new process: verified, not rebuilt
    assert native.available() and len(compiles) == 1 and library.stat().st_ino == before
    table, ids = _table(4)
    with torch.no_grad():
        assert torch.equal(table(ids), _pytorch_rows(table, ids))


@pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")
def test_planted_library_is_never_loaded(fresh, compiles):
    marker = fresh / "marker"
    library, _ = _plant(fresh / "native", marker)             # recsize's name, no record
    assert native.available()                                 # rebuilt over it, then loaded
    assert not marker.exists() and len(compiles) == 1 and _recorded_matches(fresh / "native")
    table, ids = _table(5)
    with torch.no_grad():
        assert torch.equal(table(ids), _pytorch_rows(table, ids))


@pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")
@pytest.mark.parametrize("mode,who", [(0o770, "its group"), (0o707, "others"), (0o777, "its group and others")],
                         ids=["group", "others", "both"])
def test_folder_writable_by_others_is_refused_with_one_warning(fresh, compiles, mode, who):
    marker = fresh / "marker"
    folder = fresh / "native"
    _plant(folder, marker, record=True)                       # even with a record that matches
    folder.chmod(mode)
    message = _one_warning()
    assert f"{folder} is writable by {who}" in message and f"chmod go-w {folder}" in message
    assert not marker.exists() and not compiles
    table, ids = _table(6)
    with torch.no_grad():                                     # the PyTorch path, same rows
        assert torch.equal(table(ids), _pytorch_rows(table, ids))


@pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")
def test_group_writable_library_in_a_private_folder_is_rebuilt(fresh, compiles):
    marker = fresh / "marker"
    library, _ = _plant(fresh / "native", marker, record=True)
    library.chmod(0o775)
    assert native.available() and len(compiles) == 1 and not marker.exists()
    assert library.stat().st_mode & 0o777 == 0o755 and _recorded_matches(fresh / "native")


@pytest.mark.skipif(not HAS_CC or os.geteuid() != 0, reason="needs a C compiler and root (to chown)")
def test_folder_owned_by_another_user_is_refused(fresh, compiles):
    marker = fresh / "marker"
    folder = fresh / "native"
    _plant(folder, marker, record=True)
    os.chown(folder, 65534, 65534)
    message = _one_warning()
    assert f"{folder} is owned by another user (uid 65534)" in message and "RECSIZE_DATA" in message
    assert not marker.exists() and not compiles


@pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")
def test_recorded_library_with_a_changed_byte_is_rebuilt(fresh, compiles):
    import hashlib
    assert native.available()
    library, _ = native._paths(fresh / "native")
    built = library.read_bytes()
    changed = bytearray(built)
    changed[len(changed) // 2] ^= 0xFF
    changed_copy = library.with_name("changed")              # a new file: this process has the old one mapped
    changed_copy.write_bytes(bytes(changed))
    os.replace(changed_copy, library)
    native._function.cache_clear()
    assert native.available() and len(compiles) == 2
    assert library.read_bytes() != bytes(changed) and _recorded_matches(fresh / "native")
    assert hashlib.sha256(library.read_bytes()).digest() == hashlib.sha256(built).digest()  # same bytes
    table, ids = _csr(2)
    with torch.no_grad():
        fast = table(ids)
        with native.disabled():
            assert torch.equal(fast, table(ids))


def test_read_only_cache_names_the_cause_not_a_compiler(fresh, monkeypatch):
    import errno
    import pathlib

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    message = _one_warning()
    assert f"cannot create the native library's folder {fresh / 'native'} (Read-only file system)" in message
    assert "point RECSIZE_DATA at a folder you can write" in message
    assert "compiler" not in message and "gcc" not in message


@pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")
def test_read_only_cache_with_a_recorded_library_loads_it(fresh, compiles, monkeypatch):
    assert native.available()
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    native._function.cache_clear()
    assert native.available() and len(compiles) == 1


def test_cache_that_cannot_hold_a_library_names_the_cause(fresh, monkeypatch):
    monkeypatch.setattr(native, "_build", lambda *a: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    message = _one_warning()
    assert f"cannot write the native library into {fresh / 'native'} (Permission denied)" in message
    assert "compiler" not in message and "RECSIZE_DATA" in message
