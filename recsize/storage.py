"""The low-level pieces of the compact storage forms of :mod:`recsize.embedding` (Chapter 4): the zero-padded
row lookups of a compact table (PyTorch, or the native one-pass loops of :mod:`recsize.native`) and their
gradient, the lookups of a CSR table, the checks of stored arrays (row offsets, column indices, values) and
the reading of saved tables. Explained in Chapter 4.

:class:`~recsize.embedding.CompactEmbedding` and :class:`~recsize.embedding.CSREmbedding` themselves, and every
name a chapter imports, stay in :mod:`recsize.embedding`, which imports these.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from . import native

@functools.lru_cache(maxsize=32)
def _prefix_masks(d_max: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(d_max + 1, d_max) table whose row w holds w ones then zeros: the mask of a width-w row.

    Gathering a mask row per id is much faster than comparing ``arange(d_max) < width`` for every
    batch, and the table is shared by all tables of the same d_max (it is not part of any table)."""
    return (torch.arange(d_max, device=device) < torch.arange(d_max + 1, device=device)[:, None]).to(dtype)


def _window_rows(values: torch.Tensor, start: torch.Tensor, width: torch.Tensor, d_max: int) -> torch.Tensor:
    """Zero-padded rows, the PyTorch way (any device): every row is read as the d_max-wide window of
    ``values`` starting at its offset (the overlapping windows are a view, nothing is copied to build
    them), then multiplied by the prefix mask of its width. Three passes over the batch where a dense
    lookup makes one; :func:`recsize.native.compact_rows` is the one-pass loop used on the CPU."""
    windows = values.as_strided((values.numel() - d_max + 1, d_max), (1, 1))
    # rows and masks share one allocation: on CPU two separate blocks of this size were about 3x slower
    # (the C allocator hands large freed blocks back to the system and every fresh page faults)
    both = values.new_empty(2, len(start), d_max)
    rows, mask = both[0], both[1]
    torch.index_select(windows, 0, start, out=rows)
    torch.index_select(_prefix_masks(d_max, values.dtype, values.device), 0, width, out=mask)
    return rows.mul_(mask)


def _compact_rows(values: torch.Tensor, offsets: torch.Tensor, flat: torch.Tensor, d_max: int) -> torch.Tensor:
    """The zero-padded rows of ids ``flat``: the native one-pass loop where it applies, else PyTorch."""
    rows = native.compact_rows(values, offsets, flat, d_max)
    if rows is None:
        start = offsets.index_select(0, flat)
        rows = _window_rows(values.detach(), start, offsets.index_select(0, flat + 1) - start, d_max)
    return rows


class _CompactLookup(torch.autograd.Function):
    """Zero-padded rows of a compact table. Forward: :func:`_compact_rows`. Backward: the masked
    gradient is scatter-added into the values (the masked entries add exact zeros)."""

    @staticmethod
    def forward(ctx, values, offsets, flat, d_max):
        ctx.save_for_backward(offsets, flat)
        ctx.num_values, ctx.d_max = values.numel(), d_max
        return _compact_rows(values, offsets, flat, d_max)

    @staticmethod
    def backward(ctx, grad):
        offsets, flat = ctx.saved_tensors
        d_max = ctx.d_max
        start = offsets.index_select(0, flat)
        mask = _prefix_masks(d_max, grad.dtype, grad.device).index_select(0, offsets.index_select(0, flat + 1) - start)
        # int32 indices when they fit: half the memory traffic of int64 in the scatter below
        dtype = torch.int32 if ctx.num_values < 2**31 else torch.int64
        index = (start.to(dtype)[:, None] + torch.arange(d_max, device=start.device, dtype=dtype)).reshape(-1)
        grad_values = grad.new_zeros(ctx.num_values)
        grad_values.index_add_(0, index, (grad * mask).reshape(-1))  # masked entries add exact zeros
        return grad_values, None, None, None


