"""Embedding tables behind one interface, so that a variable-size table can replace the plain one.

Explained in Chapter 3 (Backbones) for the plain table; Chapter 4 builds the variable-size core on the
same interface. Every table is an ``nn.Module`` with

* ``num_rows`` and ``dim`` (the output width, d_max for variable-size tables);
* ``forward(ids)``: the rows for a batch of ids, shape ``(*ids.shape, dim)``;
* ``table()``: all rows at once, shape ``(num_rows, dim)`` (graph models propagate the whole table);
* ``num_parameters()`` and ``num_bytes()``: what the table really stores.

Backbones never build ``nn.Embedding`` themselves: they call an *embedding factory*
``factory(role, num_rows, dim)`` with a role such as ``"user"``, ``"item"`` or ``"feature"``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

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
        return self.weight[ids]

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
