"""Searched widths as TorchRec tables: one plain table per (embedding role, width bucket).

Explained in Appendix A. TorchRec (PyTorch's library of sharded embedding tables, on FBGEMM kernels)
has a width per *table*, not per row, and its kernels want widths divisible by 4. A variable-size table
therefore leaves recsize as its buckets (:meth:`recsize.embedding.CompactEmbedding.export_buckets`):
every row's width is rounded up to a multiple of 4, the rows of one width form one dense table, and an
index maps every id to (bucket, row). Rows of width 0 live in no table; their lookups are zeros.

TorchRec is optional: ``pip install -e ".[torchrec]"`` then ``pip install --no-deps torchrec==1.8.0``
(:data:`INSTALL`; every torchrec wheel asks for the CUDA ``fbgemm-gpu``, the extra brings the CPU
build). This module imports it only when a TorchRec object is asked for (:func:`require_torchrec`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .budget import round_widths
from .embedding import CompactEmbedding, Embedding, MaskedEmbedding
from .files import atomic_save
from .storage import _load_blob

INSTALL = 'pip install -e ".[torchrec]" && pip install --no-deps torchrec==1.8.0'
KERNEL_MULTIPLE = 4  # FBGEMM's kernels want table widths divisible by 4 (torchrec issue #1495)
EXPORT_FORMAT = "recsize.TorchRecExport/1"


class TorchRecMissing(ValueError):
    """TorchRec (or its FBGEMM kernels) cannot be imported; the message says how to install it.
    Explained in Appendix A."""


def require_torchrec():
    """Import TorchRec, or raise :class:`TorchRecMissing` with the install line. Appendix A."""
    try:
        import fbgemm_gpu  # noqa: F401  (loads the kernels; a build for another torch fails here)
        import torchrec
    except (ImportError, OSError) as e:
        raise TorchRecMissing(f"TorchRec is not usable here ({type(e).__name__}: {str(e)[:120]}); install "
                              f"it with: {INSTALL}") from None
    return torchrec


def has_torchrec() -> bool:
    """Whether TorchRec imports here. Explained in Appendix A."""
    try:
        require_torchrec()
    except TorchRecMissing:
        return False
    return True


def table_name(role: str, width: int) -> str:
    """The TorchRec table (and feature) name of ``role``'s bucket of ``width``. Appendix A."""
    return f"{role}_w{width}"


