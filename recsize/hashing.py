"""Hashed tables: fewer rows than ids, by the hashing trick or by the quotient-remainder trick.

Explained in Chapter 8 (section 8.9, quantised and hashed tables). Both shrink a ``num x dim`` table by
storing fewer rows than there are ids, rather than fewer dimensions per row (Chapter 4) or fewer bits per
value (:mod:`recsize.quantize`):

* :class:`HashEmbedding`, the hashing trick: id i reads row h(i) of a table of ``rows`` rows, with a fixed
  seeded universal hash h(i) = ((a * i + b) mod p) mod rows, p = 2^31 - 1. Ids that collide share their
  whole vector: at ``rows < num`` some ids are indistinguishable to the model.
* :class:`QREmbedding`, the quotient-remainder trick (Shi, Mudigere, Naumov and Yang, KDD'20,
  "Compositional Embeddings Using Complementary Partitions for Memory-Efficient Recommendation
  Systems"): with m buckets, id i reads row i // m of a quotient table of ceil(num / m) rows and row i % m
  of a remainder table of m rows, and combines the two. The two partitions of the ids, by quotient and by
  remainder, are *complementary*: no two ids share both rows, since i = (i // m) * m + i % m, so every id
  gets its own vector from only ceil(num / m) + m rows. The combination (``op``) is the element-wise
  product (``"mult"``, the paper's best), the sum (``"add"``) or the concatenation of two dim / 2 halves
  (``"concat"``).

Both tables count what they store, ``num_bytes()`` (also ``stored_bytes``): float32 rows only (the hash's
constants and m are part of the function, like the width of a plain table). :func:`qr_buckets_for_bytes`
and :func:`hash_rows_for_bytes` pick the largest configuration within a byte budget, and
:func:`qr_factory` / :func:`hash_factory` build a backbone's tables within a fraction of the dense bytes.
Tables are initialised from torch's global generator (seed it, as :func:`recsize.train.seed_everything`
does, for the same numbers); the hash from its own ``seed``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .budget import FLOAT_BYTES, check_budget, dense_bytes
from .embedding import EmbeddingFactory, _init_std

OPS = ("mult", "add", "concat")
PRIME = 2**31 - 1   # the hash's modulus: a Mersenne prime; a * i stays below 2^62 for ids below it


def _check_shape(num: int, dim: int) -> None:
    if num < 1 or dim < 1:
        raise ValueError(f"an embedding needs num >= 1 ids and dim >= 1, got {num} x {dim}")


def _check_op(op: str, dim: int) -> str:
    if op not in OPS:
        raise ValueError(f"unknown QR combination {op!r}: use one of {', '.join(OPS)}")
    if op == "concat" and dim % 2:
        raise ValueError(f"op 'concat' joins two halves of dim / 2: dim must be even, got {dim}")
    return op


def qr_widths(dim: int, op: str = "mult") -> tuple[int, int]:
    """Widths of the quotient and remainder tables: (dim, dim), or (dim / 2, dim / 2) for ``"concat"``.
    Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
    _check_op(op, dim)
    return (dim // 2, dim // 2) if op == "concat" else (dim, dim)


def qr_bytes(num: int, dim: int, buckets: int, op: str = "mult") -> int:
    """Bytes of a :class:`QREmbedding`: (ceil(num / m) * d_q + m * d_r) float32 values.
    Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
    d_q, d_r = qr_widths(dim, op)
    return (-(-num // buckets) * d_q + buckets * d_r) * FLOAT_BYTES


def hash_bytes(rows: int, dim: int) -> int:
    """Bytes of a :class:`HashEmbedding`: rows * dim float32 values.
    Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
    return rows * dim * FLOAT_BYTES


def qr_buckets_for_bytes(num: int, dim: int, budget_bytes: float, op: str = "mult") -> int:
    """The most buckets m (remainder rows, at most ``num``) whose :class:`QREmbedding` fits in
    ``budget_bytes``. Explained in Chapter 8 (section 8.9, quantised and hashed tables).

    The rows ceil(num / m) + m fall while m grows up to m_0, the smallest m with m (m + 1) >= num (about
    sqrt(num)), and never fall again after it; m_0 needs the fewest bytes. The answer is the largest m >=
    m_0 within the budget, so one bucket more would exceed it (unless m = num). A budget below the bytes of
    m_0 raises ``ValueError``.
    """
    _check_shape(num, dim)
    _check_op(op, dim)
    low = math.isqrt(num)
    while low * (low + 1) < num:   # m_0
        low += 1
    low = min(low, num)
    if not qr_bytes(num, dim, low, op) <= budget_bytes:   # also NaN
        raise ValueError(f"{budget_bytes:g} B cannot hold a QR table of {num} ids x {dim} "
                         f"(at least {qr_bytes(num, dim, low, op)} B, at {low} buckets)")
    high = num
    while low < high:   # the largest m in [low, high] within the budget (bytes never fall above m_0)
        mid = (low + high + 1) // 2
        low, high = (mid, high) if qr_bytes(num, dim, mid, op) <= budget_bytes else (low, mid - 1)
    return low


def hash_rows_for_bytes(num: int, dim: int, budget_bytes: float) -> int:
    """The most rows (at most ``num``) of a :class:`HashEmbedding` within ``budget_bytes``; ``ValueError``
    if not even one row fits. Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
    _check_shape(num, dim)
    if not budget_bytes >= hash_bytes(1, dim):
        raise ValueError(f"{budget_bytes:g} B cannot hold one row of {dim} floats ({hash_bytes(1, dim)} B)")
    return min(num, int(budget_bytes // hash_bytes(1, dim)))


def _normal(rows: int, dim: int, std: float) -> nn.Parameter:
    return nn.Parameter(torch.empty(rows, dim).normal_(std=std))


class QREmbedding(nn.Module):
    """The quotient-remainder trick: e_i = Q[i // m] (op) R[i % m], with a quotient table Q of
    ceil(num / m) rows and a remainder table R of m rows (m = ``buckets``).
    Explained in Chapter 8 (section 8.9, quantised and hashed tables).

    ``op`` combines the two rows: ``"mult"`` (element-wise product, the paper's best), ``"add"`` or
    ``"concat"`` (each table dim / 2 wide). Initialisation keeps the spread of the plain table's values
    (``init`` as :class:`~recsize.embedding.Embedding`, standard deviation s): for ``"mult"`` each table
    is N(0, sqrt(s)), so the product has standard deviation s; for ``"add"`` each N(0, s / sqrt(2)); for
    ``"concat"`` each N(0, s).
    """

    def __init__(self, num: int, dim: int, buckets: int, op: str = "mult", init: str = "xavier"):
        super().__init__()
        _check_shape(num, dim)
        if not 1 <= buckets <= num:
            raise ValueError(f"buckets must lie in [1, num = {num}], got {buckets}")
        self.num_rows, self.dim, self.buckets, self.op = int(num), int(dim), int(buckets), _check_op(op, dim)
        std = _init_std(self.num_rows, self.dim, init)
        std = {"mult": math.sqrt(std), "add": std / math.sqrt(2), "concat": std}[op]
        d_q, d_r = qr_widths(self.dim, op)
        self.quotient = _normal(-(-self.num_rows // self.buckets), d_q, std)
        self.remainder = _normal(self.buckets, d_r, std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        q = self.quotient.index_select(0, torch.div(flat, self.buckets, rounding_mode="floor"))
        r = self.remainder.index_select(0, torch.remainder(flat, self.buckets))
        rows = q * r if self.op == "mult" else q + r if self.op == "add" else torch.cat([q, r], 1)
        return rows.view(*ids.shape, self.dim)

    def table(self) -> torch.Tensor:
        return self(torch.arange(self.num_rows, device=self.quotient.device))

    def num_parameters(self) -> int:
        return self.quotient.numel() + self.remainder.numel()

    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.quotient, self.remainder))

    @property
    def stored_bytes(self) -> int:
        """:meth:`num_bytes`. Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
        return self.num_bytes()

    def extra_repr(self) -> str:
        return f"{self.num_rows}, {self.dim}, buckets={self.buckets}, op={self.op!r}"


class HashEmbedding(nn.Module):
    """The hashing trick: id i reads row h(i) = ((a * i + b) mod p) mod rows of a ``rows x dim`` table,
    p = 2^31 - 1, with a in [1, p) and b in [0, p) drawn from ``seed`` (numpy's default generator): the
    same seed, the same hash. Explained in Chapter 8 (section 8.9, quantised and hashed tables).

    The hash is computed at every lookup, not stored (a stored row per id would cost more than it saves).
    The table is initialised like the plain one (``init``).
    """

    def __init__(self, num: int, dim: int, rows: int, seed: int = 0, init: str = "xavier"):
        super().__init__()
        _check_shape(num, dim)
        if not 1 <= rows <= num:
            raise ValueError(f"rows must lie in [1, num = {num}], got {rows}")
        if num >= PRIME:
            raise ValueError(f"the hash takes ids below {PRIME}, got num = {num}")
        self.num_rows, self.dim, self.rows, self.seed = int(num), int(dim), int(rows), int(seed)
        a, b = np.random.default_rng(self.seed).integers([1, 0], PRIME)
        self.a, self.b = int(a), int(b)
        self.weight = _normal(self.rows, self.dim, _init_std(self.num_rows, self.dim, init))

    def row_of(self, ids: torch.Tensor) -> torch.Tensor:
        """The table row every id reads, h(i) (int64, the shape of ``ids``).
        Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
        return (ids.to(torch.int64) * self.a + self.b).remainder_(PRIME).remainder_(self.rows)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight.index_select(0, self.row_of(ids.reshape(-1))).view(*ids.shape, self.dim)

    def table(self) -> torch.Tensor:
        return self(torch.arange(self.num_rows, device=self.weight.device))

    def num_parameters(self) -> int:
        return self.weight.numel()

    def num_bytes(self) -> int:
        return self.weight.numel() * self.weight.element_size()

    @property
    def stored_bytes(self) -> int:
        """:meth:`num_bytes`. Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
        return self.num_bytes()

    def extra_repr(self) -> str:
        return f"{self.num_rows}, {self.dim}, rows={self.rows}, seed={self.seed}"


def qr_factory(budget: float, op: str = "mult", init: str = "xavier") -> EmbeddingFactory:
    """An embedding factory of :class:`QREmbedding` tables, each with the most buckets whose bytes stay
    within ``budget`` (a fraction in (0, 1]) of the dense float32 table of its role
    (:func:`qr_buckets_for_bytes`). Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
    budget = check_budget(budget)
    _init_std(1, 1, init)

    def factory(role: str, num_rows: int, dim: int) -> nn.Module:
        try:
            buckets = qr_buckets_for_bytes(num_rows, dim, budget * dense_bytes(num_rows, dim), op)
        except ValueError as e:
            raise ValueError(f"role {role!r} ({num_rows} rows): {e}") from None
        return QREmbedding(num_rows, dim, buckets, op=op, init=init)
    return factory


def hash_factory(budget: float, seed: int = 0, init: str = "xavier") -> EmbeddingFactory:
    """An embedding factory of :class:`HashEmbedding` tables, each with the most rows whose bytes stay within
    ``budget`` (a fraction in (0, 1]) of the dense float32 table of its role, hashed with ``seed``
    (:func:`hash_rows_for_bytes`). Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
    budget = check_budget(budget)
    _init_std(1, 1, init)

    def factory(role: str, num_rows: int, dim: int) -> nn.Module:
        try:
            rows = hash_rows_for_bytes(num_rows, dim, budget * dense_bytes(num_rows, dim))
        except ValueError as e:
            raise ValueError(f"role {role!r} ({num_rows} rows): {e}") from None
        return HashEmbedding(num_rows, dim, rows, seed=seed, init=init)
    return factory
