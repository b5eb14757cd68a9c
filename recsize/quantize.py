"""Row-wise quantised embedding tables: fewer bits per value instead of fewer values per row.

Explained in Chapter 8 (section 8.9, quantised and hashed tables). Every row is stored as unsigned
integers of ``bits`` in {8, 4, 2} plus its own scale and bias, the layout of FBGEMM's row-wise fused
tables (the "FusedNBitRowwise" format and the INT8 / INT4 / INT2 rows of its table-batched inference
kernel): for row n with smallest value min_n and largest max_n,

    bias_n = min_n,   scale_n = (max_n - min_n) / (2^bits - 1),   q = round((x - bias_n) / scale_n),

clamped to [0, 2^bits - 1], and a lookup returns x_hat = q * scale_n + bias_n. Scale and bias are
float16, 4 bytes per row (FBGEMM's older standalone 8-bit format, Fused8BitRowwise, keeps them in float32,
8 bytes), rounded to float16 *before* the values are quantised (as FBGEMM does) so that the stored scale
and bias are the ones the codes were made with. The codes are packed: one per byte at
8 bits, two at 4 bits, four at 2 bits, the first value in the lowest bits; a full-width row is padded to a
whole number of bytes, ceil(dim * bits / 8) (FBGEMM also aligns rows to 16 bytes; recsize counts none of
that). The bytes of a ``num_rows x dim`` table are therefore ``num_rows * (ceil(dim * bits / 8) + 4)``
(:func:`quantized_bytes`), against ``num_rows * dim * 4`` in float32.

Four pieces:

* :func:`quantize_rows` and :func:`dequantize_rows`: the arithmetic, on a whole float table;
* :class:`QuantizedEmbedding`: the serving form of a full-width table; a lookup unpacks and dequantises
  only the requested rows, bit for bit ``dequantize_rows(...)[ids]``;
* :class:`QuantizedCompactEmbedding`: the serving form of a variable-size table (narrow *and* quantise,
  e.g. es-int8, mde-int8): the kept values of :class:`~recsize.embedding.CompactEmbedding` as one packed
  stream of codes (row n's codes start at value ``offsets[n]``, so the rows share bytes and need no
  padding of their own; a few bytes after the last row let every row be read as one window, as the
  compact form's d_max floats do), a scale and a bias per row, and the compact form's row offsets;
* :func:`quantize_model` (post-training quantisation of a trained backbone) and
  :class:`FakeQuantEmbedding` / :func:`fake_quant_factory` (quantisation-aware training: every forward
  quantises and dequantises the rows, the gradient passes straight through; export with
  :func:`quantize_model`).

Quantised tables are for lookups, not for training: their codes are a frozen (``requires_grad=False``)
parameter rather than a buffer only so that code finding a model's device by its first parameter
(:mod:`recsize.evaluate`) works on a model made of nothing but quantised tables (LightGCN).
"""
from __future__ import annotations

import copy
import functools

import numpy as np
import torch
from torch import nn

from .embedding import (CompactEmbedding, ElementMaskedEmbedding, Embedding, EmbeddingFactory, MaskedEmbedding,
                        _init_std, _prefix_masks, _RowOffsets, prefix_mask)

BITS = (8, 4, 2)
SCALE_BIAS_BYTES = 4   # float16 scale + float16 bias per row
OFFSET_BYTES = 8       # the compact form's int64 row offsets


