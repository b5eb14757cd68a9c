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
``cc``) into ``<data cache>/native/`` (see :func:`recsize.data.sources.cache_dir`), its SHA-256 recorded
beside it, and loaded with :mod:`ctypes`. Only a library recsize built and recorded is loaded, from a
folder only the user can write (anything else is rebuilt or refused: :func:`_trusted_library`): a
planted ``.so`` never runs. Where no compiler works, or the folder cannot be written or is not private,
lookups fall back to the PyTorch path with one warning naming the cause and the fix; the results are
identical either way (a copy is a copy). ``RECSIZE_NATIVE=0`` turns the native path off.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import shlex
import stat
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


class _Unavailable(Exception):
    """Why the native library is not used: the one line of the warning (cause, then fix)."""


_FALLBACK = "compact lookups use the slower PyTorch path (same results)"
_SILENCE = "or set RECSIZE_NATIVE=0 to silence this"


def _paths(folder: Path) -> tuple[Path, Path]:
    """The library and its record (``sha256sum`` format) in ``folder``; the name hashes the source and
    the compiler, so a changed either builds a new library."""
    tag = hashlib.sha256((SOURCE + " ".join(_compiler())).encode()).hexdigest()[:16]
    return folder / f"compact_rows-{tag}.so", folder / f"compact_rows-{tag}.sha256"


def _unsafe(path: Path, st: os.stat_result) -> str | None:
    """What makes ``path`` unsafe to trust (owned by another user, or writable by its group or by
    others), or None. The owner may be this user or root; like ssh with its keys, no exception."""
    if st.st_uid not in (os.geteuid(), 0):
        return f"{path} is owned by another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        who = "its group and others" if st.st_mode & 0o022 == 0o022 else (
            "its group" if st.st_mode & 0o020 else "others")
        return f"{path} is writable by {who} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _sha256(fd: int) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: os.read(fd, 1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def _verified(library: Path, record: Path) -> bool:
    """Whether ``library`` is what recsize built: a regular file owned by this user (or root), writable
    by no one else, whose SHA-256 is the one in ``record`` (itself such a file)."""
    try:
        line = _read_private(record, lambda fd: os.read(fd, 4096).decode("ascii", "replace"))
        actual = _read_private(library, _sha256)
    except OSError:
        return False
    return actual is not None and line is not None and line.split()[:1] == [actual]


def _read_private(path: Path, read):
    """``read(fd)`` of ``path`` opened without following a link, or None where it is not a private
    regular file; OSError where it is missing."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or _unsafe(path, st):
            return None
        return read(fd)
    finally:
        os.close(fd)


def _compile(tmp: Path) -> Path:
    """Compile :data:`SOURCE` in the folder ``tmp`` (relative names: the same bytes every time); raise
    :class:`_Unavailable` where the compiler is missing or fails."""
    (tmp / "compact_rows.c").write_text(SOURCE)
    command = [*_compiler(), "-O2", "-shared", "-fPIC", "compact_rows.c", "-o", "compact_rows.so"]
    try:
        subprocess.run(command, cwd=tmp, check=True, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        lines = [line.strip() for line in (getattr(e, "stderr", None) or "").splitlines() if line.strip()]
        detail = next((line for line in lines if "error" in line), lines[0] if lines else str(e))
        raise _Unavailable(f"could not compile the one-pass compact lookup with {' '.join(_compiler())!r} "
                           f"({detail[:200]}); {_FALLBACK}: install a C compiler (gcc) or name one in CC, "
                           f"{_SILENCE}") from None
    return tmp / "compact_rows.so"


def _build(folder: Path, library: Path, record: Path) -> None:
    """Compile into a fresh temporary folder inside ``folder``, then rename the library and its record
    into place (a failure leaves neither half-written)."""
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as tmp:
        built = _compile(Path(tmp))
        os.chmod(built, 0o755)  # not the umask's: a group-writable library would be refused
        fd = os.open(built, os.O_RDONLY)
        try:
            digest = _sha256(fd)
        finally:
            os.close(fd)
        note = Path(tmp) / "record"
        note.write_text(f"{digest}  {library.name}\n")  # what `sha256sum -c` reads
        os.chmod(note, 0o644)
        os.replace(built, library)
        os.replace(note, record)


@contextlib.contextmanager
def _build_lock(folder: Path):
    """Hold ``folder/.build.lock`` (blocking) so that processes starting together build once; where
    the folder is read-only there is nothing to lock (nobody builds there)."""
    import fcntl
    try:
        fd = os.open(folder / ".build.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _trusted_library(folder: Path) -> Path:
    """The path of a verified library in ``folder``, built there first if needed; raises
    :class:`_Unavailable` with the cause and the fix.

    Loaded is only a library recsize built and recorded, from a folder only this user (or root) can
    write: the folder is created 0700, and one owned by another user or writable by its group or by
    others is refused, as are a library or record that are (those are rebuilt). The library is hashed,
    then loaded by its path: the file could change in between (a time-of-check to time-of-use race),
    but only by someone who can write the folder, i.e. this user, so that is accepted. The folders above
    are not checked: whoever can write one can swap this folder for another, but not for one that this
    user owns and only this user can write, nor put a library and record that this user did not build
    into one."""
    writable = "point RECSIZE_DATA at a folder you can write"
    if not folder.is_dir():
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise _Unavailable(f"cannot create the native library's folder {folder} ({e.strerror}); "
                               f"{_FALLBACK}: {writable}, {_SILENCE}") from None
    real = Path(os.path.realpath(folder))
    problem = _unsafe(real, real.stat())
    if problem:
        fix = f"run chmod go-w {real}" if "writable" in problem else "point RECSIZE_DATA at a folder of your own"
        raise _Unavailable(f"{problem}, so the native library in it is not loaded; {_FALLBACK}: {fix}, "
                           f"{_SILENCE}")
    library, record = _paths(real)
    with _build_lock(real):
        if _verified(library, record):
            return library
        try:
            _build(real, library, record)
        except OSError as e:
            raise _Unavailable(f"cannot write the native library into {real} ({e.strerror}); {_FALLBACK}: "
                               f"{writable}, {_SILENCE}") from None
        if not _verified(library, record):  # changed by someone else while it was built
            raise _Unavailable(f"{library} changed while it was built; {_FALLBACK}: run again, {_SILENCE}")
    return library


@functools.lru_cache(maxsize=None)
def _function():
    """The compiled library (``compact_rows`` and the ``csr_rows_*``), or None (disabled, or not
    usable: warned once, one line naming the cause and the fix)."""
    if os.environ.get("RECSIZE_NATIVE", "1") == "0":
        return None
    from .data.sources import cache_dir
    try:
        path = _trusted_library(cache_dir() / "native")
        try:
            library = ctypes.CDLL(str(path))
        except OSError as e:
            raise _Unavailable(f"could not load {path} ({str(e).splitlines()[0][:200]}); {_FALLBACK}: "
                               f"point RECSIZE_DATA at a folder that allows executables (not noexec), "
                               f"{_SILENCE}") from None
    except _Unavailable as e:
        warnings.warn(f"recsize: {e}", RuntimeWarning, stacklevel=3)
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
