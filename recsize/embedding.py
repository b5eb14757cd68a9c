"""Embedding tables behind one interface, so that a variable-size table can replace the plain one.

Explained in Chapter 3 (Backbones) for the plain table; Chapter 4 builds the variable-size core on the
same interface. Every table is an ``nn.Module`` with

* ``num_rows`` and ``dim`` (the output width, d_max for variable-size tables);
* ``forward(ids)``: the rows for a batch of ids, shape ``(*ids.shape, dim)``;
* ``table()``: all rows at once, shape ``(num_rows, dim)`` (graph models propagate the whole table);
* ``num_parameters()`` and ``num_bytes()``: what the table really stores.

Backbones never build ``nn.Embedding`` themselves: they call an *embedding factory*
``factory(role, num_rows, dim)`` with a role such as ``"user"``, ``"item"`` or ``"feature"``.

Variable-size tables (Chapter 4). Row ``n`` has a width (its *size*) ``d_n`` in ``[0, d_max]`` and keeps
its first ``d_n`` dimensions; a lookup always returns a ``d_max``-wide vector whose dimensions beyond
``d_n`` are zero. Three storage forms share this contract:

* :class:`MaskedEmbedding` (training and search): the full ``num_rows x d_max`` table times a 0/1 prefix
  mask computed from the sizes. Sizes change in place between iterations, gradients outside the mask
  are exactly zero, and hooks take per-dimension soft weights (DNIS) and per-instance gates (iHAS).
  It stores the whole table: masking saves no memory, which is what the published codes do.
* :class:`CompactEmbedding` (storage, serving, and training with fixed sizes): the kept values back to
  back plus row offsets; its bytes really shrink. It converts to and from the masked form with equal
  lookups (kept entries bit for bit, zeros beyond), saves and loads, and exports to
* :class:`EmbeddingBuckets`: one plain dense table per distinct width, the form production embedding
  libraries take.

Element-wise masks (Chapter 4 too): pruning methods (magnitude pruning, DNIS pruning in place, PEP) keep an
arbitrary *set* of each row's entries, not a prefix; ``d_n`` is then the row's count of kept entries. Two
forms with the same lookup contract (kept entries bit for bit, zeros elsewhere):

* :class:`ElementMaskedEmbedding` (training with a fixed mask): a :class:`MaskedEmbedding` whose mask is a
  stored boolean ``num_rows x d_max`` buffer instead of prefixes; same hooks, zero gradient outside;
* :class:`CSREmbedding` (storage, serving, and training with the mask fixed): compressed sparse rows, the
  kept values back to back, row offsets and one small column index per value (uint8 up to d_max = 256).
  The index is why a memory budget keeps fewer entries than the same parameter budget
  (:func:`recsize.budget.entries_for_bytes`).

Mixed widths in the backbones: the policy is **zero-padding to d_max**, which is exactly what the mask
does, so no backbone needs a projection and every backbone accepts masked and compact tables as is.

* MF: ``<e_u, e_i>`` runs over the first ``min(d_u, d_i)`` dimensions (the rest multiply zeros).
* NeuMF: the GMF branch as MF; the MLP branch sees the zero-padded concatenation, so the first layer's
  weights for a row's missing dimensions receive no signal from that row.
* LightGCN and NGCF: the sizes apply to the ego (layer-0) embeddings, the stored parameters;
  propagation runs at d_max, so after one layer a narrow row's representation borrows its neighbours'
  dimensions and a width-0 row is represented by its neighbourhood alone. Memory shrinks, compute does not.
* FM: ``<v_i, v_j>`` over the shared prefix; a width-0 feature value keeps only its first-order weight
  (the first-order weights are not part of the embedding budget).
* DeepFM: the FM part as FM; the MLP sees the zero-padded field embeddings.

The low-level pieces of the compact and CSR forms (their row lookups and gradient, the checks of stored
arrays, the reading of saved tables) are :mod:`recsize.storage`.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import native
from .budget import check_sizes, column_index_bytes
from .files import atomic_save
from .storage import (_INDEX_DTYPES, _compact_rows, _CompactLookup, _csr_entries, _csr_problem, _load_blob,
                      _offsets_problem, _prefix_masks, _values_problem)

EmbeddingFactory = Callable[[str, int, int], nn.Module]


class Embedding(nn.Module):
    """A plain full-width table: every row has all ``dim`` dimensions. Explained in Chapter 3."""

    def __init__(self, num_rows: int, dim: int, init: str = "xavier"):
        super().__init__()
        if num_rows < 1 or dim < 1:
            raise ValueError(f"an embedding needs num_rows >= 1 and dim >= 1, got {num_rows} x {dim}")
        self.num_rows, self.dim = int(num_rows), int(dim)
        self.weight = nn.Parameter(torch.empty(self.num_rows, self.dim))
        if init == "xavier":
            nn.init.xavier_normal_(self.weight)
        elif init == "normal":
            nn.init.normal_(self.weight, std=0.1)
        else:
            raise ValueError(f"unknown init {init!r}: use 'xavier' or 'normal'")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # index_select rather than weight[ids]: the same rows, and a backward (index_add_) that adds the
        # same gradient rows in the same order as advanced indexing's index_put_, bit for bit, but faster
        # on the CPU (tests/test_embedding.py checks both against weight[ids])
        return self.weight.index_select(0, ids.reshape(-1)).view(*ids.shape, self.dim)

    def table(self) -> torch.Tensor:
        return self.weight

    def num_parameters(self) -> int:
        return self.weight.numel()

    def num_bytes(self) -> int:
        return self.weight.numel() * self.weight.element_size()

    def extra_repr(self) -> str:
        return f"{self.num_rows}, {self.dim}"


def plain_embedding(role: str, num_rows: int, dim: int) -> nn.Module:
    """The default factory: a plain :class:`Embedding` for every role. Explained in Chapter 3."""
    return Embedding(num_rows, dim)


# ---------------------------------------------------------------------------------------------------
# Variable-size tables (Chapter 4)
# ---------------------------------------------------------------------------------------------------

def _init_std(num_rows: int, d_max: int, init: str) -> float:
    """The standard deviation of the plain table's initialisation, so all forms start alike."""
    if init == "xavier":  # xavier_normal_ on a (num_rows, d_max) matrix
        return (2.0 / (num_rows + d_max)) ** 0.5
    if init == "normal":
        return 0.1
    raise ValueError(f"unknown init {init!r}: use 'xavier' or 'normal'")


