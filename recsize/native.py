"""One-pass lookups for compact and CSR tables on the CPU: a few lines of C, compiled on first use.

Explained in Chapter 4 (the variable-size embedding). A dense lookup copies one fixed-size row per id.
PyTorch has no single operator for the compact form (copy ``d_n`` values, then zero ``d_max - d_n``),
so the PyTorch path needs three passes over the batch (window gather, mask gather, multiply) and reaches
about 0.1-0.5x the speed of the best dense lookup at 10 % density. The loop below is the one pass: it
reads only the kept values, runs 1.2-6x faster than the PyTorch path and at about 0.4-0.7x the best
dense lookup (``nn.Embedding``, ``sparse=True`` or FBGEMM's fused kernel) at 10 % density, 0.3-1.3x
over all the benchmark's tables (``benchmarks/embedding.py``). The CSR form of element-wise
pruning (:class:`~recsize.embedding.CSREmbedding`) has the same problem, worse (its PyTorch path builds
the positions of every kept entry, then scatters); ``csr_rows`` writes each kept value to its column.

The C source is compiled once per machine with the system C compiler (``$CC``, else Python's, else
``cc``) into ``<data cache>/native/`` (see :func:`recsize.data.sources.cache_dir`) and loaded with
:mod:`ctypes`. Where no compiler works, lookups fall back to the PyTorch path with one warning; the
results are identical either way (a copy is a copy). ``RECSIZE_NATIVE=0`` turns the native path off.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import shlex
import subprocess
import sysconfig
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = r"""
#include <stdint.h>
#include <string.h>
/* Row i of out (d floats) = the d_n kept values of row ids[i], then zeros. Returns -1, or the position
   of the first id outside [0, num_rows) (nothing is read for it). */
int64_t compact_rows(const float *values, const int64_t *offsets, int64_t num_rows,
                     const int64_t *ids, int64_t n, int64_t d, float *out) {
    for (int64_t i = 0; i < n; i++) {
        int64_t id = ids[i];
        if (id < 0 || id >= num_rows) return i;
        int64_t start = offsets[id], width = offsets[id + 1] - start;
        memcpy(out + i * d, values + start, (size_t)width * sizeof(float));
        memset(out + i * d + width, 0, (size_t)(d - width) * sizeof(float));
    }
    return -1;
}

