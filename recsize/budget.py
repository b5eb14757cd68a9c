"""Budget arithmetic in one place: density, sparsity, parameter counts and bytes of every storage form.

Explained in Chapter 4 (The variable-size embedding). A table of ``num_rows`` rows and full width
``d_max`` gives row ``n`` a width (its *size*) ``d_n`` in ``[0, d_max]``: the row keeps its first
``d_n`` dimensions. Two ways to say how much is kept:

* **density** (the kept fraction) = sum(d_n) / (num_rows * d_max); recsize's ``--budget`` is a density;
* **sparsity c** (the pruned fraction, the papers' language) = 1 - density: c = 80 / 90 / 95 % keeps
  20 / 10 / 5 % of the parameters, a mean width of 25.6 / 12.8 / 6.4 at d_max = 128.

Parameter counts hide what memory really costs. The bytes of the four storage forms (float32 values,
int64 indices):

* dense: the full table, ``num_rows * d_max * 4``;
* masked: the dense table plus the sizes vector (``num_rows * 8``): masking saves nothing;
* compact: the kept values back to back plus row offsets, ``sum(d_n) * 4 + (num_rows + 1) * 8``, plus
  ``d_max`` floats of padding after the last row (so every row can be read as one d_max-wide window,
  see :class:`recsize.embedding.CompactEmbedding`);
* buckets: one dense table per distinct (possibly rounded-up) width, ``sum_w n_w * w * 4``, plus the
  row -> (bucket, position) index, ``num_rows * 2 * 8``.

Element-wise masks (magnitude pruning, DNIS pruning in place, PEP) keep an arbitrary *set* of each row's
entries, not a prefix, so every kept value also needs its column index; ``d_n`` is then the row's count
of kept entries. Two more forms:

* element-masked (training): the dense table, the counts and a boolean mask, ``num_rows * d_max * (4 + 1)
  + num_rows * 8``;
* CSR (compressed sparse rows, storage and serving): ``sum(d_n) * (4 + c) + (num_rows + 1) * 8``, with
  column indices of c = 1 B (uint8) up to d_max = 256, 2 B (int16) up to 32,768, else 4 B (int32), see
  :func:`column_index_bytes`. No padding: the lookup reads only the kept entries.

The index is what the parameter count hides. The VLDB'24 embedding-compression benchmark (Zhang et al.,
"Experimental Analysis of Large-scale Learnable Vector Storage Compression") counts CSR with int32 column
indices and one int32 row pointer per row, 8 B per kept entry plus 4 B per row (:func:`csr_int32_bytes`):
at d = 16, half the dense memory keeps only 7 / 32 = 21.9 % of the entries, not 50 %
(:func:`entries_for_bytes`); with recsize's 1-byte indices the same memory keeps 30 %, with a prefix
(the compact form, no index) 37.5 %.
"""
from __future__ import annotations

import math

import numpy as np

FLOAT_BYTES = 4   # float32 values
INDEX_BYTES = 8   # int64 sizes, offsets and positions
MASK_BYTES = 1    # one bool per entry of an element mask
INT32_BYTES = 4   # the VLDB'24 benchmark's CSR column indices and row pointers


def check_budget(budget: float) -> float:
    """Return ``budget`` (a density: the kept fraction) as a float, or raise a clear ``ValueError`` if it
    lies outside (0, 1]. Explained in Chapter 4."""
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise ValueError(f"a budget is a kept fraction (density) in (0, 1], got {budget!r}") from None
    if not 0 < value <= 1:
        hint = (f"; for {value:g} %, pass {value / 100:g}" if 1 < value <= 100
                else "; a sparsity c (pruned fraction) converts as density = 1 - c")
        raise ValueError(f"a budget is a kept fraction (density) in (0, 1], got {value:g}{hint}")
    return value


def density_from_sparsity(sparsity: float) -> float:
    """The kept fraction for the papers' sparsity c (pruned fraction in [0, 1)): 1 - c. Chapter 4."""
    try:
        c = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"a sparsity c is a pruned fraction in [0, 1), got {sparsity!r}") from None
    if not 0 <= c < 1:
        raise ValueError(f"a sparsity c is a pruned fraction in [0, 1), got {c:g} "
                         "(c = 0.9 prunes 90 % and keeps 10 %)")
    return 1.0 - c