def prefix_mask(sizes: torch.Tensor, d_max: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 0/1 masks ``(*sizes.shape, d_max)`` keeping the first ``sizes[...]`` dimensions of each row:
    m[n, s] = 1 for s < d_n. Explained in Chapter 4."""
    masks = _prefix_masks(int(d_max), dtype, sizes.device)
    return masks.index_select(0, sizes.reshape(-1)).view(*sizes.shape, d_max)


class MaskedEmbedding(nn.Module):
    """A full ``num_rows x d_max`` table times a prefix mask: row n keeps its first ``sizes[n]``
    dimensions, e_n = E[n] * m_n. Explained in Chapter 4.

    The training form of every search method. ``set_sizes`` changes the sizes in place between
    iterations (no rebuild, the optimizer keeps its parameters); the mask is computed from the
    ``sizes`` buffer at every lookup, so it can never be stale. Because the lookup *multiplies* by the
    mask, autograd gives exactly zero gradient to every entry outside it (an optimizer with weight
    decay or momentum may still move those entries; they stay invisible while masked).

    Hooks for the search methods, applied after the mask:

    * ``set_soft_weights(weights, row_block)``: per-dimension soft weights, one row of ``d_max`` weights
      per frequency block (DNIS's alpha); the lookup of row n is multiplied by ``weights[row_block[n]]``;
    * ``forward(ids, gates)``: per-instance gates broadcast to ``(*ids.shape, d_max)`` (iHAS).

    ``num_parameters()`` counts the kept entries, sum(d_n). ``num_bytes()`` counts what is really
    stored: the *whole* table, the sizes and any soft weights. Masking saves no memory; convert to
    :class:`CompactEmbedding` for that.
    """

    def __init__(self, num_rows: int, d_max: int, sizes=None, init: str = "xavier"):
        super().__init__()
        if num_rows < 1 or d_max < 1:
            raise ValueError(f"an embedding needs num_rows >= 1 and d_max >= 1, got {num_rows} x {d_max}")
        self.num_rows, self.dim = int(num_rows), int(d_max)
        self.weight = nn.Parameter(torch.empty(self.num_rows, self.dim))
        nn.init.normal_(self.weight, std=_init_std(self.num_rows, self.dim, init))
        full = np.full(self.num_rows, self.dim, dtype=np.int64)
        self.register_buffer("sizes", torch.from_numpy(full if sizes is None else self._checked(sizes)))
        self.register_parameter("soft_weights", None)
        self.register_buffer("row_block", None)

    @property
    def d_max(self) -> int:
        return self.dim

    def _checked(self, sizes) -> np.ndarray:
        return check_sizes(sizes, self.num_rows, self.dim)

    def set_sizes(self, sizes) -> None:
        """Give row n the width ``sizes[n]`` (in [0, d_max]) without rebuilding anything. Chapter 4."""
        self.sizes.copy_(torch.from_numpy(self._checked(sizes)))

    def set_soft_weights(self, weights: torch.Tensor | None, row_block=None) -> None:
        """Multiply every lookup by per-dimension soft weights (DNIS). Explained in Chapter 4.

        ``weights`` is ``(num_blocks, d_max)`` with ``row_block`` giving each row's block, or
        ``(num_rows, d_max)`` without it; ``None`` removes the hook. A plain tensor becomes a frozen
        parameter; pass an ``nn.Parameter`` to learn the weights.
        """
        if weights is None:
            self.soft_weights, self.row_block = None, None
            return
        if weights.dim() != 2 or weights.shape[1] != self.dim:
            raise ValueError(f"soft weights must be (blocks or rows, {self.dim}), got {tuple(weights.shape)}")
        if row_block is None:
            if weights.shape[0] != self.num_rows:
                raise ValueError(f"without row_block the soft weights need one row per table row "
                                 f"({self.num_rows}), got {weights.shape[0]}")
        else:
            row_block = torch.as_tensor(row_block, dtype=torch.int64, device=self.weight.device)
            if row_block.shape != (self.num_rows,):
                raise ValueError(f"row_block must give one block per row ({self.num_rows}), "
                                 f"got shape {tuple(row_block.shape)}")
            if len(row_block) and (row_block.min() < 0 or row_block.max() >= weights.shape[0]):
                raise ValueError(f"row_block values must lie in [0, {weights.shape[0]}) (one per block)")
        if not isinstance(weights, nn.Parameter):
            weights = nn.Parameter(weights.detach().clone(), requires_grad=False)
        self.soft_weights = weights
        self.row_block = row_block

    def mask(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The 0/1 prefix masks of rows ``ids`` (all rows if None), shape ``(..., d_max)``. Chapter 4."""
        sizes = self.sizes if ids is None else self.sizes[ids]
        return prefix_mask(sizes, self.dim, self.weight.dtype)

    def _soft(self, ids: torch.Tensor | None) -> torch.Tensor:
        blocks = torch.arange(self.num_rows, device=self.weight.device) if ids is None else ids
        if self.row_block is not None:
            blocks = self.row_block[blocks]
        return self.soft_weights[blocks]

    def forward(self, ids: torch.Tensor, gates: torch.Tensor | None = None) -> torch.Tensor:
        rows = F.embedding(ids, self.weight).mul_(self.mask(ids))  # in place: one allocation less
        if self.soft_weights is not None:
            rows = rows * self._soft(ids)
        if gates is not None:
            rows = rows * gates
        return rows

    def table(self) -> torch.Tensor:
        rows = self.weight * self.mask()
        return rows * self._soft(None) if self.soft_weights is not None else rows

    def num_parameters(self) -> int:
        return int(self.sizes.sum())

    def num_bytes(self) -> int:
        stored = [self.weight, self.sizes, self.soft_weights, self.row_block]
        return sum(t.numel() * t.element_size() for t in stored if t is not None)

    def extra_repr(self) -> str:
        return f"{self.num_rows}, d_max={self.dim}, kept={self.num_parameters()}"


def check_element_mask(keep, num_rows: int, d_max: int) -> torch.Tensor:
    """Validate a ``(num_rows, d_max)`` element mask (booleans, or numbers that are all 0 or 1) and return
    it as a bool tensor; raise ``ValueError`` saying what is wrong. Explained in Chapter 4."""
    keep = torch.as_tensor(keep.detach() if hasattr(keep, "detach") else np.asarray(keep))
    if keep.shape != (num_rows, d_max):
        raise ValueError(f"an element mask must be (num_rows, d_max) = ({num_rows}, {d_max}), "
                         f"got shape {tuple(keep.shape)}")
    if keep.dtype != torch.bool:
        if keep.is_complex() or not ((keep == 0) | (keep == 1)).all():
            raise ValueError(f"an element mask holds booleans (or 0 and 1), got dtype {keep.dtype} with other values")
        keep = keep != 0
    return keep


class ElementMaskedEmbedding(MaskedEmbedding):
    """A full ``num_rows x d_max`` table times a fixed element mask: row n keeps an arbitrary set of its
    entries, e_n = E[n] * m_n with m_n any 0/1 vector. Explained in Chapter 4.

    The training form of element-wise pruning (magnitude pruning, DNIS in place, PEP) with the mask fixed.
    Everything else is :class:`MaskedEmbedding`'s: the lookup multiplies by the mask (exactly zero gradient
    outside it), the soft-weight and gate hooks, and ``sizes``, which here counts each row's kept entries
    (kept in step with the mask). ``set_mask`` changes the mask in place; ``set_sizes`` makes it a prefix
    mask again. ``num_bytes()`` adds the stored boolean mask to the masked table's bytes; convert to
    :class:`CSREmbedding` (:meth:`CSREmbedding.from_masked`, :func:`compact_tables`) to really shrink.
    """

    def __init__(self, num_rows: int, d_max: int, keep=None, init: str = "xavier"):
        super().__init__(num_rows, d_max, init=init)
        self.register_buffer("keep", torch.ones(self.num_rows, self.dim, dtype=torch.bool))
        if keep is not None:
            self.set_mask(keep)

    def set_mask(self, keep) -> None:
        """Keep exactly the entries where ``keep`` (``(num_rows, d_max)``) is true. Explained in Chapter 4."""
        keep = check_element_mask(keep, self.num_rows, self.dim).to(self.keep.device)
        self.keep.copy_(keep)
        self.sizes.copy_(keep.sum(1))

    def set_sizes(self, sizes) -> None:
        """Give row n its first ``sizes[n]`` entries: a prefix mask. Explained in Chapter 4."""
        super().set_sizes(sizes)
        self.keep.copy_(prefix_mask(self.sizes, self.dim, torch.bool))

    def mask(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The 0/1 element masks of rows ``ids`` (all rows if None), shape ``(..., d_max)``. Chapter 4."""
        full = self._float_mask()
        return full if ids is None else full.index_select(0, ids.reshape(-1)).view(*ids.shape, self.dim)

    def _float_mask(self) -> torch.Tensor:
        """``keep`` as 0/1 numbers of the weight's dtype, converted once and reused until ``keep`` changes
        (``set_mask``, ``set_sizes``, ``load_state_dict`` write it in place and bump its version; ``.to()``
        replaces it): the conversion of the whole mask at every lookup was a tenth of a masked LightGCN
        epoch. The values are the same 0/1 as converting afresh. Not part of the state dict."""
        cache = self.__dict__.get("_mask_cache")
        keep, dtype = self.keep, self.weight.dtype
        if cache is None or cache[0] is not keep or cache[1] != keep._version or cache[2].dtype != dtype:
            cache = (keep, keep._version, keep.to(dtype))
            self.__dict__["_mask_cache"] = cache
        return cache[2]

    def __getstate__(self):  # pickling (torch.save of a whole model) leaves the cache out
        state = self.__dict__.copy()
        state.pop("_mask_cache", None)
        return state

    def num_bytes(self) -> int:
        return super().num_bytes() + self.keep.numel() * self.keep.element_size()


COMPACT_FORMAT = "recsize.CompactEmbedding/1"


class _RowOffsets:
    """What the two compact forms share: ``dim`` (d_max) and int64 row ``offsets`` into the kept values."""

    @property
    def d_max(self) -> int:
        return self.dim

    @property
    def sizes(self) -> torch.Tensor:
        """The number of values every row keeps (its width for a prefix), from the offsets (int64)."""
        return self.offsets.diff()


class CompactEmbedding(_RowOffsets, nn.Module):
    """Rows of different widths stored back to back: row n is ``values[offsets[n]:offsets[n + 1]]``.
    Explained in Chapter 4.

    The storage and serving form whose bytes really shrink: sum(d_n) float32 values, (num_rows + 1)
    int64 offsets and d_max floats of padding after the last row (so every row can be read as one
    d_max-wide window; the part beyond d_n is masked away). A lookup returns the zero-padded d_max vector,
    exactly equal to the masked table it came from (:meth:`from_masked`, :meth:`to_masked`). The values
    are an ``nn.Parameter``: a compact table trains like any other when the sizes are fixed.
    """

    def __init__(self, sizes, d_max: int, init: str = "xavier", values: torch.Tensor | None = None):
        super().__init__()
        if d_max < 1:
            raise ValueError(f"d_max must be >= 1, got {d_max}")
        sizes = np.asarray(sizes.detach().cpu() if hasattr(sizes, "detach") else sizes)
        if sizes.ndim != 1 or len(sizes) < 1:
            raise ValueError(f"sizes must be a non-empty vector of widths, got shape {sizes.shape}")
        sizes = check_sizes(sizes, len(sizes), d_max)
        self.num_rows, self.dim = len(sizes), int(d_max)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.register_buffer("offsets", torch.from_numpy(offsets))
        total = int(offsets[-1])
        if values is None:
            values = torch.empty(total).normal_(std=_init_std(self.num_rows, self.dim, init))
        values = torch.as_tensor(values).detach().reshape(-1)
        if values.numel() != total or not values.is_floating_point():
            raise ValueError(f"the sizes keep {total} values: give that many floats, got {values.numel()} "
                             f"of dtype {values.dtype}")
        # the kept values, then d_max of padding so the last row can be read as a d_max-wide window
        self.values = nn.Parameter(torch.cat([values, values.new_zeros(self.dim)]))

    def kept_values(self) -> torch.Tensor:
        """The sum(d_n) stored values, row after row (no padding)."""
        return self.values[: int(self.offsets[-1])]

    def forward(self, ids: torch.Tensor, gates: torch.Tensor | None = None) -> torch.Tensor:
        flat = ids.reshape(-1)
        if torch.is_grad_enabled() and self.values.requires_grad:
            rows = _CompactLookup.apply(self.values, self.offsets, flat, self.dim)
        else:  # inference: the same rows without the autograd bookkeeping
            rows = _compact_rows(self.values, self.offsets, flat, self.dim)
        rows = rows.view(*ids.shape, self.dim)
        return rows if gates is None else rows * gates  # per-instance gates (iHAS, shared layout)

    def table(self) -> torch.Tensor:
        return self(torch.arange(self.num_rows, device=self.offsets.device))

    def num_parameters(self) -> int:
        return int(self.offsets[-1])

    def num_bytes(self) -> int:
        return self.values.numel() * self.values.element_size() + self.offsets.numel() * self.offsets.element_size()

    def extra_repr(self) -> str:
        return f"{self.num_rows}, d_max={self.dim}, kept={self.num_parameters()}"

    # conversions -----------------------------------------------------------------------------------
    @classmethod
    def from_masked(cls, masked: MaskedEmbedding) -> "CompactEmbedding":
        """The compact copy of a masked table (soft weights folded into the values): lookups are
        exactly equal. Explained in Chapter 4."""
        with torch.no_grad():
            rows = masked.table().detach()
            keep = masked.mask().bool()
            if not torch.equal(keep, prefix_mask(masked.sizes, masked.dim, torch.bool)):
                raise ValueError("the mask keeps entries that are not a prefix of their rows: the compact form "
                                 "stores prefixes only; use CSREmbedding.from_masked for an element mask")
            values = rows[keep]  # row-major order: each row's first d_n entries, row after row
        compact = cls(masked.sizes.cpu().numpy(), masked.dim, values=values.cpu())
        return compact.to(rows.device)

    def to_masked(self) -> MaskedEmbedding:
        """A masked table with the same lookups (zeros outside the mask). Explained in Chapter 4."""
        masked = MaskedEmbedding(self.num_rows, self.dim, self.sizes.cpu().numpy())
        with torch.no_grad():
            masked.weight.copy_(self.table().detach().cpu())
        return masked.to(self.values.device)

    # storage ---------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the table (format tag, d_max, offsets, kept values) atomically: a temporary file, then a
        rename. Explained in Chapter 4."""
        atomic_save({"format": COMPACT_FORMAT, "d_max": self.dim, "offsets": self.offsets.cpu(),
                     "values": self.kept_values().detach().cpu().clone()}, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CompactEmbedding":
        """Read a table written by :meth:`save`; a corrupt or inconsistent file raises ``ValueError``
        saying what is wrong. Explained in Chapter 4."""
        path = Path(path)
        blob = _load_blob(path, COMPACT_FORMAT, "compact embedding")
        d_max, offsets, values = blob.get("d_max"), blob.get("offsets"), blob.get("values")
        problem = _offsets_problem(d_max, offsets, values, "values") or _values_problem(values)
        if problem:
            raise ValueError(f"{path} is a corrupt compact embedding file: {problem}")
        return cls(offsets.diff().numpy(), d_max, values=values)

    def export_buckets(self, round_to: int = 1) -> "EmbeddingBuckets":
        """Plain dense tables, one per distinct width (rounded up to a multiple of ``round_to``, never
        beyond d_max, zero-padded), plus the row -> (bucket width, position) index. Lookups through the
        buckets equal the compact lookups. Explained in Chapter 4."""
        from .budget import round_widths
        sizes = self.sizes.cpu().numpy()
        widths = round_widths(sizes, self.dim, round_to)
        rows = self.table().detach()
        position = np.zeros(self.num_rows, dtype=np.int64)
        tables = {}
        for w in np.unique(widths):
            members = np.flatnonzero(widths == w)
            position[members] = np.arange(len(members))
            tables[int(w)] = rows[torch.from_numpy(members).to(rows.device), : int(w)].clone()
        return EmbeddingBuckets(self.dim, tables, torch.from_numpy(widths).to(rows.device),
                                torch.from_numpy(position).to(rows.device))


@dataclass
class EmbeddingBuckets:
    """A variable-size table as one plain dense table per width, the form production embedding
    libraries take: row n lives at ``tables[bucket[n]][position[n]]``. Explained in Chapter 4."""

    d_max: int
    tables: dict[int, torch.Tensor]
    bucket: torch.Tensor     # (num_rows,) the (rounded) width of each row: the key of its table
    position: torch.Tensor   # (num_rows,) the row's index inside its table

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Zero-padded d_max rows for ``ids`` (a reference lookup: one gather per bucket)."""
        flat = ids.reshape(-1)
        dtype = next(iter(self.tables.values())).dtype
        out = torch.zeros(len(flat), self.d_max, dtype=dtype, device=flat.device)
        bucket, position = self.bucket[flat], self.position[flat]
        for width, table in self.tables.items():
            if width == 0:
                continue
            hit = torch.nonzero(bucket == width).squeeze(1)
            out[hit, :width] = table[position[hit]]
        return out.view(*ids.shape, self.d_max)

    def num_bytes(self) -> int:
        index = self.bucket.numel() * self.bucket.element_size() + self.position.numel() * self.position.element_size()
        return index + sum(t.numel() * t.element_size() for t in self.tables.values())


CSR_FORMAT = "recsize.CSREmbedding/1"


class CSREmbedding(_RowOffsets, nn.Module):
    """Element-wise masks stored as compressed sparse rows: row n keeps the values
    ``values[offsets[n]:offsets[n + 1]]`` at the columns ``columns[offsets[n]:offsets[n + 1]]`` (strictly
    increasing), zeros elsewhere. Explained in Chapter 4.

    The storage and serving form of element-wise pruning, whose bytes really shrink, though by less than
    the parameter count says: sum(d_n) float32 values, as many column indices in the smallest type that
    holds d_max - 1 (uint8 up to d_max = 256, int16 up to 32,768, else int32), and (num_rows + 1) int64
    offsets; no padding (:func:`recsize.budget.csr_bytes`). A lookup returns the zero-filled d_max vector,
    bit for bit the kept entries of the table it came from (:meth:`from_dense`, :meth:`from_masked`). The
    values are an ``nn.Parameter`` and the lookup is differentiable: with the mask fixed, training moves
    only the kept entries, with the masked dense table's gradient.
    """

    def __init__(self, offsets, columns, d_max: int, values: torch.Tensor | None = None, init: str = "xavier"):
        super().__init__()
        offsets, columns = torch.as_tensor(offsets).detach(), torch.as_tensor(columns).detach()
        if values is None and _offsets_problem(d_max, offsets, columns, "column indices") is None:
            values = torch.empty(int(offsets[-1])).normal_(std=_init_std(len(offsets) - 1, int(d_max), init))
        values = None if values is None else torch.as_tensor(values).detach().reshape(-1)
        problem = _csr_problem(d_max, offsets, columns, values)
        if problem:
            raise ValueError(f"inconsistent CSR table: {problem}")
        self.num_rows, self.dim = len(offsets) - 1, int(d_max)
        self.register_buffer("offsets", offsets.clone())
        self.register_buffer("columns", columns.to(_INDEX_DTYPES[column_index_bytes(self.dim)]))
        self.values = nn.Parameter(values.clone())

    @classmethod
    def from_mask(cls, keep, values: torch.Tensor | None = None, init: str = "xavier") -> "CSREmbedding":
        """The CSR table of a ``(num_rows, d_max)`` element mask, with the kept values in row-major order
        (``values``) or freshly initialised like the plain table. Explained in Chapter 4."""
        keep = torch.as_tensor(keep.detach() if hasattr(keep, "detach") else np.asarray(keep))
        if keep.dim() != 2 or keep.numel() == 0:
            raise ValueError(f"an element mask must be a non-empty (num_rows, d_max) matrix, got {tuple(keep.shape)}")
        keep = check_element_mask(keep, *keep.shape)
        offsets = torch.cat([keep.new_zeros(1, dtype=torch.int64), keep.sum(1).cumsum(0)])
        return cls(offsets, keep.nonzero()[:, 1], keep.shape[1], values=values, init=init)

    @classmethod
    def from_dense(cls, table: torch.Tensor, keep) -> "CSREmbedding":
        """The entries of ``table`` where ``keep`` is true; lookups equal ``table * keep`` exactly.
        Explained in Chapter 4."""
        keep = check_element_mask(keep, *table.shape).cpu()
        csr = cls.from_mask(keep, values=table.detach().cpu()[keep])
        return csr.to(table.device)

    @classmethod
    def from_masked(cls, masked: MaskedEmbedding) -> "CSREmbedding":
        """The CSR copy of a masked or element-masked table (soft weights folded into the values):
        lookups are exactly equal. Explained in Chapter 4."""
        with torch.no_grad():
            return cls.from_dense(masked.table().detach(), masked.mask().bool())

    def to_masked(self) -> ElementMaskedEmbedding:
        """An element-masked table with the same lookups, to train with the mask fixed. Chapter 4."""
        masked = ElementMaskedEmbedding(self.num_rows, self.dim, self.mask().bool().cpu())
        with torch.no_grad():
            masked.weight.copy_(self.table().detach().cpu())
        return masked.to(self.values.device)

    def _rows(self, values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        entry, target = _csr_entries(self.offsets, self.columns, flat, self.dim)
        # the targets are distinct, so the scatter is a plain copy: deterministic, kept values bit for bit
        rows = values.new_zeros(len(flat) * self.dim).scatter(0, target, values.index_select(0, entry))
        return rows.view(*ids.shape, self.dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and self.values.requires_grad):  # inference: the one-pass loop
            rows = native.csr_rows(self.values.detach(), self.offsets, self.columns, ids.reshape(-1), self.dim)
            if rows is not None:
                return rows.view(*ids.shape, self.dim)
        return self._rows(self.values, ids)

    def mask(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The 0/1 element masks of rows ``ids`` (all rows if None), shape ``(..., d_max)``. Chapter 4."""
        ids = torch.arange(self.num_rows, device=self.offsets.device) if ids is None else ids
        return self._rows(torch.ones_like(self.values, requires_grad=False), ids)

    def table(self) -> torch.Tensor:
        return self(torch.arange(self.num_rows, device=self.offsets.device))

    def num_parameters(self) -> int:
        return self.values.numel()

    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.values, self.columns, self.offsets))

    def extra_repr(self) -> str:
        return f"{self.num_rows}, d_max={self.dim}, kept={self.num_parameters()}, columns={self.columns.dtype}"

    def save(self, path: str | os.PathLike) -> None:
        """Write the table (format tag, d_max, offsets, column indices, values) atomically. Chapter 4."""
        atomic_save({"format": CSR_FORMAT, "d_max": self.dim, "offsets": self.offsets.cpu(),
                     "columns": self.columns.cpu(), "values": self.values.detach().cpu().clone()}, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CSREmbedding":
        """Read a table written by :meth:`save`; a truncated, foreign or inconsistent file (offsets, column
        indices out of range or not increasing within a row, counts that disagree) raises ``ValueError``
        naming the file and the problem. Explained in Chapter 4."""
        path = Path(path)
        blob = _load_blob(path, CSR_FORMAT, "CSR embedding")
        d_max, offsets, columns, values = (blob.get(k) for k in ("d_max", "offsets", "columns", "values"))
        problem = _csr_problem(d_max, offsets, columns, values)
        if problem:
            raise ValueError(f"{path} is a corrupt CSR embedding file: {problem}")
        return cls(offsets, columns, d_max, values=values)


# ---------------------------------------------------------------------------------------------------
# Factories: hand a backbone variable-size tables (Chapter 4)
# ---------------------------------------------------------------------------------------------------

def _sizes_for(sizes_by_role: dict | None, role: str, num_rows: int, dim: int, d_max: int | None):
    if d_max is not None and dim != d_max:
        raise ValueError(f"the backbone asks for {role!r} rows of width {dim} but the sizes are for "
                         f"d_max = {d_max}: build the backbone with dim = {d_max}")
    if sizes_by_role is None:
        return None
    if role not in sizes_by_role:
        raise ValueError(f"no sizes for embedding role {role!r}; sizes were given for "
                         f"{', '.join(map(repr, sizes_by_role)) or 'no role'}")
    try:
        return check_sizes(sizes_by_role[role], num_rows, dim)
    except ValueError as e:
        raise ValueError(f"sizes for role {role!r} ({num_rows} rows): {e}") from None


def masked_factory(sizes_by_role: dict | None = None, d_max: int | None = None,
                   init: str = "xavier") -> EmbeddingFactory:
    """An embedding factory of :class:`MaskedEmbedding` tables with the given sizes per role (all rows
    full width when ``sizes_by_role`` is None), initialised like the plain table (``init``).
    Explained in Chapter 4."""
    _init_std(1, 1, init)  # an unknown init fails here, not at the first table
    def factory(role: str, num_rows: int, dim: int) -> nn.Module:
        return MaskedEmbedding(num_rows, dim, _sizes_for(sizes_by_role, role, num_rows, dim, d_max), init=init)
    return factory


def compact_factory(sizes_by_role: dict | None = None, d_max: int | None = None,
                    init: str = "xavier") -> EmbeddingFactory:
    """An embedding factory of :class:`CompactEmbedding` tables with the given sizes per role (fixed
    sizes; all rows full width when ``sizes_by_role`` is None). Explained in Chapter 4."""
    _init_std(1, 1, init)
    def factory(role: str, num_rows: int, dim: int) -> nn.Module:
        sizes = _sizes_for(sizes_by_role, role, num_rows, dim, d_max)
        return CompactEmbedding(np.full(num_rows, dim) if sizes is None else sizes, dim, init=init)
    return factory


def compact_tables(model: nn.Module) -> nn.Module:
    """Replace every :class:`MaskedEmbedding` of ``model`` (a backbone) by its compact copy, in place, and
    return the model: train masked, then really shrink. An :class:`ElementMaskedEmbedding` becomes a
    :class:`CSREmbedding`, any other masked table a :class:`CompactEmbedding`. Explained in Chapter 4."""
    for name, table in list(model.embedding_tables().items()):
        if isinstance(table, ElementMaskedEmbedding):
            setattr(model, name, CSREmbedding.from_masked(table))
        elif isinstance(table, MaskedEmbedding):
            setattr(model, name, CompactEmbedding.from_masked(table))
    return model
