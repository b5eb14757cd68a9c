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
"""
from __future__ import annotations

import math

import numpy as np

FLOAT_BYTES = 4   # float32 values
INDEX_BYTES = 8   # int64 sizes, offsets and positions


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
    sizes = np.asarray(sizes, dtype=np.int64)
    padding = 0 if d_max is None else d_max
    return (num_parameters(sizes) + padding) * FLOAT_BYTES + (len(sizes) + 1) * INDEX_BYTES


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