def bucket_widths(sizes, d_max: int, round_to: int = KERNEL_MULTIPLE) -> np.ndarray:
    """Every row's bucket width: its size rounded up to a multiple of ``round_to`` (itself a multiple of
    4), capped at d_max rounded up the same way; 0 stays 0. Explained in Appendix A."""
    if round_to < 1 or round_to % KERNEL_MULTIPLE:
        raise ValueError(f"round_to must be a positive multiple of {KERNEL_MULTIPLE}, got {round_to}")
    top = -(-d_max // KERNEL_MULTIPLE) * KERNEL_MULTIPLE
    return round_widths(sizes, top, round_to)


def bucket_configs(sizes_by_role: dict, d_max_by_role: dict, round_to: int = KERNEL_MULTIPLE) -> list:
    """One ``EmbeddingBagConfig`` per (role, bucket width) for the given widths, no weights: what the
    planner needs (an ``EmbeddingBagCollection`` of them on the meta device allocates nothing).
    Explained in Appendix A."""
    require_torchrec()
    from torchrec import EmbeddingBagConfig
    configs = []
    for role, sizes in sizes_by_role.items():
        widths, counts = np.unique(bucket_widths(sizes, d_max_by_role[role], round_to), return_counts=True)
        for w, n in zip(widths.tolist(), counts.tolist()):
            if w > 0:
                name = table_name(role, w)
                configs.append(EmbeddingBagConfig(name=name, embedding_dim=w, num_embeddings=n,
                                                  feature_names=[name]))
    return configs


def _as_compact(role: str, table: nn.Module) -> CompactEmbedding:
    if isinstance(table, CompactEmbedding):
        return table
    if type(table) is MaskedEmbedding:
        return CompactEmbedding.from_masked(table)
    if isinstance(table, Embedding):
        return CompactEmbedding(np.full(table.num_rows, table.dim), table.dim, values=table.weight.detach().cpu())
    raise ValueError(f"table {role!r} is a {type(table).__name__}: TorchRec tables hold prefix widths "
                     "(plain, masked or compact tables); an element mask (CSR) has no width per row")


@dataclass
class BucketExport:
    """The TorchRec form of a model's tables: for every role its d_max, true widths and id -> (bucket,
    row) index, and one weight matrix per bucket table (width a multiple of 4). Appendix A."""

    d_max: dict[str, int]
    sizes: dict[str, torch.Tensor]    # role -> (rows,) int64 true widths
    bucket: dict[str, torch.Tensor]   # role -> (rows,) int64 index into tables_of[role], -1 for width 0
    row: dict[str, torch.Tensor]      # role -> (rows,) int64 row inside that table
    tables_of: dict[str, list[str]]   # role -> its table names, narrowest first
    weights: dict[str, torch.Tensor]  # table name -> (rows, width) float32

    def configs(self) -> list:
        """The ``EmbeddingBagConfig`` of every table (sum pooling, one feature per table). Appendix A."""
        require_torchrec()
        from torchrec import EmbeddingBagConfig
        return [EmbeddingBagConfig(name=n, embedding_dim=self.weights[n].shape[1],
                                   num_embeddings=self.weights[n].shape[0], feature_names=[n])
                for role in self.tables_of for n in self.tables_of[role]]

    def num_bytes(self, bytes_per_value: float = 4.0) -> int:
        """Bytes of the bucket tables at ``bytes_per_value`` plus the int64 (bucket, row) index.
        Explained in Appendix A."""
        values = sum(w.numel() for w in self.weights.values()) * bytes_per_value
        return int(values) + sum(2 * 8 * len(b) for b in self.bucket.values())

    def save(self, path: str | os.PathLike) -> None:
        """Write the export (format tag, index, weights) atomically: a temporary file, then a rename.
        Explained in Appendix A."""
        atomic_save({"format": EXPORT_FORMAT, "d_max": dict(self.d_max), "sizes": self.sizes,
                     "bucket": self.bucket, "row": self.row, "tables_of": self.tables_of,
                     "weights": self.weights}, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BucketExport":
        """Read an export written by :meth:`save`; a foreign or inconsistent file raises ``ValueError``.
        Explained in Appendix A."""
        blob = _load_blob(os.fspath(path), EXPORT_FORMAT, "TorchRec export")
        try:
            export = cls(*(blob[k] for k in ("d_max", "sizes", "bucket", "row", "tables_of", "weights")))
            export.check()
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise ValueError(f"{path} is a corrupt TorchRec export: {e}") from None
        return export

    def check(self) -> None:
        """Raise ``ValueError`` unless every index entry points at a row of a table of a fitting width.
        Explained in Appendix A."""
        for role, names in self.tables_of.items():
            sizes, bucket, row = self.sizes[role], self.bucket[role], self.row[role]
            if not (len(sizes) == len(bucket) == len(row)) or len(sizes) == 0:
                raise ValueError(f"role {role!r}: sizes, bucket and row differ in length")
            if ((sizes > 0) != (bucket >= 0)).any() or bucket.max() >= len(names):
                raise ValueError(f"role {role!r}: a bucket index is out of range")
            for k, name in enumerate(names):
                rows, width = self.weights[name].shape
                hit = bucket == k
                if width % KERNEL_MULTIPLE or (sizes[hit] > width).any() or \
                        (hit.any() and (row[hit].min() < 0 or row[hit].max() >= rows)):
                    raise ValueError(f"table {name!r} ({rows} x {width}) does not hold the rows indexed to it")


def export_tables(tables: dict[str, nn.Module], round_to: int = KERNEL_MULTIPLE) -> BucketExport:
    """Bucket tables for TorchRec from a model's tables by role (``model.embedding_tables()``: compact,
    masked with prefix widths, or plain): widths rounded up to a multiple of ``round_to`` (4 by default),
    zero-padded, bit for bit the kept values. Does not need TorchRec. Explained in Appendix A."""
    if not tables:
        raise ValueError("no tables to export")
    export = BucketExport({}, {}, {}, {}, {}, {})
    for role, table in tables.items():
        compact = _as_compact(role, table)
        d_max = compact.dim
        widths = bucket_widths(compact.sizes.cpu().numpy(), d_max, round_to)
        with torch.no_grad():  # zero-padded rows, bit for bit the kept values, up to the widest bucket
            full = compact.table().detach().cpu()
            full = nn.functional.pad(full, (0, max(int(widths.max()) - d_max, 0)))
        bucket = torch.full((compact.num_rows,), -1, dtype=torch.int64)
        position = torch.zeros(compact.num_rows, dtype=torch.int64)
        export.tables_of[role] = []
        for k, w in enumerate(w for w in np.unique(widths).tolist() if w > 0):
            members = torch.from_numpy(np.flatnonzero(widths == w))
            weight = full[members, :w].clone()
            bucket[members], position[members] = k, torch.arange(len(members))
            name = table_name(role, w)
            export.tables_of[role].append(name)
            export.weights[name] = weight
        export.d_max[role], export.sizes[role] = d_max, compact.sizes.cpu().clone()
        export.bucket[role], export.row[role] = bucket, position
    return export