def check_sizes(sizes, num_rows: int, d_max: int, min_size: int = 0) -> np.ndarray:
    """Validate one width per row and return them as an int64 array.

    Raises ``ValueError`` for the wrong length, non-integer widths, or widths outside
    ``[min_size, d_max]``, naming the offending row. Explained in Chapter 4.
    """
    if hasattr(sizes, "detach"):  # a torch tensor
        sizes = sizes.detach().cpu().numpy()
    arr = np.asarray(sizes)
    if arr.ndim != 1 or len(arr) != num_rows:
        raise ValueError(f"sizes must hold one width per row: expected {num_rows} widths, got shape {arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"sizes must be integer widths, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            n = int(np.flatnonzero(bad)[0])
            raise ValueError(f"sizes must be integer widths, row {n} has {arr[n]!r}; round them first")
    arr = arr.astype(np.int64)
    if not 0 <= min_size <= d_max:
        raise ValueError(f"need 0 <= min_size <= d_max, got min_size={min_size}, d_max={d_max}")
    bad = (arr < min_size) | (arr > d_max)
    if bad.any():
        n = int(np.flatnonzero(bad)[0])
        raise ValueError(f"widths must lie in [{min_size}, {d_max}] (d_max = {d_max}), row {n} has {arr[n]}"
                         f" ({int(bad.sum())} rows out of range)")
    return arr


def num_parameters(sizes) -> int:
    """Kept parameters: sum(d_n). Explained in Chapter 4."""
    return int(np.asarray(sizes, dtype=np.int64).sum())


def density(sizes, d_max: int) -> float:
    """Kept fraction sum(d_n) / (num_rows * d_max). Explained in Chapter 4."""
    sizes = np.asarray(sizes, dtype=np.int64)
    return num_parameters(sizes) / (len(sizes) * d_max)


def sparsity(sizes, d_max: int) -> float:
    """The papers' sparsity c: the pruned fraction 1 - density. Explained in Chapter 4."""
    return 1.0 - density(sizes, d_max)


def target_parameters(budget: float, num_rows: int, d_max: int) -> int:
    """The kept-parameter total a budget (density) asks for: round(budget * num_rows * d_max), halves
    rounded up. The product is computed in floating point, so 0.1 * 943 * 64 = 6035.2 keeps 6035.
    Explained in Chapter 4."""
    budget = check_budget(budget)
    return int(math.floor(budget * num_rows * d_max + 0.5))


def dense_bytes(num_rows: int, d_max: int) -> int:
    """Bytes of the full float32 table. Explained in Chapter 4."""
    return num_rows * d_max * FLOAT_BYTES


def masked_bytes(num_rows: int, d_max: int) -> int:
    """Bytes of a masked table: the full table plus the int64 sizes (the mask is computed from the
    sizes). Masking saves nothing. Explained in Chapter 4."""
    return dense_bytes(num_rows, d_max) + num_rows * INDEX_BYTES


def compact_bytes(sizes, d_max: int | None = None) -> int:
    """Bytes of the compact form: sum(d_n) float32 values plus (num_rows + 1) int64 offsets; with
    ``d_max`` also the d_max floats of padding that :class:`~recsize.embedding.CompactEmbedding` keeps
    after the last row (a constant, under 1 % for any real table). Explained in Chapter 4."""
    return _form_bytes("compact", sizes, d_max)


def column_index_bytes(d_max: int) -> int:
    """Bytes of one CSR column index: the smallest integer type that holds d_max - 1, i.e. 1 (uint8) for
    d_max <= 256, 2 (int16: PyTorch indexes with no uint16) for d_max <= 32,768, else 4 (int32).
    Explained in Chapter 4."""
    if d_max < 1:
        raise ValueError(f"d_max must be >= 1, got {d_max}")
    return 1 if d_max <= 2**8 else 2 if d_max <= 2**15 else 4


def element_masked_bytes(num_rows: int, d_max: int) -> int:
    """Bytes of an element-masked table: the masked table's bytes (the full table and the int64 counts)
    plus one bool per entry for the mask. It saves nothing. Explained in Chapter 4."""
    return masked_bytes(num_rows, d_max) + num_rows * d_max * MASK_BYTES


def csr_bytes(sizes, d_max: int) -> int:
    """Bytes of :class:`~recsize.embedding.CSREmbedding`, the compact form of an element mask (``sizes``:
    kept entries per row): sum(d_n) * (4 + c) + (num_rows + 1) * 8, with c = :func:`column_index_bytes`
    (1 B for d_max <= 256). At d_max = 16 every kept value costs 5 B, not 4. Explained in Chapter 4."""
    return _form_bytes("csr", sizes, d_max)


def csr_int32_bytes(sizes, d_max: int | None = None) -> int:
    """Bytes of an element mask under the VLDB'24 benchmark's accounting: CSR with int32 column indices
    and one int32 row pointer per row, sum(d_n) * (4 + 4) + num_rows * 4. (Its code sets the kept fraction
    to (r * d - 1) / (2 * d) for a memory ratio r; ``d_max`` plays no part.) Explained in Chapter 4."""
    return _form_bytes("csr_int32", sizes, d_max)


ELEMENT_FORMS = ("compact", "csr", "csr_int32")


def _form_costs(form: str, num_rows: int, d_max: int | None) -> tuple[int, int]:
    """(bytes per kept entry, bytes that do not depend on the kept entries) of a storage form."""
    if form == "compact":   # float32 values; int64 offsets and d_max floats of padding
        return FLOAT_BYTES, (num_rows + 1) * INDEX_BYTES + (d_max or 0) * FLOAT_BYTES
    if form == "csr":       # float32 values and column indices; int64 offsets
        return FLOAT_BYTES + column_index_bytes(d_max), (num_rows + 1) * INDEX_BYTES
    if form == "csr_int32":  # the VLDB'24 benchmark: int32 column indices, one int32 row pointer per row
        return FLOAT_BYTES + INT32_BYTES, num_rows * INT32_BYTES
    raise ValueError(f"unknown storage form {form!r}: use one of {', '.join(ELEMENT_FORMS)}")


def _form_bytes(form: str, sizes, d_max: int | None) -> int:
    sizes = np.asarray(sizes, dtype=np.int64)
    per_entry, fixed = _form_costs(form, len(sizes), d_max)
    return num_parameters(sizes) * per_entry + fixed


def entries_for_bytes(budget_bytes: float, num_rows: int, d_max: int, form: str = "csr") -> int:
    """The most entries a table of ``num_rows x d_max`` can keep in ``budget_bytes`` when stored in
    ``form``: ``"compact"`` (prefixes), ``"csr"`` (recsize's element form) or ``"csr_int32"`` (the VLDB'24
    benchmark's accounting); never more than all ``num_rows * d_max``. Explained in Chapter 4.

    A memory budget is not a parameter budget, because the index costs memory too. At d = 16, half the
    dense memory (32 B per row) keeps 7 / 32 = 21.9 % of the entries under the benchmark's accounting,
    (32 - 4) B / 8 B per entry, 30 % in recsize's CSR form and 37.5 % in the compact form (up to its
    constant terms)::

        >>> n = 1_000_000
        >>> entries_for_bytes(dense_bytes(n, 16) / 2, n, 16, "csr_int32") / (n * 16)
        0.21875
    """
    per_entry, fixed = _form_costs(form, num_rows, d_max)
    if not budget_bytes >= fixed:   # also NaN
        raise ValueError(f"{budget_bytes:g} B cannot hold even the {form} index of {num_rows} rows "
                         f"({fixed} B without a single value)")
    return min(int((budget_bytes - fixed) // per_entry), num_rows * d_max)


def round_widths(sizes, d_max: int, round_to: int = 1) -> np.ndarray:
    """Widths rounded up to a multiple of ``round_to`` (never beyond ``d_max``; 0 stays 0), the padding
    that production embedding libraries ask for. Explained in Chapter 4."""
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1, got {round_to}")
    sizes = np.asarray(sizes, dtype=np.int64)
    return np.minimum(-(-sizes // round_to) * round_to, d_max)


def buckets_bytes(sizes, d_max: int, round_to: int = 1) -> int:
    """Bytes of the per-width buckets: for every distinct (rounded) width w, n_w * w float32 values, plus
    the int64 row -> (bucket, position) index. Explained in Chapter 4."""
    widths = round_widths(sizes, d_max, round_to)
    return int(widths.sum()) * FLOAT_BYTES + len(widths) * 2 * INDEX_BYTES


def storage_bytes(sizes, d_max: int, round_to: int = 4) -> dict[str, int]:
    """Bytes of every storage form for one table: dense, masked, compact, buckets (widths rounded to
    ``round_to``). Explained in Chapter 4."""
    sizes = np.asarray(sizes, dtype=np.int64)
    n = len(sizes)
    return {"dense": dense_bytes(n, d_max), "masked": masked_bytes(n, d_max),
            "compact": compact_bytes(sizes, d_max), "buckets": buckets_bytes(sizes, d_max, round_to)}


def memory_report(sizes_by_role: dict, d_max: int, round_to: int = 4) -> dict:
    """Per embedding role and in total: rows, kept parameters, density and the bytes of every storage form.

    Explained in Chapter 4.
    """
    report = {}
    for role, sizes in sizes_by_role.items():
        sizes = np.asarray(sizes, dtype=np.int64)
        report[role] = {"rows": len(sizes), "parameters": num_parameters(sizes),
                        "density": density(sizes, d_max), **storage_bytes(sizes, d_max, round_to)}
    total = {k: sum(r[k] for r in report.values())
             for k in ("rows", "parameters", "dense", "masked", "compact", "buckets")}
    total["density"] = total["parameters"] / (total["rows"] * d_max) if total["rows"] else 0.0
    report["total"] = total
    return report


def format_bytes(n: int) -> str:
    """``1536`` -> ``'1.5 KiB'``. Explained in Chapter 4."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