def check_bits(bits) -> int:
    """``bits`` as an int, or ``ValueError`` unless it is 8, 4 or 2.
    Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
    if isinstance(bits, bool) or bits not in BITS:
        raise ValueError(f"bits must be one of {', '.join(map(str, BITS))}, got {bits!r}")
    return int(bits)


def row_bytes(dim: int, bits: int) -> int:
    """Bytes of the packed codes of one full-width row: ceil(dim * bits / 8).
    Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
    return -(-dim * check_bits(bits) // 8)


def quantized_bytes(num_rows: int, dim: int, bits: int) -> int:
    """Bytes of a :class:`QuantizedEmbedding`: num_rows * (ceil(dim * bits / 8) + 4).
    Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
    return num_rows * (row_bytes(dim, bits) + SCALE_BIAS_BYTES)


def window_bytes(d_max: int, bits: int) -> int:
    """Bytes that hold d_max codes of ``bits`` starting at any position within a byte:
    ceil((8 / bits - 1 + d_max) / (8 / bits)), the window every compact row is read through.
    Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
    per = 8 // check_bits(bits)
    return -(-(per - 1 + d_max) // per)


def quantized_compact_bytes(sizes, d_max: int, bits: int) -> int:
    """Bytes of a :class:`QuantizedCompactEmbedding` with row widths ``sizes``: the code stream with its
    padding, floor(sum(d_n) * bits / 8) + :func:`window_bytes` (at most that window more than the
    ceil(sum(d_n) * bits / 8) bytes the codes fill), 4 bytes of scale and bias per row and (num_rows + 1)
    int64 offsets. Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    stream = int(sizes.sum()) // (8 // check_bits(bits)) + window_bytes(d_max, bits)
    return stream + len(sizes) * SCALE_BIAS_BYTES + (len(sizes) + 1) * OFFSET_BYTES


# ---------------------------------------------------------------------------------------------------
# The arithmetic
# ---------------------------------------------------------------------------------------------------

def _scale_bias(rows: torch.Tensor, bits: int, keep: torch.Tensor | None = None):
    """Float16 (scale, bias) of every row of ``rows`` over its kept entries (all if ``keep`` is None); a
    row with nothing kept gets scale 1 and bias 0, a constant row scale 1 (FBGEMM's rule)."""
    if keep is None:
        low, high = rows.amin(1), rows.amax(1)
    else:
        low = torch.where(keep, rows, torch.inf).amin(1)
        high = torch.where(keep, rows, -torch.inf).amax(1)
        empty = ~keep.any(1)
        low, high = low.masked_fill(empty, 0.0), high.masked_fill(empty, 0.0)
    bias = low.half()
    scale = ((high - bias.float()) / (2**bits - 1)).half()
    if not (torch.isfinite(bias).all() and torch.isfinite(scale).all()):
        raise ValueError("cannot quantise: a row's smallest value or range does not fit float16 (|x| > 65504, "
                         "NaN or infinity)")
    return scale.masked_fill(scale == 0, 1.0), bias   # a constant row (or an underflow): scale 1


def _codes(rows: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, bits: int) -> torch.Tensor:
    """round((x - bias) / scale) clamped to [0, 2^bits - 1], as float (exact small integers)."""
    inverse = 1.0 / scale.float()
    return torch.round((rows - bias.float()[:, None]) * inverse[:, None]).clamp_(0, 2**bits - 1)


def _dequantize(codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """codes * scale + bias in float32, scale and bias broadcast over the last dimension. Every form's
    lookup ends here, so lookups and references agree bit for bit."""
    return codes.to(torch.float32) * scale.float()[..., None] + bias.float()[..., None]


def _pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack the last dimension of integer ``codes`` (a multiple of 8 / bits long) into uint8, the first
    value of every byte in its lowest bits."""
    per = 8 // bits
    grouped = codes.to(torch.int32).view(*codes.shape[:-1], -1, per)
    shifts = torch.arange(per, dtype=torch.int32, device=codes.device) * bits
    return (grouped << shifts).sum(-1).to(torch.uint8)


@functools.lru_cache(maxsize=8)
def _unpack_table(bits: int, device: torch.device) -> torch.Tensor:
    """(256,) table whose entry b holds the 8 / bits codes of byte b, as one int16 (4 bits) or int32 (2 bits):
    unpacking is then one gather of whole entries (the byte order survives the round trip through the view)."""
    per = 8 // bits
    codes = (torch.arange(256, device=device)[:, None] >> (torch.arange(per, device=device) * bits)) & (2**bits - 1)
    return codes.to(torch.uint8).view({2: torch.int16, 4: torch.int32}[per]).reshape(256)


def _unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """The inverse of :func:`_pack`: the uint8 codes, 8 / bits per byte, the last dimension 8 / bits longer."""
    if bits == 8:
        return packed
    entries = _unpack_table(bits, packed.device).index_select(0, packed.reshape(-1).long())
    return entries.view(torch.uint8).view(*packed.shape[:-1], packed.shape[-1] * (8 // bits))


def quantize_rows(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantise a float ``(num_rows, dim)`` table row by row: ``(packed, scale, bias)``, the packed codes
    uint8 ``(num_rows, ceil(dim * bits / 8))`` and the float16 scale and bias ``(num_rows,)``.
    Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
    bits = check_bits(bits)
    if weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"quantize_rows needs a 2-D float table, got shape {tuple(weight.shape)} of {weight.dtype}")
    rows = weight.detach().float()
    scale, bias = _scale_bias(rows, bits)
    codes = _codes(rows, scale, bias, bits)
    padding = row_bytes(rows.shape[1], bits) * (8 // bits) - rows.shape[1]
    return _pack(nn.functional.pad(codes, (0, padding)), bits), scale, bias


def dequantize_rows(packed: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, bits: int,
                    dim: int) -> torch.Tensor:
    """The float32 ``(num_rows, dim)`` table that :func:`quantize_rows` stored: codes * scale + bias.
    Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
    bits = check_bits(bits)
    if packed.dim() != 2 or packed.shape[1] != row_bytes(dim, bits):
        raise ValueError(f"{dim} values of {bits} bits take {row_bytes(dim, bits)} bytes per row, "
                         f"got packed codes of shape {tuple(packed.shape)}")
    return _dequantize(_unpack(packed, bits)[:, :dim], scale, bias)


# ---------------------------------------------------------------------------------------------------
# Serving forms
# ---------------------------------------------------------------------------------------------------

class QuantizedEmbedding(nn.Module):
    """A full-width table stored row-wise quantised: ``num_rows x ceil(dim * bits / 8)`` packed codes
    and a float16 scale and bias per row. Explained in Chapter 8 (section 8.9, quantised and hashed tables).

    Build it from a float table with :meth:`from_float`. ``forward(ids)`` unpacks and dequantises only
    the rows of ``ids``, exactly ``dequantize_rows(...)[ids]``; ``num_bytes()`` (also ``stored_bytes``)
    counts the packed codes, scales and biases, :func:`quantized_bytes`.
    """

    def __init__(self, packed: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, bits: int, dim: int):
        super().__init__()
        self.bits, self.num_rows, self.dim = check_bits(bits), int(packed.shape[0]), int(dim)
        if packed.dtype != torch.uint8 or packed.shape != (self.num_rows, row_bytes(self.dim, self.bits)) \
                or scale.shape != (self.num_rows,) or bias.shape != (self.num_rows,):
            raise ValueError(f"inconsistent quantised table: codes {tuple(packed.shape)} {packed.dtype}, scale "
                             f"{tuple(scale.shape)}, bias {tuple(bias.shape)} for {self.dim} values of {bits} bits")
        self.codes = nn.Parameter(packed.detach().clone(), requires_grad=False)  # frozen: see the module notes
        self.register_buffer("scale", scale.detach().half().clone())
        self.register_buffer("bias", bias.detach().half().clone())

    @classmethod
    def from_float(cls, weight: torch.Tensor, bits: int) -> "QuantizedEmbedding":
        """The quantised copy of a float ``(num_rows, dim)`` table (:func:`quantize_rows`).
        Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
        return cls(*quantize_rows(weight, bits), bits, weight.shape[1])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        codes = _unpack(self.codes.index_select(0, flat), self.bits)[:, :self.dim]
        rows = _dequantize(codes, self.scale.index_select(0, flat), self.bias.index_select(0, flat))
        return rows.view(*ids.shape, self.dim)

    def table(self) -> torch.Tensor:
        return dequantize_rows(self.codes, self.scale, self.bias, self.bits, self.dim)

    def num_parameters(self) -> int:
        return self.num_rows * self.dim

    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scale, self.bias))

    @property
    def stored_bytes(self) -> int:
        """:meth:`num_bytes`. Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
        return self.num_bytes()

    def extra_repr(self) -> str:
        return f"{self.num_rows}, {self.dim}, bits={self.bits}"


class QuantizedCompactEmbedding(_RowOffsets, nn.Module):
    """A variable-size (prefix) table stored row-wise quantised: row n's d_n codes at values
    ``offsets[n]:offsets[n + 1]`` of one packed stream, a float16 scale and bias per row over its d_n
    values. Explained in Chapter 8 (section 8.9, quantised and hashed tables).

    Build it from a :class:`~recsize.embedding.CompactEmbedding` with :meth:`from_compact`. A lookup
    returns the zero-padded d_max rows like the compact table, the kept part dequantised exactly as
    :func:`quantize_rows` / :func:`dequantize_rows` would do to that row alone. It reads every row as one
    window of :func:`window_bytes` bytes from the byte holding its first code (so the stream ends with
    zero bytes to fill the last window, as the compact form ends with d_max floats), unpacks the window
    and keeps the row's d_n codes. ``num_bytes()`` (also ``stored_bytes``) counts the codes with that
    padding, 4 bytes of scale and bias per row (width-0 rows included, so that rows are found by their
    index) and the (num_rows + 1) int64 offsets the compact form already stores:
    :func:`quantized_compact_bytes`.
    """

    def __init__(self, packed: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, offsets: torch.Tensor,
                 bits: int, d_max: int):
        super().__init__()
        self.bits, self.dim = check_bits(bits), int(d_max)
        self.num_rows = len(offsets) - 1
        total = int(offsets[-1])
        if packed.dtype != torch.uint8 or packed.shape != (total // (8 // self.bits) + window_bytes(self.dim, bits),) \
                or scale.shape != (self.num_rows,) or bias.shape != (self.num_rows,) or offsets.dtype != torch.int64:
            raise ValueError(f"inconsistent quantised compact table: codes {tuple(packed.shape)} {packed.dtype} for "
                             f"{total} values of {bits} bits, scale {tuple(scale.shape)}, bias {tuple(bias.shape)}, "
                             f"offsets {offsets.dtype} for {self.num_rows} rows")
        self.codes = nn.Parameter(packed.detach().clone(), requires_grad=False)  # frozen: see the module notes
        self.register_buffer("scale", scale.detach().half().clone())
        self.register_buffer("bias", bias.detach().half().clone())
        self.register_buffer("offsets", offsets.detach().clone())

    @classmethod
    def from_compact(cls, compact: CompactEmbedding, bits: int) -> "QuantizedCompactEmbedding":
        """The quantised copy of a compact table, each row quantised over its own d_n kept values.
        Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
        bits = check_bits(bits)
        with torch.no_grad():
            rows = compact.table().detach().float()
            keep = prefix_mask(compact.sizes, compact.dim, torch.bool)
            scale, bias = _scale_bias(rows, bits, keep)
            stream = _codes(rows, scale, bias, bits)[keep]     # row-major: the compact values' order
            per = 8 // bits
            length = len(stream) // per + window_bytes(compact.dim, bits)  # the last row's window, zeros
            stream = nn.functional.pad(stream, (0, length * per - len(stream)))
            return cls(_pack(stream, bits), scale, bias, compact.offsets, bits, compact.dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        start = self.offsets.index_select(0, flat)
        width = self.offsets.index_select(0, flat + 1) - start
        per, window = 8 // self.bits, window_bytes(self.dim, self.bits)
        # every row's window of bytes (overlapping windows are a view, nothing is copied to build them)
        windows = self.codes.as_strided((self.codes.numel() - window + 1, window), (1, 1))
        codes = _unpack(windows.index_select(0, torch.div(start, per, rounding_mode="floor")), self.bits)
        if per > 1:   # the row's d_max codes from its first one on: again a window, into the unpacked bytes
            first = torch.arange(len(flat), device=flat.device) * codes.shape[1] + start % per
            codes = codes.reshape(-1)
            codes = codes.as_strided((max(codes.numel() - self.dim + 1, 0), self.dim), (1, 1)).index_select(0, first)
        rows = _dequantize(codes, self.scale.index_select(0, flat), self.bias.index_select(0, flat))
        rows.mul_(_prefix_masks(self.dim, rows.dtype, rows.device).index_select(0, width))  # zeros beyond d_n
        return rows.view(*ids.shape, self.dim)

    def table(self) -> torch.Tensor:
        return self(torch.arange(self.num_rows, device=self.offsets.device))

    def num_parameters(self) -> int:
        return int(self.offsets[-1])

    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scale, self.bias, self.offsets))

    @property
    def stored_bytes(self) -> int:
        """:meth:`num_bytes`. Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
        return self.num_bytes()

    def extra_repr(self) -> str:
        return f"{self.num_rows}, d_max={self.dim}, kept={self.num_parameters()}, bits={self.bits}"


# ---------------------------------------------------------------------------------------------------
# Quantisation-aware training
# ---------------------------------------------------------------------------------------------------

class _FakeQuant(torch.autograd.Function):
    """Forward: quantise and dequantise every row (min / max of the row, this forward). Backward: the
    straight-through estimator, the gradient unchanged."""

    @staticmethod
    def forward(ctx, rows, bits):
        flat = rows.detach().float().reshape(-1, rows.shape[-1])
        scale, bias = _scale_bias(flat, bits)
        return _dequantize(_codes(flat, scale, bias, bits), scale, bias).view(rows.shape).to(rows.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class FakeQuantEmbedding(nn.Module):
    """A full-width float table whose lookups are quantised to ``bits`` and dequantised on the fly, row by
    row (min / max of the row in every forward), with the straight-through estimator: the gradient of the
    float weights is the plain table's. Explained in Chapter 8 (section 8.9, quantised and hashed tables).

    Quantisation-aware training (e.g. qat-int4): build the backbone with :func:`fake_quant_factory`,
    train, then :func:`quantize_model` with the same bits; the exported lookups equal these exactly.
    """

    def __init__(self, num_rows: int, dim: int, bits: int, init: str = "xavier"):
        super().__init__()
        if num_rows < 1 or dim < 1:
            raise ValueError(f"an embedding needs num_rows >= 1 and dim >= 1, got {num_rows} x {dim}")
        self.num_rows, self.dim, self.bits = int(num_rows), int(dim), check_bits(bits)
        self.weight = nn.Parameter(torch.empty(self.num_rows, self.dim))
        nn.init.normal_(self.weight, std=_init_std(self.num_rows, self.dim, init))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.weight.index_select(0, ids.reshape(-1))
        return _FakeQuant.apply(rows, self.bits).view(*ids.shape, self.dim)

    def table(self) -> torch.Tensor:
        return _FakeQuant.apply(self.weight, self.bits)

    def num_parameters(self) -> int:
        return self.weight.numel()

    def num_bytes(self) -> int:
        """The float weights it trains (the exported table stores :func:`quantized_bytes`)."""
        return self.weight.numel() * self.weight.element_size()

    @property
    def stored_bytes(self) -> int:
        """:meth:`num_bytes`. Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
        return self.num_bytes()

    def export(self) -> QuantizedEmbedding:
        """The serving table: the weights quantised to the same bits; its lookups equal this table's.
        Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
        return QuantizedEmbedding.from_float(self.weight, self.bits)

    def extra_repr(self) -> str:
        return f"{self.num_rows}, {self.dim}, bits={self.bits}"


def fake_quant_factory(bits: int, init: str = "xavier") -> EmbeddingFactory:
    """An embedding factory of :class:`FakeQuantEmbedding` tables of ``bits`` for every role, initialised
    like the plain table (``init``). Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
    bits = check_bits(bits)
    _init_std(1, 1, init)  # an unknown init fails here, not at the first table

    def factory(role: str, num_rows: int, dim: int) -> nn.Module:
        return FakeQuantEmbedding(num_rows, dim, bits, init=init)
    return factory


# ---------------------------------------------------------------------------------------------------
# Post-training quantisation of a whole backbone
# ---------------------------------------------------------------------------------------------------

def quantized_table(table: nn.Module, bits: int) -> nn.Module:
    """The quantised serving form of one embedding table: :class:`QuantizedEmbedding` for a full-width
    table (plain, ``nn.Embedding``, fake-quantised), :class:`QuantizedCompactEmbedding` for a compact or
    prefix-masked one; ``ValueError`` for other forms (element masks, hashed tables, already quantised).
    Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
    if isinstance(table, ElementMaskedEmbedding):
        raise ValueError("an element-masked table has no quantised form here: only prefixes (compact) "
                         "and full-width tables are quantised")
    if isinstance(table, MaskedEmbedding):
        table = CompactEmbedding.from_masked(table)
    if isinstance(table, CompactEmbedding):
        return QuantizedCompactEmbedding.from_compact(table, bits)
    if isinstance(table, (Embedding, FakeQuantEmbedding, nn.Embedding)):
        return QuantizedEmbedding.from_float(table.weight, bits)
    raise ValueError(f"no quantised form for a {type(table).__name__} table")


def quantize_model(model: nn.Module, bits: int) -> tuple[nn.Module, int]:
    """Post-training quantisation: a deep copy of the backbone ``model`` with every embedding table
    replaced by its quantised form (:func:`quantized_table`), and the bytes its embedding tables now
    store. The copy evaluates with the usual evaluators; ``model`` is left as it was. Other weights (MLPs,
    a CTR model's first-order weights) stay float, and a graph model's sparse adjacency is shared, not
    copied (it is never written; torch cannot deep-copy a sparse CSR tensor).
    Explained in Chapter 8 (section 8.9, quantised and hashed tables)."""
    bits = check_bits(bits)
    shared = {id(v): v for m in model.modules() for v in vars(m).values()
              if isinstance(v, torch.Tensor) and v.layout != torch.strided}
    quantized = copy.deepcopy(model, memo=shared)
    for name, table in list(quantized.embedding_tables().items()):
        setattr(quantized, name, quantized_table(table, bits))
    return quantized, sum(t.num_bytes() for t in quantized.embedding_tables().values())