/* The same for a CSR table: row i of out = zeros, then the kept values of row ids[i] at their columns. */
#define CSR_ROWS(NAME, COLUMN)                                                                        \
int64_t NAME(const float *values, const int64_t *offsets, const COLUMN *columns, int64_t num_rows,     \
             const int64_t *ids, int64_t n, int64_t d, float *out) {                                  \
    for (int64_t i = 0; i < n; i++) {                                                                 \
        int64_t id = ids[i];                                                                          \
        if (id < 0 || id >= num_rows) return i;                                                       \
        float *row = out + i * d;                                                                     \
        memset(row, 0, (size_t)d * sizeof(float));                                                   \
        for (int64_t k = offsets[id]; k < offsets[id + 1]; k++) row[columns[k]] = values[k];          \
    }                                                                                                 \
    return -1;                                                                                        \
}
CSR_ROWS(csr_rows_uint8, uint8_t)
CSR_ROWS(csr_rows_int16, int16_t)
CSR_ROWS(csr_rows_int32, int32_t)
"""


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")


def _build(directory: Path) -> Path:
    """Compile :data:`SOURCE` into ``directory`` (atomically: a temp file, then a rename)."""
    tag = hashlib.sha256((SOURCE + " ".join(_compiler())).encode()).hexdigest()[:16]
    library = directory / f"compact_rows-{tag}.so"
    if library.exists():
        return library
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        src, out = Path(tmp) / "compact_rows.c", Path(tmp) / "compact_rows.so"
        src.write_text(SOURCE)
        subprocess.run([*_compiler(), "-O2", "-shared", "-fPIC", str(src), "-o", str(out)],
                       check=True, capture_output=True, text=True, timeout=120)
        os.replace(out, library)
    return library


@functools.lru_cache(maxsize=None)
def _function():
    """The compiled library (``compact_rows`` and the ``csr_rows_*``), or None (disabled, or no working
    compiler: warned once)."""
    if os.environ.get("RECSIZE_NATIVE", "1") == "0":
        return None
    from .data.sources import cache_dir
    try:
        library = ctypes.CDLL(str(_build(cache_dir() / "native")))
    except (OSError, subprocess.SubprocessError) as e:
        detail = e.stderr.strip() if isinstance(e, subprocess.CalledProcessError) and e.stderr else str(e)
        warnings.warn(f"recsize: could not compile the one-pass compact lookup with {' '.join(_compiler())!r} "
                      f"({detail}); compact lookups use the slower PyTorch path. Install a C compiler (gcc) "
                      f"or set RECSIZE_NATIVE=0 to silence this.", RuntimeWarning, stacklevel=3)
        return None
    pointer, count = ctypes.c_void_p, ctypes.c_int64
    library.compact_rows.argtypes = [pointer, pointer, count, pointer, count, count, pointer]
    library.compact_rows.restype = count
    for name in _CSR_FUNCTIONS.values():
        getattr(library, name).argtypes = [pointer, pointer, pointer, count, pointer, count, count, pointer]
        getattr(library, name).restype = count
    return library


_CSR_FUNCTIONS = {torch.uint8: "csr_rows_uint8", torch.int16: "csr_rows_int16", torch.int32: "csr_rows_int32"}


_OFF = [False]


@contextlib.contextmanager
def disabled():
    """Inside the block compact lookups take the PyTorch path (to compare the two). Chapter 4."""
    before, _OFF[0] = _OFF[0], True
    try:
        yield
    finally:
        _OFF[0] = before


def available() -> bool:
    """Whether the native lookup is compiled and on. Explained in Chapter 4."""
    return _function() is not None


def compact_rows(values: torch.Tensor, offsets: torch.Tensor, ids: torch.Tensor, d_max: int) -> torch.Tensor | None:
    """Zero-padded ``(len(ids), d_max)`` rows of a compact table in one pass (``ids`` one-dimensional), or
    None where the native path does not apply (not on the CPU, not float32, turned off, or unavailable):
    the caller then takes the PyTorch path. An id outside the table raises IndexError. Explained in
    Chapter 4."""
    library = None if _OFF[0] else _function()
    if (library is None or values.dtype != torch.float32 or offsets.dtype != torch.int64
            or values.device.type != "cpu" or ids.device.type != "cpu"):
        return None
    function = library.compact_rows
    if not (values.is_contiguous() and offsets.is_contiguous()):
        values, offsets = values.contiguous(), offsets.contiguous()
    if ids.dtype != torch.int64 or not ids.is_contiguous():
        ids = ids.to(torch.int64).contiguous()
    out = torch.empty((len(ids), d_max))
    num_rows = len(offsets) - 1
    bad = function(values.data_ptr(), offsets.data_ptr(), num_rows, ids.data_ptr(), len(ids), d_max,
                   out.data_ptr())
    if bad >= 0:
        raise IndexError(f"id {int(ids[bad])} is out of range for a compact table of {num_rows} rows")
    return out


def csr_rows(values: torch.Tensor, offsets: torch.Tensor, columns: torch.Tensor, ids: torch.Tensor,
             d_max: int) -> torch.Tensor | None:
    """Zero-filled ``(len(ids), d_max)`` rows of a CSR table in one pass (``ids`` one-dimensional): each kept
    value written to its column. None where the native path does not apply (not on the CPU, not float32,
    column indices not uint8 / int16 / int32, turned off, or unavailable). An id outside the table raises
    IndexError. Explained in Chapter 4."""
    library = None if _OFF[0] else _function()
    if (library is None or values.dtype != torch.float32 or offsets.dtype != torch.int64
            or columns.dtype not in _CSR_FUNCTIONS or values.device.type != "cpu" or ids.device.type != "cpu"):
        return None
    values, offsets, columns = values.contiguous(), offsets.contiguous(), columns.contiguous()
    if ids.dtype != torch.int64 or not ids.is_contiguous():
        ids = ids.to(torch.int64).contiguous()
    out = torch.empty((len(ids), d_max))
    num_rows = len(offsets) - 1
    bad = getattr(library, _CSR_FUNCTIONS[columns.dtype])(values.data_ptr(), offsets.data_ptr(), columns.data_ptr(),
                                                          num_rows, ids.data_ptr(), len(ids), d_max, out.data_ptr())
    if bad >= 0:
        raise IndexError(f"id {int(ids[bad])} is out of range for a CSR table of {num_rows} rows")
    return out