def _load_blob(path: Path, tag: str, what: str) -> dict:
    """The dict saved in ``path`` (``torch.load``, weights only), or ``ValueError`` naming the file: not
    readable (truncated, garbage), or not a ``what`` file (another format tag)."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{path} is not a readable {what} file ({type(e).__name__}: {e})") from None
    if not isinstance(blob, dict) or blob.get("format") != tag:
        raise ValueError(f"{path} is not a {what} file (expected format {tag!r})")
    return blob


def _offsets_problem(d_max, offsets, entries, name: str) -> str | None:
    """What is wrong with row ``offsets`` into ``entries`` (a vector called ``name``) for rows of at most
    ``d_max`` entries, or None: the checks on loading a compact or CSR table."""
    if not isinstance(d_max, (int, np.integer)) or isinstance(d_max, bool) or d_max < 1:
        return f"d_max must be a positive integer, got {d_max!r}"
    if not isinstance(offsets, torch.Tensor) or offsets.dim() != 1 or offsets.dtype != torch.int64 \
            or len(offsets) < 2:
        return "offsets must be an int64 vector of num_rows + 1 entries"
    if not isinstance(entries, torch.Tensor) or entries.dim() != 1:
        return f"{name} must be a vector"
    if offsets[0] != 0 or int(offsets[-1]) != len(entries):
        return (f"offsets must run from 0 to the number of {name} ({len(entries)}), "
                f"got {int(offsets[0])} to {int(offsets[-1])}")
    if (offsets.diff() < 0).any() or (offsets.diff() > d_max).any():
        return f"row widths (offset differences) must lie in [0, d_max = {d_max}]"
    return None


def _values_problem(values) -> str | None:
    return None if values.is_floating_point() else f"values must be a floating-point vector, got {values.dtype}"


_INDEX_DTYPES = {1: torch.uint8, 2: torch.int16, 4: torch.int32}   # by recsize.budget.column_index_bytes
_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _columns_problem(d_max: int, offsets: torch.Tensor, columns: torch.Tensor) -> str | None:
    """What is wrong with the column indices of a CSR table, or None: each must lie in [0, d_max) and
    strictly increase within its row (so every kept entry is stored once, in row-major order)."""
    if columns.dtype not in _INTEGER_DTYPES:
        return f"column indices must be integers, got {columns.dtype}"
    columns = columns.to(torch.int64)
    bad = (columns < 0) | (columns >= d_max)
    if bad.any():
        at = int(bad.nonzero()[0])
        return f"column index {int(columns[at])} (entry {at}) is out of range [0, d_max = {d_max})"
    rises = columns.diff() > 0
    rises[offsets[1:-1][(offsets[1:-1] > 0) & (offsets[1:-1] < len(columns))] - 1] = True  # rows may restart
    if not rises.all():
        at = int((~rises).nonzero()[0]) + 1
        row = int(torch.searchsorted(offsets, at, right=True)) - 1
        return f"column indices of row {row} do not strictly increase (entry {at}: {int(columns[at])})"
    return None


def _csr_problem(d_max, offsets, columns, values) -> str | None:
    """What is wrong with the parts of a CSR table, or None: the checks of the constructor and of loading."""
    return (_offsets_problem(d_max, offsets, columns, "column indices")
            or _offsets_problem(d_max, offsets, values, "values") or _values_problem(values)
            or _columns_problem(d_max, offsets, columns))


def _csr_entries(offsets: torch.Tensor, columns: torch.Tensor, flat: torch.Tensor, d_max: int):
    """For the rows of ids ``flat``: where their kept entries are in the values (``entry``) and where each
    goes in the flattened ``(len(flat), d_max)`` output (``target``). Work in proportion to the kept
    entries of the batch, not to len(flat) * d_max; a handful of PyTorch passes over them."""
    start = offsets.index_select(0, flat)
    count = offsets.index_select(0, flat + 1) - start
    total = int(count.sum())
    row = torch.repeat_interleave(count, output_size=total)          # the batch row of every entry
    # entry = start of its row + its rank in the row = (start - entries of the earlier rows)[row] + 0, 1, ...
    entry = (start - count.cumsum(0) + count).index_select(0, row).add_(torch.arange(total, device=flat.device))
    target = torch.add(columns.index_select(0, entry), row, alpha=d_max)   # int64: row * d_max + column
    return entry, target
